"""Stripe reads for the money events leave out: coupons, discounts, prices' tiers and
currency amounts, invoice payments (see `domain/stripe_reads.py` for why).

Every read is made on the request's Connect account. What never changes is kept in memory
for the life of the worker, so a coupon shared by a thousand subscriptions costs one
request. A rate limit, a 5xx or a network failure raises, so that Temporal retries the
activity with backoff; an answer no retry can change (a deleted coupon, a key without
access) leaves that one thing unknown."""

from collections.abc import Awaitable, Mapping
from typing import Any

import stripe
from temporalio import activity

from stripe_lifecycle.activities.interface import StripeReads
from stripe_lifecycle.domain.events import CouponInfo, DiscountInfo
from stripe_lifecycle.domain.stripe_reads import (
    PriceRead,
    PriceTerms,
    StripeReadAnswer,
    StripeReadRequest,
)
from stripe_lifecycle.intake.normalise import parse_coupon, parse_discount, parse_subscription_item
from stripe_lifecycle.stripe_api.client import worth_retrying

# Payments Stripe collected itself; the others (payment records) were made outside it.
STRIPE_PAYMENT_TYPES = frozenset({"charge", "payment_intent"})

Account = str | None


class _On:
    """Reads on one account (`Stripe-Account`), as plain JSON."""

    def __init__(self, client: stripe.StripeClient, account: Account) -> None:
        self.client = client
        self.account = account
        self.options: stripe.RequestOptions = {"stripe_account": account} if account else {}

    async def read(
        self, kind: str, object_id: str, call: Awaitable[stripe.StripeObject]
    ) -> dict[str, Any] | None:
        """The object Stripe answers; None when no retry could get it."""
        try:
            found = await call
        except stripe.StripeError as exc:
            if worth_retrying(exc):
                activity.logger.warning(
                    "reading %s %s from Stripe will be retried: %s", kind, object_id, exc
                )
                raise
            activity.logger.warning("Stripe cannot tell %s %s: %s", kind, object_id, exc)
            return None
        return found.to_dict()


