"""Stripe event payloads read the same way whatever the API version they were sent in.

A webhook arrives in the API version of its endpoint (`event.api_version`), so one
deployment sees several shapes of the same object over its life: subscription periods
moved from the subscription to its items in 2025-03-31.basil, invoices reach their
subscription through `parent` since then, plans gave way to prices, the single `discount`
to a `discounts` list and, in 2025-09-30.clover, `discount.coupon` to
`discount.source.coupon`. This module reads every shape into the dataclasses of
`domain/events.py` and values subscriptions (`domain/mrr.py`) as far as the payload tells;
what it leaves out (a clover coupon, a price's tiers) the customer workflow reads from
Stripe before applying the event. Every event also carries its object in brief
(`ObjectInfo`: ids, amount, status, no personal data), whatever the object's type.

Pure: no I/O, no clock. Input is the JSON-decoded payload (plain dicts and lists).

Total over JSON: whatever a signed payload holds, `normalise_event` answers a
`BillingEvent` (or None) or raises `UnreadableEvent`, never another exception. Text fields
of another type read as absent; a count, amount, percentage or timestamp that is not a
number in range, or a list that is not a list, makes the event unreadable: read as absent,
it would value a subscription wrongly or time an email wrongly. The intake stores an
unreadable event with the reason and delivers it to no workflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from stripe_lifecycle.domain import mrr
from stripe_lifecycle.domain.events import (
    BillingEvent,
    ChargeInfo,
    CouponInfo,
    CustomerInfo,
    DiscountInfo,
    InvoiceInfo,
    ObjectInfo,
    PaymentMethodInfo,
    PriceTier,
    QuoteInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)

StripeObject = Mapping[str, Any]

# `data.object.object` values that describe a card: a PaymentMethod, or the legacy Card
# and Source objects (`customer.source.expiring` still sends those).
PAYMENT_METHOD_OBJECTS = frozenset({"payment_method", "card", "source"})

# Card objects and card Sources name the brand for display ("American Express");
# PaymentMethods use codes ("amex"). Filters and templates compare against the codes.
_LEGACY_BRAND_CODES = {
    "American Express": "amex",
    "Diners Club": "diners",
    "Eftpos Australia": "eftpos_au",
}

# The field that holds an object's natural amount, first found wins: `amount` (charges,
# disputes, refunds, payment intents), `amount_total` (checkout sessions, quotes),
# `amount_due` (invoices: what is owed), `total` (credit notes).
_AMOUNT_FIELDS = ("amount", "amount_total", "amount_due", "total")

# Fields that name another object by id (or hold it expanded), as `ObjectInfo.related`
# reports them. Ids only: nothing here names a person.
_RELATED_FIELDS = (
    "customer",
    "customer_account",
    "subscription",
    "subscription_schedule",
    "invoice",
    "latest_invoice",
    "charge",
    "payment_intent",
    "setup_intent",
    "quote",
    "checkout_session",
    "payment_link",
    "payment_method",
)


# The largest magnitude an integer field may have: JSON-safe (2**53) and far beyond any
# Stripe amount or count. Timestamps must name a moment a `datetime` can hold.
_MAX_INT = 2**53
_MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z
# Decimal amounts (`unit_amount_decimal`, tier amounts) Stripe allows 12 digits before the
# point and 12 after; beyond these bounds the rounding in `domain/mrr.py` cannot be exact.
_MAX_DECIMAL = Decimal(10) ** 15
_MIN_DECIMAL_EXPONENT = -30


class UnreadableEvent(ValueError):
    """A Stripe event this module cannot read: a field of the wrong type or out of range.
    The message names the field and says what was wrong, for the inbox row's record."""


# --- Events -------------------------------------------------------------------------


def event_customer_id(event: StripeObject) -> str | None:
    """The id of the Stripe customer an event concerns, for any event type, or None.

    None also for an object that names its customer only through another one: a dispute
    or refund names a charge (unless the charge is expanded and names the customer: the
    intake reads an unexpanded one from Stripe); a guest Checkout Session names none.
    """
    obj = _event_object(event)
    if obj.get("object") == "customer":
        return _id_of(obj.get("id"))
    # A detached payment method no longer names its customer; the event's previous
    # attributes still do. Customers kept as Accounts v2 are named by `customer_account`.
    previous = _dict(_dict(event.get("data")).get("previous_attributes"))
    return _named_customer(obj) or _id_of(previous.get("customer"))


def _named_customer(obj: StripeObject) -> str | None:
    """The customer an object names: its own `customer` or `customer_account`, else its
    charge's when the charge is expanded (a dispute's or refund's)."""
    return (
        _id_of(obj.get("customer"))
        or _id_of(obj.get("customer_account"))
        or _id_of(_dict(obj.get("charge")).get("customer"))
    )


def normalise_event(event: StripeObject) -> BillingEvent | None:
    """The event as a `BillingEvent` signal, or None when it concerns no customer.

    Raises `UnreadableEvent` (and nothing else) for a payload it cannot read.
    """
    try:
        return _normalise_event(event)
    except UnreadableEvent:
        raise
    except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
        # A shape no reader below anticipated: recorded as unreadable, like the rest.
        raise UnreadableEvent(f"{type(exc).__name__}: {exc}"[:500]) from exc


def _normalise_event(event: StripeObject) -> BillingEvent | None:
    # The envelope is read first: the inbox stores every event by these, customer or not.
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise UnreadableEvent(f"type: expected a string, got {_kind(event_type)}")
    event_id = event.get("id")
    if not isinstance(event_id, str):
        raise UnreadableEvent(f"id: expected a string, got {_kind(event_id)}")
    created = _timestamp(event.get("created"), "created")
    if created is None:
        raise UnreadableEvent("created: missing")
    customer_id = event_customer_id(event)
    if customer_id is None:
        return None
    obj = _event_object(event)
    kind = obj.get("object")

    customer = parse_customer(obj) if kind == "customer" else None
    if customer is not None and event_type == "customer.deleted":
        # The event carries the customer as it was, without `deleted: true`.
        customer.deleted = True
    # `customer.discount.*` fire for subscription and item discounts too; those arrive with
    # their subscription, so only a customer-wide discount is read here.
    customer_wide = kind == "discount" and not obj.get("subscription")

    return BillingEvent(
        event_id=event_id,
        type=event_type,
        created=created,
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
        discount=parse_discount(obj) if customer_wide else None,
        charge=parse_charge(obj) if kind == "charge" else None,
        quote=parse_quote(obj) if kind == "quote" else None,
        object=parse_object(obj) if obj else None,
    )


def _event_object(event: StripeObject) -> StripeObject:
    return _dict(_dict(event.get("data")).get("object"))


# --- Any object ---------------------------------------------------------------------


def parse_object(obj: StripeObject) -> ObjectInfo:
    """Any event's object in brief (an `event` automation's subject): its type and id, its
    natural amount, currency and status, and the ids of the objects it names.

    No personal data: names, emails, addresses and phone numbers are never read, and
    `related` holds ids only (an expanded object gives its id). Where the API versions
    name a link differently (an invoice's subscription and quote under `parent` since
    basil), the link reads the same in each.
    """
    amount = next(
        (found for key in _AMOUNT_FIELDS if (found := _int_or_none(obj.get(key))) is not None),
        None,
    )
    related = {key: link for key in _RELATED_FIELDS if (link := _id_of(obj.get(key))) is not None}
    if obj.get("object") == "invoice":
        parent = _dict(obj.get("parent"))
        subscription = _invoice_subscription_id(obj)
        quote = _id_of(_dict(parent.get("quote_details")).get("quote")) or _id_of(obj.get("quote"))
        for field, link_id in (("subscription", subscription), ("quote", quote)):
            if link_id is not None:
                related[field] = link_id
    customer = _named_customer(obj)
    if customer is not None and obj.get("object") != "customer":
        related.setdefault("customer", customer)
    currency = _currency(obj.get("currency"))
    if obj.get("object") == "subscription":
        # Old subscriptions have no currency of their own; their prices do.
        currency = _subscription_currency(obj, _subscription_items(obj))
    status = obj.get("status")
    return ObjectInfo(
        type=_str(obj.get("object")) or "",
        id=_object_id(obj),
        amount=amount,
        currency=currency,
        status=status if isinstance(status, str) else None,
        related=related,
    )


