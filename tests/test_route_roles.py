"""Every route of the app needs the role this file's table gives it, and the README's API
table says the same.

The table is the decision: a new route under `/v1` or `/dashboard` fails
`test_every_api_and_dashboard_route_has_a_decided_role` until someone writes down who may
call it. Webhooks authenticate themselves (Stripe's signature, Postmark's basic auth),
the tracking, unsubscribe and survey pages carry signed tokens, and health and the API
docs are public."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from stripe_lifecycle.api.app import create_app
from stripe_lifecycle.api.sessions import SESSION_COOKIE

from .api_helpers import DECIDED_PREFIXES
from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api

# A `support` or `admin` key; no key or a wrong one: 401.
SUPPORT = "support"
# An `admin` key; a `support` key: 403.
ADMIN = "admin"
# A dashboard page: a session cookie or a Bearer key of either role; nobody (or a session
# that does not open) is sent to the login page, a wrong Bearer key is a 401.
PAGE = "dashboard page"
# Anyone: health, the API docs, the login form (it takes the key) and logout.
PUBLIC = "public"
# Authenticated by the route itself: webhook signatures, signed link tokens.
OWN_AUTH = "own auth"
# The codec server: a `support` or `admin` key, or a session cookie sent from the Temporal
# UI's origin; nobody else (a 401, never the login page: the Temporal UI calls it).
CODEC = "codec"

ROUTE_ROLES: dict[tuple[str, str], str] = {
    # Support's daily work: reading customers, messages, reports and segments, stopping
    # a dunning, recording why a customer cancelled, previewing templates, following a sync.
    ("GET", "/v1/customers"): SUPPORT,
    ("GET", "/v1/customers/{customer_id}"): SUPPORT,
    ("GET", "/v1/customers/{customer_id}/messages"): SUPPORT,
    ("GET", "/v1/messages/{message_id}"): SUPPORT,
    ("POST", "/v1/customers/{customer_id}/dunning/cancel"): SUPPORT,
    ("POST", "/v1/customers/{customer_id}/cancellation-feedback"): SUPPORT,
    ("GET", "/v1/customers/{customer_id}/cancellation-feedback"): SUPPORT,
    ("GET", "/v1/customers/{customer_id}/segments"): SUPPORT,
    ("GET", "/v1/segments"): SUPPORT,
    ("GET", "/v1/segments/{name}/customers"): SUPPORT,
    ("GET", "/v1/reports/attribution"): SUPPORT,
    ("GET", "/v1/reports/lift"): SUPPORT,
    ("GET", "/v1/templates"): SUPPORT,
    ("GET", "/v1/templates/{name:path}/preview"): SUPPORT,
    # Renders the posted event; stores nothing.
    ("POST", "/v1/templates/{name:path}/preview"): SUPPORT,
    ("GET", "/v1/sync"): SUPPORT,
    ("GET", "/v1/inbox/quarantined"): SUPPORT,
    # Beyond support: erasing personal data, starting a sync of the whole Stripe account,
    # writing the product usage segments are computed from (the app's backend does).
    ("DELETE", "/v1/customers/{customer_id}"): ADMIN,
    ("POST", "/v1/sync"): ADMIN,
    ("POST", "/v1/customers/{customer_id}/usage"): ADMIN,
    ("POST", "/v1/inbox/{event_id}/retry"): ADMIN,
    ("DELETE", "/v1/inbox/{event_id}"): ADMIN,
    # Revoking a customer's or a message's email links (a leaked or forwarded email).
    ("POST", "/v1/customers/{customer_id}/links/revoke"): ADMIN,
    ("POST", "/v1/messages/{message_id}/links/revoke"): ADMIN,
    # The codec server (decrypting payloads for the Temporal Web UI and CLI): a key, or a
    # dashboard session sent from the Temporal UI's origin (test_payload_codec.py).
    ("POST", "/dashboard/codec/encode"): CODEC,
    ("POST", "/dashboard/codec/decode"): CODEC,
    # The dashboard: support's pages and its Cancel button.
    ("GET", "/dashboard"): PAGE,
    ("GET", "/dashboard/lift"): PAGE,
    ("GET", "/dashboard/segments"): PAGE,
    ("GET", "/dashboard/segments/{name}"): PAGE,
    ("POST", "/dashboard/customers/{customer_id}/dunning/cancel"): PAGE,
    ("GET", "/dashboard/login"): PUBLIC,
    ("POST", "/dashboard/login"): PUBLIC,
    ("POST", "/dashboard/logout"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("POST", "/webhooks/stripe"): OWN_AUTH,
    ("POST", "/webhooks/postmark"): OWN_AUTH,
    ("GET", "/t/{token}"): OWN_AUTH,
    ("GET", "/survey/{token}"): OWN_AUTH,
    ("POST", "/survey/{token}"): OWN_AUTH,
    ("GET", "/u/{token}"): OWN_AUTH,
    ("POST", "/u/{token}"): OWN_AUTH,
    ("POST", "/u/{token}/preferences"): OWN_AUTH,
}

# Where every route must have a decision; routes elsewhere are checked when listed.

WRONG_KEY = "sk_not_a_key_of_this_installation"
KEYS = {SUPPORT: SUPPORT_KEY, ADMIN: ADMIN_KEY}
README = Path(__file__).parents[1] / "README.md"


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if route.path is not None
        for method in route.methods or ()
        if method != "HEAD"
    }


def concrete(path: str) -> str:
    # Valid as every kind of id (customer, message, event, segment name): the role is
    # checked, not the id.
    return re.sub(r"\{[^}]+\}", "rolecheck", path)


@pytest.fixture
async def api(sqlite_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    # Nothing listens on the Temporal address: a call that reaches Temporal fails fast.
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", task_queue)
    async with running_api(settings) as (_, http):
        yield http


def test_every_api_and_dashboard_route_has_a_decided_role() -> None:
    routes = app_routes(create_app(app_settings("sqlite+aiosqlite://", "127.0.0.1:1", "tq")))
    undecided = sorted(
        f"{method} {path}"
        for method, path in routes - ROUTE_ROLES.keys()
        if path.startswith(DECIDED_PREFIXES)
    )
    assert undecided == [], f"add these routes to ROUTE_ROLES with the role they need: {undecided}"
    gone = sorted(f"{method} {path}" for method, path in ROUTE_ROLES.keys() - routes)
    assert gone == [], f"ROUTE_ROLES lists routes the app no longer has: {gone}"


async def call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    key: str | None = None,
    cookies: dict[str, str] | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    http.cookies.clear()
    http.cookies.update(cookies or {})
    # No body: a request that gets past the role check is refused for its missing body
    # rather than acted on.
    return await http.request(method, concrete(path), headers=headers)


def routes_of(*roles: str) -> list[object]:
    return [
        pytest.param(method, path, id=f"{method} {path}")
        for (method, path), role in ROUTE_ROLES.items()
        if role in roles
    ]


def sent_to_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"] == "/dashboard/login"


@pytest.mark.parametrize(("method", "path"), routes_of(SUPPORT, ADMIN))
async def test_an_api_route_refuses_callers_without_its_role(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    role = ROUTE_ROLES[method, path]
    for key in (None, WRONG_KEY):
        refused = await call(api, method, path, key)
        assert refused.status_code == 401, (key, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
    if role == ADMIN:
        refused = await call(api, method, path, SUPPORT_KEY)
        assert refused.status_code == 403, refused.text
        assert refused.json() == {"detail": "this key lacks the admin role"}
    # The role's key gets past the check, and an admin key wherever a support key does.
    for key in {KEYS[role], ADMIN_KEY}:
        let_in = await call(api, method, path, key)
        assert let_in.status_code not in (401, 403), let_in.text


@pytest.mark.parametrize(("method", "path"), routes_of(PAGE))
async def test_a_dashboard_page_sends_strangers_to_the_login_page(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    assert sent_to_login(await call(api, method, path))
    assert sent_to_login(await call(api, method, path, cookies={SESSION_COOKIE: "forged.token"}))
    wrong = await call(api, method, path, WRONG_KEY)
    assert wrong.status_code == 401, wrong.text
    for key in (SUPPORT_KEY, ADMIN_KEY):
        let_in = await call(api, method, path, key)
        assert let_in.status_code not in (401, 403) and not sent_to_login(let_in), let_in.text


@pytest.mark.parametrize(("method", "path"), routes_of(CODEC))
async def test_the_codec_server_needs_a_key_or_a_session_from_the_temporal_ui(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    for key in (None, WRONG_KEY):
        refused = await call(api, method, path, key)
        assert refused.status_code == 401, (key, refused.text)
        assert refused.headers["www-authenticate"] == "Bearer"
    # A session sent without the UI's Origin (another page, a forged form) is refused.
    session = (await api.post("/dashboard/login", data={"key": SUPPORT_KEY})).cookies
    refused = await call(api, method, path, cookies=dict(session))
    assert refused.status_code == 401, refused.text
    for key in (SUPPORT_KEY, ADMIN_KEY):
        let_in = await call(api, method, path, key)
        assert let_in.status_code not in (401, 403), let_in.text


@pytest.mark.parametrize(("method", "path"), routes_of(OWN_AUTH))
async def test_a_route_with_its_own_authentication_refuses_a_caller_without_it(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    # An API key is not what these routes take: a bad token or signature is refused even
    # with the admin key.
    for key in (None, ADMIN_KEY):
        refused = await call(api, method, path, key)
        assert refused.status_code >= 400, refused.text


def test_the_readme_gives_each_api_route_the_role_the_app_enforces() -> None:
    row = re.compile(r"^\| `(GET|POST|DELETE) (/v1/[^`?]*)[^`]*` \| ([^|]+) \|", re.MULTILINE)
    documented = {
        (method, path): auth.strip() for method, path, auth in row.findall(README.read_text())
    }
    expected = {
        (method, path.replace(":path", "")): "`admin` key"
        if role == ADMIN
        else "`support` or `admin` key"
        for (method, path), role in ROUTE_ROLES.items()
        if role in (SUPPORT, ADMIN)
    }
    assert documented == expected
