"""A real `lifecycle worker` process SIGKILLed in the middle of a side effect, then
restarted: in the middle of a send (the local Postmark-speaking server holds the email it
accepted) and in the middle of a Stripe action (the local Stripe-speaking server applied
the write and holds its answer). Nothing is lost and nothing is done twice: the email the
kill interrupted is not sent again (the retry finds it in Postmark's message search, by
the message id its Metadata carries, and records it sent), the next step's email goes out
once, and the Stripe write is retried under the same idempotency key, which Stripe
answers from the first application.

A killed worker stops heartbeating: Temporal times its attempt out after the heartbeat
timeout (`CALL_HEARTBEAT`, 20 s), well before the start-to-close timeout (2 minutes for a
send, 1 for a Stripe action), and schedules the retry, which the restarted worker runs.
The history shows the retry's cause: the missed heartbeat."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.api.enums.v1 import EventType, PendingActivityState, TimeoutType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Message, MessageStatus
from stripe_lifecycle.workflows.engine import CALL_HEARTBEAT, LifecycleInput, LifecycleResult
from stripe_lifecycle.workflows.lifecycles import InvoiceOverdueWorkflow

from .cli_helpers import LIFECYCLE, clean_env
from .conftest import LINK_SECRET, temporal_address
from .fakes import (
    POSTMARK_TOKEN,
    STRIPE_API_KEY,
    Hold,
    PostmarkHttpServer,
    StripeHttpServer,
    StripeState,
    running_postmark,
    serving,
)

Handle = WorkflowHandle[Any, LifecycleResult]
# Seconds a worker process may take to start and take its first task on a loaded machine.
WORKER_START = 120.0


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


@pytest.fixture
async def db(postgresql_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(postgresql_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def overdue_invoice() -> InvoiceInfo:
    return InvoiceInfo(
        id=f"in_{uuid.uuid4().hex[:14]}",
        customer_id="cus_Kill1",
        status="open",
        number="ACME-0099",
        currency="usd",
        amount_due=49_00,
        amount_remaining=49_00,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_99",
        collection_method="send_invoice",
        due_date=int(time.time()) - 86_400,
    )


def stripe_invoice(bill: InvoiceInfo) -> dict[str, Any]:
    return {
        "id": bill.id,
        "object": "invoice",
        "customer": bill.customer_id,
        "status": "open",
        "amount_due": bill.amount_due,
        "currency": bill.currency,
        "livemode": False,
    }


async def start_overdue(
    client: Client, task_queue: str, bill: InvoiceInfo, steps: list[Step]
) -> Handle:
    handle: Handle = await client.start_workflow(
        InvoiceOverdueWorkflow.run,
        LifecycleInput(
            customer_id=bill.customer_id or "",
            automation=Automation(
                name="overdue-kill", lifecycle=Lifecycle.INVOICE_OVERDUE, steps=steps
            ),
            subject_id=bill.id or "",
            customer_email="ap@example.com",
            customer_name="Accounts Payable",
            context={"payment_method": None},
            invoice=bill,
        ),
        id=f"invoice-overdue-{bill.id}",
        task_queue=task_queue,
    )
    return handle


class WorkerProcess:
    """`lifecycle worker` as an operator runs it, its output in `log`; killed with SIGKILL
    and started again on demand."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._env = env
        self._cwd = cwd
        self.log = cwd / "worker.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [LIFECYCLE, "worker"], env=self._env, cwd=self._cwd, stdout=out, stderr=out
            )

    def sigkill(self) -> None:
        assert self._process is not None
        assert self._process.poll() is None, self.log.read_text()
        self._process.send_signal(signal.SIGKILL)
        assert self._process.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)


