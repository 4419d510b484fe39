"""Stripe event payloads read the same way whatever the API version they were sent in.

A webhook arrives in the API version of its endpoint (`event.api_version`), so one
deployment sees several shapes of the same object over its life: subscription periods
moved from the subscription to its items in 2025-03-31.basil, invoices reach their
subscription through `parent` since then, plans gave way to prices, the single `discount`
to a `discounts` list and, in 2025-09-30.clover, `discount.coupon` to
`discount.source.coupon`. This module reads every shape into the dataclasses of
`messages` and computes monthly recurring revenue (MRR) on the way.

Pure: no I/O, no clock. Input is the JSON-decoded payload (plain dicts and lists).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from stripe_lifecycle.domain.events import (
    BillingEvent,
    CustomerInfo,
    InvoiceInfo,
    PaymentMethodInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)

StripeObject = Mapping[str, Any]

# `data.object.object` values that describe a card: a PaymentMethod, or the legacy Card
# and Source objects (`customer.source.expiring` still sends those).
PAYMENT_METHOD_OBJECTS = frozenset({"payment_method", "card", "source"})

# An interval as a fraction of a month (numerator, denominator), kept exact until the
# final rounding: a year is 1/12 month, a week 52/12, a day 365/12.
_MONTHS_PER_INTERVAL: dict[str, tuple[int, int]] = {
    "day": (365, 12),
    "week": (52, 12),
    "month": (1, 1),
    "year": (1, 12),
}

# Card objects and card Sources name the brand for display ("American Express");
# PaymentMethods use codes ("amex"). Filters and templates compare against the codes.
_LEGACY_BRAND_CODES = {
    "American Express": "amex",
    "Diners Club": "diners",
    "Eftpos Australia": "eftpos_au",
}


# --- Events -------------------------------------------------------------------------


def event_customer_id(event: StripeObject) -> str | None:
    """The id of the Stripe customer an event concerns, for any event type, or None."""
    obj = _event_object(event)
    if obj.get("object") == "customer":
        return _id_of(obj.get("id"))
    # A detached payment method no longer names its customer; the event's previous
    # attributes still do. Customers kept as Accounts v2 are named by `customer_account`.
    previous = _dict(_dict(event.get("data")).get("previous_attributes"))
    return (
        _id_of(obj.get("customer"))
        or _id_of(previous.get("customer"))
        or _id_of(obj.get("customer_account"))
    )


def normalise_event(event: StripeObject) -> BillingEvent | None:
    """The event as a `BillingEvent` signal, or None when it concerns no customer."""
    customer_id = event_customer_id(event)
    if customer_id is None:
        return None
    obj = _event_object(event)
    kind = obj.get("object")
    event_type = str(event["type"])

    customer = parse_customer(obj) if kind == "customer" else None
    if customer is not None and event_type == "customer.deleted":
        # The event carries the customer as it was, without `deleted: true`.
        customer.deleted = True

    return BillingEvent(
        event_id=str(event["id"]),
        type=event_type,
        created=int(event["created"]),
        # Only hand-made payloads lack it; test mode is the safe reading (it limits mail).
        livemode=bool(event.get("livemode", False)),
        customer_id=customer_id,
        api_version=_str(event.get("api_version")),
        customer=customer,
        subscription=parse_subscription(obj) if kind == "subscription" else None,
        invoice=parse_invoice(obj) if kind == "invoice" else None,
        payment_method=parse_payment_method(obj) if kind in PAYMENT_METHOD_OBJECTS else None,
        previous_attributes=sorted(_dict(_dict(event.get("data")).get("previous_attributes"))),
        account=_str(event.get("account")),
    )


def _event_object(event: StripeObject) -> StripeObject:
    return _dict(_dict(event.get("data")).get("object"))


# --- Customers ----------------------------------------------------------------------


def parse_customer(obj: StripeObject) -> CustomerInfo:
    """A Stripe Customer (also a deleted one: `{"id", "deleted": true}`)."""
    return CustomerInfo(
        id=_object_id(obj),
        email=_str(obj.get("email")),
        name=_str(obj.get("name")),
        created=_int(obj.get("created")),
        currency=_str(obj.get("currency")),
        deleted=bool(obj.get("deleted", False)),
        default_payment_method=_id_of(
            _dict(obj.get("invoice_settings")).get("default_payment_method")
        ),
        # PaymentMethods replaced sources; a customer that never moved has only the latter.
        default_source=_id_of(obj.get("default_source")),
        country=_str(_dict(obj.get("address")).get("country")),
        metadata=_metadata(obj.get("metadata")),
    )


# --- Subscriptions ------------------------------------------------------------------


@dataclass(frozen=True)
class _Price:
    """What we read from a Price, or from the legacy Plan it replaced."""

    id: str | None
    product_id: str | None
    nickname: str | None
    unit_amount: int | None  # Stripe's integer field, as reported on the item
    exact_unit_amount: Decimal | None  # also from unit_amount_decimal: what MRR uses
    currency: str | None
    interval: str | None
    interval_count: int
    metered: bool


def parse_subscription(obj: StripeObject) -> SubscriptionInfo:
    """A Stripe Subscription, old shape (periods, `plan`, `discount`) or new."""
    raw_items = _subscription_items(obj)
    period_end = _current_period(obj, raw_items, "current_period_end")
    items = [parse_subscription_item(item) for item in raw_items]
    for item in items:
        # Before basil every item shared the subscription's period, so old payloads carry
        # it only on the subscription; copying it down reads both shapes alike.
        if item.current_period_end is None:
            item.current_period_end = period_end
    status = _str(obj.get("status"))
    return SubscriptionInfo(
        id=_object_id(obj),
        customer_id=_id_of(obj.get("customer")),
        status=status,
        currency=_subscription_currency(obj, raw_items),
        created=_int(obj.get("created")),
        items=items,
        mrr_cents=subscription_mrr(obj),
        current_period_start=_current_period(obj, raw_items, "current_period_start"),
        current_period_end=period_end,
        trial_start=_int(obj.get("trial_start")),
        trial_end=_int(obj.get("trial_end")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        cancel_at=_int(obj.get("cancel_at")),
        canceled_at=_int(obj.get("canceled_at")),
        ended_at=_int(obj.get("ended_at")),
        cancellation_reason=_str(_dict(obj.get("cancellation_details")).get("reason")),
        paused=obj.get("pause_collection") is not None or status == "paused",
        default_payment_method=_id_of(obj.get("default_payment_method")),
        default_source=_id_of(obj.get("default_source")),
        collection_method=_str(obj.get("collection_method")),
        metadata=_metadata(obj.get("metadata")),
    )


def parse_subscription_item(obj: StripeObject) -> SubscriptionItemInfo:
    """One subscription item; its `mrr_cents` is before any discount."""
    price = _read_price(obj)
    return SubscriptionItemInfo(
        id=_str(obj.get("id")),
        price_id=price.id,
        product_id=price.product_id,
        nickname=price.nickname,
        unit_amount=price.unit_amount,
        currency=price.currency,
        interval=price.interval,
        interval_count=price.interval_count,
        quantity=_quantity(obj),
        current_period_end=_int(obj.get("current_period_end")),
        mrr_cents=_round(_item_monthly(price, _quantity(obj))),
    )


def subscription_mrr(obj: StripeObject) -> int:
    """Monthly recurring revenue of a subscription in minor units, after discounts.

    Counted whatever the status (a canceled subscription still says what it was worth);
    which statuses count towards a customer's MRR is the customer workflow's decision.
    """
    raw_items = _subscription_items(obj)
    currency = _subscription_currency(obj, raw_items)
    total = Decimal(0)
    recurring: list[_Price] = []
    for item in raw_items:
        price = _read_price(item)
        monthly = _item_monthly(price, _quantity(item))
        total += _apply_discounts(monthly, _discounts(item), currency, price)
        if price.interval is not None:
            recurring.append(price)
    # A subscription-wide amount_off recurs on the subscription's billing interval; items
    # of one subscription share it, so the first recurring item's interval stands for it.
    if recurring:
        total = _apply_discounts(total, _discounts(obj), currency, recurring[0])
    return _round(total)


def monthly_amount(amount: Decimal | int, interval: str | None, interval_count: int) -> Decimal:
    """`amount` charged every `interval_count` `interval`s, as an amount per month.

    One-time prices (no interval) recur never, so they are worth nothing per month.
    """
    if interval not in _MONTHS_PER_INTERVAL:
        return Decimal(0)
    numerator, denominator = _MONTHS_PER_INTERVAL[interval]
    return Decimal(amount) * numerator / (denominator * max(interval_count, 1))


def _subscription_items(obj: StripeObject) -> list[StripeObject]:
    items = _list_data(obj.get("items"))
    if items or obj.get("plan") is None:
        return items
    # The oldest API versions put a single plan and quantity on the subscription itself.
    return [{"plan": obj["plan"], "quantity": obj.get("quantity")}]


def _current_period(obj: StripeObject, raw_items: Sequence[StripeObject], key: str) -> int | None:
    """`current_period_start`/`_end`: on the subscription until basil, on each item since.

    When only the items carry it, the earliest item value is the next moment the
    subscription bills (or lapses); renewal and scheduled-cancel reminders are anchored
    to it, and anchoring to a later item would send them late.
    """
    top_level = _int(obj.get(key))
    if top_level is not None:
        return top_level
    values = [value for item in raw_items if (value := _int(item.get(key))) is not None]
    return min(values, default=None)


def _subscription_currency(obj: StripeObject, raw_items: Sequence[StripeObject]) -> str | None:
    # Old subscriptions have no currency of their own; their prices do.
    currency = _str(obj.get("currency"))
    if currency is None and raw_items:
        currency = _read_price(raw_items[0]).currency
    return currency


def _read_price(item: StripeObject) -> _Price:
    """The price of a subscription item, from `price` or, in old payloads, `plan`.

    `price` wins: `plan` is the legacy mirror of it (Stripe's own example fills it with
    placeholders). A plan keeps its terms at the top level (`amount`, `interval`) where a
    price has `unit_amount` and `recurring`; reading the plan names as fallbacks covers
    plans, prices, and the plan-shaped prices some libraries' fixtures carry.
    """
    price = _dict(item.get("price")) or _dict(item.get("plan"))
    recurring = _dict(price.get("recurring"))
    unit_amount = _int(_first(price.get("unit_amount"), price.get("amount")))
    decimal_amount = _first(price.get("unit_amount_decimal"), price.get("amount_decimal"))
    if unit_amount is not None:
        exact: Decimal | None = Decimal(unit_amount)
    elif decimal_amount is not None:
        exact = Decimal(str(decimal_amount))
    else:
        # Tiered and custom-amount prices have no unit amount to count.
        exact = None
    return _Price(
        id=_id_of(price.get("id")),
        product_id=_id_of(price.get("product")),
        nickname=_str(_first(price.get("nickname"), price.get("name"))),
        unit_amount=unit_amount,
        exact_unit_amount=exact,
        currency=_str(price.get("currency")),
        interval=_str(_first(recurring.get("interval"), price.get("interval"))),
        interval_count=_int(_first(recurring.get("interval_count"), price.get("interval_count")))
        or 1,
        metered=_first(recurring.get("usage_type"), price.get("usage_type")) == "metered",
    )


def _quantity(item: StripeObject) -> int:
    # Absent on metered items; 0 is a real quantity, so no `or 1`.
    quantity = _int(item.get("quantity"))
    return 1 if quantity is None else quantity


def _item_monthly(price: _Price, quantity: int) -> Decimal:
    # Metered usage is unknown until it is invoiced: counting its per-unit rate as revenue
    # would invent MRR, so it counts as nothing, like a price without an amount.
    if price.exact_unit_amount is None or price.metered:
        return Decimal(0)
    return monthly_amount(price.exact_unit_amount * quantity, price.interval, price.interval_count)


def _discounts(obj: StripeObject) -> list[StripeObject]:
    """The readable discounts on a subscription or item, each once.

    Old versions have one expanded `discount`; newer ones a `discounts` list of ids
    (the coupon behind a bare id is not in the payload, so it is skipped) or, when
    expanded, of discount objects. Versions in between send both, naming the same one.
    """
    seen: set[str] = set()
    found: list[StripeObject] = []
    for discount in [obj.get("discount"), *(obj.get("discounts") or [])]:
        if not isinstance(discount, Mapping):
            continue
        discount_id = discount.get("id")
        if isinstance(discount_id, str):
            if discount_id in seen:
                continue
            seen.add(discount_id)
        found.append(discount)
    return found


def _apply_discounts(
    monthly: Decimal, discounts: Sequence[StripeObject], currency: str | None, price: _Price
) -> Decimal:
    for discount in discounts:
        # Until 2025-09-30.clover the coupon sits on the discount, since then under
        # `source`, where events leave it unexpanded (an id we cannot read).
        coupon = _dict(discount.get("coupon")) or _dict(_dict(discount.get("source")).get("coupon"))
        # A `once` coupon only lowers the first invoice; what recurs is unchanged.
        if coupon.get("duration") == "once":
            continue
        if coupon.get("percent_off") is not None:
            monthly -= monthly * Decimal(str(coupon["percent_off"])) / 100
        elif coupon.get("amount_off") is not None and _same_currency(coupon, currency):
            amount_off = monthly_amount(coupon["amount_off"], price.interval, price.interval_count)
            monthly -= amount_off
        monthly = max(monthly, Decimal(0))
    return monthly


def _same_currency(coupon: StripeObject, currency: str | None) -> bool:
    # An amount in another currency cannot be subtracted without a rate we don't have.
    coupon_currency = _str(coupon.get("currency"))
    if coupon_currency is None or currency is None:
        return True
    return coupon_currency.lower() == currency.lower()


def _round(amount: Decimal) -> int:
    return int(max(amount, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- Invoices -----------------------------------------------------------------------


def parse_invoice(obj: StripeObject) -> InvoiceInfo:
    """A Stripe Invoice. Upcoming invoices have no id yet: theirs is ""."""
    price_ids: list[str] = []
    product_ids: list[str] = []
    for line in _list_data(obj.get("lines")):
        price_id, product_id = _line_price(line)
        if price_id is not None:
            price_ids.append(price_id)
        if product_id is not None:
            product_ids.append(product_id)
    return InvoiceInfo(
        id=_id_of(obj.get("id")),
        customer_id=_id_of(obj.get("customer")),
        subscription_id=_invoice_subscription_id(obj),
        status=_str(obj.get("status")),
        billing_reason=_str(obj.get("billing_reason")),
        number=_str(obj.get("number")),
        currency=_str(obj.get("currency")),
        amount_due=_int(obj.get("amount_due")) or 0,
        amount_paid=_int(obj.get("amount_paid")) or 0,
        amount_remaining=_int(obj.get("amount_remaining")) or 0,
        total=_int(obj.get("total")) or 0,
        attempt_count=_int(obj.get("attempt_count")) or 0,
        next_payment_attempt=_int(obj.get("next_payment_attempt")),
        hosted_invoice_url=_str(obj.get("hosted_invoice_url")),
        created=_int(obj.get("created")),
        period_end=_int(obj.get("period_end")),
        price_ids=list(dict.fromkeys(price_ids)),
        product_ids=list(dict.fromkeys(product_ids)),
        metadata=_metadata(obj.get("metadata")),
        # Before basil the invoice says so itself; since, only its payments do.
        paid_out_of_band=bool(obj.get("paid_out_of_band", False)),
        collection_method=_str(obj.get("collection_method")),
        due_date=_int(obj.get("due_date")),
    )


def _invoice_subscription_id(obj: StripeObject) -> str | None:
    # Since basil `parent` says what generated the invoice; only a subscription parent
    # names a subscription (the other detail hashes are null, except in Stripe's
    # generated example, which fills them all).
    parent = _dict(obj.get("parent"))
    if parent.get("type") == "subscription_details":
        return _id_of(_dict(parent.get("subscription_details")).get("subscription"))
    return _id_of(obj.get("subscription"))


def _line_price(line: StripeObject) -> tuple[str | None, str | None]:
    """(price id, product id) of an invoice line, basil `pricing` or an older `price`/`plan`."""
    details = _dict(_dict(line.get("pricing")).get("price_details"))
    if details:
        return _id_of(details.get("price")), _id_of(details.get("product"))
    price = _first(line.get("price"), line.get("plan"))
    return _id_of(price), _id_of(_dict(price).get("product"))


# --- Payment methods ----------------------------------------------------------------


def parse_payment_method(obj: StripeObject) -> PaymentMethodInfo:
    """A PaymentMethod, or a legacy Card or Source, with its card's expiry if it has one."""
    # PaymentMethods and card Sources nest the card under `card`; a Card object (and an
    # old-style source) has the card fields at the top level.
    card = _dict(obj.get("card")) or obj
    brand = _str(card.get("brand"))
    return PaymentMethodInfo(
        id=_object_id(obj),
        customer_id=_id_of(obj.get("customer")),
        type=_str(obj.get("type")) or ("card" if obj.get("object") == "card" else None),
        brand=None if brand is None else _brand_code(brand),
        last4=_str(card.get("last4")),
        exp_month=_int(card.get("exp_month")),
        exp_year=_int(card.get("exp_year")),
    )


def _brand_code(brand: str) -> str:
    return _LEGACY_BRAND_CODES.get(brand, brand.lower().replace(" ", "_"))


# --- Reading JSON -------------------------------------------------------------------


def _dict(value: Any) -> StripeObject:
    """`value` if it is an object; else an empty one (absent, null, or an unexpanded id)."""
    return value if isinstance(value, Mapping) else {}


def _list_data(value: Any) -> list[StripeObject]:
    """The objects of a Stripe list (`{"object": "list", "data": [...]}`)."""
    return [entry for entry in _dict(value).get("data") or [] if isinstance(entry, Mapping)]


def _id_of(value: Any) -> str | None:
    """The id behind an expandable field: a bare id, or the object when expanded."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _object_id(obj: StripeObject) -> str:
    # The dataclasses need an id; upcoming invoices and some hand-made payloads have none.
    return _id_of(obj.get("id")) or ""


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _metadata(value: Any) -> dict[str, str]:
    # Stripe sends strings; hand-made payloads sometimes send numbers or nulls.
    return {str(key): str(item) for key, item in _dict(value).items() if item is not None}
