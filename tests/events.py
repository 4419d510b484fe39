"""Stripe events for tests, addressed to a test's own customer.

Each test gets a unique customer id (and so a unique `customer-{id}` workflow). Customer
events come from the corpus (`tests/corpus.py`) in the current API shape; subscription
events are built here, so a test can set every field it depends on.
"""

from __future__ import annotations

import uuid
from typing import Any

from . import corpus


def unique_customer_id() -> str:
    return f"cus_T{uuid.uuid4().hex[:14]}"


def customer_event(
    customer_id: str, email: str, *, created: int, type_: str = "customer.updated"
) -> dict[str, Any]:
    """`customer.created` or `customer.updated` (`type_`) of Ada in the corpus, whose card
    is the legacy `default_source`, with the test's customer id and email."""
    event = corpus.event(type_, "clover", customer_id, created=created, email=email)
    event["data"]["object"]["created"] = created - 86_400
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
        "id": corpus.event_id(),
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
