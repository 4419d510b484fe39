"""DunningWorkflow on the time-skipping server: a 12-day sequence in well under a second,
with the real mail and conversion activities on SQLite."""

import time
import uuid
from datetime import timedelta

from sqlalchemy import select
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.storage.models import Conversion
from stripe_lifecycle.workflows.engine import (
    InvoiceLifecycleWorkflow,
    InvoiceUpdate,
    LifecycleInput,
    LifecycleResult,
    LifecycleUpdate,
)
from stripe_lifecycle.workflows.lifecycles import DunningWorkflow, PaymentActionWorkflow

from .conftest import WorkerRig
from .workflow_helpers import DAY, cancel_by_support, email_offsets, packaged, wait_for_steps

TEMPLATES = {"dunning/payment-failed", "dunning/reminder", "dunning/final-notice"}


def default_automation() -> Automation:
    return packaged("dunning-default")


def invoice(invoice_id: str) -> InvoiceInfo:
    return InvoiceInfo(
        id=invoice_id,
        customer_id="cus_Dun1",
        subscription_id="sub_Dun1",
        status="open",
        number="INV-7",
        currency="usd",
        amount_due=4900,
        attempt_count=1,
        next_payment_attempt=1_790_259_200,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_abc",
    )


async def start(
    rig: WorkerRig,
    automation: Automation | None = None,
    kind: type[InvoiceLifecycleWorkflow] = DunningWorkflow,
) -> WorkflowHandle[InvoiceLifecycleWorkflow, LifecycleResult]:
    invoice_id = f"in_{uuid.uuid4().hex[:14]}"
    workflow_id = (
        ids.dunning_id(invoice_id) if kind is DunningWorkflow else ids.payment_action_id(invoice_id)
    )
    return await rig.env.client.start_workflow(
        kind.run,
        LifecycleInput(
            customer_id="cus_Dun1",
            automation=automation or default_automation(),
            subject_id=invoice_id,
            subscription_id="sub_Dun1",
            customer_email="ada@example.com",
            customer_name="Ada",
            invoice=invoice(invoice_id),
            mrr_cents=4900,
        ),
        id=workflow_id,
        task_queue=rig.task_queue,
    )


async def test_full_sequence_sends_each_email_at_its_offset(skipping_rig: WorkerRig) -> None:
    async with skipping_rig.worker():
        handle = await start(skipping_rig)
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("sequence_finished", 4)
    assert await email_offsets(handle) == [0.0, 3.0, 7.0, 12.0]
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == [
        "dunning/payment-failed",
        "dunning/reminder",
        "dunning/reminder",
        "dunning/final-notice",
    ]
    assert {m.status for m in sent} == {"recorded"} and {m.to for m in sent} == {"ada@example.com"}
    assert "$49.00" in sent[0].subject
    assert sent[0].destinations == {
        "update_payment": "https://invoice.stripe.com/i/acct_1/test_abc"
    }


async def test_payment_midway_ends_the_sequence_with_the_outcome_it_is_told(
    skipping_rig: WorkerRig,
) -> None:
    # The customer workflow decides what the payment means (and records the conversion);
    # the instance stops sending and ends with that outcome.
    async with skipping_rig.worker():
        handle = await start(skipping_rig)
        await skipping_rig.env.sleep(timedelta(days=4))
        paid = LifecycleUpdate(event_id="evt_paid_1", created=int(time.time()), outcome="recovered")
        await handle.signal(DunningWorkflow.lifecycle_update, paid)
        # Stripe redelivers: ignored by the instance, or it has ended already (the first
        # signal's task may complete it before the second arrives).
        try:
            await handle.signal(DunningWorkflow.lifecycle_update, paid)
        except RPCError as exc:
            assert exc.status == RPCStatusCode.NOT_FOUND, exc
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("recovered", 2)
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == ["dunning/payment-failed", "dunning/reminder"]
    async with skipping_rig.sessionmaker() as session:
        assert list((await session.execute(select(Conversion))).scalars()) == []


