"""Invoice, quote and event automations end to end: signed webhooks through the real API,
the customer workflow on the dev server deciding by rules version 3, the lifecycle
instances sending real (outbox) email, and what they earn recorded and credited."""

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.storage.models import Conversion, Message
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from . import corpus
from .conftest import running_stack
from .events import customer_event, unique_customer_id
from .signing import signed
from .workflow_helpers import DAY, eventually, wait_for_lifecycle

AUTOMATIONS = """\
automations:
  - name: overdue-b2b
    lifecycle: invoice_overdue
    steps:
      - {after: 0s, send: invoice_overdue/reminder}
      - {after: 1h, send: invoice_overdue/reminder}
  - name: due-soon
    lifecycle: invoice_due
    steps:
      - {before: 3d, send: invoice_due/reminder}
  - name: big-invoices
    lifecycle: invoice_finalized
    filters: {invoice_amount_min: 100000}
    steps:
      - {after: 60d, action: mark_uncollectible}
  - name: quote-soon
    lifecycle: quote_expiring
    steps:
      - {before: 3d, send: quote_expiring/reminder}
"""


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    automations = tmp_path / "automations.yaml"
    automations.write_text(AUTOMATIONS, encoding="utf-8")
    async with running_stack(dev_env, sqlite_url, task_queue, automations=automations) as pair:
        yield pair


