"""Lifecycle instances and conversions for the lift tests, written as the workflows
write them: the hand-computed table's populations, and the rows the API and page show."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Conversion, LifecycleInstance

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Rows:
    """Lifecycle instances and conversions to insert, as the lead's code writes them."""

    instances: list[LifecycleInstance] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)

    def instance(
        self,
        customer: str,
        automation: str,
        *,
        held_out: bool = False,
        lifecycle: str = "dunning",
        started: datetime | None = None,
    ) -> str:
        workflow_id = f"{lifecycle}-{uuid.uuid4().hex[:12]}"
        self.instances.append(
            LifecycleInstance(
                workflow_id=workflow_id,
                customer_id=customer,
                lifecycle=lifecycle,
                automation=automation,
                held_out=held_out,
                started_at=started or NOW - timedelta(days=3),
                mrr_cents=2900,
                currency="usd",
            )
        )
        return workflow_id

    def conversion(
        self,
        workflow_id: str,
        mrr: int,
        currency: str | None = "usd",
        *,
        event: str | None = None,
        kind: str = "recovered",
    ) -> str:
        instance = next((i for i in self.instances if i.workflow_id == workflow_id), None)
        event_id = event or f"evt_{uuid.uuid4().hex[:12]}"
        self.conversions.append(
            Conversion(
                stripe_event_id=event_id,
                kind=kind,
                customer_id=instance.customer_id if instance else "cus_unknown",
                lifecycle=instance.lifecycle if instance else "dunning",
                workflow_id=workflow_id,
                automation=instance.automation if instance else "dunning-default",
                mrr_delta_cents=mrr,
                amount_cents=mrr,
                currency=currency,
                occurred_at=NOW - timedelta(days=1),
            )
        )
        return event_id

    def population(
        self,
        automation: str,
        lifecycle: str,
        *,
        held_out: bool,
        customers: int,
        converted: dict[str, tuple[int, int]],
    ) -> None:
        """`customers` customers with one instance each; `converted` currency → (how many
        converted, each one's MRR delta)."""
        kinds = iter((currency, mrr) for currency, (n, mrr) in converted.items() for _ in range(n))
        group = "h" if held_out else "t"
        for n in range(customers):
            workflow_id = self.instance(
                f"cus_{automation}_{group}{n}", automation, held_out=held_out, lifecycle=lifecycle
            )
            if (won := next(kinds, None)) is not None:
                self.conversion(workflow_id, won[1], won[0])

    async def insert(self, sessionmaker: SessionMaker) -> None:
        async with sessionmaker() as session:
            session.add_all(self.instances)
            await session.flush()
            session.add_all(self.conversions)
            await session.commit()


def api_rows() -> Rows:
    """The hand table's first row as data: 1000 treated (100 converted in dollars at $29
    MRR each, 20 in euros at €19), 100 held out (8 converted at $29); a small win-back
    automation; a trial automation with no holdout."""
    rows = Rows()
    rows.population(
        "dunning-default",
        "dunning",
        held_out=False,
        customers=1000,
        converted={"usd": (100, 2900), "eur": (20, 1900)},
    )
    rows.population(
        "dunning-default", "dunning", held_out=True, customers=100, converted={"usd": (8, 2900)}
    )
    rows.population(
        "winback-default", "winback", held_out=False, customers=10, converted={"usd": (2, 4900)}
    )
    rows.population("winback-default", "winback", held_out=True, customers=3, converted={})
    rows.population("trial-default", "trial", held_out=False, customers=5, converted={})
    # Started long before the default range (30 days): not in it.
    rows.instance("cus_ancient", "dunning-default", started=NOW - timedelta(days=45))
    return rows
