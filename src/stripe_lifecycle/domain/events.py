"""Dataclasses that cross the Temporal boundary (signals, queries, workflow and activity I/O).

Primitives and ids only, so fields can be added later without breaking running workflows,
and nothing here imports a DB or HTTP library (workflow code imports this module).
"""

# No `from __future__ import annotations` here: Temporal's data converter resolves these
# types for every payload, and string annotations make each resolution far slower.

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from typing import Any


@dataclass
class CouponInfo:
    """The terms of a Stripe Coupon (immutable once created, so safe to keep)."""

    id: str
    duration: str | None = None  # forever | repeating | once
    percent_off: float | None = None
    amount_off: int | None = None
    currency: str | None = None
    duration_in_months: int | None = None
    # `amount_off` in the coupon's other currencies (`currency_options`), and whether they
    # were read: Stripe sends them only when asked to expand them.
    amount_off_by_currency: dict[str, int] = field(default_factory=dict)
    currency_options_known: bool = False


@dataclass
class DiscountInfo:
    """A discount on a customer, subscription or item: which coupon, and since when.

    Events name it in several ways across API versions: an object with its coupon, an
    object naming its coupon by id (clover), or a bare discount id. What the payload does
    not tell is read from Stripe by the customer workflow before the event is applied.
    """

    id: str | None = None
    coupon_id: str | None = None
    # None until its terms are known.
    coupon: CouponInfo | None = None
    start: int | None = None
    end: int | None = None


@dataclass
class PriceTier:
    """One tier of a tiered price, amounts as exact decimal strings in minor units."""

    up_to: int | None = None  # None: the last tier, without an upper bound
    unit_amount_decimal: str | None = None
    flat_amount_decimal: str | None = None


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
    # The customer-wide discount, which applies to subscriptions without one of their own.
    discount: DiscountInfo | None = None


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
    # How Stripe bills the price, in the subscription's currency: `unit_amount` above is
    # the integer field as the payload reports it; these are what the money is counted from.
    unit_amount_decimal: str | None = None
    metered: bool = False
    billing_scheme: str | None = None  # per_unit | tiered
    tiers_mode: str | None = None  # graduated | volume
    # None: the price is tiered but its tiers are not in the payload (events never expand them).
    tiers: list[PriceTier] | None = None
    # `transform_quantity`: the quantity is divided (and rounded up or down) before pricing.
    transform_divide_by: int | None = None
    transform_round: str | None = None  # up | down
    # inclusive | exclusive | unspecified: whether the amount already holds the tax.
    tax_behavior: str | None = None
    # Percentages of the tax rates included in the amount (the item's `tax_rates`, else the
    # subscription's `default_tax_rates`).
    inclusive_tax_percents: list[float] = field(default_factory=list)
    # The price's own (default) currency when the subscription bills another one of its
    # `currency_options`; `currency` is always the currency billed.
    price_currency: str | None = None
    discounts: list[DiscountInfo] = field(default_factory=list)
    # The price's `metadata` (a legacy plan's where only a plan is sent), and its product's
    # when the payload expands the product (events never do): where a business keeps a
    # plan's limits, such as its seats.
    price_metadata: dict[str, str] = field(default_factory=dict)
    product_metadata: dict[str, str] = field(default_factory=dict)


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
    discounts: list[DiscountInfo] = field(default_factory=list)
    # Stripe Tax computes the rate: a tax-inclusive amount then holds a tax we cannot know.
    automatic_tax: bool = False
    # False while something the MRR depends on is unknown (a coupon, a price's tiers): the
    # figure is then the best reading of what is known, not Stripe's.
    mrr_exact: bool = True
    # When the subscription started (`start_date`; a backdated one starts before `created`).
    start_date: int | None = None


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
    # When the draft was finalized (`status_transitions.finalized_at`): from then on it
    # has a number and can be paid, and a `send_invoice` one counts down to its due date.
    finalized_at: int | None = None


@dataclass
class ChargeInfo:
    """A Stripe Charge, for what was refunded of it (`amount_refunded` is cumulative)."""

    id: str
    amount: int = 0
    amount_refunded: int = 0
    currency: str | None = None


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
class QuoteInfo:
    """A Stripe Quote: what a `quote_expiring` lifecycle counts back from and ends on."""

    id: str
    customer_id: str | None = None
    # draft | open | accepted | canceled
    status: str | None = None
    expires_at: int | None = None
    amount_total: int = 0
    currency: str | None = None
    number: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ObjectInfo:
    """The object of any event, as an `event` automation's steps tell it on: its type and
    id, amount and status, and the ids it names (ids and amounts only, never PII)."""

    # Stripe's `object` value: "dispute", "checkout.session", "customer", ...
    type: str
    id: str
    amount: int | None = None
    currency: str | None = None
    status: str | None = None
    # Other objects it names, by their field: {"charge": "ch_...", "subscription": ...}.
    related: dict[str, str] = field(default_factory=dict)


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
    # `customer.discount.*`: the customer-wide discount created, changed or removed.
    discount: DiscountInfo | None = None
    charge: ChargeInfo | None = None
    # Read by the historical sync (`intake/backfill.py`), not sent by Stripe: the state of
    # an object now, which fills the ledger but is no news to act on.
    backfill: bool = False
    # The sync was asked to start lifecycles for situations in progress (`lifecycle sync
    # --start-lifecycles`).
    backfill_starts: bool = False
    quote: QuoteInfo | None = None
    # The event's object in brief, whatever its type (the `event` lifecycle's subject).
    object: ObjectInfo | None = None


@dataclass
class BillingEvents:
    """The `billing_events` signal: one customer's events, oldest stored first."""

    events: list[BillingEvent]


def lean(value: Any) -> Any:
    """`value` as the JSON the data converter would write, less every dataclass field that
    holds its default: the `billing_events` signal's events are mostly empty fields, and
    each one written is one the customer workflow's converter must read back (it fills
    in the defaults of fields left out, so both shapes decode to the same events)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        defaults = _defaults(type(value))
        kept: dict[str, Any] = {}
        for name in _field_names(type(value)):
            item = getattr(value, name)
            if name in defaults and type(item) is type(defaults[name]) and item == defaults[name]:
                continue
            kept[name] = lean(item)
        return kept
    if isinstance(value, list):
        return [lean(item) for item in value]
    if isinstance(value, dict):
        return {key: lean(item) for key, item in value.items()}
    return value


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@cache
def _defaults(cls: type) -> dict[str, Any]:
    """Each field's default (a factory's fresh value), for the fields that have one."""
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults
