"""A replay corpus: a month of Stripe events for many customers, and the two ways of
delivering it that must end the same (issue 14, Faults).

`month(customers, seed)` writes, deterministically from its seed, a month (June 2026) of
one SaaS account's webhook events: trials that convert or lapse, sign-ups that pay at
once, renewals, failed renewals that recover or end in a cancellation, 3-D Secure
confirmations, cancellations at period end, upgrades and downgrades. Every
object is built on the project's own corpus payloads (`tests/corpus.py`), in each
customer's API version: most in the current shapes (clover: periods on items, invoices
naming their subscription under `parent`, discounts unexpanded), some in basil's and some
in the legacy 2024-06-20 shapes.

Delivery goes by `slots` (a day of Stripe time each): `in_order` posts each slot's events
in `created` order, one customer's one after another; `disordered` shuffles each slot,
posts every event three times, and holds a share of them back for one or two slots, so
they arrive after later events. Stripe itself guarantees no order, retries for days, and
sends an event more than once; what a customer's day settles on must not depend on it.

The month is placed in the past so that no reminder counted back from a date (a trial's
end, a period's end) falls due while it is replayed: every lifecycle sends its immediate
steps, and skips those whose moment passed, the same way in both deliveries.
"""

from __future__ import annotations

import calendar
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from . import corpus

DAY = 86_400
MONTH_DAYS = 30
# 2026-06-01T00:00:00Z. Customers signed up in it are over 90 days old by the time it
# can be replayed, so segments of tenure read the same whichever day that is.
MONTH_START = calendar.timegm((2026, 6, 1, 0, 0, 0, 0, 0, 0))
MONTH_END = MONTH_START + MONTH_DAYS * DAY
# Share of customers per API version family (the rest legacy).
VERSION_SHARES = (("clover", 0.55), ("basil", 0.25))


@dataclass(frozen=True)
class Plan:
    nickname: str
    unit_amount: int
    interval: str = "month"

    @property
    def price_id(self) -> str:
        return f"price_Rpl{self.nickname}{self.interval.capitalize()}"

    @property
    def product_id(self) -> str:
        return f"prod_Rpl{self.nickname}"

    def period(self, start: int) -> int:
        """The end of a billing period beginning at `start`."""
        return start + (365 if self.interval == "year" else 30) * DAY


STARTER = Plan("Starter", 1_900)
PRO = Plan("Pro", 4_900)
TEAM = Plan("Team", 9_900)
PRO_ANNUAL = Plan("Pro", 49_000, "year")
MONTHLY = (STARTER, PRO, TEAM)

# The corpus event whose envelope (`api_version`, `request`, ...) an event type takes, where
# the corpus has that type under a variant's name only.
ENVELOPES = {"customer.subscription.updated": "customer.subscription.updated.renewal"}

# What a customer does this month, and how many customers in a hundred do it.
STORIES: tuple[tuple[str, int], ...] = (
    ("trial_converts", 16),
    ("trial_lapses", 6),
    ("signs_up_paid", 8),
    ("renews", 26),
    ("renewal_fails_recovers", 10),
    ("renewal_fails_cancelled", 5),
    ("payment_action", 3),
    # No cancellation undone: the instance a scheduled cancellation starts is anchored to
    # the period's end, which a month replayed from the past has passed, so it ends at
    # once, racing the undo (a save in one delivery, none in the other). Saves are tested
    # in real time (tests/test_lifecycles_e2e.py).
    ("cancels", 8),
    ("upgrades", 8),
    ("downgrades", 4),
    ("annual_renews", 3),
)


@dataclass
class Sub:
    """A subscription as the generator changes it; rendered into each event."""

    id: str
    plan: Plan
    quantity: int
    status: str
    created: int
    period_start: int
    period_end: int
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    reason: str | None = None
    item_id: str = ""

    @property
    def amount(self) -> int:
        return self.plan.unit_amount * self.quantity


