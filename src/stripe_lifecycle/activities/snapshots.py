"""Persist the customer workflow's billing snapshot so the API can answer from the DB."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from temporalio import activity

from stripe_lifecycle.activities.interface import Snapshots
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.storage.db import SessionMaker, insert_for
from stripe_lifecycle.storage.models import Customer


class SnapshotActivities(Snapshots):
    def __init__(self, sessionmaker: SessionMaker) -> None:
        self._sessionmaker = sessionmaker

    @activity.defn(name="persist_snapshot")
    async def persist_snapshot(self, snapshot: BillingSnapshot) -> None:
        """Upsert the snapshot; an older version (retried or late activity) never wins."""
        async with self._sessionmaker() as session:
            await upsert_snapshot(session, snapshot)
            await session.commit()


async def upsert_snapshot(session: AsyncSession, snapshot: BillingSnapshot) -> None:
    """The snapshot's upsert, in the caller's transaction; an older version never wins."""
    now = datetime.now(UTC)
    values = {
        "customer_id": snapshot.customer_id,
        "email": snapshot.email,
        "name": snapshot.name,
        "status": snapshot.status,
        "plan": snapshot.plan,
        "mrr_cents": snapshot.mrr_cents,
        "currency": snapshot.currency,
        "ltv_cents": snapshot.ltv_cents,
        "customer_since": _from_epoch(snapshot.customer_since),
        "livemode": snapshot.livemode,
        "deleted": snapshot.deleted,
        "snapshot_version": snapshot.events_applied,
        # The ledger's copy of each subscription's payload is its working memory, not
        # part of the read model.
        "subscriptions": [
            asdict(s, dict_factory=_without_payload) for s in snapshot.subscriptions.values()
        ],
        "updated_at": now,
        "mrr": snapshot.mrr,
        "mrr_exact": snapshot.mrr_exact,
        "ltv": snapshot.ltv,
        "refunded": snapshot.refunded,
    }
    insert = insert_for(session.get_bind().dialect.name)
    await session.execute(
        insert(Customer)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["customer_id"],
            set_={k: v for k, v in values.items() if k != "customer_id"},
            where=col(Customer.snapshot_version) <= snapshot.events_applied,
        )
    )
    activity.logger.debug(
        "persisted snapshot of %s at version %d", snapshot.customer_id, snapshot.events_applied
    )


def _without_payload(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, value in fields if name != "subscription"}


def _from_epoch(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)
