"""Mail transports against real local servers: aiosmtpd for SMTP, and a stdlib HTTP server
that answers Postmark's documented `POST /email` for Postmark."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr, ValidationError

from stripe_lifecycle.mail.transports import (
    OutboxTransport,
    OutgoingEmail,
    PermanentSendError,
    PostmarkTransport,
    SendResult,
    SmtpTransport,
    TemporarySendError,
    UncertainSendError,
    build_transport,
)
from stripe_lifecycle.settings import ConfigurationError, Settings

from .conftest import LINK_SECRET, free_port
from .fakes import (
    POSTMARK_TOKEN,
    PostmarkHttpServer,
    PostmarkState,
    SmtpInbox,
    running_postmark,
    running_smtp,
    serving,
)

UNSUBSCRIBE = "<https://billing.example.com/u/tok123>, <mailto:unsubscribe@example.com>"

EMAIL = OutgoingEmail(
    to="Ada Lovelace <ada@example.com>",
    sender="Acme Billing <billing@acme.example>",
    subject="Your payment failed — let’s fix it",
    html="<p>Hello Ada, your card was <strong>declined</strong>.</p>",
    text="Hello Ada, your card was declined.",
    headers={
        "List-Unsubscribe": UNSUBSCRIBE,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    },
    metadata={"workflow_id": "customer-cus_123", "step": "dunning-1", "message_id": "m-1"},
    tag="dunning/payment-failed",
)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    files = TlsFiles(cert=folder / "cert.pem", key=folder / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(files.key), "-out", str(files.cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return files


# --- SMTP -------------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SmtpInbox]:
    yield from running_smtp()


def _authenticate(
    _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def tls_smtp_server(tls_files: TlsFiles) -> Iterator[SmtpInbox]:
    """Requires STARTTLS, then AUTH as mailer / s3cret, like a real submission server."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    yield from running_smtp(
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )


async def test_smtp_delivers_both_parts_with_headers_and_message_id(
    smtp_server: SmtpInbox,
) -> None:
    result = await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)

    [delivered] = smtp_server.delivered
    assert delivered.mail_from == "billing@acme.example"
    assert delivered.rcpt_tos == ["ada@example.com"]
    message = delivered.parsed()
    assert message["From"] == "Acme Billing <billing@acme.example>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == "Your payment failed — let’s fix it"
    # Long headers are folded right after the colon; Python's parser keeps that space.
    assert message["List-Unsubscribe"].strip() == UNSUBSCRIBE
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Date"] is not None
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert isinstance(text, EmailMessage) and isinstance(html, EmailMessage)
    assert text.get_content_type() == "text/plain"
    assert text.get_content().strip() == "Hello Ada, your card was declined."
    assert html.get_content_type() == "text/html"
    assert html.get_content().strip() == EMAIL.html
    assert result.provider_message_id is not None
    assert result.provider_message_id == message["Message-ID"]
    assert result.provider_message_id.endswith("@acme.example>")


async def test_smtp_recipient_refused_with_550_is_permanent(smtp_server: SmtpInbox) -> None:
    smtp_server.recipient_replies["ada@example.com"] = "550 5.1.1 No such user"

    with pytest.raises(PermanentSendError, match="550") as raised:
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)

    assert raised.value.code == 550
    assert smtp_server.delivered == []


async def test_smtp_recipient_deferred_with_450_is_temporary(smtp_server: SmtpInbox) -> None:
    smtp_server.recipient_replies["ada@example.com"] = "450 4.2.1 Mailbox busy"

    with pytest.raises(TemporarySendError, match="450"):
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)


async def test_smtp_message_rejected_after_data_is_permanent(smtp_server: SmtpInbox) -> None:
    smtp_server.data_reply = "554 5.7.1 Message rejected as spam"

    with pytest.raises(PermanentSendError, match="554"):
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)


async def test_smtp_nothing_listening_is_temporary() -> None:
    with pytest.raises(TemporarySendError, match="unreachable"):
        await SmtpTransport("127.0.0.1", free_port()).send(EMAIL)


