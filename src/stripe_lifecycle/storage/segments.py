"""Writes of segment data outside the customer workflow: the usage the app reports."""

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from stripe_lifecycle.storage.db import insert_for
from stripe_lifecycle.storage.models import CustomerUsage


async def upsert_usage(session: AsyncSession, customer_id: str, metric: str, value: float) -> None:
    """Keep the latest value of one usage metric of a customer (the caller commits)."""
    values = {
        "customer_id": customer_id,
        "metric": metric,
        "value": value,
        "reported_at": datetime.now(UTC),
    }
    insert = insert_for(session.get_bind().dialect.name)
    await session.execute(
        insert(CustomerUsage)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["customer_id", "metric"],
            set_={"value": value, "reported_at": values["reported_at"]},
        )
    )
