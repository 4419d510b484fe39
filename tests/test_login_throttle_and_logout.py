"""Guessing and replaying: failed dashboard sign-ins are throttled per address and per key
(429 with Retry-After, backing off exponentially, in bounded memory); a signed-out
session's cookie, replayed, no longer opens anything ("everywhere" ends every session of
the key); the pages behind email links (`/survey/`, `/u/`) are rate limited like `/t/`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.api.deps import key_fingerprint
from stripe_lifecycle.api.rate_limit import FailureBackoff, LinkRateLimits, LoginThrottle
from stripe_lifecycle.api.sessions import SESSION_COOKIE, SESSION_TTL
from stripe_lifecycle.domain.links import make_token, make_unsubscribe_token
from stripe_lifecycle.storage.models import DashboardLogout, Message

from .conftest import ADMIN_KEY, LINK_SECRET, SUPPORT_KEY, app_settings, free_port, running_api
from .page_helpers import csrf_of


class Clock:
    """A clock the test moves by hand, so no assertion depends on how fast this runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def api(sqlite_url: str, task_queue: str) -> AsyncIterator[tuple[FastAPI, Clock]]:
    # No Temporal behind it: the app's client is lazy, so an unused port will do.
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", task_queue)
    async with running_api(settings) as (app, _):
        clock = Clock()
        app.state.lifecycle.login_limits = LoginThrottle(clock=clock)
        app.state.lifecycle.link_limits = LinkRateLimits(clock=clock)
        yield app, clock


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


