"""The subscription and card lifecycles (TrialWorkflow, WinbackWorkflow, ...) on the
time-skipping server: weeks of durable timers in well under a second each, with the real
mail activity rendering the shipped templates into SQLite (outbox transport).

Anchors are epoch seconds taken from the test server's clock, which the skipped timers
move on; offsets are read back from each workflow's history, in days after its start.
The support-cancel update runs on the dev server, like the dunning one: the time-skipping
server loses the outcome of an update that ends the workflow.
"""

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from stripe_lifecycle.automations import PACKAGED_DEFAULTS, Automation, Offer, load_automations
from stripe_lifecycle.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.mail.templates import Brand, TemplateRenderer, format_date, month_name
from stripe_lifecycle.models import Message
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.worker import WORKFLOWS, build_worker, sandbox_runner
from stripe_lifecycle.workflows.dunning import CancelRequest
from stripe_lifecycle.workflows.lifecycle import (
    CardExpiringWorkflow,
    LifecycleInput,
    LifecycleResult,
    LifecycleUpdate,
    PlanChangeWorkflow,
    RenewalWorkflow,
    ScheduledCancelWorkflow,
    TrialWorkflow,
    WinbackWorkflow,
)

from .conftest import LINK_SECRET

DAY = 86_400
Run = Callable[[Any, LifecycleInput], Awaitable[LifecycleResult]]
Handle = WorkflowHandle[Any, LifecycleResult]
CARD: dict[str, Any] = {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031}


def packaged(name: str) -> Automation:
    """One automation of the packaged defaults, checked against the shipped templates."""
    brand = Brand("Acme", logo_url=None, support_email=None, primary_color="#635bff", address=None)
    shipped = TemplateRenderer(brand).names()
    by_name = {a.name: a for a in load_automations(PACKAGED_DEFAULTS, shipped)}
    return by_name[name]


@pytest.fixture
async def sessionmaker(sqlite_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(sqlite_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def worker_for(
    env: WorkflowEnvironment, sqlite_url: str, sessionmaker: SessionMaker, tq: str, cache: int = 100
) -> Worker:
    settings = Settings(
        database_url=sqlite_url,
        task_queue=tq,
        link_secret=LINK_SECRET,
        worker_max_cached_workflows=cache,
    )
    return build_worker(env.client, settings, sessionmaker)


def context(
    *,
    period_end: int,
    trial_end: int | None = None,
    cancel_at: int | None = None,
    card: dict[str, Any] | None = CARD,
) -> dict[str, Any]:
    """The template objects the customer workflow passes a subscription lifecycle."""
    return {
        "subscription": {
            "plan": "Pro",
            "amount": 4900,
            "currency": "usd",
            "current_period_end": period_end,
            "trial_end": trial_end,
            "cancel_at": cancel_at,
        },
        "payment_method": card,
        "invoice": {
            "number": None,
            "amount_due": 4900,
            "currency": "usd",
            "hosted_invoice_url": None,
            "next_payment_attempt": None,
            "attempt_count": 0,
        },
    }


async def epoch_now(env: WorkflowEnvironment) -> int:
    """The test server's clock (the one workflow timers run on), in epoch seconds."""
    return int((await env.get_current_time()).timestamp())


async def start(
    client: Client,
    tq: str,
    run: Run,
    automation: Automation,
    *,
    anchor: int | None,
    template_context: dict[str, Any],
    subject_id: str | None = None,
) -> Handle:
    subject_id = subject_id or f"sub_{uuid.uuid4().hex[:14]}"
    return await client.start_workflow(
        run,
        LifecycleInput(
            customer_id="cus_Life1",
            automation=automation,
            subject_id=subject_id,
            subscription_id=subject_id if subject_id.startswith("sub_") else None,
            anchor=anchor,
            customer_email="ada@example.com",
            customer_name="Ada",
            context=template_context,
        ),
        id=f"{automation.lifecycle.replace('_', '-')}-{subject_id}",
        task_queue=tq,
    )


async def start_trial(env: WorkflowEnvironment, tq: str, trial_days: float) -> tuple[Handle, int]:
    """A trial of the default automation ending `trial_days` from now; and its start."""
    started = await epoch_now(env)
    trial_end = started + int(trial_days * DAY)
    handle = await start(
        env.client,
        tq,
        TrialWorkflow.run,
        packaged("trial-default"),
        anchor=trial_end,
        template_context=context(period_end=trial_end, trial_end=trial_end),
    )
    return handle, started


def new_trial_end(started: int, days: float, event_id: str) -> LifecycleUpdate:
    """customer.subscription.updated with a moved trial_end, as the customer workflow says it."""
    trial_end = started + int(days * DAY)
    return LifecycleUpdate(
        event_id=event_id,
        created=started,
        anchor=trial_end,
        context={
            "subscription": context(period_end=trial_end, trial_end=trial_end)["subscription"]
        },
    )


def days_after_start(history: WorkflowHistory, event: HistoryEvent) -> float:
    started = history.events[0].event_time.ToDatetime()
    return round((event.event_time.ToDatetime() - started).total_seconds() / DAY, 2)


async def email_offsets(handle: Handle) -> list[float]:
    """When each email was scheduled, in days after the start (from the history)."""
    history = await handle.fetch_history()
    return [
        days_after_start(history, e)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "send_email"
    ]


async def ended_after(handle: Handle) -> float:
    """When the workflow completed, in days after its start (from the history)."""
    history = await handle.fetch_history()
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    return days_after_start(history, last)


async def messages(sessionmaker: SessionMaker, workflow_id: str) -> list[Message]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Message)
            .where(col(Message.workflow_id) == workflow_id)
            .order_by(col(Message.created_at))
        )
        return list(rows.scalars())


