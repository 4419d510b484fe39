"""Money end to end: signed clover webhooks through the real API, the customer workflow on
the dev server reading what the payloads leave out from a local server speaking Stripe's
API (`LIFECYCLE_STRIPE_API_BASE`), and the snapshot the API answers."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.domain import ids

from .conftest import SUPPORT_KEY, running_stack
from .corpus import event_id
from .events import customer_event, unique_customer_id
from .fakes import STRIPE_API_KEY, StripeHttpServer, StripeState, coupon_object, serving
from .signing import post_webhook as post
from .workflow_helpers import eventually

CLOVER = "2025-09-30.clover"
T0 = 1_790_000_000
AUTH = {"Authorization": f"Bearer {SUPPORT_KEY}"}
COUPON_ID = "HALF_FOREVER"
HALF = coupon_object(COUPON_ID, percent_off=50.0)


class Customer:
    """A customer with a $49/month clover subscription under a 50% forever coupon."""

    def __init__(self) -> None:
        self.id = unique_customer_id()
        self.sub = f"sub_{self.id[4:]}"
        self.discount = f"di_{self.id[4:]}"

    def subscription(self) -> dict[str, Any]:
        """The subscription as Stripe holds it and as clover events carry it: discounts are
        ids, whose coupon Stripe names by id."""
        return {
            "id": self.sub,
            "object": "subscription",
            "customer": self.id,
            "status": "active",
            "currency": "usd",
            "created": T0,
            "cancel_at_period_end": False,
            "automatic_tax": {"enabled": False, "liability": None},
            "discounts": [self.discount],
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{self.id[4:]}",
                        "object": "subscription_item",
                        "quantity": 1,
                        "discounts": [],
                        "current_period_start": T0,
                        "current_period_end": T0 + 30 * 86_400,
                        "price": {
                            "id": "price_pro_monthly",
                            "object": "price",
                            "currency": "usd",
                            "billing_scheme": "per_unit",
                            "nickname": "Pro",
                            "product": "prod_pro",
                            "recurring": {"interval": "month", "interval_count": 1},
                            "tax_behavior": "exclusive",
                            "unit_amount": 4900,
                            "unit_amount_decimal": "4900",
                        },
                    }
                ],
            },
            "metadata": {},
        }

    def stripe_objects(self) -> StripeState:
        return StripeState(
            subscriptions={self.sub: self.subscription()},
            discounts={
                self.discount: {
                    "id": self.discount,
                    "object": "discount",
                    "customer": self.id,
                    "subscription": self.sub,
                    "start": T0,
                    "end": None,
                    "source": {"type": "coupon", "coupon": COUPON_ID},
                }
            },
            coupons={COUPON_ID: HALF},
        )

    def created(self) -> dict[str, Any]:
        return {
            "id": event_id(),
            "object": "event",
            "api_version": CLOVER,
            "created": T0 + 1,
            "livemode": False,
            "type": "customer.subscription.created",
            "data": {"object": self.subscription()},
        }


@pytest.fixture
def customer() -> Customer:
    return Customer()


@pytest.fixture
def stripe_api(customer: Customer) -> Iterator[StripeHttpServer]:
    with serving(StripeHttpServer(customer.stripe_objects())) as server:
        yield server


async def snapshot_once_valued(http: httpx.AsyncClient, customer: Customer) -> dict[str, Any]:
    """The customer as the API answers it once the subscription is counted."""
    found: dict[str, Any] = {}

    async def valued() -> bool:
        nonlocal found
        response = await http.get(f"/v1/customers/{customer.id}", headers=AUTH)
        found = response.json() if response.status_code == 200 else {}
        return found.get("status") == "active"

    await eventually(valued, f"{customer.id} active in the API, have {found}")
    return found


async def details(env: WorkflowEnvironment, customer: Customer) -> str:
    """The customer workflow's current details, as the Temporal UI shows them."""
    handle = env.client.get_workflow_handle(ids.customer_workflow_id(customer.id))
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert isinstance(metadata, WorkflowMetadata)
    return str(metadata.current_details)


async def test_a_clover_subscription_with_a_50_percent_forever_coupon_shows_half_the_mrr(
    dev_env: WorkflowEnvironment,
    sqlite_url: str,
    customer: Customer,
    stripe_api: StripeHttpServer,
) -> None:
    stack = running_stack(
        dev_env,
        sqlite_url,
        f"tq-{uuid.uuid4().hex}",
        stripe_api_key=STRIPE_API_KEY,
        stripe_api_base=stripe_api.url,
    )
    async with stack as (_, http):
        await post(http, customer_event(customer.id, "ada@example.com", created=T0))
        await post(http, customer.created())
        found = await snapshot_once_valued(http, customer)
        shown = await details(dev_env, customer)

    assert (found["mrr_cents"], found["currency"], found["mrr_exact"]) == (2450, "usd", True)
    assert found["mrr"] == {"usd": 2450}
    assert "**MRR:** $24.50 ·" in shown
    # The discount was read through its subscription, its coupon on its own.
    assert [(r.method, r.path) for r in stripe_api.state.requests] == [
        ("GET", f"/v1/subscriptions/{customer.sub}"),
        ("GET", f"/v1/coupons/{COUPON_ID}"),
    ]


async def test_without_an_api_key_the_mrr_is_flagged_not_exact(
    dev_env: WorkflowEnvironment, sqlite_url: str, customer: Customer
) -> None:
    async with running_stack(dev_env, sqlite_url, f"tq-{uuid.uuid4().hex}") as (_, http):
        await post(http, customer_event(customer.id, "ada@example.com", created=T0))
        await post(http, customer.created())
        found = await snapshot_once_valued(http, customer)
        shown = await details(dev_env, customer)

    # The coupon could not be read: the price as it is, and said to be so.
    assert (found["mrr_cents"], found["mrr_exact"]) == (4900, False)
    assert "**MRR:** $49.00 (not exact)" in shown
