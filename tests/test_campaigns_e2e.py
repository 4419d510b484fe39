"""Segments and upgrade campaigns end to end on the dev server: the customer workflow
evaluates its segments (real activities, SQLite), an entry starts the campaign, its offer
is mailed (outbox) or held out, an upgrade ends it with an expansion credited to the
offer; leaving and coming back respects `reentry`; customers already in a segment are not
mailed unless the campaign enters existing members (through the sweep)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.client import WorkflowHandle
from temporalio.worker import PatchActivationInput, Worker

from stripe_lifecycle.domain import contract, holdout, ids
from stripe_lifecycle.domain.ledger import LifecycleRef
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.models import (
    Conversion,
    CustomerSegmentFacts,
    LifecycleInstance,
    Message,
    SegmentEvent,
    SegmentMember,
)
from stripe_lifecycle.storage.segments import record_usage
from stripe_lifecycle.worker import build_stripe_reads_worker, worker_config
from stripe_lifecycle.workflows.customer import (
    FIRST_TASK_PATCH,
    SEGMENTS_ADOPTED_PATCH,
    SEGMENTS_PATCH,
    STORE_BATCH_PATCH,
    STORE_CHOICES_PATCH,
    CustomerWorkflow,
)
from stripe_lifecycle.workflows.segments import SegmentSweepWorkflow, SweepInput

from .conftest import ADMIN_KEY, LINK_SECRET, SUPPORT_KEY, WorkerRig, running_stack
from .events import customer_event, subscription_event, unique_customer_id
from .workflow_helpers import DAY, eventually, lifecycles_of, wait_for_lifecycle

SEGMENTS = """
seat_usage: {limit_metadata_key: seats, used: usage.seats_used}
segments:
  - name: seats-near-limit
    description: Active customers using 90% or more of their plan's seats
    where:
      all:
        - {field: status, eq: active}
        - {field: seat_usage, gte: 0.9}
  - name: long-time-pro
    description: Pro for 90 days or more
    where:
      all:
        - {field: plan, eq: Pro}
        - {field: subscription_age_days, gte: 90}
"""

AUTOMATIONS = """
automations:
  - name: seats-upgrade
    lifecycle: upgrade
    trigger: {segment: seats-near-limit}
    offer: {description: Twice the seats for the same price this month, next_plan: Business}
    steps:
      - {after: 0s, send: upgrade/offer}
      - {after: 7d, send: upgrade/offer}
  - name: pro-tenure
    lifecycle: upgrade
    trigger: {segment: long-time-pro}
    enter_existing: true
    holdout: 50%
    offer: {description: A month of Business on us, next_plan: Business}
    steps:
      - {after: 0s, send: upgrade/offer}
"""


def campaign_worker(
    rig: WorkerRig, folder: Path, automations: str = AUTOMATIONS
) -> contextlib.AbstractAsyncContextManager[Worker]:
    """The real workers, on these segments and automations."""
    (folder / "segments.yaml").write_text(SEGMENTS)
    (folder / "automations.yaml").write_text(automations)
    return rig.worker(segments=folder / "segments.yaml", automations=folder / "automations.yaml")


@pytest.fixture
async def worker(dev_rig: WorkerRig, tmp_path: Path) -> AsyncIterator[Worker]:
    async with campaign_worker(dev_rig, tmp_path) as w:
        yield w


class Customer:
    def __init__(self, rig: WorkerRig, customer_id: str | None = None) -> None:
        self.id = customer_id or unique_customer_id()
        self.sub = f"sub_{self.id[4:]}"
        self.rig = rig
        self._deliver = temporal_delivery(
            rig.env.client, ForwarderConfig(task_queue=rig.task_queue)
        )
        self.handle: WorkflowHandle[Any, Any] = rig.env.client.get_workflow_handle_for(
            CustomerWorkflow.run, ids.customer_workflow_id(self.id)
        )

    def created(self, *, at: int, email: str = "ada@example.com") -> dict[str, Any]:
        """`customer.created` of a customer created in Stripe at `at`."""
        event = customer_event(self.id, email, created=at, type_="customer.created")
        event["data"]["object"]["created"] = at
        return event

    async def send(self, *events: dict[str, Any]) -> None:
        for raw in events:
            event = normalise_event(raw)
            assert event is not None
            await self._deliver(event.customer_id, [event])

    def subscription(self, *, created: int, seats: int = 10, **fields: Any) -> dict[str, Any]:
        event = subscription_event(self.id, sub_id=self.sub, created=created, **fields)
        price = event["data"]["object"]["items"]["data"][0]["price"]
        price["metadata"] = {"seats": str(seats)}
        return event

    async def store_usage(self, seats_used: int) -> None:
        """Usage the app reported before the customer had a workflow: stored, and read by
        the customer's first evaluation."""
        async with self.rig.sessionmaker() as session:
            await record_usage(session, self.id, "seats_used", seats_used)

    async def lifecycles(self) -> dict[str, LifecycleRef]:
        """The latest instance under each workflow id."""
        return await lifecycles_of(self.handle)

    async def wait_for(self, workflow_id: str, status: str = "running") -> LifecycleRef:
        return await wait_for_lifecycle(self.handle, workflow_id, status)

    async def history(self) -> list[tuple[str, str, str, bool]]:
        async with self.rig.sessionmaker() as session:
            rows = await session.execute(
                select(SegmentEvent)
                .where(col(SegmentEvent.customer_id) == self.id)
                .order_by(col(SegmentEvent.id))
            )
            return [(e.segment, e.change, e.reason, e.initial) for e in rows.scalars()]

    async def evaluated(self) -> bool:
        async with self.rig.sessionmaker() as session:
            return await session.get(CustomerSegmentFacts, self.id) is not None

    async def usage_evaluated(self, seats_used: int) -> bool:
        async with self.rig.sessionmaker() as session:
            facts = await session.get(CustomerSegmentFacts, self.id)
            return facts is not None and facts.facts["usage"].get("seats_used") == seats_used

    async def segments(self) -> list[str]:
        description = await self.handle.describe()
        return list(description.typed_search_attributes.get(contract.SEGMENTS) or [])

    async def messages(self) -> list[Message]:
        async with self.rig.sessionmaker() as session:
            rows = await session.execute(
                select(Message)
                .where(col(Message.customer_id) == self.id)
                .order_by(col(Message.created_at))
            )
            return list(rows.scalars())


