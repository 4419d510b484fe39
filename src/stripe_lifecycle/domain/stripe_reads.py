"""What a batch of events needs read from Stripe before it is applied, and filling the
answers in.

Payloads leave out what some money depends on: since 2025-09-30.clover a discount names its
coupon by id; a subscription's `discounts` are bare ids unless expanded; a price's tiers and
its `currency_options` are never in an event; since 2025-03-31.basil an invoice no longer
says whether it was paid out of band (its payments do). The customer workflow asks the
`read_stripe` activity for exactly those, on the event's Connect account, and fills the
answers into the events before the ledger applies them, so the workflow's history holds
what was counted. What stays unknown (no API key, Stripe unreachable) leaves the MRR
marked not exact.

Pure: no I/O. The request and answer cross the Temporal boundary (primitives only).
"""

# No `from __future__ import annotations`: Temporal's data converter resolves these types.

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from stripe_lifecycle.domain import mrr
from stripe_lifecycle.domain.events import (
    BillingEvent,
    CouponInfo,
    DiscountInfo,
    PriceTier,
    SubscriptionInfo,
)
from stripe_lifecycle.domain.rules import PAID_EVENTS

# The first API version whose invoices leave `paid_out_of_band` to their payments. Versions
# are dated, so they compare as strings.
INVOICE_PAYMENTS_SINCE = "2025-03-31"


@dataclass
class PriceRead:
    """A price whose amounts in `currency` (the currency billed) are not in the payload."""

    price_id: str
    currency: str
    # Billed in one of the price's `currency_options`, not its default currency.
    other_currency: bool = False


@dataclass
class StripeReadRequest:
    """What to read from Stripe, all on one account (None: the platform's own)."""

    account: str | None = None
    coupon_ids: list[str] = field(default_factory=list)
    # Discounts can only be read through what they are on: subscription id -> discount ids
    # (on the subscription or its items).
    subscription_discounts: dict[str, list[str]] = field(default_factory=dict)
    prices: list[PriceRead] = field(default_factory=list)
    # Paid invoices (basil or later) whose payments say whether Stripe collected them.
    invoice_ids: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.coupon_ids or self.subscription_discounts or self.prices or self.invoice_ids
        )


@dataclass
class PriceTerms:
    """A price's amounts in one currency, as Stripe bills them."""

    price_id: str
    currency: str
    unit_amount_decimal: str | None = None
    tiers: list[PriceTier] | None = None
    tax_behavior: str | None = None


@dataclass
class StripeReadAnswer:
    """What Stripe told. Anything absent stays unknown (a deleted coupon, say)."""

    # False when the worker has no Stripe API key: nothing was read.
    connected: bool = True
    coupons: dict[str, CouponInfo] = field(default_factory=dict)
    # By discount id, their coupons filled in where Stripe told them.
    discounts: dict[str, DiscountInfo] = field(default_factory=dict)
    prices: list[PriceTerms] = field(default_factory=list)
    # Invoice id -> whether any of its paid payments went through Stripe (a charge or a
    # PaymentIntent), rather than recorded as paid outside it.
    paid_through_stripe: dict[str, bool] = field(default_factory=dict)


def requests_for(events: Sequence[BillingEvent]) -> list[StripeReadRequest]:
    """One request per Connect account the batch's events happened on, if they need any."""
    requests: dict[str | None, StripeReadRequest] = {}
    for event in events:
        request = requests.setdefault(event.account, StripeReadRequest(account=event.account))
        _add_needs(event, request)
    return [request for request in requests.values() if request]


def fill(events: Sequence[BillingEvent], answer: StripeReadAnswer, account: str | None) -> None:
    """Put what Stripe answered into the events of `account`, and value their
    subscriptions again."""
    prices = {(p.price_id, p.currency): p for p in answer.prices}
    for event in events:
        if event.account != account:
            continue
        for discount in _discounts_of(event):
            _fill_discount(discount, answer)
        sub = event.subscription
        if sub is not None:
            for item in sub.items:
                terms = prices.get((item.price_id or "", item.currency or ""))
                if terms is not None and mrr.missing_price(item):
                    item.unit_amount_decimal = terms.unit_amount_decimal
                    item.tiers = terms.tiers
                    item.tax_behavior = terms.tax_behavior or item.tax_behavior
            mrr.revalue(sub)
        invoice = event.invoice
        if invoice is not None and invoice.id in answer.paid_through_stripe:
            # An invoice that asked for money and got none of it through Stripe was paid
            # outside it (a wire, a cheque, marked paid in the Dashboard).
            invoice.paid_out_of_band = (
                invoice.amount_due > 0 and not answer.paid_through_stripe[invoice.id]
            )


def _add_needs(event: BillingEvent, request: StripeReadRequest) -> None:
    sub = event.subscription
    for discount in _discounts_of(event):
        currency = sub.currency if sub is not None else None
        if discount.coupon_id is not None and mrr.missing_coupon(discount, currency):
            _add(request.coupon_ids, discount.coupon_id)
        elif discount.coupon_id is None and discount.id is not None and sub is not None:
            _add(request.subscription_discounts.setdefault(sub.id, []), discount.id)
    if sub is not None:
        for item in sub.items:
            if mrr.missing_price(item) and item.price_id and item.currency:
                read = PriceRead(item.price_id, item.currency, item.price_currency is not None)
                if read not in request.prices:
                    request.prices.append(read)
    invoice = event.invoice
    if (
        invoice is not None
        and invoice.id
        and event.type in PAID_EVENTS
        and (event.api_version or "") >= INVOICE_PAYMENTS_SINCE
    ):
        _add(request.invoice_ids, invoice.id)


def _discounts_of(event: BillingEvent) -> Iterator[DiscountInfo]:
    """Every discount an event carries: the subscription's and its items', the customer's,
    and the one a `customer.discount.*` event is about."""
    if event.subscription is not None:
        yield from _subscription_discounts(event.subscription)
    if event.customer is not None and event.customer.discount is not None:
        yield event.customer.discount
    if event.discount is not None:
        yield event.discount


def _subscription_discounts(sub: SubscriptionInfo) -> Iterator[DiscountInfo]:
    yield from sub.discounts
    for item in sub.items:
        yield from item.discounts


def _fill_discount(discount: DiscountInfo, answer: StripeReadAnswer) -> None:
    if discount.coupon_id is None and discount.id in answer.discounts:
        read = answer.discounts[discount.id]
        discount.coupon_id = read.coupon_id
        discount.coupon = read.coupon
        discount.start = read.start
        discount.end = read.end
    coupon = answer.coupons.get(discount.coupon_id or "")
    if coupon is not None:
        discount.coupon = coupon


def _add(values: list[str], value: str) -> None:
    if value not in values:
        values.append(value)
