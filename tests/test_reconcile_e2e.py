"""A webhook Stripe never delivered, recovered end to end: the event is only in Stripe's
`GET /v1/events` (the local server speaking it), a reconciliation pass on the dev server
stores it, the API's forwarder delivers it to the customer workflow, and a late webhook
of the same event is answered as a duplicate. And the `stripe-reconcile` Schedule a
starting worker creates or updates."""

import contextlib
import dataclasses
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    DescribeScheduleInput,
    Interceptor,
    OutboundInterceptor,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    ScheduleUpdate,
    ScheduleUpdateInput,
    UpdateScheduleInput,
)
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.payload_codec import EncryptionCodec, data_converter, written_now
from stripe_lifecycle.temporal_setup import ensure_reconcile_schedule
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.reconcile import ReconcileInput, StripeReconcileWorkflow

from . import corpus
from .conftest import running_stack
from .events import unique_customer_id
from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from .signing import signed
from .workflow_helpers import eventually, pause_as_operator, schedule_in_effect


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


@pytest.mark.parametrize("webhook_afterwards", [False, True], ids=["lost", "late"])
async def test_an_event_no_webhook_delivered_reaches_the_customer_once(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
    webhook_afterwards: bool,
) -> None:
    cus = unique_customer_id()
    lost = corpus.event("customer.created", "clover", cus, created=int(time.time()) - 120)
    stripe_api.state.events = [lost]
    async with running_stack(
        dev_env,
        sqlite_url,
        task_queue,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    ) as (_, http):
        result = await dev_env.client.execute_workflow(
            StripeReconcileWorkflow.run,
            ReconcileInput(lookback_seconds=3600),
            id=ids.reconcile_now_id(int(time.time())) + uuid.uuid4().hex[:6],
            task_queue=task_queue,
        )
        assert (result.events_seen, result.events_recovered) == (1, 1)
        ready = (await http.get("/readyz")).json()
        assert ready["events_recovered"] == 1
        assert ready["last_reconciliation"] == result.finished_at.isoformat()

        customer = dev_env.client.get_workflow_handle_for(
            CustomerWorkflow.run, ids.customer_workflow_id(cus)
        )

        async def applied() -> bool:
            try:
                state: BillingSnapshot = await customer.query(CustomerWorkflow.state)
            except Exception:
                return False
            return state.events_applied == 1

        # The forwarder's sweep leaves rows younger than its grace (10 s) to their request.
        await eventually(applied, "the recovered event applied by the customer", timeout=40)
        if webhook_afterwards:
            body, headers = signed(lost)
            answer = await http.post("/webhooks/stripe", content=body, headers=headers)
            assert answer.json()["duplicate"] is True
        state = await customer.query(CustomerWorkflow.state)
        assert state.events_applied == 1
        signals = [
            e
            async for e in customer.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        assert len(signals) == 1


@contextlib.asynccontextmanager
async def reconcile_schedule(
    worker: Client, task_queue: str, operator: Client
) -> AsyncIterator[ScheduleHandle]:
    """The `stripe-reconcile` Schedule as a worker on `worker`'s client leaves it (a pass
    every hour, three days back), once in effect, in the operator's hands; deleted after."""
    await ensure_reconcile_schedule(worker, task_queue, timedelta(hours=1), timedelta(days=3))
    handle = operator.get_schedule_handle(ids.RECONCILE_SCHEDULE_ID)
    try:
        await schedule_in_effect(handle, timedelta(hours=1), task_queue)
        yield handle
    finally:
        await handle.delete()


def on_the_same_server(
    client: Client, data_converter: DataConverter, interceptors: list[Interceptor]
) -> Client:
    """Another process's client of the same Temporal server and namespace."""
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=data_converter,
        interceptors=interceptors,
    )