async def test_smtp_silence_after_the_message_is_uncertain(smtp_server: SmtpInbox) -> None:
    # The server has the whole message but never answers: it may deliver it later, so a
    # retry could send a second copy.
    smtp_server.data_delay = 3.0

    with pytest.raises(UncertainSendError, match="may have been accepted"):
        await SmtpTransport("127.0.0.1", smtp_server.port, timeout=0.5).send(EMAIL)


async def test_smtp_header_with_line_break_is_refused_before_connecting() -> None:
    injected = OutgoingEmail(
        to="ada@example.com",
        sender="billing@acme.example",
        subject="Hi\r\nBcc: everyone@example.com",
        html="<p>x</p>",
        text="x",
    )
    # Nothing listens on this port: the message must fail before any connection.
    with pytest.raises(PermanentSendError, match="cannot be encoded"):
        await SmtpTransport("127.0.0.1", free_port()).send(injected)


async def test_smtp_starttls_and_login(tls_smtp_server: SmtpInbox, tls_files: TlsFiles) -> None:
    transport = SmtpTransport(
        "127.0.0.1",
        tls_smtp_server.port,
        username="mailer",
        password="s3cret",
        starttls=True,
        ssl_context=ssl.create_default_context(cafile=tls_files.cert),
    )

    result = await transport.send(EMAIL)

    [delivered] = tls_smtp_server.delivered
    assert delivered.over_tls
    assert delivered.login == b"mailer"
    assert delivered.parsed()["Message-ID"] == result.provider_message_id


async def test_smtp_wrong_password_is_temporary(
    tls_smtp_server: SmtpInbox, tls_files: TlsFiles
) -> None:
    # Every message would fail the same way until an operator fixes the password: keep
    # the mail for a retry rather than failing it for good.
    transport = SmtpTransport(
        "127.0.0.1",
        tls_smtp_server.port,
        username="mailer",
        password="wrong",
        starttls=True,
        ssl_context=ssl.create_default_context(cafile=tls_files.cert),
    )

    with pytest.raises(TemporarySendError, match="535"):
        await transport.send(EMAIL)
    assert tls_smtp_server.delivered == []


async def test_smtp_untrusted_certificate_is_temporary(tls_smtp_server: SmtpInbox) -> None:
    transport = SmtpTransport(
        "127.0.0.1", tls_smtp_server.port, username="mailer", password="s3cret", starttls=True
    )

    with pytest.raises(TemporarySendError, match="CERTIFICATE_VERIFY_FAILED"):
        await transport.send(EMAIL)


# --- Postmark ---------------------------------------------------------------------------


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    yield from running_postmark()


def postmark_transport(
    server: PostmarkHttpServer, token: str = POSTMARK_TOKEN
) -> PostmarkTransport:
    return PostmarkTransport(token, api_url=server.url, message_stream="outbound", timeout=5)


async def test_postmark_sends_every_field_and_returns_the_message_id(
    postmark: PostmarkHttpServer,
) -> None:
    result = await postmark_transport(postmark).send(EMAIL)

    [request] = postmark.state.requests
    assert request.path == "/email"
    assert request.headers["X-Postmark-Server-Token"] == POSTMARK_TOKEN
    assert request.headers["Accept"] == "application/json"
    body = request.body
    assert body["From"] == "Acme Billing <billing@acme.example>"
    assert body["To"] == "Ada Lovelace <ada@example.com>"
    assert body["Subject"] == "Your payment failed — let’s fix it"
    assert body["HtmlBody"] == EMAIL.html
    assert body["TextBody"] == EMAIL.text
    assert body["Metadata"] == {
        "workflow_id": "customer-cus_123",
        "step": "dunning-1",
        "message_id": "m-1",
    }
    assert body["Tag"] == "dunning/payment-failed"
    assert body["MessageStream"] == "outbound"
    assert body["Headers"] == [
        {"Name": "List-Unsubscribe", "Value": UNSUBSCRIBE},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    # Our own signed redirect does the click tracking; Postmark must not rewrite links.
    assert body["TrackLinks"] == "None"
    assert result == SendResult(provider_message_id=postmark.state.message_ids[0])


@pytest.mark.parametrize(
    ("error_code", "message"),
    [
        (406, "You tried to send to a recipient that has been marked as inactive."),
        (300, "Invalid email request: Illegal email address 'ada@'."),
    ],
)
async def test_postmark_refusals_of_the_message_are_permanent(
    postmark: PostmarkHttpServer, error_code: int, message: str
) -> None:
    postmark.state.replies.append((422, {"ErrorCode": error_code, "Message": message}))

    with pytest.raises(PermanentSendError, match=str(error_code)) as raised:
        await postmark_transport(postmark).send(EMAIL)

    assert raised.value.code == error_code
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"ErrorCode": 0, "Message": "Internal server error."}),
        (503, b"<html>Service Unavailable</html>"),
        (502, {"Message": "Bad gateway"}),
        (429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}),
        # Account problems stop every message until an operator acts: keep the mail.
        (422, {"ErrorCode": 405, "Message": "You have run out of credits."}),
        (422, {"ErrorCode": 412, "Message": "Your account is pending approval."}),
        # Not Postmark's judgement on the message: a proxy or firewall in between.
        (403, b"<html><h1>403 Forbidden</h1></html>"),
    ],
)
async def test_postmark_outages_and_account_problems_are_temporary(
    postmark: PostmarkHttpServer, status: int, body: dict[str, Any] | bytes
) -> None:
    postmark.state.replies.append((status, body))

    with pytest.raises(TemporarySendError, match=str(status)):
        await postmark_transport(postmark).send(EMAIL)


