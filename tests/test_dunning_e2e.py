"""Failed payments end to end: signed webhooks through the real API, the customer workflow
on the dev server starting and feeding its dunning child, the support cancel endpoint."""

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids
from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Conversion, SupportAction
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from . import corpus
from .conftest import SUPPORT_KEY
from .events import customer_event, subscription_event, unique_customer_id
from .signing import post_webhook as post
from .workflow_helpers import eventually

T0 = 1_790_000_000
AUTH = {"Authorization": f"Bearer {SUPPORT_KEY}"}
CustomerHandle = WorkflowHandle[CustomerWorkflow, None]


def invoice_event(
    fixture: str, cus: str, invoice_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    return corpus.event(
        fixture,
        "legacy",
        cus,
        created=created,
        id=invoice_id,
        subscription="sub_T1",
        billing_reason="subscription_cycle",
        amount_due=4900,
        **fields,
    )


async def events_applied(entity: CustomerHandle, count: int) -> None:
    async def applied() -> bool:
        return (await entity.query(CustomerWorkflow.state)).events_applied >= count

    await eventually(applied, f"{count} events applied by {entity.id}")


async def acted_on(
    http: httpx.AsyncClient, entity: CustomerHandle, cus: str, email: str, *, events: int
) -> None:
    """Until the customer workflow has acted on its first `events` events: started or fed
    the lifecycles they call for. It counts a batch of events as it applies them, before
    acting on them, so the count alone comes too early; it takes the next batch only once
    it has acted on the last. So a harmless event sent once those are counted, and counted
    in turn, means they have been acted on."""
    await events_applied(entity, events)
    await post(http, customer_event(cus, email, created=T0 + 1000))
    await events_applied(entity, events + 1)


async def lifecycle_ids(client: Client, cus: str) -> list[str]:
    query = f"CustomerId = '{cus}' AND WorkflowType = 'DunningWorkflow'"
    return [w.id async for w in client.list_workflows(query)]


async def test_failed_payment_starts_one_dunning_that_support_can_stop(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    _, http = stack
    cus, invoice_id = unique_customer_id(), f"in_{uuid.uuid4().hex[:14]}"
    await post(http, customer_event(cus, "ada@example.com", created=T0, type_="customer.created"))
    await post(http, subscription_event(cus, created=T0 + 1, status="past_due"))
    failed = invoice_event("invoice.payment_failed", cus, invoice_id, T0 + 2)
    for _ in range(3):  # Stripe redelivers the same event
        await post(http, failed)
    retry = invoice_event("invoice.payment_failed", cus, invoice_id, T0 + 3, attempt_count=2)
    await post(http, retry)  # a later retry of the same invoice fails too

    async def one_email() -> bool:
        log = (await http.get(f"/v1/customers/{cus}/messages", headers=AUTH)).json()
        return len(log.get("messages", [])) == 1

    await eventually(one_email, "the payment-failed email")
    log = (await http.get(f"/v1/customers/{cus}/messages", headers=AUTH)).json()["messages"]
    assert [(m["template"], m["workflow_id"], m["to"]) for m in log] == [
        ("dunning/payment-failed", f"dunning-{invoice_id}", "ada@example.com")
    ]
    assert await lifecycle_ids(dev_env.client, cus) == [f"dunning-{invoice_id}"]
    customer = (await http.get(f"/v1/customers/{cus}", headers=AUTH)).json()
    assert customer["lifecycles"] == [
        {
            "workflow_id": f"dunning-{invoice_id}",
            "lifecycle": "dunning",
            "automation": "dunning-default",
            "status": "running",
            "outcome": "running",
        }
    ]

    stop = await http.post(
        f"/v1/customers/{cus}/dunning/cancel",
        json={"reason": "paid by bank transfer"},
        headers=AUTH,
    )
    assert stop.json() == {"cancelled": [f"dunning-{invoice_id}"]}
    again = await http.post(
        f"/v1/customers/{cus}/dunning/cancel", json={"reason": "twice"}, headers=AUTH
    )
    assert again.json() == {"cancelled": []}
    nobody = await http.post(
        "/v1/customers/cus_nobody/dunning/cancel", json={"reason": "x"}, headers=AUTH
    )
    assert nobody.status_code == 404
    assert (
        await http.post(f"/v1/customers/{cus}/dunning/cancel", json={"reason": "x"})
    ).status_code == 401

    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        audit = list((await session.execute(select(SupportAction))).scalars())
    await engine.dispose()
    assert [(a.action, a.reason, a.workflow_ids) for a in audit] == [
        ("dunning.cancel", "paid by bank transfer", [f"dunning-{invoice_id}"]),
        ("dunning.cancel", "twice", []),
    ]
    assert audit[0].actor.startswith("support key ")
    handle = dev_env.client.get_workflow_handle(f"dunning-{invoice_id}")
    assert (await handle.result())["outcome"] == "cancelled"

    async def outcome_shown() -> bool:
        shown = (await http.get(f"/v1/customers/{cus}", headers=AUTH)).json()["lifecycles"]
        return [(x["status"], x["outcome"]) for x in shown] == [("completed", "cancelled")]

    await eventually(outcome_shown, "the cancelled outcome in the customer view")


async def test_payment_reported_before_the_failure_starts_nothing(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    app, http = stack
    cus, invoice_id = unique_customer_id(), f"in_{uuid.uuid4().hex[:14]}"
    await post(http, customer_event(cus, "bo@example.com", created=T0, type_="customer.created"))
    await post(
        http,
        invoice_event("invoice.paid", cus, invoice_id, T0 + 5, amount_paid=4900),
    )
    await app.state.lifecycle.forwarder.drained()
    await post(
        http,
        invoice_event("invoice.payment_failed", cus, invoice_id, T0 + 2),
    )
    await app.state.lifecycle.forwarder.drained()

    async def applied() -> bool:
        customer = (await http.get(f"/v1/customers/{cus}", headers=AUTH)).json()
        return bool(customer.get("ltv_cents") == 4900)

    await eventually(applied, "the paid invoice")
    entity = dev_env.client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(cus)
    )
    await acted_on(http, entity, cus, "bo@example.com", events=3)
    assert (await entity.query(CustomerWorkflow.state)).lifecycles == []
    with pytest.raises(RPCError) as never_started:
        await dev_env.client.get_workflow_handle(f"dunning-{invoice_id}").describe()
    assert never_started.value.status == RPCStatusCode.NOT_FOUND
    log = (await http.get(f"/v1/customers/{cus}/messages", headers=AUTH)).json()
    assert log.get("messages", []) == []


async def test_payment_after_the_failure_records_the_recovery(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment, sqlite_url: str
) -> None:
    _, http = stack
    cus, invoice_id = unique_customer_id(), f"in_{uuid.uuid4().hex[:14]}"
    await post(http, customer_event(cus, "cy@example.com", created=T0, type_="customer.created"))
    await post(http, subscription_event(cus, created=T0 + 1, status="past_due"))
    await post(
        http,
        invoice_event("invoice.payment_failed", cus, invoice_id, T0 + 2),
    )
    await eventually(lambda: _has_lifecycle(dev_env.client, cus), "the dunning")
    paid = invoice_event("invoice.paid", cus, invoice_id, T0 + 60, amount_paid=4900)
    await post(http, paid)
    handle = dev_env.client.get_workflow_handle(f"dunning-{invoice_id}")
    assert (await handle.result())["outcome"] == "recovered"

    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        [conversion] = list((await session.execute(select(Conversion))).scalars())
    await engine.dispose()
    assert (conversion.kind, conversion.stripe_event_id, conversion.invoice_id) == (
        "recovered",
        paid["id"],
        invoice_id,
    )
    assert (conversion.amount_cents, conversion.mrr_delta_cents) == (4900, 4900)


async def _has_lifecycle(client: Client, cus: str) -> bool:
    return bool(await lifecycle_ids(client, cus))


async def test_payment_action_required_asks_for_confirmation_and_support_can_stop_it(
    stack: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    _, http = stack
    cus, invoice_id = unique_customer_id(), f"in_{uuid.uuid4().hex[:14]}"
    await post(http, customer_event(cus, "di@example.com", created=T0, type_="customer.created"))
    await post(
        http,
        invoice_event("invoice.payment_action_required", cus, invoice_id, T0 + 2),
    )

    async def asked() -> bool:
        log = (await http.get(f"/v1/customers/{cus}/messages", headers=AUTH)).json()
        return [m["template"] for m in log.get("messages", [])] == ["payment_action/confirm"]

    await eventually(asked, "the confirmation email")
    stop = await http.post(
        f"/v1/customers/{cus}/dunning/cancel", json={"reason": "confirmed by phone"}, headers=AUTH
    )
    assert stop.json() == {"cancelled": [f"payment-action-{invoice_id}"]}
    handle = dev_env.client.get_workflow_handle(f"payment-action-{invoice_id}")
    assert (await handle.result())["outcome"] == "cancelled"