async def test_seat_usage_enters_the_segment_mails_the_offer_and_the_upgrade_is_credited(
    dev_rig: WorkerRig, tmp_path: Path
) -> None:
    (tmp_path / "segments.yaml").write_text(SEGMENTS)
    (tmp_path / "automations.yaml").write_text(AUTOMATIONS)
    stack = running_stack(
        dev_rig.env,
        dev_rig.database_url,
        dev_rig.task_queue,
        segments=tmp_path / "segments.yaml",
        automations=tmp_path / "automations.yaml",
    )
    async with stack as (_, http):
        await _usage_to_credited_upgrade(dev_rig, http)


async def _usage_to_credited_upgrade(dev_rig: WorkerRig, http: httpx.AsyncClient) -> None:
    customer = Customer(dev_rig)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def report(seats_used: int) -> None:
        answer = await http.post(
            f"/v1/customers/{customer.id}/usage",
            json={"metric": "seats_used", "value": seats_used},
            headers=admin,
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["evaluated"] is True

    now = int(time.time())
    await customer.send(
        customer.created(at=now - 30),
        customer.subscription(created=now - 20, type_="customer.subscription.created"),
    )
    await eventually(customer.evaluated, "the customer evaluated")
    await report(6)
    await eventually(lambda: customer.usage_evaluated(6), "6 seats evaluated")
    await report(9)
    campaign = ids.upgrade_id(customer.id, "seats-upgrade", 1)
    ref = await customer.wait_for(campaign)
    assert (ref.automation, ref.segment, ref.exit_on_leave) == (
        "seats-upgrade",
        "seats-near-limit",
        True,
    )

    async def offered() -> bool:
        return [m.template for m in await customer.messages()] == ["upgrade/offer"]

    await eventually(offered, "the upgrade offer mailed")
    [offer] = await customer.messages()
    assert offer.workflow_id == campaign
    assert "Business" in offer.subject
    async with dev_rig.sessionmaker() as session:
        stored = await session.get(Message, offer.id)
        assert stored is not None
        assert "using 9 of the 10 seats" in stored.text
    assert await customer.segments() == ["seats-near-limit"]
    [entry] = await customer.history()
    assert entry == ("seats-near-limit", "entered", "seat_usage 0.6 → 0.9 (gte 0.9)", False)

    # The upgrade: an expansion credited to the offer, and the campaign ends.
    changed: dict[str, Any] = {"items": {"data": []}}
    upgraded_at = int(time.time()) + 1
    await customer.send(
        customer.subscription(
            created=upgraded_at, seats=20, unit_amount=9900, previous_attributes=changed
        )
    )
    await customer.wait_for(campaign, "upgraded")

    async def credited() -> list[Conversion]:
        async with dev_rig.sessionmaker() as session:
            rows = await session.execute(
                select(Conversion).where(col(Conversion.customer_id) == customer.id)
            )
            return list(rows.scalars())

    async def expansion_recorded() -> bool:
        return len(await credited()) == 1

    await eventually(expansion_recorded, "the expansion recorded")
    [expansion] = await credited()
    assert (expansion.kind, expansion.workflow_id, expansion.mrr_delta_cents) == (
        "expansion",
        campaign,
        5000,
    )
    assert (expansion.message_id, expansion.attribution) == (offer.id, "last_send")
    # With 20 seats, 9 used is under 90%: the customer left the segment.

    async def left() -> bool:
        return [c for _, c, _, _ in await customer.history()] == ["entered", "exited"]

    await eventually(left, "the exit recorded")
    assert (await customer.history())[1][2] == "seat_usage 0.9 → 0.45 (gte 0.9)"

    # Coming back: `reentry` defaults to never, so no second campaign.
    await report(19)

    async def back() -> bool:
        return [c for _, c, _, _ in await customer.history()] == ["entered", "exited", "entered"]

    await eventually(back, "the second entry recorded")
    assert ids.upgrade_id(customer.id, "seats-upgrade", 2) not in await customer.lifecycles()
    assert len(await customer.messages()) == 1
    async with dev_rig.sessionmaker() as session:
        instance = await session.get(LifecycleInstance, campaign)
        assert instance is not None
        assert (instance.automation, instance.held_out) == ("seats-upgrade", False)
    # Support reads the same history through the API.
    read = await http.get(
        f"/v1/customers/{customer.id}/segments", headers={"Authorization": f"Bearer {SUPPORT_KEY}"}
    )
    assert read.status_code == 200
    body = read.json()
    assert [s["name"] for s in body["segments"]] == ["seats-near-limit"]
    assert [(h["change"], h["reason"]) for h in body["history"]] == [
        ("entered", "seat_usage 0.6 → 0.9 (gte 0.9)"),
        ("exited", "seat_usage 0.9 → 0.45 (gte 0.9)"),
        ("entered", "seat_usage 0.45 → 0.95 (gte 0.9)"),
    ]


async def test_existing_members_are_not_mailed_unless_the_campaign_enters_them(
    dev_rig: WorkerRig, tmp_path: Path
) -> None:
    now = int(time.time())
    customers = [Customer(dev_rig) for _ in range(4)]
    # Before the tenure campaign is enabled: customers of long standing, Pro for 100 days
    # and using 9 of 10 seats, seen for the first time (a new install, a sync), their
    # events arriving one by one.
    without_tenure = AUTOMATIONS.replace(
        "enter_existing: true", "enter_existing: true\n    enabled: false"
    )
    async with campaign_worker(dev_rig, tmp_path, without_tenure):
        for customer in customers:
            await customer.store_usage(9)
            await customer.send(
                customer.created(at=now - 400 * DAY),
                customer.subscription(created=now - 100 * DAY + DAY),
            )

        async def all_in() -> bool:
            found = [sorted(await c.segments()) for c in customers]
            return all(f == ["long-time-pro", "seats-near-limit"] for f in found)

        await eventually(all_in, "every customer in both segments")
        for customer in customers:
            assert {(s, c, initial) for s, c, _, initial in await customer.history()} == {
                ("seats-near-limit", "entered", True),
                ("long-time-pro", "entered", True),
            }
            # The seats campaign did not start on finding them in its segment.
            assert not [
                r for r in (await customer.lifecycles()).values() if r.lifecycle == "upgrade"
            ]
            assert await customer.messages() == []

    # The tenure campaign enabled: the sweep offers it to its segment's members.
    async with campaign_worker(dev_rig, tmp_path):
        result = await dev_rig.env.client.execute_workflow(
            SegmentSweepWorkflow.run,
            SweepInput(),
            id=f"sweep-{customers[0].id}",
            task_queue=dev_rig.task_queue,
        )
        assert result.offered == len(customers)
        await _tenure_campaigns_ran(dev_rig, customers)


async def _tenure_campaigns_ran(dev_rig: WorkerRig, customers: list[Customer]) -> None:
    for customer in customers:
        campaign = ids.upgrade_id(customer.id, "pro-tenure", 1)
        ref = await customer.wait_for(campaign, "sequence_finished")
        held = holdout.held_out(customer.id, "pro-tenure", 5000)
        assert ref.held_out is held
        expected = [] if held else ["upgrade/offer"]

        async def mailed(c: Customer = customer, want: list[str] = expected) -> bool:
            return [m.template for m in await c.messages()] == want

        await eventually(mailed, f"{customer.id} mailed {expected}")
        # Never the seats campaign, which does not enter existing members.
        assert ids.upgrade_id(customer.id, "seats-upgrade", 1) not in await customer.lifecycles()
    async with dev_rig.sessionmaker() as session:
        rows = await session.execute(
            select(LifecycleInstance).where(
                col(LifecycleInstance.customer_id).in_([c.id for c in customers])
            )
        )
        groups = {i.customer_id: i.held_out for i in rows.scalars()}
    assert groups == {c.id: holdout.held_out(c.id, "pro-tenure", 5000) for c in customers}


@pytest.mark.usefixtures("worker")
async def test_a_segment_of_time_is_entered_through_the_sweep(
    dev_rig: WorkerRig,
) -> None:
    now = int(time.time())
    customer = Customer(dev_rig)
    # Pro for 90 days less 4 seconds (the subscription's `created` is a day before the
    # event's): a new customer, so entering is news.
    await customer.send(
        customer.created(at=now - 10),
        customer.subscription(created=now - 89 * DAY + 4, type_="customer.subscription.created"),
    )

    await eventually(customer.evaluated, "the customer evaluated")
    async with dev_rig.sessionmaker() as session:
        members = await session.execute(
            select(SegmentMember).where(col(SegmentMember.customer_id) == customer.id)
        )
        assert members.first() is None
    while int(time.time()) < now + 5:
        await asyncio.sleep(0.2)
    await dev_rig.env.client.execute_workflow(
        SegmentSweepWorkflow.run,
        SweepInput(),
        id=f"sweep-{customer.id}",
        task_queue=dev_rig.task_queue,
    )

    async def entered() -> bool:
        return await customer.segments() == ["long-time-pro"]

    await eventually(entered, "entered long-time-pro")
    [entry] = await customer.history()
    assert entry == ("long-time-pro", "entered", "subscription_age_days 89 → 90 (gte 90)", False)
    await customer.wait_for(ids.upgrade_id(customer.id, "pro-tenure", 1), "sequence_finished")


def before_segments(patch: PatchActivationInput) -> bool:
    """A worker of the release before segments: their patches, and the later ones that
    stand for them, never activate."""
    return patch.patch_id not in (
        SEGMENTS_PATCH,
        SEGMENTS_ADOPTED_PATCH,
        FIRST_TASK_PATCH,
        STORE_BATCH_PATCH,
        STORE_CHOICES_PATCH,
    )


async def test_a_customer_workflow_begun_before_segments_takes_them_up_on_the_sweeps_signal(
    dev_rig: WorkerRig, tmp_path: Path
) -> None:
    now = int(time.time())
    customer = Customer(dev_rig)
    await customer.store_usage(9)
    # Under the release before segments: the customer's workflow begins and runs.
    (tmp_path / "segments.yaml").write_text(SEGMENTS)
    (tmp_path / "automations.yaml").write_text(AUTOMATIONS)
    settings = Settings(
        database_url=dev_rig.database_url,
        task_queue=dev_rig.task_queue,
        link_secret=LINK_SECRET,
        segments=tmp_path / "segments.yaml",
        automations=tmp_path / "automations.yaml",
    )
    config = worker_config(dev_rig.env.client, settings, dev_rig.sessionmaker)
    config["patch_activation_callback"] = before_segments
    old = Worker(**config)
    reads = build_stripe_reads_worker(dev_rig.env.client, settings, dev_rig.sessionmaker)
    async with reads, old:
        await customer.send(
            customer.created(at=now - 400 * DAY),
            customer.subscription(
                created=now - 100 * DAY + DAY, type_="customer.subscription.created"
            ),
        )

        async def applied() -> bool:
            return (await customer.handle.query(CustomerWorkflow.state)).events_applied == 2

        await eventually(applied, "both events applied")
    assert not await customer.evaluated()
    # The new release: the sweep tells every customer never evaluated, and the running
    # workflow takes up segments from that signal on.
    async with campaign_worker(dev_rig, tmp_path):
        result = await dev_rig.env.client.execute_workflow(
            SegmentSweepWorkflow.run,
            SweepInput(),
            id=f"sweep-{customer.id}",
            task_queue=dev_rig.task_queue,
        )
        assert result.first >= 1

        async def in_both() -> bool:
            return sorted(await customer.segments()) == ["long-time-pro", "seats-near-limit"]

        await eventually(in_both, "the old run evaluated its segments")
        # A customer of long standing: already in them, so the seats campaign (no
        # `enter_existing`) leaves them alone, while the tenure campaign enters them.
        assert {(s, initial) for s, _, _, initial in await customer.history()} == {
            ("seats-near-limit", True),
            ("long-time-pro", True),
        }
        await customer.wait_for(ids.upgrade_id(customer.id, "pro-tenure", 1), "sequence_finished")
        assert ids.upgrade_id(customer.id, "seats-upgrade", 1) not in await customer.lifecycles()