class StripeReadActivities(StripeReads):
    def __init__(self, client: stripe.StripeClient | None) -> None:
        # None when LIFECYCLE_STRIPE_API_KEY is not set: every answer is "unknown".
        self._client = client
        # A coupon's discount terms and a discount's coupon and dates never change once
        # created, nor does a price's amount or tiers in its own currency (a new amount is
        # a new price); a paid invoice keeps its payments. Keyed by account as well: ids
        # are only unique within one.
        self._coupons: dict[tuple[Account, str], CouponInfo] = {}
        self._discounts: dict[tuple[Account, str], DiscountInfo] = {}
        self._prices: dict[tuple[Account, str], PriceTerms] = {}
        self._paid_through_stripe: dict[tuple[Account, str], bool] = {}

    @activity.defn(name="read_stripe")
    async def read_stripe(self, request: StripeReadRequest) -> StripeReadAnswer:
        """Read what the request names from Stripe; what cannot be read stays out of the
        answer. Raises on errors worth a retry."""
        if self._client is None:
            return StripeReadAnswer(connected=False)
        on = _On(self._client, request.account)
        answer = StripeReadAnswer()
        for sub_id, discount_ids in request.subscription_discounts.items():
            answer.discounts.update(await self._read_discounts(on, sub_id, discount_ids))
        # Clover discounts name their coupon by id: read those too, in this same round.
        coupon_ids = dict.fromkeys(request.coupon_ids)
        for discount in answer.discounts.values():
            if discount.coupon is None and discount.coupon_id is not None:
                coupon_ids[discount.coupon_id] = None
        for coupon_id in coupon_ids:
            coupon = await self._read_coupon(on, coupon_id)
            if coupon is not None:
                answer.coupons[coupon_id] = coupon
        for discount in answer.discounts.values():
            discount.coupon = discount.coupon or answer.coupons.get(discount.coupon_id or "")
        for price in request.prices:
            terms = await self._read_price(on, price)
            if terms is not None:
                answer.prices.append(terms)
        for invoice_id in request.invoice_ids:
            through_stripe = await self._read_payments(on, invoice_id)
            if through_stripe is not None:
                answer.paid_through_stripe[invoice_id] = through_stripe
        activity.logger.info(
            "read from Stripe on %s: %d coupons, %d discounts, %d prices, %d invoices",
            request.account or "the platform account",
            len(answer.coupons),
            len(answer.discounts),
            len(answer.prices),
            len(answer.paid_through_stripe),
        )
        return answer

    async def _read_coupon(self, on: _On, coupon_id: str) -> CouponInfo | None:
        key = (on.account, coupon_id)
        if key not in self._coupons:
            found = await on.read(
                "coupon",
                coupon_id,
                on.client.v1.coupons.retrieve_async(
                    coupon_id, {"expand": ["currency_options"]}, on.options
                ),
            )
            if found is None:
                return None
            self._coupons[key] = parse_coupon(found)
        return self._coupons[key]

    async def _read_discounts(
        self, on: _On, sub_id: str, discount_ids: list[str]
    ) -> dict[str, DiscountInfo]:
        """The named discounts of a subscription and its items: Stripe has no endpoint for a
        discount, only for what it is on."""
        if any((on.account, d) not in self._discounts for d in discount_ids):
            found = await on.read(
                "subscription",
                sub_id,
                on.client.v1.subscriptions.retrieve_async(
                    sub_id, {"expand": ["discounts", "items.data.discounts"]}, on.options
                ),
            )
            for raw in _discount_objects(found or {}):
                discount = parse_discount(raw)
                if discount.id is not None:
                    self._discounts[(on.account, discount.id)] = discount
        known = {d: self._discounts.get((on.account, d)) for d in discount_ids}
        return {d: discount for d, discount in known.items() if discount is not None}

    async def _read_price(self, on: _On, read: PriceRead) -> PriceTerms | None:
        key = (on.account, read.price_id)
        if not read.other_currency and key in self._prices:
            return self._prices[key]
        expand = ["tiers"]
        if read.other_currency:
            expand += ["currency_options", f"currency_options.{read.currency}.tiers"]
        found = await on.read(
            "price",
            read.price_id,
            on.client.v1.prices.retrieve_async(read.price_id, {"expand": expand}, on.options),
        )
        if found is None:
            return None
        item = parse_subscription_item({"price": found}, read.currency)
        terms = PriceTerms(
            price_id=read.price_id,
            currency=read.currency,
            unit_amount_decimal=item.unit_amount_decimal,
            tiers=item.tiers,
            tax_behavior=item.tax_behavior,
        )
        # A price's `currency_options` can be edited; its own amounts cannot.
        if not read.other_currency:
            self._prices[key] = terms
        return terms

    async def _read_payments(self, on: _On, invoice_id: str) -> bool | None:
        """Whether a paid payment of the invoice went through Stripe."""
        key = (on.account, invoice_id)
        if key not in self._paid_through_stripe:
            found = await on.read(
                "the payments of invoice",
                invoice_id,
                on.client.v1.invoice_payments.list_async(
                    {"invoice": invoice_id, "limit": 100}, on.options
                ),
            )
            if found is None:
                return None
            paid = [p for p in found.get("data") or [] if p.get("status") == "paid"]
            self._paid_through_stripe[key] = any(
                (p.get("payment") or {}).get("type") in STRIPE_PAYMENT_TYPES for p in paid
            )
        return self._paid_through_stripe[key]


def _discount_objects(subscription: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = (subscription.get("items") or {}).get("data") or []
    every = [*(subscription.get("discounts") or [])]
    for item in items:
        every += item.get("discounts") or []
    return [d for d in every if isinstance(d, Mapping)]
