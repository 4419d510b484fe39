"""The retry_payment Stripe action: `POST /v1/invoices/{id}/pay` through the real stripe library
against the local Stripe-speaking server (idempotency keys replayed, 402 card errors with
decline codes, 429s), and a dunning step running it on a real worker."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.interface import StripeActionInput, StripeActionResult
from stripe_lifecycle.activities.stripe_actions import StripeActivities
from stripe_lifecycle.domain.automations import Automation, Step
from stripe_lifecycle.domain.events import InvoiceInfo
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.stripe_api.client import build_stripe_client
from stripe_lifecycle.workflows.engine import LifecycleInput
from stripe_lifecycle.workflows.lifecycles import DunningWorkflow

from .conftest import WorkerRig
from .fakes import STRIPE_API_KEY as API_KEY
from .fakes import StripeHttpServer, StripeState, serving
from .workflow_helpers import DAY

KEY = "dunning-in_open-cus_123/2-retry_payment"


def invoice(invoice_id: str, status: str = "open") -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": "cus_123",
        "status": status,
        "amount_due": 4900,
        "amount_paid": 4900 if status == "paid" else 0,
        "amount_remaining": 0 if status == "paid" else 4900,
        "attempt_count": 1,
        "attempted": True,
        "currency": "usd",
        "livemode": False,
    }


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    state = StripeState(
        invoices={
            i["id"]: i
            for i in (
                invoice("in_open"),
                invoice("in_declined"),
                invoice("in_draft", "draft"),
                invoice("in_uncollectible", "uncollectible"),
                invoice("in_paid", "paid"),
                invoice("in_void", "void"),
                invoice("in_ach"),
            )
        },
        declines={"in_declined": "insufficient_funds"},
        settling={"in_ach"},
    )
    with serving(StripeHttpServer(state)) as server:
        yield server


def client_for(server: StripeHttpServer) -> stripe.StripeClient:
    client = build_stripe_client(Settings(stripe_api_key=API_KEY, stripe_api_base=server.url))
    assert client is not None
    return client


@pytest.fixture
def activities(stripe_api: StripeHttpServer) -> StripeActivities:
    return StripeActivities(client_for(stripe_api))


def retry(
    invoice_id: str | None = "in_open", *, key: str = KEY, account: str | None = None
) -> StripeActionInput:
    return StripeActionInput(
        action="retry_payment",
        invoice_id=invoice_id,
        subscription_id="sub_123",
        idempotency_key=key,
        stripe_account=account,
    )


async def run(activities: StripeActivities, req: StripeActionInput) -> StripeActionResult:
    return await ActivityEnvironment().run(activities.stripe_action, req)


def step_record(result: StripeActionResult) -> str:
    """What the engine writes on a `retry_payment` step (`LifecycleWorkflow._stripe_action`):
    how it went, even when done."""
    return f"{result.status}: {result.detail}"


# --- paid ------------------------------------------------------------------------------


async def test_a_retry_pays_the_open_invoice_off_session_under_the_steps_key(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry())

    assert (result.action, result.status) == ("retry_payment", "done")
    assert result.detail == "invoice in_open paid (amount_paid 4900 usd)"
    [sent] = stripe_api.state.requests
    assert (sent.method, sent.path, sent.form) == (
        "POST",
        "/v1/invoices/in_open/pay",
        {"off_session": "true"},
    )
    assert (sent.api_key, sent.idempotency_key, sent.account) == (API_KEY, KEY, None)
    paid = stripe_api.state.invoices["in_open"]
    assert (paid["status"], paid["amount_paid"], paid["amount_remaining"]) == ("paid", 4900, 0)
    assert paid["attempt_count"] == 2
    assert stripe_api.state.payment_attempts == {"in_open": 1}


async def test_an_uncollectible_invoice_can_still_be_paid(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry("in_uncollectible"))

    assert result.status == "done"
    assert stripe_api.state.invoices["in_uncollectible"]["status"] == "paid"


async def test_a_draft_is_finalized_and_paid(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry("in_draft"))

    assert result.status == "done"
    draft = stripe_api.state.invoices["in_draft"]
    assert draft["status"] == "paid"
    assert set(draft["status_transitions"]) == {"finalized_at", "paid_at"}


async def test_a_payment_that_settles_later_is_processing(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry("in_ach"))

    assert step_record(result) == (
        "processing: invoice in_ach is still open: its payment has not settled yet"
    )
    assert stripe_api.state.payment_attempts == {"in_ach": 1}


# --- declined --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decline_code", "detail"),
    [
        (
            "insufficient_funds",
            "insufficient_funds (card_declined, HTTP 402): Your card has insufficient funds.",
        ),
        ("do_not_honor", "do_not_honor (card_declined, HTTP 402): Your card was declined."),
        ("expired_card", "expired_card (HTTP 402): Your card has expired."),
        (
            "authentication_required",
            "authentication_required (HTTP 402): Your card was declined. This transaction "
            "requires authentication.",
        ),
    ],
)
async def test_a_declined_card_is_declined_with_its_code_and_not_raised(
    activities: StripeActivities, stripe_api: StripeHttpServer, decline_code: str, detail: str
) -> None:
    stripe_api.state.declines["in_open"] = decline_code

    result = await run(activities, retry())

    assert (result.status, result.detail) == ("declined", detail)
    assert step_record(result) == f"declined: {detail}"
    still = stripe_api.state.invoices["in_open"]
    assert (still["status"], still["amount_paid"], still["attempt_count"]) == ("open", 0, 2)
    # A decline is Stripe's answer, not a failed request: nothing read back, nothing retried.
    assert len(stripe_api.state.requests) == 1


# --- once per key ----------------------------------------------------------------------


async def test_a_repeated_activity_charges_once_and_gets_the_same_answer(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    first = await run(activities, retry())
    again = await run(activities, retry())

    assert again == first
    assert [r.idempotency_key for r in stripe_api.state.requests] == [KEY, KEY]
    assert stripe_api.state.payment_attempts == {"in_open": 1}
    assert stripe_api.state.invoices["in_open"]["attempt_count"] == 2


async def test_a_repeated_decline_is_replayed_not_attempted_again(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    first = await run(activities, retry("in_declined"))
    # The card would pass now, but this step's key already has Stripe's answer: a new attempt
    # is the next step's, under its own key.
    del stripe_api.state.declines["in_declined"]
    again = await run(activities, retry("in_declined"))
    next_step = await run(activities, retry("in_declined", key=f"{KEY}-next"))

    assert first.status == again.status == "declined"
    assert again == first
    assert next_step.status == "done"
    assert stripe_api.state.payment_attempts == {"in_declined": 2}


async def test_the_key_with_other_parameters_is_refused_as_stripe_does(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    await run(activities, retry())

    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        await client_for(stripe_api).v1.invoices.pay_async(
            "in_open", {"off_session": False}, options={"idempotency_key": KEY}
        )
    assert stripe_api.state.payment_attempts == {"in_open": 1}


# --- nothing to pay --------------------------------------------------------------------


async def test_a_paid_invoice_is_done_without_a_charge(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry("in_paid"))

    assert result.status == "done"
    assert result.detail == (
        "nothing to do: invoice in_paid is paid "
        "(Stripe answered InvalidRequestError (HTTP 400): Invoice is already paid)"
    )
    # Stripe refuses to pay it again; the invoice read back says why.
    assert [(r.method, r.path) for r in stripe_api.state.requests] == [
        ("POST", "/v1/invoices/in_paid/pay"),
        ("GET", "/v1/invoices/in_paid"),
    ]
    assert stripe_api.state.payment_attempts == {}


async def test_a_void_invoice_fails_and_says_why(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry("in_void"))

    assert step_record(result) == (
        "failed: Stripe refused: InvalidRequestError (HTTP 400): You cannot pay a void "
        "invoice.; invoice in_void is void"
    )
    assert stripe_api.state.payment_attempts == {}


async def test_a_missing_invoice_fails_with_stripes_code(activities: StripeActivities) -> None:
    result = await run(activities, retry("in_missing"))

    assert result.status == "failed"
    assert result.detail.startswith("Stripe refused: resource_missing (HTTP 404)")


# --- transient errors: raised, so Temporal retries -------------------------------------


async def test_a_rate_limit_is_raised_and_the_retry_pays_once(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    stripe_api.state.rate_limited = 1

    with pytest.raises(stripe.RateLimitError):
        await run(activities, retry())
    result = await run(activities, retry())

    assert result.status == "done"
    assert [r.idempotency_key for r in stripe_api.state.requests] == [KEY, KEY]
    assert stripe_api.state.payment_attempts == {"in_open": 1}


async def test_a_server_error_is_raised_for_a_temporal_retry(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    with pytest.raises(stripe.APIError):
        await run(activities, retry("in_down"))

    assert len(stripe_api.state.requests) == 1


# --- not sent, and Connect -------------------------------------------------------------


async def test_without_an_api_key_the_retry_fails_naming_the_setting() -> None:
    result = await run(StripeActivities(None), retry())

    assert result.status == "failed"
    assert "LIFECYCLE_STRIPE_API_KEY" in result.detail


async def test_without_an_invoice_nothing_is_sent(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    result = await run(activities, retry(None))

    assert (result.status, result.detail) == ("failed", "not sent: no invoice id")
    assert stripe_api.state.requests == []


async def test_a_connected_accounts_invoice_is_paid_in_that_account(
    activities: StripeActivities, stripe_api: StripeHttpServer
) -> None:
    seller = StripeState(invoices={"in_open": invoice("in_open")})
    stripe_api.state.connected["acct_Seller1"] = seller

    result = await run(activities, retry(account="acct_Seller1"))

    assert result.status == "done"
    assert [r.account for r in stripe_api.state.requests] == ["acct_Seller1"]
    assert seller.invoices["in_open"]["status"] == "paid"
    assert seller.payment_attempts == {"in_open": 1}
    assert stripe_api.state.invoices["in_open"]["status"] == "open"
    assert stripe_api.state.payment_attempts == {}


# --- a dunning step on a real worker ---------------------------------------------------


def dunning_input(invoice_id: str) -> LifecycleInput:
    return LifecycleInput(
        customer_id="cus_Dun1",
        automation=Automation(
            name="retry-twice",
            lifecycle="dunning",
            steps=[
                Step(index=0, after_seconds=2 * DAY, action="retry_payment"),
                Step(index=1, after_seconds=5 * DAY, action="retry_payment"),
            ],
        ),
        subject_id=invoice_id,
        subscription_id="sub_Dun1",
        customer_email="ada@example.com",
        customer_name="Ada",
        invoice=InvoiceInfo(
            id=invoice_id,
            customer_id="cus_Dun1",
            subscription_id="sub_Dun1",
            status="open",
            currency="usd",
            amount_due=4900,
            attempt_count=1,
        ),
        mrr_cents=4900,
    )


async def test_dunning_retries_declined_then_paid_each_recorded_on_its_step(
    skipping_rig: WorkerRig, stripe_api: StripeHttpServer
) -> None:
    invoice_id = f"in_{uuid.uuid4().hex[:14]}"
    stripe_api.state.invoices[invoice_id] = invoice(invoice_id)
    stripe_api.state.declines[invoice_id] = "insufficient_funds"
    async with skipping_rig.worker(stripe_api_key=API_KEY, stripe_api_base=stripe_api.url):
        handle = await skipping_rig.env.client.start_workflow(
            DunningWorkflow.run,
            dunning_input(invoice_id),
            id=f"dunning-{invoice_id}",
            task_queue=skipping_rig.task_queue,
        )
        # The customer tops up their account between the two retries; the second one meets
        # a rate limit first, which Temporal retries under the same key.
        await skipping_rig.env.sleep(3 * DAY)
        del stripe_api.state.declines[invoice_id]
        stripe_api.state.rate_limited = 1
        result = await handle.result()
        state = await handle.query(DunningWorkflow.state)

    assert result.steps_done == 2
    assert [(s.kind, s.target, s.status) for s in state.steps_done] == [
        (
            "action",
            "retry_payment",
            "declined: insufficient_funds (card_declined, HTTP 402): "
            "Your card has insufficient funds.",
        ),
        (
            "action",
            "retry_payment",
            f"done: invoice {invoice_id} paid (amount_paid 4900 usd)",
        ),
    ]
    pays = [r for r in stripe_api.state.requests if r.path.endswith("/pay")]
    assert [r.idempotency_key for r in pays] == [
        f"dunning-{invoice_id}/0-retry_payment",
        f"dunning-{invoice_id}/1-retry_payment",
        f"dunning-{invoice_id}/1-retry_payment",
    ]
    assert stripe_api.state.payment_attempts == {invoice_id: 2}
    assert stripe_api.state.invoices[invoice_id]["status"] == "paid"