@dataclass
class CustomerMonth:
    """One customer's events, the story they tell and the API version they are in."""

    customer_id: str
    story: str
    version: str
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Corpus:
    customers: list[CustomerMonth]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of the month, in `created` order."""
        return sorted(
            (e for c in self.customers for e in c.events), key=lambda e: (e["created"], e["id"])
        )

    def counts(self) -> dict[str, Counter[str]]:
        """Customers per story and per version, events per type."""
        return {
            "stories": Counter(c.story for c in self.customers),
            "versions": Counter(c.version for c in self.customers),
            "types": Counter(e["type"] for c in self.customers for e in c.events),
        }


@cache
def _template(name: str, version: str) -> dict[str, Any]:
    """A corpus event, read once: never to be changed (`_object` and `_copy` copy it)."""
    return corpus.load(name, version)


def _object(name: str, version: str) -> dict[str, Any]:
    """A copy of a corpus event's object, the caller's to change."""
    obj: dict[str, Any] = _copy(_template(name, version)["data"]["object"])
    return obj


def _copy(value: Any) -> Any:
    # JSON data only: a round trip through the encoder copies it several times faster than
    # `copy.deepcopy`, which a thousand customers' month otherwise spends seconds in.
    return json.loads(json.dumps(value))


class _Writer:
    """Writes one customer's events, each a second or more after the one before, in the
    customer's API version."""

    def __init__(self, index: int, version: str, rng: random.Random) -> None:
        self.index = index
        self.version = version
        self.rng = rng
        self.customer_id = f"cus_Rpl{index:05d}"
        self.email = f"replay{index:05d}@example.com"
        self.name = f"Replay Customer {index}"
        self.events: list[dict[str, Any]] = []
        self.clock = 0
        self._invoices = 0
        self._subs = 0

    # --- time ---------------------------------------------------------------------------

    def at(self, when: int) -> int:
        """`when`, or the second after the last event if that is later: a customer's
        events never share a second (Stripe's order within one second is arrival order,
        which is exactly what this corpus must not depend on)."""
        self.clock = max(when, self.clock + 1)
        return self.clock

    def day(self, day: int) -> int:
        """A moment of day `day` of the month, in business hours."""
        return MONTH_START + day * DAY + self.rng.randrange(8 * 3600, 18 * 3600)

    # --- events -------------------------------------------------------------------------

    def emit(
        self,
        name: str,
        obj: dict[str, Any],
        when: int,
        previous: dict[str, Any] | None = None,
    ) -> None:
        """The corpus event `name` in this customer's version, carrying `obj`; none
        after the month's end (the story goes on next month)."""
        created = self.at(when)
        if created >= MONTH_END:
            return
        envelope = _template(ENVELOPES.get(name, name), self.version)
        assert envelope["type"] == name
        # A shallow copy: the envelope's one nested value (`request`) is never changed.
        event = {key: value for key, value in envelope.items() if key != "data"}
        event["id"] = f"evt_Rpl{self.index:05d}{len(self.events):03d}"
        event["created"] = created
        event["livemode"] = False
        event["data"] = {"object": obj}
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        event.pop("account", None)
        self.events.append(event)

    def customer(
        self,
        name: str,
        when: int,
        payment_method: str | None = None,
        *,
        created: int | None = None,
        previous: dict[str, Any] | None = None,
    ) -> None:
        obj = _object("customer.created", self.version)
        obj.update(
            id=self.customer_id,
            email=self.email,
            name=self.name,
            created=when if created is None else created,
            default_source=None,
            metadata={},
        )
        obj["invoice_settings"]["default_payment_method"] = payment_method
        if "discount" in obj:
            obj["discount"] = None
        self.emit(name, obj, when, previous)

    def payment_method(self, when: int, pm_id: str | None = None) -> str:
        """A card attached (`pm_id`, or a new one); its id."""
        pm_id = pm_id or f"pm_Rpl{self.index:05d}{self.rng.randrange(100):02d}"
        obj = _object("payment_method.attached", self.version)
        obj.update(id=pm_id, customer=self.customer_id, created=when)
        obj["card"].update(exp_month=self.rng.randrange(1, 13), exp_year=2031)
        obj["billing_details"].update(email=self.email, name=self.name)
        self.emit("payment_method.attached", obj, when)
        return pm_id

    def new_sub(self, plan: Plan, quantity: int, status: str, created: int) -> Sub:
        self._subs += 1
        sub_id = f"sub_Rpl{self.index:05d}{self._subs}"
        return Sub(
            id=sub_id,
            plan=plan,
            quantity=quantity,
            status=status,
            created=created,
            period_start=created,
            period_end=plan.period(created),
            item_id=f"si_Rpl{self.index:05d}{self._subs}",
        )

    def subscription(
        self, name: str, sub: Sub, when: int, previous: dict[str, Any] | None = None
    ) -> None:
        self.emit(name, self._subscription_object(sub), when, previous)

    def previous_items(self, sub: Sub) -> dict[str, Any]:
        """What `previous_attributes` says of a subscription whose items or period changed,
        in this version: the items since basil, the period (and plan) before."""
        was = self._subscription_object(sub)
        if self.version == "legacy":
            return {
                "current_period_start": was["current_period_start"],
                "current_period_end": was["current_period_end"],
                "plan": was["plan"],
                "items": was["items"],
            }
        return {"items": was["items"]}

    def invoice(
        self,
        name: str,
        sub: Sub,
        when: int,
        *,
        reason: str,
        paid: bool,
        attempt: int = 1,
        next_attempt: int | None = None,
        invoice_id: str | None = None,
    ) -> str:
        """An invoice event for `sub`'s current period; the invoice's id (a new one unless
        `invoice_id` names it)."""
        if invoice_id is None:
            self._invoices += 1
            invoice_id = f"in_Rpl{self.index:05d}{self._invoices:02d}"
        event_name = (
            "invoice.paid" if name in ("invoice.paid", "invoice.payment_succeeded") else name
        )
        template = "invoice.payment_failed" if event_name != "invoice.paid" else "invoice.paid"
        obj = _object(template, self.version)
        amount = sub.amount
        obj.update(
            id=invoice_id,
            customer=self.customer_id,
            customer_email=self.email,
            customer_name=self.name,
            created=min(when, sub.period_start) if reason != "subscription_update" else when,
            billing_reason=reason,
            status="paid" if paid else "open",
            amount_due=amount,
            amount_paid=amount if paid else 0,
            amount_remaining=0 if paid else amount,
            subtotal=amount,
            total=amount,
            attempt_count=attempt,
            attempted=True,
            next_payment_attempt=None if paid else next_attempt,
            number=f"RPL{self.index:05d}-{invoice_id[-2:]}",
            period_start=sub.period_start,
            period_end=sub.period_start,
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_Rpl/test_{invoice_id}",
        )
        obj["status_transitions"].update(
            finalized_at=obj["created"], paid_at=when if paid else None
        )
        for key in ("subtotal_excluding_tax", "total_excluding_tax"):
            if key in obj:
                obj[key] = amount
        if self.version == "legacy":
            obj.update(
                subscription=sub.id,
                paid=paid,
                paid_out_of_band=False,
                charge=f"ch_Rpl{invoice_id[6:]}" if paid else None,
            )
        else:
            obj["parent"] = {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": {},
                    "subscription": sub.id,
                    "subscription_proration_date": None,
                },
            }
        line = obj["lines"]["data"][0]
        obj["lines"]["data"] = [line]
        line.update(
            id=f"il_Rpl{invoice_id[6:]}",
            amount=amount,
            invoice=invoice_id,
            quantity=sub.quantity,
            period={"start": sub.period_start, "end": sub.period_end},
            description=f"{sub.quantity} × {sub.plan.nickname}",
        )
        if "amount_excluding_tax" in line:
            line["amount_excluding_tax"] = amount
        if self.version == "legacy":
            line["price"] = self._price(sub.plan, line["price"])
            line["plan"] = self._legacy_plan(sub.plan, line["plan"])
            line["subscription"] = sub.id
            line["subscription_item"] = sub.item_id
        else:
            line["parent"]["subscription_item_details"].update(
                subscription=sub.id, subscription_item=sub.item_id
            )
            line["pricing"]["price_details"] = {
                "price": sub.plan.price_id,
                "product": sub.plan.product_id,
            }
            line["pricing"]["unit_amount_decimal"] = str(sub.plan.unit_amount)
        self.emit(name, obj, when)
        return invoice_id

    def charge(self, invoice_id: str, amount: int, when: int) -> None:
        obj = _object("charge.succeeded", self.version)
        obj.update(
            id=f"ch_Rpl{invoice_id[6:]}",
            customer=self.customer_id,
            amount=amount,
            amount_captured=amount,
            amount_refunded=0,
            created=when,
            payment_intent=f"pi_Rpl{invoice_id[6:]}",
        )
        if "invoice" in obj:
            obj["invoice"] = invoice_id
        self.emit("charge.succeeded", obj, when)

    def paid(self, sub: Sub, when: int, *, reason: str, invoice_id: str | None = None) -> str:
        """An invoice paid: `invoice.paid`, `invoice.payment_succeeded` and its charge."""
        invoice_id = self.invoice(
            "invoice.paid", sub, when, reason=reason, paid=True, invoice_id=invoice_id
        )
        self.invoice(
            "invoice.payment_succeeded",
            sub,
            when + 1,
            reason=reason,
            paid=True,
            invoice_id=invoice_id,
        )
        self.charge(invoice_id, sub.amount, when + 2)
        return invoice_id

    # --- objects ------------------------------------------------------------------------

    def _subscription_object(self, sub: Sub) -> dict[str, Any]:
        obj = _object("customer.subscription.created", self.version)
        obj.update(
            id=sub.id,
            customer=self.customer_id,
            status=sub.status,
            created=sub.created,
            start_date=sub.created,
            billing_cycle_anchor=sub.period_start,
            trial_start=sub.trial_start,
            trial_end=sub.trial_end,
            cancel_at_period_end=sub.cancel_at_period_end,
            cancel_at=sub.period_end if sub.cancel_at_period_end else None,
            canceled_at=sub.canceled_at,
            ended_at=sub.ended_at,
            cancellation_details={"comment": None, "feedback": None, "reason": sub.reason},
            latest_invoice=None,
            default_payment_method=None,
            metadata={},
        )
        item = obj["items"]["data"][0]
        obj["items"]["data"] = [item]
        obj["items"]["url"] = f"/v1/subscription_items?subscription={sub.id}"
        item.update(id=sub.item_id, subscription=sub.id, quantity=sub.quantity, created=sub.created)
        item["price"] = self._price(sub.plan, item["price"])
        if self.version == "legacy":
            item["plan"] = self._legacy_plan(sub.plan, item["plan"])
            obj.update(
                current_period_start=sub.period_start,
                current_period_end=sub.period_end,
                plan=item["plan"],
                quantity=sub.quantity,
                discount=None,
            )
        else:
            item.update(current_period_start=sub.period_start, current_period_end=sub.period_end)
        return obj

    def _price(self, plan: Plan, template: dict[str, Any]) -> dict[str, Any]:
        price: dict[str, Any] = _copy(template)
        price.update(
            id=plan.price_id,
            nickname=plan.nickname,
            product=plan.product_id,
            unit_amount=plan.unit_amount,
            unit_amount_decimal=str(plan.unit_amount),
            lookup_key=None,
        )
        price["recurring"].update(interval=plan.interval, interval_count=1)
        return price

    def _legacy_plan(self, plan: Plan, template: dict[str, Any]) -> dict[str, Any]:
        legacy: dict[str, Any] = _copy(template)
        legacy.update(
            id=plan.price_id,
            nickname=plan.nickname,
            product=plan.product_id,
            amount=plan.unit_amount,
            amount_decimal=str(plan.unit_amount),
            interval=plan.interval,
            interval_count=1,
        )
        return legacy