# --- Customers ----------------------------------------------------------------------


def parse_customer(obj: StripeObject) -> CustomerInfo:
    """A Stripe Customer (also a deleted one: `{"id", "deleted": true}`)."""
    return CustomerInfo(
        id=_object_id(obj),
        email=_str(obj.get("email")),
        name=_str(obj.get("name")),
        created=_timestamp(obj.get("created"), "created"),
        currency=_str(obj.get("currency")),
        deleted=bool(obj.get("deleted", False)),
        default_payment_method=_id_of(
            _dict(obj.get("invoice_settings")).get("default_payment_method")
        ),
        # PaymentMethods replaced sources; a customer that never moved has only the latter.
        default_source=_id_of(obj.get("default_source")),
        country=_str(_dict(obj.get("address")).get("country")),
        metadata=_metadata(obj.get("metadata")),
        discount=parse_discount(obj["discount"]) if _dict(obj.get("discount")) else None,
    )


# --- Subscriptions ------------------------------------------------------------------


def parse_subscription(obj: StripeObject) -> SubscriptionInfo:
    """A Stripe Subscription, old shape (periods, `plan`, `discount`) or new, valued."""
    raw_items = _subscription_items(obj)
    default_tax = _inclusive_tax_percents(obj.get("default_tax_rates"))
    period_end = _current_period(obj, raw_items, "current_period_end")
    # Old subscriptions have no currency of their own: each item bills in its price's.
    billed = _str(obj.get("currency"))
    items = [parse_subscription_item(item, billed, default_tax) for item in raw_items]
    for item in items:
        # Before basil every item shared the subscription's period, so old payloads carry
        # it only on the subscription; copying it down reads both shapes alike.
        if item.current_period_end is None:
            item.current_period_end = period_end
    status = _str(obj.get("status"))
    sub = SubscriptionInfo(
        id=_object_id(obj),
        customer_id=_id_of(obj.get("customer")),
        status=status,
        currency=_subscription_currency(obj, raw_items),
        created=_timestamp(obj.get("created"), "created"),
        start_date=_timestamp(obj.get("start_date"), "start_date"),
        items=items,
        current_period_start=_current_period(obj, raw_items, "current_period_start"),
        current_period_end=period_end,
        trial_start=_timestamp(obj.get("trial_start"), "trial_start"),
        trial_end=_timestamp(obj.get("trial_end"), "trial_end"),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end", False)),
        cancel_at=_timestamp(obj.get("cancel_at"), "cancel_at"),
        canceled_at=_timestamp(obj.get("canceled_at"), "canceled_at"),
        ended_at=_timestamp(obj.get("ended_at"), "ended_at"),
        cancellation_reason=_str(_dict(obj.get("cancellation_details")).get("reason")),
        paused=obj.get("pause_collection") is not None or status == "paused",
        default_payment_method=_id_of(obj.get("default_payment_method")),
        default_source=_id_of(obj.get("default_source")),
        collection_method=_str(obj.get("collection_method")),
        metadata=_metadata(obj.get("metadata")),
        discounts=parse_discounts(obj),
        automatic_tax=bool(_dict(obj.get("automatic_tax")).get("enabled", False)),
    )
    mrr.revalue(sub)
    return sub


def parse_subscription_item(
    obj: StripeObject,
    currency: str | None = None,
    default_tax_percents: Sequence[float] = (),
) -> SubscriptionItemInfo:
    """One subscription item billed in `currency` (its price's when None); its `mrr_cents`
    is before any discount. Tax rates of its own replace the subscription's defaults."""
    price = _read_price(obj, currency)
    own_tax = obj.get("tax_rates")
    item = SubscriptionItemInfo(
        id=_str(obj.get("id")),
        price_id=price.id,
        product_id=price.product_id,
        nickname=price.nickname,
        unit_amount=price.unit_amount,
        currency=price.currency,
        interval=price.interval,
        interval_count=price.interval_count,
        quantity=_quantity(obj),
        current_period_end=_timestamp(obj.get("current_period_end"), "current_period_end"),
        unit_amount_decimal=price.unit_amount_decimal,
        metered=price.metered,
        billing_scheme=price.billing_scheme,
        tiers_mode=price.tiers_mode,
        tiers=price.tiers,
        transform_divide_by=price.divide_by,
        transform_round=price.round,
        tax_behavior=price.tax_behavior,
        inclusive_tax_percents=_inclusive_tax_percents(own_tax)
        if own_tax
        else list(default_tax_percents),
        price_currency=price.default_currency,
        discounts=parse_discounts(obj),
        price_metadata=price.metadata,
        product_metadata=price.product_metadata,
    )
    item.mrr_cents = mrr.item_mrr_cents(item)
    return item


