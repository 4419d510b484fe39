"""Dataclasses that cross the Temporal boundary (signals, queries, workflow and activity I/O).

Primitives and ids only, so fields can be added later without breaking running workflows,
and nothing here imports a DB or HTTP library (workflow code passes this module through
the sandbox).
"""

# No `from __future__ import annotations` here: Temporal's data converter resolves these
# types for every payload, and string annotations make each resolution far slower.

from dataclasses import dataclass, field


@dataclass
class CustomerInfo:
    """The parts of a Stripe Customer the lifecycles need."""

    id: str
    email: str | None = None
    name: str | None = None
    created: int | None = None
    currency: str | None = None
    deleted: bool = False
    default_payment_method: str | None = None
    country: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # The customer's legacy default card or source (`default_source`); Stripe charges it
    # after the subscription's and the customer's `invoice_settings` defaults.
    default_source: str | None = None


@dataclass
class SubscriptionItemInfo:
    """One subscription item (price, quantity) with its monthly recurring revenue."""

    id: str | None = None
    price_id: str | None = None
    product_id: str | None = None
    nickname: str | None = None
    unit_amount: int | None = None
    currency: str | None = None
    interval: str | None = None
    interval_count: int = 1
    quantity: int = 1
    current_period_end: int | None = None
    mrr_cents: int = 0


@dataclass
class SubscriptionInfo:
    """A Stripe Subscription, read the same way whatever the event's API version."""

    id: str
    customer_id: str | None = None
    status: str | None = None
    currency: str | None = None
    created: int | None = None
    items: list[SubscriptionItemInfo] = field(default_factory=list)
    mrr_cents: int = 0
    current_period_start: int | None = None
    current_period_end: int | None = None
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    cancellation_reason: str | None = None
    paused: bool = False
    default_payment_method: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_source: str | None = None
    # `charge_automatically` or `send_invoice` (the customer pays each invoice by hand).
    collection_method: str | None = None


@dataclass
class InvoiceInfo:
    """A Stripe Invoice with its subscription link, amounts and retry schedule."""

    # None for an upcoming invoice (`invoice.upcoming`): it does not exist yet.
    id: str | None
    customer_id: str | None = None
    subscription_id: str | None = None
    status: str | None = None
    billing_reason: str | None = None
    number: str | None = None
    currency: str | None = None
    amount_due: int = 0
    amount_paid: int = 0
    amount_remaining: int = 0
    total: int = 0
    attempt_count: int = 0
    next_payment_attempt: int | None = None
    hosted_invoice_url: str | None = None
    created: int | None = None
    period_end: int | None = None
    price_ids: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    # Marked paid in the Dashboard (a wire, a write-off): no charge was made.
    paid_out_of_band: bool = False
    collection_method: str | None = None
    due_date: int | None = None


@dataclass
class PaymentMethodInfo:
    """A card PaymentMethod or a legacy card/source, with its expiry."""

    id: str
    customer_id: str | None = None
    type: str | None = None
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass
class BillingEvent:
    """A Stripe event normalised for the customer workflow."""

    event_id: str
    type: str
    created: int
    livemode: bool
    customer_id: str
    api_version: str | None = None
    customer: CustomerInfo | None = None
    subscription: SubscriptionInfo | None = None
    invoice: InvoiceInfo | None = None
    payment_method: PaymentMethodInfo | None = None
    previous_attributes: list[str] = field(default_factory=list)
    # The connected account the event happened on (Stripe Connect), if any: every Stripe
    # call about this customer is made on it.
    account: str | None = None


@dataclass
class BillingEvents:
    """The `billing_events` signal: one customer's events, oldest stored first."""

    events: list[BillingEvent]
