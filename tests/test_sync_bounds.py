"""A historical sync's backfill is bounded like webhooks before it enters a workflow: free
text trimmed, an object no workflow may receive left out, and the rest delivered."""

from dataclasses import asdict
from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import DeliverRequest
from stripe_lifecycle.activities.sync import SyncActivities
from stripe_lifecycle.domain.events import BillingEvent, CustomerInfo, SubscriptionInfo
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import SyncedObject


def stored(customer_id: str, event: BillingEvent, object_id: str) -> SyncedObject:
    return SyncedObject(
        account="",
        object_id=object_id,
        resource="customers",
        customer_id=customer_id,
        digest="d" * 64,
        event=asdict(event),
        synced_at=datetime.now(UTC),
    )


async def test_backfill_is_trimmed_or_left_out_before_delivery(
    sessionmaker: SessionMaker,
) -> None:
    huge_name = BillingEvent(
        event_id="sync_cus_A_1",
        type="customer.updated",
        created=1_790_000_000,
        livemode=False,
        customer_id="cus_A",
        customer=CustomerInfo(id="cus_A", name="N" * 3_000_000),
        backfill=True,
    )
    unfit = BillingEvent(
        event_id="sync_sub_B_1",
        type="customer.subscription.updated",
        created=1_790_000_000,
        livemode=False,
        customer_id="cus_A",
        subscription=SubscriptionInfo(id="sub_" + "x" * 10_000, customer_id="cus_A"),
        backfill=True,
    )
    async with sessionmaker() as session:
        session.add(stored("cus_A", huge_name, "cus_A"))
        session.add(stored("cus_A", unfit, "sub_B"))
        await session.commit()
    delivered: list[tuple[str, list[BillingEvent]]] = []

    async def deliver(customer_id: str, events: list[BillingEvent]) -> None:
        delivered.append((customer_id, events))

    sync = SyncActivities(None, sessionmaker, deliver)
    result = await ActivityEnvironment().run(
        sync.sync_deliver, DeliverRequest(account=None, limit=10, start_lifecycles=False)
    )
    [(customer, events)] = delivered
    assert customer == "cus_A"
    assert [e.event_id for e in events] == ["sync_cus_A_1"]
    name = events[0].customer.name if events[0].customer else None
    assert name is not None and len(name) <= 257 and name.endswith("…")
    assert result.customers == 1
