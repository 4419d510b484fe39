"""`POST /webhooks/postmark` with Postmark's documented payloads, against messages really
sent through the send_email activity to a local Postmark API: statuses, the suppression
list and what it stops, idempotency, and basic auth (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import SendEmailInput, SendEmailResult
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.storage.db import SessionMaker
from stripe_lifecycle.storage.models import Customer, MessageEvent, MessageStatus, Suppression

from .conftest import SUPPORT_KEY, app_settings, free_port, running_api
from .delivery_helpers import (
    BROADCAST_STREAM,
    TRANSACTIONAL_STREAM,
    mail_activities,
    postmark_transport,
    step_email,
)
from .fakes import PostmarkHttpServer, running_postmark

HOOK_AUTH = ("postmark-hooks", "hook-password-5e1f")
SUPPORT = {"Authorization": f"Bearer {SUPPORT_KEY}"}


@dataclass
class Rig:
    app: FastAPI
    http: httpx.AsyncClient
    postmark: PostmarkHttpServer
    mail: MailActivities

    @property
    def sessionmaker(self) -> SessionMaker:
        maker: SessionMaker = self.app.state.lifecycle.sessionmaker
        return maker

    async def send(self, request: SendEmailInput) -> SendEmailResult:
        return await ActivityEnvironment().run(self.mail.send_email, request)

    async def hook(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/webhooks/postmark", json=payload, auth=HOOK_AUTH)

    async def message(self, message_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/messages/{message_id}", headers=SUPPORT)
        assert response.status_code == 200
        detail: dict[str, Any] = response.json()
        return detail

    async def events(self) -> list[MessageEvent]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(MessageEvent).order_by(col(MessageEvent.id)))
            return list(rows.scalars())

    async def suppressions(self) -> list[tuple[str, str, str, str]]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(Suppression).order_by(col(Suppression.id)))
            return [(s.email, s.stream, s.scope, s.reason) for s in rows.scalars()]


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


@pytest.fixture
async def rig(database_url: str, postmark: PostmarkHttpServer) -> AsyncIterator[Rig]:
    # Temporal is not needed here: the app's client is lazy, so an unused port will do.
    settings = app_settings(
        database_url,
        f"127.0.0.1:{free_port()}",
        "tq-postmark",
        postmark_webhook_user=HOOK_AUTH[0],
        postmark_webhook_password=HOOK_AUTH[1],
        postmark_message_stream=TRANSACTIONAL_STREAM,
        postmark_broadcast_stream=BROADCAST_STREAM,
    )
    async with running_api(settings) as (app, http):
        mail = mail_activities(postmark_transport(postmark), app.state.lifecycle.sessionmaker)
        yield Rig(app, http, postmark, mail)


def delivery(postmark_id: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": TRANSACTIONAL_STREAM,
        "MessageID": postmark_id,
        "Recipient": "ada@example.com",
        "Tag": "dunning/payment-failed",
        "DeliveredAt": "2026-03-02T13:28:10.2735393-04:00",
        "Details": "Test delivery webhook details",
        "Metadata": metadata or {},
    }


def bounce(
    postmark_id: str,
    message_id: str,
    *,
    bounce_id: int = 42,
    kind: str = "HardBounce",
    inactive: bool = True,
) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "MessageStream": TRANSACTIONAL_STREAM,
        "ID": bounce_id,
        "Type": kind,
        "TypeCode": 1 if kind == "HardBounce" else 2,
        "Name": "Hard bounce" if kind == "HardBounce" else "Message delayed",
        "Tag": "dunning/payment-failed",
        "MessageID": postmark_id,
        "Metadata": {"message_id": message_id, "workflow_id": "dunning-in_1", "step": "0-send"},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "Ada@Example.com",
        "From": "billing@acme.test",
        "BouncedAt": "2026-03-02T13:28:10.2735393-04:00",
        "DumpAvailable": True,
        "Inactive": inactive,
        "CanActivate": True,
        "Subject": "Your payment failed",
        "Content": "Return-Path: <>\r\n...the whole bounce message...",
    }


def subscription_change(stream: str, *, suppress: bool, at: str) -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": None,
        "ServerID": 23,
        "MessageStream": stream,
        "ChangedAt": at,
        "Recipient": "ada@example.com",
        "Origin": "Recipient",
        "SuppressSending": suppress,
        "SuppressionReason": "ManualSuppression" if suppress else None,
        "Tag": None,
        "Metadata": {},
    }


async def test_delivery_found_by_postmark_message_id_marks_the_message_delivered_once(
    rig: Rig,
) -> None:
    sent = await rig.send(step_email("dunning"))
    [postmark_id] = rig.postmark.state.message_ids

    # No Metadata: the message is found by the MessageID Postmark answered the send with.
    first = await rig.hook(delivery(postmark_id))
    again = await rig.hook(delivery(postmark_id))

    assert first.status_code == again.status_code == 200
    assert first.json() == {
        "record_type": "Delivery",
        "message_id": sent.message_id,
        "duplicate": False,
    }
    assert again.json()["duplicate"] is True
    assert (await rig.message(sent.message_id))["status"] == "delivered"
    [event] = await rig.events()
    assert (event.record_type, event.message_id) == ("Delivery", sent.message_id)
    assert event.occurred_at is not None and event.occurred_at.utcoffset() is not None
    # A retried activity returns the delivered message; nothing is sent again.
    assert (await rig.send(step_email("dunning"))).status == MessageStatus.DELIVERED
    assert len(rig.postmark.state.requests) == 1


async def test_hard_bounce_suppresses_the_address_for_every_later_email(rig: Rig) -> None:
    sent = await rig.send(step_email("dunning"))
    [postmark_id] = rig.postmark.state.message_ids

    response = await rig.hook(bounce(postmark_id, sent.message_id))
    duplicate = await rig.hook(bounce(postmark_id, sent.message_id))

    assert response.status_code == 200 and duplicate.json()["duplicate"] is True
    detail = await rig.message(sent.message_id)
    assert detail["status"] == "bounced"
    assert detail["error"].startswith("HardBounce: The server was unable to deliver")
    assert await rig.suppressions() == [
        ("ada@example.com", TRANSACTIONAL_STREAM, "all", "HardBounce")
    ]
    [event] = await rig.events()
    assert "Content" not in event.payload and event.payload["ID"] == 42

    # Later mail of any lifecycle to the address is recorded as suppressed, never sent.
    for lifecycle in ("dunning", "trial", "winback"):
        later = await rig.send(step_email(lifecycle, step="1-later"))
        assert later.status == MessageStatus.SUPPRESSED, lifecycle
        assert later.error == (
            f"ada@example.com is on the suppression list: HardBounce "
            f"(Postmark stream {TRANSACTIONAL_STREAM})"
        )
    assert len(rig.postmark.state.requests) == 1


async def test_soft_bounce_marks_the_message_but_keeps_mailing_the_address(rig: Rig) -> None:
    sent = await rig.send(step_email("dunning"))
    [postmark_id] = rig.postmark.state.message_ids

    await rig.hook(bounce(postmark_id, sent.message_id, kind="Transient", inactive=False))

    detail = await rig.message(sent.message_id)
    assert detail["status"] == "bounced" and detail["error"].startswith("Transient: ")
    assert await rig.suppressions() == []
    assert (await rig.send(step_email("dunning", step="1-later"))).status == MessageStatus.SENT


async def test_spam_complaint_suppresses_the_address(rig: Rig) -> None:
    sent = await rig.send(step_email("trial"))
    [postmark_id] = rig.postmark.state.message_ids
    complaint = {
        "RecordType": "SpamComplaint",
        "MessageStream": TRANSACTIONAL_STREAM,
        "ID": 7,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "trial/welcome",
        "MessageID": postmark_id,
        "Metadata": {"message_id": sent.message_id},
        "ServerID": 23,
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": "ada@example.com",
        "From": "billing@acme.test",
        "BouncedAt": "2026-03-02T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Welcome",
        "Content": "<Abuse report dump>",
    }

    assert (await rig.hook(complaint)).json()["message_id"] == sent.message_id

    assert await rig.suppressions() == [
        ("ada@example.com", TRANSACTIONAL_STREAM, "all", "SpamComplaint")
    ]
    # The complained-about message keeps its status; the complaint is in its events.
    assert (await rig.message(sent.message_id))["status"] == "sent"
    assert (await rig.send(step_email("dunning"))).status == MessageStatus.SUPPRESSED


async def test_broadcast_suppression_stops_marketing_only_until_reactivated(rig: Rig) -> None:
    suppressed = subscription_change(BROADCAST_STREAM, suppress=True, at="2026-03-02T10:53:34Z")
    reactivated = subscription_change(BROADCAST_STREAM, suppress=False, at="2026-03-05T09:00:00Z")

    await rig.hook(suppressed)

    assert await rig.suppressions() == [
        ("ada@example.com", BROADCAST_STREAM, "marketing", "ManualSuppression")
    ]
    winback = await rig.send(step_email("winback"))
    dunning = await rig.send(step_email("dunning"))
    assert winback.status == MessageStatus.SUPPRESSED
    assert winback.error is not None and "ManualSuppression" in winback.error
    assert dunning.status == MessageStatus.SENT

    await rig.hook(reactivated)
    # A redelivery of the earlier suppression changes nothing any more.
    replay = await rig.hook(suppressed)

    assert replay.json()["duplicate"] is True
    assert await rig.suppressions() == []
    upgrade = await rig.send(step_email("upgrade"))
    assert upgrade.status == MessageStatus.SENT
    assert [r.body["MessageStream"] for r in rig.postmark.state.requests] == [
        TRANSACTIONAL_STREAM,
        BROADCAST_STREAM,
    ]


async def test_transactional_stream_suppression_stops_everything(rig: Rig) -> None:
    await rig.hook(
        subscription_change(TRANSACTIONAL_STREAM, suppress=True, at="2026-03-02T10:53:34Z")
    )

    assert (await rig.send(step_email("dunning"))).status == MessageStatus.SUPPRESSED
    assert (await rig.send(step_email("winback"))).status == MessageStatus.SUPPRESSED
    assert rig.postmark.state.requests == []


async def test_opens_and_clicks_are_recorded_once_each(rig: Rig) -> None:
    sent = await rig.send(step_email("winback"))
    [postmark_id] = rig.postmark.state.message_ids
    opened = {
        "RecordType": "Open",
        "MessageStream": BROADCAST_STREAM,
        "FirstOpen": True,
        "Client": {"Name": "Chrome 35.0.1916.153", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "OS X 10.7 Lion", "Company": "Apple Computer, Inc.", "Family": "OS X"},
        "Platform": "WebMail",
        "UserAgent": "Mozilla/5.0",
        "ReadSeconds": 5,
        "Geo": {"CountryISOCode": "RS", "Country": "Serbia"},
        "MessageID": postmark_id,
        "Metadata": {"message_id": sent.message_id},
        "ReceivedAt": "2026-03-02T13:28:10.2735393-04:00",
        "Tag": "winback/offer",
        "Recipient": "ada@example.com",
    }
    clicked = {
        "RecordType": "Click",
        "MessageStream": BROADCAST_STREAM,
        "ClickLocation": "HTML",
        "Platform": "Desktop",
        "OriginalLink": "https://app.acme.test/billing",
        "MessageID": postmark_id,
        "Metadata": {},
        "ReceivedAt": "2026-03-02T13:29:00Z",
        "Tag": "winback/offer",
        "Recipient": "ada@example.com",
    }
    reopened = {**opened, "FirstOpen": False, "ReceivedAt": "2026-03-03T08:00:00Z"}

    for payload in (opened, clicked, opened, reopened, clicked):
        assert (await rig.hook(payload)).status_code == 200

    events = await rig.events()
    assert [(e.record_type, e.message_id) for e in events] == [
        ("Open", sent.message_id),
        ("Click", sent.message_id),
        ("Open", sent.message_id),
    ]
    assert events[0].payload["Geo"]["Country"] == "Serbia"
    assert (await rig.message(sent.message_id))["status"] == "sent"


async def test_unmatched_records_are_acknowledged_and_kept(rig: Rig) -> None:
    response = await rig.hook(delivery("00000000-0000-0000-0000-000000000000"))

    assert response.json() == {"record_type": "Delivery", "message_id": None, "duplicate": False}
    [event] = await rig.events()
    assert event.message_id is None and event.email == "ada@example.com"


@pytest.mark.parametrize(
    "auth",
    [None, ("postmark-hooks", "wrong"), ("someone", HOOK_AUTH[1])],
    ids=["none", "wrong-password", "wrong-user"],
)
async def test_wrong_or_missing_credentials_are_refused(
    rig: Rig, auth: tuple[str, str] | None
) -> None:
    sent = await rig.send(step_email("dunning"))
    [postmark_id] = rig.postmark.state.message_ids

    payload = bounce(postmark_id, sent.message_id)
    if auth is None:
        response = await rig.http.post("/webhooks/postmark", json=payload)
    else:
        response = await rig.http.post("/webhooks/postmark", json=payload, auth=auth)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert await rig.events() == [] and await rig.suppressions() == []
    assert (await rig.message(sent.message_id))["status"] == "sent"


async def test_refused_while_credentials_are_not_configured(sqlite_url: str) -> None:
    settings = app_settings(sqlite_url, f"127.0.0.1:{free_port()}", "tq-postmark")
    async with running_api(settings) as (app, http):
        response = await http.post(
            "/webhooks/postmark", json=delivery("abc"), auth=("anyone", "anything")
        )
        async with app.state.lifecycle.sessionmaker() as session:
            stored = (await session.execute(select(MessageEvent))).scalars().all()

    assert response.status_code == 503
    assert "LIFECYCLE_POSTMARK_WEBHOOK_USER" in response.json()["detail"]
    assert stored == []


async def test_message_log_shows_delivered_and_bounced(rig: Rig) -> None:
    first = await rig.send(step_email("dunning", customer_id="cus_Log1"))
    second = await rig.send(step_email("dunning", customer_id="cus_Log1", step="1-reminder"))
    first_pm, second_pm = rig.postmark.state.message_ids
    async with rig.sessionmaker() as session:
        session.add(Customer(customer_id="cus_Log1", email="ada@example.com"))
        await session.commit()

    await rig.hook(delivery(first_pm))
    await rig.hook(bounce(second_pm, second.message_id, kind="Transient", inactive=False))

    log = await rig.http.get("/v1/customers/cus_Log1/messages", headers=SUPPORT)
    statuses = {m["id"]: m["status"] for m in log.json()["messages"]}
    assert statuses == {first.message_id: "delivered", second.message_id: "bounced"}


@pytest.mark.parametrize(
    "change",
    [
        {"RecordType": ""},
        {"RecordType": "Delivery" * 10},
        {"Recipient": "a" * 10_000 + "@example.com"},
        {"MessageStream": "s" * 65},
    ],
    ids=["empty-type", "long-type", "long-recipient", "long-stream"],
)
async def test_a_record_that_cannot_be_stored_is_refused_and_nothing_kept(
    rig: Rig, change: dict[str, Any]
) -> None:
    response = await rig.hook({**delivery("00000000-0000-0000-0000-000000000000"), **change})
    assert response.status_code == 422
    assert await rig.events() == [] and await rig.suppressions() == []
