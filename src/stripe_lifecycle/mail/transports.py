"""Mail transports: hand one rendered message to Postmark, an SMTP server, or nowhere.

A transport only sends; recording the message (and deciding whether to send it at all) is
the caller's job. Its failures say what the caller may do next:

- `PermanentSendError`: the provider refused this message for good. Never retry.
- `TemporarySendError`: the message was certainly not accepted. Retrying is safe.
- `UncertainSendError`: the connection failed after the message was handed over, so it
  may have been accepted. Sending again could deliver a second copy: the caller should
  record the outcome as unknown rather than retry the send, unless the transport can
  look the message up (`LooksUpSends`: Postmark's message search can).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Protocol, assert_never, runtime_checkable

import requests
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.exceptions import ProxyError as Urllib3ProxyError
from urllib3.exceptions import SSLError as Urllib3SSLError

from stripe_lifecycle.settings import MAIL_TIMEOUT_SECONDS, ConfigurationError, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    sender: str
    subject: str
    html: str
    text: str
    # Extra message headers, e.g. List-Unsubscribe and List-Unsubscribe-Post.
    headers: Mapping[str, str] = field(default_factory=dict)
    # Sent as Postmark Metadata (workflow_id, step, message_id) so webhooks can be matched.
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Postmark Tag: the template name.
    tag: str | None = None
    # Marketing mail: Postmark sends it through the broadcast message stream, apart from
    # transactional mail. Other transports ignore it.
    broadcast: bool = False


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str | None
    # When the provider took the message, where it says so (a message found by a lookup).
    accepted_at: datetime | None = None


@dataclass(frozen=True)
class SentQuery:
    """A message whose send is in doubt, as a provider's search can find it: our id (sent
    as Metadata `message_id`), its recipient and tag, and whether it went out as
    marketing mail (Postmark's broadcast stream)."""

    message_id: str
    to: str
    tag: str | None
    broadcast: bool


class SendError(Exception):
    """A send that did not (certainly) succeed; `code` is the provider's error code."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentSendError(SendError):
    """The provider refused this message for good (bad address, inactive recipient)."""


class TemporarySendError(SendError):
    """The message was not accepted, for now (rate limit, outage, network, configuration)."""


class UncertainSendError(SendError):
    """The message may or may not have been accepted: sending again risks a duplicate."""


class MailTransport(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> SendResult: ...


@runtime_checkable
class LooksUpSends(Protocol):
    """A transport that can tell whether the provider took a message whose send is in
    doubt, so it is neither left unknown nor sent twice."""

    async def find_sent(self, query: SentQuery) -> SendResult | None:
        """The provider's record of the message, or None when it has none; raises
        `TemporarySendError` when the provider cannot be asked now."""
        ...


class OutboxTransport:
    """Sends nothing: the caller's record of the message is the whole delivery."""

    name: str = "outbox"

    async def send(self, email: OutgoingEmail) -> SendResult:  # noqa: ARG002
        return SendResult(provider_message_id=None)


class SmtpTransport:
    """Sends through an SMTP server, one connection per message."""

    name: str = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = MAIL_TIMEOUT_SECONDS,
        tls: bool = False,
    ) -> None:
        if username is not None and password is None:
            raise ValueError("an SMTP username needs a password")
        if starttls and tls:
            raise ValueError("SMTP with implicit TLS needs no STARTTLS: choose one")
        if username is not None and not (starttls or tls):
            # smtplib would send the password in clear text.
            raise ValueError("an SMTP login needs TLS: STARTTLS, or implicit TLS (port 465)")
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._starttls = starttls
        self._tls = tls
        self._ssl_context = ssl_context
        self._timeout = timeout

    async def send(self, email: OutgoingEmail) -> SendResult:
        message_id, message, sender, recipient = _mime_message(email)
        await asyncio.to_thread(self._deliver, message, sender, recipient)
        logger.debug("sent %s through SMTP %s:%s", message_id, self._host, self._port)
        return SendResult(provider_message_id=message_id)

    def _deliver(self, message: bytes, sender: str, recipient: str) -> None:
        where = f"SMTP server {self._host}:{self._port}"
        try:
            if self._tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    context=self._ssl_context or ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporarySendError(f"{where} unreachable: {exc}") from exc
        try:
            # Everything before DATA: a failure here means nothing was handed over.
            try:
                smtp.ehlo()
                if self._starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if self._username is not None and self._password is not None:
                    smtp.login(self._username, self._password)
                code, reply = smtp.mail(sender)
                if code != 250:
                    # The configured sender, not this message: fixable by an operator.
                    raise TemporarySendError(
                        f"{where} refused sender {sender}: {code} {_text(reply)}", code=code
                    )
                code, reply = smtp.rcpt(recipient)
            except SendError:
                raise
            except (smtplib.SMTPException, OSError) as exc:
                raise TemporarySendError(f"{where} failed before the message: {exc}") from exc
            if code not in (250, 251):
                raise _smtp_refusal(code, f"{where} refused recipient: {code} {_text(reply)}")
            try:
                # data() raises for a refused DATA command but returns the final reply.
                code, reply = smtp.data(message)
            except smtplib.SMTPDataError as exc:
                raise _smtp_refusal(
                    exc.smtp_code,
                    f"{where} refused the message: {exc.smtp_code} {_text(exc.smtp_error)}",
                ) from exc
            except (smtplib.SMTPException, OSError) as exc:
                raise UncertainSendError(
                    f"{where} failed while taking the message; it may have been accepted: {exc}"
                ) from exc
            if code != 250:
                raise _smtp_refusal(code, f"{where} refused the message: {code} {_text(reply)}")
        finally:
            _quit_quietly(smtp)


