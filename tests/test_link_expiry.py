"""Email links expire by kind, can be revoked per message and per customer (and are when a
customer is erased), answer an expired page that sends nobody anywhere but the configured
billing page, and `/t/` is rate limited per client and per link. Time is the app's clock
dependency, moved by the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from stripe_lifecycle.api.deps import clock
from stripe_lifecycle.api.rate_limit import LinkRateLimits
from stripe_lifecycle.domain.links import make_token, make_unsubscribe_token, seal
from stripe_lifecycle.storage.erasure import erase_customer
from stripe_lifecycle.storage.models import Customer, Message, MessageClick, SupportAction

from .conftest import ADMIN_KEY, LINK_SECRET, SUPPORT_KEY, app_settings, free_port, running_api

BILLING = "https://app.acme.test/billing"
OFFER = "https://app.acme.test/offer/SAVE20"
HOSTED = "https://invoice.stripe.com/i/acct_1/test_hosted"
SENT = datetime(2026, 1, 4, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


@dataclass
class Rig:
    app: FastAPI
    http: httpx.AsyncClient
    now: datetime = SENT

    def at(self, when: datetime) -> None:
        self.now = when


@pytest.fixture
async def rig(sqlite_url: str, task_queue: str) -> AsyncIterator[Rig]:
    # No Stripe API key: a billing link that opens goes to LIFECYCLE_BILLING_URL.
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", task_queue, billing_url=BILLING)
    async with running_api(settings) as (app, http):
        rig = Rig(app, http)
        app.dependency_overrides[clock] = lambda: rig.now
        yield rig


async def sent_email(
    rig: Rig, customer_id: str = "cus_Links1", lifecycle: str = "dunning", at: datetime = SENT
) -> str:
    message_id = str(uuid.uuid4())
    async with rig.app.state.lifecycle.sessionmaker() as session:
        if await session.get(Customer, customer_id) is None:
            session.add(Customer(customer_id=customer_id, email="ada@example.com"))
        session.add(
            Message(
                id=message_id,
                send_key=f"{lifecycle}-{message_id}:0-send",
                customer_id=customer_id,
                workflow_id=f"{lifecycle}-{message_id}",
                lifecycle=lifecycle,
                automation=lifecycle,
                step="0-send",
                template=f"{lifecycle}/x",
                to="ada@example.com",
                status="sent",
                transport="outbox",
                destinations={
                    "update_payment": HOSTED,
                    "manage": "portal:",
                    "offer": OFFER,
                    "survey": "hosted:survey",
                },
                created_at=at,
                sent_at=at,
            )
        )
        await session.commit()
    return message_id


def link(message_id: str, name: str, issued: datetime = SENT) -> str:
    return f"/t/{make_token(LINK_SECRET.encode(), message_id, name, issued)}"


def legacy_link(message_id: str, name: str) -> str:
    """A link as issued before tokens carried their issue time."""
    return f"/t/{seal(LINK_SECRET.encode(), b'link', f'{message_id}:{name}'.encode())}"


async def clicks(rig: Rig) -> int:
    async with rig.app.state.lifecycle.sessionmaker() as session:
        return len((await session.execute(select(MessageClick))).all())


def assert_expired_page(response: httpx.Response, billing: bool) -> None:
    assert response.status_code == 410, response.text
    assert "location" not in response.headers
    assert "This link has expired" in response.text
    # The only address it offers is the configured billing page, and only for billing.
    assert (f'href="{BILLING}"' in response.text) is billing
    assert OFFER not in response.text and HOSTED not in response.text


@pytest.mark.parametrize(
    ("name", "lifetime", "destination", "billing"),
    [
        # Dunning's fix-your-card link and a portal: link open billing: 30 days.
        # (Without a Stripe key: the invoice page dunning stored; else the billing page.)
        ("update_payment", 30 * DAY, HOSTED, True),
        ("manage", 30 * DAY, BILLING, True),
        ("offer", 90 * DAY, OFFER, False),
    ],
)
async def test_a_link_works_to_the_last_second_of_its_lifetime(
    rig: Rig, name: str, lifetime: timedelta, destination: str, billing: bool
) -> None:
    message_id = await sent_email(rig)
    rig.at(SENT + lifetime)
    opened = await rig.http.get(link(message_id, name))
    assert (opened.status_code, opened.headers["location"]) == (302, destination)

    rig.at(SENT + lifetime + SECOND)
    assert_expired_page(await rig.http.get(link(message_id, name)), billing)
    # Only the click that opened counts.
    assert await clicks(rig) == 1


async def test_the_survey_page_expires_after_90_days(rig: Rig) -> None:
    message_id = await sent_email(rig, lifecycle="winback")
    token = link(message_id, "survey").removeprefix("/t/")
    rig.at(SENT + 90 * DAY)
    assert (await rig.http.get(f"/survey/{token}")).status_code == 200
    rig.at(SENT + 90 * DAY + SECOND)
    assert_expired_page(await rig.http.get(f"/survey/{token}"), billing=False)
    answered = await rig.http.post(f"/survey/{token}", data={"reason": "too_expensive"})
    assert_expired_page(answered, billing=False)


async def test_links_from_before_issue_times_count_from_when_the_message_was_sent(
    rig: Rig,
) -> None:
    message_id = await sent_email(rig)
    rig.at(SENT + 30 * DAY)
    assert (await rig.http.get(legacy_link(message_id, "update_payment"))).status_code == 302
    rig.at(SENT + 30 * DAY + SECOND)
    assert_expired_page(await rig.http.get(legacy_link(message_id, "update_payment")), True)
    assert (await rig.http.get(legacy_link(message_id, "offer"))).status_code == 302


async def test_an_unsubscribe_link_never_expires_old_or_new(rig: Rig) -> None:
    secret = LINK_SECRET.encode()
    legacy = seal(secret, b"unsubscribe", b"cus_Links1:marketing")
    timed = make_unsubscribe_token(secret, "cus_Links1", "product", SENT)
    rig.at(SENT + 3650 * DAY)
    for token in (legacy, timed):
        assert (await rig.http.get(f"/u/{token}")).status_code == 200
        one_click = await rig.http.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200


async def revoke(rig: Rig, path: str, key: str = ADMIN_KEY) -> httpx.Response:
    return await rig.http.post(
        path,
        json={"reason": "email forwarded to a stranger"},
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_revoking_a_message_ends_its_links_only(rig: Rig) -> None:
    revoked, other = await sent_email(rig), await sent_email(rig)
    rig.at(SENT + DAY)
    refused = await revoke(rig, f"/v1/messages/{revoked}/links/revoke", SUPPORT_KEY)
    assert refused.status_code == 403
    answer = await revoke(rig, f"/v1/messages/{revoked}/links/revoke")
    assert answer.status_code == 200, answer.text
    assert answer.json()["message_id"] == revoked
    assert answer.json()["customer_id"] == "cus_Links1"

    for name in ("update_payment", "manage"):
        assert_expired_page(await rig.http.get(link(revoked, name)), billing=True)
    assert_expired_page(await rig.http.get(link(revoked, "offer")), billing=False)
    assert (await rig.http.get(link(other, "update_payment"))).status_code == 302
    assert (await revoke(rig, f"/v1/messages/{uuid.uuid4()}/links/revoke")).status_code == 404

    async with rig.app.state.lifecycle.sessionmaker() as session:
        [audit] = (await session.execute(select(SupportAction))).scalars()
    assert (audit.customer_id, audit.action) == ("cus_Links1", "links.revoke")
    assert audit.actor.startswith("admin key ") and "forwarded" in audit.reason


async def test_revoking_a_customer_ends_the_links_sent_so_far_not_later_ones(rig: Rig) -> None:
    before = await sent_email(rig)
    someone_else = await sent_email(rig, customer_id="cus_Other1")
    revoked_at = (await revoke(rig, "/v1/customers/cus_Links1/links/revoke")).json()
    assert revoked_at["message_id"] is None
    later = await sent_email(rig, at=datetime.now(UTC) + timedelta(minutes=1))

    assert_expired_page(await rig.http.get(link(before, "manage")), billing=True)
    assert_expired_page(await rig.http.get(legacy_link(before, "offer")), billing=False)
    rig.at(datetime.now(UTC) + 2 * DAY)
    later_link = link(later, "manage", issued=datetime.now(UTC) + timedelta(minutes=1))
    assert (await rig.http.get(later_link)).status_code == 302
    assert (await rig.http.get(link(someone_else, "manage", issued=rig.now))).status_code == 302
    assert (await revoke(rig, "/v1/customers/cus_Nobody/links/revoke")).status_code == 404


async def test_erasing_a_customer_revokes_their_links(rig: Rig) -> None:
    message_id = await sent_email(rig)
    rig.at(SENT + DAY)
    assert (await rig.http.get(link(message_id, "manage"))).status_code == 302
    async with rig.app.state.lifecycle.sessionmaker() as session:
        await erase_customer(session, "cus_Links1", "admin key test")
        await session.commit()
    assert_expired_page(await rig.http.get(link(message_id, "manage")), billing=True)


async def test_tracked_links_are_rate_limited_per_link_and_per_client(rig: Rig) -> None:
    ticks = [0.0]
    rig.app.state.lifecycle.link_limits = LinkRateLimits(clock=lambda: ticks[0])
    message_id = await sent_email(rig)
    path = link(message_id, "offer")
    for _ in range(10):
        assert (await rig.http.get(path)).status_code == 302
    limited = await rig.http.get(path)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "6"
    # Another link of the same message has its own bucket.
    assert (await rig.http.get(link(message_id, "update_payment"))).status_code == 302
    ticks[0] += 6
    assert (await rig.http.get(path)).status_code == 302
    assert (await rig.http.get(path)).status_code == 429

    # Per client: 60 at once from one address, counting every /t/ request, even those for
    # links that do not exist.
    rig.app.state.lifecycle.link_limits = LinkRateLimits(clock=lambda: ticks[0])
    for _ in range(60):
        assert (await rig.http.get("/t/not-a-token")).status_code == 404
    limited = await rig.http.get("/t/not-a-token")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    ticks[0] += 1
    assert (await rig.http.get("/t/not-a-token")).status_code == 404


async def test_the_stored_destination_is_the_only_place_a_link_leads(rig: Rig) -> None:
    message_id = await sent_email(rig)
    rig.at(SENT + DAY)
    # No query text or another token's message reaches the redirect.
    opened = await rig.http.get(link(message_id, "offer") + "?next=https://evil.example")
    assert (opened.status_code, opened.headers["location"]) == (302, OFFER)
    for path in (link(message_id, "https://evil.example"), link(str(uuid.uuid4()), "offer")):
        assert (await rig.http.get(path)).status_code == 404
    rig.at(SENT + 31 * DAY)
    expired = await rig.http.get(link(message_id, "manage") + "?next=https://evil.example")
    assert_expired_page(expired, billing=True)
    assert "evil.example" not in expired.text
    async with rig.app.state.lifecycle.sessionmaker() as session:
        found = await session.execute(select(col(MessageClick.link)))
    assert found.scalars().all() == ["offer"]
