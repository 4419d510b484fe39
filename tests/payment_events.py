"""Stripe payment objects and events that name no customer (a Dispute names its charge),
in Stripe's documented layout: what the dispute tests and the event sequences post."""

from __future__ import annotations

import uuid
from typing import Any

T0 = 1_790_000_000
API_VERSION = "2025-09-30.clover"


def charge_object(charge_id: str, customer: str | None, **fields: Any) -> dict[str, Any]:
    """A Charge as `GET /v1/charges/{id}` answers it (the fields read here and a few more)."""
    return {
        "id": charge_id,
        "object": "charge",
        "amount": 4900,
        "amount_captured": 4900,
        "amount_refunded": 0,
        "created": T0 - 86_400,
        "currency": "usd",
        "customer": customer,
        "disputed": True,
        "livemode": False,
        "paid": True,
        "payment_intent": f"pi_{charge_id.removeprefix('ch_')}",
        "status": "succeeded",
        **fields,
    }


def dispute_event(
    charge_id: str,
    *,
    created: int,
    type_: str = "charge.dispute.created",
    account: str | None = None,
    status: str = "needs_response",
) -> dict[str, Any]:
    """A `charge.dispute.*` event in Stripe's documented Dispute layout: the dispute names
    its `charge` and `payment_intent`, never the customer."""
    suffix = uuid.uuid4().hex[:14]
    dispute = {
        "id": f"du_{suffix}",
        "object": "dispute",
        "amount": 4900,
        "balance_transactions": [],
        "charge": charge_id,
        "created": created,
        "currency": "usd",
        "enhanced_eligibility_types": [],
        "evidence": {"customer_email_address": None, "uncategorized_text": None},
        "evidence_details": {
            "due_by": created + 7 * 86_400,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": f"pi_{charge_id.removeprefix('ch_')}",
        "payment_method_details": {
            "card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"},
            "type": "card",
        },
        "reason": "fraudulent",
        "status": status,
    }
    event: dict[str, Any] = {
        "id": f"evt_{suffix}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": dispute},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    if account is not None:
        event["account"] = account
    return event
