"""The stripe_action activity: the real stripe library against a local HTTP server that answers
like Stripe's v1 API (form bodies, Bearer key, Idempotency-Key replay, Stripe's error JSON)."""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import stripe
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import StripeActionInput, StripeActionResult
from stripe_lifecycle.activities.stripe_actions import StripeActivities
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.stripe_api.client import build_stripe_client

from .conftest import free_port
from .fakes import serving

API_KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
KEY = "dunning-in_123-cus_123/step-3"


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


@dataclass
class StripeRequest:
    method: str
    path: str
    form: dict[str, str]
    api_key: str | None
    idempotency_key: str | None


@dataclass
class StripeState:
    """Objects by id; ids that always answer an error live in the handler."""

    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[StripeRequest] = field(default_factory=list)
    # Idempotency-Key -> (method, path, form) of its first request and the saved answer.
    saved: dict[str, tuple[tuple[str, str, str], int, dict[str, Any]]] = field(default_factory=dict)
    executed: int = 0  # writes that ran, replays excluded

    def writes(self) -> list[StripeRequest]:
        return [r for r in self.requests if r.method != "GET"]


def subscription(sub_id: str, status: str) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": "cus_123",
        "status": status,
        "canceled_at": None,
        "pause_collection": None,
        "livemode": False,
    }


def invoice(invoice_id: str, status: str) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_123",
        "status": status,
        "amount_due": 4900,
        "currency": "usd",
        "livemode": False,
    }


class StripeHandler(BaseHTTPRequestHandler):
    """Stripe's v1 cancel / update / retrieve subscription and mark_uncollectible / void /
    retrieve invoice, with its idempotency layer: the first answer to a key (once the endpoint
    ran) is saved and replayed, the key reused for another request is an idempotency_error.

    Fixed ids: `*_busy` answers 429, `*_down` answers 500, `sub_forbidden` answers 403."""

    server: "StripeHttpServer"

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
        request = StripeRequest(
            method=method,
            path=self.path,
            form=dict(parse_qsl(raw)),
            api_key=auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
            idempotency_key=key,
        )
        with self.server.lock:
            state.requests.append(request)
            if request.api_key != API_KEY:
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
            # A rate-limited request never reached the endpoint, so nothing is saved for it;
            # everything else (500s included) is replayed for the key.
            if key is not None and method != "GET" and status != 429:
                state.saved[key] = (signature, status, body)
                state.executed += 1
            self._answer(status, body)

    def _route(self, method: str, request: StripeRequest) -> tuple[int, dict[str, Any]]:
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["v1", "subscriptions"] and len(parts) == 3:
            return self._subscription(method, parts[2], request.form)
        if parts[:2] == ["v1", "invoices"] and len(parts) in (3, 4):
            return self._invoice(method, parts[2], parts[3] if len(parts) == 4 else None)
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}

    def _fixed(self, object_id: str) -> tuple[int, dict[str, Any]] | None:
        if object_id.endswith("_busy"):
            return 429, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "rate_limit",
                    "message": "Request rate limit exceeded.",
                }
            }
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

    def _subscription(
        self, method: str, sub_id: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        fixed = self._fixed(sub_id)
        if fixed is not None:
            return fixed
        sub = self.server.state.subscriptions.get(sub_id)
        if sub is None:
            return resource_missing("subscription", sub_id)
        if method == "GET":
            return 200, sub
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
        self, method: str, invoice_id: str, verb: str | None
    ) -> tuple[int, dict[str, Any]]:
        fixed = self._fixed(invoice_id)
        if fixed is not None:
            return fixed
        inv = self.server.state.invoices.get(invoice_id)
        if inv is None:
            return resource_missing("invoice", invoice_id)
        if method == "GET" and verb is None:
            return 200, inv
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
        return 404, {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}

    def _answer(self, status: int, body: dict[str, Any], *, replayed: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_test")
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass  # keep test output quiet


class StripeHttpServer(ThreadingHTTPServer):
    def __init__(self, state: StripeState) -> None:
        super().__init__(("127.0.0.1", 0), StripeHandler)
        self.state = state
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    state = StripeState(
        subscriptions={
            s["id"]: s
            for s in (
                subscription("sub_active", "past_due"),
                subscription("sub_canceled", "canceled"),
            )
        },
        invoices={
            i["id"]: i
            for i in (
                invoice("in_open", "open"),
                invoice("in_uncollectible", "uncollectible"),
                invoice("in_void", "void"),
                invoice("in_paid", "paid"),
            )
        },
    )
    with serving(StripeHttpServer(state)) as server:
        yield server


def settings(**values: Any) -> Settings:
    return Settings(**values)


@pytest.fixture
def activities(stripe_api: StripeHttpServer) -> StripeActivities:
    client = build_stripe_client(settings(stripe_api_key=API_KEY, stripe_api_base=stripe_api.url))
    return StripeActivities(client)


def request(
    action: str,
    *,
    invoice_id: str | None = "in_open",
    subscription_id: str | None = "sub_active",
    key: str = KEY,
) -> StripeActionInput:
    return StripeActionInput(
        action=action,
        invoice_id=invoice_id,
        subscription_id=subscription_id,
        idempotency_key=key,
    )


async def run(activities: StripeActivities, req: StripeActionInput) -> StripeActionResult:
    return await ActivityEnvironment().run(activities.stripe_action, req)


# --- the four actions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "method", "path", "form"),
    [
        ("cancel_subscription", "DELETE", "/v1/subscriptions/sub_active", {}),
        (
            "mark_unpaid",
            "POST",
            "/v1/subscriptions/sub_active",
            {"pause_collection[behavior]": "mark_uncollectible"},
        ),
        ("mark_uncollectible", "POST", "/v1/invoices/in_open/mark_uncollectible", {}),
        ("void_invoice", "POST", "/v1/invoices/in_open/void", {}),
    ],
)
async def test_each_action_is_one_request_with_the_api_key_and_idempotency_key(
    activities: StripeActivities,
    stripe_api: StripeHttpServer,
    action: str,
    method: str,
    path: str,
    form: dict[str, str],
) -> None:
    result = await run(activities, request(action))

    assert result.action == action
    assert result.status == "done", result.detail
    [sent] = stripe_api.state.requests
    assert (sent.method, sent.path, sent.form) == (method, path, form)
    assert sent.api_key == API_KEY
    assert sent.idempotency_key == KEY


