"""Sending through Postmark, end to end from the send_email activity to a local HTTP server
speaking Postmark's documented email API: message streams, unsubscribe headers, and what
each kind of refusal does to the message (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import SendEmailResult
from stripe_lifecycle.mail.transports import (
    OutgoingEmail,
    TemporarySendError,
    build_transport,
)
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import MessageStatus

from .delivery_helpers import (
    BROADCAST_STREAM,
    PUBLIC_URL,
    TRANSACTIONAL_STREAM,
    mail_activities,
    message_rows,
    postmark_transport,
    running_postmark,
    step_email,
)
from .test_transports import TOKEN, PostmarkHttpServer


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def headers_of(body: dict[str, Any]) -> dict[str, str]:
    return {h["Name"]: h["Value"] for h in body.get("Headers") or []}


async def sent_through_postmark(
    postmark: PostmarkHttpServer, db: SessionMaker, lifecycle: str
) -> tuple[SendEmailResult, dict[str, Any]]:
    """One step's email of `lifecycle`, sent by the activity through the local Postmark
    server: the activity's result and the one request body Postmark received."""
    mail = mail_activities(postmark_transport(postmark), db)
    result = await ActivityEnvironment().run(mail.send_email, step_email(lifecycle))
    assert result.status == MessageStatus.SENT
    [request] = postmark.state.requests
    return result, request.body


@pytest.mark.parametrize("lifecycle", ["winback", "upgrade"])
async def test_marketing_mail_goes_through_the_broadcast_stream_with_one_click_unsubscribe(
    postmark: PostmarkHttpServer, db: SessionMaker, lifecycle: str
) -> None:
    result, body = await sent_through_postmark(postmark, db, lifecycle)

    assert body["MessageStream"] == BROADCAST_STREAM
    headers = headers_of(body)
    unsubscribe = headers["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{PUBLIC_URL}/u/") and unsubscribe.endswith(">")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The footer links to the same page the header does.
    url = unsubscribe[1:-1]
    assert f'href="{url}"' in body["HtmlBody"] and url in body["TextBody"]
    assert body["Metadata"]["message_id"] == result.message_id
    [row] = await message_rows(db)
    assert row.provider_message_id == postmark.state.message_ids[0]
    # The unsubscribe link is not one of the message's tracked links.
    assert url not in row.links and len(row.links) == 1


@pytest.mark.parametrize("lifecycle", ["dunning", "trial"])
async def test_transactional_mail_goes_through_the_message_stream(
    postmark: PostmarkHttpServer, db: SessionMaker, lifecycle: str
) -> None:
    _, body = await sent_through_postmark(postmark, db, lifecycle)

    assert body["MessageStream"] == TRANSACTIONAL_STREAM
    headers = headers_of(body)
    if lifecycle == "dunning":
        # Billing mail is not unsubscribable by default: no header, no footer link.
        assert headers == {}
        assert "/u/" not in body["HtmlBody"] and "/u/" not in body["TextBody"]
    else:
        # Product mail can be unsubscribed from, one click like marketing mail.
        assert headers["List-Unsubscribe"].startswith(f"<{PUBLIC_URL}/u/")
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_built_transport_uses_both_configured_streams(postmark: PostmarkHttpServer) -> None:
    settings = Settings(
        mail_transport="postmark",
        postmark_server_token=SecretStr(TOKEN),
        postmark_api_url=postmark.url,
        postmark_message_stream="acme-transactional",
        postmark_broadcast_stream="acme-marketing",
    )
    transport = build_transport(settings)

    for broadcast in (False, True):
        await transport.send(
            OutgoingEmail(
                "ada@example.com", "billing@acme.test", "Hi", "<p>x</p>", "x", broadcast=broadcast
            )
        )

    streams = [r.body["MessageStream"] for r in postmark.state.requests]
    assert streams == ["acme-transactional", "acme-marketing"]


def test_broadcast_stream_defaults_to_broadcast() -> None:
    settings = Settings(_env_file=None)
    assert (settings.postmark_message_stream, settings.postmark_broadcast_stream) == (
        "outbound",
        "broadcast",
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}),
        (500, {"ErrorCode": 0, "Message": "Internal server error."}),
        (503, b"<html>Service Unavailable</html>"),
    ],
    ids=["rate-limited", "server-error", "unavailable"],
)
async def test_rate_limits_and_outages_are_retried_and_then_sent_once(
    postmark: PostmarkHttpServer, db: SessionMaker, status: int, body: dict[str, Any] | bytes
) -> None:
    postmark.state.replies.append((status, body))
    mail = mail_activities(postmark_transport(postmark), db)

    # The activity fails so Temporal's retry policy backs off and runs it again.
    with pytest.raises(TemporarySendError, match=str(status)):
        await ActivityEnvironment().run(mail.send_email, step_email("dunning"))
    [row] = await message_rows(db)
    assert row.status == MessageStatus.RETRYING and str(status) in (row.error or "")

    retried = await ActivityEnvironment().run(mail.send_email, step_email("dunning"))
    again = await ActivityEnvironment().run(mail.send_email, step_email("dunning"))

    assert retried.status == again.status == MessageStatus.SENT
    assert len(postmark.state.requests) == 2 and len(postmark.state.message_ids) == 1
    [row] = await message_rows(db)
    assert (row.status, row.error) == (MessageStatus.SENT, None)
    assert row.provider_message_id == postmark.state.message_ids[0]


@pytest.mark.parametrize(
    ("error_code", "message"),
    [
        (406, "You tried to send to a recipient that has been marked as inactive."),
        (300, "Invalid email request: Illegal email address 'ada@example'."),
    ],
    ids=["inactive-recipient", "invalid-email"],
)
async def test_refused_recipients_fail_for_good_without_retrying(
    postmark: PostmarkHttpServer, db: SessionMaker, error_code: int, message: str
) -> None:
    postmark.state.replies.append((422, {"ErrorCode": error_code, "Message": message}))
    mail = mail_activities(postmark_transport(postmark), db)

    # No exception: the activity returns, so Temporal does not retry it.
    result = await ActivityEnvironment().run(mail.send_email, step_email("dunning"))
    again = await ActivityEnvironment().run(mail.send_email, step_email("dunning"))

    assert result.status == again.status == MessageStatus.FAILED
    assert result.error is not None and str(error_code) in result.error and message in result.error
    assert len(postmark.state.requests) == 1
    [row] = await message_rows(db)
    assert (row.status, row.error) == (MessageStatus.FAILED, result.error)