# --- stories ------------------------------------------------------------------------------


def _signs_up(w: _Writer, day: int, plan: Plan, quantity: int, *, trial_days: int) -> Sub:
    """customer.created, a card (unless on a trial without one), the subscription."""
    joined = w.day(day)
    trial = trial_days > 0
    pm_id = None if trial else f"pm_Rpl{w.index:05d}01"
    w.customer("customer.created", joined, pm_id)
    if pm_id is not None:
        w.payment_method(joined + 20, pm_id)
    sub = w.new_sub(plan, quantity, "trialing" if trial else "active", w.at(joined + 40))
    if trial:
        sub.trial_start = sub.created
        sub.trial_end = sub.created + trial_days * DAY
        sub.period_end = sub.trial_end
    w.subscription("customer.subscription.created", sub, sub.created)
    return sub


def _existing(w: _Writer, plan: Plan, quantity: int, renewal_day: int) -> Sub:
    """A customer from before the month, whose period ends on `renewal_day` (4 or later);
    the month opens with a `customer.updated` (their details changed) at least three days
    before anything else."""
    period_end = MONTH_START + renewal_day * DAY + w.rng.randrange(3600, 20 * 3600)
    period_start = period_end - (365 if plan.interval == "year" else 30) * DAY
    signed_up = period_start - w.rng.randrange(1, 12) * 30 * DAY
    sub = w.new_sub(plan, quantity, "active", signed_up)
    sub.period_start, sub.period_end = period_start, period_end
    w.customer(
        "customer.updated",
        w.day(w.rng.randrange(0, renewal_day - 3)),
        created=signed_up,
        previous={"name": None},
    )
    return sub