async def test_trial_welcomes_reminds_before_the_end_and_finishes_after_the_linger(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    # Welcome at once, then 7 and 2 days before the trial ends on day 14; the instance
    # then waits 2 days for the first charge before it gives up on an outcome.
    assert await email_offsets(handle) == [0.0, 7.0, 12.0]
    assert await ended_after(handle) == 16.0
    sent = await messages(sessionmaker, handle.id)
    assert [m.template for m in sent] == ["trial/welcome", "trial/ending", "trial/ending"]
    assert len({m.send_key for m in sent}) == 3
    assert {m.status for m in sent} == {"recorded"} and {m.to for m in sent} == {"ada@example.com"}
    trial_end = format_date(started + 14 * DAY)
    assert sent[1].subject.endswith(f"trial ends on {trial_end}")
    assert "we'll charge $49.00 to your Visa ending in 4242" in sent[2].text
    # The button opens a fresh Customer Portal session at click time.
    assert sent[0].destinations == {"update_payment": "portal:"}
    assert state.outcome == "sequence_finished" and state.next_step is None
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-trial-welcome", "recorded"),
        ("1-trial-ending", "recorded"),
        ("2-trial-ending", "recorded"),
    ]


async def test_extended_trial_moves_the_reminders_and_never_resends_a_step(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=3))
        extended = new_trial_end(started, 21, "evt_extend_1")
        await handle.signal(TrialWorkflow.lifecycle_update, extended)
        await handle.signal(TrialWorkflow.lifecycle_update, extended)  # Stripe redelivers
        # Day 15: the "7 days left" reminder of the 21-day trial went out on day 14.
        await time_skipping_env.sleep(timedelta(days=12))
        await handle.signal(
            TrialWorkflow.lifecycle_update, new_trial_end(started, 28, "evt_extend_2")
        )
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert state.anchor == datetime.fromtimestamp(started + 28 * DAY, UTC)
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 26.0]
    assert await ended_after(handle) == 30.0
    sent = await messages(sessionmaker, handle.id)
    assert [m.step for m in sent] == ["0-trial-welcome", "1-trial-ending", "2-trial-ending"]
    # Each reminder names the trial end it was sent for: the fresher context reached it.
    assert sent[1].subject.endswith(f"trial ends on {format_date(started + 21 * DAY)}")
    assert sent[2].subject.endswith(f"trial ends on {format_date(started + 28 * DAY)}")


