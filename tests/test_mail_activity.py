"""The send_email activity: rendered, recorded first, sent at most once, suppressed in test
mode; on SQLite and PostgreSQL, through a real local SMTP server; and the messages API."""

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from stripe_lifecycle.activities.interface import SendEmailInput
from stripe_lifecycle.domain.links import make_token
from stripe_lifecycle.mail.transports import (
    OutboxTransport,
    OutgoingEmail,
    PermanentSendError,
    SendResult,
    SmtpTransport,
    TemporarySendError,
    UncertainSendError,
)
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer, Message, MessageClick, MessageStatus

from .conftest import (
    LINK_SECRET,
    SUPPORT_KEY,
    app_settings,
    running_api,
    temporal_address,
)
from .delivery_helpers import (
    CUSTOMER,
    INVOICE,
    PUBLIC_URL,
    mail_activities,
)
from .fakes import SmtpInbox, running_smtp

PORTAL = "https://billing.stripe.com/p/session/test_YWNjdF8x"


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    yield from running_smtp()


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def request(step: str = "0-dunning-payment-failed", **overrides: Any) -> SendEmailInput:
    values: dict[str, Any] = {
        "workflow_id": "dunning-in_1Test",
        "step": step,
        "customer_id": "cus_Mail1",
        "lifecycle": "dunning",
        "automation": "dunning-default",
        "template": "dunning/payment-failed",
        "to": "ada@example.com",
        "livemode": False,
        "context": {"customer": CUSTOMER, "invoice": INVOICE},
        "destinations": {"update_payment": PORTAL},
    }
    values.update(overrides)
    return SendEmailInput(**values)


async def rows(sessionmaker: SessionMaker) -> list[Message]:
    async with sessionmaker() as session:
        return list((await session.execute(select(Message))).scalars())


async def test_sends_once_through_smtp_even_when_the_activity_runs_again(
    sessionmaker: SessionMaker, inbox: SmtpInbox
) -> None:
    mail = mail_activities(SmtpTransport(host="127.0.0.1", port=inbox.port), sessionmaker)
    env = ActivityEnvironment()
    first = await env.run(mail.send_email, request())
    again = await env.run(mail.send_email, request())
    assert (first.status, again.message_id) == (MessageStatus.SENT, first.message_id)
    assert len(inbox.received) == 1
    received = inbox.received[0]
    assert received["To"] == "ada@example.com"
    assert "$49.00" in received["Subject"] or "$49.00" in received.as_string()
    [row] = await rows(sessionmaker)
    assert row.status == MessageStatus.SENT and row.sent_at is not None
    assert row.provider_message_id == received["Message-ID"]
    [tracked] = row.links
    assert tracked.startswith(f"{PUBLIC_URL}/t/")
    assert f'href="{tracked}"' in row.html and tracked in row.text and "INV-0042" in row.text
    assert PORTAL not in row.html  # only the tracked link is in the email
    assert row.destinations == {"update_payment": PORTAL}


async def test_outbox_records_without_sending(sessionmaker: SessionMaker) -> None:
    result = await ActivityEnvironment().run(
        mail_activities(OutboxTransport(), sessionmaker).send_email, request()
    )
    [row] = await rows(sessionmaker)
    assert (result.status, row.status, row.transport) == ("recorded", "recorded", "outbox")
    assert row.subject and row.html and row.text


async def test_the_message_keeps_the_subscription_it_is_about(
    sessionmaker: SessionMaker,
) -> None:
    mail = mail_activities(OutboxTransport(), sessionmaker)
    await ActivityEnvironment().run(mail.send_email, request(subscription_id="sub_Mail1"))
    await ActivityEnvironment().run(mail.send_email, request("1-dunning-reminder"))
    assert {row.step: row.subscription_id for row in await rows(sessionmaker)} == {
        "0-dunning-payment-failed": "sub_Mail1",
        "1-dunning-reminder": None,
    }


async def test_a_deleted_customer_is_mailed_no_more(
    sessionmaker: SessionMaker, inbox: SmtpInbox
) -> None:
    async with sessionmaker() as session:
        session.add(Customer(customer_id="cus_Mail1", subscriptions=[], deleted=True))
        await session.commit()
    mail = mail_activities(SmtpTransport(host="127.0.0.1", port=inbox.port), sessionmaker)
    result = await ActivityEnvironment().run(mail.send_email, request())
    [row] = await rows(sessionmaker)
    assert (result.status, row.status) == ("suppressed", "suppressed")
    assert row.error == "the customer was deleted in Stripe"
    assert inbox.received == []


@pytest.mark.parametrize(
    ("to", "livemode", "status", "reason"),
    [
        ("ada@gmail.com", False, MessageStatus.SUPPRESSED, "test mode: gmail.com"),
        ("ada@gmail.com", True, MessageStatus.SENT, None),
        ("ada@EXAMPLE.com", False, MessageStatus.SENT, None),
        (None, True, MessageStatus.SUPPRESSED, "no email address"),
    ],
)
async def test_test_mode_only_mails_allowed_domains(
    sessionmaker: SessionMaker,
    inbox: SmtpInbox,
    to: str | None,
    livemode: bool,
    status: str,
    reason: str | None,
) -> None:
    mail = mail_activities(SmtpTransport(host="127.0.0.1", port=inbox.port), sessionmaker)
    result = await ActivityEnvironment().run(mail.send_email, request(to=to, livemode=livemode))
    assert result.status == status
    assert len(inbox.received) == (1 if status == MessageStatus.SENT else 0)
    [row] = await rows(sessionmaker)
    assert row.status == status
    if reason:
        assert row.error is not None and reason in row.error