def _renew(w: _Writer, sub: Sub) -> None:
    """The period rolls over: `customer.subscription.updated` naming the old period."""
    previous = w.previous_items(sub)
    sub.period_start = sub.period_end
    sub.period_end = sub.plan.period(sub.period_start)
    w.subscription("customer.subscription.updated", sub, sub.period_start, previous)


def _status(w: _Writer, sub: Sub, status: str, when: int) -> None:
    was = sub.status
    sub.status = status
    w.subscription("customer.subscription.updated", sub, when, {"status": was})


def trial_converts(w: _Writer) -> None:
    sub = _signs_up(w, w.rng.randrange(0, 18), w.rng.choice(MONTHLY), 1, trial_days=14)
    assert sub.trial_end is not None
    w.subscription("customer.subscription.trial_will_end", sub, sub.trial_end - 3 * DAY)
    w.payment_method(sub.trial_end - w.rng.randrange(1, 3) * DAY)
    ends = sub.trial_end
    sub.status, sub.period_start, sub.period_end = "active", ends, sub.plan.period(ends)
    w.subscription(
        "customer.subscription.updated",
        sub,
        ends,
        {"status": "trialing", **w.previous_items(sub)},
    )
    w.paid(sub, ends + 3600, reason="subscription_cycle")


def trial_lapses(w: _Writer) -> None:
    sub = _signs_up(w, w.rng.randrange(0, 18), w.rng.choice(MONTHLY), 1, trial_days=14)
    assert sub.trial_end is not None
    w.subscription("customer.subscription.trial_will_end", sub, sub.trial_end - 3 * DAY)
    sub.status, sub.ended_at, sub.canceled_at = "canceled", sub.trial_end, sub.trial_end
    sub.reason = "cancellation_requested"
    w.subscription("customer.subscription.deleted", sub, sub.trial_end)


def signs_up_paid(w: _Writer) -> None:
    plan = w.rng.choice(MONTHLY)
    sub = _signs_up(w, w.rng.randrange(0, 28), plan, w.rng.randrange(1, 4), trial_days=0)
    w.paid(sub, sub.created + 5, reason="subscription_create")


def renews(w: _Writer) -> None:
    sub = _existing(w, w.rng.choice(MONTHLY), w.rng.randrange(1, 4), w.rng.randrange(4, 30))
    _renew(w, sub)
    w.paid(sub, sub.period_start + 3600, reason="subscription_cycle")


def annual_renews(w: _Writer) -> None:
    sub = _existing(w, PRO_ANNUAL, 1, w.rng.randrange(4, 30))
    _renew(w, sub)
    w.paid(sub, sub.period_start + 3600, reason="subscription_cycle")


def _failed_renewal(w: _Writer, renewal_day: int) -> tuple[Sub, str]:
    sub = _existing(w, w.rng.choice(MONTHLY), 1, renewal_day)
    _renew(w, sub)
    when = sub.period_start + 3600
    invoice_id = w.invoice(
        "invoice.payment_failed",
        sub,
        when,
        reason="subscription_cycle",
        paid=False,
        next_attempt=when + 3 * DAY,
    )
    _status(w, sub, "past_due", when + 2)
    return sub, invoice_id