async def test_short_trial_skips_the_reminder_it_is_too_short_for(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, _ = await start_trial(time_skipping_env, task_queue, trial_days=5)
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    sent = await messages(sessionmaker, handle.id)
    # A 5-day trial has no "7 days left" moment; "2 days left" is on day 3.
    assert [m.template for m in sent] == ["trial/welcome", "trial/ending"]
    assert await email_offsets(handle) == [0.0, 3.0]
    assert {r.step: r.status for r in state.steps_done} == {
        "0-trial-welcome": "recorded",
        "1-trial-ending": "skipped: due before this instance started",
        "2-trial-ending": "recorded",
    }
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await ended_after(handle) == 7.0


async def test_shortened_trial_sends_only_the_latest_overdue_reminder(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=6))
        # On day 6 the trial end moves to day 7.5: both reminders came due (days 0.5 and
        # 5.5) while the instance ran, and the date is still ahead.
        await handle.signal(
            TrialWorkflow.lifecycle_update, new_trial_end(started, 7.5, "evt_shorten")
        )
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert await email_offsets(handle) == [0.0, 6.0]
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-trial-welcome", "recorded"),
        ("1-trial-ending", "skipped: too late"),
        ("2-trial-ending", "recorded"),
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await ended_after(handle) == 9.5
    sent = await messages(sessionmaker, handle.id)
    assert sent[1].subject.endswith(f"trial ends on {format_date(started + int(7.5 * DAY))}")


async def test_trial_cut_short_still_gets_its_last_reminder(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=1))
        # On day 1 the trial end moves to day 1.5: "a date moved earlier", so the latest
        # reminder that came due runs (its new moment, day -0.5, is only a calculation).
        await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 1.5, "evt_cut"))
        result = await handle.result()
    assert await email_offsets(handle) == [0.0, 1.0]
    assert [m.step for m in await messages(sessionmaker, handle.id)] == [
        "0-trial-welcome",
        "2-trial-ending",
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)


async def test_trial_ended_early_sends_no_more_reminders_and_still_waits_for_the_charge(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=8))
        # "End trial now" in the Dashboard on day 8: trial_end is the present moment, so
        # "2 days left" (now day 6) makes no sense any more.
        await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 8, "evt_end"))
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert await email_offsets(handle) == [0.0, 7.0]
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-trial-welcome", "recorded"),
        ("1-trial-ending", "recorded"),
        ("2-trial-ending", "skipped: too late"),
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    # The first charge comes about an hour after the trial ends: the linger still runs.
    assert await ended_after(handle) == 10.0


async def test_outcome_signal_ends_the_trial_at_once(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=8))
        # The customer paid early: the first paid invoice converts the trial.
        converted = LifecycleUpdate(
            event_id="evt_paid", created=started + 8 * DAY, outcome="converted"
        )
        await handle.signal(TrialWorkflow.lifecycle_update, converted)
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert (result.outcome, result.steps_done) == ("converted", 2)
    assert (state.outcome, state.next_step) == ("converted", None)
    assert await email_offsets(handle) == [0.0, 7.0]
    # Ended on day 8, not after the last reminder (day 12) or the linger (day 16).
    assert await ended_after(handle) == 8.0
    assert [m.step for m in await messages(sessionmaker, handle.id)] == [
        "0-trial-welcome",
        "1-trial-ending",
    ]


async def wait_for_steps(handle: Handle, count: int) -> None:
    for _ in range(200):
        if len((await handle.query(TrialWorkflow.state)).steps_done) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{handle.id} did not reach {count} steps")


async def test_support_cancel_stops_later_steps(
    dev_env: WorkflowEnvironment, sqlite_url: str, sessionmaker: SessionMaker, task_queue: str
) -> None:
    # Updates run on the dev server: the Java time-skipping server loses the outcome of an
    # update that ends the workflow. The welcome goes out at once; the first reminder
    # would wait a week.
    async with worker_for(dev_env, sqlite_url, sessionmaker, task_queue):
        handle, _ = await start_trial(dev_env, task_queue, trial_days=14)
        await wait_for_steps(handle, 1)
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await handle.execute_update(TrialWorkflow.cancel, CancelRequest(reason=" ", actor="x"))
        assert str(rejected.value.cause) == "a reason is required"
        answer = await handle.execute_update(
            TrialWorkflow.cancel,
            CancelRequest(reason="customer asked by phone", actor="support key 1a2b"),
        )
        assert answer.cancelled and answer.workflow_id == handle.id
        result = await handle.result()
        with pytest.raises(RPCError, match="already completed"):  # nothing left to cancel
            await handle.execute_update(
                TrialWorkflow.cancel, CancelRequest(reason="again", actor="x")
            )
    assert (result.outcome, result.steps_done) == ("cancelled", 1)
    assert [m.template for m in await messages(sessionmaker, handle.id)] == ["trial/welcome"]


