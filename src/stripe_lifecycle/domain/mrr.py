"""Monthly recurring revenue (MRR) and a subscription's next bill, counted the way Stripe
counts them.

Stripe's MRR (its Billing analytics) is the monthly-normalised value of the subscriptions
it bills, as they would bill:

- each item at its price as Stripe bills it: unit amount (exact, from `unit_amount_decimal`)
  times the quantity, the quantity first divided and rounded by `transform_quantity`;
  tiered prices by their tiers (`volume`: every unit at the tier the quantity falls in,
  `graduated`: each tier's units at that tier), flat amounts included; in the subscription's
  currency, from the price's `currency_options` when it is not the price's default one;
- normalised to a month: a year is a twelfth, a quarter a third, a week 52/12, a day 365/12;
- tax is not revenue: an amount that includes tax counts without it;
- metered (usage-based) prices and one-time prices count nothing: usage is unknown until it
  is invoiced, and a one-time price does not recur;
- discounts: only coupons of duration `forever` lower MRR (Stripe's default; `once` and
  `repeating` coupons are promotions that end, and counting them would record their end as
  an expansion). Item discounts apply first, then the subscription's; a customer-wide
  discount applies to a subscription that has no discount of its own. An `amount_off`
  recurs each billing period, so it is normalised like the price;
- which statuses count (active and past due, not trials) is the ledger's decision.

What a valuation cannot know (a coupon or tiers not in the payload, a tax rate Stripe Tax
computes) leaves the figure marked not exact instead of silently counting the gross amount.

Pure: no I/O, no clock. Used by the intake (`intake/normalise.py`) and, inside the customer
workflow, by the ledger and once Stripe has answered what a payload left out.
"""

# No `from __future__ import annotations`: workflow code imports this module.

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from stripe_lifecycle.domain.events import (
    CouponInfo,
    DiscountInfo,
    SubscriptionInfo,
    SubscriptionItemInfo,
)

# An interval as a fraction of a month (numerator, denominator), kept exact until the
# final rounding: a year is 1/12 month, a week 52/12, a day 365/12.
_MONTHS_PER_INTERVAL: dict[str, tuple[int, int]] = {
    "day": (365, 12),
    "week": (52, 12),
    "month": (1, 1),
    "year": (1, 12),
}

FOREVER = "forever"
REPEATING = "repeating"

# Whether a discount applies to what is being counted (MRR, the next bill).
_Applies = Callable[[DiscountInfo, CouponInfo], bool]


@dataclass(frozen=True)
class Valuation:
    """A subscription's MRR (after discounts) and its items' MRR (before any discount)."""

    mrr_cents: int
    item_mrr_cents: list[int]
    # False when something it depends on is unknown; the figure is then a best reading.
    exact: bool


@dataclass
class _Reading:
    """An amount being worked out, and whether everything it needed was known."""

    amount: Decimal
    exact: bool = True


def monthly_amount(amount: Decimal | int, interval: str | None, interval_count: int) -> Decimal:
    """`amount` charged every `interval_count` `interval`s, as an amount per month.

    One-time prices (no interval) recur never, so they are worth nothing per month.
    """
    if interval not in _MONTHS_PER_INTERVAL:
        return Decimal(0)
    numerator, denominator = _MONTHS_PER_INTERVAL[interval]
    return Decimal(amount) * numerator / (denominator * max(interval_count, 1))


def value_subscription(
    sub: SubscriptionInfo, customer_discount: DiscountInfo | None = None
) -> Valuation:
    """The subscription's MRR in minor units of its currency, Stripe's way (module doc).

    Counted whatever the status (a canceled subscription still says what it was worth).
    """
    per_month: list[tuple[SubscriptionItemInfo, _Reading]] = []
    for item in sub.items:
        reading = _item_period_amount(item)
        reading.amount = monthly_amount(reading.amount, item.interval, item.interval_count)
        per_month.append((item, reading))
    reading = _discounted_total(sub, per_month, customer_discount, _forever, monthly=True)
    exact = reading.exact and not _unknown_tax(sub)
    return Valuation(_round(reading.amount), [item_mrr_cents(i) for i in sub.items], exact)


def item_mrr_cents(item: SubscriptionItemInfo) -> int:
    """One item's MRR before any discount, without the tax its amount includes."""
    per_period = _item_period_amount(item).amount
    per_month = monthly_amount(per_period, item.interval, item.interval_count)
    return _round(per_month / _tax_divisor(item))


def revalue(sub: SubscriptionInfo) -> None:
    """Set the subscription's MRR fields from what it holds now (after its payload was read,
    or after Stripe answered what the payload left out)."""
    valuation = value_subscription(sub)
    sub.mrr_cents = valuation.mrr_cents
    sub.mrr_exact = valuation.exact
    for item, item_mrr in zip(sub.items, valuation.item_mrr_cents, strict=True):
        item.mrr_cents = item_mrr