async def test_postmark_wrong_server_token_is_temporary(postmark: PostmarkHttpServer) -> None:
    # A bad token fails every message alike; it is a configuration error, not a verdict
    # on this message. Retrying keeps the mail until an operator fixes the token.
    with pytest.raises(TemporarySendError, match="401") as raised:
        await postmark_transport(postmark, token="not-the-token").send(EMAIL)

    assert raised.value.code == 10
    assert postmark.state.message_ids == []


async def test_postmark_unreachable_is_temporary() -> None:
    transport = PostmarkTransport(
        POSTMARK_TOKEN, api_url=f"http://127.0.0.1:{free_port()}", timeout=5
    )

    with pytest.raises(TemporarySendError, match="unreachable"):
        await transport.send(EMAIL)


async def test_postmark_untrusted_certificate_is_temporary(tls_files: TlsFiles) -> None:
    server = PostmarkHttpServer(PostmarkState(token=POSTMARK_TOKEN))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        transport = PostmarkTransport(
            POSTMARK_TOKEN, api_url=f"https://127.0.0.1:{server.server_address[1]}", timeout=5
        )
        with pytest.raises(TemporarySendError, match="CERTIFICATE_VERIFY_FAILED"):
            await transport.send(EMAIL)
    assert server.state.requests == []


@pytest.mark.parametrize(
    "reply",
    [None, (200, b"<html>Accepted</html>")],
    ids=["hang-up", "success-without-json"],
)
async def test_postmark_lost_answer_after_the_request_is_uncertain(
    postmark: PostmarkHttpServer, reply: tuple[int, bytes] | None
) -> None:
    # Postmark read the whole request and may have queued the message: sending it again
    # could deliver a second copy.
    postmark.state.replies.append(reply)

    with pytest.raises(UncertainSendError, match="may have been accepted"):
        await postmark_transport(postmark).send(EMAIL)
    assert len(postmark.state.requests) == 1


# --- build_transport --------------------------------------------------------------------


async def test_build_outbox_records_only() -> None:
    transport = build_transport(Settings(mail_transport="outbox"))

    assert isinstance(transport, OutboxTransport)
    assert transport.name == "outbox"
    assert await transport.send(EMAIL) == SendResult(provider_message_id=None)


