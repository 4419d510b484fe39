"""The objects lifecycle templates are rendered with, built from the customer's billing
snapshot (pure: the workflows build them, and the template preview builds the same)."""

# No `from __future__ import annotations`: workflow code imports this module.

from typing import Any

from stripe_lifecycle.domain.automations import Offer
from stripe_lifecycle.domain.ledger import CustomerLedger, PaymentMethodState


def card_context(card: PaymentMethodState | None) -> dict[str, Any] | None:
    if card is None:
        return None
    return {
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
    }


def subscription_context(ledger: CustomerLedger, subscription_id: str | None) -> dict[str, Any]:
    """`subscription`, `payment_method` and the next `invoice` as far as the subscription
    tells, for a subscription or card lifecycle."""
    snap = ledger.snapshot
    sub = snap.subscriptions.get(subscription_id or "")
    currency = (sub.currency if sub else None) or snap.currency or "usd"
    amount = sub.amount_cents if sub else 0
    return {
        "subscription": {
            "plan": sub.plan if sub else snap.plan,
            "amount": amount,
            "currency": currency,
            "current_period_end": sub.current_period_end if sub else None,
            "trial_end": sub.trial_end if sub else None,
            "cancel_at": sub.cancel_at if sub else None,
        },
        "payment_method": card_context(ledger.billing_payment_method()),
        "invoice": {
            "number": None,
            "amount_due": amount,
            "currency": currency,
            "hosted_invoice_url": None,
            "next_payment_attempt": None,
            "attempt_count": 0,
        },
    }


def with_customer_and_offer(
    context: dict[str, Any], email: str | None, name: str | None, offer: Offer | None
) -> dict[str, Any]:
    """The whole context of one email: the customer, the objects, the automation's offer."""
    full: dict[str, Any] = {"customer": {"email": email, "name": name}, **context}
    if offer is not None:
        full["offer"] = {"code": offer.code, "description": offer.description}
    return full