async def test_a_later_failure_refreshes_the_retry_date_the_next_email_quotes(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker():
        handle = await start(skipping_rig)
        await skipping_rig.env.sleep(timedelta(days=1))
        failed_again = invoice(handle.id.removeprefix("dunning-"))
        failed_again.attempt_count, failed_again.next_payment_attempt = 2, 1_790_600_000
        await handle.signal(
            DunningWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_failed_2", created=1, invoice=failed_again),
        )
        await skipping_rig.env.sleep(timedelta(days=3))
        state = await handle.query(DunningWorkflow.state)
        voided = LifecycleUpdate(event_id="evt_void", created=2, outcome="voided")
        await handle.signal(DunningWorkflow.lifecycle_update, voided)
        assert (await handle.result()).outcome == "voided"
    assert [s.target for s in state.steps_done] == ["dunning/payment-failed", "dunning/reminder"]
    first, reminder = await skipping_rig.messages(handle.id)
    assert "attempts so far" not in (first.text or "")
    assert "after 2 attempts so far" in (reminder.text or "")


async def test_runs_of_older_customer_workflows_record_their_own_recovery(
    skipping_rig: WorkerRig,
) -> None:
    # Customer workflow runs that began before the rules decided invoice outcomes forward
    # the event itself (`invoice_update`); the instance then records the recovery, once.
    async with skipping_rig.worker():
        handle = await start(skipping_rig)
        await skipping_rig.env.sleep(timedelta(days=4))
        paid = invoice(handle.id.removeprefix("dunning-"))
        paid.amount_paid, paid.status = 4900, "paid"
        update = InvoiceUpdate(
            event_id="evt_paid_1",
            event_type="invoice.paid",
            # Stripe's clock is the real one; only the workflow's timers were skipped.
            created=int(time.time()) + 1,
            invoice=paid,
            mrr_cents=4900,
        )
        await handle.signal(DunningWorkflow.invoice_update, update)
        await handle.signal(DunningWorkflow.invoice_update, update)  # Stripe redelivers
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("recovered", 2)
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == ["dunning/payment-failed", "dunning/reminder"]
    async with skipping_rig.sessionmaker() as session:
        [conversion] = list((await session.execute(select(Conversion))).scalars())
    assert (conversion.kind, conversion.stripe_event_id, conversion.mrr_delta_cents) == (
        "recovered",
        "evt_paid_1",
        4900,
    )
    assert (conversion.amount_cents, conversion.currency) == (4900, "usd")
    # No click: the last email sent (the reminder) earned it.
    assert (conversion.message_id, conversion.attribution) == (sent[1].id, "last_send")


async def test_support_cancel_stops_later_steps(dev_rig: WorkerRig) -> None:
    # Updates run on the dev server: the Java time-skipping server loses the outcome of an
    # update that ends the workflow. The first email goes out at once; the reminder would
    # wait three days.
    async with dev_rig.worker():
        handle = await start(dev_rig)
        await wait_for_steps(handle, 1)
        await cancel_by_support(handle, "customer paid by wire")
        result = await handle.result()
    assert (result.outcome, result.steps_done) == ("cancelled", 1)
    assert len(await dev_rig.messages(handle.id)) == 1


async def test_worker_restart_mid_sequence_neither_repeats_nor_misses_an_email(
    skipping_rig: WorkerRig,
) -> None:
    # No workflow cache: every task is replayed from history, as on a freshly started worker
    # (and no task waits on a stopped worker's sticky queue).
    async with skipping_rig.worker(cache=0):
        handle = await start(skipping_rig)
        await skipping_rig.env.sleep(timedelta(days=4))
    # The first worker is gone; a new one on the same server picks the sequence up.
    async with skipping_rig.worker(cache=0):
        result = await handle.result()
    assert result.steps_done == 4
    assert await email_offsets(handle) == [0.0, 3.0, 7.0, 12.0]
    assert len(await skipping_rig.messages(handle.id)) == 4


async def test_failed_stripe_action_is_shown_and_the_sequence_goes_on(
    skipping_rig: WorkerRig,
) -> None:
    automation = Automation(
        name="with-final-action",
        lifecycle="dunning",
        steps=[
            default_automation().steps[0],
            Step(index=1, after_seconds=14 * DAY, action="cancel_subscription"),
        ],
    )
    async with skipping_rig.worker():
        handle = await start(skipping_rig, automation)
        result = await handle.result()
        state = await handle.query(DunningWorkflow.state)
    assert result.steps_done == 2
    action = state.steps_done[1]
    assert (action.kind, action.target) == ("action", "cancel_subscription")
    # No Stripe key here: a permanent failure, shown on the step instead of retried forever.
    assert action.status.startswith("failed") and "LIFECYCLE_STRIPE_API_KEY" in action.status


def payment_action_automation() -> Automation:
    return packaged("payment-action-default")


async def test_payment_action_asks_and_reminds_until_a_failure_hands_over_to_dunning(
    skipping_rig: WorkerRig,
) -> None:
    async with skipping_rig.worker():
        complete = await start(skipping_rig, payment_action_automation(), PaymentActionWorkflow)
        assert (await complete.result()).outcome == "sequence_finished"
        handed_over = await start(skipping_rig, payment_action_automation(), PaymentActionWorkflow)
        await skipping_rig.env.sleep(timedelta(days=2))
        await handed_over.signal(
            PaymentActionWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_f", created=1, outcome="payment_failed"),
        )
        result = await handed_over.result()
    assert await email_offsets(complete) == [0.0, 1.0, 3.0]
    assert [m.template for m in await skipping_rig.messages(complete.id)] == [
        "payment_action/confirm"
    ] * 3
    assert (result.outcome, result.steps_done) == ("payment_failed", 2)
    assert {m.lifecycle for m in await skipping_rig.messages(handed_over.id)} == {"payment_action"}


async def test_the_final_notice_waits_for_the_retry_stripe_still_has_scheduled(
    skipping_rig: WorkerRig,
) -> None:
    started = int((await skipping_rig.env.get_current_time()).timestamp())
    async with skipping_rig.worker():
        handle = await start(skipping_rig)
        # After the second reminder Stripe schedules its last retry for day 13, a day
        # after the final notice was due.
        await skipping_rig.env.sleep(timedelta(days=8))
        retrying = invoice(handle.id.removeprefix("dunning-"))
        retrying.attempt_count, retrying.next_payment_attempt = 4, started + 13 * DAY
        await handle.signal(
            DunningWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_updated", created=1, invoice=retrying),
        )
        result = await handle.result()
    assert result.outcome == "sequence_finished"
    offsets = await email_offsets(handle)
    assert offsets[:3] == [0.0, 3.0, 7.0]
    # Sent once the retry's outcome could be known, not on day 12.
    assert 13.0 <= offsets[3] <= 13.1
    final = (await skipping_rig.messages(handle.id))[-1]
    assert final.template == "dunning/final-notice"
    # The retry date has passed by then: the notice does not quote it.
    assert "Final attempt" not in (final.text or "")
