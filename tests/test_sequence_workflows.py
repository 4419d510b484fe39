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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain.automations import Automation, Offer
from stripe_lifecycle.mail.templates import format_date, month_name
from stripe_lifecycle.workflows.engine import (
    CancelRequest,
    LifecycleInput,
    LifecycleResult,
    LifecycleState,
    LifecycleUpdate,
)
from stripe_lifecycle.workflows.lifecycles import (
    CardExpiringWorkflow,
    PlanChangeWorkflow,
    RenewalWorkflow,
    ScheduledCancelWorkflow,
    TrialWorkflow,
    WinbackWorkflow,
)

from .conftest import WorkerRig
from .workflow_helpers import (
    DAY,
    cancel_by_support,
    email_offsets,
    ended_after,
    packaged,
    wait_for_steps,
)

Run = Callable[[Any, LifecycleInput], Awaitable[LifecycleResult]]
Handle = WorkflowHandle[Any, LifecycleResult]
CARD: dict[str, Any] = {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2031}


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
    rig: WorkerRig,
    run: Run,
    automation: Automation,
    *,
    anchor: int | None,
    template_context: dict[str, Any],
    subject_id: str | None = None,
) -> Handle:
    subject_id = subject_id or f"sub_{uuid.uuid4().hex[:14]}"
    return await rig.env.client.start_workflow(
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
        task_queue=rig.task_queue,
    )


async def start_trial(rig: WorkerRig, trial_days: float) -> tuple[Handle, int]:
    """A trial of the default automation ending `trial_days` from now; and its start."""
    started = await epoch_now(rig.env)
    trial_end = started + int(trial_days * DAY)
    handle = await start(
        rig,
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


class FinishedTrial(NamedTuple):
    handle: Handle
    started: int
    result: LifecycleResult
    state: LifecycleState


async def run_trial(
    rig: WorkerRig, trial_days: float, *, on_day: float = 0, end_moves_to: float | None = None
) -> FinishedTrial:
    """A trial ending `trial_days` after its start, run to its end on a worker of `rig`.
    With `end_moves_to`, on day `on_day` Stripe moves the trial end to that day."""
    async with rig.worker():
        handle, started = await start_trial(rig, trial_days)
        if end_moves_to is not None:
            await rig.env.sleep(timedelta(days=on_day))
            moved = new_trial_end(started, end_moves_to, "evt_trial_end_moved")
            await handle.signal(TrialWorkflow.lifecycle_update, moved)
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    return FinishedTrial(handle, started, result, state)


async def test_trial_welcomes_reminds_before_the_end_and_finishes_after_the_linger(
    skipping_rig: WorkerRig,
) -> None:
    handle, started, result, state = await run_trial(skipping_rig, trial_days=14)
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    # Welcome at once, then 7 and 2 days before the trial ends on day 14; the instance
    # then waits 2 days for the first charge before it gives up on an outcome.
    assert await email_offsets(handle) == [0.0, 7.0, 12.0]
    assert await ended_after(handle) == 16.0
    sent = await skipping_rig.messages(handle.id)
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
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker():
        handle, started = await start_trial(skipping_rig, trial_days=14)
        await skipping_rig.env.sleep(timedelta(days=3))
        extended = new_trial_end(started, 21, "evt_extend_1")
        await handle.signal(TrialWorkflow.lifecycle_update, extended)
        await handle.signal(TrialWorkflow.lifecycle_update, extended)  # Stripe redelivers
        # Day 15: the "7 days left" reminder of the 21-day trial went out on day 14.
        await skipping_rig.env.sleep(timedelta(days=12))
        await handle.signal(
            TrialWorkflow.lifecycle_update, new_trial_end(started, 28, "evt_extend_2")
        )
        result = await handle.result()
        state = await handle.query(TrialWorkflow.state)
    assert state.anchor == datetime.fromtimestamp(started + 28 * DAY, UTC)
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 26.0]
    assert await ended_after(handle) == 30.0
    sent = await skipping_rig.messages(handle.id)
    assert [m.step for m in sent] == ["0-trial-welcome", "1-trial-ending", "2-trial-ending"]
    # Each reminder names the trial end it was sent for: the fresher context reached it.
    assert sent[1].subject.endswith(f"trial ends on {format_date(started + 21 * DAY)}")
    assert sent[2].subject.endswith(f"trial ends on {format_date(started + 28 * DAY)}")