class ScriptedTransport:
    """Fails as scripted, then sends; counts what it really sent."""

    name = "smtp"

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.sent: list[OutgoingEmail] = []

    async def send(self, email: OutgoingEmail) -> SendResult:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(email)
        return SendResult(provider_message_id=f"pm-{len(self.sent)}")


async def test_permanent_refusal_fails_the_message_visibly_and_is_not_retried(
    sessionmaker: SessionMaker,
) -> None:
    transport = ScriptedTransport(PermanentSendError("406 inactive recipient"))
    mail = mail_activities(transport, sessionmaker)
    result = await ActivityEnvironment().run(mail.send_email, request())
    again = await ActivityEnvironment().run(mail.send_email, request())
    assert (result.status, result.error) == (MessageStatus.FAILED, "406 inactive recipient")
    assert again.status == MessageStatus.FAILED and transport.sent == []


async def test_temporary_failure_raises_for_a_retry_that_then_sends_once(
    sessionmaker: SessionMaker,
) -> None:
    transport = ScriptedTransport(TemporarySendError("429 rate limited"))
    mail = mail_activities(transport, sessionmaker)
    with pytest.raises(TemporarySendError):
        await ActivityEnvironment().run(mail.send_email, request())
    assert [r.status for r in await rows(sessionmaker)] == [MessageStatus.RETRYING]
    retried = await ActivityEnvironment().run(mail.send_email, request())
    assert retried.status == MessageStatus.SENT and len(transport.sent) == 1
    assert transport.sent[0].metadata["message_id"] == retried.message_id


async def test_uncertain_send_is_not_retried(sessionmaker: SessionMaker) -> None:
    transport = ScriptedTransport(UncertainSendError("connection lost after the request"))
    mail = mail_activities(transport, sessionmaker)
    result = await ActivityEnvironment().run(mail.send_email, request())
    again = await ActivityEnvironment().run(mail.send_email, request())
    assert result.status == again.status == MessageStatus.UNKNOWN
    assert transport.sent == []


async def test_interrupted_send_is_never_repeated(sessionmaker: SessionMaker) -> None:
    async with sessionmaker() as session:
        session.add(
            Message(
                id="11111111-1111-1111-1111-111111111111",
                send_key="dunning-in_1Test/0-dunning-payment-failed",
                customer_id="cus_Mail1",
                workflow_id="dunning-in_1Test",
                lifecycle="dunning",
                automation="dunning-default",
                step="0-dunning-payment-failed",
                template="dunning/payment-failed",
                to="ada@example.com",
                transport="smtp",
                status=MessageStatus.PENDING,
            )
        )
        await session.commit()
    transport = ScriptedTransport()
    result = await ActivityEnvironment().run(
        mail_activities(transport, sessionmaker).send_email, request()
    )
    assert result.status == MessageStatus.UNKNOWN and transport.sent == []


async def test_unrenderable_template_is_a_non_retryable_error(sessionmaker: SessionMaker) -> None:
    mail = mail_activities(ScriptedTransport(), sessionmaker)
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(mail.send_email, request(context={}))
    assert info.value.non_retryable and info.value.type == "TemplateError"
    assert await rows(sessionmaker) == []


async def test_messages_api_shows_the_log_and_each_message_as_sent(
    dev_env: WorkflowEnvironment, sqlite_url: str, task_queue: str
) -> None:
    engine = create_engine(sqlite_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        session.add(Customer(customer_id="cus_Mail1", email="ada@example.com"))
        await session.commit()
    mail = mail_activities(OutboxTransport(), sessionmaker)
    env = ActivityEnvironment()
    first = await env.run(mail.send_email, request())
    second = await env.run(
        mail.send_email, request(step="1-dunning-reminder", template="dunning/reminder")
    )
    await engine.dispose()

    auth = {"Authorization": f"Bearer {SUPPORT_KEY}"}
    settings = app_settings(
        sqlite_url, temporal_address(dev_env), task_queue, public_url=PUBLIC_URL
    )
    async with running_api(settings) as (
        _,
        http,
    ):
        log = (await http.get("/v1/customers/cus_Mail1/messages", headers=auth)).json()
        assert [m["id"] for m in log["messages"]] == [first.message_id, second.message_id]
        assert [m["template"] for m in log["messages"]] == [
            "dunning/payment-failed",
            "dunning/reminder",
        ]
        # The design's fields (customer_id is there too).
        assert set(log["messages"][0]) >= {
            "id", "workflow_id", "lifecycle", "automation", "step", "template",
            "to", "subject", "status", "created_at", "sent_at",
        }  # fmt: skip
        detail = (await http.get(f"/v1/messages/{first.message_id}", headers=auth)).json()
        [tracked] = detail["links"]
        assert tracked in detail["html"] and tracked in detail["text"]

        token = tracked.removeprefix(f"{PUBLIC_URL}/t/")
        click = await http.get(f"/t/{token}")
        assert (click.status_code, click.headers["location"]) == (302, PORTAL)
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        other_link = make_token(LINK_SECRET.encode(), first.message_id, "offer", datetime.now(UTC))
        other_secret = make_token(
            b"another secret", first.message_id, "update_payment", datetime.now(UTC)
        )
        for bad in (forged, other_link, other_secret, "garbage", "a.b"):
            assert (await http.get(f"/t/{bad}")).status_code == 404, bad
        assert (
            await http.get("/v1/customers/cus_Nobody/messages", headers=auth)
        ).status_code == 404
        assert (await http.get("/v1/messages/nope", headers=auth)).status_code == 404
        assert (await http.get(f"/v1/messages/{first.message_id}")).status_code == 401

    engine = create_engine(sqlite_url)
    async with create_sessionmaker(engine)() as session:
        clicks = list((await session.execute(select(MessageClick))).scalars())
    await engine.dispose()
    assert [(c.message_id, c.link) for c in clicks] == [(first.message_id, "update_payment")]