def _mime_message(email: OutgoingEmail) -> tuple[str, bytes, str, str]:
    """Build the multipart/alternative message: (Message-ID, bytes, sender, recipient)."""
    sender = parseaddr(email.sender)[1]
    recipient = parseaddr(email.to)[1]
    # smtplib speaks ASCII only (no SMTPUTF8), so an internationalised address cannot go.
    if "@" not in recipient or not recipient.isascii():
        raise PermanentSendError(f"not a deliverable email address: {email.to!r}")
    if "@" not in sender or not sender.isascii():
        # The configured sender, not this message: fixable by an operator.
        raise TemporarySendError(f"the sender is not a usable address: {email.sender!r}")
    # Our own domain, not socket.getfqdn(): that can block on DNS and leak the host name.
    message_id = make_msgid(domain=sender.rpartition("@")[2])
    message = EmailMessage(policy=policy.SMTP)
    try:
        message["From"] = email.sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = message_id
        for name, value in email.headers.items():
            message[name] = value
        # Quoted-printable keeps the body 7-bit, so servers without 8BITMIME take it too.
        message.set_content(email.text, cte="quoted-printable")
        message.add_alternative(email.html, subtype="html", cte="quoted-printable")
        data = message.as_bytes()
    except ValueError as exc:  # a header with a line break, a duplicated Subject, ...
        raise PermanentSendError(f"the message cannot be encoded: {exc}") from exc
    return message_id, data, sender, recipient


def _smtp_refusal(code: int, message: str) -> SendError:
    # 5xx is the server's final word on this message; 4xx asks to try again later.
    if 500 <= code < 600:
        return PermanentSendError(message, code=code)
    return TemporarySendError(message, code=code)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    # The outcome is already known; a failed goodbye must not change it.
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


# Postmark ErrorCodes that describe the account or the API, not this message. Failing the
# message for good would drop every email sent until an operator fixes the account, so
# these are retried like an outage: 10 bad or missing server token, 100 maintenance,
# 400/401 sender signature not found/confirmed, 405 not allowed to send (e.g. out of
# credits), 412 account pending, 413 account may not send, 429 rate limit.
POSTMARK_RETRYABLE_ERROR_CODES = frozenset({10, 100, 400, 401, 405, 412, 413, 429})
# Postmark's message search: at most 500 a page, and count + offset within 10,000. One
# recipient's mail of one template in the retention window is a page or two.
SEARCH_PAGE = 100
SEARCH_LIMIT = 10_000