async def test_short_trial_skips_the_reminder_it_is_too_short_for(skipping_rig: WorkerRig) -> None:
    handle, _, result, state = await run_trial(skipping_rig, trial_days=5)
    sent = await skipping_rig.messages(handle.id)
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
    skipping_rig: WorkerRig,
) -> None:
    # On day 6 the trial end moves to day 7.5: both reminders came due (days 0.5 and
    # 5.5) while the instance ran, and the date is still ahead.
    handle, started, result, state = await run_trial(
        skipping_rig, trial_days=14, on_day=6, end_moves_to=7.5
    )
    assert await email_offsets(handle) == [0.0, 6.0]
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-trial-welcome", "recorded"),
        ("1-trial-ending", "skipped: too late"),
        ("2-trial-ending", "recorded"),
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await ended_after(handle) == 9.5
    sent = await skipping_rig.messages(handle.id)
    assert sent[1].subject.endswith(f"trial ends on {format_date(started + int(7.5 * DAY))}")


async def test_trial_cut_short_still_gets_its_last_reminder(skipping_rig: WorkerRig) -> None:
    # On day 1 the trial end moves to day 1.5: "a date moved earlier", so the latest
    # reminder that came due runs (its new moment, day -0.5, is only a calculation).
    handle, _, result, _ = await run_trial(skipping_rig, trial_days=14, on_day=1, end_moves_to=1.5)
    assert await email_offsets(handle) == [0.0, 1.0]
    assert [m.step for m in await skipping_rig.messages(handle.id)] == [
        "0-trial-welcome",
        "2-trial-ending",
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)


async def test_trial_ended_early_sends_no_more_reminders_and_still_waits_for_the_charge(
    skipping_rig: WorkerRig,
) -> None:
    # "End trial now" in the Dashboard on day 8: trial_end is the present moment, so
    # "2 days left" (now day 6) makes no sense any more.
    handle, _, result, state = await run_trial(
        skipping_rig, trial_days=14, on_day=8, end_moves_to=8
    )
    assert await email_offsets(handle) == [0.0, 7.0]
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-trial-welcome", "recorded"),
        ("1-trial-ending", "recorded"),
        ("2-trial-ending", "skipped: too late"),
    ]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    # The first charge comes about an hour after the trial ends: the linger still runs.
    assert await ended_after(handle) == 10.0


async def test_outcome_signal_ends_the_trial_at_once(skipping_rig: WorkerRig) -> None:
    async with skipping_rig.worker():
        handle, started = await start_trial(skipping_rig, trial_days=14)
        await skipping_rig.env.sleep(timedelta(days=8))
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
    assert [m.step for m in await skipping_rig.messages(handle.id)] == [
        "0-trial-welcome",
        "1-trial-ending",
    ]


async def test_support_cancel_stops_later_steps(dev_rig: WorkerRig) -> None:
    # Updates run on the dev server: the Java time-skipping server loses the outcome of an
    # update that ends the workflow. The welcome goes out at once; the first reminder
    # would wait a week.
    async with dev_rig.worker():
        handle, _ = await start_trial(dev_rig, trial_days=14)
        await wait_for_steps(handle, 1)
        await cancel_by_support(handle, "customer asked by phone")
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("cancelled", 1)
    assert [m.template for m in await dev_rig.messages(handle.id)] == ["trial/welcome"]


async def test_cancel_validator_rejects_an_instance_that_has_already_ended(
    dev_rig: WorkerRig,
) -> None:
    # No workflow cache, so no task waits on the stopped worker's sticky queue.
    async with dev_rig.worker(cache=0):
        handle, started = await start_trial(dev_rig, trial_days=14)
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
    async with dev_rig.worker(cache=0):
        with pytest.raises(WorkflowUpdateFailedError) as rejected:
            await cancel
        result = await handle.result()
    assert str(rejected.value.cause) == "this trial has already ended (converted)"
    assert (result.outcome, result.steps_done) == ("converted", 1)


