"""Sending through Postmark, end to end from the send_email activity to a local HTTP server
speaking Postmark's documented email API: message streams, unsubscribe headers, and what
each kind of refusal does to the message (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import SendEmailResult, TeamNotice
from stripe_lifecycle.activities.mail import DOUBT_GRACE
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.transports import (
    OutgoingEmail,
    SendResult,
    SentQuery,
    TemporarySendError,
    build_transport,
)
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Message, MessageStatus

from .delivery_helpers import (
    BROADCAST_STREAM,
    PUBLIC_URL,
    TRANSACTIONAL_STREAM,
    mail_activities,
    message_rows,
    postmark_transport,
    step_email,
)
from .fakes import POSTMARK_TOKEN, Hold, PostmarkHttpServer, PostmarkMessage, running_postmark

# When the first attempt of a send started, on Temporal's clock.
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


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
        postmark_server_token=SecretStr(POSTMARK_TOKEN),
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


def at(moment: datetime) -> ActivityEnvironment:
    """An activity environment whose attempt started at `moment` on Temporal's clock: the
    clock a send in doubt is timed by."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, started_time=moment)
    return env


async def test_a_send_whose_answer_never_came_is_found_at_postmark_and_not_sent_again(
    postmark: PostmarkHttpServer, db: SessionMaker
) -> None:
    held = Hold()
    postmark.state.replies.append(held)
    mail = mail_activities(postmark_transport(postmark), db)

    # Postmark takes the email and the connection drops before its answer: in doubt.
    attempt = asyncio.create_task(at(T0).run(mail.send_email, step_email("dunning")))
    await held.arrival()
    held.release()
    with pytest.raises(ApplicationError, match="may have gone out") as info:
        await attempt
    assert info.value.type == "SendInDoubt" and not info.value.non_retryable
    [row] = await message_rows(db)
    assert (row.status, row.in_doubt_since) == (MessageStatus.PENDING, T0)
    assert "may have been accepted" in (row.error or "")

    # The retry asks Postmark's search, which lists it: sent, under Postmark's id.
    retried = await at(T0 + timedelta(seconds=5)).run(mail.send_email, step_email("dunning"))
    again = await at(T0 + timedelta(seconds=6)).run(mail.send_email, step_email("dunning"))

    assert retried.status == again.status == MessageStatus.SENT
    [row] = await message_rows(db)
    [taken] = postmark.state.accepted
    assert (row.status, row.provider_message_id) == (MessageStatus.SENT, taken.message_id)
    assert row.sent_at is not None and abs(row.sent_at - taken.received_at) < timedelta(seconds=1)
    assert len(postmark.state.requests) == 1
    [search] = postmark.state.searches
    assert search == {
        "count": "100",
        "offset": "0",
        "recipient": "ada@example.com",
        "tag": "dunning/payment-failed",
        "messagestream": TRANSACTIONAL_STREAM,
    }


async def test_a_send_postmark_never_took_is_sent_again_once_missing_for_the_grace(
    postmark: PostmarkHttpServer, db: SessionMaker
) -> None:
    # Postmark reads the request and hangs up without taking it: the client cannot tell.
    postmark.state.replies.append(None)
    mail = mail_activities(postmark_transport(postmark), db)
    with pytest.raises(ApplicationError, match="may have gone out"):
        await at(T0).run(mail.send_email, step_email("winback"))

    # Not listed, within the grace: asked again later, nothing sent.
    almost = T0 + DOUBT_GRACE - timedelta(seconds=1)
    with pytest.raises(ApplicationError, match="does not list it yet") as info:
        await at(almost).run(mail.send_email, step_email("winback"))
    assert info.value.type == "SendInDoubt"
    assert len(postmark.state.requests) == 1 and postmark.state.accepted == []

    # Still not listed once the grace has passed: it never arrived, and is sent again.
    sent = await at(T0 + DOUBT_GRACE).run(mail.send_email, step_email("winback"))

    assert sent.status == MessageStatus.SENT
    [row] = await message_rows(db)
    [taken] = postmark.state.accepted
    assert (row.status, row.error, row.in_doubt_since) == (MessageStatus.SENT, None, None)
    assert row.provider_message_id == taken.message_id
    assert [r.body["Metadata"]["message_id"] for r in postmark.state.requests] == [row.id] * 2
    # Win-back mail goes out on the broadcast stream, and is looked for there.
    assert {s["messagestream"] for s in postmark.state.searches} == {BROADCAST_STREAM}
    assert taken.body["MessageStream"] == BROADCAST_STREAM


