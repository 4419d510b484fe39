"""UpgradeWorkflow and holdout groups on the time-skipping server: a campaign's offers over
weeks of timers in well under a second, its ends (upgraded, left the segment), and a
held-out instance that runs the same timers and records every email step as held out,
sending nothing, while its actions still run."""

import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle

from stripe_lifecycle.domain.automations import Automation, Offer, Step
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.workflows.engine import (
    HELD_OUT,
    LifecycleInput,
    LifecycleResult,
    LifecycleUpdate,
)
from stripe_lifecycle.workflows.lifecycles import DunningWorkflow, UpgradeWorkflow

from .conftest import WorkerRig
from .workflow_helpers import email_offsets, ended_after

USAGE = {"metrics": {"seats_used": 9}, "seats_used": 9, "seat_limit": 10, "seat_usage": 0.9}
SUBSCRIPTION = {
    "plan": "Starter",
    "amount": 1900,
    "currency": "usd",
    "current_period_end": None,
    "trial_end": None,
    "cancel_at": None,
}

CAMPAIGN = Automation(
    name="seats-upgrade",
    lifecycle=Lifecycle.UPGRADE,
    steps=[
        Step(index=0, after_seconds=0, send="upgrade/offer"),
        Step(index=1, after_seconds=7 * 86_400, send="upgrade/offer"),
        Step(index=2, after_seconds=14 * 86_400, action="notify_team"),
    ],
    offer=Offer(description="Twice the seats this month", next_plan="Business"),
    trigger_segment="seats-near-limit",
    holdout_basis_points=1000,
)


async def start_campaign(rig: WorkerRig, *, held_out: bool) -> WorkflowHandle[Any, LifecycleResult]:
    customer = f"cus_{uuid.uuid4().hex[:12]}"
    return await rig.env.client.start_workflow(
        UpgradeWorkflow.run,
        LifecycleInput(
            customer_id=customer,
            automation=CAMPAIGN,
            subject_id=f"sub_{customer[4:]}",
            subscription_id=f"sub_{customer[4:]}",
            customer_email="ada@example.com",
            customer_name="Ada",
            context={"subscription": SUBSCRIPTION, "payment_method": None, "usage": USAGE},
            held_out=held_out,
        ),
        id=f"upgrade-{customer}-seats-upgrade-1",
        task_queue=rig.task_queue,
    )


async def test_a_campaign_mails_its_offers_on_their_days_naming_usage_and_next_plan(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker(team_email="team@example.com"):
        handle = await start_campaign(skipping_rig, held_out=False)
        result = await handle.result()
        state = await handle.query(UpgradeWorkflow.state)
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await email_offsets(handle) == [0.0, 7.0]
    assert await ended_after(handle) == 14.0
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == ["upgrade/offer", "upgrade/offer", "team/notice"]
    offer = sent[0]
    assert offer.subject == "Ready for Business? Twice the seats this month"
    assert "Your team is using 9 of the 10 seats your plan includes." in offer.text
    assert "on Starter" in offer.text and "move up to Business" in offer.text
    assert [r.status for r in state.steps_done] == ["recorded", "recorded", "recorded"]


async def test_a_held_out_instance_runs_its_timers_and_sends_no_email(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker(team_email="team@example.com"):
        handle = await start_campaign(skipping_rig, held_out=True)
        result = await handle.result()
        state = await handle.query(UpgradeWorkflow.state)
    # The same timeline as a treated customer's, to the same end.
    assert (result.outcome, result.steps_done) == ("sequence_finished", 3)
    assert await ended_after(handle) == 14.0
    assert await email_offsets(handle) == []
    assert [(r.step, r.status) for r in state.steps_done] == [
        ("0-upgrade-offer", HELD_OUT),
        ("1-upgrade-offer", HELD_OUT),
        ("2-notify_team", "recorded"),
    ]
    first = state.steps_done[0].at
    assert [round((r.at - first) / timedelta(days=1), 2) for r in state.steps_done] == [0, 7, 14]
    # The team still hears of it; the customer is sent nothing.
    assert [m.template for m in await skipping_rig.messages(handle.id)] == ["team/notice"]


async def test_an_upgrade_or_leaving_the_segment_ends_the_campaign(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker(team_email="team@example.com"):
        upgraded = await start_campaign(skipping_rig, held_out=False)
        left = await start_campaign(skipping_rig, held_out=True)
        await skipping_rig.env.sleep(timedelta(days=3))
        for handle, outcome in ((upgraded, "upgraded"), (left, "left_segment")):
            await handle.signal(
                UpgradeWorkflow.lifecycle_update,
                LifecycleUpdate(event_id=f"evt_{outcome}", created=0, outcome=outcome),
            )
        assert (await upgraded.result()).outcome == "upgraded"
        assert (await left.result()).outcome == "left_segment"
    assert await ended_after(upgraded) == 3.0
    assert [m.template for m in await skipping_rig.messages(upgraded.id)] == ["upgrade/offer"]
    assert await skipping_rig.messages(left.id) == []


async def test_a_held_out_dunning_sends_no_reminders_but_still_acts(
    skipping_rig: WorkerRig,
) -> None:
    dunning = Automation(
        name="dunning-holdout",
        lifecycle=Lifecycle.DUNNING,
        steps=[
            Step(index=0, after_seconds=0, send="dunning/payment-failed"),
            Step(index=1, after_seconds=3 * 86_400, send="dunning/reminder"),
            Step(index=2, after_seconds=7 * 86_400, action="notify_team"),
        ],
        holdout_basis_points=5000,
    )
    invoice = f"in_{uuid.uuid4().hex[:12]}"
    async with skipping_rig.worker(team_email="team@example.com"):
        handle = await skipping_rig.env.client.start_workflow(
            DunningWorkflow.run,
            LifecycleInput(
                customer_id="cus_Held1",
                automation=dunning,
                subject_id=invoice,
                customer_email="ada@example.com",
                context={"payment_method": None},
                held_out=True,
            ),
            id=f"dunning-{invoice}",
            task_queue=skipping_rig.task_queue,
        )
        result = await handle.result()
        state = await handle.query(DunningWorkflow.state)
    assert result.outcome == "sequence_finished"
    assert [r.status for r in state.steps_done] == [HELD_OUT, HELD_OUT, "recorded"]
    assert [m.template for m in await skipping_rig.messages(handle.id)] == ["team/notice"]
