"""The objects lifecycle templates are rendered with, built from the customer's billing
snapshot (pure: the workflows build them, and the template preview builds the same)."""

# No `from __future__ import annotations`: workflow code imports this module.

from typing import Any

from stripe_lifecycle.domain.automations import Offer
from stripe_lifecycle.domain.events import InvoiceInfo, ObjectInfo, QuoteInfo
from stripe_lifecycle.domain.ledger import CustomerLedger, PaymentMethodState
from stripe_lifecycle.domain.links import HOSTED_SURVEY, PORTAL

DAY = 86_400


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
    """`invoice`, for an invoice lifecycle (dunning, payment action, due, overdue,
    finalized) or a renewal.

    A retry date not after `now` (epoch seconds) is left out: Stripe moved on, and an
    email must never quote a date that has passed. The due date stays (an overdue
    reminder says when it was due); `days_until_due` and `days_overdue` count UTC calendar
    days from `now`, as the `date` filter prints them, and are None when they do not apply
    (no due date, no `now`, or the due date on the other side of `now`).
    """
    retry = invoice.next_payment_attempt
    if retry is not None and now is not None and retry <= now:
        retry = None
    due = invoice.due_date
    until_due = overdue = None
    if due is not None and now is not None:
        if due > now:
            until_due = due // DAY - now // DAY
        else:
            overdue = now // DAY - due // DAY
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
            "due_date": due,
            "days_until_due": until_due,
            "days_overdue": overdue,
        }
    }


def quote_context(quote: QuoteInfo) -> dict[str, Any]:
    """`quote`, for a `quote_expiring` lifecycle."""
    return {
        "quote": {
            "id": quote.id,
            "number": quote.number,
            "amount_total": quote.amount_total,
            # Stripe gives every quote a currency.
            "currency": quote.currency,
            "expires_at": quote.expires_at,
        }
    }


def event_context(event_type: str, event_id: str, obj: ObjectInfo | None) -> dict[str, Any]:
    """`event`, for an `event` lifecycle: the triggering event and its object in brief."""
    return {
        "event": {
            "type": event_type,
            "id": event_id,
            "object": None
            if obj is None
            else {
                "type": obj.type,
                "id": obj.id,
                "amount": obj.amount,
                "currency": obj.currency,
                "status": obj.status,
                "related": dict(obj.related),
            },
        }
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