@dataclass(frozen=True)
class _Price:
    """What we read from a Price, or from the legacy Plan it replaced, in the currency the
    subscription bills."""

    id: str | None
    product_id: str | None
    nickname: str | None
    unit_amount: int | None  # Stripe's integer field, as reported
    unit_amount_decimal: str | None  # exact; what the money is counted from
    currency: str | None  # the currency billed
    default_currency: str | None  # the price's own, when another one is billed
    interval: str | None
    interval_count: int
    metered: bool
    billing_scheme: str | None
    tiers_mode: str | None
    tiers: list[PriceTier] | None
    divide_by: int | None
    round: str | None
    tax_behavior: str | None
    metadata: dict[str, str]
    product_metadata: dict[str, str]


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
    top_level = _timestamp(obj.get(key), key)
    if top_level is not None:
        return top_level
    values = [value for item in raw_items if (value := _timestamp(item.get(key), key)) is not None]
    return min(values, default=None)


def _subscription_currency(obj: StripeObject, raw_items: Sequence[StripeObject]) -> str | None:
    # Old subscriptions have no currency of their own; their prices do.
    currency = _str(obj.get("currency"))
    if currency is None and raw_items:
        currency = _str(_price_object(raw_items[0]).get("currency"))
    return None if currency is None else currency.lower()


def _price_object(item: StripeObject) -> StripeObject:
    return _dict(item.get("price")) or _dict(item.get("plan"))


def _read_price(item: StripeObject, currency: str | None) -> _Price:
    """The price of a subscription item, from `price` or, in old payloads, `plan`, in the
    currency billed.

    `price` wins: `plan` is the legacy mirror of it (Stripe's own example fills it with
    placeholders). A plan keeps its terms at the top level (`amount`, `interval`) where a
    price has `unit_amount` and `recurring`; reading the plan names as fallbacks covers
    plans, prices, and the plan-shaped prices some libraries' fixtures carry. A price
    billed in one of its `currency_options` takes its amounts from that option, which
    events include only when expanded: without it the amounts are unknown (None).
    """
    price = _price_object(item)
    recurring = _dict(price.get("recurring"))
    own_currency = _str(price.get("currency"))
    billed = (currency or own_currency or "").lower() or None
    other_currency = own_currency is not None and billed != own_currency.lower()
    terms: StripeObject = price
    if other_currency:
        terms = _dict(_dict(price.get("currency_options")).get(billed or ""))
    unit_amount = _int(_first(terms.get("unit_amount"), terms.get("amount")), "unit_amount")
    decimal_amount = _decimal(
        _first(terms.get("unit_amount_decimal"), terms.get("amount_decimal")),
        "unit_amount_decimal",
    )
    if decimal_amount is None and unit_amount is not None:
        decimal_amount = str(unit_amount)
    transform = _dict(_first(price.get("transform_quantity"), price.get("transform_usage")))
    return _Price(
        id=_id_of(price.get("id")),
        product_id=_id_of(price.get("product")),
        nickname=_str(_first(price.get("nickname"), price.get("name"))),
        unit_amount=unit_amount,
        unit_amount_decimal=decimal_amount,
        currency=billed,
        default_currency=own_currency.lower() if other_currency and own_currency else None,
        interval=_str(_first(recurring.get("interval"), price.get("interval"))),
        interval_count=_count(
            _first(recurring.get("interval_count"), price.get("interval_count")), "interval_count"
        )
        or 1,
        metered=_first(recurring.get("usage_type"), price.get("usage_type")) == "metered",
        billing_scheme=_str(price.get("billing_scheme")) or "per_unit",
        tiers_mode=_str(price.get("tiers_mode")),
        tiers=parse_tiers(terms.get("tiers")),
        divide_by=_count(transform.get("divide_by"), "divide_by"),
        round=_str(transform.get("round")),
        tax_behavior=_str(_first(terms.get("tax_behavior"), price.get("tax_behavior"))),
        metadata=_metadata(price.get("metadata")),
        # An id unless the payload expands it.
        product_metadata=_metadata(_dict(price.get("product")).get("metadata")),
    )