async def test_cancel_validator_rejects_an_instance_that_has_already_ended(
    dev_env: WorkflowEnvironment, sqlite_url: str, sessionmaker: SessionMaker, task_queue: str
) -> None:
    # No workflow cache, so no task waits on the stopped worker's sticky queue.
    async with worker_for(dev_env, sqlite_url, sessionmaker, task_queue, cache=0):
        handle, started = await start_trial(dev_env, task_queue, trial_days=14)
        await wait_for_steps(handle, 1)
    # With no worker, the conversion and the cancel request queue up on the server and
    # reach the next worker in one task, signal first: the workflow has an outcome but
    # has not completed yet when the validator runs.
    converted = LifecycleUpdate(event_id="evt_paid", created=started, outcome="converted")
    await handle.signal(TrialWorkflow.lifecycle_update, converted)
    cancel = asyncio.create_task(
        handle.execute_update(TrialWorkflow.cancel, CancelRequest(reason="late", actor="x"))
    )
    await asyncio.sleep(0.2)  # let the server admit the update before a worker polls
    async with worker_for(dev_env, sqlite_url, sessionmaker, task_queue, cache=0):
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await cancel
        result = await handle.result()
    assert str(rejected.value.cause) == "this trial has already ended (converted)"
    assert (result.outcome, result.steps_done) == ("converted", 1)


async def test_winback_offers_then_waits_a_week_for_a_resubscription(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    automation = dataclasses.replace(
        packaged("winback-voluntary"),
        offer=Offer(
            description="50% off for 3 months",
            code="COMEBACK50",
            url="https://example.com/pricing",
        ),
    )
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        now = await epoch_now(time_skipping_env)
        handle = await start(
            time_skipping_env.client,
            task_queue,
            WinbackWorkflow.run,
            automation,
            anchor=None,
            template_context=context(period_end=now, card=None),
        )
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 45.0]
    assert await ended_after(handle) == 52.0
    sent = await messages(sessionmaker, handle.id)
    assert [m.template for m in sent] == ["winback/cancelled", "winback/offer", "winback/offer"]
    assert "Pro subscription has been cancelled" in sent[0].text
    for offer in sent[1:]:
        assert offer.subject == "We'd love to have you back: 50% off for 3 months"
        assert "Use code: COMEBACK50" in offer.text and "COMEBACK50" in offer.html
        assert offer.destinations == {
            "survey": "hosted:survey",
            "offer": "https://example.com/pricing",
        }
    assert "COMEBACK50" not in sent[0].text