async def test_cancel_leaves_the_subscription_canceled(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("cancel_subscription"))

    assert result.detail == "subscription sub_active canceled (status canceled)"
    assert stripe_api.state.subscriptions["sub_active"]["status"] == "canceled"


async def test_mark_unpaid_pauses_collection_and_keeps_the_subscription(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("mark_unpaid"))

    sub = stripe_api.state.subscriptions["sub_active"]
    assert sub["status"] == "past_due"
    assert sub["pause_collection"] == {"behavior": "mark_uncollectible", "resumes_at": None}
    assert "collection of subscription sub_active paused" in result.detail


@pytest.mark.parametrize(
    ("action", "status", "detail"),
    [
        ("mark_uncollectible", "uncollectible", "invoice in_open marked uncollectible"),
        ("void_invoice", "void", "invoice in_open voided"),
    ],
)
async def test_invoice_actions_move_the_invoice(
    activities: StripeActivities,
    stripe_api: StripeHttpServer,
    action: str,
    status: str,
    detail: str,
) -> None:
    result = await run(activities, request(action))

    assert stripe_api.state.invoices["in_open"]["status"] == status
    assert result.detail == f"{detail} (status {status})"


async def test_a_repeated_request_sends_the_same_key_and_stripe_acts_once(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    first = await run(activities, request("cancel_subscription"))
    again = await run(activities, request("cancel_subscription"))

    assert [r.idempotency_key for r in stripe_api.state.requests] == [KEY, KEY]
    assert stripe_api.state.executed == 1
    assert again == first


# --- already done ----------------------------------------------------------------------


async def test_canceling_a_canceled_subscription_is_done(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("cancel_subscription", subscription_id="sub_canceled"))

    # Stripe answers "No such subscription" for it; the subscription read back decides.
    assert result.status == "done"
    assert result.detail.startswith("nothing to do: subscription sub_canceled is canceled")
    assert "resource_missing" in result.detail
    assert [(r.method, r.path) for r in stripe_api.state.requests] == [
        ("DELETE", "/v1/subscriptions/sub_canceled"),
        ("GET", "/v1/subscriptions/sub_canceled"),
    ]


@pytest.mark.parametrize(
    ("action", "invoice_id", "state"),
    [
        ("void_invoice", "in_void", "void"),
        ("mark_uncollectible", "in_uncollectible", "uncollectible"),
    ],
)
async def test_an_invoice_already_in_the_wanted_state_is_done(
    activities: StripeActivities,
    action: str,
    invoice_id: str,
    state: str,
) -> None:
    result = await run(activities, request(action, invoice_id=invoice_id))

    assert result.status == "done"
    assert result.detail.startswith(f"nothing to do: invoice {invoice_id} is {state}")


async def test_voiding_an_uncollectible_invoice_voids_it(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("void_invoice", invoice_id="in_uncollectible"))

    assert result.status == "done"
    assert stripe_api.state.invoices["in_uncollectible"]["status"] == "void"


# --- permanent refusals: failed, not raised --------------------------------------------


async def test_a_missing_subscription_fails_with_stripes_code(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("cancel_subscription", subscription_id="sub_missing"))

    assert result.status == "failed"
    assert result.detail == (
        "Stripe refused: resource_missing (HTTP 404): No such subscription: 'sub_missing'"
    )
    assert [r.method for r in stripe_api.state.requests] == ["DELETE", "GET"]


async def test_marking_a_paid_invoice_uncollectible_fails_and_says_why(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("mark_uncollectible", invoice_id="in_paid"))

    assert result.status == "failed"
    assert result.detail.startswith("Stripe refused: InvalidRequestError (HTTP 400)")
    assert result.detail.endswith("; invoice in_paid is paid")
    assert stripe_api.state.invoices["in_paid"]["status"] == "paid"


async def test_pausing_a_canceled_subscription_fails(activities: StripeActivities) -> None:
    result = await run(activities, request("mark_unpaid", subscription_id="sub_canceled"))

    assert result.status == "failed"
    assert "A canceled subscription can only update" in result.detail
    assert result.detail.endswith("subscription sub_canceled is canceled, collection not paused")


async def test_a_key_without_permission_fails(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, request("cancel_subscription", subscription_id="sub_forbidden"))

    assert result.status == "failed"
    assert result.detail.startswith("Stripe refused: PermissionError (HTTP 403)")
    # Only a refused request is read back: a 403 is not about the object's state.
    assert len(stripe_api.state.requests) == 1


async def test_a_wrong_api_key_fails(stripe_api: StripeHttpServer) -> None:
    client = build_stripe_client(
        settings(stripe_api_key="sk_test_oops", stripe_api_base=stripe_api.url)
    )

    result = await run(StripeActivities(client), request("void_invoice"))

    assert result.status == "failed"
    assert result.detail.startswith("Stripe refused: AuthenticationError (HTTP 401)")
    [sent] = stripe_api.state.requests
    assert sent.api_key == "sk_test_oops"


async def test_a_key_reused_for_another_request_fails(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    await run(activities, request("cancel_subscription"))

    result = await run(activities, request("void_invoice"))

    assert result.status == "failed"
    assert "Keys for idempotent requests" in result.detail
    assert stripe_api.state.invoices["in_open"]["status"] == "open"


# --- transient errors: raised, so Temporal retries -------------------------------------


@pytest.mark.parametrize(
    ("invoice_id", "error"),
    [("in_busy", stripe.RateLimitError), ("in_down", stripe.APIError)],
)
async def test_rate_limits_and_server_errors_raise_for_a_temporal_retry(
    activities: StripeActivities,
    stripe_api: StripeHttpServer,
    invoice_id: str,
    error: type[stripe.StripeError],
) -> None:
    with pytest.raises(error):
        await run(activities, request("void_invoice", invoice_id=invoice_id))

    # One request: the library does not retry on its own, Temporal does.
    assert len(stripe_api.state.requests) == 1


async def test_an_unreachable_stripe_raises_for_a_temporal_retry() -> None:
    client = build_stripe_client(
        settings(stripe_api_key=API_KEY, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    )

    with pytest.raises(stripe.APIConnectionError):
        await run(StripeActivities(client), request("cancel_subscription"))


# --- not sent --------------------------------------------------------------------------


async def test_without_a_client_every_action_fails_naming_the_setting() -> None:
    result = await run(StripeActivities(None), request("cancel_subscription"))

    assert result.status == "failed"
    assert "LIFECYCLE_STRIPE_API_KEY" in result.detail


@pytest.mark.parametrize(
    ("req", "detail"),
    [
        (
            request("cancel_subscription", subscription_id=None),
            "not sent: the invoice has no subscription",
        ),
        (request("mark_unpaid", subscription_id=""), "not sent: the invoice has no subscription"),
        (request("void_invoice", invoice_id=None), "not sent: no invoice id"),
        (request("mark_uncollectible", key=""), "not sent: no idempotency key"),
        (request("refund_everything"), "unknown Stripe action 'refund_everything'"),
    ],
)
async def test_a_request_that_cannot_be_sent_fails_without_calling_stripe(
    activities: StripeActivities,
    stripe_api: StripeHttpServer,
    req: StripeActionInput,
    detail: str,
) -> None:
    result = await run(activities, req)

    assert (result.status, result.detail) == ("failed", detail)
    assert stripe_api.state.requests == []


# --- build_stripe_client ---------------------------------------------------------------


def test_no_client_without_an_api_key() -> None:
    assert build_stripe_client(settings(stripe_api_key=None)) is None
    assert build_stripe_client(settings(stripe_api_key="")) is None


def test_a_client_for_stripe_itself_without_an_api_base() -> None:
    client = build_stripe_client(settings(stripe_api_key=API_KEY, stripe_api_base=None))

    assert isinstance(client, stripe.StripeClient)


async def test_the_api_base_is_used_with_or_without_a_trailing_slash(
    stripe_api: StripeHttpServer,
) -> None:
    client = build_stripe_client(
        settings(stripe_api_key=API_KEY, stripe_api_base=f"{stripe_api.url}/")
    )

    result = await run(StripeActivities(client), request("void_invoice"))

    assert result.status == "done", result.detail
    [sent] = stripe_api.state.requests
    assert (sent.path, sent.api_key) == ("/v1/invoices/in_open/void", API_KEY)
