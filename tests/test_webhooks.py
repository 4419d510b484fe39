"""`POST /webhooks/stripe` and the `/v1` API through the real app, on SQLite and PostgreSQL,
delivering to the Temporal dev server with a real worker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.api.deps import AdminKey
from stripe_lifecycle.domain import ids
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent
from stripe_lifecycle.workflows.customer import CustomerWorkflow

from . import corpus
from .conftest import (
    ADMIN_KEY,
    SUPPORT_KEY,
    app_settings,
    running_api,
    running_stack,
    temporal_address,
)
from .events import customer_event, subscription_event, unique_customer_id
from .signing import WEBHOOK_SECRET, signed, stripe_signature

T0 = 1_790_000_000


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment, database_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_stack(dev_env, database_url, task_queue) as pair:
        yield pair


async def inbox(app: FastAPI) -> list[WebhookEvent]:
    async with app.state.lifecycle.sessionmaker() as session:
        rows = await session.execute(select(WebhookEvent).order_by(col(WebhookEvent.id)))
        return list(rows.scalars())


async def post_event(http: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    body, headers = signed(event)
    return await http.post("/webhooks/stripe", content=body, headers=headers)


async def test_signed_event_is_stored_delivered_and_served(
    api: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    app, http = api
    cus = unique_customer_id()
    created = customer_event(cus, "mia@example.com", created=T0, type_="customer.created")
    trial = corpus.event("customer.subscription.created.trialing", "clover", cus, created=T0 + 5)
    for event in (created, trial):
        response = await post_event(http, event)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "received": True,
            "event_id": event["id"],
            "duplicate": False,
            "status": "pending",
        }
    await app.state.lifecycle.forwarder.drained()
    rows = await inbox(app)
    assert [(r.event_id, r.status, r.customer_id) for r in rows] == [
        (created["id"], InboxStatus.FORWARDED, cus),
        (trial["id"], InboxStatus.FORWARDED, cus),
    ]
    assert rows[1].payload == trial
    assert rows[1].forwarded_at is not None and rows[1].forwarded_at.tzinfo is not None

    handle = dev_env.client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(cus)
    )
    for _ in range(100):
        customer = await http.get(
            f"/v1/customers/{cus}", headers={"Authorization": f"Bearer {SUPPORT_KEY}"}
        )
        if customer.status_code == 200 and customer.json()["status"] == "trialing":
            break
        await asyncio.sleep(0.05)
    body = customer.json()
    assert customer.status_code == 200, customer.text
    assert (body["email"], body["status"], body["mrr_cents"], body["lifecycles"]) == (
        "mia@example.com",
        "trialing",
        0,
        [],
    )
    snap = await handle.query(CustomerWorkflow.state)
    assert snap.events_applied == 2


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "stale timestamp", "garbage header", "missing header", "tampered body"],
)
async def test_bad_signature_is_400_and_stores_nothing(
    api: tuple[FastAPI, httpx.AsyncClient], case: str
) -> None:
    app, http = api
    event = customer_event(unique_customer_id(), "x@example.com", created=T0)
    body = json.dumps(event).encode()
    headers = {
        "wrong secret": {"Stripe-Signature": stripe_signature(body, "whsec_other")},
        "stale timestamp": {
            "Stripe-Signature": stripe_signature(body, WEBHOOK_SECRET, int(time.time()) - 301)
        },
        "garbage header": {"Stripe-Signature": "t=abc,v1=zzz"},
        "missing header": {},
        "tampered body": {"Stripe-Signature": stripe_signature(body)},
    }[case]
    if case == "tampered body":
        body = body.replace(b"x@example.com", b"y@example.com")
    response = await http.post("/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert await inbox(app) == []


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"id": "evt_1", "type": "x"}', b'{"object": "customer"}'],
)
async def test_signed_garbage_is_400_and_stores_nothing(
    api: tuple[FastAPI, httpx.AsyncClient], body: bytes
) -> None:
    app, http = api
    response = await http.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_signature(body)}
    )
    assert response.status_code == 400
    assert await inbox(app) == []


async def test_duplicate_delivery_is_acknowledged_once(
    api: tuple[FastAPI, httpx.AsyncClient], dev_env: WorkflowEnvironment
) -> None:
    app, http = api
    cus = unique_customer_id()
    event = subscription_event(cus, created=T0)
    answers = [await post_event(http, event) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["duplicate"] for a in answers] == [False, True, True]
    await app.state.lifecycle.forwarder.drained()
    assert len(await inbox(app)) == 1
    handle = dev_env.client.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(cus)
    )
    assert (await handle.query(CustomerWorkflow.state)).events_applied == 1


async def test_event_without_customer_is_recorded_and_acknowledged(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    price = corpus.load("price.created", "clover")["data"]["object"]
    event = {
        "id": "evt_price_created_1",
        "object": "event",
        "type": "price.created",
        "created": T0,
        "livemode": False,
        "data": {"object": price},
    }
    response = await post_event(http, event)
    assert response.status_code == 200
    assert response.json()["status"] == InboxStatus.IGNORED
    [row] = await inbox(app)
    assert (row.type, row.status, row.customer_id) == ("price.created", "ignored", None)


async def test_unconfigured_secret_refuses_and_stores_nothing(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    settings = app_settings(
        sqlite_url, temporal_address(dev_env), task_queue, stripe_webhook_secret=None
    )
    async with running_api(settings) as (app, http):
        response = await post_event(
            http, customer_event(unique_customer_id(), "a@b.co", created=T0)
        )
        assert response.status_code == 503
        assert "LIFECYCLE_STRIPE_WEBHOOK_SECRET" in response.json()["detail"]
        assert await inbox(app) == []


async def test_api_keys_and_roles(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = api

    @app.get("/v1/admin-only-probe")
    async def admin_only(caller: AdminKey) -> dict[str, str]:
        return {"role": caller.role}

    unknown = "/v1/customers/cus_does_not_exist"
    assert (await http.get(unknown)).status_code == 401
    assert (await http.get(unknown, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (
        await http.get(unknown, headers={"Authorization": f"Basic {SUPPORT_KEY}"})
    ).status_code == 401
    for key in (SUPPORT_KEY, ADMIN_KEY):
        response = await http.get(unknown, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 404
    probe = "/v1/admin-only-probe"
    assert (
        await http.get(probe, headers={"Authorization": f"Bearer {SUPPORT_KEY}"})
    ).status_code == 403
    admin = await http.get(probe, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.json() == {"role": "admin"}


async def test_health_and_readiness(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, http = api
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
    docs = await http.get("/openapi.json")
    assert "/webhooks/stripe" in docs.json()["paths"]
