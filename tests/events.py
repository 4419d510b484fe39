"""Stripe events for tests: real captured payloads, re-addressed to a test's own customer.

Each test gets a unique customer id (and so a unique `customer-{id}` workflow), and the
events keep the real payload's shape around the fields the test controls.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from .stripe_fixtures import load_fixture

_counter = itertools.count(1)


def unique_customer_id() -> str:
    return f"cus_T{uuid.uuid4().hex[:14]}"


def event_id() -> str:
    return f"evt_T{uuid.uuid4().hex[:20]}{next(_counter)}"


def from_fixture(
    name: str,
    customer_id: str,
    *,
    created: int,
    event_id_: str | None = None,
    livemode: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """A fixture event with its id, customer, created time and chosen object fields replaced."""
    event = copy.deepcopy(load_fixture(name))
    event["id"] = event_id_ or event_id()
    event["created"] = created
    event["livemode"] = livemode
    obj = event["data"]["object"]
    if obj.get("object") == "customer":
        obj["id"] = customer_id
    else:
        obj["customer"] = customer_id
    obj.update(overrides)
    return event


def customer_event(
    customer_id: str, email: str, *, created: int, type_: str = "customer.updated"
) -> dict[str, Any]:
    event = from_fixture("customer.updated__stripe-ruby-mock.json", customer_id, created=created)
    event["type"] = type_
    event["data"]["object"].update({"email": email, "created": created - 86_400})
    return event


def subscription_event(
    customer_id: str,
    *,
    created: int,
    status: str = "active",
    sub_id: str = "sub_T1",
    unit_amount: int = 4900,
    interval: str = "month",
    quantity: int = 1,
    nickname: str = "Pro",
    type_: str = "customer.subscription.updated",
    previous_attributes: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A subscription event in the current (2025+) API shape: period ends on the items.

    `fields` replace top-level subscription fields (trial_end, cancel_at_period_end, ...).
    """
    period_end = created + 30 * 86_400
    return {
        "id": event_id(),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": type_,
        "data": {
            "object": {
                "id": sub_id,
                "object": "subscription",
                "customer": customer_id,
                "status": status,
                "currency": "usd",
                "created": created - 86_400,
                "cancel_at_period_end": False,
                "trial_end": None,
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "id": "si_T1",
                            "object": "subscription_item",
                            "quantity": quantity,
                            "current_period_start": created,
                            "current_period_end": period_end,
                            "price": {
                                "id": f"price_{nickname.lower()}_{interval}",
                                "object": "price",
                                "nickname": nickname,
                                "product": f"prod_{nickname.lower()}",
                                "unit_amount": unit_amount,
                                "currency": "usd",
                                "recurring": {"interval": interval, "interval_count": 1},
                            },
                        }
                    ],
                },
                **fields,
            },
            **({"previous_attributes": previous_attributes} if previous_attributes else {}),
        },
    }