async def test_build_smtp_sends_to_the_configured_server(smtp_server: SmtpInbox) -> None:
    settings = Settings(mail_transport="smtp", smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    transport = build_transport(settings)

    assert transport.name == "smtp"
    result = await transport.send(EMAIL)
    [delivered] = smtp_server.delivered
    assert delivered.parsed()["Message-ID"] == result.provider_message_id


async def test_build_transport_waits_for_the_provider_as_long_as_mail_timeout_says(
    smtp_server: SmtpInbox,
) -> None:
    smtp_server.data_delay = 3.0
    settings = Settings(
        mail_transport="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        mail_timeout=0.5,
    )
    # Given up at the setting's half second: at the default 30 s the server's answer,
    # three seconds late, would have come and the email been sent.
    with pytest.raises(UncertainSendError, match="may have been accepted"):
        await build_transport(settings).send(EMAIL)


@pytest.mark.parametrize("seconds", [0, -1, 120, 600])
def test_mail_timeout_must_end_before_the_send_activity_does(seconds: float) -> None:
    with pytest.raises(ValidationError, match="mail_timeout"):
        Settings(mail_timeout=seconds)


async def test_build_smtp_with_starttls_and_login(
    tls_smtp_server: SmtpInbox, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The built transport trusts the system's CAs; point OpenSSL at our test certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    settings = Settings(
        mail_transport="smtp",
        smtp_host="127.0.0.1",
        smtp_port=tls_smtp_server.port,
        smtp_username="mailer",
        smtp_password=SecretStr("s3cret"),
        smtp_starttls=True,
    )

    await build_transport(settings).send(EMAIL)

    [delivered] = tls_smtp_server.delivered
    assert delivered.over_tls
    assert delivered.login == b"mailer"


def test_build_smtp_username_without_password_names_the_variable() -> None:
    settings = Settings(mail_transport="smtp", smtp_username="mailer", smtp_password=None)

    with pytest.raises(ValueError, match="LIFECYCLE_SMTP_PASSWORD"):
        build_transport(settings)


async def test_build_postmark_uses_token_url_and_stream(postmark: PostmarkHttpServer) -> None:
    settings = Settings(
        mail_transport="postmark",
        postmark_server_token=SecretStr(POSTMARK_TOKEN),
        postmark_api_url=postmark.url,
        postmark_message_stream="lifecycle",
    )
    transport = build_transport(settings)

    assert transport.name == "postmark"
    result = await transport.send(EMAIL)
    [request] = postmark.state.requests
    assert request.headers["X-Postmark-Server-Token"] == POSTMARK_TOKEN
    assert request.body["MessageStream"] == "lifecycle"
    assert result.provider_message_id == postmark.state.message_ids[0]


def test_build_postmark_without_token_names_the_variable() -> None:
    settings = Settings(mail_transport="postmark", postmark_server_token=None)

    with pytest.raises(ValueError, match="LIFECYCLE_POSTMARK_SERVER_TOKEN"):
        build_transport(settings)


@pytest.fixture
def implicit_tls_smtp_server(tls_files: TlsFiles) -> Iterator[SmtpInbox]:
    """TLS from the first byte (SMTPS, as on port 465), then AUTH as mailer / s3cret."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    yield from running_smtp(
        ssl_context=context,
        server_hostname="127.0.0.1",
        authenticator=_authenticate,
        auth_required=True,
        auth_require_tls=False,
    )


async def test_smtp_implicit_tls_and_login(
    implicit_tls_smtp_server: SmtpInbox, tls_files: TlsFiles
) -> None:
    transport = SmtpTransport(
        "127.0.0.1",
        implicit_tls_smtp_server.port,
        username="mailer",
        password="s3cret",
        tls=True,
        ssl_context=ssl.create_default_context(cafile=tls_files.cert),
    )
    await transport.send(EMAIL)
    [delivered] = implicit_tls_smtp_server.delivered
    assert delivered.login == b"mailer"
    # The server speaks TLS only: the same send in plain text does not get through.
    with pytest.raises(TemporarySendError):
        await SmtpTransport("127.0.0.1", implicit_tls_smtp_server.port, timeout=2).send(EMAIL)
    assert len(implicit_tls_smtp_server.delivered) == 1


def test_an_smtp_login_without_tls_is_refused_before_any_password_travels() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        SmtpTransport("127.0.0.1", 25, username="mailer", password="s3cret")
    settings = Settings(
        mail_transport="smtp",
        smtp_username="mailer",
        smtp_password="s3cret",
        link_secret=LINK_SECRET,
    )
    with pytest.raises(ConfigurationError, match="LIFECYCLE_SMTP_STARTTLS=true"):
        build_transport(settings)