async def sign_in(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.post("/dashboard/login", data={"key": key})


def test_failures_back_off_exponentially_and_memory_stays_bounded() -> None:
    clock = Clock()
    backoff = FailureBackoff(allowed=5, window=60, max_block=3600, max_keys=100, clock=clock)
    for _ in range(4):
        backoff.failed("1.2.3.4")
    assert backoff.wait("1.2.3.4") == 0
    backoff.failed("1.2.3.4")
    assert backoff.wait("1.2.3.4") == 60
    # Past the block, each further failure blocks again for twice as long.
    blocks = []
    for _ in range(8):
        clock.now += backoff.wait("1.2.3.4")
        backoff.failed("1.2.3.4")
        blocks.append(backoff.wait("1.2.3.4"))
    assert blocks == [120, 240, 480, 960, 1920, 3600, 3600, 3600]
    # A success forgets it; so does an hour without failures after the block.
    backoff.succeeded("1.2.3.4")
    assert backoff.wait("1.2.3.4") == 0
    for _ in range(5):
        backoff.failed("5.6.7.8")
    clock.now += 60 + 3600
    backoff.failed("5.6.7.8")
    assert backoff.wait("5.6.7.8") == 0
    # Failures spread out (fewer than five within any minute) never block.
    for _ in range(20):
        clock.now += 16
        backoff.failed("9.9.9.9")
        assert backoff.wait("9.9.9.9") == 0
    # A flood of addresses keeps at most max_keys of them (the most recent).
    for n in range(10_000):
        backoff.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(backoff._failures) == 100
    assert "10.0.39.15" in backoff._failures and "9.9.9.9" not in backoff._failures


async def test_failed_sign_ins_are_throttled_per_address_and_per_key(
    api: tuple[FastAPI, Clock],
) -> None:
    app, clock = api
    async with client_at(app, "203.0.113.7") as guesser, client_at(app, "198.51.100.1") as staff:
        for n in range(5):
            assert (await sign_in(guesser, f"guess-{n}")).status_code == 401
        blocked = await sign_in(guesser, "guess-5")
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "60"
        assert "Too many failed sign-ins. Try again in 60 seconds." in blocked.text
        # While blocked, even the right key is not tried from that address.
        right_key = await sign_in(guesser, SUPPORT_KEY)
        assert right_key.status_code == 429 and "set-cookie" not in right_key.headers
        # Staff elsewhere sign in as usual.
        assert (await sign_in(staff, ADMIN_KEY)).status_code == 303

        clock.now += 60
        assert (await sign_in(guesser, "guess-6")).status_code == 401
        again = await sign_in(guesser, "guess-7")
        assert again.status_code == 429 and again.headers["retry-after"] == "120"
        clock.now += 120
        assert (await sign_in(guesser, SUPPORT_KEY)).status_code == 303

    # One key guessed from many addresses meets the per-key limit.
    for n in range(5):
        async with client_at(app, f"192.0.2.{n}") as one:
            assert (await sign_in(one, "sk_leaked_and_revoked_key")).status_code == 401
    async with client_at(app, "192.0.2.200") as another:
        assert (await sign_in(another, "sk_leaked_and_revoked_key")).status_code == 429
        assert (await sign_in(another, SUPPORT_KEY)).status_code == 303


async def test_a_signed_out_cookie_replayed_is_refused(api: tuple[FastAPI, Clock]) -> None:
    app, _ = api
    async with client_at(app, "198.51.100.2") as browser:
        signed_in = await sign_in(browser, SUPPORT_KEY)
        assert signed_in.status_code == 303
        copied = browser.cookies[SESSION_COOKIE]
        page = await browser.get("/dashboard")
        assert page.status_code == 200
        out = await browser.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
        assert (out.status_code, out.headers["location"]) == (303, "/dashboard/login")
    # The copy of the cookie taken before signing out is dead too, on every page.
    async with client_at(app, "203.0.113.9") as thief:
        thief.cookies.set(SESSION_COOKIE, copied)
        for path in ("/dashboard", "/dashboard/lift", "/dashboard/segments"):
            replayed = await thief.get(path)
            assert (replayed.status_code, replayed.headers["location"]) == (
                303,
                "/dashboard/login",
            )
        assert (await thief.get("/dashboard/login")).status_code == 200


async def test_signing_out_everywhere_ends_every_session_of_the_key(
    api: tuple[FastAPI, Clock],
) -> None:
    app, _ = api
    async with (
        client_at(app, "198.51.100.3") as laptop,
        client_at(app, "198.51.100.4") as phone,
        client_at(app, "198.51.100.5") as colleague,
    ):
        for browser, key in ((laptop, SUPPORT_KEY), (phone, SUPPORT_KEY), (colleague, ADMIN_KEY)):
            assert (await sign_in(browser, key)).status_code == 303
        page = await laptop.get("/dashboard")
        out = await laptop.post(
            "/dashboard/logout", data={"csrf": csrf_of(page.text), "everywhere": "true"}
        )
        assert out.status_code == 303
        assert (await phone.get("/dashboard")).status_code == 303  # same key: signed out
        assert (await colleague.get("/dashboard")).status_code == 200  # another key
        # Signing in again afterwards works.
        assert (await sign_in(phone, SUPPORT_KEY)).status_code == 303
        assert (await phone.get("/dashboard")).status_code == 200
        # A script holding the key can end the key's sessions too (it needs no CSRF token).
        async with client_at(app, "198.51.100.6") as script:
            by_script = await script.post(
                "/dashboard/logout",
                data={"everywhere": "true"},
                headers={"Authorization": f"Bearer {SUPPORT_KEY}"},
            )
        assert by_script.status_code == 303
        assert (await phone.get("/dashboard")).status_code == 303
        assert (await colleague.get("/dashboard")).status_code == 200


async def survey_message(app: FastAPI) -> str:
    message_id = str(uuid.uuid4())
    async with app.state.lifecycle.sessionmaker() as session:
        session.add(
            Message(
                id=message_id,
                send_key=f"winback-x:{message_id}",
                customer_id="cus_Throttled1",
                workflow_id="winback-x",
                lifecycle="winback",
                automation="winback",
                step="0-send-winback-cancelled",
                template="winback/cancelled",
                to="ada@example.com",
                status="sent",
                transport="outbox",
                destinations={"survey": "hosted:survey"},
            )
        )
        await session.commit()
    return message_id


async def test_survey_and_unsubscribe_pages_are_rate_limited(api: tuple[FastAPI, Clock]) -> None:
    app, clock = api
    now = datetime.now(UTC)
    survey = f"/survey/{make_token(LINK_SECRET.encode(), await survey_message(app), 'survey', now)}"
    unsubscribe = (
        f"/u/{make_unsubscribe_token(LINK_SECRET.encode(), 'cus_Throttled1', 'marketing', now)}"
    )
    async with client_at(app, "198.51.100.6") as reader:
        # Per link: a burst of 10, then one every 6 seconds.
        for path in (survey, unsubscribe):
            for _ in range(10):
                assert (await reader.get(path)).status_code == 200
            limited = await reader.get(path)
            assert limited.status_code == 429 and limited.headers["retry-after"] == "6"
        assert (await reader.post(unsubscribe)).status_code == 429
        clock.now += 6
        assert (await reader.post(unsubscribe)).status_code == 200
    # Per address, over every page behind an email link together (60, then one a second):
    # tokens that name nothing count too, before they are read.
    async with client_at(app, "203.0.113.20") as scanner:
        answers = [
            (await scanner.get(f"/{kind}/not-a-token-{n}")).status_code
            for n in range(21)
            for kind in ("t", "survey", "u")
        ]
        assert answers == [404] * 60 + [429] * 3
        assert (await scanner.get(survey)).status_code == 429


async def test_sign_outs_are_kept_only_while_a_session_could_outlive_them(
    api: tuple[FastAPI, Clock],
) -> None:
    app, _ = api
    sessionmaker = app.state.lifecycle.sessionmaker
    now = datetime.now(UTC)
    async with sessionmaker() as db:
        db.add(DashboardLogout(key_id="0ld0ld00", at=now - SESSION_TTL - timedelta(minutes=1)))
        db.add(DashboardLogout(key_id="recent00", at=now - SESSION_TTL + timedelta(minutes=1)))
        await db.commit()
    async with client_at(app, "198.51.100.7") as browser:
        assert (await sign_in(browser, ADMIN_KEY)).status_code == 303
        page = await browser.get("/dashboard")
        await browser.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    async with sessionmaker() as db:
        kept = (await db.execute(select(col(DashboardLogout.key_id)))).scalars().all()
    assert sorted(kept) == sorted(["recent00", key_fingerprint(ADMIN_KEY)])