class Customer:
    """A B2B customer billed by invoice (`send_invoice`), driven through signed webhooks."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient, env: WorkflowEnvironment) -> None:
        self.app, self.http, self.env = app, http, env
        self.id = unique_customer_id()
        self.invoice = f"in_{uuid.uuid4().hex[:14]}"
        self.handle = env.client.get_workflow_handle_for(
            CustomerWorkflow.run, ids.customer_workflow_id(self.id)
        )

    async def created(self, now: int, email: str) -> None:
        """`customer.created` of a customer of 40 days' standing."""
        await self.post(
            customer_event(self.id, email, created=now - 40 * DAY, type_="customer.created")
        )

    async def post(self, event: dict[str, Any]) -> None:
        body, headers = signed(event)
        response = await self.http.post("/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200, response.text

    def invoice_event(self, type_: str, created: int, **fields: Any) -> dict[str, Any]:
        """A one-off invoice the customer pays by hand, due `due_date`, in clover's shape."""
        event = corpus.invoice_event(
            "invoice.finalized",
            "clover",
            self.id,
            created=created,
            id=self.invoice,
            subscription=None,
            billing_reason="manual",
            amount_due=120_000,
            amount_paid=0,
            collection_method="send_invoice",
            status="open",
        )
        event["type"] = type_
        event["id"] = f"evt_{uuid.uuid4().hex[:20]}"
        event["data"]["object"].update(fields)
        return event

    async def messages(self) -> list[Message]:
        async with self.app.state.lifecycle.sessionmaker() as session:
            rows = await session.execute(
                select(Message)
                .where(col(Message.customer_id) == self.id)
                .order_by(col(Message.created_at))
            )
            return list(rows.scalars())

    async def conversions(self) -> list[Conversion]:
        async with self.app.state.lifecycle.sessionmaker() as session:
            rows = await session.execute(
                select(Conversion).where(col(Conversion.customer_id) == self.id)
            )
            return list(rows.scalars())


async def test_an_overdue_invoice_paid_after_its_reminder_is_recovered_and_credited(
    dev_env: WorkflowEnvironment, stack: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, http = stack
    customer = Customer(app, http, dev_env)
    now = int(time.time())
    await customer.created(now, "ap@example.com")
    # Finalized 30 days ago, due 10 days ago, still open: overdue.
    due = now - 10 * DAY
    await customer.post(customer.invoice_event("invoice.finalized", now - 30, due_date=due))
    await customer.post(customer.invoice_event("invoice.overdue", now - 20, due_date=due))
    overdue = ids.invoice_overdue_id(customer.invoice)
    ref = await wait_for_lifecycle(customer.handle, overdue)
    assert ref.automation == "overdue-b2b"
    # Its due date had passed already: no "due soon" reminder for it.
    assert ids.invoice_due_id(customer.invoice) not in {
        r.workflow_id for r in await customer.handle.query(CustomerWorkflow.lifecycles)
    }

    async def reminded() -> bool:
        return [m.template for m in await customer.messages()] == ["invoice_overdue/reminder"]

    await eventually(reminded, "the overdue reminder")
    [reminder] = await customer.messages()
    assert (reminder.workflow_id, reminder.to) == (overdue, "ap@example.com")
    assert "$1,200.00" in reminder.text

    # Paid by the customer after the reminder: recovered, credited to it.
    paid_at = int(time.time()) + 1
    await customer.post(
        customer.invoice_event(
            "invoice.paid",
            paid_at,
            due_date=due,
            status="paid",
            amount_paid=120_000,
            amount_remaining=0,
        )
    )
    await wait_for_lifecycle(customer.handle, overdue, "paid")

    # The big invoice's `invoice_finalized` instance records the payment too, its own way.
    async def credited() -> bool:
        return len(await customer.conversions()) == 2

    await eventually(credited, "the recovery recorded")
    [recovery] = [c for c in await customer.conversions() if c.lifecycle == "invoice_overdue"]
    assert (recovery.kind, recovery.lifecycle, recovery.workflow_id) == (
        "recovered",
        "invoice_overdue",
        overdue,
    )
    assert (recovery.amount_cents, recovery.currency) == (120_000, "usd")
    assert (recovery.message_id, recovery.attribution) == (reminder.id, "last_send")


async def test_an_invoice_paid_on_time_ends_its_reminders_with_the_payment_credited(
    dev_env: WorkflowEnvironment, stack: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, http = stack
    customer = Customer(app, http, dev_env)
    now = int(time.time())
    await customer.created(now, "ap@example.com")
    # Due in ten days: its reminder waits for three days before; a big invoice finalized
    # is followed up too.
    due = now + 10 * DAY
    await customer.post(customer.invoice_event("invoice.finalized", now - 30, due_date=due))
    due_soon = ids.invoice_due_id(customer.invoice)
    finalized = ids.invoice_finalized_id(customer.invoice)
    assert (await wait_for_lifecycle(customer.handle, due_soon)).automation == "due-soon"
    assert (await wait_for_lifecycle(customer.handle, finalized)).automation == "big-invoices"
    await customer.post(
        customer.invoice_event(
            "invoice.paid",
            now - 10,
            due_date=due,
            status="paid",
            amount_paid=120_000,
            amount_remaining=0,
        )
    )
    await wait_for_lifecycle(customer.handle, due_soon, "paid")
    await wait_for_lifecycle(customer.handle, finalized, "paid")
    # The instances themselves end so, before their steps' time.
    for instance in (due_soon, finalized):
        result = await dev_env.client.get_workflow_handle(instance).result()
        assert result["outcome"] == "paid"

    async def recorded() -> bool:
        return len(await customer.conversions()) == 2

    await eventually(recorded, "the payment recorded for both")
    assert {(c.kind, c.lifecycle, c.amount_cents) for c in await customer.conversions()} == {
        ("invoice_paid", "invoice_due", 120_000),
        ("invoice_paid", "invoice_finalized", 120_000),
    }


async def test_an_open_quote_runs_until_accepted(
    dev_env: WorkflowEnvironment, stack: tuple[FastAPI, httpx.AsyncClient]
) -> None:
    app, http = stack
    customer = Customer(app, http, dev_env)
    now = int(time.time())
    await customer.created(now, "buyer@example.com")
    quote_id = f"qt_{uuid.uuid4().hex[:14]}"

    def quote_event(type_: str, created: int, status: str) -> dict[str, Any]:
        event = corpus.event("quote.finalized", "clover", customer.id, created=created)
        event["type"] = type_
        event["id"] = f"evt_{uuid.uuid4().hex[:20]}"
        event["data"]["object"].update(id=quote_id, status=status, expires_at=now + 30 * DAY)
        return event

    await customer.post(quote_event("quote.finalized", now - 20, "open"))
    expiring = ids.quote_expiring_id(quote_id)
    assert (await wait_for_lifecycle(customer.handle, expiring)).automation == "quote-soon"
    await customer.post(quote_event("quote.accepted", now - 10, "accepted"))
    await wait_for_lifecycle(customer.handle, expiring, "accepted")
    result = await dev_env.client.get_workflow_handle(expiring).result()
    assert (result["outcome"], result["steps_done"]) == ("accepted", 0)

    async def accepted() -> bool:
        return [c.kind for c in await customer.conversions()] == ["quote_accepted"]

    await eventually(accepted, "the acceptance recorded")
