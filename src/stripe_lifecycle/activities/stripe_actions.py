"""Stripe writes of automations: cancel a subscription, mark an invoice uncollectible, void an
invoice, pause a subscription's collection ("mark unpaid"), or retry an invoice's payment.

Each write carries the workflow's idempotency key (workflow id + step), so a retried activity
repeats the request and Stripe answers it once: a payment retry charges at most once, and its
repeat gets the first answer (paid, or the same decline) back. A refusal that no retry can
change (4xx) is returned as a failed step, a card decline as a declined one; anything that may
pass (429, 5xx, network) is raised so that Temporal retries the activity."""

from dataclasses import dataclass

import stripe
from temporalio import activity

from stripe_lifecycle.activities.interface import (
    StripeActionInput,
    StripeActionResult,
    StripeActions,
)
from stripe_lifecycle.activities.liveness import heartbeating

CANCEL_SUBSCRIPTION = "cancel_subscription"
MARK_UNCOLLECTIBLE = "mark_uncollectible"
VOID_INVOICE = "void_invoice"
PAUSE_COLLECTION = "pause_collection"
# The name `pause_collection` had before: automations no longer accept it (Stripe has no
# call that marks a subscription unpaid), but instances started with it still run it.
MARK_UNPAID = "mark_unpaid"
# `POST /v1/invoices/{id}/pay`: a merchant-initiated attempt to charge the open invoice now.
RETRY_PAYMENT = "retry_payment"

SUBSCRIPTION_ACTIONS = frozenset({CANCEL_SUBSCRIPTION, PAUSE_COLLECTION, MARK_UNPAID})
INVOICE_ACTIONS = frozenset({MARK_UNCOLLECTIBLE, VOID_INVOICE, RETRY_PAYMENT})
ACTIONS = SUBSCRIPTION_ACTIONS | INVOICE_ACTIONS

DONE = "done"
FAILED = "failed"
# A payment retry the card issuer (or the card network) refused: the detail starts with the
# decline code, so the step reads "declined: insufficient_funds (...)".
DECLINED = "declined"
# A payment retry Stripe accepted that has not settled (a bank debit): the invoice is still
# open, and `invoice.paid` or `invoice.payment_failed` tells the outcome later.
PROCESSING = "processing"

# 4xx answers that say "not now" rather than "never": a concurrent request on the same object
# or idempotency key (409), a failed dependency outside Stripe (424), a rate limit (429).
_TRANSIENT_4XX = frozenset({409, 424, 429})


@dataclass(frozen=True)
class _State:
    """Where the object of a refused action stands now."""

    reached: bool
    text: str


