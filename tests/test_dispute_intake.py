"""Events that name only a payment (a Dispute names its charge, a Refund its payment
intent) reach the customer workflow of the payment's customer: acknowledged at once, the
customer read from the local Stripe-speaking server by the forwarder, then delivered like
any other event. Through the real app, worker and Temporal dev server."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.domain.ledger import BillingSnapshot
from stripe_lifecycle.intake.inbox import inbox_row as build_inbox_row
from stripe_lifecycle.intake.normalise import (
    PaymentReference,
    event_payment_reference,
    normalise_event,
    normalise_event_for_customer,
)
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from .conftest import running_stack
from .events import customer_event, unique_customer_id
from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from .payment_events import API_VERSION, T0, charge_object, dispute_event
from .signing import signed
from .workflow_helpers import eventually


def refund_event(intent_id: str, *, created: int, account: str | None = None) -> dict[str, Any]:
    """`refund.created` of a Refund naming only its payment intent."""
    suffix = uuid.uuid4().hex[:14]
    refund = {
        "id": f"re_{suffix}",
        "object": "refund",
        "amount": 1000,
        "charge": None,
        "created": created,
        "currency": "usd",
        "metadata": {},
        "payment_intent": intent_id,
        "reason": "requested_by_customer",
        "status": "succeeded",
    }
    event: dict[str, Any] = {
        "id": f"evt_{suffix}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": refund},
        "livemode": False,
        "type": "refund.created",
    }
    if account is not None:
        event["account"] = account
    return event


def unique_charge_id() -> str:
    return f"ch_T{uuid.uuid4().hex[:14]}"


# --- The pure part ------------------------------------------------------------------


def test_which_payment_an_event_is_resolved_through() -> None:
    cus = unique_customer_id()
    dispute = dispute_event("ch_1", created=T0)
    expanded = dispute_event("ch_1", created=T0)
    expanded["data"]["object"]["charge"] = {"id": "ch_1", "object": "charge", "customer": None}
    guest_charge = {
        "id": "evt_guest",
        "type": "charge.succeeded",
        "created": T0,
        "data": {"object": charge_object("ch_2", None)},
    }
    price = {"id": "evt_p", "type": "price.created", "created": T0, "data": {"object": {}}}
    cases: list[tuple[dict[str, Any], PaymentReference | None]] = [
        (dispute, PaymentReference("charge", "ch_1")),
        (expanded, PaymentReference("charge", "ch_1")),
        (refund_event("pi_9", created=T0), PaymentReference("payment_intent", "pi_9")),
        # A charge without a customer is a guest payment: reading it again tells no more.
        (guest_charge, None),
        # An event naming its customer needs no reading.
        (customer_event(cus, "a@example.com", created=T0), None),
        (price, None),
    ]
    for event, expected in cases:
        assert event_payment_reference(event) == expected, event["type"]
        if expected is not None:
            assert normalise_event(event) is None


def test_an_event_is_normalised_for_the_customer_read_elsewhere() -> None:
    event = dispute_event("ch_1", created=T0, account="acct_1")
    normalised = normalise_event_for_customer(event, "cus_A")
    assert (normalised.event_id, normalised.type, normalised.customer_id, normalised.account) == (
        event["id"],
        "charge.dispute.created",
        "cus_A",
        "acct_1",
    )
    assert normalised.created == T0
    # The stored payload stays as Stripe sent it.
    assert "customer" not in event["data"]["object"]


# --- Through the app ----------------------------------------------------------------


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(StripeState())) as server:
        yield server


Stack = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
async def keyed_stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, stripe_api: StripeHttpServer
) -> AsyncIterator[Stack]:
    async with running_stack(
        dev_env,
        sqlite_url,
        task_queue,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    ) as pair:
        yield pair


async def post_event(http: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    body, headers = signed(event)
    return await http.post("/webhooks/stripe", content=body, headers=headers)


async def inbox_row(app: FastAPI, event_id: str) -> WebhookEvent:
    async with app.state.lifecycle.sessionmaker() as session:
        rows = await session.execute(
            select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id)
        )
        row: WebhookEvent = rows.scalars().one()
    return row


def charge_reads(state: StripeState, charge_id: str) -> int:
    return sum(1 for r in state.requests if r.path == f"/v1/charges/{charge_id}")


async def applied(env: WorkflowEnvironment, cus: str, count: int) -> BillingSnapshot:
    handle = env.client.get_workflow_handle_for(CustomerWorkflow.run, ids.customer_workflow_id(cus))

    async def reached() -> bool:
        try:
            return (await handle.query(CustomerWorkflow.state)).events_applied >= count
        except RPCError:  # not started yet
            return False

    await eventually(reached, f"{count} events applied for {cus}", timeout=20.0)
    return await handle.query(CustomerWorkflow.state)


async def test_dispute_reaches_the_charge_customers_workflow_once(
    dev_env: WorkflowEnvironment,
    database_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
) -> None:
    cus = unique_customer_id()
    charge_id = unique_charge_id()
    stripe_api.state.charges[charge_id] = charge_object(charge_id, cus)
    async with running_stack(
        dev_env,
        database_url,
        task_queue,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    ) as (app, http):
        known = customer_event(cus, "ines@example.com", created=T0)
        assert (await post_event(http, known)).status_code == 200
        dispute = dispute_event(charge_id, created=T0 + 60)
        answer = await post_event(http, dispute)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "received": True,
            "event_id": dispute["id"],
            "duplicate": False,
            "status": "pending",
        }
        again = await post_event(http, dispute)
        assert again.json()["duplicate"] is True

        snap = await applied(dev_env, cus, 2)
        await app.state.lifecycle.forwarder.drained()
        assert (snap.events_applied, snap.last_event_type) == (2, "charge.dispute.created")
        assert snap.email == "ines@example.com"
        row = await inbox_row(app, dispute["id"])
        assert (row.status, row.customer_id) == (InboxStatus.FORWARDED, cus)
        assert row.payload == dispute

        # The dispute closing later: the charge's customer is remembered, not read again.
        closed = dispute_event(
            charge_id, created=T0 + 120, type_="charge.dispute.closed", status="lost"
        )
        assert (await post_event(http, closed)).status_code == 200
        snap = await applied(dev_env, cus, 3)
        assert snap.last_event_type == "charge.dispute.closed"
        assert charge_reads(stripe_api.state, charge_id) == 1
    # The delivered-twice dispute was applied once.
    assert snap.events_applied == 3


async def test_connected_account_refund_is_resolved_through_its_payment_intent(
    keyed_stack: Stack, dev_env: WorkflowEnvironment, stripe_api: StripeHttpServer
) -> None:
    app, http = keyed_stack
    cus = unique_customer_id()
    connected = StripeState()
    connected.payment_intents["pi_conn1"] = {
        "id": "pi_conn1",
        "object": "payment_intent",
        "amount": 4900,
        "currency": "usd",
        "customer": cus,
        "status": "succeeded",
    }
    stripe_api.state.connected["acct_conn1"] = connected
    event = refund_event("pi_conn1", created=T0, account="acct_conn1")
    assert (await post_event(http, event)).status_code == 200
    snap = await applied(dev_env, cus, 1)
    assert (snap.last_event_type, snap.stripe_account) == ("refund.created", "acct_conn1")
    [read] = [r for r in stripe_api.state.requests if r.path == "/v1/payment_intents/pi_conn1"]
    assert read.account == "acct_conn1"
    await app.state.lifecycle.forwarder.drained()
    assert (await inbox_row(app, event["id"])).customer_id == cus


async def test_rate_limited_read_is_retried_and_the_dispute_delivered(
    keyed_stack: Stack, dev_env: WorkflowEnvironment, stripe_api: StripeHttpServer
) -> None:
    app, http = keyed_stack
    cus = unique_customer_id()
    charge_id = unique_charge_id()
    stripe_api.state.charges[charge_id] = charge_object(charge_id, cus)
    stripe_api.state.rate_limited = 3
    dispute = dispute_event(charge_id, created=T0)
    started = time.monotonic()
    answer = await post_event(http, dispute)
    # Stripe refusing costs the webhook nothing: it never asks Stripe.
    assert answer.status_code == 200
    assert answer.json()["status"] == "pending"
    assert time.monotonic() - started < 2.0

    snap = await applied(dev_env, cus, 1)
    assert snap.last_event_type == "charge.dispute.created"
    assert charge_reads(stripe_api.state, charge_id) == 4
    await app.state.lifecycle.forwarder.drained()
    row = await inbox_row(app, dispute["id"])
    assert (row.status, row.customer_id) == (InboxStatus.FORWARDED, cus)
    # Three refused reads and the delivery.
    assert row.attempts == 4
    assert row.last_error is not None and "rate limit" in row.last_error.lower()


async def test_guest_and_vanished_charges_stay_unresolved_with_the_reason(
    keyed_stack: Stack, stripe_api: StripeHttpServer
) -> None:
    app, http = keyed_stack
    guest_charge = unique_charge_id()
    stripe_api.state.charges[guest_charge] = charge_object(guest_charge, None)
    guest = dispute_event(guest_charge, created=T0)
    vanished = dispute_event(unique_charge_id(), created=T0)
    for event in (guest, vanished):
        assert (await post_event(http, event)).status_code == 200
    await app.state.lifecycle.forwarder.drained()

    guest_row = await inbox_row(app, guest["id"])
    assert (guest_row.status, guest_row.customer_id) == (InboxStatus.IGNORED, None)
    assert guest_row.last_error == f"charge {guest_charge} has no customer (a guest payment)"
    vanished_row = await inbox_row(app, vanished["id"])
    assert (vanished_row.status, vanished_row.customer_id) == (InboxStatus.IGNORED, None)
    assert vanished_row.last_error is not None
    assert "no longer exists at Stripe" in vanished_row.last_error
    assert "No such charge" in vanished_row.last_error
    # Each was read once: a 404 is an answer, not a failure to retry.
    assert charge_reads(stripe_api.state, vanished["data"]["object"]["charge"]) == 1


async def test_without_an_api_key_the_dispute_stays_recorded_unresolved(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    charge_id = unique_charge_id()
    async with running_stack(dev_env, sqlite_url, task_queue, stripe_api_key=None) as (
        app,
        http,
    ):
        dispute = dispute_event(charge_id, created=T0)
        answer = await post_event(http, dispute)
        assert answer.status_code == 200
        await app.state.lifecycle.forwarder.drained()
        row = await inbox_row(app, dispute["id"])
    assert (row.status, row.customer_id) == (InboxStatus.IGNORED, None)
    assert row.last_error == (
        f"LIFECYCLE_STRIPE_API_KEY is not set: the customer of charge {charge_id} is unknown"
    )


async def test_disputes_stored_before_a_restart_are_resolved_by_the_sweep(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    task_queue: str,
    stripe_api: StripeHttpServer,
) -> None:
    """Stored while no API ran (reconciliation read them back, or a crash came first): one
    never read, one whose customer was read and stored before the delivery was cut off."""
    cus = unique_customer_id()
    first_charge, second_charge = unique_charge_id(), unique_charge_id()
    stripe_api.state.charges[first_charge] = charge_object(first_charge, cus)
    unread = dispute_event(first_charge, created=T0)
    read_before = dispute_event(second_charge, created=T0 + 60)
    rows = [inbox_row_of(unread), {**inbox_row_of(read_before), "customer_id": cus}]
    assert [row["status"] for row in rows] == [InboxStatus.PENDING] * 2
    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        session.add_all(WebhookEvent(**row) for row in rows)
        await session.commit()
    await engine.dispose()

    async with running_stack(
        dev_env,
        sqlite_url,
        task_queue,
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    ) as (app, _):
        snap = await applied(dev_env, cus, 2)
        assert snap.last_event_type == "charge.dispute.created"
        await app.state.lifecycle.forwarder.drained()
        statuses = [(await inbox_row(app, e["id"])).status for e in (unread, read_before)]
    assert statuses == [InboxStatus.FORWARDED] * 2
    # Only the charge never read was asked for.
    assert charge_reads(stripe_api.state, first_charge) == 1
    assert charge_reads(stripe_api.state, second_charge) == 0


def inbox_row_of(event: dict[str, Any]) -> dict[str, Any]:
    return build_inbox_row(event, normalise_event(event), datetime.now(UTC) - timedelta(hours=1))