class PostmarkTransport:
    """Sends through Postmark's email API (`POST /email`) with postmarker."""

    name: str = "postmark"

    def __init__(
        self,
        server_token: str,
        *,
        api_url: str | None = None,
        message_stream: str = "outbound",
        broadcast_stream: str = "broadcast",
        timeout: float = MAIL_TIMEOUT_SECONDS,
    ) -> None:
        if not server_token:
            raise ValueError("a Postmark server token is required")
        options: dict[str, Any] = {"root_api_url": api_url} if api_url else {}
        self._client = PostmarkClient(server_token=server_token, timeout=timeout, **options)
        self._message_stream = message_stream
        self._broadcast_stream = broadcast_stream

    async def send(self, email: OutgoingEmail) -> SendResult:
        response = await asyncio.to_thread(self._send, email)
        message_id = response.get("MessageID")
        logger.debug("sent %s through Postmark", message_id)
        return SendResult(provider_message_id=str(message_id) if message_id else None)

    def _send(self, email: OutgoingEmail) -> dict[str, Any]:
        try:
            response = self._client.emails.send(
                From=email.sender,
                To=email.to,
                Subject=email.subject,
                HtmlBody=email.html,
                TextBody=email.text,
                Headers=dict(email.headers),
                Metadata=dict(email.metadata),
                Tag=email.tag,
                MessageStream=self._broadcast_stream if email.broadcast else self._message_stream,
            )
        except ClientError as exc:
            # postmarker raises ClientError for any HTTP error whose body has an ErrorCode,
            # 5xx included, so the HTTP status decides as much as the code does.
            http_error = exc.__cause__
            status = _status_of(http_error) if isinstance(http_error, requests.HTTPError) else None
            raise _postmark_failure(status, exc.error_code, str(exc)) from exc
        except requests.HTTPError as exc:  # an HTTP error without a Postmark JSON body
            raise _postmark_failure(_status_of(exc), None, str(exc)) from exc
        except KeyError as exc:  # a JSON error body without ErrorCode: not Postmark's answer
            http_error = exc.__context__
            if not isinstance(http_error, requests.HTTPError):
                raise
            raise _postmark_failure(_status_of(http_error), None, str(http_error)) from exc
        except requests.JSONDecodeError as exc:
            # A success status with a body we cannot read: Postmark probably took it.
            raise UncertainSendError(
                f"Postmark's answer was not JSON; the message may have been accepted: {exc}"
            ) from exc
        except requests.RequestException as exc:
            if _never_reached_postmark(exc):
                raise TemporarySendError(f"Postmark unreachable: {exc}") from exc
            raise UncertainSendError(
                f"the connection to Postmark failed after the request was sent; "
                f"the message may have been accepted: {exc}"
            ) from exc
        if not isinstance(response, dict):
            raise UncertainSendError(
                f"Postmark answered with a {type(response).__name__}; "
                "the message may have been accepted"
            )
        error_code = response.get("ErrorCode") or 0
        if error_code:
            raise _postmark_failure(None, error_code, f"[{error_code}] {response.get('Message')}")
        return response

    async def find_sent(self, query: SentQuery) -> SendResult | None:
        """Postmark's outbound message search (`GET /messages/outbound`), by recipient, tag
        and stream, newest first, for the message whose Metadata names our id."""
        return await asyncio.to_thread(self._find_sent, query)

    def _find_sent(self, query: SentQuery) -> SendResult | None:
        address = parseaddr(query.to)[1] or query.to
        stream = self._broadcast_stream if query.broadcast else self._message_stream
        offset = 0
        # Past the search's reach (10,000 of one recipient's mail of one template within
        # Postmark's retention), the message is taken as not there.
        while offset + SEARCH_PAGE <= SEARCH_LIMIT:
            try:
                page = self._client.call(
                    "GET",
                    "/messages/outbound",
                    count=SEARCH_PAGE,
                    offset=offset,
                    recipient=address,
                    tag=query.tag,
                    messagestream=stream,
                )
                messages = page["Messages"]
                total = int(page["TotalCount"])
                found = next(
                    (
                        SendResult(
                            provider_message_id=str(message["MessageID"]),
                            accepted_at=_postmark_time(message.get("ReceivedAt")),
                        )
                        for message in messages
                        if (message.get("Metadata") or {}).get("message_id") == query.message_id
                    ),
                    None,
                )
            except (
                ClientError,
                requests.RequestException,
                AttributeError,
                KeyError,
                TypeError,
                ValueError,
            ) as exc:
                # Not an answer about the message: ask again later rather than guess.
                raise TemporarySendError(f"Postmark's message search failed: {exc}") from exc
            if found is not None:
                return found
            offset += len(messages)
            if not messages or offset >= total:
                return None
        return None