def next_bill(sub: SubscriptionInfo, customer_discount: DiscountInfo | None = None) -> int:
    """What the subscription's next period is billed, in minor units, as far as it is known:
    licensed items at their price (tax included where the price includes it, none added),
    after the discounts still running then; metered usage is not known before it happens.
    """
    period_end = sub.current_period_end

    def still_running(discount: DiscountInfo, coupon: CouponInfo) -> bool:
        if coupon.duration == FOREVER:
            return True
        # A `once` coupon went on the first invoice; a repeating one until its end.
        ends = discount.end
        return coupon.duration == REPEATING and (
            ends is None or period_end is None or ends > period_end
        )

    per_period = [(item, _item_period_amount(item)) for item in sub.items]
    reading = _discounted_total(sub, per_period, customer_discount, still_running, monthly=False)
    return _round(reading.amount)


def same_plan(was: SubscriptionInfo, now: SubscriptionInfo, at: int) -> bool:
    """Whether two readings of a subscription buy the same: the same prices (by id and
    terms: a price never changes its amount, so a new amount is a new price; an amount a
    reading could not know matches any) in the same quantities, and the same discounts in
    effect at `at`, each named by an id that is the same in every API version's payload.

    So a renewal (which moves every item's period) and a payload that spells a discount
    differently (its coupon expanded in one version, an id in another) are the same plan.
    """
    if _discount_terms(was, at) != _discount_terms(now, at):
        return False
    before, after = _item_terms(was), _item_terms(now)
    return len(before) == len(after) and all(
        a[:-1] == b[:-1] and (a[-1] == b[-1] or "" in (a[-1], b[-1]))
        for a, b in zip(before, after, strict=True)
    )


def _item_terms(sub: SubscriptionInfo) -> list[tuple[str, str, int, int, str]]:
    """(price, interval, interval count, quantity, unit amount or "" when unknown)."""
    return sorted(
        (
            item.price_id or "",
            item.interval or "",
            item.interval_count,
            item.quantity,
            _plain(_unit_amount(item)),
        )
        for item in sub.items
    )


def _discount_terms(sub: SubscriptionInfo, at: int) -> list[str]:
    every = [*sub.discounts, *(d for item in sub.items for d in item.discounts)]
    return sorted(d.id or d.coupon_id or "" for d in every if d.end is None or d.end > at)


def missing_coupon(discount: DiscountInfo, currency: str | None) -> bool:
    """True when counting the discount needs what the payload left out of its coupon."""
    coupon = discount.coupon
    if coupon is None:
        return True
    return (
        coupon.amount_off is not None
        and not _same_currency(coupon.currency, currency)
        and not coupon.currency_options_known
    )


def missing_price(item: SubscriptionItemInfo) -> bool:
    """True when the item's amount in the billed currency is not in the payload: tiers
    (never expanded in events), or the `currency_options` amount of the billed currency."""
    if item.metered or item.interval is None:
        return False
    if item.billing_scheme == "tiered":
        return item.tiers is None
    return _unit_amount(item) is None and item.price_currency is not None


def _forever(_discount: DiscountInfo, coupon: CouponInfo) -> bool:
    return coupon.duration == FOREVER


def _discounted_total(
    sub: SubscriptionInfo,
    amounts: Sequence[tuple[SubscriptionItemInfo, _Reading]],
    customer_discount: DiscountInfo | None,
    applies: _Applies,
    *,
    monthly: bool,
) -> _Reading:
    """The items' amounts after their discounts, then the subscription's, net of the tax
    they include when counting MRR."""
    exact = True
    after_items: list[tuple[SubscriptionItemInfo, Decimal]] = []
    for item, reading in amounts:
        discounted = _apply(reading.amount, item.discounts, item, applies, monthly=monthly)
        exact = exact and reading.exact and discounted.exact
        after_items.append((item, discounted.amount))
    recurring = [item for item, _ in after_items if item.interval is not None]
    subtotal = sum((amount for _, amount in after_items), Decimal(0))
    # Stripe applies a customer-wide discount only where the subscription has none.
    discounts = sub.discounts or ([customer_discount] if customer_discount else [])
    total = _Reading(subtotal)
    if recurring:
        # Items of one subscription bill on one interval: the first stands for them all.
        total = _apply(subtotal, discounts, recurring[0], applies, monthly=monthly)
    if not monthly:
        return _Reading(total.amount, exact and total.exact)
    # A subscription-wide discount lowers every item alike; each item's included tax is
    # then taken out of what remains of it.
    share = total.amount / subtotal if subtotal else Decimal(0)
    net = sum((amount * share / _tax_divisor(item) for item, amount in after_items), Decimal(0))
    return _Reading(net, exact and total.exact)