def renewal_fails_recovers(w: _Writer) -> None:
    sub, invoice_id = _failed_renewal(w, w.rng.randrange(4, 24))
    back = sub.period_start + w.rng.randrange(3, 7) * DAY
    pm_id = w.payment_method(back)
    w.customer("customer.updated", back + 30, pm_id)
    w.paid(sub, back + 120, reason="subscription_cycle", invoice_id=invoice_id)
    _status(w, sub, "active", back + 125)


def renewal_fails_cancelled(w: _Writer) -> None:
    sub, invoice_id = _failed_renewal(w, w.rng.randrange(4, 20))
    for attempt, day in ((2, 3), (3, 5), (4, 7)):
        when = sub.period_start + day * DAY + 3600
        w.invoice(
            "invoice.payment_failed",
            sub,
            when,
            reason="subscription_cycle",
            paid=False,
            attempt=attempt,
            next_attempt=None if attempt == 4 else sub.period_start + (day + 2) * DAY,
            invoice_id=invoice_id,
        )
    ended = sub.period_start + 7 * DAY + 7200
    sub.status, sub.ended_at, sub.canceled_at, sub.reason = (
        "canceled",
        ended,
        ended,
        "payment_failed",
    )
    w.subscription("customer.subscription.deleted", sub, ended)


def payment_action(w: _Writer) -> None:
    sub = _existing(w, w.rng.choice(MONTHLY), 1, w.rng.randrange(4, 26))
    _renew(w, sub)
    when = sub.period_start + 3600
    invoice_id = w.invoice(
        "invoice.payment_action_required",
        sub,
        when,
        reason="subscription_cycle",
        paid=False,
        next_attempt=None,
    )
    w.paid(
        sub, when + w.rng.randrange(3, 5) * DAY, reason="subscription_cycle", invoice_id=invoice_id
    )


