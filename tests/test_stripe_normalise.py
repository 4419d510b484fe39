"""Stripe payloads of every API version normalise to the same messages, with the right MRR."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.domain.mrr import monthly_amount
from stripe_lifecycle.intake.normalise import (
    event_customer_id,
    normalise_event,
    parse_customer,
    parse_invoice,
    parse_payment_method,
    parse_subscription,
    parse_subscription_item,
)

from .stripe_fixtures import load_fixture, manifest, needs_shared

PARSERS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "customer": parse_customer,
    "subscription": parse_subscription,
    "subscription_item": parse_subscription_item,
    "invoice": parse_invoice,
    "payment_method": parse_payment_method,
    "card": parse_payment_method,
    "source": parse_payment_method,
}

# --- Every collected payload ------------------------------------------------------------
#
# file -> (the customer id it concerns, {attribute path: value} on the normalised result).
# Full envelopes are checked on `normalise_event`'s BillingEvent, bare objects (and
# `event.data` wrappers) on the parse_* result for their `object`; None means no result:
# an event without a customer, or an object no parser is for.

DJ_CUS = "cus_6lsBvm5rJ0zyHc"
DJ_SUB = "sub_fakefakefakefakefake0001"
DJ_INV = "in_fakefakefakefakefake0001"
DJ_CARD = "card_fakefakefakefakefake0001"
MOCK_CUS = "cus_00000000000000"
MOCK_SUB = "sub_000000000000000000000000"
MOCK_INV = "in_000000000000000000000000"
MOCK_PRICE = "price_000000000000000000000000"
MOCK_PRODUCT = "prod_00000000000000"
ONE_TIME_PRICE = "price_1LKNRmJSZQVUcJYgRkQDOYBL"

EXPECTED: dict[str, tuple[str | None, dict[str, Any] | None]] = {
    # Disputes name no customer; these charges and the setup-mode session have none.
    "charge.dispute.created__dj-stripe.json": (None, None),
    "charge.dispute.created__stripe-ruby-mock.json": (None, None),
    "charge.failed__stripe-ruby-mock.json": (None, None),
    "charge.succeeded__stripe-ruby-mock.json": (None, None),
    "checkout.session.completed.setup_mode__stripe-ruby-mock.json": (None, None),
    # A plan.created event: plans belong to no customer.
    "object__event__openapi-fixtures3.json": (None, None),
    # An ach_credit_transfer source without a `customer`: nothing to attach it to.
    "customer.source.expiring__stripe-ruby-mock.json": (None, None),
    "charge.succeeded__dj-stripe.json": (
        DJ_CUS,
        {
            "event_id": "evt_16YKQi2eZvKYlo2CT2oe5ff3",
            "type": "charge.succeeded",
            "created": 1439229084,
            "api_version": "2016-03-07",
            "livemode": False,
            "customer": None,
            "invoice": None,
            "payment_method": None,
        },
    ),
    "checkout.session.completed.payment_mode__stripe-ruby-mock.json": (
        MOCK_CUS,
        {"type": "checkout.session.completed", "created": 1326853478, "api_version": None},
    ),
    "checkout.session.completed__dj-stripe.json": (
        DJ_CUS,
        {"event_id": "evt_1JAyTxJSZQVUcJYgNk1Jqu8o", "api_version": "2020-08-27"},
    ),
    "checkout.session.completed__stripe-ruby-mock.json": (
        MOCK_CUS,
        {"created": 1648319959, "subscription": None},
    ),
    "customer.created__dj-stripe.json": (
        DJ_CUS,
        {
            "api_version": "2016-03-07; orders_beta=v3",
            "customer.id": DJ_CUS,
            "customer.email": "michael.smith@example.com",
            "customer.created": 1557995166,
            "customer.currency": "usd",
            # default_source expanded into a card object
            "customer.default_source": DJ_CARD,
            "customer.deleted": False,
            "customer.country": None,
        },
    ),
    "customer.created__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "customer.email": None,
            "customer.currency": None,
            "customer.created": 1648320107,
            "customer.default_source": "card_000000000000000000000000",
        },
    ),
    "customer.deleted__dj-stripe.json": (
        DJ_CUS,
        {"type": "customer.deleted", "customer.deleted": True, "customer.currency": "usd"},
    ),
    "customer.deleted__stripe-ruby-mock.json": (
        MOCK_CUS,
        {"customer.deleted": True, "customer.default_payment_method": None},
    ),
    "customer.updated__dj-stripe.json": (
        DJ_CUS,
        {"customer.email": "michael.smith@example.com", "previous_attributes": []},
    ),
    "customer.updated__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "customer.currency": "usd",
            "created": 1648320110,
            "previous_attributes": ["currency"],
        },
    ),
    "customer.subscription.created__dj-stripe.json": (
        DJ_CUS,
        {
            "subscription.id": DJ_SUB,
            "subscription.customer_id": DJ_CUS,
            "subscription.status": "active",
            "subscription.currency": "usd",
            "subscription.mrr_cents": 2000,
            "subscription.current_period_start": 1557995176,
            "subscription.current_period_end": 1560673576,
            "subscription.items.0.id": "si_F5ukmkS6Bxi90Y",
            "subscription.items.0.price_id": "gold21323",
            "subscription.items.0.product_id": "prod_fake1",
            "subscription.items.0.nickname": "New plan name",
            "subscription.items.0.interval": "month",
            "subscription.items.0.current_period_end": 1560673576,
        },
    ),
    "customer.subscription.created__stripe-ruby-mock-e19fdb9-trialing.json": (
        MOCK_CUS,
        {
            # No id in this hand-made variant; the top-level plan stands in for items.
            "subscription.id": "",
            "subscription.status": "trialing",
            "subscription.trial_start": 1371501377,
            "subscription.trial_end": 1371760577,
            "subscription.mrr_cents": 1000,
            "subscription.items.0.id": None,
            "subscription.items.0.price_id": "1_00000000000000",
            "subscription.items.0.nickname": "Cool Plan",
            "subscription.items.0.unit_amount": 1000,
            "subscription.items.0.current_period_end": 1371760577,
        },
    ),
    "customer.subscription.created__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "subscription.id": MOCK_SUB,
            "subscription.mrr_cents": 1500,
            "subscription.current_period_start": 1648320110,
            "subscription.current_period_end": 1650998510,
            "subscription.items.0.price_id": MOCK_PRICE,
            "subscription.items.0.product_id": MOCK_PRODUCT,
            "subscription.items.0.unit_amount": 1500,
        },
    ),
    "customer.subscription.deleted__dj-stripe.json": (
        DJ_CUS,
        # A composite: the "deleted" subscription still says active.
        {"type": "customer.subscription.deleted", "subscription.status": "active"},
    ),
    "customer.subscription.deleted__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "subscription.status": "canceled",
            "subscription.canceled_at": 1648320097,
            "subscription.ended_at": 1648320097,
            # Still computed; the customer workflow decides that canceled doesn't count.
            "subscription.mrr_cents": 1500,
        },
    ),
    "customer.subscription.trial_will_end__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "subscription.id": "su_00000000000000",
            "subscription.status": "trialing",
            "subscription.trial_end": 1381280730,
            "subscription.current_period_end": 1383759023,
            "subscription.items.0.mrr_cents": 100,
            "subscription.items.1.quantity": 5,
            "subscription.items.1.currency": "eur",
            "subscription.items.1.mrr_cents": 1000,
            "subscription.mrr_cents": 1100,
        },
    ),
    "customer.subscription.updated__stripe-ruby-mock-c9af9d3-planchange.json": (
        MOCK_CUS,
        {
            "previous_attributes": ["plan"],
            "subscription.status": "active",
            "subscription.items.1.price_id": "fkx0AFo_00000000000001",
            "subscription.items.1.product_id": "pr_00000000000001",
            "subscription.mrr_cents": 1100,
        },
    ),
    "customer.subscription.updated__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "previous_attributes": ["schedule"],
            "subscription.mrr_cents": 1500,
            "subscription.current_period_end": 1650998505,
        },
    ),
    "invoice.created__dj-stripe.json": (
        DJ_CUS,
        {
            "invoice.id": DJ_INV,
            "invoice.subscription_id": DJ_SUB,
            "invoice.status": "paid",
            "invoice.billing_reason": "subscription_create",
            "invoice.number": "E5B23224-0001",
            "invoice.amount_paid": 2000,
            "invoice.price_ids": [ONE_TIME_PRICE],
            "invoice.product_ids": ["prod_M2SMqVbyQ81ihY"],
            "invoice.metadata": {"djstripe_test_fake_id": DJ_INV},
        },
    ),
    "invoice.created__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "invoice.id": MOCK_INV,
            "invoice.status": "draft",
            "invoice.subscription_id": MOCK_SUB,
            "invoice.next_payment_attempt": 1648323710,
            "invoice.amount_due": 1500,
            "invoice.price_ids": [MOCK_PRICE],
            "invoice.product_ids": [MOCK_PRODUCT],
        },
    ),
    "invoice.finalized__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "invoice.subscription_id": None,
            "invoice.billing_reason": "manual",
            "invoice.number": "EE1DF78D-0001",
            "invoice.total": 2000,
        },
    ),
    "invoice.paid__stripe-ruby-mock.json": (
        MOCK_CUS,
        {"invoice.status": "paid", "invoice.amount_paid": 2000, "invoice.amount_remaining": 0},
    ),
    "invoice.payment_action_required__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "invoice.status": "open",
            "invoice.number": "7C43E171-0001",
            "invoice.amount_remaining": 2000,
            # ids zeroed by the fixture's authors
            "invoice.hosted_invoice_url": (
                "https://invoice.stripe.com/i/acct_0000000000000000/test_" + "0" * 101
            ),
        },
    ),
    "invoice.payment_failed__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "type": "invoice.payment_failed",
            "invoice.number": "C93E45D7-0001",
            "invoice.attempt_count": 1,
            "invoice.created": 1648320007,
            "invoice.period_end": 1648320007,
        },
    ),
    "invoice.payment_succeeded__stripe-ruby-mock.json": (
        MOCK_CUS,
        {"invoice.status": "paid", "invoice.created": 1648320012},
    ),
    "invoice.upcoming__dj-stripe.json": (
        DJ_CUS,
        {
            "api_version": "2017-02-14",
            "created": 1501859641,
            # An upcoming invoice has no id yet.
            "invoice.id": None,
            "invoice.subscription_id": DJ_SUB,
        },
    ),
    "invoice.upcoming__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "invoice.id": None,
            "invoice.subscription_id": "sub_00000000000000",
            "invoice.amount_due": 1000,
            "invoice.amount_paid": 0,
            "invoice.period_end": 1380674075,
            "invoice.price_ids": ["fkx0AFo"],
            "invoice.product_ids": ["pr_00000000000000"],
        },
    ),
    "invoice.updated__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "previous_attributes": ["auto_advance", "next_payment_attempt"],
            "invoice.next_payment_attempt": None,
        },
    ),
    "payment_method.attached__dj-stripe-card.json": (
        DJ_CUS,
        {
            "payment_method.id": DJ_CARD,
            "payment_method.customer_id": DJ_CUS,
            "payment_method.type": "card",
            "payment_method.exp_month": 6,
            "payment_method.exp_year": 2021,
        },
    ),
    "payment_method.attached__dj-stripe.json": (
        DJ_CUS,
        {
            "payment_method.id": "pm_fakefakefakefake0001",
            "payment_method.brand": "visa",
            "payment_method.last4": "4242",
        },
    ),
    "payment_method.attached__stripe-ruby-mock.json": (
        MOCK_CUS,
        {
            "payment_method.id": "card_000000000000000000000000",
            "payment_method.exp_month": 3,
            "payment_method.exp_year": 2023,
        },
    ),
    # --- bare objects and event.data wrappers
    "object__card__openapi-fixtures3.json": (
        None,
        {
            "id": "card_1PgaftB7WZ01zgkWm3waTcFp",
            "type": "card",
            "brand": "visa",  # "Visa" on the Card object
            "last4": "4242",
            "exp_month": 8,
            "exp_year": 2030,
        },
    ),
    "object__charge.succeeded__pay-rails.json": ("cus_0dUMWLtzCTagWs", None),
    "object__charge__openapi-fixtures3.json": (None, None),
    "object__checkout.session.completed__pay-rails.json": ("cus_M5wW9RPFk9xNZ5", None),
    "object__checkout.session__openapi-fixtures3.json": (None, None),
    "object__dispute__openapi-fixtures3.json": (None, None),
    "object__price__openapi-fixtures3.json": (None, None),
    "object__customer.deleted__pay-rails.json": (
        "cus_EGxrcooteA3WAb",
        # Without its event type, nothing in the object says it was deleted.
        {"id": "cus_EGxrcooteA3WAb", "created": 1546497808, "deleted": False},
    ),
    "object__customer.updated__pay-rails.json": (
        "cus_1234",
        {"id": "cus_1234", "currency": "usd", "default_payment_method": None},
    ),
    "object__customer__openapi-fixtures3.json": (
        "cus_QXg1o8vcGmoR32",
        {
            "id": "cus_QXg1o8vcGmoR32",
            "created": 1234567890,
            "currency": "usd",
            "country": None,
            "default_payment_method": None,
            "metadata": {},
        },
    ),
    "object__invoice.payment_action_required__pay-rails.json": (
        "cus_1234",
        {
            "id": "in_1234",
            "subscription_id": "sub_1234",
            "billing_reason": "subscription_cycle",
            "amount_due": 9184,
            "number": "62E7977D-0018",
            "price_ids": ["price_1234"],
            "product_ids": ["prod_1234"],
        },
    ),
    "object__invoice.payment_failed__pay-rails.json": (
        "cus_1234",
        {
            # basil: only parent.subscription_details names the subscription
            "subscription_id": "sub_1234",
            "attempt_count": 1,
            "next_payment_attempt": 1745552783,
            "amount_due": 24900,
            "price_ids": ["price_1234"],
            "product_ids": ["prod_1234"],
        },
    ),
    "object__invoice.upcoming__pay-rails.json": (
        "cus_L7lJPQIi3GxrTG",
        {
            "id": None,
            "subscription_id": "sub_1234",
            "billing_reason": "upcoming",
            "amount_due": 1900,
            "next_payment_attempt": 1745693140,
        },
    ),
    "object__invoice__dj-stripe-fixture0001.json": (
        DJ_CUS,
        {"id": DJ_INV, "subscription_id": DJ_SUB, "total": 2000, "price_ids": []},
    ),
    "object__invoice__dj-stripe-upcoming.json": (
        DJ_CUS,
        {
            "id": "in",
            "status": None,
            "next_payment_attempt": 1439218689,
            "price_ids": [ONE_TIME_PRICE],
        },
    ),
    "object__invoice__openapi-fixtures3.json": (
        "cus_QXg1o8vcGmoR32",
        {
            "id": "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
            # parent.type is quote_details: its placeholder subscription_details don't count
            "subscription_id": None,
            "status": "draft",
            "amount_due": 1000,
            "next_payment_attempt": 1234567890,
            "price_ids": [],
        },
    ),
    "object__invoice__pay-rails.json": (
        "cus_S9YwWMaQEgeJYO",
        {
            "id": "in_1RFFohKXBGcbgpbZk9MxzDMc",
            "subscription_id": None,
            "total": 24512,
            # two lines of the same price, listed once
            "price_ids": ["price_1KOpJJKXBGcbgpbZyDoF66XQ"],
            "product_ids": ["prod_IxQQWtyij0rvGp"],
        },
    ),
    "object__payment_method.attached__pay-rails.json": (
        "cus_1234",
        {
            "id": "card_1JN6Z1KXBGcbgpbZ2AZJOYEZ",
            "customer_id": "cus_1234",
            "exp_month": 4,
            "exp_year": 2024,
        },
    ),
    "object__payment_method__openapi-fixtures3.json": (
        None,
        {
            "id": "pm_1Pgc75B7WZ01zgkWlHVgdEGJ",
            "type": "card",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 8,
            "exp_year": 2030,
        },
    ),
    "object__source__openapi-fixtures3.json": (
        None,
        {
            "id": "src_1Pgc75B7WZ01zgkWn9ogkWOr",
            "type": "ach_credit_transfer",
            "brand": None,
            "exp_month": None,
        },
    ),
    "object__subscription.created__pay-rails.json": (
        MOCK_CUS,
        {
            "id": "sub_00000000000000",
            "status": "active",
            "trial_end": 1467992724,
            "current_period_end": 1488987924,
            # plan-shaped price: amount 300 a month, 2 seats
            "items.0.price_id": "FFBEGINNER_00000000000000",
            "items.0.unit_amount": 300,
            "items.0.quantity": 2,
            "mrr_cents": 600,
        },
    ),
    "object__subscription.deleted__pay-rails.json": (
        MOCK_CUS,
        {
            "status": "canceled",
            "canceled_at": 1487872069,
            "ended_at": 1546925027,
            "items.0.nickname": "Beginner",
            "mrr_cents": 300,
        },
    ),
    "object__subscription.trial_will_end__pay-rails.json": (
        MOCK_CUS,
        {"trial_end": 1668971983, "items.0.price_id": "some-plan", "mrr_cents": 600},
    ),
    "object__subscription.updated__pay-rails.json": (
        MOCK_CUS,
        {
            # basil shape: the period is only on the item
            "current_period_start": 1486568724,
            "current_period_end": 1488987924,
            "items.0.current_period_end": 1488987924,
            "status": "canceled",
            "mrr_cents": 600,
        },
    ),
    "object__subscription__dj-stripe-cancel_at_period_end.json": (
        DJ_CUS,
        {"cancel_at_period_end": True, "canceled_at": 1440907580, "mrr_cents": 2000},
    ),
    "object__subscription__dj-stripe-canceled.json": (
        DJ_CUS,
        {"status": "canceled", "cancel_at_period_end": False, "mrr_cents": 2000},
    ),
    "object__subscription__dj-stripe-fixture0001.json": (
        DJ_CUS,
        {
            "id": DJ_SUB,
            "status": "active",
            "paused": False,
            "metadata": {"djstripe_test_fake_id": DJ_SUB},
            "mrr_cents": 2000,
        },
    ),
    "object__subscription__openapi-fixtures3.json": (
        "cus_QXg1o8vcGmoR32",
        {
            "id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
            "currency": "usd",
            "paused": True,  # pause_collection is set
            "cancel_at_period_end": True,
            "cancel_at": 1234567890,
            "cancellation_reason": None,
            "current_period_start": 1896570518,
            "current_period_end": 976287773,
            # `price` wins over the placeholder `plan` (interval_count 797691627)
            "items.0.price_id": "price_1PgafmB7WZ01zgkW6dKueIc5",
            "items.0.interval_count": 1,
            # The example's placeholder transform_quantity divides by 1592560163, rounding
            # down: Stripe would bill its one unit as none.
            "items.0.transform_divide_by": 1592560163,
            "mrr_cents": 0,
        },
    ),
    "object__subscription_item__openapi-fixtures3.json": (
        None,
        {
            "id": "si_QXhVBoJ7NQdNXh",
            "price_id": "price_1PgafmB7WZ01zgkW6dKueIc5",
            "product_id": "prod_QXg1hqf4jFNsqG",
            "unit_amount": 2000,
            "interval": "month",
            "interval_count": 1,
            "current_period_end": 976287773,
            "mrr_cents": 0,  # one unit divided by the placeholder transform_quantity
        },
    ),
}


def _is_payload(name: str) -> bool:
    return not name.startswith("trigger__") and name not in ("event_types.json", "fixtures3.json")


PAYLOADS = [entry["file"] for entry in manifest() if _is_payload(entry["file"])]


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


def _assert_fields(result: object, fields: Mapping[str, Any]) -> None:
    for path, expected in fields.items():
        assert _dig(result, path) == expected, path


def _normalise_payload(payload: Mapping[str, Any]) -> tuple[str | None, object]:
    """(customer id, normalised result): envelopes as events, the rest by their `object`."""
    if payload.get("object") == "event":
        return event_customer_id(payload), normalise_event(payload)
    # Some files hold `event.data` ({"object": {...}}) rather than the object itself.
    obj = payload["object"] if isinstance(payload.get("object"), Mapping) else payload
    parser = PARSERS.get(obj.get("object", ""))
    return event_customer_id({"data": {"object": obj}}), parser(obj) if parser else None


@needs_shared
def test_every_payload_in_the_manifest_has_expectations() -> None:
    assert sorted(PAYLOADS) == sorted(EXPECTED)


@needs_shared
@pytest.mark.parametrize("name", PAYLOADS)
def test_payload_normalises(name: str) -> None:
    customer_id, fields = EXPECTED[name]

    found_customer_id, result = _normalise_payload(load_fixture(name))

    assert found_customer_id == customer_id
    if fields is None:
        assert result is None
    else:
        assert result is not None
        if isinstance(result, BillingEvent):
            assert result.customer_id == customer_id
        _assert_fields(result, fields)


# fixtures3.json: Stripe's example object for each resource, in the current shape. The
# object__*__openapi-fixtures3 files are copies of these entries, so they share checks.
FIXTURES3_RESOURCES = [
    "customer",
    "subscription",
    "subscription_item",
    "invoice",
    "payment_method",
    "card",
]


@needs_shared
@pytest.mark.parametrize("resource", FIXTURES3_RESOURCES)
def test_stripe_example_object_parses(resource: str) -> None:
    obj = load_fixture("fixtures3.json")["resources"][resource]
    _, fields = EXPECTED[f"object__{resource}__openapi-fixtures3.json"]
    assert fields is not None

    _assert_fields(PARSERS[resource](obj), fields)


# --- The same data in the current (basil/clover) shape and in the old one ---------------

PERIOD_START = 1735689600  # 2025-01-01
PERIOD_END = 1738368000  # 2025-02-01

SEAT_PRICE = {
    "id": "price_seat",
    "object": "price",
    "active": True,
    "billing_scheme": "per_unit",
    "currency": "usd",
    "nickname": "Team seat",
    "product": "prod_team",
    "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
    "type": "recurring",
    "unit_amount": 1200,
    "unit_amount_decimal": "1200",
}
ADDON_PRICE = {
    **SEAT_PRICE,
    "id": "price_addon",
    "nickname": "Priority support",
    # expanded product
    "product": {"id": "prod_support", "object": "product", "name": "Priority support"},
    "unit_amount": 500,
    "unit_amount_decimal": "500",
}
COUPON_20 = {
    "id": "TEAM20",
    "object": "coupon",
    "amount_off": None,
    "currency": None,
    "duration": "forever",
    "percent_off": 20.0,
}

# Since 2025-03-31.basil: periods on items, no singular discount; since 2025-09-30.clover
# the coupon sits under discount.source (expanded here, as after `expand[]`).
CURRENT_SUBSCRIPTION: dict[str, Any] = {
    "id": "sub_1QTeam",
    "object": "subscription",
    "customer": "cus_QTeam",
    "status": "active",
    "currency": "usd",
    "created": 1733000000,
    "start_date": 1733000000,
    "billing_cycle_anchor": PERIOD_START,
    "cancel_at_period_end": True,
    "cancel_at": PERIOD_END,
    "canceled_at": 1736000000,
    "ended_at": None,
    "cancellation_details": {
        "comment": None,
        "feedback": "too_expensive",
        "reason": "cancellation_requested",
    },
    "pause_collection": None,
    "trial_start": None,
    "trial_end": None,
    "default_payment_method": {"id": "pm_1QTeam", "object": "payment_method", "type": "card"},
    "default_source": None,
    "discounts": [
        {
            "id": "di_1QTeam",
            "object": "discount",
            "customer": "cus_QTeam",
            "subscription": "sub_1QTeam",
            "start": 1733000000,
            "end": None,
            "source": {"type": "coupon", "coupon": COUPON_20},
        }
    ],
    "items": {
        "object": "list",
        "data": [
            {
                "id": "si_seats",
                "object": "subscription_item",
                "current_period_start": PERIOD_START,
                "current_period_end": PERIOD_END,
                "discounts": [],
                "metadata": {},
                "price": SEAT_PRICE,
                "quantity": 5,
                "subscription": "sub_1QTeam",
            },
            {
                "id": "si_support",
                "object": "subscription_item",
                "current_period_start": PERIOD_START,
                "current_period_end": PERIOD_END,
                "discounts": [],
                "metadata": {},
                "price": ADDON_PRICE,
                "quantity": 1,
                "subscription": "sub_1QTeam",
            },
        ],
        "has_more": False,
        "total_count": 2,
    },
    "latest_invoice": "in_1QTeam",
    "livemode": True,
    "metadata": {"workspace": "acme", "seats_limit": 10},
}


def _plan(price: Mapping[str, Any]) -> dict[str, Any]:
    """The legacy Plan object equivalent of a recurring price."""
    return {
        "id": price["id"],
        "object": "plan",
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "currency": price["currency"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "nickname": price["nickname"],
        "product": price["product"],
        "usage_type": "licensed",
    }


# Before basil: periods on the subscription, plans on the items, one expanded `discount`
# with its coupon, `discounts` as ids, no currency on the subscription, the payment
# method as a bare id.
OLD_SUBSCRIPTION: dict[str, Any] = {
    **{
        key: value
        for key, value in CURRENT_SUBSCRIPTION.items()
        if key not in ("currency", "discounts", "items")
    },
    "current_period_start": PERIOD_START,
    "current_period_end": PERIOD_END,
    "default_payment_method": "pm_1QTeam",
    "discount": {
        "id": "di_1QTeam",
        "object": "discount",
        "coupon": COUPON_20,
        "customer": "cus_QTeam",
        "subscription": "sub_1QTeam",
        "start": 1733000000,
        "end": None,
    },
    "discounts": ["di_1QTeam"],
    "items": {
        "object": "list",
        "data": [
            {
                "id": "si_seats",
                "object": "subscription_item",
                "plan": _plan(SEAT_PRICE),
                "quantity": 5,
            },
            {"id": "si_support", "object": "subscription_item", "plan": _plan(ADDON_PRICE)},
        ],
        "has_more": False,
        "total_count": 2,
    },
}

EXPECTED_TEAM_SUBSCRIPTION = {
    "id": "sub_1QTeam",
    "customer_id": "cus_QTeam",
    "status": "active",
    "currency": "usd",
    "current_period_start": PERIOD_START,
    "current_period_end": PERIOD_END,
    "cancel_at_period_end": True,
    "cancel_at": PERIOD_END,
    "cancellation_reason": "cancellation_requested",
    "default_payment_method": "pm_1QTeam",
    "metadata": {"workspace": "acme", "seats_limit": "10"},
    "items.0.mrr_cents": 6000,  # 5 seats x 12.00
    "items.0.current_period_end": PERIOD_END,
    "items.1.product_id": "prod_support",
    "items.1.nickname": "Priority support",
    "items.1.quantity": 1,
    "items.1.mrr_cents": 500,
    "mrr_cents": 5200,  # (6000 + 500) less 20 %
}

CURRENT_INVOICE: dict[str, Any] = {
    "id": "in_1QTeam",
    "object": "invoice",
    "customer": "cus_QTeam",
    "status": "open",
    "billing_reason": "subscription_cycle",
    "number": "A1B2C3D4-0007",
    "currency": "usd",
    "amount_due": 5200,
    "amount_paid": 0,
    "amount_remaining": 5200,
    "total": 5200,
    "attempt_count": 1,
    "next_payment_attempt": PERIOD_END + 3 * 86400,
    "hosted_invoice_url": "https://invoice.stripe.com/i/acct_1QTeam/live_abc",
    "created": PERIOD_END,
    "period_end": PERIOD_END,
    "metadata": {},
    "parent": {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"subscription": "sub_1QTeam", "metadata": {}},
    },
    "lines": {
        "object": "list",
        "data": [
            {
                "id": f"il_{index}",
                "object": "line_item",
                "parent": {
                    "type": "subscription_item_details",
                    "invoice_item_details": None,
                    "subscription_item_details": {
                        "subscription": "sub_1QTeam",
                        "subscription_item": item,
                        "proration": False,
                    },
                },
                "pricing": {
                    "type": "price_details",
                    "price_details": {"price": price, "product": product},
                    "unit_amount_decimal": "1200",
                },
            }
            for index, (item, price, product) in enumerate(
                [
                    ("si_seats", "price_seat", "prod_team"),
                    ("si_support", "price_addon", "prod_support"),
                    ("si_seats", "price_seat", "prod_team"),  # a proration line
                ]
            )
        ],
        "has_more": False,
    },
}

OLD_INVOICE: dict[str, Any] = {
    **{key: value for key, value in CURRENT_INVOICE.items() if key not in ("parent", "lines")},
    "subscription": {"id": "sub_1QTeam", "object": "subscription"},
    "lines": {
        "object": "list",
        "data": [
            {"id": "il_0", "object": "line_item", "type": "subscription", "price": SEAT_PRICE},
            {"id": "il_1", "object": "line_item", "type": "subscription", "price": ADDON_PRICE},
            {
                "id": "il_2",
                "object": "line_item",
                "type": "subscription",
                "plan": _plan(SEAT_PRICE),
            },
        ],
        "has_more": False,
    },
}

EXPECTED_TEAM_INVOICE = {
    "id": "in_1QTeam",
    "customer_id": "cus_QTeam",
    "subscription_id": "sub_1QTeam",
    "status": "open",
    "attempt_count": 1,
    "next_payment_attempt": PERIOD_END + 3 * 86400,
    "amount_due": 5200,
    "price_ids": ["price_seat", "price_addon"],
    "product_ids": ["prod_team", "prod_support"],
}


def _event(
    event_type: str, api_version: str, obj: Mapping[str, Any], **data: Any
) -> dict[str, Any]:
    return {
        "id": "evt_1QTeam",
        "object": "event",
        "api_version": api_version,
        "created": PERIOD_END + 60,
        "data": {"object": obj, **data},
        "livemode": True,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


@pytest.mark.parametrize(
    ("parse", "current", "old", "fields"),
    [
        (parse_subscription, CURRENT_SUBSCRIPTION, OLD_SUBSCRIPTION, EXPECTED_TEAM_SUBSCRIPTION),
        (parse_invoice, CURRENT_INVOICE, OLD_INVOICE, EXPECTED_TEAM_INVOICE),
    ],
    ids=["subscription", "invoice"],
)
def test_current_and_old_shapes_read_alike(
    parse: Callable[[Mapping[str, Any]], object],
    current: Mapping[str, Any],
    old: Mapping[str, Any],
    fields: Mapping[str, Any],
) -> None:
    from_current, from_old = parse(current), parse(old)

    _assert_fields(from_current, fields)
    assert from_old == from_current


@pytest.mark.parametrize(
    ("event_type", "current", "old", "part"),
    [
        (
            "customer.subscription.updated",
            CURRENT_SUBSCRIPTION,
            OLD_SUBSCRIPTION,
            "subscription",
        ),
        ("invoice.payment_failed", CURRENT_INVOICE, OLD_INVOICE, "invoice"),
    ],
)
def test_current_and_old_events_normalise_alike(
    event_type: str, current: Mapping[str, Any], old: Mapping[str, Any], part: str
) -> None:
    changed = {"previous_attributes": {"cancel_at_period_end": False, "cancel_at": None}}
    new_event = normalise_event(_event(event_type, "2025-09-30.clover", current, **changed))
    old_event = normalise_event(_event(event_type, "2020-08-27", old, **changed))

    assert new_event is not None and old_event is not None
    assert new_event.customer_id == "cus_QTeam"
    assert new_event.livemode is True
    assert new_event.created == PERIOD_END + 60
    assert new_event.previous_attributes == ["cancel_at", "cancel_at_period_end"]
    assert getattr(new_event, part) is not None
    assert old_event.api_version == "2020-08-27"
    assert dataclasses.replace(old_event, api_version="2025-09-30.clover") == new_event


def test_item_periods_differ_the_earliest_is_the_subscription_period() -> None:
    subscription = copy.deepcopy(CURRENT_SUBSCRIPTION)
    support = subscription["items"]["data"][1]
    support["current_period_start"] = PERIOD_START - 86400
    support["current_period_end"] = PERIOD_END - 86400

    parsed = parse_subscription(subscription)

    assert parsed.current_period_start == PERIOD_START - 86400
    assert parsed.current_period_end == PERIOD_END - 86400
    assert [item.current_period_end for item in parsed.items] == [PERIOD_END, PERIOD_END - 86400]


def test_paused_status_without_pause_collection_is_paused() -> None:
    parsed = parse_subscription({**CURRENT_SUBSCRIPTION, "status": "paused"})

    assert parsed.paused is True
    assert parsed.status == "paused"


# --- Customers and payment methods in both shapes ---------------------------------------


@pytest.mark.parametrize(
    ("customer", "fields"),
    [
        (
            {
                "id": "cus_QTeam",
                "object": "customer",
                "address": {"country": "DE", "city": "Berlin"},
                "created": 1733000000,
                "currency": "eur",
                "default_source": "card_legacy",
                "email": "ops@acme.example",
                "invoice_settings": {
                    "default_payment_method": {"id": "pm_1QTeam", "object": "payment_method"}
                },
                "metadata": {"tier": "enterprise", "seats": 40},
                "name": "Acme GmbH",
            },
            {
                "id": "cus_QTeam",
                "email": "ops@acme.example",
                "name": "Acme GmbH",
                "country": "DE",
                "currency": "eur",
                "created": 1733000000,
                # the PaymentMethod wins over the legacy source
                "default_payment_method": "pm_1QTeam",
                "metadata": {"tier": "enterprise", "seats": "40"},
                "deleted": False,
            },
        ),
        (
            {
                "id": "cus_Old",
                "object": "customer",
                "address": None,
                "default_source": {"id": "card_legacy", "object": "card"},
                "invoice_settings": {"default_payment_method": None},
            },
            {"default_payment_method": None, "default_source": "card_legacy", "country": None},
        ),
        (
            {"id": "cus_Gone", "object": "customer", "deleted": True},
            {"id": "cus_Gone", "deleted": True, "metadata": {}},
        ),
    ],
    ids=["current", "legacy-source", "deleted-object"],
)
def test_customer_shapes(customer: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    _assert_fields(parse_customer(customer), fields)


@pytest.mark.parametrize(
    ("card", "fields"),
    [
        (
            {
                "id": "card_1QAmex",
                "object": "card",
                "brand": "American Express",
                "customer": "cus_QTeam",
                "exp_month": 3,
                "exp_year": 2026,
                "last4": "0005",
            },
            {
                "id": "card_1QAmex",
                "type": "card",
                "brand": "amex",
                "last4": "0005",
                "exp_month": 3,
                "exp_year": 2026,
            },
        ),
        (
            {
                "id": "src_1QCard",
                "object": "source",
                "type": "card",
                "customer": "cus_QTeam",
                "card": {"brand": "MasterCard", "exp_month": 12, "exp_year": 2025, "last4": "4444"},
            },
            {
                "id": "src_1QCard",
                "type": "card",
                "brand": "mastercard",
                "last4": "4444",
                "exp_month": 12,
                "exp_year": 2025,
            },
        ),
    ],
    ids=["card", "card-source"],
)
def test_source_expiring_carries_the_card_expiry(
    card: Mapping[str, Any], fields: Mapping[str, Any]
) -> None:
    event = normalise_event(_event("customer.source.expiring", "2018-01-23", card))

    assert event is not None
    assert event.customer_id == "cus_QTeam"
    assert event.payment_method is not None
    _assert_fields(event.payment_method, fields)


def test_expanded_customer_on_an_object_names_the_customer() -> None:
    invoice = {**CURRENT_INVOICE, "customer": {"id": "cus_QTeam", "object": "customer"}}

    assert event_customer_id(_event("invoice.paid", "2025-03-31.basil", invoice)) == "cus_QTeam"


# --- MRR ----------------------------------------------------------------------------------


def _price(
    unit_amount: int | None,
    interval: str | None = "month",
    interval_count: int = 1,
    **extra: Any,
) -> dict[str, Any]:
    recurring = {"interval": interval, "interval_count": interval_count, "usage_type": "licensed"}
    return {
        "id": "price_x",
        "object": "price",
        "currency": "usd",
        "product": "prod_x",
        "recurring": recurring if interval else None,
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
        **extra,
    }


def _item(price: Mapping[str, Any], quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": "si_x",
        "object": "subscription_item",
        "price": price,
        "quantity": quantity,
        **extra,
    }


def _subscription(*items: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "sub_x",
        "object": "subscription",
        "currency": "usd",
        "items": {"object": "list", "data": list(items)},
        **extra,
    }


def _coupon(duration: str = "forever", **terms: Any) -> dict[str, Any]:
    return {"id": "co_x", "object": "coupon", "currency": None, "duration": duration, **terms}


def _discount(coupon: Any, discount_id: str = "di_x") -> dict[str, Any]:
    return {"id": discount_id, "object": "discount", "coupon": coupon}


MONTHLY_5000 = _item(_price(5000))

MRR_CASES: list[tuple[str, dict[str, Any], int]] = [
    ("monthly", _subscription(_item(_price(2000))), 2000),
    ("annual is a twelfth", _subscription(_item(_price(120000, "year"))), 10000),
    ("weekly is 52/12", _subscription(_item(_price(1000, "week"))), 4333),
    ("daily is 365/12", _subscription(_item(_price(100, "day"))), 3042),
    ("quarterly", _subscription(_item(_price(3000, "month", 3))), 1000),
    ("5 seats", _subscription(_item(_price(1200), quantity=5)), 6000),
    ("quantity 0", _subscription(_item(_price(1200), quantity=0)), 0),
    (
        "multiple items",
        _subscription(_item(_price(2000)), _item(_price(500), quantity=3)),
        3500,
    ),
    (
        "unit_amount_decimal, rounded half up",
        _subscription(_item(_price(None, unit_amount_decimal="1234.5"))),
        1235,
    ),
    (
        "tiered price without an amount",
        _subscription(_item(_price(None, billing_scheme="tiered", tiers_mode="graduated"))),
        0,
    ),
    (
        "metered usage",
        _subscription(
            _item(
                {
                    **_price(25),
                    "recurring": {
                        "interval": "month",
                        "interval_count": 1,
                        "usage_type": "metered",
                    },
                }
            )
        ),
        0,
    ),
    ("one-time price", _subscription(_item(_price(9900, None))), 0),
    (
        "legacy plan on the item",
        _subscription(
            {"id": "si_x", "plan": {"id": "gold", "amount": 999, "interval": "year"}, "quantity": 1}
        ),
        83,
    ),
    (
        "legacy plan and quantity on the subscription",
        {
            "id": "sub_x",
            "object": "subscription",
            "plan": {"id": "gold", "amount": 1500, "currency": "usd", "interval": "month"},
            "quantity": 2,
        },
        3000,
    ),
    (
        "percent_off 20 forever",
        _subscription(MONTHLY_5000, discount=_discount(_coupon(percent_off=20))),
        4000,
    ),
    (
        "percent_off 25.5 under source.coupon (clover)",
        _subscription(
            _item(_price(10000)),
            discounts=[
                {"id": "di_x", "source": {"type": "coupon", "coupon": _coupon(percent_off=25.5)}}
            ],
        ),
        7450,
    ),
    (
        "amount_off forever",
        _subscription(MONTHLY_5000, discount=_discount(_coupon(amount_off=500, currency="usd"))),
        4500,
    ),
    (
        "amount_off on an annual plan is a twelfth a month",
        _subscription(
            _item(_price(120000, "year")),
            discount=_discount(_coupon(amount_off=1200, currency="usd")),
        ),
        9900,
    ),
    (
        "amount_off larger than the price",
        _subscription(MONTHLY_5000, discount=_discount(_coupon(amount_off=9000, currency="usd"))),
        0,
    ),
    (
        "amount_off in another currency",
        _subscription(MONTHLY_5000, discount=_discount(_coupon(amount_off=500, currency="eur"))),
        5000,
    ),
    (
        "duration once does not recur",
        _subscription(MONTHLY_5000, discount=_discount(_coupon("once", percent_off=50))),
        5000,
    ),
    (
        "duration repeating ends, so it is not recurring revenue (Stripe's default)",
        _subscription(
            MONTHLY_5000,
            discount=_discount(_coupon("repeating", percent_off=10, duration_in_months=3)),
        ),
        5000,
    ),
    (
        "discount ids can't be read",
        _subscription(MONTHLY_5000, discounts=["di_1", "di_2"]),
        5000,
    ),
    (
        "unexpanded source.coupon can't be read",
        _subscription(
            MONTHLY_5000, discounts=[{"id": "di_x", "source": {"type": "coupon", "coupon": "co_x"}}]
        ),
        5000,
    ),
    (
        "the same discount as `discount` and in `discounts` counts once",
        _subscription(
            MONTHLY_5000,
            discount=_discount(_coupon(percent_off=20)),
            discounts=[_discount(_coupon(percent_off=20))],
        ),
        4000,
    ),
    (
        "two discounts apply one after the other",
        _subscription(
            MONTHLY_5000,
            discounts=[
                _discount(_coupon(percent_off=20), "di_1"),
                _discount(_coupon(amount_off=1000, currency="usd"), "di_2"),
            ],
        ),
        3000,
    ),
    (
        "an item discount reduces only its item",
        _subscription(
            _item(_price(2000), discounts=[_discount(_coupon(percent_off=50))]),
            _item(_price(1000)),
        ),
        2000,
    ),
]


@pytest.mark.parametrize(
    ("subscription", "mrr"),
    [(subscription, mrr) for _, subscription, mrr in MRR_CASES],
    ids=[case for case, _, _ in MRR_CASES],
)
def test_subscription_mrr(subscription: dict[str, Any], mrr: int) -> None:
    assert parse_subscription(subscription).mrr_cents == mrr
    assert parse_subscription(subscription).mrr_cents == mrr


def test_item_mrr_is_before_discounts() -> None:
    subscription = _subscription(
        _item(_price(1200), quantity=5), discount=_discount(_coupon(percent_off=20))
    )

    parsed = parse_subscription(subscription)

    assert parsed.items[0].mrr_cents == 6000
    assert parsed.mrr_cents == 4800


@pytest.mark.parametrize(
    ("amount", "interval", "interval_count", "monthly"),
    [
        (2000, "month", 1, Decimal(2000)),
        (1200, "year", 1, Decimal(100)),
        (2400, "year", 2, Decimal(100)),
        (1200, "week", 1, Decimal(5200)),
        (1200, "day", 1, Decimal(36500)),
        (3000, "month", 3, Decimal(1000)),
        (Decimal("0.5"), "month", 1, Decimal("0.5")),
        (9900, None, 1, Decimal(0)),
    ],
)
def test_monthly_amount(
    amount: Decimal | int, interval: str | None, interval_count: int, monthly: Decimal
) -> None:
    assert monthly_amount(amount, interval, interval_count) == monthly


def test_connect_account_accounts_v2_customer_and_invoice_collection_fields() -> None:
    event = normalise_event(
        {
            "id": "evt_1",
            "object": "event",
            "type": "invoice.paid",
            "created": 1_767_225_600,
            "account": "acct_Connected1",
            "data": {
                "object": {
                    "id": "in_1",
                    "object": "invoice",
                    "customer": None,
                    "customer_account": "acct_Customer1",
                    "collection_method": "send_invoice",
                    "due_date": 1_767_830_400,
                    "paid_out_of_band": True,
                }
            },
        }
    )
    assert event is not None and event.invoice is not None
    # Customers kept as Accounts v2 are named by `customer_account`.
    assert (event.customer_id, event.account) == ("acct_Customer1", "acct_Connected1")
    invoice = event.invoice
    assert (invoice.collection_method, invoice.due_date, invoice.paid_out_of_band) == (
        "send_invoice",
        1_767_830_400,
        True,
    )
