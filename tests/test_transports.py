"""Mail transports against real local servers: aiosmtpd for SMTP, and a stdlib HTTP server
that answers Postmark's documented `POST /email` for Postmark."""

from __future__ import annotations

import asyncio
import email
import json
import shutil
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseServer
from typing import Any, TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

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
from stripe_lifecycle.settings import Settings

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


@dataclass(frozen=True)
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    over_tls: bool
    login: bytes | None

    def parsed(self) -> EmailMessage:
        message = email.message_from_bytes(self.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class RecordingHandler:
    """Keeps every accepted message; refuses what a test tells it to."""

    delivered: list[Delivered] = field(default_factory=list)
    recipient_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    data_delay: float = 0.0

    async def handle_RCPT(
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _options: list[str],
    ) -> str:
        if address in self.recipient_replies:
            return self.recipient_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.data_delay)
        if self.data_reply is not None:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        auth = session.auth_data
        self.delivered.append(
            Delivered(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.content,
                over_tls=session.ssl is not None,
                login=auth.login if isinstance(auth, LoginPassword) else None,
            )
        )
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class SmtpServer:
    port: int
    handler: RecordingHandler


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, handler)
    finally:
        controller.stop()


def _authenticate(
    _server: SMTP, _session: Session, _envelope: Envelope, _mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"mailer", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def tls_smtp_server(tls_files: TlsFiles) -> Iterator[SmtpServer]:
    """Requires STARTTLS, then AUTH as mailer / s3cret, like a real submission server."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    handler = RecordingHandler()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield SmtpServer(port, handler)
    finally:
        controller.stop()


async def test_smtp_delivers_both_parts_with_headers_and_message_id(
    smtp_server: SmtpServer,
) -> None:
    result = await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)

    [delivered] = smtp_server.handler.delivered
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


async def test_smtp_recipient_refused_with_550_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.handler.recipient_replies["ada@example.com"] = "550 5.1.1 No such user"

    with pytest.raises(PermanentSendError, match="550") as raised:
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)

    assert raised.value.code == 550
    assert smtp_server.handler.delivered == []


async def test_smtp_recipient_deferred_with_450_is_temporary(smtp_server: SmtpServer) -> None:
    smtp_server.handler.recipient_replies["ada@example.com"] = "450 4.2.1 Mailbox busy"

    with pytest.raises(TemporarySendError, match="450"):
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)


async def test_smtp_message_rejected_after_data_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.handler.data_reply = "554 5.7.1 Message rejected as spam"

    with pytest.raises(PermanentSendError, match="554"):
        await SmtpTransport("127.0.0.1", smtp_server.port).send(EMAIL)


async def test_smtp_nothing_listening_is_temporary() -> None:
    with pytest.raises(TemporarySendError, match="unreachable"):
        await SmtpTransport("127.0.0.1", free_port()).send(EMAIL)


async def test_smtp_silence_after_the_message_is_uncertain(smtp_server: SmtpServer) -> None:
    # The server has the whole message but never answers: it may deliver it later, so a
    # retry could send a second copy.
    smtp_server.handler.data_delay = 3.0

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


async def test_smtp_starttls_and_login(tls_smtp_server: SmtpServer, tls_files: TlsFiles) -> None:
    transport = SmtpTransport(
        "127.0.0.1",
        tls_smtp_server.port,
        username="mailer",
        password="s3cret",
        starttls=True,
        ssl_context=ssl.create_default_context(cafile=tls_files.cert),
    )

    result = await transport.send(EMAIL)

    [delivered] = tls_smtp_server.handler.delivered
    assert delivered.over_tls
    assert delivered.login == b"mailer"
    assert delivered.parsed()["Message-ID"] == result.provider_message_id


async def test_smtp_wrong_password_is_temporary(
    tls_smtp_server: SmtpServer, tls_files: TlsFiles
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
    assert tls_smtp_server.handler.delivered == []


async def test_smtp_untrusted_certificate_is_temporary(tls_smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(
        "127.0.0.1", tls_smtp_server.port, username="mailer", password="s3cret", starttls=True
    )

    with pytest.raises(TemporarySendError, match="CERTIFICATE_VERIFY_FAILED"):
        await transport.send(EMAIL)


# --- Postmark ---------------------------------------------------------------------------

TOKEN = "server-token-1b2c3d"


@dataclass(frozen=True)
class PostmarkRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class PostmarkState:
    token: str
    requests: list[PostmarkRequest] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    # The next answers to give instead of success: (HTTP status, JSON body or raw bytes),
    # or None to read the request and hang up without answering.
    replies: list[tuple[int, dict[str, Any] | bytes] | None] = field(default_factory=list)


class PostmarkHandler(BaseHTTPRequestHandler):
    """Postmark's `POST /email`, as documented: server token, JSON in and out."""

    server: PostmarkHttpServer

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.loads(raw) if raw else {}
        state.requests.append(PostmarkRequest(self.path, dict(self.headers.items()), body))
        if self.headers.get("X-Postmark-Server-Token") != state.token:
            self._answer(401, {"ErrorCode": 10, "Message": "No valid Server token."})
            return
        json_out = self.headers.get("Accept") == "application/json"
        if not json_out or self.headers.get("Content-Type") != "application/json":
            self._answer(422, {"ErrorCode": 409, "Message": "JSON required."})
            return
        if self.path != "/email":
            self._answer(404, b"Not found")
            return
        if state.replies:
            reply = state.replies.pop(0)
            if reply is None:
                self.close_connection = True  # the request was read; no answer comes
                return
            self._answer(*reply)
            return
        message_id = str(uuid.uuid4())
        state.message_ids.append(message_id)
        self._answer(
            200,
            {
                "To": body["To"],
                "SubmittedAt": datetime.now(UTC).isoformat(),
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            },
        )

    def _answer(self, status: int, body: dict[str, Any] | bytes) -> None:
        is_json = isinstance(body, dict)
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if is_json else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass  # keep test output quiet


class PostmarkHttpServer(ThreadingHTTPServer):
    def __init__(self, state: PostmarkState) -> None:
        super().__init__(("127.0.0.1", 0), PostmarkHandler)
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


Server = TypeVar("Server", bound=BaseServer)


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """`server` answering from a thread of its own until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def postmark() -> Iterator[PostmarkHttpServer]:
    with serving(PostmarkHttpServer(PostmarkState(token=TOKEN))) as server:
        yield server


def postmark_transport(server: PostmarkHttpServer, token: str = TOKEN) -> PostmarkTransport:
    return PostmarkTransport(token, api_url=server.url, message_stream="outbound", timeout=5)


async def test_postmark_sends_every_field_and_returns_the_message_id(
    postmark: PostmarkHttpServer,
) -> None:
    result = await postmark_transport(postmark).send(EMAIL)

    [request] = postmark.state.requests
    assert request.path == "/email"
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
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
    transport = PostmarkTransport(TOKEN, api_url=f"http://127.0.0.1:{free_port()}", timeout=5)

    with pytest.raises(TemporarySendError, match="unreachable"):
        await transport.send(EMAIL)


async def test_postmark_untrusted_certificate_is_temporary(tls_files: TlsFiles) -> None:
    server = PostmarkHttpServer(PostmarkState(token=TOKEN))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        transport = PostmarkTransport(
            TOKEN, api_url=f"https://127.0.0.1:{server.server_address[1]}", timeout=5
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


async def test_build_smtp_sends_to_the_configured_server(smtp_server: SmtpServer) -> None:
    settings = Settings(mail_transport="smtp", smtp_host="127.0.0.1", smtp_port=smtp_server.port)
    transport = build_transport(settings)

    assert transport.name == "smtp"
    result = await transport.send(EMAIL)
    [delivered] = smtp_server.handler.delivered
    assert delivered.parsed()["Message-ID"] == result.provider_message_id


async def test_build_smtp_with_starttls_and_login(
    tls_smtp_server: SmtpServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
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

    [delivered] = tls_smtp_server.handler.delivered
    assert delivered.over_tls
    assert delivered.login == b"mailer"


def test_build_smtp_username_without_password_names_the_variable() -> None:
    settings = Settings(mail_transport="smtp", smtp_username="mailer", smtp_password=None)

    with pytest.raises(ValueError, match="LIFECYCLE_SMTP_PASSWORD"):
        build_transport(settings)


async def test_build_postmark_uses_token_url_and_stream(postmark: PostmarkHttpServer) -> None:
    settings = Settings(
        mail_transport="postmark",
        postmark_server_token=SecretStr(TOKEN),
        postmark_api_url=postmark.url,
        postmark_message_stream="lifecycle",
    )
    transport = build_transport(settings)

    assert transport.name == "postmark"
    result = await transport.send(EMAIL)
    [request] = postmark.state.requests
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.body["MessageStream"] == "lifecycle"
    assert result.provider_message_id == postmark.state.message_ids[0]


def test_build_postmark_without_token_names_the_variable() -> None:
    settings = Settings(mail_transport="postmark", postmark_server_token=None)

    with pytest.raises(ValueError, match="LIFECYCLE_POSTMARK_SERVER_TOKEN"):
        build_transport(settings)
