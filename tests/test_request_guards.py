"""What is answered before a request body is read: 413 for a body over
`LIFECYCLE_MAX_BODY_BYTES` on every route (declared or streamed), and 401 for a `/v1`
request without a valid key whatever its body (FastAPI parses a body before it solves the
route's dependencies)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.storage.db import create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import WebhookEvent

from .conftest import SUPPORT_KEY, app_settings, running_api, serving, temporal_address
from .events import customer_event, unique_customer_id
from .signing import stripe_signature

MIB = 1024 * 1024
T0 = 1_790_000_000


async def stored_events(database_url: str) -> int:
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session:
        count = (await session.execute(select(func.count()).select_from(WebhookEvent))).scalar()
    await engine.dispose()
    return int(count or 0)


def oversized_event() -> bytes:
    """A validly signed Stripe event just over 1 MiB (a huge metadata value)."""
    event = customer_event(unique_customer_id(), "big@example.com", created=T0)
    event["data"]["object"]["metadata"] = {"blob": "x" * MIB}
    return json.dumps(event).encode()


async def chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_bodies_over_the_limit_are_413_before_they_are_read_over_http(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    settings = app_settings(sqlite_url, temporal_address(dev_env), task_queue)
    assert settings.max_body_bytes == MIB
    body = oversized_event()
    headers = {"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"}
    async with serving(settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        declared = await http.post("/webhooks/stripe", content=body, headers=headers)
        assert declared.status_code == 413, declared.text
        assert "LIFECYCLE_MAX_BODY_BYTES" in declared.json()["detail"]
        # Chunked: no Content-Length, so the streamed chunks are counted.
        streamed = await http.post("/webhooks/stripe", content=chunks(body), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413, streamed.text
        # Other routes alike (a route that never reads a streamed body answers without it).
        key = {"Authorization": f"Bearer {SUPPORT_KEY}"}
        for path in ("/v1/customers/cus_1/dunning/cancel", "/webhooks/postmark"):
            answer = await http.post(path, content=chunks(b" " * (MIB + 1)), headers=key)
            assert answer.status_code == 413, (path, answer.text)
        # Under the limit all is as before.
        small = customer_event(unique_customer_id(), "small@example.com", created=T0)
        small_body = json.dumps(small).encode()
        ok = await http.post(
            "/webhooks/stripe",
            content=chunks(small_body, 512),
            headers={"Stripe-Signature": stripe_signature(small_body)},
        )
        assert ok.status_code == 200, ok.text
    assert await stored_events(sqlite_url) == 1


async def test_the_limit_is_a_setting(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    settings = app_settings(sqlite_url, temporal_address(dev_env), task_queue, max_body_bytes=2048)
    event = customer_event(unique_customer_id(), "a@example.com", created=T0)
    event["data"]["object"]["metadata"] = {"note": "y" * 4096}
    body = json.dumps(event).encode()
    async with running_api(settings) as (_, http):
        for content in (body, chunks(body, 1000)):
            response = await http.post(
                "/webhooks/stripe",
                content=content,
                headers={"Stripe-Signature": stripe_signature(body)},
            )
            assert response.status_code == 413, response.text
    assert await stored_events(sqlite_url) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/customers/cus_1/dunning/cancel",
        "/v1/customers/cus_1/usage",
        "/v1/customers/cus_1/cancellation-feedback",
        "/v1/templates/dunning/payment-failed/preview",
        "/v1/sync",
    ],
)
async def test_an_unauthenticated_post_is_401_whatever_its_body(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str, path: str
) -> None:
    settings = app_settings(sqlite_url, temporal_address(dev_env), task_queue)
    async with running_api(settings) as (_, http):
        for body in (b"{not json", b"[]", b'{"reason": 5}', b""):
            for headers in (
                {},
                {"Authorization": "Bearer wrong-key"},
                {"Authorization": "Basic x"},
            ):
                response = await http.post(
                    path, content=body, headers={**headers, "Content-Type": "application/json"}
                )
                assert response.status_code == 401, (path, body, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
        # With a valid key the body is read and judged as before.
        judged = await http.post(
            path,
            content=b"{not json",
            headers={"Authorization": f"Bearer {SUPPORT_KEY}", "Content-Type": "application/json"},
        )
        assert judged.status_code in (403, 422), judged.text