async def test_card_expiring_reminds_before_the_expiry_and_ends_card_expired(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        now = await epoch_now(time_skipping_env)
        # The card works through the last second of its expiry month.
        expiry = now + 40 * DAY
        last_day = datetime.fromtimestamp(expiry - 1, UTC)
        card = {**CARD, "exp_month": last_day.month, "exp_year": last_day.year}
        handle = await start(
            time_skipping_env.client,
            task_queue,
            CardExpiringWorkflow.run,
            packaged("card-expiring-default"),
            anchor=expiry,
            template_context={"payment_method": card},
            subject_id=f"pm_{uuid.uuid4().hex[:14]}",
        )
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("card_expired", 2)
    # 30 and 7 days before the expiry, and no wait after it.
    assert await email_offsets(handle) == [10.0, 33.0]
    assert await ended_after(handle) == 40.0
    sent = await messages(sessionmaker, handle.id)
    assert [m.subject for m in sent] == ["Your Visa ending in 4242 expires soon"] * 2
    expires = f"expires at the end of {month_name(last_day.month)} {last_day.year}"
    assert all(expires in m.text for m in sent)


@pytest.mark.parametrize(
    ("run", "automation", "anchor_days", "offsets", "end", "template"),
    [
        # Set to cancel at period end (day 30): a save email a week before, then a day.
        (ScheduledCancelWorkflow.run, "scheduled-cancel-default", 30, [23.0], 31.0, "save"),
        # An annual renewal on day 60: a month and a week before, then 2 days.
        (RenewalWorkflow.run, "renewal-annual", 60, [30.0, 53.0], 62.0, "upcoming"),
        # A downgrade: a check-in after 2 days and nothing to wait for.
        (PlanChangeWorkflow.run, "plan-change-downgrade", None, [2.0], 2.0, "downgrade"),
    ],
    ids=["scheduled_cancel", "renewal", "plan_change"],
)
async def test_other_lifecycles_send_their_steps_and_linger_as_configured(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
    run: Run,
    automation: str,
    anchor_days: int | None,
    offsets: list[float],
    end: float,
    template: str,
) -> None:
    steps = packaged(automation)
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        now = await epoch_now(time_skipping_env)
        anchor = None if anchor_days is None else now + anchor_days * DAY
        period_end = anchor or now + 30 * DAY
        handle = await start(
            time_skipping_env.client,
            task_queue,
            run,
            steps,
            anchor=anchor,
            template_context=context(period_end=period_end, cancel_at=anchor),
        )
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", len(offsets))
    assert await email_offsets(handle) == offsets
    assert await ended_after(handle) == end
    sent = await messages(sessionmaker, handle.id)
    assert [m.template for m in sent] == [f"{steps.lifecycle}/{template}"] * len(offsets)
    assert all(format_date(period_end) in m.text for m in sent)


async def test_worker_restart_mid_trial_neither_repeats_nor_misses_an_email(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    # No workflow cache: every task is replayed from history, as on a freshly started worker
    # (and no task waits on a stopped worker's sticky queue).
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue, cache=0):
        handle, started = await start_trial(time_skipping_env, task_queue, trial_days=14)
        await time_skipping_env.sleep(timedelta(days=3))
        await handle.signal(
            TrialWorkflow.lifecycle_update, new_trial_end(started, 21, "evt_extend")
        )
        await time_skipping_env.sleep(timedelta(days=12))
    # The first worker is gone; a new one on the same server picks the trial up.
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue, cache=0):
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 19.0]
    assert [m.step for m in await messages(sessionmaker, handle.id)] == [
        "0-trial-welcome",
        "1-trial-ending",
        "2-trial-ending",
    ]


async def run_recorded_trial(env: WorkflowEnvironment, task_queue: str) -> Handle:
    """The trial of tests/histories/trial_workflow_v1.json: extended on day 3 (fresher
    context), shortened to end on day 11.5 when it is day 10 (the 7-day reminder skipped,
    the 2-day one sent at once), finished after the linger on day 13.5. Needs a worker on
    `task_queue`. The file holds `fetch_history().to_json()` of one such run (task queue
    `rec`); tests/test_replay.py replays it."""
    handle, started = await start_trial(env, task_queue, trial_days=14)
    await env.sleep(timedelta(days=3))
    await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 21, "evt_ext"))
    await env.sleep(timedelta(days=7))
    await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 11.5, "evt_short"))
    assert (await handle.result()).outcome == "sequence_finished"
    return handle


async def test_trial_history_replays(
    time_skipping_env: WorkflowEnvironment,
    sqlite_url: str,
    sessionmaker: SessionMaker,
    task_queue: str,
) -> None:
    async with worker_for(time_skipping_env, sqlite_url, sessionmaker, task_queue):
        handle = await run_recorded_trial(time_skipping_env, task_queue)
        state = await handle.query(TrialWorkflow.state)
    assert [r.status for r in state.steps_done] == ["recorded", "skipped: too late", "recorded"]
    assert await email_offsets(handle) == [0.0, 10.0]
    assert await ended_after(handle) == 13.5
    history = await handle.fetch_history()
    await Replayer(workflows=WORKFLOWS, workflow_runner=sandbox_runner()).replay_workflow(history)