async def test_the_schedule_is_created_once_and_follows_the_settings(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    async with reconcile_schedule(client, task_queue, client) as handle:
        await pause_as_operator(handle, "paused by the operator")
        # A restart (or a second replica) with other settings: the same Schedule, updated.
        await ensure_reconcile_schedule(
            client, task_queue, timedelta(minutes=30), timedelta(days=7)
        )
        schedule = await schedule_in_effect(handle, timedelta(minutes=30), task_queue)
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert schedule.state.paused and schedule.state.note == "paused by the operator"
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("StripeReconcileWorkflow", task_queue)
        [lookback] = await client.data_converter.decode(list(action.args), [ReconcileInput])
        assert lookback == ReconcileInput(lookback_seconds=7 * 86_400)


class OperatorPausesMidway(Interceptor):
    """A worker's client on which the operator pauses the Schedule right after the worker
    has read it and before the worker acts on what it read: the race of every restart."""

    def __init__(self, operator: Client, note: str) -> None:
        self.operator = operator
        self.note = note
        self.paused = False
        self.updates_sent = 0

    async def pause_once(self, schedule_id: str) -> None:
        if not self.paused:
            self.paused = True
            await pause_as_operator(self.operator.get_schedule_handle(schedule_id), self.note)

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _PausingOutbound(next, self)


class _PausingOutbound(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, race: OperatorPausesMidway) -> None:
        super().__init__(next)
        self.race = race

    async def describe_schedule(self, input: DescribeScheduleInput) -> ScheduleDescription:
        described = await super().describe_schedule(input)
        await self.race.pause_once(input.id)
        return described

    async def update_schedule(self, input: UpdateScheduleInput) -> None:
        self.race.updates_sent += 1
        updater = input.updater

        async def after_the_pause(read: ScheduleUpdateInput) -> ScheduleUpdate | None:
            await self.race.pause_once(input.id)
            update = updater(read)
            assert update is None or isinstance(update, ScheduleUpdate)
            return update

        await super().update_schedule(dataclasses.replace(input, updater=after_the_pause))


async def test_a_restart_with_the_same_settings_keeps_a_pause_made_while_it_looked(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    async with reconcile_schedule(client, task_queue, client) as handle:
        race = OperatorPausesMidway(client, "paused while a worker restarted")
        restarting = on_the_same_server(client, client.data_converter, [race])
        await ensure_reconcile_schedule(
            restarting, task_queue, timedelta(hours=1), timedelta(days=3)
        )
        # An update would carry the unpaused state the worker read, written after the pause.
        assert race.paused and race.updates_sent == 0
        state = (await handle.describe()).schedule.state
        assert state.paused and state.note == "paused while a worker restarted"
        # Any one setting changed is sent: here the lookback alone.
        await ensure_reconcile_schedule(
            restarting, task_queue, timedelta(hours=1), timedelta(days=7)
        )
        assert race.updates_sent == 1


async def test_a_schedule_whose_action_the_worker_cannot_read_is_written_again(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    # Written while a payload key was in use, since retired: this worker runs without one.
    retired = on_the_same_server(
        client, data_converter(EncryptionCodec(secrets.token_bytes(32))), []
    )
    async with reconcile_schedule(retired, task_queue, client) as handle:
        await ensure_reconcile_schedule(client, task_queue, timedelta(hours=1), timedelta(days=3))

        async def readable() -> bool:
            action = (await handle.describe()).schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            try:
                [read] = await client.data_converter.decode(list(action.args), [ReconcileInput])
            except KeyError:  # still sealed: this client has no payload key at all
                return False
            assert read == ReconcileInput(lookback_seconds=3 * 86_400)
            return True

        await eventually(readable, "the Schedule's action written with today's key")


async def test_a_schedule_written_in_clear_is_sealed_when_a_payload_key_is_set_and_rotated(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = dev_env.client
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    # Created before any payload key was set: its arguments and summary are in clear.
    async with reconcile_schedule(client, task_queue, client) as handle:
        # A key set, then rotated (the old one kept to read what it sealed): each start
        # with the same settings writes the action again, sealed under today's key.
        for codec in (EncryptionCodec(old), EncryptionCodec(new, [old])):
            keyed = on_the_same_server(client, data_converter(codec), [])
            await ensure_reconcile_schedule(
                keyed, task_queue, timedelta(hours=1), timedelta(days=3)
            )

            async def sealed(codec: EncryptionCodec = codec) -> bool:
                action = (await handle.describe()).raw_description.schedule.action
                payloads = [*action.start_workflow.input.payloads]
                payloads.append(action.start_workflow.user_metadata.summary)
                return all(written_now(codec, payload) for payload in payloads)

            await eventually(sealed, f"the action sealed under key {codec.current_key_id}")
        # Sealed under today's key, it holds: the next start sends no update.
        race = OperatorPausesMidway(client, "paused while a keyed worker restarted")
        restarting = on_the_same_server(client, data_converter(codec), [race])
        await ensure_reconcile_schedule(
            restarting, task_queue, timedelta(hours=1), timedelta(days=3)
        )
        assert race.updates_sent == 0
