"""Deleted and erased customers end to end: signed webhooks through the real API, the
customer workflow and its lifecycles on the dev server, the erasure endpoint.

A deleted customer (often a data-erasure request) gets no mail again; erasing one leaves
no email or name anywhere the database or Temporal keeps it, and keeps the money."""

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlmodel import col
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.storage.models import Message, SupportAction
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from . import corpus
from .conftest import ADMIN_KEY, SUPPORT_KEY, running_stack
from .events import customer_event, subscription_event, unique_customer_id
from .signing import post_webhook as post
from .workflow_helpers import DAY, eventually

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
NAME = "Grace Hopper"


def named(event: dict[str, Any], email: str) -> dict[str, Any]:
    event["data"]["object"].update(email=email, name=NAME)
    return event


class Customer:
    def __init__(self, client: Client, http: httpx.AsyncClient) -> None:
        self.id = unique_customer_id()
        self.sub = f"sub_{self.id[4:]}"
        self.http = http
        self.client = client
        self.entity = client.get_workflow_handle_for(
            CustomerWorkflow.run, ids.customer_workflow_id(self.id)
        )
        self.now = int(time.time())
        # Unique, so that searching Temporal for it finds only this customer.
        self.email = f"grace.{self.id[5:]}@example.com"

    async def trialing(self) -> None:
        """Created, with a trial whose welcome email goes out."""
        await post(
            self.http,
            named(
                customer_event(
                    self.id, self.email, created=self.now - 10, type_="customer.created"
                ),
                self.email,
            ),
        )
        await post(
            self.http,
            subscription_event(
                self.id,
                created=self.now - 9,
                sub_id=self.sub,
                status="trialing",
                type_="customer.subscription.created",
                trial_end=self.now + 14 * DAY,
            ),
        )
        await self.wait_for_lifecycle(ids.trial_id(self.sub), "running")

    async def wait_for_lifecycle(self, workflow_id: str, status: str) -> None:
        async def reached() -> bool:
            try:
                refs = await self.entity.query(CustomerWorkflow.lifecycles)
            except RPCError as exc:
                # The forwarder has not started the customer's workflow yet.
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return False
                raise
            return any(r.workflow_id == workflow_id and r.status == status for r in refs)

        await eventually(reached, f"{workflow_id} {status}")

    async def acted_on(self, events: int) -> None:
        """Until the workflow has applied `events` events and acted on them (it takes the
        next batch only once it has acted on the last)."""

        async def applied(count: int) -> bool:
            return (await self.entity.query(CustomerWorkflow.state)).events_applied >= count

        await eventually(lambda: applied(events), f"{events} events applied")
        marker = customer_event(
            self.id, self.email, created=self.now + 500, type_="customer.updated"
        )
        await post(self.http, marker)
        await eventually(lambda: applied(events + 1), "the marker applied")


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # With the email indexed (off by default): erasure takes it out of the index too.
    async with running_stack(dev_env, sqlite_url, task_queue, index_email=True) as pair:
        yield pair


@pytest.fixture
def customer(dev_env: WorkflowEnvironment, stack: tuple[FastAPI, httpx.AsyncClient]) -> Customer:
    return Customer(dev_env.client, stack[1])


async def test_a_deleted_customer_ends_its_lifecycles_and_gets_no_win_back(
    customer: Customer,
) -> None:
    await customer.trialing()
    await post(
        customer.http,
        customer_event(
            customer.id, customer.email, created=customer.now - 5, type_="customer.deleted"
        ),
    )
    await customer.wait_for_lifecycle(ids.trial_id(customer.sub), "customer_deleted")
    # Stripe deletes the customer's subscriptions right after.
    await post(
        customer.http,
        subscription_event(
            customer.id,
            created=customer.now - 4,
            sub_id=customer.sub,
            status="canceled",
            type_="customer.subscription.deleted",
        ),
    )
    await customer.acted_on(4)
    refs = await customer.entity.query(CustomerWorkflow.lifecycles)
    assert [r.workflow_id for r in refs] == [ids.trial_id(customer.sub)]
    with pytest.raises(RPCError) as missing:
        await customer.client.get_workflow_handle(
            ids.winback_id(customer.id, customer.sub)
        ).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND


async def database_text(app: FastAPI) -> str:
    """Every row of every table, as text: where an email or name could hide."""
    async with app.state.lifecycle.sessionmaker() as session:
        tables = [
            row[0]
            for row in await session.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'table'")
            )
        ]
        dump = []
        for table in tables:
            rows = await session.execute(text(f'SELECT * FROM "{table}"'))
            dump += [repr(tuple(row)) for row in rows]
    return "\n".join(dump)


async def test_erasure_leaves_no_email_or_name_in_the_database_or_temporal_and_keeps_money(
    dev_env: WorkflowEnvironment,
    stack: tuple[FastAPI, httpx.AsyncClient],
    customer: Customer,
) -> None:
    app, http = stack
    await customer.trialing()
    paid = corpus.invoice_event(
        "invoice.paid",
        "clover",
        customer.id,
        created=customer.now - 8,
        id=f"in_{customer.id[4:]}",
        subscription=customer.sub,
        billing_reason="subscription_create",
        amount_due=900,
        amount_paid=900,
        customer_email=customer.email,
        customer_name=NAME,
    )
    await post(http, paid)
    await customer.acted_on(3)

    async def welcomed() -> bool:
        async with app.state.lifecycle.sessionmaker() as session:
            rows = await session.execute(
                select(Message).where(col(Message.customer_id) == customer.id)
            )
            return any(m.template == "trial/welcome" and m.html for m in rows.scalars())

    await eventually(welcomed, "the trial's welcome email")
    assert customer.email in await database_text(app)
    before = (await http.get(f"/v1/customers/{customer.id}", headers=SUPPORT)).json()

    # Support may not erase; an admin may.
    assert (await http.delete(f"/v1/customers/{customer.id}", headers=SUPPORT)).status_code == 403
    response = await http.delete(f"/v1/customers/{customer.id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    erasure = response.json()
    assert erasure["ended"] == [ids.trial_id(customer.sub)]
    assert erasure["messages_erased"] >= 1

    dump = await database_text(app)
    assert customer.email not in dump and NAME not in dump
    after = (await http.get(f"/v1/customers/{customer.id}", headers=SUPPORT)).json()
    assert (after["email"], after["name"]) == (None, None)
    # The money stays: reports keep adding up.
    assert (after["ltv_cents"], after["currency"]) == (before["ltv_cents"], before["currency"])
    async with app.state.lifecycle.sessionmaker() as session:
        [audit] = (
            await session.execute(
                select(SupportAction).where(col(SupportAction.customer_id) == customer.id)
            )
        ).scalars()
    assert (audit.action, audit.actor.startswith("admin key")) == ("customer.erase", True)

    # Temporal: the entity runs on with no personal data, in a history that holds none;
    # the runs that held it are gone, and no search attribute names the email.
    state = await customer.entity.query(CustomerWorkflow.state)
    assert (state.email, state.name, state.deleted) == (None, None, True)
    history = await customer.entity.fetch_history()
    assert customer.email not in history.to_json() and NAME not in history.to_json()
    # The runs whose histories held the address are deleted (Temporal does it in the
    # background): the trial's, and the customer workflow's run from before the erasure.
    deleted = {tuple(run.split("/")) for run in erasure["deleted_runs"]}
    assert {workflow_id for workflow_id, _ in deleted} == {
        ids.trial_id(customer.sub),
        customer.entity.id,
    }
    assert (await customer.entity.describe()).run_id not in {run for _, run in deleted}

    async def unindexed() -> bool:
        found = dev_env.client.list_workflows(
            f"{contract.CUSTOMER_EMAIL.name} = {contract.visibility_literal(customer.email)}"
        )
        return [e async for e in found] == []

    await eventually(unindexed, "no workflow indexed by the erased email")

    # What Stripe still sends about the customer brings no personal data back.
    await post(
        http,
        named(
            customer_event(customer.id, customer.email, created=customer.now + 100), customer.email
        ),
    )
    await customer.acted_on(5)
    assert (await customer.entity.query(CustomerWorkflow.state)).email is None


async def test_erasing_an_unknown_customer_is_a_404(
    stack: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = stack
    response = await http.delete(f"/v1/customers/{unique_customer_id()}", headers=ADMIN)
    assert response.status_code == 404