def parse_tiers(value: Any) -> list[PriceTier] | None:
    """A price's `tiers`, or None when the payload does not carry them (not expanded)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise UnreadableEvent(f"tiers: expected a list, got {_kind(value)}")
    return [
        PriceTier(
            up_to=_int(tier.get("up_to"), "up_to"),
            unit_amount_decimal=_decimal_str(tier, "unit_amount"),
            flat_amount_decimal=_decimal_str(tier, "flat_amount"),
        )
        for tier in value
        if isinstance(tier, Mapping)
    ]


def _decimal_str(obj: StripeObject, key: str) -> str | None:
    return _decimal(_first(obj.get(f"{key}_decimal"), obj.get(key)), f"{key}_decimal")


def _quantity(item: StripeObject) -> int:
    # Absent on metered items; 0 is a real quantity, so no `or 1`.
    quantity = _int(item.get("quantity"), "quantity")
    if quantity is not None and quantity < 0:
        raise UnreadableEvent(f"quantity: expected a count, got {quantity}")
    return 1 if quantity is None else quantity


def _inclusive_tax_percents(value: Any) -> list[float]:
    """The percentages of the tax rates (expanded objects) that are included in prices."""
    return [
        percent
        for rate in _list(value, "tax_rates")
        if isinstance(rate, Mapping)
        and rate.get("inclusive")
        and (percent := _percent(rate.get("percentage"), "tax_rates.percentage"))
    ]


# --- Discounts ----------------------------------------------------------------------


def parse_discounts(obj: StripeObject) -> list[DiscountInfo]:
    """The discounts on a subscription or item, each once.

    Old versions have one expanded `discount`; newer ones a `discounts` list of ids, or of
    discount objects when expanded. Versions in between send both, naming the same one. A
    bare id is kept as such: the customer workflow reads it from Stripe.
    """
    seen: set[str] = set()
    found: list[DiscountInfo] = []
    for raw in [obj.get("discount"), *_list(obj.get("discounts"), "discounts")]:
        if isinstance(raw, str):
            discount = DiscountInfo(id=raw)
        elif isinstance(raw, Mapping):
            discount = parse_discount(raw)
        else:
            continue
        if discount.id is not None:
            if discount.id in seen:
                continue
            seen.add(discount.id)
        found.append(discount)
    return found


def parse_discount(obj: StripeObject) -> DiscountInfo:
    """A Discount: until 2025-09-30.clover its coupon sits on it (expanded), since then
    under `source`, where events leave it an id."""
    raw_coupon = _first(obj.get("coupon"), _dict(obj.get("source")).get("coupon"))
    coupon = parse_coupon(raw_coupon) if isinstance(raw_coupon, Mapping) else None
    return DiscountInfo(
        id=_id_of(obj.get("id")),
        coupon_id=coupon.id if coupon is not None else _id_of(raw_coupon),
        coupon=coupon,
        start=_timestamp(obj.get("start"), "start"),
        end=_timestamp(obj.get("end"), "end"),
    )


def parse_coupon(obj: StripeObject) -> CouponInfo:
    options = obj.get("currency_options")
    return CouponInfo(
        id=_object_id(obj),
        duration=_str(obj.get("duration")),
        percent_off=_percent(obj.get("percent_off"), "percent_off"),
        amount_off=_int(obj.get("amount_off"), "amount_off"),
        currency=_currency(obj.get("currency")),
        duration_in_months=_int(obj.get("duration_in_months"), "duration_in_months"),
        amount_off_by_currency={
            str(code).lower(): amount_off
            for code, option in _dict(options).items()
            if isinstance(option, Mapping)
            and (amount_off := _int(option.get("amount_off"), "amount_off")) is not None
        },
        currency_options_known=isinstance(options, Mapping),
    )


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
        amount_due=_int(obj.get("amount_due"), "amount_due") or 0,
        amount_paid=_int(obj.get("amount_paid"), "amount_paid") or 0,
        amount_remaining=_int(obj.get("amount_remaining"), "amount_remaining") or 0,
        total=_int(obj.get("total"), "total") or 0,
        attempt_count=_int(obj.get("attempt_count"), "attempt_count") or 0,
        next_payment_attempt=_timestamp(obj.get("next_payment_attempt"), "next_payment_attempt"),
        hosted_invoice_url=_str(obj.get("hosted_invoice_url")),
        created=_timestamp(obj.get("created"), "created"),
        period_end=_timestamp(obj.get("period_end"), "period_end"),
        price_ids=list(dict.fromkeys(price_ids)),
        product_ids=list(dict.fromkeys(product_ids)),
        metadata=_metadata(obj.get("metadata")),
        # Before basil the invoice says so itself; since, only its payments do.
        paid_out_of_band=bool(obj.get("paid_out_of_band", False)),
        collection_method=_str(obj.get("collection_method")),
        due_date=_timestamp(obj.get("due_date"), "due_date"),
        finalized_at=_timestamp(
            _dict(obj.get("status_transitions")).get("finalized_at"), "finalized_at"
        ),
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


# --- Quotes -------------------------------------------------------------------------


def parse_quote(obj: StripeObject) -> QuoteInfo:
    """A Quote; it reads the same in every API version that sends it. Its `number` is set
    when it is finalized; `expires_at` is when an open (or draft) quote is canceled."""
    return QuoteInfo(
        id=_object_id(obj),
        customer_id=_named_customer(obj),
        status=_str(obj.get("status")),
        expires_at=_timestamp(obj.get("expires_at"), "expires_at"),
        amount_total=_int(obj.get("amount_total"), "amount_total") or 0,
        currency=_currency(obj.get("currency")),
        number=_str(obj.get("number")),
        metadata=_metadata(obj.get("metadata")),
    )


# --- Charges ------------------------------------------------------------------------


def parse_charge(obj: StripeObject) -> ChargeInfo:
    """A Charge; every `charge.refunded` (a partial refund too) carries the total refunded."""
    return ChargeInfo(
        id=_object_id(obj),
        amount=_int(obj.get("amount"), "amount") or 0,
        amount_refunded=_int(obj.get("amount_refunded"), "amount_refunded") or 0,
        currency=_currency(obj.get("currency")),
    )


# --- Events naming only a payment ---------------------------------------------------

# Objects that carry the customer themselves: one without is a guest payment, and reading
# it again from Stripe would tell no more.
_PAYMENT_OBJECTS = frozenset({"charge", "payment_intent"})


@dataclass(frozen=True)
class PaymentReference:
    """The payment whose customer an event concerns when the event names no customer:
    `kind` is "charge" or "payment_intent"."""

    kind: str
    id: str


def event_payment_reference(event: StripeObject) -> PaymentReference | None:
    """The charge (else payment intent) to read from Stripe for the customer of an event
    that names none (a Dispute, a Refund, an early fraud warning); None when the event
    names its customer, or no payment."""
    obj = _event_object(event)
    if event_customer_id(event) is not None or obj.get("object") in _PAYMENT_OBJECTS:
        return None
    charge_id = _id_of(obj.get("charge"))
    if charge_id is not None:
        return PaymentReference("charge", charge_id)
    intent_id = _id_of(obj.get("payment_intent"))
    return None if intent_id is None else PaymentReference("payment_intent", intent_id)


def normalise_event_for_customer(event: StripeObject, customer_id: str) -> BillingEvent:
    """`normalise_event` of an event whose customer was read elsewhere (the charge of a
    dispute): the event as if its object named `customer_id`."""
    data = _dict(event.get("data"))
    named = {**data, "object": {**_event_object(event), "customer": customer_id}}
    normalised = normalise_event({**event, "data": named})
    if normalised is None:
        raise UnreadableEvent("the event names no object a customer could be given to")
    return normalised


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
        exp_month=_in_range(card.get("exp_month"), "exp_month", 1, 12),
        exp_year=_in_range(card.get("exp_year"), "exp_year", 1, 9999),
    )


def _brand_code(brand: str) -> str:
    return _LEGACY_BRAND_CODES.get(brand, brand.lower().replace(" ", "_"))


# --- Reading JSON -------------------------------------------------------------------


def _dict(value: Any) -> StripeObject:
    """`value` if it is an object; else an empty one (absent, null, or an unexpanded id)."""
    return value if isinstance(value, Mapping) else {}


def _list_data(value: Any) -> list[StripeObject]:
    """The objects of a Stripe list (`{"object": "list", "data": [...]}`)."""
    entries = _list(_dict(value).get("data"), "data")
    return [entry for entry in entries if isinstance(entry, Mapping)]


def _list(value: Any, field: str) -> list[Any]:
    """A list field; absent or null is empty, anything else is unreadable."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnreadableEvent(f"{field}: expected a list, got {_kind(value)}")
    return value


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


