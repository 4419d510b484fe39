"""Local stand-ins for the services the app talks to, shared by the tests: a real SMTP
server (aiosmtpd), and stdlib HTTP servers speaking Postmark's email API and Stripe's v1
API. Each records what it was sent and answers as the real service documents."""

from __future__ import annotations

import asyncio
import copy
import email
import json
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import BaseServer
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session

from .conftest import free_port

Server = TypeVar("Server", bound=BaseServer)


class Hold:
    """A request a fake server has accepted and holds unanswered until `release()`, then
    drops without an answer: what a client sees when it dies (or times out) mid-request.
    A test waits for `arrival()` before acting, so nothing guesses at timing; a hold never
    outlasts `limit` seconds, so a test that forgets to release it cannot hang a thread."""

    def __init__(self, limit: float = 60.0) -> None:
        self._arrived = threading.Event()
        self._released = threading.Event()
        self._limit = limit

    def hold(self) -> None:
        """Called by the server's handler thread with the request taken in."""
        self._arrived.set()
        self._released.wait(self._limit)

    def release(self) -> None:
        self._released.set()

    async def arrival(self, timeout: float = 30.0) -> None:
        """Returns once a request is being held; fails after `timeout` seconds."""
        if not await asyncio.to_thread(self._arrived.wait, timeout):
            raise AssertionError(f"no request was held within {timeout} s")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that sends whole answers and keeps test output quiet."""

    def send_answer(
        self, status: int, content_type: str, data: bytes, headers: Mapping[str, str]
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


class LocalHttpServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1, bound to a port of the kernel's choosing as it is made,
    so no other socket can take the port first."""

    def __init__(self, handler: type[QuietHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


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


@dataclass(frozen=True)
class DataReply:
    """How the server answers one message's DATA: with `reply` (e.g. "451 4.3.0 Try again
    later"), or, without one, by taking the message; after `delay` seconds either way
    (longer than the client's timeout: the client gives up, a taken message stays taken)."""

    reply: str | None = None
    delay: float = 0.0


@dataclass
class SmtpInbox:
    """The handler of a real SMTP server on `port`: keeps every message it accepts and
    refuses what a test tells it to."""

    port: int = 0
    delivered: list[Delivered] = field(default_factory=list)
    recipient_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    data_delay: float = 0.0
    # The next messages' answers, oldest first; then `data_reply` and `data_delay`.
    data_replies: list[DataReply] = field(default_factory=list)

    @property
    def received(self) -> list[EmailMessage]:
        """The accepted messages, parsed, oldest first."""
        return [d.parsed() for d in self.delivered]

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
        scripted = (
            self.data_replies.pop(0)
            if self.data_replies
            else DataReply(self.data_reply, self.data_delay)
        )
        if scripted.reply is None:
            # Taken before the answer is delayed: a client that gives up waiting leaves
            # the message with the server, as a real one would deliver it.
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
        await asyncio.sleep(scripted.delay)
        if scripted.reply is not None:
            return scripted.reply
        return "250 Message accepted for delivery"


def running_smtp(**options: Any) -> Iterator[SmtpInbox]:
    """An SMTP server on 127.0.0.1 for a fixture to yield; `options` go to aiosmtpd's
    Controller (TLS, authentication)."""
    inbox = SmtpInbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, **options)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


# --- Postmark ---------------------------------------------------------------------------

POSTMARK_TOKEN = "server-token-1b2c3d"
# A scripted Postmark reply: take the email, as when nothing is scripted.
ACCEPT: Literal["accept"] = "accept"


@dataclass(frozen=True)
class PostmarkRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # When the request had been read (epoch seconds): benchmarks time mail against it.
    received_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class PostmarkMessage:
    """An email Postmark took, as its message search lists it."""

    message_id: str
    body: dict[str, Any]
    received_at: datetime


@dataclass
class PostmarkState:
    token: str
    requests: list[PostmarkRequest] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    accepted: list[PostmarkMessage] = field(default_factory=list)
    # Each message search's query (`GET /messages/outbound`), and scripted answers to the
    # next searches, oldest first, then the search itself.
    searches: list[dict[str, str]] = field(default_factory=list)
    search_replies: list[tuple[int, dict[str, Any] | bytes]] = field(default_factory=list)
    # The next answers, oldest first, then success: (HTTP status, JSON body or raw bytes),
    # None to read the request and hang up without answering, `ACCEPT` for success, or a
    # `Hold`: the email is accepted (a message id is recorded, as Postmark would have
    # queued it), its answer held until released, then the connection dropped unanswered.
    replies: list[tuple[int, dict[str, Any] | bytes] | Hold | Literal["accept"] | None] = field(
        default_factory=list
    )


class PostmarkHandler(QuietHandler):
    """Postmark's `POST /email` and outbound message search (`GET /messages/outbound`), as
    documented: server token, JSON in and out."""

    server: PostmarkHttpServer

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if self.headers.get("X-Postmark-Server-Token") != state.token:
            self._answer(401, {"ErrorCode": 10, "Message": "No valid Server token."})
            return
        if url.path != "/messages/outbound":
            self._answer(404, b"Not found")
            return
        state.searches.append(query)
        if state.search_replies:
            self._answer(*state.search_replies.pop(0))
            return
        try:
            count, offset = int(query["count"]), int(query["offset"])
        except (KeyError, ValueError):
            self._answer(422, {"ErrorCode": 1, "Message": "count and offset are required."})
            return
        if not 0 < count <= 500 or offset < 0 or count + offset > 10_000:
            self._answer(422, {"ErrorCode": 1, "Message": "count 1-500, count + offset 10,000."})
            return
        found = [
            m
            for m in reversed(state.accepted)  # newest first
            if _postmark_matches(m, query)
        ]
        self._answer(
            200,
            {
                "TotalCount": len(found),
                "Messages": [_postmark_summary(m) for m in found[offset : offset + count]],
            },
        )

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
        reply = state.replies.pop(0) if state.replies else ACCEPT
        if reply is None:
            self.close_connection = True  # the request was read; no answer comes
            return
        if isinstance(reply, Hold):
            state.message_ids.append(str(uuid.uuid4()))
            state.accepted.append(PostmarkMessage(state.message_ids[-1], body, datetime.now(UTC)))
            reply.hold()
            self.close_connection = True
            return
        if isinstance(reply, tuple):
            self._answer(*reply)
            return
        message_id = str(uuid.uuid4())
        state.message_ids.append(message_id)
        state.accepted.append(PostmarkMessage(message_id, body, datetime.now(UTC)))
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
        if isinstance(body, dict):
            self.send_answer(status, "application/json", json.dumps(body).encode(), {})
        else:
            self.send_answer(status, "text/html", body, {})


def _recipients(body: dict[str, Any]) -> list[str]:
    """The addresses of an email's `To` as Postmark takes it: comma-separated, each with
    or without a display name."""
    return [parseaddr(address)[1] for address in str(body.get("To", "")).split(",")]


def _postmark_matches(message: PostmarkMessage, query: dict[str, str]) -> bool:
    """Whether the search's filters (recipient, tag, stream) take the message. With no
    stream named, only the default one (`outbound`): a search that leaves the stream out
    misses broadcast mail here, as it may at Postmark."""
    body = message.body
    recipients = [address.lower() for address in _recipients(body)]
    return (
        ("recipient" not in query or query["recipient"].lower() in recipients)
        and ("tag" not in query or query["tag"] == body.get("Tag"))
        and query.get("messagestream", "outbound") == body.get("MessageStream", "outbound")
    )


def _postmark_summary(message: PostmarkMessage) -> dict[str, Any]:
    """A message as the search lists it: no bodies, its Metadata and when it was taken."""
    body = message.body
    recipients = _recipients(body)
    return {
        "Tag": body.get("Tag"),
        "MessageID": message.message_id,
        "To": [{"Email": address, "Name": None} for address in recipients],
        "Cc": [],
        "Bcc": [],
        "Recipients": recipients,
        "ReceivedAt": message.received_at.isoformat(),
        "From": body.get("From"),
        "Subject": body.get("Subject"),
        "Attachments": [],
        "Status": "Sent",
        "TrackOpens": False,
        "TrackLinks": "None",
        "Metadata": body.get("Metadata") or {},
        "MessageStream": body.get("MessageStream", "outbound"),
    }


class PostmarkHttpServer(LocalHttpServer):
    def __init__(self, state: PostmarkState) -> None:
        super().__init__(PostmarkHandler)
        self.state = state


def running_postmark() -> Iterator[PostmarkHttpServer]:
    """A Postmark server taking `POSTMARK_TOKEN`, for a fixture to yield."""
    with serving(PostmarkHttpServer(PostmarkState(token=POSTMARK_TOKEN))) as server:
        yield server


# --- Stripe -----------------------------------------------------------------------------

STRIPE_API_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
# A restricted key accepted everywhere but `GET /v1/events`: it lacks Events: read.
STRIPE_KEY_WITHOUT_EVENTS = "rk_test_51NoEventsRead7dc"
# A restricted key accepted everywhere but reading invoices: it lacks Invoices: read.
STRIPE_KEY_WITHOUT_INVOICES = "rk_test_51NoInvoicesRead7dc"
# The header of a 429 saying which limiter refused the request.
RATE_LIMITED_REASON = "Stripe-Rate-Limited-Reason"
PORTAL_URL = "https://billing.stripe.com/p/session/test_portal_1"


def coupon_object(coupon_id: str, **terms: Any) -> dict[str, Any]:
    """A Coupon as Stripe answers it with `currency_options` expanded; `forever` unless
    `terms` say otherwise."""
    return {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": None,
        "currency": None,
        "currency_options": {},
        "duration": "forever",
        "duration_in_months": None,
        "percent_off": None,
        "valid": True,
        **terms,
    }


def resource_missing(kind: str, object_id: str) -> tuple[int, dict[str, Any]]:
    return 404, {
        "error": {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": "id",
            "message": f"No such {kind}: '{object_id}'",
            "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        }
    }


def invalid_request(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": {"type": "invalid_request_error", "message": message}}


def missing_permission(permission: str) -> tuple[int, dict[str, Any]]:
    """What Stripe answers a restricted key lacking `permission`."""
    return 403, {
        "error": {
            "type": "invalid_request_error",
            "message": "The provided key 'rk_test_***7dc' does not have the required permissions "
            f"for this endpoint. Having the '{permission}' permission would allow this request "
            "to continue.",
        }
    }


def platform_account() -> dict[str, Any]:
    """The Account `GET /v1/account` answers for the platform's own key."""
    return {
        "id": "acct_test_platform",
        "object": "account",
        "created": 1_700_000_000,
        "country": "US",
        "default_currency": "usd",
        "charges_enabled": True,
        "payouts_enabled": True,
    }


# Subscription statuses, and those a subscriptions list leaves out unless asked: Stripe lists
# the subscriptions that have not ended by default.
SUBSCRIPTION_STATUSES = frozenset(
    {
        "active",
        "canceled",
        "incomplete",
        "incomplete_expired",
        "past_due",
        "paused",
        "trialing",
        "unpaid",
    }
)
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void"})
NO_LATER_THAN = 2**62  # a `created` bound past every timestamp


@dataclass(frozen=True)
class ListQuery:
    """A list request's parameters, checked: `created` bounds inclusive, one cursor at
    most; `statuses` None lists every status."""

    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None
    created_from: int = 0
    created_to: int = NO_LATER_THAN
    customer: str | None = None
    statuses: frozenset[str] | None = None
    types: frozenset[str] = frozenset()

    def admits(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` passes the filters other than `created` and the cursors."""
        return (
            (self.customer is None or obj.get("customer") == self.customer)
            and (self.statuses is None or obj.get("status") in self.statuses)
            and (not self.types or obj.get("type") in self.types)
        )


@dataclass(frozen=True)
class ListPage:
    data: list[dict[str, Any]]
    has_more: bool


def page_of(
    positions: Sequence[int],
    created_at: Callable[[int], int],
    load: Callable[[int], dict[str, Any]],
    position_of: Callable[[str], int | None],
    query: ListQuery,
) -> ListPage | None:
    """The page `query` asks for, newest first, of objects kept oldest first: `positions`
    ascending, `created_at` non-decreasing along them, `position_of` placing a cursor's id
    (None when no such object exists, and then None is answered). Bounds and cursors are
    found by bisection, so a computed account of any size answers in O(log n + page)."""
    low = bisect_left(positions, query.created_from, key=created_at)
    high = bisect_right(positions, query.created_to, key=created_at)
    cursor = query.starting_after or query.ending_before
    if cursor is not None:
        at = position_of(cursor)
        if at is None:
            return None
        if query.starting_after is not None:
            high = min(high, bisect_left(positions, at))
        else:
            low = max(low, bisect_right(positions, at))
    # After a cursor (or with none) the page starts at the newest; before `ending_before`
    # it is the one nearest that object, so it is gathered upwards and turned round.
    newest_first = query.ending_before is None
    walk = range(high - 1, low - 1, -1) if newest_first else range(low, high)
    found: list[dict[str, Any]] = []
    for n in walk:
        obj = load(positions[n])
        if query.admits(obj):
            found.append(obj)
            if len(found) > query.limit:
                break
    data = found[: query.limit]
    if not newest_first:
        data.reverse()
    return ListPage(data, has_more=len(found) > query.limit)


class ListedAccount(Protocol):
    """Where the list endpoints, `GET /v1/account` and list expansion read from: the stored
    objects of a `StripeState`, or an account computed from indexes for benchmarks
    (`bench/stripe_synthetic.py`). `resource` is the path's last part: `customers`,
    `subscriptions`, `invoices` or `charges`."""

    def account(self) -> dict[str, Any] | None: ...

    def list_page(self, resource: str, query: ListQuery) -> ListPage | None:
        """The page, or None when the query's cursor names no object of `resource`."""
        ...

    def payment_method(self, object_id: str) -> dict[str, Any] | None:
        """A PaymentMethod, or a legacy card or source, by id, for expansion."""
        ...


@dataclass
class StripeRequest:
    method: str
    path: str  # without the query string
    form: dict[str, str]
    api_key: str | None
    idempotency_key: str | None
    # The `Stripe-Account` header: the connected account the request acts on.
    account: str | None = None
    # `expand[]` of the query string (the stripe library sends `expand[0]=...`).
    expand: list[str] = field(default_factory=list)
    query: dict[str, str] = field(default_factory=dict)
    # `types[]` of the query string (sent as `types[0]=...`).
    types: list[str] = field(default_factory=list)


@dataclass
class StripeState:
    """Objects by id; ids that always answer an error live in the handler."""

    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[StripeRequest] = field(default_factory=list)
    # Idempotency-Key -> (method, path, form) of its first request and the saved answer.
    saved: dict[str, tuple[tuple[str, str, str], int, dict[str, Any]]] = field(default_factory=dict)
    executed: int = 0  # writes that ran, replays excluded
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Discount objects by id: Stripe has no endpoint for them; subscriptions expand them.
    discounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_payments: list[dict[str, Any]] = field(default_factory=list)
    # Connected accounts' own objects, by account id (requests with `Stripe-Account`);
    # every request is recorded here, on the platform's state.
    connected: dict[str, StripeState] = field(default_factory=dict)
    # The next this-many requests are refused with 429, as under a rate limit.
    rate_limited: int = 0
    # Event objects, in any order: `GET /v1/events` lists them newest first.
    events: list[dict[str, Any]] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    # PaymentMethods and legacy cards/sources by id: Stripe has them behind other endpoints;
    # customers and subscriptions expand them.
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What `GET /v1/account` answers; None answers resource_missing.
    account: dict[str, Any] | None = field(default_factory=platform_account)
    # When set, the list endpoints and `GET /v1/account` answer from it instead of the
    # dicts above, which then stay empty: a benchmark's account is too large to store.
    synthetic: ListedAccount | None = None
    # Requests per second each endpoint (`/v1/customers`, ...) admits over any one-second
    # window, None for no limit; those over it are answered 429 and counted in `over_limit`.
    endpoint_rate: float | None = None
    over_limit: dict[str, int] = field(default_factory=dict)
    # Requests each endpoint answered past the rate limits, for requests/s per endpoint.
    served: dict[str, int] = field(default_factory=dict)
    # Every request is refused as with an expired key, as once the key is rolled.
    revoked: bool = False
    # `POST /v1/invoices/{id}/pay`: the decline code the card issuer answers each attempt on
    # these invoices with (402 card_error); an invoice not named here is paid.
    declines: dict[str, str] = field(default_factory=dict)
    # Invoices whose payment method settles later (a bank debit): an attempt leaves them open.
    settling: set[str] = field(default_factory=set)
    # Payment attempts made on each invoice (what would reach the card network); replays of
    # an idempotency key's saved answer are not attempts.
    payment_attempts: dict[str, int] = field(default_factory=dict)
    # The next write with an Idempotency-Key is applied and its answer saved, as Stripe
    # does, then held until released and the connection dropped unanswered: the client
    # never learns that it was applied.
    hold: Hold | None = None


@dataclass(frozen=True)
class StoredObjects:
    """A `StripeState`'s own objects as a `ListedAccount`: sorted per request, which the
    tests' few thousand objects afford."""

    state: StripeState

    def account(self) -> dict[str, Any] | None:
        return self.state.account

    def list_page(self, resource: str, query: ListQuery) -> ListPage | None:
        stored = {
            "customers": self.state.customers,
            "subscriptions": self.state.subscriptions,
            "invoices": self.state.invoices,
            "charges": self.state.charges,
        }
        listed = self.state.events if resource == "events" else list(stored[resource].values())
        ordered = sorted(listed, key=lambda o: (o["created"], o["id"]))
        positions = {o["id"]: n for n, o in enumerate(ordered)}
        return page_of(
            range(len(ordered)),
            lambda n: int(ordered[n]["created"]),
            ordered.__getitem__,
            positions.get,
            query,
        )

    def payment_method(self, object_id: str) -> dict[str, Any] | None:
        return self.state.payment_methods.get(object_id)


class StripeHandler(QuietHandler):
    """Stripe's v1 cancel / update / retrieve subscription, mark_uncollectible / void / pay /
    retrieve invoice, create Customer Portal session, retrieve coupon, price, charge and
    payment intent, retrieve the account, list customers, subscriptions, invoices, charges,
    invoice payments and events, behind its API key check, its rate limits and its
    idempotency layer: the first answer to a key (once the endpoint ran) is saved and
    replayed, the key reused for another request is an idempotency_error. Fields Stripe
    includes only when expanded (a price's `tiers` and `currency_options`, a coupon's
    `currency_options`, a subscription's `discounts`) are answered as Stripe does: left
    out, or ids, unless `expand[]` asks.
    `Stripe-Account` selects a connected account's objects (`StripeState.connected`).
    Lists page as Stripe's do (newest first, `limit`, `starting_after` / `ending_before`,
    `created[...]`, `customer`, `status`, `expand[]` of `data.`-prefixed paths).

    Fixed ids: `*_busy` answers 429, `*_down` answers 500, `sub_forbidden` answers 403, and
    `cus_NoPortal`'s portal session is refused as having no portal configuration."""

    server: StripeHttpServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        auth = self.headers.get("Authorization", "")
        key = self.headers.get("Idempotency-Key")
        path, _, query = self.path.partition("?")
        pairs = parse_qsl(query)
        request = StripeRequest(
            method=method,
            path=path,
            form=dict(parse_qsl(raw)),
            api_key=auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
            idempotency_key=key,
            account=self.headers.get("Stripe-Account"),
            expand=[value for name, value in pairs if name.startswith("expand[")],
            types=[value for name, value in pairs if name.startswith("types[")],
            query=dict(pairs),
        )
        with self.server.lock:
            state.requests.append(request)
            if state.rate_limited:
                state.rate_limited -= 1
                self._answer(*_RATE_LIMITED, headers={RATE_LIMITED_REASON: "global-rate"})
                return
            if state.revoked:
                self._answer(
                    401,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "Expired API Key provided: "
                            f"{(request.api_key or '')[:8]}****{(request.api_key or '')[-4:]}",
                        }
                    },
                )
                return
            if request.api_key not in (
                STRIPE_API_KEY,
                STRIPE_KEY_WITHOUT_EVENTS,
                STRIPE_KEY_WITHOUT_INVOICES,
            ):
                self._answer(
                    401,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": "Invalid API Key provided: sk_test_****oops",
                        }
                    },
                )
                return
            endpoint = "/" + "/".join(path.strip("/").split("/")[:2])
            if state.endpoint_rate is not None and not self.server.admit(
                endpoint, state.endpoint_rate
            ):
                state.over_limit[endpoint] = state.over_limit.get(endpoint, 0) + 1
                self._answer(*_RATE_LIMITED, headers={RATE_LIMITED_REASON: "endpoint-rate"})
                return
            state.served[endpoint] = state.served.get(endpoint, 0) + 1
            signature = (method, self.path, raw)
            if key is not None and key in state.saved:
                first, status, body = state.saved[key]
                if first != signature:
                    self._answer(
                        400,
                        {
                            "error": {
                                "type": "idempotency_error",
                                "message": (
                                    "Keys for idempotent requests can only be used with the "
                                    "same parameters they were first used with."
                                ),
                            }
                        },
                    )
                    return
                self._answer(status, body, replayed=True)
                return
            status, body = self._route(method, request)
            held: Hold | None = None
            # A rate-limited request never reached the endpoint, so nothing is saved for it;
            # everything else (500s and card declines included) is replayed for the key, as
            # first answered: a copy, since the stored object may change afterwards.
            if key is not None and method != "GET" and status != 429:
                state.saved[key] = (signature, status, copy.deepcopy(body))
                state.executed += 1
                held, state.hold = state.hold, None
            if held is None:
                self._answer(status, body)
                return
        # Held outside the lock: the client's retry must get through meanwhile.
        held.hold()
        self.close_connection = True

    def _route(self, method: str, request: StripeRequest) -> tuple[int, dict[str, Any]]:
        parts = request.path.strip("/").split("/")
        objects = self.server.state
        if request.account is not None:
            if request.account not in objects.connected:
                return 403, {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "The provided key does not have access to account "
                        f"'{request.account}' (or that account does not exist).",
                    }
                }
            objects = objects.connected[request.account]
        listed: ListedAccount = objects.synthetic or StoredObjects(objects)
        if parts[:2] == ["v1", "invoices"] and method == "GET":
            if request.api_key == STRIPE_KEY_WITHOUT_INVOICES:
                return missing_permission("rak_invoice_read")
        if parts == ["v1", "account"] and method == "GET":
            account = listed.account()
            if account is None:
                return resource_missing("account", "acct_test_platform")
            return 200, account
        if len(parts) == 2 and parts[1] in _LISTED and method == "GET":
            return self._list(listed, parts[1], request)
        if parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
            return self._subscription(objects, method, parts[2], request)
        if parts[:2] == ["v1", "invoices"] and len(parts) in (3, 4):
            return self._invoice(
                objects, method, parts[2], parts[3] if len(parts) == 4 else None, request.form
            )
        if parts == ["v1", "billing_portal", "sessions"] and method == "POST":
            return self._portal_session(request.form)
        if parts[:2] == ["v1", "charges"] and len(parts) == 3 and method == "GET":
            return self._look_up("charge", objects.charges, parts[2])
        if parts[:2] == ["v1", "payment_intents"] and len(parts) == 3 and method == "GET":
            return self._look_up("payment_intent", objects.payment_intents, parts[2])
        if parts[:2] == ["v1", "coupons"] and len(parts) == 3 and method == "GET":
            return self._coupon(objects, parts[2], request.expand)
        if parts[:2] == ["v1", "prices"] and len(parts) == 3 and method == "GET":
            return self._price(objects, parts[2], request.expand)
        if parts == ["v1", "invoice_payments"] and method == "GET":
            return self._invoice_payments(objects, request.query)
        if parts == ["v1", "events"] and method == "GET":
            if request.api_key == STRIPE_KEY_WITHOUT_EVENTS:
                return missing_permission("rak_event_read")
            return self._events(objects, request)
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}

    def _fixed(self, object_id: str) -> tuple[int, dict[str, Any]] | None:
        if object_id.endswith("_busy"):
            return _RATE_LIMITED
        if object_id.endswith("_down"):
            return 500, {"error": {"type": "api_error", "message": "An unknown error occurred"}}
        if object_id == "sub_forbidden":
            return 403, {
                "error": {
                    "type": "invalid_request_error",
                    "message": "The provided key does not have the required permissions.",
                }
            }
        return None

    def _look_up(
        self, kind: str, objects: dict[str, dict[str, Any]], object_id: str
    ) -> tuple[int, dict[str, Any]]:
        """200 and the object, or what Stripe answers instead: a fixed id's error, or
        resource_missing."""
        fixed = self._fixed(object_id)
        if fixed is not None:
            return fixed
        found = objects.get(object_id)
        if found is None:
            return resource_missing(kind, object_id)
        return 200, found

    def _subscription(
        self, objects: StripeState, method: str, sub_id: str, request: StripeRequest
    ) -> tuple[int, dict[str, Any]]:
        status, sub = self._look_up("subscription", objects.subscriptions, sub_id)
        if status != 200:
            return status, sub
        if method == "GET":
            return 200, _expand_discounts(sub, objects, request.expand)
        form = request.form
        if method == "DELETE":
            if sub["status"] == "canceled":
                # What Stripe answers for a subscription canceled before (stripe-go#1887).
                return resource_missing("subscription", sub_id)
            sub.update(status="canceled", canceled_at=int(time.time()))
            return 200, sub
        if sub["status"] == "canceled":
            return invalid_request(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        behavior = form.get("pause_collection[behavior]")
        if behavior not in ("keep_as_draft", "mark_uncollectible", "void"):
            return invalid_request("Invalid pause_collection[behavior]")
        sub["pause_collection"] = {"behavior": behavior, "resumes_at": None}
        return 200, sub

    def _invoice(
        self,
        objects: StripeState,
        method: str,
        invoice_id: str,
        verb: str | None,
        form: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        status, inv = self._look_up("invoice", objects.invoices, invoice_id)
        if status != 200 or (method == "GET" and verb is None):
            return status, inv
        # Allowed transitions, from docs.stripe.com/invoicing/integration/workflow-transitions.
        # The refusal messages are stand-ins: the activity reads the invoice back instead.
        if method == "POST" and verb == "mark_uncollectible":
            if inv["status"] != "open":
                return invalid_request("You can only mark an open invoice as uncollectible.")
            inv["status"] = "uncollectible"
            return 200, inv
        if method == "POST" and verb == "void":
            if inv["status"] not in ("open", "uncollectible"):
                return invalid_request(f"You cannot void an invoice that is {inv['status']}.")
            inv["status"] = "void"
            return 200, inv
        if method == "POST" and verb == "pay":
            return _pay(objects, inv, form)
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}

    def _portal_session(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        customer = form.get("customer")
        if customer == "cus_NoPortal":
            return invalid_request(
                "No configuration provided and your test mode default configuration has not "
                "been created."
            )
        return 200, {
            "id": "bps_1",
            "object": "billing_portal.session",
            "customer": customer,
            "return_url": form.get("return_url"),
            "url": PORTAL_URL,
        }

    def _coupon(
        self, objects: StripeState, coupon_id: str, expand: list[str]
    ) -> tuple[int, dict[str, Any]]:
        status, coupon = self._look_up("coupon", objects.coupons, coupon_id)
        if status != 200:
            return status, coupon
        return 200, _includable(coupon, {"currency_options"}, expand)

    def _price(
        self, objects: StripeState, price_id: str, expand: list[str]
    ) -> tuple[int, dict[str, Any]]:
        status, price = self._look_up("price", objects.prices, price_id)
        if status != 200:
            return status, price
        shown = _includable(price, {"tiers", "currency_options"}, expand)
        if "currency_options" in shown:
            shown["currency_options"] = {
                code: _includable(option, {"tiers"}, expand, f"currency_options.{code}.")
                for code, option in shown["currency_options"].items()
            }
        return 200, shown

    def _invoice_payments(
        self, objects: StripeState, query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        invoice = query.get("invoice")
        fixed = self._fixed(invoice or "")
        if fixed is not None:
            return fixed
        payments = [p for p in objects.invoice_payments if p["invoice"] == invoice]
        return 200, {
            "object": "list",
            "data": payments,
            "has_more": False,
            "url": "/v1/invoice_payments",
        }

    def _events(self, objects: StripeState, request: StripeRequest) -> tuple[int, dict[str, Any]]:
        """List events as Stripe does: as the other lists, with the `types[]` filter."""
        if len(request.types) > 20:
            return invalid_request("Invalid array: types can have at most 20 entries")
        query = _list_query("events", request.query, request.types)
        if isinstance(query, tuple):
            return query
        page = StoredObjects(objects).list_page("events", query)
        if page is None:
            return resource_missing("event", query.starting_after or query.ending_before or "")
        return 200, {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "url": "/v1/events",
        }

    def _list(
        self, listed: ListedAccount, resource: str, request: StripeRequest
    ) -> tuple[int, dict[str, Any]]:
        """A page of `resource`, its payment methods expanded where `expand[]` asks."""
        kind, expandable = _LISTED[resource]
        for path in request.expand:
            if path not in expandable:
                return invalid_request(
                    f"This property cannot be expanded ({path.removeprefix('data.')})."
                )
        query = _list_query(resource, request.query, request.types)
        if isinstance(query, tuple):
            return query
        page = listed.list_page(resource, query)
        if page is None:
            return resource_missing(kind, query.starting_after or query.ending_before or "")
        data = page.data
        for path in request.expand:
            steps = path.removeprefix("data.").split(".")
            data = [_expand_id(obj, steps, listed.payment_method) for obj in data]
        return 200, {
            "object": "list",
            "data": data,
            "has_more": page.has_more,
            "url": f"/v1/{resource}",
        }

    def _answer(
        self,
        status: int,
        body: dict[str, Any],
        *,
        replayed: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        sent = {"Request-Id": "req_test", **(headers or {})}
        if replayed:
            sent["Idempotent-Replayed"] = "true"
        self.send_answer(status, "application/json", json.dumps(body).encode(), sent)


# The parameters of `POST /v1/invoices/{id}/pay` (docs.stripe.com/api/invoices/pay).
_PAY_PARAMETERS = frozenset(
    {"forgive", "mandate", "off_session", "paid_out_of_band", "payment_method", "source"}
)


def _pay(
    objects: StripeState, inv: dict[str, Any], form: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """Pay an invoice as Stripe does: a draft is finalized first, an open or uncollectible one
    is charged (`off_session` defaults to true), a paid or void one is refused. A declined
    charge answers 402 card_error with the decline code and the invoice's PaymentIntent, and
    leaves the invoice as it was but for one more attempt."""
    for name in form:
        if name not in _PAY_PARAMETERS and not name.startswith("expand["):
            return invalid_request(f"Received unknown parameter: {name}")
    invoice_id = inv["id"]
    # Stand-in messages for the refusals, as for void and mark_uncollectible above.
    if inv["status"] == "paid":
        return invalid_request("Invoice is already paid")
    if inv["status"] == "void":
        return invalid_request("You cannot pay a void invoice.")
    now = int(time.time())
    transitions = inv.setdefault("status_transitions", {})
    if inv["status"] == "draft":
        inv["status"] = "open"
        transitions["finalized_at"] = now
    if form.get("paid_out_of_band") == "true":
        # Paid outside Stripe: recorded, nothing charged.
        return 200, _paid(inv, now)
    objects.payment_attempts[invoice_id] = objects.payment_attempts.get(invoice_id, 0) + 1
    inv["attempt_count"] = inv.get("attempt_count", 0) + 1
    inv["attempted"] = True
    decline = objects.declines.get(invoice_id)
    if decline is not None:
        return _card_declined(inv, decline)
    if invoice_id in objects.settling:
        return 200, inv
    return 200, _paid(inv, now)


def _paid(inv: dict[str, Any], now: int) -> dict[str, Any]:
    inv.update(status="paid", amount_paid=inv.get("amount_due", 0), amount_remaining=0)
    inv.setdefault("status_transitions", {})["paid_at"] = now
    return inv


# What Stripe's card errors say for each decline code (docs.stripe.com/declines/codes).
_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}


def _card_declined(inv: dict[str, Any], decline: str) -> tuple[int, dict[str, Any]]:
    """The 402 card_error of a declined invoice payment: `code` card_declined with the
    issuer's `decline_code` (expired_card and, off session, authentication_required are codes
    of their own), the failed charge and the invoice's PaymentIntent with its
    `last_payment_error`."""
    message = _DECLINE_MESSAGES.get(decline, "Your card was declined.")
    own_code = decline in ("expired_card", "authentication_required")
    code = decline if own_code else "card_declined"
    attempt = inv["attempt_count"]
    error: dict[str, Any] = {
        "type": "card_error",
        "code": code,
        "decline_code": decline,
        "message": message,
        "charge": f"ch_{inv['id']}_{attempt}",
        "doc_url": f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}",
    }
    error["payment_intent"] = {
        "id": f"pi_{inv['id']}",
        "object": "payment_intent",
        "amount": inv.get("amount_due", 0),
        "currency": inv.get("currency"),
        "status": "requires_payment_method",
        "last_payment_error": {k: v for k, v in error.items() if k != "payment_intent"},
    }
    return 402, {"error": error}


_RATE_LIMITED: tuple[int, dict[str, Any]] = (
    429,
    {
        "error": {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Request rate limit exceeded.",
        }
    },
)


# The list endpoints: the kind an unknown cursor is named as, and the `expand[]` paths each
# supports (only payment methods: what a sync of customers and subscriptions needs).
_LISTED: dict[str, tuple[str, frozenset[str]]] = {
    "customers": (
        "customer",
        frozenset({"data.invoice_settings.default_payment_method", "data.default_source"}),
    ),
    "subscriptions": ("subscription", frozenset({"data.default_payment_method"})),
    "invoices": ("invoice", frozenset()),
    "charges": ("charge", frozenset()),
}


def _list_query(
    resource: str, query: Mapping[str, str], types: list[str]
) -> ListQuery | tuple[int, dict[str, Any]]:
    """The list parameters of `query`, or the 400 Stripe answers for them."""
    try:
        limit = int(query.get("limit", "10"))
        bounds = {
            name: int(query[f"created[{name}]"])
            for name in ("gte", "gt", "lte", "lt")
            if f"created[{name}]" in query
        }
        exactly = int(query["created"]) if "created" in query else None
    except ValueError as error:
        return invalid_request(f"Invalid integer: {error}")
    if not 1 <= limit <= 100:
        return invalid_request("Invalid limit: must be between 1 and 100")
    if "starting_after" in query and "ending_before" in query:
        return invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    if resource in ("customers", "events") and "customer" in query:
        return invalid_request("Received unknown parameter: customer")
    status = query.get("status")
    statuses: frozenset[str] | None = None
    if resource == "subscriptions":
        if status is None:
            statuses = SUBSCRIPTION_STATUSES - ENDED_STATUSES
        elif status == "ended":
            statuses = ENDED_STATUSES
        elif status in SUBSCRIPTION_STATUSES:
            statuses = frozenset({status})
        elif status != "all":
            return invalid_request(f"Invalid status: {status}")
    elif resource == "invoices" and status is not None:
        if status not in INVOICE_STATUSES:
            return invalid_request(f"Invalid status: {status}")
        statuses = frozenset({status})
    elif status is not None:
        return invalid_request("Received unknown parameter: status")
    created_from = max(bounds.get("gte", 0), bounds.get("gt", -1) + 1)
    created_to = min(bounds.get("lte", NO_LATER_THAN), bounds.get("lt", NO_LATER_THAN + 1) - 1)
    if exactly is not None:
        created_from, created_to = max(created_from, exactly), min(created_to, exactly)
    return ListQuery(
        limit=limit,
        starting_after=query.get("starting_after"),
        ending_before=query.get("ending_before"),
        created_from=created_from,
        created_to=created_to,
        customer=query.get("customer"),
        statuses=statuses,
        types=frozenset(types),
    )


def _expand_id(
    obj: dict[str, Any], steps: list[str], find: Callable[[str], dict[str, Any] | None]
) -> dict[str, Any]:
    """`obj` with the id at `steps` replaced by the object `find` gives for it, if any;
    copied along the path, since `obj` may be a stored object."""
    head, *rest = steps
    value = obj.get(head)
    if rest:
        if isinstance(value, dict):
            return {**obj, head: _expand_id(value, rest, find)}
        return obj
    if isinstance(value, str):
        return {**obj, head: find(value) or value}
    return obj


def _includable(
    obj: dict[str, Any], includable: set[str], expand: list[str], prefix: str = ""
) -> dict[str, Any]:
    """`obj` without the fields Stripe includes only when `expand[]` names them."""
    return {
        key: value
        for key, value in obj.items()
        if key not in includable or f"{prefix}{key}" in expand
    }


def _expand_discounts(
    sub: dict[str, Any], objects: StripeState, expand: list[str]
) -> dict[str, Any]:
    """The subscription with its (and its items') discount ids as objects where expanded."""

    def expanded(ids: list[Any], path: str) -> list[Any]:
        if path not in expand:
            return ids
        return [objects.discounts.get(d, d) if isinstance(d, str) else d for d in ids]

    shown = dict(sub, discounts=expanded(sub.get("discounts") or [], "discounts"))
    items = sub.get("items")
    if items is not None:
        shown["items"] = dict(
            items,
            data=[
                dict(item, discounts=expanded(item.get("discounts") or [], "items.data.discounts"))
                for item in items.get("data", [])
            ],
        )
    return shown


class StripeHttpServer(LocalHttpServer):
    def __init__(self, state: StripeState) -> None:
        super().__init__(StripeHandler)
        self.state = state
        self.lock = threading.Lock()
        # Per endpoint, when the requests it admitted in the last second arrived.
        self.admitted: dict[str, deque[float]] = {}

    def admit(self, endpoint: str, rate: float) -> bool:
        """Whether `endpoint` takes one more request now at `rate` requests per second, over
        a sliding one-second window; called under `lock`."""
        now = time.monotonic()
        window = self.admitted.setdefault(endpoint, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= rate:
            return False
        window.append(now)
        return True
