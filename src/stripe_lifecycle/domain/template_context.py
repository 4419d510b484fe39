"""The objects lifecycle templates are rendered with, built from the customer's billing
snapshot (pure: the workflows build them, and the template preview builds the same)."""

# No `from __future__ import annotations`: workflow code imports this module.

from dataclasses import asdict
from typing import Any

from stripe_lifecycle.domain.automations import Offer
from stripe_lifecycle.domain.events import BillingEvent, InvoiceInfo, QuoteInfo
from stripe_lifecycle.domain.ledger import CustomerLedger, PaymentMethodState
from stripe_lifecycle.domain.links import HOSTED_SURVEY, PORTAL


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
            "collection_method": (sub.collection_method if sub else None) or "charge_automatically",
        },
    }


def invoice_context(invoice: InvoiceInfo, now: int | None = None) -> dict[str, Any]:
    """`invoice`, for an invoice lifecycle (dunning, payment action) or a renewal.

    A retry date not after `now` (epoch seconds) is left out: Stripe moved on, and an
    email must never quote a date that has passed.
    """
    retry = invoice.next_payment_attempt
    if retry is not None and now is not None and retry <= now:
        retry = None
    return {
        "invoice": {
            "number": invoice.number,
            "amount_due": invoice.amount_due,
            "currency": invoice.currency or "usd",
            "hosted_invoice_url": invoice.hosted_invoice_url,
            "next_payment_attempt": retry,
            "attempt_count": invoice.attempt_count,
            # `send_invoice`: the customer pays by hand; the copy promises no charge.
            "collection_method": invoice.collection_method or "charge_automatically",
        }
    }


def quote_context(quote: QuoteInfo) -> dict[str, Any]:
    """What a `quote_expiring` step's email reads of its quote."""
    return {
        "id": quote.id,
        "number": quote.number,
        "amount_total": quote.amount_total,
        "currency": quote.currency,
        "expires_at": quote.expires_at,
    }


def event_context(event: BillingEvent) -> dict[str, Any]:
    """What an `event` sequence's steps read of the event that started it: its type and
    id, and its object's ids and amounts (no personal data)."""
    return {
        "type": event.type,
        "id": event.event_id,
        "object": asdict(event.object) if event.object is not None else None,
    }


def step_context(
    context: dict[str, Any],
    invoice: InvoiceInfo | None,
    email: str | None,
    name: str | None,
    offer: Offer | None,
    now: int | None = None,
) -> dict[str, Any]:
    """What a lifecycle step's email is rendered with at `now`: its objects, the invoice
    it is about (invoice lifecycles, a renewal's upcoming invoice), the customer and the
    automation's offer."""
    full: dict[str, Any] = {"customer": {"email": email, "name": name}, **context}
    if invoice is not None:
        full.update(invoice_context(invoice, now))
    if offer is not None:
        full["offer"] = {
            "code": offer.code,
            "description": offer.description,
            "next_plan": offer.next_plan,
        }
    return full


def step_destinations(
    links: tuple[str, ...], offer: Offer | None, invoice: InvoiceInfo | None
) -> dict[str, str]:
    """Where each of a step's links really leads (the email carries tracked links).

    Markers the tracking endpoint resolves at click time: a fresh Customer Portal session
    (they expire within minutes) and the hosted cancellation survey. An invoice's own
    page is where its payment is fixed.
    """
    hosted = invoice.hosted_invoice_url if invoice is not None else None
    targets = {
        "update_payment": hosted or PORTAL,
        "survey": HOSTED_SURVEY,
        "offer": offer.url if offer is not None and offer.url else PORTAL,
    }
    return {name: targets[name] for name in links}