def _int(value: Any, field: str) -> int | None:
    """An integer field: None when absent; an integral float (`4900.0`) reads as its
    integer; anything else (a string, a fraction, Infinity, a huge number) is unreadable."""
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnreadableEvent(f"{field}: expected an integer, got {_kind(value)}")
    if abs(value) > _MAX_INT:
        raise UnreadableEvent(f"{field}: {value:.3e} is out of range")
    return value


def _in_range(value: Any, field: str, low: int, high: int) -> int | None:
    number = _int(value, field)
    if number is not None and not low <= number <= high:
        raise UnreadableEvent(f"{field}: {number} is not between {low} and {high}")
    return number


def _count(value: Any, field: str) -> int | None:
    """A positive integer (an interval count, a divisor): zero or less is unreadable."""
    count = _int(value, field)
    if count is not None and count < 1:
        raise UnreadableEvent(f"{field}: expected a positive integer, got {count}")
    return count


def _timestamp(value: Any, field: str) -> int | None:
    """A Unix timestamp field, in the range a `datetime` can hold."""
    seconds = _int(value, field)
    if seconds is not None and not 0 <= seconds <= _MAX_TIMESTAMP:
        raise UnreadableEvent(f"{field}: {seconds} is not a timestamp")
    return seconds


def _percent(value: Any, field: str) -> float | None:
    """A percentage field (0 to 100)."""
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value <= 100
    ):
        raise UnreadableEvent(f"{field}: expected a percentage, got {_kind(value)}")
    return float(value)