@pytest.mark.parametrize("lifecycle", ["dunning", "winback"])
async def test_a_send_a_dead_worker_left_pending_is_looked_up_on_its_stream(
    postmark: PostmarkHttpServer, db: SessionMaker, lifecycle: str
) -> None:
    """A worker killed mid-send leaves its row pending; Postmark took the email. Among the
    customer's mail of that template, the search finds the one whose Metadata names it."""
    mail = mail_activities(postmark_transport(postmark), db)
    email = step_email(lifecycle)
    stream = BROADCAST_STREAM if lifecycle == "winback" else TRANSACTIONAL_STREAM
    await at(T0).run(mail.send_email, dataclasses.replace(email, step="earlier"))
    async with db() as session:
        session.add(
            Message(
                id="11111111-1111-1111-1111-111111111111",
                send_key=f"{email.workflow_id}/{email.step}",
                customer_id=email.customer_id,
                workflow_id=email.workflow_id,
                lifecycle=email.lifecycle,
                automation=email.automation,
                step=email.step,
                template=email.template,
                to="Ada <ada@example.com>",
                transport="postmark",
                status=MessageStatus.PENDING,
            )
        )
        await session.commit()
    accepted_at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    postmark.state.accepted.append(
        PostmarkMessage(
            "pm-1",
            {
                "To": "ada@example.com",
                "Tag": email.template,
                "MessageStream": stream,
                "Metadata": {"message_id": "11111111-1111-1111-1111-111111111111"},
            },
            accepted_at,
        )
    )

    result = await at(T0).run(mail.send_email, email)

    assert result.status == MessageStatus.SENT
    row = next(r for r in await message_rows(db) if r.step == email.step)
    assert (row.provider_message_id, row.sent_at) == ("pm-1", accepted_at)
    assert len(postmark.state.requests) == 1  # the earlier step's email only
    assert [s["messagestream"] for s in postmark.state.searches] == [stream]


async def test_a_search_postmark_cannot_answer_is_asked_again_and_sends_nothing(
    postmark: PostmarkHttpServer, db: SessionMaker
) -> None:
    postmark.state.replies.append(None)
    postmark.state.search_replies.append((503, b"<html>503 Service Unavailable</html>"))
    mail = mail_activities(postmark_transport(postmark), db)
    with pytest.raises(ApplicationError, match="may have gone out"):
        await at(T0).run(mail.send_email, step_email("dunning"))

    with pytest.raises(TemporarySendError, match="message search failed"):
        await at(T0 + DOUBT_GRACE).run(mail.send_email, step_email("dunning"))

    [row] = await message_rows(db)
    assert (row.status, row.in_doubt_since) == (MessageStatus.PENDING, T0)
    assert len(postmark.state.requests) == 1 and postmark.state.accepted == []


async def test_the_search_pages_through_a_recipients_mail_newest_first(
    postmark: PostmarkHttpServer,
) -> None:
    """One customer's mail of one template can fill more than a page of the search: the
    message in doubt is found on whichever page it falls, and a message on none is not."""
    taken = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(150):
        postmark.state.accepted.append(
            PostmarkMessage(
                f"pm-{n}",
                {
                    "To": "ada@example.com",
                    "Tag": "dunning/payment-failed",
                    "Metadata": {"message_id": f"ours-{n}"},
                },
                taken + timedelta(minutes=n),
            )
        )
    transport = postmark_transport(postmark)

    def query(message_id: str) -> SentQuery:
        return SentQuery(message_id, "ada@example.com", "dunning/payment-failed", broadcast=False)

    oldest = await transport.find_sent(query("ours-0"))
    assert oldest == SendResult("pm-0", accepted_at=taken)
    assert [s["offset"] for s in postmark.state.searches] == ["0", "100"]
    assert await transport.find_sent(query("ours-150")) is None
    assert (
        await transport.find_sent(
            SentQuery("ours-0", "ada@example.com", "dunning/payment-failed", broadcast=True)
        )
        is None
    )


async def test_a_team_notice_in_doubt_is_found_on_the_transactional_stream(
    postmark: PostmarkHttpServer, db: SessionMaker
) -> None:
    """Team notices go out as transactional mail whatever the lifecycle (a win-back's
    included), and a doubtful one is looked for there."""
    held = Hold()
    postmark.state.replies.append(held)
    mail = mail_activities(postmark_transport(postmark), db, team_email="team@example.com")
    notice = TeamNotice(
        key="winback-cus_Team1-1/0-notify_team",
        customer_id="cus_Team1",
        workflow_id="winback-cus_Team1-1",
        subject="Win-back started: customer cus_Team1",
        text="Automation winback-default reached step 0-notify_team.",
        lifecycle=Lifecycle.WINBACK,
        automation="winback-default",
    )
    attempt = asyncio.create_task(at(T0).run(mail.notify_team, notice))
    await held.arrival()
    held.release()
    with pytest.raises(ApplicationError, match="may have gone out"):
        await attempt

    found = await at(T0 + timedelta(seconds=5)).run(mail.notify_team, notice)

    assert found.status == MessageStatus.SENT
    [row] = await message_rows(db)
    assert row.provider_message_id == postmark.state.message_ids[0]
    assert len(postmark.state.requests) == 1
    [search] = postmark.state.searches
    assert (search["tag"], search["messagestream"]) == ("team/notice", TRANSACTIONAL_STREAM)


@pytest.mark.parametrize(
    "reply",
    [
        (503, b"<html>503 Service Unavailable</html>"),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}),
        (200, b"<html>a proxy's page</html>"),
        (200, {"Messages": [{"Metadata": {"message_id": "ours-0"}}]}),
        (200, {"TotalCount": 1, "Messages": ["not a message"]}),
    ],
    ids=["outage", "rate-limited", "not-json", "no-message-id", "not-a-message"],
)
async def test_a_search_answer_that_says_nothing_about_the_message_is_asked_again(
    postmark: PostmarkHttpServer, reply: tuple[int, dict[str, Any] | bytes]
) -> None:
    postmark.state.search_replies.append(reply)
    query = SentQuery("ours-0", "ada@example.com", "dunning/payment-failed", broadcast=False)
    with pytest.raises(TemporarySendError, match="message search failed"):
        await postmark_transport(postmark).find_sent(query)
