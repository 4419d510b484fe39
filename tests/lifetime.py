"""Years of one customer's Stripe events, month by month: what a long-lived
`customer-{cus_id}` workflow is fed (`tests/test_long_life.py`, `bench/long_life.py`).

A monthly Pro subscription (4900 cents a seat) from its first invoice on; every month the
upcoming-invoice notice, the renewal (the subscription's period moves on), and the
renewal invoice created, finalized, paid and its payment succeeded; a seat is added on
each anniversary. Invoices are in the current (clover) shape, whose paid ones the workflow
checks against Stripe's invoice payments (`invoice_payments` answers them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import corpus
from .events import customer_event, subscription_event

SEAT_CENTS = 4900
VERSION = "clover"
# A renewal invoice's events follow its period's start by this much, as Stripe's do.
INVOICE_DELAY = 3600
UPCOMING_NOTICE = 3 * 86_400


@dataclass
class Lifetime:
    customer_id: str
    months: int
    # The first period's start (epoch seconds).
    start: int
    # Events of each month, in the order Stripe sends them.
    by_month: list[list[dict[str, Any]]] = field(default_factory=list)
    # What Stripe's invoice payments list answers for the paid invoices.
    invoice_payments: list[dict[str, Any]] = field(default_factory=list)
    paid_cents: int = 0
    seats: int = 1

    @property
    def sub_id(self) -> str:
        return f"sub_{self.customer_id.removeprefix('cus_')}"

    def events(self) -> list[dict[str, Any]]:
        return [event for month in self.by_month for event in month]


def month_start(start: int, month: int) -> int:
    first = datetime.fromtimestamp(start, UTC)
    years, index = divmod(first.month - 1 + month, 12)
    return int(first.replace(year=first.year + years, month=index + 1).timestamp())


def lifetime(customer_id: str, months: int, start: int) -> Lifetime:
    """`months` months of a customer who signs up at `start` (day 1..28 of a month)."""
    life = Lifetime(customer_id, months, start)
    for month in range(months):
        life.by_month.append(_month(life, month))
    return life


def _month(life: Lifetime, month: int) -> list[dict[str, Any]]:
    begins, ends = month_start(life.start, month), month_start(life.start, month + 1)
    cus = life.customer_id
    if month and month % 12 == 0:
        life.seats += 1
    seats = life.seats
    invoice_id = f"in_{cus.removeprefix('cus_')}{month:03d}"
    events: list[dict[str, Any]] = []
    if month == 0:
        events.append(
            customer_event(
                cus, "long.life@example.com", created=begins - 60, type_="customer.created"
            )
        )
        events.append(_subscription(life, begins, ends, seats, "customer.subscription.created"))
        reason = "subscription_create"
    else:
        events.append(
            _invoice(life, "invoice.upcoming", begins - UPCOMING_NOTICE, None, begins, ends, seats)
        )
        events.append(_subscription(life, begins, ends, seats, "customer.subscription.updated"))
        reason = "subscription_cycle"
    at = begins + (0 if month == 0 else INVOICE_DELAY)
    for n, name in enumerate(
        ("invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded")
    ):
        events.append(
            _invoice(life, name, at + n, invoice_id, begins, ends, seats, billing_reason=reason)
        )
    life.paid_cents += SEAT_CENTS * seats
    life.invoice_payments.append(
        {
            "id": f"inpay_{invoice_id}",
            "object": "invoice_payment",
            "invoice": invoice_id,
            "status": "paid",
            "amount_paid": SEAT_CENTS * seats,
            "currency": "usd",
            "is_default": True,
            "payment": {"type": "payment_intent"},
        }
    )
    return events


def _subscription(life: Lifetime, begins: int, ends: int, seats: int, type_: str) -> dict[str, Any]:
    event = subscription_event(
        life.customer_id,
        created=begins,
        sub_id=life.sub_id,
        unit_amount=SEAT_CENTS,
        quantity=seats,
        type_=type_,
    )
    obj = event["data"]["object"]
    obj["created"] = life.start
    item = obj["items"]["data"][0]
    item["current_period_start"], item["current_period_end"] = begins, ends
    return event


def _invoice(
    life: Lifetime,
    name: str,
    created: int,
    invoice_id: str | None,
    begins: int,
    ends: int,
    seats: int,
    *,
    billing_reason: str = "upcoming",
) -> dict[str, Any]:
    amount = SEAT_CENTS * seats
    paid = name in ("invoice.paid", "invoice.payment_succeeded")
    status = {"invoice.created": "draft", "invoice.finalized": "open"}.get(
        name, "paid" if paid else "draft"
    )
    event = corpus.invoice_event(
        name,
        VERSION,
        life.customer_id,
        created=created,
        subscription=life.sub_id,
        id=invoice_id,
        status=status,
        billing_reason=billing_reason,
        amount_due=amount,
        amount_paid=amount if paid else 0,
        amount_remaining=0 if paid else amount,
        subtotal=amount,
        subtotal_excluding_tax=amount,
        total=amount,
        total_excluding_tax=amount,
        period_start=begins,
        period_end=begins,
    )
    obj = event["data"]["object"]
    obj["created"] = created
    lines = copy.deepcopy(obj["lines"])
    line = lines["data"][0]
    line.update(amount=amount, quantity=seats, invoice=invoice_id)
    line["period"] = {"start": begins, "end": ends}
    line["pricing"]["price_details"] = {"price": "price_pro_month", "product": "prod_pro"}
    line["pricing"]["unit_amount_decimal"] = str(SEAT_CENTS)
    line["parent"]["subscription_item_details"]["subscription"] = life.sub_id
    obj["lines"] = lines
    return event