@asynccontextmanager
async def worker_process(
    env: WorkflowEnvironment, task_queue: str, database_url: str, cwd: Path, **settings: str
) -> AsyncIterator[WorkerProcess]:
    worker = WorkerProcess(
        clean_env(
            LIFECYCLE_TEMPORAL_ADDRESS=temporal_address(env),
            LIFECYCLE_TASK_QUEUE=task_queue,
            LIFECYCLE_DATABASE_URL=database_url,
            LIFECYCLE_LINK_SECRET=LINK_SECRET,
            **settings,
        ),
        cwd,
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


async def killed_mid(handle: Handle, activity: str) -> None:
    """Checks that the killed worker left the first attempt at `activity` started."""
    description = await handle.describe()
    [pending] = description.raw_description.pending_activities
    assert pending.activity_type.name == activity
    assert pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    assert pending.attempt == 1


async def retried_for_silence(handle: Handle, activity: str) -> None:
    """Checks, in the finished instance's history, that the first call of `activity` (the
    one the kill interrupted) ended on its second attempt, the first having timed out for
    its missed heartbeats."""
    history = await handle.fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    started = next(
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == min(scheduled)
    )
    assert started.attempt == 2
    cause = started.last_failure.timeout_failure_info.timeout_type
    assert cause == TimeoutType.TIMEOUT_TYPE_HEARTBEAT, started.last_failure


async def result_of(handle: Handle, worker: WorkerProcess) -> LifecycleResult:
    """The instance's result, once the restarted worker is up and the heartbeat timeout
    (then the retry's backoff) has passed."""
    timeout = WORKER_START + CALL_HEARTBEAT.total_seconds() + 30
    try:
        return await asyncio.wait_for(handle.result(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"{handle.id} did not finish; worker log:\n{worker.log.read_text()}"
        ) from None


async def rows_of(db: SessionMaker, workflow_id: str) -> list[Message]:
    async with db() as session:
        rows = await session.execute(
            select(Message)
            .where(col(Message.workflow_id) == workflow_id)
            .order_by(col(Message.step))
        )
        return list(rows.scalars())


async def test_a_worker_killed_mid_send_sends_no_email_twice(
    dev_env: WorkflowEnvironment,
    postgresql_url: str,
    db: SessionMaker,
    task_queue: str,
    postmark: PostmarkHttpServer,
    tmp_path: Path,
) -> None:
    held = Hold()
    postmark.state.replies.append(held)
    bill = overdue_invoice()
    steps = [
        Step(index=0, after_seconds=0, send="invoice_overdue/reminder"),
        Step(index=1, after_seconds=2, send="invoice_overdue/reminder"),
    ]
    async with worker_process(
        dev_env,
        task_queue,
        postgresql_url,
        tmp_path,
        LIFECYCLE_MAIL_TRANSPORT="postmark",
        LIFECYCLE_POSTMARK_SERVER_TOKEN=POSTMARK_TOKEN,
        LIFECYCLE_POSTMARK_API_URL=postmark.url,
    ) as worker:
        try:
            handle = await start_overdue(dev_env.client, task_queue, bill, steps)
            # Postmark has the first email and holds its answer: the worker is mid-send.
            await held.arrival(WORKER_START)
            [in_flight] = await rows_of(db, handle.id)
            assert in_flight.status == MessageStatus.PENDING
            worker.sigkill()
        finally:
            held.release()
        await killed_mid(handle, "send_email")
        worker.start()
        result = await result_of(handle, worker)
        await retried_for_silence(handle, "send_email")

    assert (result.outcome, result.steps_done) == ("sequence_finished", 2)
    first, second = await rows_of(db, handle.id)
    # One row per send key: the interrupted send may have gone out, and Postmark has no
    # idempotency key to send with; the retry asked its message search, which lists the
    # email by the message id in its Metadata: sent, under Postmark's id, never twice.
    assert first.id == in_flight.id and first.send_key == in_flight.send_key
    assert (first.status, first.error, first.provider_message_id) == (
        MessageStatus.SENT,
        None,
        postmark.state.message_ids[0],
    )
    assert first.sent_at is not None and first.in_doubt_since is not None
    [search] = postmark.state.searches
    assert (search["recipient"], search["tag"]) == ("ap@example.com", first.template)
    assert second.status == MessageStatus.SENT and second.sent_at is not None
    assert second.provider_message_id == postmark.state.message_ids[1]
    assert len({first.send_key, second.send_key}) == 2
    # Postmark received each step's email exactly once: the held one, and the next.
    received = [
        (r.body["Metadata"]["workflow_id"], r.body["Metadata"]["step"], r.body["To"])
        for r in postmark.state.requests
    ]
    assert received == [
        (handle.id, first.step, "ap@example.com"),
        (handle.id, second.step, "ap@example.com"),
    ]
    assert [r.body["Metadata"]["message_id"] for r in postmark.state.requests] == [
        first.id,
        second.id,
    ]


async def test_a_worker_killed_mid_stripe_action_applies_it_once(
    dev_env: WorkflowEnvironment,
    postgresql_url: str,
    db: SessionMaker,
    task_queue: str,
    stripe_api: StripeHttpServer,
    tmp_path: Path,
) -> None:
    bill = overdue_invoice()
    assert bill.id is not None
    stripe_api.state.invoices[bill.id] = stripe_invoice(bill)
    held = Hold()
    stripe_api.state.hold = held
    steps = [
        Step(index=0, after_seconds=0, action="mark_uncollectible"),
        Step(index=1, after_seconds=1, send="invoice_overdue/reminder"),
    ]
    async with worker_process(
        dev_env,
        task_queue,
        postgresql_url,
        tmp_path,
        LIFECYCLE_STRIPE_API_KEY=STRIPE_API_KEY,
        LIFECYCLE_STRIPE_API_BASE=stripe_api.url,
    ) as worker:
        try:
            handle = await start_overdue(dev_env.client, task_queue, bill, steps)
            # Stripe applied the write and holds its answer: the worker never learns it.
            await held.arrival(WORKER_START)
            assert stripe_api.state.invoices[bill.id]["status"] == "uncollectible"
            worker.sigkill()
        finally:
            held.release()
        await killed_mid(handle, "stripe_action")
        worker.start()
        result = await result_of(handle, worker)
        await retried_for_silence(handle, "stripe_action")
        state = await handle.query(InvoiceOverdueWorkflow.state)

    assert (result.outcome, result.steps_done) == ("sequence_finished", 2)
    assert [(s.step, s.status) for s in state.steps_done][0] == (steps[0].key, "done")
    path = f"/v1/invoices/{bill.id}/mark_uncollectible"
    writes = [r for r in stripe_api.state.requests if r.method == "POST"]
    # The write reached Stripe twice (the killed attempt's, and the retry's) under one
    # idempotency key, and was applied once: the retry got the first answer back.
    assert [r.path for r in writes] == [path, path]
    assert {r.idempotency_key for r in writes} == {f"{handle.id}/{steps[0].key}"}
    assert stripe_api.state.executed == 1
    assert stripe_api.state.invoices[bill.id]["status"] == "uncollectible"
    # The step after it ran once.
    [reminder] = await rows_of(db, handle.id)
    assert reminder.status == MessageStatus.RECORDED and reminder.step == steps[1].key
