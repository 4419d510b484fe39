"""The mail provider failing for a while, then recovering, under a real worker on the
time-skipping server (which skips the retries' backoff, not the calls themselves).

Postmark (the local Postmark-speaking server) answers one step's email with a 503, a 500
and a 429 before it takes it; holds the next step's answer past the client's timeout; and
refuses two more for good (ErrorCode 406 inactive recipient, 300 invalid email). The SMTP
transport meets a server deferring one message twice (451, 452), answering another after
the client gave up, and refusing a third (554). Each outage is retried with the mail
retry policy's backoff until the provider takes the email, once; an answer that never came
leaves the email in doubt (the provider may have it: that is a killed worker's doubt),
which Postmark's message search settles on the retry (it has it: sent, not sent again)
and which over SMTP stays `unknown`; a refusal is recorded as failed and not retried; and
the instance goes on to its next step every time. A team notice whose Slack stays down is
given up after
`TEAM_NOTICE_GIVE_UP`, and the instance moves on; on the last attempt Temporal allows, the
activity records the notice failed (an activity environment with the attempt info a real
server gives: the time-skipping server leaves out the retry policy)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from stripe_lifecycle.activities.interface import TeamNotice
from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.transports import (
    MailTransport,
    OutboxTransport,
    PostmarkTransport,
    SmtpTransport,
)
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import MessageStatus
from stripe_lifecycle.worker import sandbox_runner
from stripe_lifecycle.workflows.engine import (
    MAIL_RETRY,
    TEAM_NOTICE_GIVE_UP,
    LifecycleInput,
    LifecycleResult,
)
from stripe_lifecycle.workflows.lifecycles import InvoiceOverdueWorkflow

from .conftest import WorkerRig
from .delivery_helpers import mail_activities, message_rows
from .fakes import (
    ACCEPT,
    POSTMARK_TOKEN,
    DataReply,
    Hold,
    PostmarkHttpServer,
    SmtpInbox,
    running_postmark,
    running_smtp,
)
from .webhook_receivers import Reply, SlackServer, running_slack

Handle = WorkflowHandle[Any, LifecycleResult]
# The client's timeout; a held answer outlasts it.
CLIENT_TIMEOUT = 1.0
HOUR = 3600
TO = "ap@example.com"


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    yield from running_smtp()


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    yield from running_slack()


def mail_worker(
    rig: WorkerRig, transport: MailTransport, **options: Any
) -> AbstractAsyncContextManager[Worker]:
    """A real worker running the lifecycle workflow and the mail activities on `transport`."""
    mail = mail_activities(transport, rig.sessionmaker, **options)
    return Worker(
        rig.env.client,
        task_queue=rig.task_queue,
        workflows=[InvoiceOverdueWorkflow],
        activities=[mail.send_email, mail.notify_team],
        workflow_runner=sandbox_runner(rig.env.client.data_converter),
    )


async def run_steps(rig: WorkerRig, steps: list[Step]) -> tuple[Handle, LifecycleResult]:
    """An overdue invoice's instance running `steps` to its end."""
    bill = InvoiceInfo(
        id=f"in_{uuid.uuid4().hex[:14]}",
        customer_id="cus_Fault1",
        status="open",
        number="ACME-0142",
        currency="usd",
        amount_due=49_00,
        amount_remaining=49_00,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_142",
        collection_method="send_invoice",
        due_date=int(time.time()) - 86_400,
    )
    handle: Handle = await rig.env.client.start_workflow(
        InvoiceOverdueWorkflow.run,
        LifecycleInput(
            customer_id="cus_Fault1",
            automation=Automation(
                name="overdue-faults", lifecycle=Lifecycle.INVOICE_OVERDUE, steps=steps
            ),
            subject_id=bill.id or "",
            customer_email=TO,
            customer_name="Accounts Payable",
            context={"payment_method": None},
            invoice=bill,
        ),
        id=f"invoice-overdue-{bill.id}",
        task_queue=rig.task_queue,
    )
    return handle, await handle.result()