def _postmark_time(value: object) -> datetime | None:
    """A time as Postmark writes it (ISO 8601 with its offset), in UTC; None if not one."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def _status_of(error: requests.HTTPError) -> int | None:
    return error.response.status_code if error.response is not None else None


def _postmark_failure(status: int | None, error_code: int | None, detail: str) -> SendError:
    if status == 429 or (status is not None and status >= 500):
        return TemporarySendError(
            f"Postmark is unavailable (HTTP {status}): {detail}", code=error_code
        )
    if status == 401 or error_code in POSTMARK_RETRYABLE_ERROR_CODES:
        # A bad token or an account problem is the operator's to fix; the mail waits.
        return TemporarySendError(
            f"Postmark cannot send for this account (HTTP {status}, ErrorCode {error_code}): "
            f"{detail}",
            code=error_code,
        )
    if error_code is None:
        # A 4xx without Postmark's JSON (a proxy, a firewall, a wrong API URL) judges
        # the route, not this message.
        return TemporarySendError(f"Postmark request failed (HTTP {status}): {detail}")
    return PermanentSendError(
        f"Postmark refused the message (ErrorCode {error_code}): {detail}", code=error_code
    )


def _never_reached_postmark(exc: requests.RequestException) -> bool:
    """True when the request certainly never left: no connection, proxy or certificate."""
    # requests keeps urllib3's MaxRetryError as the first argument. Read failures (a
    # timeout, an aborted or TLS-broken response) arrive differently or with other reasons.
    retry = exc.args[0] if exc.args else None
    if not isinstance(retry, MaxRetryError):
        return False
    reason = retry.reason
    # Refused connections and failed DNS are NewConnectionError, a ConnectTimeoutError.
    if isinstance(reason, ConnectTimeoutError | Urllib3ProxyError):
        return True
    # A rejected certificate fails the handshake; other TLS errors can strike mid-response.
    return (
        isinstance(reason, Urllib3SSLError)
        and bool(reason.args)
        and isinstance(reason.args[0], ssl.SSLCertVerificationError)
    )


def build_transport(settings: Settings) -> MailTransport:
    """The transport `LIFECYCLE_MAIL_TRANSPORT` names, configured from the settings."""
    kind = settings.mail_transport
    if kind == "outbox":
        return OutboxTransport()
    if kind == "smtp":
        if settings.smtp_username and settings.smtp_password is None:
            raise ConfigurationError(
                "LIFECYCLE_SMTP_USERNAME is set but LIFECYCLE_SMTP_PASSWORD is not"
            )
        if settings.smtp_starttls and settings.smtp_tls:
            raise ConfigurationError(
                "LIFECYCLE_SMTP_STARTTLS and LIFECYCLE_SMTP_TLS are both set: choose one"
            )
        if settings.smtp_username and not (settings.smtp_starttls or settings.smtp_tls):
            raise ConfigurationError(
                "LIFECYCLE_SMTP_USERNAME is set without TLS, which would send the password "
                "in clear text: set LIFECYCLE_SMTP_STARTTLS=true or LIFECYCLE_SMTP_TLS=true"
            )
        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username or None,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            tls=settings.smtp_tls,
            timeout=settings.mail_timeout,
        )
    if kind == "postmark":
        token = settings.postmark_server_token
        if token is None or not token.get_secret_value():
            raise ConfigurationError(
                "LIFECYCLE_POSTMARK_SERVER_TOKEN must be set when LIFECYCLE_MAIL_TRANSPORT=postmark"
            )
        return PostmarkTransport(
            token.get_secret_value(),
            api_url=settings.postmark_api_url,
            message_stream=settings.postmark_message_stream,
            broadcast_stream=settings.postmark_broadcast_stream,
            timeout=settings.mail_timeout,
        )
    assert_never(kind)


__all__ = [
    "MailTransport",
    "OutboxTransport",
    "OutgoingEmail",
    "PermanentSendError",
    "PostmarkTransport",
    "SendError",
    "SendResult",
    "SmtpTransport",
    "TemporarySendError",
    "UncertainSendError",
    "build_transport",
]
