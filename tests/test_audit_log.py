"""The audit log: every mutating `/v1` call and dashboard form of an identified key writes
one `audit_log` row (who, what, when, the answer), refusals included; reads, unidentified
callers and the customers' and Stripe's routes write none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.api.deps import key_fingerprint
from stripe_lifecycle.settings import hashed_key
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import AuditEntry

from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api

SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Rig:
    http: httpx.AsyncClient
    sessionmaker: SessionMaker

    async def rows(self) -> list[AuditEntry]:
        async with self.sessionmaker() as session:
            found = await session.execute(select(AuditEntry).order_by(col(AuditEntry.id)))
            return list(found.scalars())


@pytest.fixture
async def rig(database_url: str, task_queue: str) -> AsyncIterator[Rig]:
    # Nothing listens on the Temporal address: calls that reach Temporal fail fast (503).
    settings = app_settings(
        database_url,
        f"127.0.0.1:{free_port()}",
        task_queue,
        api_keys=f"support:{SUPPORT_KEY},admin:{hashed_key(ADMIN_KEY)}",
    )
    engine = create_engine(database_url)
    try:
        async with running_api(settings) as (_, http):
            yield Rig(http, create_sessionmaker(engine))
    finally:
        await engine.dispose()


async def test_each_mutating_call_writes_one_row_with_who_what_and_the_answer(rig: Rig) -> None:
    http = rig.http
    before = datetime.now(UTC)
    calls = [
        (
            await http.post(
                "/v1/customers/cus_a1/usage", json={"metric": "seats", "value": 3}, headers=ADMIN
            ),
            (
                "admin",
                ADMIN_KEY,
                "POST",
                "/v1/customers/{customer_id}/usage",
                {"customer_id": "cus_a1"},
            ),
        ),
        # Refused for the role: recorded, who tried what.
        (
            await http.post(
                "/v1/customers/cus_a1/usage", json={"metric": "seats", "value": 4}, headers=SUPPORT
            ),
            (
                "support",
                SUPPORT_KEY,
                "POST",
                "/v1/customers/{customer_id}/usage",
                {"customer_id": "cus_a1"},
            ),
        ),
        (
            await http.post(
                "/v1/customers/cus_b2/dunning/cancel", json={"reason": "asked"}, headers=SUPPORT
            ),
            (
                "support",
                SUPPORT_KEY,
                "POST",
                "/v1/customers/{customer_id}/dunning/cancel",
                {"customer_id": "cus_b2"},
            ),
        ),
        (
            await http.post("/v1/sync", headers=SUPPORT),
            ("support", SUPPORT_KEY, "POST", "/v1/sync", {}),
        ),
        (
            await http.post("/v1/sync", json={}, headers=ADMIN),
            ("admin", ADMIN_KEY, "POST", "/v1/sync", {}),
        ),
        (
            await http.post("/v1/inbox/evt_c3/retry", headers=ADMIN),
            ("admin", ADMIN_KEY, "POST", "/v1/inbox/{event_id}/retry", {"event_id": "evt_c3"}),
        ),
        (
            await http.delete("/v1/customers/cus_d4", headers=SUPPORT),
            (
                "support",
                SUPPORT_KEY,
                "DELETE",
                "/v1/customers/{customer_id}",
                {"customer_id": "cus_d4"},
            ),
        ),
        (
            await http.delete("/v1/customers/cus_d4", headers=ADMIN),
            (
                "admin",
                ADMIN_KEY,
                "DELETE",
                "/v1/customers/{customer_id}",
                {"customer_id": "cus_d4"},
            ),
        ),
    ]
    rows = await rig.rows()
    assert len(rows) == len(calls)
    for row, (response, (role, key, method, route, ids)) in zip(rows, calls, strict=True):
        assert (row.actor_role, row.actor_key_id, row.via) == (role, key_fingerprint(key), "api")
        assert (row.method, row.route, row.path_ids) == (method, route, ids)
        assert row.customer_id == ids.get("customer_id")
        assert row.status_code == response.status_code
        assert before <= row.at <= datetime.now(UTC) + timedelta(seconds=1)
    # Done, refused (403) and failed alike: usage stored (Temporal down: signalled later),
    # usage refused, cancel of an unknown customer, sync refused, sync with Temporal down,
    # retry of an unknown event, erasure refused, erasure of an unknown customer.
    assert [row.status_code for row in rows] == [202, 403, 404, 403, 503, 404, 403, 404]
    # The key itself is nowhere in the log.
    for row in rows:
        assert SUPPORT_KEY not in row.model_dump_json() and ADMIN_KEY not in row.model_dump_json()


async def test_reads_strangers_and_customer_routes_write_nothing(rig: Rig) -> None:
    http = rig.http
    assert (await http.get("/v1/segments", headers=SUPPORT)).status_code == 200
    assert (await http.get("/v1/customers/cus_a1", headers=ADMIN)).status_code == 404
    # No key or a wrong one: a 401 with no "who" to record.
    assert (await http.post("/v1/sync")).status_code == 401
    assert (
        await http.post("/v1/sync", headers={"Authorization": "Bearer sk_x"})
    ).status_code == 401
    # Stripe's and the customers' own routes, with a key or not.
    assert (await http.post("/webhooks/stripe", content=b"{}", headers=ADMIN)).status_code >= 400
    assert (await http.post("/u/not-a-token", headers=ADMIN)).status_code >= 400
    assert (await http.post("/survey/not-a-token", headers=ADMIN)).status_code >= 400
    # A wrong key at the login form.
    assert (await http.post("/dashboard/login", data={"key": "sk_x"})).status_code == 401
    assert await rig.rows() == []


async def test_a_path_id_that_is_not_an_id_is_not_copied(rig: Rig) -> None:
    huge = "cus_" + "x" * 10_000
    refused = await rig.http.post(
        f"/v1/customers/{huge}/usage", json={"metric": "seats", "value": 1}, headers=ADMIN
    )
    assert refused.status_code == 422
    (row,) = await rig.rows()
    assert (row.route, row.path_ids, row.customer_id) == (
        "/v1/customers/{customer_id}/usage",
        {"customer_id": "[invalid]"},
        None,
    )


async def test_dashboard_forms_are_recorded_as_the_dashboard(rig: Rig) -> None:
    http = rig.http
    signed_in = await http.post("/dashboard/login", data={"key": ADMIN_KEY})
    assert signed_in.status_code == 303
    # A form posted with the session cookie and no CSRF token: refused, and recorded.
    forged = await http.post(
        "/dashboard/customers/cus_e5/dunning/cancel", data={"reason": "asked", "csrf": "x"}
    )
    assert forged.status_code == 403
    http.cookies.clear()
    # A script with a Bearer key needs no CSRF token (Temporal is down: sent back with why).
    scripted = await http.post(
        "/dashboard/customers/cus_e5/dunning/cancel", data={"reason": "asked"}, headers=SUPPORT
    )
    assert scripted.status_code == 303
    # Nobody signed in: sent to the login page, nothing to record.
    assert (await http.post("/dashboard/customers/cus_e5/dunning/cancel")).status_code == 303
    rows = await rig.rows()
    assert [
        (r.actor_role, r.actor_key_id, r.via, r.method, r.route, r.customer_id, r.status_code)
        for r in rows
    ] == [
        ("admin", key_fingerprint(ADMIN_KEY), "dashboard", "POST", "/dashboard/login", None, 303),
        (
            "admin",
            key_fingerprint(ADMIN_KEY),
            "dashboard",
            "POST",
            "/dashboard/customers/{customer_id}/dunning/cancel",
            "cus_e5",
            403,
        ),
        (
            "support",
            key_fingerprint(SUPPORT_KEY),
            "dashboard",
            "POST",
            "/dashboard/customers/{customer_id}/dunning/cancel",
            "cus_e5",
            303,
        ),
    ]