def reminders(count: int) -> list[Step]:
    """`count` reminders an hour apart."""
    return [
        Step(index=i, after_seconds=i * HOUR, send="invoice_overdue/reminder") for i in range(count)
    ]


async def step_statuses(handle: Handle) -> list[str]:
    state = await handle.query(InvoiceOverdueWorkflow.state)
    return [s.status for s in state.steps_done]


async def attempts(handle: Handle, activity: str = "send_email") -> list[tuple[int, float]]:
    """Per call of `activity`, in order: the attempt that ended it, and the seconds (of
    the workflow's clock) from its scheduling to that attempt's start."""
    history = await handle.fetch_history()
    scheduled = {
        e.event_id: e.event_time.ToDatetime()
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    found = []
    for e in history.events:
        started = e.activity_task_started_event_attributes
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and (
            started.scheduled_event_id in scheduled
        ):
            waited = e.event_time.ToDatetime() - scheduled[started.scheduled_event_id]
            found.append((started.attempt, waited.total_seconds()))
    return found


def backoff_before(attempt: int) -> float:
    """The mail retry policy's waits before `attempt`, added up."""
    initial = MAIL_RETRY.initial_interval.total_seconds()
    return sum(initial * MAIL_RETRY.backoff_coefficient**n for n in range(attempt - 1))


async def test_postmark_outage_timeout_and_refusals(
    skipping_rig: WorkerRig, postmark: PostmarkHttpServer
) -> None:
    held = Hold(limit=30)
    postmark.state.replies.extend(
        [
            (503, b"<html><body>503 Service Unavailable</body></html>"),
            (500, {"ErrorCode": 0, "Message": "Internal server error."}),
            (429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}),
            ACCEPT,
            held,
            (422, {"ErrorCode": 406, "Message": "You tried to send to an inactive recipient."}),
            (422, {"ErrorCode": 300, "Message": "Invalid email request: Illegal address."}),
        ]
    )
    transport = PostmarkTransport(POSTMARK_TOKEN, api_url=postmark.url, timeout=CLIENT_TIMEOUT)
    try:
        async with mail_worker(skipping_rig, transport):
            handle, result = await run_steps(skipping_rig, reminders(5))
            statuses = await step_statuses(handle)
            calls = await attempts(handle)
    finally:
        held.release()

    assert (result.outcome, result.steps_done) == ("sequence_finished", 5)
    assert statuses == ["sent", "sent", "failed", "failed", "sent"]
    # The outage: retried with backoff, the fourth attempt sent it. The lost answer: the
    # second attempt found the email in Postmark's search. Nothing else retried.
    assert [attempt for attempt, _ in calls] == [4, 2, 1, 1, 1]
    assert calls[0][1] >= backoff_before(4)
    outage, timed_out, inactive, invalid, recovered = await skipping_rig.messages(handle.id)
    assert (outage.status, outage.error) == (MessageStatus.SENT, None)
    assert (timed_out.status, timed_out.error) == (MessageStatus.SENT, None)
    assert timed_out.provider_message_id == postmark.state.message_ids[1]
    assert [search["tag"] for search in postmark.state.searches] == [timed_out.template]
    assert inactive.status == invalid.status == MessageStatus.FAILED
    assert "ErrorCode 406" in (inactive.error or "") and "ErrorCode 300" in (invalid.error or "")
    assert recovered.status == MessageStatus.SENT
    # What Postmark was asked, per message: the outage's email four times, every other
    # once; it took three (the outage's, the one whose answer was lost, the last).
    asked = [r.body["Metadata"]["message_id"] for r in postmark.state.requests]
    assert asked == [outage.id] * 4 + [timed_out.id, inactive.id, invalid.id, recovered.id]
    assert len(postmark.state.message_ids) == 3
    assert outage.provider_message_id == postmark.state.message_ids[0]
    assert recovered.provider_message_id == postmark.state.message_ids[2]