async def test_winback_offers_then_waits_a_week_for_a_resubscription(
    skipping_rig: WorkerRig,
) -> None:
    automation = dataclasses.replace(
        packaged("winback-voluntary"),
        offer=Offer(
            description="50% off for 3 months",
            code="COMEBACK50",
            url="https://example.com/pricing",
        ),
    )
    async with skipping_rig.worker():
        now = await epoch_now(skipping_rig.env)
        handle = await start(
            skipping_rig,
            WinbackWorkflow.run,
            automation,
            anchor=None,
            template_context=context(period_end=now, card=None),
        )
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 45.0]
    assert await ended_after(handle) == 52.0
    sent = await skipping_rig.messages(handle.id)
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
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker():
        now = await epoch_now(skipping_rig.env)
        # The card works through the last second of its expiry month.
        expiry = now + 40 * DAY
        last_day = datetime.fromtimestamp(expiry - 1, UTC)
        card = {**CARD, "exp_month": last_day.month, "exp_year": last_day.year}
        handle = await start(
            skipping_rig,
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
    sent = await skipping_rig.messages(handle.id)
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
    skipping_rig: WorkerRig,
    run: Run,
    automation: str,
    anchor_days: int | None,
    offsets: list[float],
    end: float,
    template: str,
) -> None:
    steps = packaged(automation)
    async with skipping_rig.worker():
        now = await epoch_now(skipping_rig.env)
        anchor = None if anchor_days is None else now + anchor_days * DAY
        period_end = anchor or now + 30 * DAY
        handle = await start(
            skipping_rig,
            run,
            steps,
            anchor=anchor,
            template_context=context(period_end=period_end, cancel_at=anchor),
        )
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", len(offsets))
    assert await email_offsets(handle) == offsets
    assert await ended_after(handle) == end
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == [f"{steps.lifecycle}/{template}"] * len(offsets)
    assert all(format_date(period_end) in m.text for m in sent)


async def test_worker_restart_mid_trial_neither_repeats_nor_misses_an_email(
    skipping_rig: WorkerRig,
) -> None:
    # No workflow cache: every task is replayed from history, as on a freshly started worker
    # (and no task waits on a stopped worker's sticky queue).
    async with skipping_rig.worker(cache=0):
        handle, started = await start_trial(skipping_rig, trial_days=14)
        await skipping_rig.env.sleep(timedelta(days=3))
        await handle.signal(
            TrialWorkflow.lifecycle_update, new_trial_end(started, 21, "evt_extend")
        )
        await skipping_rig.env.sleep(timedelta(days=12))
    # The first worker is gone; a new one on the same server picks the trial up.
    async with skipping_rig.worker(cache=0):
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 14.0, 19.0]
    assert [m.step for m in await skipping_rig.messages(handle.id)] == [
        "0-trial-welcome",
        "1-trial-ending",
        "2-trial-ending",
    ]


async def run_recorded_trial(rig: WorkerRig) -> Handle:
    """The trial of tests/histories/trial_workflow_v1.json: extended on day 3 (fresher
    context), shortened to end on day 11.5 when it is day 10 (the 7-day reminder skipped,
    the 2-day one sent at once), finished after the linger on day 13.5. Needs a worker of
    `rig`. The file holds `fetch_history().to_json()` of one such run (task queue
    `rec`); tests/test_replay.py replays it."""
    handle, started = await start_trial(rig, trial_days=14)
    await rig.env.sleep(timedelta(days=3))
    await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 21, "evt_ext"))
    await rig.env.sleep(timedelta(days=7))
    await handle.signal(TrialWorkflow.lifecycle_update, new_trial_end(started, 11.5, "evt_short"))
    assert (await handle.result()).outcome == "sequence_finished"
    return handle


async def test_recorded_trial_scenario_sends_skips_and_ends_as_recorded(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker():
        handle = await run_recorded_trial(skipping_rig)
        state = await handle.query(TrialWorkflow.state)
    assert [r.status for r in state.steps_done] == ["recorded", "skipped: too late", "recorded"]
    assert await email_offsets(handle) == [0.0, 10.0]
    assert await ended_after(handle) == 13.5