class StripeActivities(StripeActions):
    def __init__(self, client: stripe.StripeClient | None) -> None:
        # None when LIFECYCLE_STRIPE_API_KEY is not set: every action then fails visibly.
        self._client = client

    @activity.defn(name="stripe_action")
    async def stripe_action(self, request: StripeActionInput) -> StripeActionResult:
        """Apply one automation action in Stripe, at most once per idempotency key.

        Returns "done" when Stripe applied it (or the object already was in the wanted state:
        a payment retry on a paid invoice), "failed" with the reason when it cannot be
        applied, "declined" with the decline code when the card refused a payment retry,
        "processing" when a retried payment has yet to settle; raises on errors worth a
        retry."""
        async with heartbeating():
            return await self._stripe_action(request)

    async def _stripe_action(self, request: StripeActionInput) -> StripeActionResult:
        action = request.action
        if action not in ACTIONS:
            return _failed(action, f"unknown Stripe action {action!r}")
        if self._client is None:
            return _failed(
                action, "not sent: set LIFECYCLE_STRIPE_API_KEY to let automations call Stripe"
            )
        if action in SUBSCRIPTION_ACTIONS:
            target_id = request.subscription_id
            if not target_id:
                return _failed(action, "not sent: the invoice has no subscription")
        else:
            target_id = request.invoice_id
            if not target_id:
                return _failed(action, "not sent: no invoice id")
        if not request.idempotency_key:
            # Without one a retried attempt could not be told apart from a new write.
            return _failed(action, "not sent: no idempotency key")

        options: stripe.RequestOptions = {"idempotency_key": request.idempotency_key}
        if request.stripe_account:
            # A connected account's customer: acting on the platform would miss it.
            options["stripe_account"] = request.stripe_account
        try:
            if action == RETRY_PAYMENT:
                result = await self._pay(self._client, target_id, options)
            else:
                detail = await self._send(self._client, action, target_id, options)
                result = StripeActionResult(action, DONE, detail)
        except stripe.StripeError as exc:
            if not _permanent(exc):
                activity.logger.warning(
                    "Stripe %s on %s will be retried: %s", action, target_id, _describe(exc)
                )
                raise
            if action == RETRY_PAYMENT and isinstance(exc, stripe.CardError):
                # Not retried: the same key would only replay the decline, and a new attempt
                # is the automation's next retry_payment step (or Stripe's Smart Retries).
                result = StripeActionResult(action, DECLINED, _decline(exc))
            else:
                result = await self._after_refusal(
                    self._client, action, target_id, exc, request.stripe_account
                )
        activity.logger.info(
            "Stripe %s on %s: %s (%s)", action, target_id, result.status, result.detail
        )
        return result

    async def _send(
        self,
        client: stripe.StripeClient,
        action: str,
        target_id: str,
        options: stripe.RequestOptions,
    ) -> str:
        if action == CANCEL_SUBSCRIPTION:
            subscription = await client.v1.subscriptions.cancel_async(target_id, options=options)
            return f"subscription {target_id} canceled (status {subscription.status})"
        if action in (PAUSE_COLLECTION, MARK_UNPAID):
            subscription = await client.v1.subscriptions.update_async(
                target_id,
                {"pause_collection": {"behavior": "mark_uncollectible"}},
                options=options,
            )
            return (
                f"collection of subscription {target_id} paused: its invoices are marked "
                f"uncollectible (status {subscription.status})"
            )
        if action == MARK_UNCOLLECTIBLE:
            invoice = await client.v1.invoices.mark_uncollectible_async(target_id, options=options)
            return f"invoice {target_id} marked uncollectible (status {invoice.status})"
        invoice = await client.v1.invoices.void_invoice_async(target_id, options=options)
        return f"invoice {target_id} voided (status {invoice.status})"

    async def _pay(
        self, client: stripe.StripeClient, invoice_id: str, options: stripe.RequestOptions
    ) -> StripeActionResult:
        # off_session: the customer is not there to authenticate; a card that asks for it
        # is declined with authentication_required instead of waiting for the customer.
        invoice = await client.v1.invoices.pay_async(
            invoice_id, {"off_session": True}, options=options
        )
        if invoice.status == "paid":
            return StripeActionResult(
                RETRY_PAYMENT,
                DONE,
                f"invoice {invoice_id} paid (amount_paid {invoice.amount_paid} {invoice.currency})",
            )
        return StripeActionResult(
            RETRY_PAYMENT,
            PROCESSING,
            f"invoice {invoice_id} is still {invoice.status}: its payment has not settled yet",
        )

    async def _after_refusal(
        self,
        client: stripe.StripeClient,
        action: str,
        target_id: str,
        exc: stripe.StripeError,
        account: str | None,
    ) -> StripeActionResult:
        """A permanent refusal: done if the object already is where the action would take it,
        failed otherwise.

        Stripe refuses to repeat a finished transition, and not always in words that say so:
        canceling a canceled subscription answers 404 resource_missing ("No such
        subscription"), the same as for an id that never existed. So the object's state is
        read back rather than the message parsed."""
        refusal = f"Stripe refused: {_describe(exc)}"
        if not isinstance(exc, stripe.InvalidRequestError):
            return _failed(action, refusal)
        try:
            state = await self._current_state(client, action, target_id, account)
        except stripe.StripeError as lookup_exc:
            if not _permanent(lookup_exc):
                # Unknown whether it is already done: ask again on the next attempt, which
                # repeats the write under the same key and gets the same refusal.
                raise
            return _failed(action, refusal)
        if state.reached:
            return StripeActionResult(
                action, DONE, f"nothing to do: {state.text} (Stripe answered {_describe(exc)})"
            )
        return _failed(action, f"{refusal}; {state.text}")

    async def _current_state(
        self, client: stripe.StripeClient, action: str, target_id: str, account: str | None
    ) -> _State:
        options: stripe.RequestOptions = {"stripe_account": account} if account else {}
        if action in SUBSCRIPTION_ACTIONS:
            subscription = await client.v1.subscriptions.retrieve_async(target_id, options=options)
            if action == CANCEL_SUBSCRIPTION:
                return _State(
                    subscription.status == "canceled",
                    f"subscription {target_id} is {subscription.status}",
                )
            pause = subscription.pause_collection
            behavior = pause.behavior if pause is not None else None
            return _State(
                behavior == "mark_uncollectible",
                f"subscription {target_id} is {subscription.status}, collection "
                + (f"paused ({behavior})" if behavior else "not paused"),
            )
        invoice = await client.v1.invoices.retrieve_async(target_id, options=options)
        wanted = {MARK_UNCOLLECTIBLE: "uncollectible", RETRY_PAYMENT: "paid"}.get(action, "void")
        return _State(invoice.status == wanted, f"invoice {target_id} is {invoice.status}")


def _failed(action: str, detail: str) -> StripeActionResult:
    return StripeActionResult(action, FAILED, detail)


def _permanent(exc: stripe.StripeError) -> bool:
    """True when repeating the request cannot change Stripe's answer."""
    if isinstance(
        exc,
        stripe.InvalidRequestError
        | stripe.AuthenticationError
        | stripe.PermissionError
        | stripe.CardError
        | stripe.IdempotencyError,
    ):
        return True
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return False
    # APIError and the rest: 5xx and the transient 4xx are retried; another 4xx (the library
    # maps e.g. 405 or 413 to APIError) would be refused again.
    status = exc.http_status
    return status is not None and 400 <= status < 500 and status not in _TRANSIENT_4XX


def _decline(exc: stripe.CardError) -> str:
    """The decline code first, then Stripe's error code (when it says more) and message, e.g.
    "insufficient_funds (card_declined, HTTP 402): Your card has insufficient funds.", or
    "expired_card (HTTP 402): Your card has expired."; the error code when the issuer gave no
    decline code. (The stripe library raises CardError for every 402.)"""
    error = exc.error
    code = exc.code or (error.code if error is not None else None)
    decline = error.decline_code if error is not None else None
    label = decline or code or "card_error"
    codes = [c for c in (code,) if c and c != label]
    if exc.http_status is not None:
        codes.append(f"HTTP {exc.http_status}")
    message = exc.user_message or "no message"
    return f"{label} ({', '.join(codes)}): {message}" if codes else f"{label}: {message}"


def _describe(exc: stripe.StripeError) -> str:
    """Stripe's error code (or the error's class) and message, e.g.
    "resource_missing (HTTP 404): No such subscription: 'sub_123'"."""
    code = exc.code
    if code is None and exc.error is not None:
        code = exc.error.code
    # Without a code the class says more than the error type: Stripe answers 401 and 403 with
    # type invalid_request_error.
    label = code or type(exc).__name__
    status = f" (HTTP {exc.http_status})" if exc.http_status is not None else ""
    message = exc.user_message or "no message"
    return f"{label}{status}: {message}"