async def test_smtp_deferrals_a_lost_answer_and_a_refusal(
    skipping_rig: WorkerRig, inbox: SmtpInbox
) -> None:
    inbox.data_replies.extend(
        [
            DataReply("451 4.3.0 Temporary server error, try again later"),
            DataReply("452 4.3.1 Insufficient system storage"),
            DataReply(),
            DataReply(delay=CLIENT_TIMEOUT * 2),
            DataReply("554 5.7.1 Message rejected as spam"),
        ]
    )
    transport = SmtpTransport("127.0.0.1", inbox.port, timeout=CLIENT_TIMEOUT)
    async with mail_worker(skipping_rig, transport):
        handle, result = await run_steps(skipping_rig, reminders(4))
        statuses = await step_statuses(handle)
        calls = await attempts(handle)

    assert (result.outcome, result.steps_done) == ("sequence_finished", 4)
    assert statuses == ["sent", "unknown", "failed", "sent"]
    assert [attempt for attempt, _ in calls] == [3, 1, 1, 1]
    assert calls[0][1] >= backoff_before(3)
    deferred, timed_out, refused, recovered = await skipping_rig.messages(handle.id)
    assert "may have been accepted" in (timed_out.error or "")
    assert "554" in (refused.error or "")
    # The server took three: the deferred one once, the one whose answer came too late
    # (not sent again), and the last.
    received = inbox.received
    assert [m["Message-ID"] for m in received] == [
        deferred.provider_message_id,
        received[1]["Message-ID"],
        recovered.provider_message_id,
    ]
    assert received[1]["Message-ID"] not in (None, deferred.provider_message_id)
    assert [m["To"] for m in received] == [TO] * 3


async def test_a_team_notice_slack_never_takes_is_given_up(
    skipping_rig: WorkerRig, postmark: PostmarkHttpServer, slack: SlackServer
) -> None:
    slack.state.default = Reply(503, b"service_unavailable")
    transport = PostmarkTransport(POSTMARK_TOKEN, api_url=postmark.url, timeout=CLIENT_TIMEOUT)
    steps = [
        Step(index=0, after_seconds=0, action="notify_team"),
        Step(index=1, after_seconds=HOUR, send="invoice_overdue/reminder"),
    ]
    async with mail_worker(
        skipping_rig, transport, team_slack_webhook=SecretStr(slack.webhook_url)
    ):
        handle, result = await run_steps(skipping_rig, steps)
        statuses = await step_statuses(handle)
        history = await handle.fetch_history()

    assert (result.outcome, result.steps_done) == ("sequence_finished", 2)
    assert statuses == ["failed: Slack answered 503", "sent"]
    # Given up by the give-up time (Temporal schedules no retry that would start past it),
    # and not long before it; the reminder came next.
    began = history.events[0].event_time.ToDatetime()
    [reminder_scheduled] = [
        e.event_time.ToDatetime() - began
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]
    assert MAIL_RETRY.maximum_interval is not None
    last_retry = TEAM_NOTICE_GIVE_UP - MAIL_RETRY.maximum_interval
    assert last_retry <= reminder_scheduled <= TEAM_NOTICE_GIVE_UP + timedelta(seconds=5)
    assert len(slack.state.received) > 5
    [reminder] = postmark.state.requests
    assert reminder.body["To"] == TO


def attempt_at(number: int, since_scheduled: timedelta) -> ActivityEnvironment:
    """An activity environment as Temporal runs attempt `number` of a team notice,
    `since_scheduled` after the workflow scheduled it."""
    env = ActivityEnvironment()
    scheduled = datetime(2026, 11, 30, 9, tzinfo=UTC)
    env.info = dataclasses.replace(
        env.info,
        attempt=number,
        retry_policy=MAIL_RETRY,
        schedule_to_close_timeout=TEAM_NOTICE_GIVE_UP,
        scheduled_time=scheduled,
        started_time=scheduled + since_scheduled,
    )
    return env


