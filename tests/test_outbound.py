"""Outbound webhooks (the `webhook` step) and team notices to Slack: signed as Stripe signs
its own, verified by a local receiver with the `stripe` library's own check, sent only to
allow-listed hosts, retried on 5xx and timeouts, failed visibly on a 4xx, posted to Slack
once per notice; secrets never in logs."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import stripe
from pydantic import SecretStr, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from stripe_lifecycle.activities.interface import (
    Outbound,
    TeamNotice,
    WebhookRequest,
    WebhookResult,
)
from stripe_lifecycle.activities.mail import MailActivities
from stripe_lifecycle.activities.outbound import OutboundActivities
from stripe_lifecycle.domain import outbound
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.mail.transports import SmtpTransport
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Message, MessageStatus

from .conftest import free_port
from .delivery_helpers import PUBLIC_URL, mail_activities, message_rows, step_email
from .fakes import SmtpInbox, running_smtp
from .webhook_receivers import (
    OUTBOUND_SECRET,
    ReceiverServer,
    Reply,
    SlackServer,
    running_receiver,
    running_slack,
)

KEY = "event-dispute-alert-evt_1Disp/1-webhook"
PAYLOAD: dict[str, Any] = {
    "automation": "dispute-alert",
    "step": "1-webhook",
    "customer": {"id": "cus_Out1"},
    "object": {"id": "dp_1Test", "amount": 4900, "currency": "usd"},
}
NOW = 1_767_225_600


# --- the signature ----------------------------------------------------------------------


def test_the_signature_is_stripes_scheme_under_our_header() -> None:
    body = outbound.event_body(KEY, "dispute.opened", NOW, PAYLOAD)
    header = outbound.signature_header(body, OUTBOUND_SECRET, NOW)
    # Byte for byte what Stripe's library would put in Stripe-Signature for this body.
    assert header == stripe.WebhookSignature.generate_signature_header(
        body.decode(), OUTBOUND_SECRET, NOW
    )
    # An independent HMAC over "{t}.{body}".
    expected = hmac.new(
        OUTBOUND_SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert stripe.WebhookSignature.verify_header(body, header, OUTBOUND_SECRET, tolerance=None)
    assert outbound.verify(header, body, OUTBOUND_SECRET, now=NOW + 10) == NOW


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("body", "no signature matches"),
        ("secret", "no signature matches"),
        ("old", "old"),
        ("no-t", "no timestamp"),
        ("no-v1", "no v1 signature"),
        ("bad-t", "not a number"),
    ],
)
def test_verify_refuses_what_does_not_prove_the_body(change: str, why: str) -> None:
    body = outbound.event_body(KEY, "dispute.opened", NOW, PAYLOAD)
    header = outbound.signature_header(body, OUTBOUND_SECRET, NOW)
    secret, now = OUTBOUND_SECRET, float(NOW)
    if change == "body":
        body = body.replace(b"4900", b"4901")
    elif change == "secret":
        secret = "another-secret"
    elif change == "old":
        now = NOW + 301.0
    elif change == "no-t":
        header = header.split(",", 1)[1]
    elif change == "no-v1":
        header = header.split(",", 1)[0]
    elif change == "bad-t":
        header = header.replace(f"t={NOW}", "t=soon")
    with pytest.raises(outbound.SignatureError, match=why):
        outbound.verify(header, body, secret, 300, now=now)


def test_verify_accepts_any_signature_while_a_secret_is_rolled() -> None:
    body = b'{"id":"x"}'
    old = outbound.sign(body, "old-secret", NOW)
    header = f"{outbound.signature_header(body, OUTBOUND_SECRET, NOW)},v1={old}"
    assert outbound.verify(header, body, "old-secret", now=NOW) == NOW
    assert outbound.verify(header, body, OUTBOUND_SECRET, now=NOW) == NOW


def test_the_body_is_shaped_like_a_stripe_event() -> None:
    body = json.loads(outbound.event_body(KEY, "dispute.opened", NOW, PAYLOAD))
    assert body == {
        "id": KEY,
        "object": "event",
        "type": "dispute.opened",
        "created": NOW,
        "data": PAYLOAD,
    }


# --- the allow-list ---------------------------------------------------------------------

HOSTS = outbound.parse_hosts("app.example.com, Hooks.Example.com:8443,127.0.0.1:9000")


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://app.example.com/hooks/billing", None),
        ("https://APP.example.com./hooks", None),
        ("http://app.example.com:8080/hooks", None),  # a bare host: any port
        ("https://hooks.example.com:8443/x", None),
        ("https://hooks.example.com/x", "not in LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS"),
        ("http://127.0.0.1:9000/hook", None),
        ("http://127.0.0.1:9001/hook", "not in"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is not in"),
        ("https://app.example.com.evil.test/x", "not in"),
        ("https://evil.test/?u=https://app.example.com", "not in"),
        ("https://app.example.com@evil.test/", "credentials"),
        ("https://user:pw@app.example.com/", "credentials"),
        ("ftp://app.example.com/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("app.example.com/hooks", "https://"),
        ("https:///hooks", "no host"),
        ("https://app.example.com:99999/", "cannot be read"),
    ],
)
def test_only_allow_listed_hosts_receive_webhooks(url: str, refusal: str | None) -> None:
    found = outbound.url_refusal(url, HOSTS)
    if refusal is None:
        assert found is None and outbound.host_allowed(url, HOSTS)
    else:
        assert found is not None and refusal in found and not outbound.host_allowed(url, HOSTS)


def test_no_host_is_allowed_while_the_list_is_empty() -> None:
    assert not outbound.host_allowed("https://app.example.com/", outbound.parse_hosts(""))


@pytest.mark.parametrize("entry", ["https://app.example.com", "app.example.com/hooks", "a@b"])
def test_settings_refuse_a_host_entry_that_is_not_a_host(entry: str) -> None:
    with pytest.raises(ValidationError, match="LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS entry 2"):
        Settings(outbound_webhook_hosts=f"ok.example.com,{entry}")


def test_settings_refuse_a_slack_webhook_that_is_no_url_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="LIFECYCLE_TEAM_SLACK_WEBHOOK") as raised:
        Settings(team_slack_webhook="hooks.slack.com/services/T0/B0/secrettoken")
    assert "secrettoken" not in str(raised.value)


def test_settings_read_the_outbound_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_OUTBOUND_WEBHOOK_SECRET", OUTBOUND_SECRET)
    monkeypatch.setenv("LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS", "app.example.com,127.0.0.1:9000")
    monkeypatch.setenv("LIFECYCLE_TEAM_SLACK_WEBHOOK", "https://hooks.slack.com/services/T/B/x")
    settings = Settings()
    assert settings.outbound_webhook_secret is not None
    assert settings.outbound_webhook_secret.get_secret_value() == OUTBOUND_SECRET
    assert settings.outbound_hosts() == {"app.example.com", "127.0.0.1:9000"}
    assert settings.team_slack_webhook is not None
    assert OUTBOUND_SECRET not in repr(settings)


# --- the send_webhook activity ----------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[ReceiverServer]:
    yield from running_receiver()


def activities(
    receiver: ReceiverServer, *, secret: str | None = OUTBOUND_SECRET, timeout: float = 10.0
) -> OutboundActivities:
    return OutboundActivities(
        SecretStr(secret) if secret is not None else None,
        outbound.parse_hosts(receiver.host),
        client=lambda: httpx.AsyncClient(timeout=timeout),
    )


def webhook(receiver: ReceiverServer, key: str = KEY) -> WebhookRequest:
    return WebhookRequest(
        url=f"{receiver.url}/hooks/billing?token=pathsecret1",
        event="dispute.opened",
        idempotency_key=key,
        payload=PAYLOAD,
    )


async def test_a_webhook_is_delivered_signed_with_its_idempotency_key(
    receiver: ReceiverServer,
) -> None:
    result = await ActivityEnvironment().run(activities(receiver).send_webhook, webhook(receiver))
    assert (result.status, result.http_status) == (outbound.DELIVERED, 200)
    assert result.detail == f"{receiver.url} answered 200"
    [got] = receiver.state.received
    assert got.verified  # the `stripe` library's own check, with the shared secret
    assert got.path == "/hooks/billing?token=pathsecret1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == KEY
    body = got.json()
    assert (body["id"], body["object"], body["type"]) == (KEY, "event", "dispute.opened")
    assert body["data"] == PAYLOAD and isinstance(body["created"], int)
    assert outbound.verify(got.headers["Lifecycle-Signature"], got.body, OUTBOUND_SECRET) > 0


async def test_a_5xx_raises_for_a_retry_that_then_delivers_the_same_event(
    receiver: ReceiverServer,
) -> None:
    receiver.state.replies.append(Reply(503, b"upstream down"))
    send = activities(receiver).send_webhook
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(send, webhook(receiver))
    assert raised.value.type == outbound.WEBHOOK_UNAVAILABLE
    assert not raised.value.non_retryable and "answered 503" in str(raised.value)
    retried = await ActivityEnvironment().run(send, webhook(receiver))
    assert retried.status == outbound.DELIVERED
    first, second = receiver.state.received
    assert first.verified and second.verified
    # The same event both times: the receiver dedupes the second by its id.
    assert first.json() == second.json()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == KEY


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_answers_that_say_not_now_are_retried(receiver: ReceiverServer, status: int) -> None:
    receiver.state.replies.append(Reply(status))
    with pytest.raises(ApplicationError, match=f"answered {status}") as raised:
        await ActivityEnvironment().run(activities(receiver).send_webhook, webhook(receiver))
    assert raised.value.type == outbound.WEBHOOK_UNAVAILABLE and not raised.value.non_retryable


async def test_a_4xx_fails_the_step_with_the_status_and_the_start_of_the_body(
    receiver: ReceiverServer,
) -> None:
    receiver.state.replies.append(Reply(404, b"no such hook " + b"x" * 500))
    result = await ActivityEnvironment().run(activities(receiver).send_webhook, webhook(receiver))
    assert (result.status, result.http_status) == (outbound.FAILED, 404)
    assert result.detail.startswith(f"{receiver.url} answered 404: no such hook xxx")
    assert result.detail.endswith("x" * 187) and "x" * 188 not in result.detail
    assert len(receiver.state.received) == 1


async def test_a_redirect_is_not_followed(receiver: ReceiverServer) -> None:
    receiver.state.replies.append(Reply(302, b""))
    result = await ActivityEnvironment().run(activities(receiver).send_webhook, webhook(receiver))
    assert (result.status, result.http_status) == (outbound.FAILED, 302)
    assert len(receiver.state.received) == 1


async def test_a_host_not_allowed_gets_nothing(receiver: ReceiverServer) -> None:
    send = OutboundActivities(SecretStr(OUTBOUND_SECRET), {"app.example.com"}).send_webhook
    result = await ActivityEnvironment().run(send, webhook(receiver))
    assert result.status == outbound.FAILED and result.http_status is None
    assert result.detail == (
        "not sent: the host 127.0.0.1 is not in LIFECYCLE_OUTBOUND_WEBHOOK_HOSTS"
    )
    assert receiver.state.received == []


async def test_without_a_secret_nothing_is_sent(receiver: ReceiverServer) -> None:
    result = await ActivityEnvironment().run(
        activities(receiver, secret=None).send_webhook, webhook(receiver)
    )
    assert result.status == outbound.FAILED
    assert "LIFECYCLE_OUTBOUND_WEBHOOK_SECRET" in result.detail
    assert receiver.state.received == []


async def test_a_timeout_is_retried(receiver: ReceiverServer) -> None:
    receiver.state.replies.append(Reply(200, delay=1.0))
    with pytest.raises(ApplicationError, match="timed out") as raised:
        await ActivityEnvironment().run(
            activities(receiver, timeout=0.2).send_webhook, webhook(receiver)
        )
    assert raised.value.type == outbound.WEBHOOK_UNAVAILABLE and not raised.value.non_retryable


async def test_an_unreachable_endpoint_is_retried() -> None:
    port = free_port()  # nothing listens there
    send = OutboundActivities(
        SecretStr(OUTBOUND_SECRET), {f"127.0.0.1:{port}"}, client=lambda: httpx.AsyncClient()
    ).send_webhook
    request = WebhookRequest(f"http://127.0.0.1:{port}/hook", "dispute.opened", KEY, PAYLOAD)
    with pytest.raises(ApplicationError, match="unreachable") as raised:
        await ActivityEnvironment().run(send, request)
    assert raised.value.type == outbound.WEBHOOK_UNAVAILABLE


async def test_secrets_and_url_paths_stay_out_of_logs_and_details(
    receiver: ReceiverServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.state.replies.extend([Reply(500), Reply(404, b"gone"), Reply(200)])
    send = activities(receiver).send_webhook
    outcomes: list[str] = []
    for _ in range(3):
        try:
            result = await ActivityEnvironment().run(send, webhook(receiver))
            outcomes.append(result.detail)
        except ApplicationError as exc:
            outcomes.append(str(exc))
    refused = await ActivityEnvironment().run(
        OutboundActivities(SecretStr(OUTBOUND_SECRET), set()).send_webhook, webhook(receiver)
    )
    outcomes.append(refused.detail)
    shown = caplog.text + "\n".join(outcomes)
    assert "delivered" in caplog.text and "answered 404" in caplog.text
    for secret in (OUTBOUND_SECRET, "pathsecret1"):
        assert secret not in shown


# --- through a worker, with the retry timing workflows give it ---------------------------


@workflow.defn(sandboxed=False)
class WebhookStepWorkflow:
    """One `webhook` step as the engine runs it."""

    @workflow.run
    async def run(self, request: WebhookRequest) -> WebhookResult:
        return await workflow.execute_activity_method(
            Outbound.send_webhook,
            request,
            start_to_close_timeout=outbound.WEBHOOK_ATTEMPT_TIMEOUT,
            schedule_to_close_timeout=outbound.WEBHOOK_GIVE_UP,
            retry_policy=RetryPolicy(
                initial_interval=outbound.WEBHOOK_RETRY_INITIAL,
                backoff_coefficient=outbound.WEBHOOK_RETRY_BACKOFF,
                maximum_interval=outbound.WEBHOOK_RETRY_MAX_INTERVAL,
            ),
        )


async def run_step(
    env: WorkflowEnvironment, receiver: ReceiverServer, task_queue: str
) -> WebhookResult:
    async with Worker(
        env.client,
        task_queue=task_queue,
        workflows=[WebhookStepWorkflow],
        activities=[activities(receiver).send_webhook],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        return await env.client.execute_workflow(
            WebhookStepWorkflow.run,
            webhook(receiver),
            id=f"webhook-step-{uuid.uuid4().hex}",
            task_queue=task_queue,
        )


async def test_a_worker_retries_5xx_with_backoff_until_delivered(
    time_skipping_env: WorkflowEnvironment, receiver: ReceiverServer, task_queue: str
) -> None:
    receiver.state.replies.extend([Reply(500), Reply(502), Reply(503)])
    result = await run_step(time_skipping_env, receiver, task_queue)
    assert (result.status, result.http_status) == (outbound.DELIVERED, 200)
    assert len(receiver.state.received) == 4
    assert all(r.verified for r in receiver.state.received)
    assert len({r.json()["id"] for r in receiver.state.received}) == 1


async def test_a_worker_ends_the_step_failed_on_a_4xx_without_retrying(
    time_skipping_env: WorkflowEnvironment, receiver: ReceiverServer, task_queue: str
) -> None:
    receiver.state.default = Reply(410, b"endpoint retired")
    result = await run_step(time_skipping_env, receiver, task_queue)
    assert (result.status, result.http_status) == (outbound.FAILED, 410)
    assert "endpoint retired" in result.detail
    assert len(receiver.state.received) == 1


# --- team notices to Slack --------------------------------------------------------------

TEAM = "team@example.com"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    yield from running_slack()


@pytest.fixture
def inbox() -> Iterator[SmtpInbox]:
    yield from running_smtp()


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def notice(key: str = "event-dispute-alert-evt_1Disp/0-notify_team") -> TeamNotice:
    return TeamNotice(
        key=key,
        customer_id="cus_Slack1",
        workflow_id=key.rpartition("/")[0],
        subject="Dispute opened: customer cus_Slack1",
        text="Automation dispute-alert reached step 0 for customer cus_Slack1, $49.00 <disputed>.",
        lifecycle=Lifecycle.DUNNING,
        automation="dispute-alert",
    )


def team_mail(
    sessionmaker: SessionMaker,
    inbox: SmtpInbox,
    slack: SlackServer | None,
    *,
    team_email: str | None = TEAM,
) -> MailActivities:
    return mail_activities(
        SmtpTransport(host="127.0.0.1", port=inbox.port),
        sessionmaker,
        team_email=team_email,
        team_slack_webhook=SecretStr(slack.webhook_url) if slack else None,
    )


async def test_a_notice_reaches_slack_once_with_the_customer_link(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    mail = team_mail(sessionmaker, inbox, slack)
    first = await ActivityEnvironment().run(mail.notify_team, notice())
    again = await ActivityEnvironment().run(mail.notify_team, notice())
    assert first.status == again.status == MessageStatus.SENT
    assert first.message_id == again.message_id
    [posted] = slack.state.received
    assert posted.headers["Content-Type"] == "application/json"
    assert list(posted.json()) == ["text"]
    assert posted.json()["text"] == (
        "*Dispute opened: customer cus_Slack1*\n"
        "Automation dispute-alert reached step 0 for customer cus_Slack1, "
        "$49.00 &lt;disputed&gt;.\n"
        f"<{PUBLIC_URL}/v1/customers/cus_Slack1|Customer cus_Slack1>"
    )
    assert len(inbox.received) == 1 and inbox.received[0]["To"] == TEAM
    rows = {row.transport: row for row in await message_rows(sessionmaker)}
    assert set(rows) == {"smtp", "slack"}
    assert rows["slack"].send_key == notice().key + "/slack"
    assert rows["slack"].template == "team/notice" and rows["slack"].status == MessageStatus.SENT
    assert rows["smtp"].status == MessageStatus.SENT


async def test_a_slack_5xx_is_retried_and_the_email_goes_once(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    slack.state.replies.append(Reply(500, b"rollup_error"))
    mail = team_mail(sessionmaker, inbox, slack)
    with pytest.raises(ApplicationError, match="Slack answered 500") as raised:
        await ActivityEnvironment().run(mail.notify_team, notice())
    assert not raised.value.non_retryable
    statuses = {r.transport: r.status for r in await message_rows(sessionmaker)}
    assert statuses == {"smtp": MessageStatus.SENT, "slack": MessageStatus.RETRYING}
    retried = await ActivityEnvironment().run(mail.notify_team, notice())
    assert retried.status == MessageStatus.SENT
    assert len(slack.state.received) == 2 and len(inbox.received) == 1
    statuses = {r.transport: r.status for r in await message_rows(sessionmaker)}
    assert statuses == {"smtp": MessageStatus.SENT, "slack": MessageStatus.SENT}


async def test_a_slack_refusal_is_recorded_and_the_email_still_goes(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    slack.state.replies.append(Reply(404, b"channel_not_found"))
    mail = team_mail(sessionmaker, inbox, slack)
    result = await ActivityEnvironment().run(mail.notify_team, notice())
    again = await ActivityEnvironment().run(mail.notify_team, notice())
    assert result.status == again.status == MessageStatus.SENT  # the email's
    assert len(inbox.received) == 1 and len(slack.state.received) == 1
    rows = {row.transport: row for row in await message_rows(sessionmaker)}
    assert rows["slack"].status == MessageStatus.FAILED
    assert rows["slack"].error == "Slack answered 404: channel_not_found"


async def test_with_slack_alone_the_notice_is_posted_and_recorded(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    mail = team_mail(sessionmaker, inbox, slack, team_email=None)
    result = await ActivityEnvironment().run(mail.notify_team, notice())
    assert result.status == MessageStatus.SENT and result.error is None
    [row] = await message_rows(sessionmaker)
    assert (row.transport, row.template, row.status) == ("slack", "team/notice", "sent")
    assert len(slack.state.received) == 1 and inbox.received == []


async def test_without_email_or_slack_the_notice_fails_naming_the_variable(
    sessionmaker: SessionMaker, inbox: SmtpInbox
) -> None:
    mail = team_mail(sessionmaker, inbox, None, team_email=None)
    result = await ActivityEnvironment().run(mail.notify_team, notice())
    assert (result.status, result.error) == (
        MessageStatus.FAILED,
        "LIFECYCLE_TEAM_EMAIL is not set",
    )


async def test_the_slack_url_stays_out_of_logs_and_rows(
    sessionmaker: SessionMaker,
    inbox: SmtpInbox,
    slack: SlackServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.state.replies.extend([Reply(503), Reply(400, b"invalid_payload")])
    mail = team_mail(sessionmaker, inbox, slack)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(mail.notify_team, notice())
    await ActivityEnvironment().run(mail.notify_team, notice())
    rows = await message_rows(sessionmaker)
    shown = caplog.text + str(raised.value) + "".join(f"{r.error}{r.text}{r.to}" for r in rows)
    assert "Slack answered 400" in shown
    assert "slacktoken" not in shown and slack.webhook_url not in shown


async def test_team_notices_take_no_place_under_the_marketing_cap(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    mail = team_mail(sessionmaker, inbox, slack)
    winback = dataclasses.replace(notice(), lifecycle=Lifecycle.WINBACK)
    await ActivityEnvironment().run(mail.notify_team, winback)
    sent = await ActivityEnvironment().run(
        mail.send_email, step_email("winback", customer_id=winback.customer_id)
    )
    assert sent.status == MessageStatus.SENT


async def test_a_notice_email_a_dead_worker_left_pending_is_not_sent_again(
    sessionmaker: SessionMaker, inbox: SmtpInbox, slack: SlackServer
) -> None:
    """An earlier attempt recorded the team email and died mid-send: SMTP cannot be asked
    whether it went, so it is unknown, not sent twice; Slack's post still goes once."""
    mail = team_mail(sessionmaker, inbox, slack)
    async with sessionmaker() as session:
        session.add(
            Message(
                id="22222222-2222-2222-2222-222222222222",
                send_key=notice().key,
                customer_id="cus_Slack1",
                workflow_id=notice().workflow_id,
                lifecycle=Lifecycle.DUNNING,
                automation="dispute-alert",
                step="0-notify_team",
                template="team/notice",
                to=TEAM,
                transport="smtp",
                status=MessageStatus.PENDING,
            )
        )
        await session.commit()

    result = await ActivityEnvironment().run(mail.notify_team, notice())

    assert (result.status, result.error) == (MessageStatus.UNKNOWN, "send interrupted")
    assert inbox.received == [] and len(slack.state.received) == 1
    statuses = {r.transport: r.status for r in await message_rows(sessionmaker)}
    assert statuses == {"smtp": MessageStatus.UNKNOWN, "slack": MessageStatus.SENT}
