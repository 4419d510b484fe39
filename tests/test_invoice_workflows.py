"""The invoice and quote lifecycles on the time-skipping server: reminders counted back
from a due date (and re-timed when it moves), an overdue sequence ended by the payment,
a quote's reminder before it expires; weeks of timers in well under a second, the real
mail activity rendering the shipped templates into SQLite."""

import uuid
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle

from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.workflows.engine import LifecycleInput, LifecycleResult, LifecycleUpdate
from stripe_lifecycle.workflows.lifecycles import (
    InvoiceDueWorkflow,
    InvoiceOverdueWorkflow,
    QuoteExpiringWorkflow,
)

from .conftest import WorkerRig
from .workflow_helpers import DAY, email_offsets, ended_after

Handle = WorkflowHandle[Any, LifecycleResult]


def invoice(due_date: int) -> InvoiceInfo:
    return InvoiceInfo(
        id=f"in_{uuid.uuid4().hex[:14]}",
        customer_id="cus_Bill1",
        status="open",
        number="ACME-0042",
        currency="usd",
        amount_due=120_000,
        amount_remaining=120_000,
        hosted_invoice_url="https://invoice.stripe.com/i/acct_1/test_42",
        collection_method="send_invoice",
        due_date=due_date,
    )


async def start_invoice_lifecycle(
    rig: WorkerRig, run: Any, automation: Automation, bill: InvoiceInfo, anchor: int | None
) -> Handle:
    handle: Handle = await rig.env.client.start_workflow(
        run,
        LifecycleInput(
            customer_id="cus_Bill1",
            automation=automation,
            subject_id=bill.id or "",
            anchor=anchor,
            customer_email="ap@example.com",
            customer_name="Accounts Payable",
            context={"payment_method": None},
            invoice=bill,
        ),
        id=f"{automation.lifecycle.replace('_', '-')}-{bill.id}",
        task_queue=rig.task_queue,
    )
    return handle


async def test_due_date_reminders_are_re_timed_when_the_due_date_moves(
    skipping_rig: WorkerRig,
) -> None:
    env = skipping_rig.env
    now = int((await env.get_current_time()).timestamp())
    bill = invoice(due_date=now + 14 * DAY)
    due_soon = Automation(
        name="due-soon",
        lifecycle=Lifecycle.INVOICE_DUE,
        steps=[
            Step(index=0, before_seconds=7 * DAY, send="invoice_due/reminder"),
            Step(index=1, before_seconds=1 * DAY, send="invoice_due/reminder"),
        ],
    )
    async with skipping_rig.worker():
        handle = await start_invoice_lifecycle(
            skipping_rig, InvoiceDueWorkflow.run, due_soon, bill, bill.due_date
        )
        await env.sleep(timedelta(days=2))
        # The business gave 10 more days: the reminders move with the due date.
        await handle.signal(
            InvoiceDueWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_due_moved", created=now, anchor=now + 24 * DAY),
        )
        result = await handle.result()
    # 7 and 1 days before day 24, then no outcome came: it ends at the due date.
    assert await email_offsets(handle) == [17.0, 23.0]
    assert (result.outcome, result.steps_done) == ("sequence_finished", 2)
    assert await ended_after(handle) == 24.0
    sent = await skipping_rig.messages(handle.id)
    assert [m.template for m in sent] == ["invoice_due/reminder"] * 2
    assert "$1,200.00" in sent[0].text and "ACME-0042" in sent[0].text


async def test_an_overdue_sequence_ends_when_the_invoice_is_paid(
    skipping_rig: WorkerRig,
) -> None:
    env = skipping_rig.env
    now = int((await env.get_current_time()).timestamp())
    bill = invoice(due_date=now - DAY)
    overdue = Automation(
        name="overdue-b2b",
        lifecycle=Lifecycle.INVOICE_OVERDUE,
        steps=[
            Step(index=0, after_seconds=DAY, send="invoice_overdue/reminder"),
            Step(index=1, after_seconds=7 * DAY, send="invoice_overdue/reminder"),
            Step(index=2, after_seconds=30 * DAY, action="mark_uncollectible"),
        ],
    )
    async with skipping_rig.worker():
        handle = await start_invoice_lifecycle(
            skipping_rig, InvoiceOverdueWorkflow.run, overdue, bill, bill.due_date
        )
        await env.sleep(timedelta(days=3))
        await handle.signal(
            InvoiceOverdueWorkflow.lifecycle_update,
            LifecycleUpdate(event_id="evt_paid", created=now + 3 * DAY, outcome="paid"),
        )
        result = await handle.result()
    # One reminder on day 1; paid on day 3: no second reminder, nothing written off.
    assert await email_offsets(handle) == [1.0]
    assert (result.outcome, result.steps_done) == ("paid", 1)
    assert await ended_after(handle) == 3.0


async def test_a_quote_is_reminded_before_it_expires(skipping_rig: WorkerRig) -> None:
    env = skipping_rig.env
    now = int((await env.get_current_time()).timestamp())
    expiring = Automation(
        name="quote-soon",
        lifecycle=Lifecycle.QUOTE_EXPIRING,
        steps=[Step(index=0, before_seconds=3 * DAY, send="quote_expiring/reminder")],
    )
    quote_id = f"qt_{uuid.uuid4().hex[:14]}"
    async with skipping_rig.worker():
        handle: Handle = await env.client.start_workflow(
            QuoteExpiringWorkflow.run,
            LifecycleInput(
                customer_id="cus_Bill1",
                automation=expiring,
                subject_id=quote_id,
                anchor=now + 10 * DAY,
                customer_email="buyer@example.com",
                context={
                    "quote": {
                        "id": quote_id,
                        "number": "QT-7",
                        "amount_total": 990_000,
                        "currency": "usd",
                        "expires_at": now + 10 * DAY,
                    }
                },
            ),
            id=f"quote-expiring-{quote_id}",
            task_queue=skipping_rig.task_queue,
        )
        result = await handle.result()
    assert await email_offsets(handle) == [7.0]
    assert result.outcome == "sequence_finished"
    [reminder] = await skipping_rig.messages(handle.id)
    assert "QT-7" in reminder.text and "$9,900.00" in reminder.text