def _apply(
    amount: Decimal,
    discounts: Sequence[DiscountInfo],
    item: SubscriptionItemInfo,
    applies: _Applies,
    *,
    monthly: bool,
) -> _Reading:
    exact = True
    for discount in discounts:
        coupon = discount.coupon
        if coupon is None or missing_coupon(discount, item.currency):
            exact = False
            continue
        if not applies(discount, coupon):
            continue
        if coupon.percent_off is not None:
            amount -= amount * Decimal(str(coupon.percent_off)) / 100
        else:
            off = _amount_off(coupon, item.currency)
            if off is not None:
                # An amount off comes off each invoice, so it recurs on the billing interval.
                amount -= (
                    monthly_amount(off, item.interval, item.interval_count) if monthly else off
                )
        amount = max(amount, Decimal(0))
    return _Reading(amount, exact)


def _amount_off(coupon: CouponInfo, currency: str | None) -> int | None:
    if coupon.amount_off is None or _same_currency(coupon.currency, currency):
        return coupon.amount_off
    # A coupon in another currency applies only through its `currency_options`.
    return coupon.amount_off_by_currency.get((currency or "").lower())


def _same_currency(coupon_currency: str | None, currency: str | None) -> bool:
    if coupon_currency is None or currency is None:
        return True
    return coupon_currency.lower() == currency.lower()


def _item_period_amount(item: SubscriptionItemInfo) -> _Reading:
    """What the item bills per period before discounts (tax included where the price
    includes it), and whether it is known."""
    if item.metered or item.interval is None:
        return _Reading(Decimal(0))
    if item.billing_scheme == "tiered":
        if item.tiers is None:
            return _Reading(Decimal(0), exact=False)
        return _Reading(_tiered(item, item.quantity))
    unit = _unit_amount(item)
    if unit is None:
        # A price in another currency whose amount there is not in the payload is unknown; a
        # price without any amount (a custom amount, a hand-made payload) is worth nothing.
        return _Reading(Decimal(0), exact=item.price_currency is None)
    return _Reading(unit * _billed_quantity(item))


def _unit_amount(item: SubscriptionItemInfo) -> Decimal | None:
    if item.unit_amount_decimal is not None:
        return Decimal(item.unit_amount_decimal)
    if item.unit_amount is not None:
        return Decimal(item.unit_amount)
    return None


def _billed_quantity(item: SubscriptionItemInfo) -> Decimal:
    divide_by = item.transform_divide_by
    if not divide_by:
        return Decimal(item.quantity)
    rounding = ROUND_CEILING if item.transform_round == "up" else ROUND_FLOOR
    return (Decimal(item.quantity) / divide_by).to_integral_value(rounding=rounding)


def _tiered(item: SubscriptionItemInfo, quantity: int) -> Decimal:
    """The tiered price of `quantity` units; no units bill nothing."""
    tiers = item.tiers or []
    if quantity <= 0 or not tiers:
        return Decimal(0)
    if item.tiers_mode == "volume":
        tier = next(
            (t for t in tiers if t.up_to is None or quantity <= t.up_to),
            tiers[-1],
        )
        return quantity * _decimal(tier.unit_amount_decimal) + _decimal(tier.flat_amount_decimal)
    total = Decimal(0)
    below = 0
    for tier in tiers:
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = top - below
        if units <= 0:
            break
        total += units * _decimal(tier.unit_amount_decimal) + _decimal(tier.flat_amount_decimal)
        below = top
    return total


def _tax_divisor(item: SubscriptionItemInfo) -> Decimal:
    """What the amount is divided by to leave out the tax it includes."""
    if item.tax_behavior != "inclusive":
        return Decimal(1)
    percent = sum((Decimal(str(p)) for p in item.inclusive_tax_percents), Decimal(0))
    return 1 + percent / 100


def _unknown_tax(sub: SubscriptionInfo) -> bool:
    """Stripe Tax works out the rate on each invoice: the tax inside a tax-inclusive price
    is then unknown here, unless a tax rate on the subscription says it."""
    return sub.automatic_tax and any(
        item.tax_behavior == "inclusive"
        and not item.inclusive_tax_percents
        and not item.metered
        and item.interval is not None
        for item in sub.items
    )


def _plain(amount: Decimal | None) -> str:
    """The amount written one way whatever its spelling (4900, "4900.00", 4.9E+3); ""
    when unknown."""
    return "" if amount is None else format(amount.normalize(), "f")


def _decimal(value: str | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(value)


def _round(amount: Decimal) -> int:
    return int(max(amount, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