def cancels(w: _Writer) -> None:
    """A cancellation at period end, asked for at least three days before it."""
    renewal_day = w.rng.randrange(4, 30)
    sub = _existing(w, w.rng.choice(MONTHLY), 1, renewal_day)
    asked = w.day(w.rng.randrange(0, renewal_day - 2))
    sub.cancel_at_period_end, sub.canceled_at = True, asked
    sub.reason = "cancellation_requested"
    w.subscription(
        "customer.subscription.updated",
        sub,
        asked,
        {"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None},
    )
    sub.status, sub.ended_at = "canceled", sub.period_end
    w.subscription("customer.subscription.deleted", sub, sub.period_end)


def _change_plan(w: _Writer, start: Plan, to: Plan, quantity: tuple[int, int]) -> None:
    """A renewal on the old plan, then the change three to ten days later."""
    renewal_day = w.rng.randrange(4, 17)
    sub = _existing(w, start, quantity[0], renewal_day)
    _renew(w, sub)
    w.paid(sub, sub.period_start + 3600, reason="subscription_cycle")
    when = w.day(renewal_day + w.rng.randrange(3, 11))
    previous = w.previous_items(sub)
    sub.plan, sub.quantity = to, quantity[1]
    w.subscription("customer.subscription.updated", sub, when, previous)
    if to.unit_amount * quantity[1] > start.unit_amount * quantity[0]:
        w.paid(sub, when + 60, reason="subscription_update")


def upgrades(w: _Writer) -> None:
    if w.rng.random() < 0.5:
        _change_plan(w, STARTER, PRO, (1, 1))
    else:
        seats = w.rng.randrange(1, 4)
        _change_plan(w, TEAM, TEAM, (seats, seats + w.rng.randrange(1, 4)))


def downgrades(w: _Writer) -> None:
    _change_plan(w, w.rng.choice((PRO, TEAM)), STARTER, (1, 1))


WRITERS: dict[str, Callable[[_Writer], None]] = {
    "trial_converts": trial_converts,
    "trial_lapses": trial_lapses,
    "signs_up_paid": signs_up_paid,
    "renews": renews,
    "renewal_fails_recovers": renewal_fails_recovers,
    "renewal_fails_cancelled": renewal_fails_cancelled,
    "payment_action": payment_action,
    "cancels": cancels,
    "upgrades": upgrades,
    "downgrades": downgrades,
    "annual_renews": annual_renews,
}


def month(customers: int, seed: int = 14) -> Corpus:
    """`customers` customers' month, the same for the same seed. Stories go round in
    proportion to their weights, so that a slice of forty customers tells every one;
    the seed draws everything else (days, plans, versions, amounts of time)."""
    stories = _story_order()
    written = []
    for index in range(customers):
        rng = random.Random(f"replay-corpus:{seed}:{index}")
        story = stories[index % len(stories)]
        draw = rng.random()
        version = next((v for v, share in _cumulative(VERSION_SHARES) if draw < share), "legacy")
        writer = _Writer(index, version, rng)
        WRITERS[story](writer)
        written.append(CustomerMonth(writer.customer_id, story, version, writer.events))
    return Corpus(written)


def _story_order() -> list[str]:
    """One round of stories, each as often as its weight, spread evenly (smooth weighted
    round robin)."""
    total = sum(weight for _, weight in STORIES)
    credit = dict.fromkeys(WRITERS, 0)
    order = []
    for _ in range(total):
        for name, weight in STORIES:
            credit[name] += weight
        pick = max(credit, key=lambda name: credit[name])
        credit[pick] -= total
        order.append(pick)
    return order


def _cumulative(shares: tuple[tuple[str, float], ...]) -> list[tuple[str, float]]:
    total = 0.0
    out = []
    for version, share in shares:
        total += share
        out.append((version, total))
    return out


# --- delivery -----------------------------------------------------------------------------


def slot_of(event: dict[str, Any]) -> int:
    """The day of the month the event happened on."""
    return (int(event["created"]) - MONTH_START) // DAY


def in_order(corpus_: Corpus) -> list[list[list[dict[str, Any]]]]:
    """Per slot, per customer, the customer's events of that day in `created` order."""
    slots: list[dict[str, list[dict[str, Any]]]] = [{} for _ in range(MONTH_DAYS)]
    for event in corpus_.events:
        customer = event["data"]["object"].get("customer") or event["data"]["object"]["id"]
        slots[slot_of(event)].setdefault(customer, []).append(event)
    return [list(by_customer.values()) for by_customer in slots]


@dataclass(frozen=True)
class Disorder:
    copies: int = 3
    # Share of events held back, and for up to how many slots (days).
    delayed_share: float = 0.15
    max_delay: int = 2


def disordered(
    corpus_: Corpus, seed: int = 14, disorder: Disorder = Disorder()
) -> tuple[list[list[dict[str, Any]]], int]:
    """Per slot, the deliveries made in it, shuffled: every event `copies` times, a share
    of events (all their copies) held back one to `max_delay` slots (past the month's
    last slot, into that one). Also how many events were held back."""
    rng = random.Random(f"replay-delivery:{seed}")
    slots: list[list[dict[str, Any]]] = [[] for _ in range(MONTH_DAYS)]
    delayed = 0
    for event in corpus_.events:
        slot = slot_of(event)
        if rng.random() < disorder.delayed_share:
            # Stripe's deliveries of it failed until a retry a day or two later.
            slot = min(MONTH_DAYS - 1, slot + rng.randrange(1, disorder.max_delay + 1))
            delayed += 1
        slots[slot] += [event] * disorder.copies
    for deliveries in slots:
        rng.shuffle(deliveries)
    return slots, delayed