async def test_the_last_attempt_before_the_give_up_time_records_the_notice_failed(
    sessionmaker: SessionMaker, slack: SlackServer
) -> None:
    slack.state.default = Reply(503, b"service_unavailable")
    mail = mail_activities(
        OutboxTransport(), sessionmaker, team_slack_webhook=SecretStr(slack.webhook_url)
    )
    notice = TeamNotice(
        key="invoice-overdue-in_1Fault/0-notify_team",
        customer_id="cus_Fault1",
        workflow_id="invoice-overdue-in_1Fault",
        subject="Invoice overdue: customer cus_Fault1",
        text="Automation overdue-faults reached step 0-notify_team.",
        lifecycle=Lifecycle.INVOICE_OVERDUE,
        automation="overdue-faults",
    )
    assert MAIL_RETRY.maximum_interval == timedelta(minutes=10)
    # Ten minutes to the next attempt still fit before the give-up time: Temporal retries.
    with pytest.raises(ApplicationError, match="Slack answered 503"):
        await attempt_at(11, TEAM_NOTICE_GIVE_UP - timedelta(minutes=11)).run(
            mail.notify_team, notice
        )
    [row] = await message_rows(sessionmaker)
    assert row.status == MessageStatus.RETRYING
    # They no longer do: Temporal would not retry, so the notice is recorded as failed.
    given_up = await attempt_at(12, TEAM_NOTICE_GIVE_UP - timedelta(minutes=9)).run(
        mail.notify_team, notice
    )
    [row] = await message_rows(sessionmaker)
    assert (given_up.status, given_up.message_id) == (MessageStatus.FAILED, row.id)
    assert (row.status, row.error) == (
        MessageStatus.FAILED,
        "given up after 12 attempts: Slack answered 503",
    )
    assert len(slack.state.received) == 2


async def test_a_team_notice_still_in_doubt_at_the_give_up_time_is_recorded_unknown(
    sessionmaker: SessionMaker, postmark: PostmarkHttpServer
) -> None:
    # Postmark reads the team email and hangs up without taking it: the send is in doubt,
    # and its search never lists the email.
    postmark.state.replies.append(None)
    mail = mail_activities(
        PostmarkTransport(POSTMARK_TOKEN, api_url=postmark.url, timeout=CLIENT_TIMEOUT),
        sessionmaker,
        team_email="team@example.com",
    )
    notice = TeamNotice(
        key="invoice-overdue-in_1Doubt/0-notify_team",
        customer_id="cus_Doubt1",
        workflow_id="invoice-overdue-in_1Doubt",
        subject="Invoice overdue: customer cus_Doubt1",
        text="Automation overdue-faults reached step 0-notify_team.",
        lifecycle=Lifecycle.INVOICE_OVERDUE,
        automation="overdue-faults",
    )

    with pytest.raises(ApplicationError, match="may have gone out"):
        await attempt_at(11, TEAM_NOTICE_GIVE_UP - timedelta(minutes=11)).run(
            mail.notify_team, notice
        )
    # Not listed yet, and Temporal would not retry again: in doubt, so unknown, not failed
    # (it may have gone out) and not sent again.
    given_up = await attempt_at(12, TEAM_NOTICE_GIVE_UP - timedelta(minutes=9)).run(
        mail.notify_team, notice
    )

    [row] = await message_rows(sessionmaker)
    assert (given_up.status, given_up.message_id) == (MessageStatus.UNKNOWN, row.id)
    assert row.status == MessageStatus.UNKNOWN
    assert (row.error or "").startswith("given up after 12 attempts: the connection to Postmark")
    assert len(postmark.state.requests) == 1 and len(postmark.state.searches) == 1
