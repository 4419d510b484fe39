"""The stripe_action activity: the real stripe library against a local HTTP server that answers
like Stripe's v1 API (form bodies, Bearer key, Idempotency-Key replay, Stripe's error JSON)."""

from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import StripeActionInput, StripeActionResult
from stripe_lifecycle.activities.stripe_actions import StripeActivities
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.stripe_api.client import build_stripe_client

from .conftest import free_port
from .fakes import STRIPE_API_KEY as API_KEY
from .fakes import StripeHttpServer, StripeState, serving

KEY = "dunning-in_123-cus_123/step-3"


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
            "pause_collection",
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


# Instances started before `mark_unpaid` was renamed still run their step under that name.
@pytest.mark.parametrize("action", ["pause_collection", "mark_unpaid"])
async def test_pause_collection_pauses_collection_and_keeps_the_subscription(
    activities: StripeActivities, stripe_api: StripeHttpServer, action: str
) -> None:
    result = await run(activities, request(action))

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
    result = await run(activities, request("pause_collection", subscription_id="sub_canceled"))

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
        (
            request("pause_collection", subscription_id=""),
            "not sent: the invoice has no subscription",
        ),
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


# --- Connect -----------------------------------------------------------------------------


async def test_a_connected_accounts_customer_is_acted_on_in_that_account(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    # The platform has an open invoice of the same id: acting there would be the wrong one.
    stripe_api.state.connected["acct_Seller1"] = StripeState(
        invoices={"in_open": invoice("in_open", "open")}
    )
    connected = request("void_invoice")
    connected.stripe_account = "acct_Seller1"

    result = await run(activities, connected)

    assert result.status == "done"
    assert [r.account for r in stripe_api.state.requests] == ["acct_Seller1"]
    assert stripe_api.state.connected["acct_Seller1"].invoices["in_open"]["status"] == "void"
    assert stripe_api.state.invoices["in_open"]["status"] == "open"
