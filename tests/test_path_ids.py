"""Ids in paths are checked before anything is looked up or stored: a value that cannot be
a Stripe id (customer, event), one of our message ids or a segment name answers 422 and
names the parameter, on every `/v1` and dashboard route that takes one. A 10 KiB customer
id was once stored by the cancellation-feedback API and then broke every answer about it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from stripe_lifecycle.storage.models import CancellationFeedback

from .api_helpers import DECIDED_PREFIXES
from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}
TEN_KIB = "cus_" + "x" * 10 * 1024
# Not ids: what they would smuggle in, a quote, a space, a dot, a non-ASCII letter.
NOT_IDS = [TEN_KIB, "cus_a'b", "cus a", "cus_a.b", "cus_ä", "cus_" + "x" * 252]

# Template names are paths of template files (`dunning/payment-failed`): the renderer
# checks their shape (404), and they reach neither the database nor Temporal.
NOT_ID_PARAMS = {"name:path"}


@pytest.fixture
async def api(
    database_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Nothing listens on the Temporal address: nothing here may reach Temporal.
    settings = app_settings(database_url, f"127.0.0.1:{free_port()}", task_queue)
    async with running_api(settings) as running:
        yield running


async def feedback_rows(app: FastAPI) -> int:
    async with app.state.lifecycle.sessionmaker() as session:
        count: int = (
            await session.execute(select(func.count()).select_from(CancellationFeedback))
        ).scalar_one()
        return count


def id_routes(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, parameter) for every id a `/v1` or dashboard path takes."""
    return sorted(
        (method, route.path, param)
        for route in iter_route_contexts(app.routes)
        if route.path is not None and route.path.startswith(DECIDED_PREFIXES)
        for method in route.methods or ()
        if method != "HEAD"
        for param in re.findall(r"\{([^}]+)\}", route.path)
        if param not in NOT_ID_PARAMS
    )


def with_value(path: str, param: str, value: str) -> str:
    """The path with `value` for `param` and a valid id for any other parameter."""
    return re.sub(r"\{([^}]+)\}", lambda m: value if m[1] == param else "ok", path)


async def test_feedback_for_a_customer_id_that_cannot_be_one_is_refused_and_not_stored(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    for customer_id in NOT_IDS:
        path = f"/v1/customers/{customer_id}/cancellation-feedback"
        posted = await http.post(path, json={"reason": "unused"}, headers=SUPPORT)
        assert posted.status_code == 422, posted.text
        assert [e["loc"] for e in posted.json()["detail"]] == [["path", "customer_id"]]
        listed = await http.get(path, headers=SUPPORT)
        assert listed.status_code == 422, listed.text
    # A subscription id is held to the same shape and to its column's length.
    for subscription_id in ("sub_" + "x" * 10 * 1024, "sub_a b"):
        posted = await http.post(
            "/v1/customers/cus_Valid1/cancellation-feedback",
            json={"reason": "unused", "subscription_id": subscription_id},
            headers=SUPPORT,
        )
        assert posted.status_code == 422, posted.text
        assert [e["loc"] for e in posted.json()["detail"]] == [["body", "subscription_id"]]
    assert await feedback_rows(app) == 0

    # The longest id there can be is stored and read back.
    longest = "cus_" + "x" * 251
    path = f"/v1/customers/{longest}/cancellation-feedback"
    posted = await http.post(path, json={"reason": "unused"}, headers=SUPPORT)
    assert posted.status_code == 201, posted.text
    listed = await http.get(path, headers=SUPPORT)
    assert listed.status_code == 200
    assert [f["customer_id"] for f in listed.json()["feedback"]] == [longest]


async def test_every_id_in_a_path_is_checked_before_it_is_used(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    routes = id_routes(app)
    # The customer, message and segment routes at least; others (event ids) as they come.
    assert {param for _, _, param in routes} >= {"customer_id", "message_id", "name"}
    wrong = []
    for method, path, param in routes:
        for value in NOT_IDS:
            concrete = with_value(path, param, value)
            # The admin key may call every route: what is refused is the id.
            response = await http.request(method, concrete, headers=ADMIN)
            refused_for = (
                [e["loc"] for e in response.json()["detail"]] if response.status_code == 422 else []
            )
            if ["path", param] not in refused_for:
                wrong.append(f"{method} {path} {value[:12]!r}: {response.status_code}")
    assert wrong == []


async def test_ids_of_the_right_shape_still_reach_the_routes(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, http = api
    for path in (
        "/v1/customers/cus_Nobody9",
        "/v1/customers/cus_Nobody9/messages",
        "/v1/customers/cus_Nobody9/segments",
        "/v1/messages/5b0f3c1e-8a4d-4c0e-9a51-2f6f0c3d7e21",
        "/v1/segments/no-such-segment/customers",
    ):
        response = await http.get(path, headers=SUPPORT)
        assert response.status_code == 404, (path, response.text)
