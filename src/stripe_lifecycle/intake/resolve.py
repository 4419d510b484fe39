"""The customer of an event that names only a payment, read from Stripe.

A Dispute names its `charge` and `payment_intent`, not the customer (nor do Refunds and
early fraud warnings): the forwarder reads the charge, or the payment intent, to find the
customer workflow such an event belongs to. This happens after the event is stored and
acknowledged, never on the webhook's path. A charge's customer, once set, never changes, so
each is read once per process (the four events of one dispute cost one read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from stripe_lifecycle.intake.normalise import PaymentReference
from stripe_lifecycle.stripe_api.client import worth_retrying

# Charges whose customer is remembered; the oldest is forgotten first.
CACHE_SIZE = 10_000

Account = str | None


@dataclass(frozen=True)
class Resolution:
    """The customer the payment was made by, or None and why."""

    customer_id: str | None
    reason: str | None = None


class PaymentCustomerResolver:
    def __init__(self, client: stripe.StripeClient | None) -> None:
        # None without LIFECYCLE_STRIPE_API_KEY: no payment can be read.
        self._client = client
        self._known: dict[tuple[Account, str, str], str] = {}

    async def resolve(self, reference: PaymentReference, account: Account) -> Resolution:
        """The customer of the charge or payment intent, on `account` (Stripe Connect) if
        set. Raises `stripe.StripeError` when a retry may answer (429, 5xx, the network);
        any other refusal (404: the payment is gone) is an answer without a customer."""
        named = f"{reference.kind} {reference.id}"
        if self._client is None:
            return Resolution(
                None, f"LIFECYCLE_STRIPE_API_KEY is not set: the customer of {named} is unknown"
            )
        key = (account, reference.kind, reference.id)
        if key in self._known:
            return Resolution(self._known[key])
        options: stripe.RequestOptions = {"stripe_account": account} if account else {}
        found: stripe.StripeObject
        try:
            if reference.kind == "charge":
                found = await self._client.v1.charges.retrieve_async(reference.id, options=options)
            else:
                found = await self._client.v1.payment_intents.retrieve_async(
                    reference.id, options=options
                )
        except stripe.StripeError as exc:
            if worth_retrying(exc):
                raise
            if exc.http_status == 404:
                return Resolution(None, f"{named} no longer exists at Stripe: {exc.user_message}")
            return Resolution(None, f"Stripe refused to read {named}: {exc.user_message or exc}")
        customer_id = _id_of(found.to_dict().get("customer"))
        if customer_id is None:
            return Resolution(None, f"{named} has no customer (a guest payment)")
        if len(self._known) >= CACHE_SIZE:
            del self._known[next(iter(self._known))]
        self._known[key] = customer_id
        return Resolution(customer_id)


def _id_of(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None
