"""The read_stripe activity: the real stripe library against the local server that answers
like Stripe's v1 API (expansion, `Stripe-Account`, rate limits), and its memory of what
never changes."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from temporalio.testing import ActivityEnvironment

from stripe_lifecycle.activities.stripe_reads import StripeReadActivities
from stripe_lifecycle.domain.events import CouponInfo, PriceTier
from stripe_lifecycle.domain.stripe_reads import (
    PriceRead,
    PriceTerms,
    StripeReadAnswer,
    StripeReadRequest,
)
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.stripe_api.client import Pacer, build_stripe_client

from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, serving
from .fakes import coupon_object as coupon

CONNECTED = "acct_1Connected"


def invoice_payment(invoice_id: str, payment_type: str, status: str = "paid") -> dict[str, Any]:
    return {
        "id": f"inpay_{invoice_id}_{payment_type}",
        "object": "invoice_payment",
        "invoice": invoice_id,
        "status": status,
        "amount_paid": 4900 if status == "paid" else None,
        "currency": "usd",
        "is_default": True,
        "payment": {"type": payment_type},
    }


GRADUATED = {
    "id": "price_seats",
    "object": "price",
    "currency": "usd",
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "unit_amount": None,
    "unit_amount_decimal": None,
    "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
    "tax_behavior": "exclusive",
    "tiers": [
        {"up_to": 5, "unit_amount": 1000, "unit_amount_decimal": "1000", "flat_amount": None},
        {"up_to": None, "unit_amount": 800, "unit_amount_decimal": "800", "flat_amount": None},
    ],
    "currency_options": {
        "eur": {
            "unit_amount": None,
            "unit_amount_decimal": None,
            "tax_behavior": "inclusive",
            "tiers": [
                {"up_to": None, "unit_amount": 900, "unit_amount_decimal": "900"},
            ],
        }
    },
}


@pytest.fixture
def stripe_api() -> Iterator[StripeHttpServer]:
    state = StripeState(
        coupons={
            "HALF": coupon("HALF", percent_off=50.0),
            "TENOFF": coupon(
                "TENOFF",
                amount_off=1000,
                currency="usd",
                currency_options={"eur": {"amount_off": 900}},
            ),
        },
        prices={"price_seats": GRADUATED},
        subscriptions={
            "sub_clover": {
                "id": "sub_clover",
                "object": "subscription",
                "discounts": ["di_sub"],
                "items": {
                    "object": "list",
                    "data": [
                        {"id": "si_1", "object": "subscription_item", "discounts": ["di_item"]}
                    ],
                },
            }
        },
        discounts={
            "di_sub": {
                "id": "di_sub",
                "object": "discount",
                "start": 1_750_000_000,
                "end": None,
                "source": {"type": "coupon", "coupon": "HALF"},
            },
            "di_item": {
                "id": "di_item",
                "object": "discount",
                "start": 1_750_000_000,
                "end": None,
                # Before clover the coupon comes expanded on the discount.
                "coupon": coupon("ITEM20", percent_off=20.0),
            },
        },
        invoice_payments=[
            invoice_payment("in_card", "payment_intent"),
            invoice_payment("in_wire", "payment_record"),
            invoice_payment("in_wire", "payment_intent", status="canceled"),
        ],
        connected={
            CONNECTED: StripeState(coupons={"CONNECT30": coupon("CONNECT30", percent_off=30.0)})
        },
    )
    with serving(StripeHttpServer(state)) as server:
        yield server


@pytest.fixture
def activities(stripe_api: StripeHttpServer) -> StripeReadActivities:
    settings = Settings(stripe_api_key=STRIPE_API_KEY, stripe_api_base=stripe_api.url)
    return StripeReadActivities(build_stripe_client(settings))


async def read(activities: StripeReadActivities, request: StripeReadRequest) -> StripeReadAnswer:
    return await ActivityEnvironment().run(activities.read_stripe, request)


async def test_a_coupon_is_read_once_and_remembered(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    first = await read(activities, StripeReadRequest(coupon_ids=["HALF"]))
    again = await read(activities, StripeReadRequest(coupon_ids=["HALF"]))

    assert (
        first.coupons
        == again.coupons
        == {
            "HALF": CouponInfo(
                id="HALF", duration="forever", percent_off=50.0, currency_options_known=True
            )
        }
    )
    [asked] = stripe_api.state.requests
    assert (asked.method, asked.path, asked.api_key) == ("GET", "/v1/coupons/HALF", STRIPE_API_KEY)
    assert asked.expand == ["currency_options"]


async def test_a_coupons_other_currencies_are_read(activities: StripeReadActivities) -> None:
    answer = await read(activities, StripeReadRequest(coupon_ids=["TENOFF"]))

    assert answer.coupons["TENOFF"].amount_off_by_currency == {"eur": 900}


async def test_reads_on_a_connected_account_carry_its_stripe_account(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    answer = await read(activities, StripeReadRequest(account=CONNECTED, coupon_ids=["CONNECT30"]))
    # The same id on the platform's own account is another coupon (here: none).
    platform = await read(activities, StripeReadRequest(coupon_ids=["CONNECT30"]))

    assert answer.coupons["CONNECT30"].percent_off == 30.0
    assert platform.coupons == {}
    assert [r.account for r in stripe_api.state.requests] == [CONNECTED, None]


async def test_discount_ids_are_read_through_their_subscription_with_their_coupons(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    request = StripeReadRequest(subscription_discounts={"sub_clover": ["di_sub", "di_item"]})

    answer = await read(activities, request)
    await read(activities, request)

    assert {
        d: (x.coupon_id, x.coupon and x.coupon.percent_off) for d, x in answer.discounts.items()
    } == {
        "di_sub": ("HALF", 50.0),
        "di_item": ("ITEM20", 20.0),
    }
    # One subscription read (its discounts expanded), one for the clover coupon; the second
    # request remembered both.
    assert [(r.path, r.expand) for r in stripe_api.state.requests] == [
        ("/v1/subscriptions/sub_clover", ["discounts", "items.data.discounts"]),
        ("/v1/coupons/HALF", ["currency_options"]),
    ]


async def test_tiers_are_read_expanded_and_remembered(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    request = StripeReadRequest(prices=[PriceRead("price_seats", "usd")])

    answer = await read(activities, request)
    await read(activities, request)

    assert answer.prices == [
        PriceTerms(
            price_id="price_seats",
            currency="usd",
            tiers=[
                PriceTier(up_to=5, unit_amount_decimal="1000"),
                PriceTier(up_to=None, unit_amount_decimal="800"),
            ],
            tax_behavior="exclusive",
        )
    ]
    [asked] = stripe_api.state.requests
    assert asked.expand == ["tiers"]


async def test_a_currency_option_is_read_in_the_currency_billed(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    request = StripeReadRequest(prices=[PriceRead("price_seats", "eur", other_currency=True)])

    answer = await read(activities, request)

    assert answer.prices == [
        PriceTerms(
            price_id="price_seats",
            currency="eur",
            tiers=[PriceTier(up_to=None, unit_amount_decimal="900")],
            tax_behavior="inclusive",
        )
    ]
    [asked] = stripe_api.state.requests
    assert asked.expand == ["tiers", "currency_options", "currency_options.eur.tiers"]


async def test_invoice_payments_say_whether_stripe_collected_the_invoice(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    answer = await read(activities, StripeReadRequest(invoice_ids=["in_card", "in_wire"]))

    assert answer.paid_through_stripe == {"in_card": True, "in_wire": False}
    assert [(r.path, r.query.get("invoice")) for r in stripe_api.state.requests] == [
        ("/v1/invoice_payments", "in_card"),
        ("/v1/invoice_payments", "in_wire"),
    ]


async def test_a_rate_limit_raises_so_that_temporal_retries(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    stripe_api.state.rate_limited = 1

    with pytest.raises(stripe.RateLimitError):
        await read(activities, StripeReadRequest(coupon_ids=["HALF"]))
    retried = await read(activities, StripeReadRequest(coupon_ids=["HALF"]))

    assert retried.coupons["HALF"].percent_off == 50.0
    assert len(stripe_api.state.requests) == 2


async def test_stripe_down_raises_so_that_temporal_retries(
    activities: StripeReadActivities,
) -> None:
    with pytest.raises(stripe.APIError):
        await read(activities, StripeReadRequest(coupon_ids=["HALF_down"]))


async def test_what_stripe_cannot_tell_stays_unknown(
    activities: StripeReadActivities, stripe_api: StripeHttpServer
) -> None:
    request = StripeReadRequest(coupon_ids=["DELETED"], prices=[PriceRead("price_gone", "usd")])

    answer = await read(activities, request)
    await read(activities, request)

    assert (answer.connected, answer.coupons, answer.prices) == (True, {}, [])
    # A coupon id can be created again with other terms: a miss is asked again.
    assert len(stripe_api.state.requests) == 4


async def test_without_an_api_key_nothing_is_read() -> None:
    answer = await read(StripeReadActivities(None), StripeReadRequest(coupon_ids=["HALF"]))

    assert answer == StripeReadAnswer(connected=False)


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "not"])
async def test_a_paced_client_keeps_a_burst_of_reads_under_stripes_limit(
    stripe_api: StripeHttpServer, paced: bool
) -> None:
    """Temporal hands out a burst of read activities at once; the worker's pacer, at a rate
    below Stripe's limit (as LIFECYCLE_STRIPE_READ_RATE's default is), has each of them
    answered, where the client without it is refused past the limit."""
    stripe_api.state.endpoint_rate = 5
    settings = Settings(stripe_api_key=STRIPE_API_KEY, stripe_api_base=stripe_api.url)
    client = build_stripe_client(settings, Pacer(4) if paced else None)
    # An activities object each: none answers from another's memory of the invoice.
    burst = [StripeReadActivities(client) for _ in range(8)]

    answers = await asyncio.gather(
        *(read(reads, StripeReadRequest(invoice_ids=["in_card"])) for reads in burst),
        return_exceptions=True,
    )

    refused = [a for a in answers if isinstance(a, stripe.RateLimitError)]
    assert len(refused) == sum(stripe_api.state.over_limit.values())
    assert (len(refused) == 0) == paced
    assert all(isinstance(a, StripeReadAnswer) for a in answers if a not in refused)