def _decimal(value: Any, field: str) -> str | None:
    """A decimal amount (`unit_amount_decimal`: a string in a payload, a `Decimal` as the
    stripe library reads it from the API, a number in hand-made payloads) as the string
    `domain/mrr.py` reads, or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise UnreadableEvent(f"{field}: expected a decimal amount, got {_kind(value)}")
    try:
        amount = Decimal(str(value).strip()) if len(str(value)) <= 64 else None
    except InvalidOperation:
        amount = None
    if (
        amount is None
        or not amount.is_finite()
        or abs(amount) >= _MAX_DECIMAL
        or (amount and amount.adjusted() < _MIN_DECIMAL_EXPONENT)
    ):
        raise UnreadableEvent(f"{field}: expected a decimal amount, got {_kind(value)}")
    return str(value)


def _kind(value: Any) -> str:
    """What a field held, briefly, for the reason recorded: a short value or its type."""
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:37]}..."
    return f"a JSON {'object' if isinstance(value, Mapping) else 'array'}"


def _int_or_none(value: Any) -> int | None:
    """An integer field, or None for anything else (an amount-named field of another
    kind, such as an expanded object)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return value if is_int and abs(value) <= _MAX_INT else None


def _str(value: Any) -> str | None:
    """A text field; a number reads as its text, an object or array as absent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _currency(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _metadata(value: Any) -> dict[str, str]:
    # Stripe sends strings; hand-made payloads sometimes send numbers or nulls.
    return {str(key): str(item) for key, item in _dict(value).items() if item is not None}
