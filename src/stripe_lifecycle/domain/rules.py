"""Which subscription and card lifecycles a Stripe event starts, re-times, ends or converts.

Pure and deterministic: the customer workflow calls `decide` for each event it applied,
with the subscription as it was before the event and the ledger as it is after the
batch, and carries out what comes back (starting children, signalling them, recording
conversions). The invoice lifecycles (dunning, payment action) are routed by the
customer workflow itself.

Stripe sends related events within a second of each other and in no guaranteed order
(`customer.subscription.updated` and `invoice.paid` of one renewal, say), so every rule
reads the state the ledger settled on, not the order events came in.
"""

# No `from __future__ import annotations`: these dataclasses are workflow values.

import calendar
from dataclasses import dataclass

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.domain.ledger import (
    MRR_STATUSES,
    CustomerLedger,
    LifecycleRef,
    PaymentMethodState,
)
from stripe_lifecycle.domain.ledger import SubscriptionState as Sub

TRIAL = "trial"
WINBACK = "winback"
SCHEDULED_CANCEL = "scheduled_cancel"
RENEWAL = "renewal"
CARD_EXPIRING = "card_expiring"
PLAN_CHANGE = "plan_change"
UPGRADE = "upgrade"

PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
DELETED = "customer.subscription.deleted"
# A subscription in one of these is over: nothing about it can be saved any more.
ENDED = frozenset({"canceled", "incomplete_expired"})
# A trial that ends in one of these did not turn into a paying subscription.
TRIAL_LAPSED = frozenset({"canceled", "incomplete_expired", "paused"})
TRIAL_UNPAID = frozenset({"past_due", "unpaid"})
# Seconds before a renewal date that its invoice may be dated (clocks, Stripe's batching).
RENEWAL_INVOICE_SLACK = 3600
# `previous_attributes` keys of a subscription update that changed what is bought.
PLAN_FIELDS = frozenset({"items", "plan", "quantity"})


@dataclass(frozen=True)
class Start:
    """Start a lifecycle instance (if an automation of the lifecycle matches)."""

    lifecycle: str
    workflow_id: str
    subject_id: str
    subscription_id: str | None
    # The date `before:` steps count back from (trial end, period end, card expiry).
    anchor: int | None = None
    # A scheduled cancellation can be undone and scheduled again: its id comes back.
    reusable: bool = False


@dataclass(frozen=True)
class Retime:
    """The anchor moved (a trial extended, a cancellation date changed)."""

    workflow_id: str
    anchor: int


@dataclass(frozen=True)
class End:
    workflow_id: str
    outcome: str


@dataclass(frozen=True)
class Convert:
    """A Stripe fact with money, credited to a lifecycle (instance, if there is one)."""

    kind: str
    lifecycle: str
    # The instance that earned it; None when no instance of the lifecycle ran (an upgrade
    # nobody campaigned for): still recorded, unattributed.
    workflow_id: str | None
    subscription_id: str | None
    mrr_delta_cents: int
    amount_cents: int
    currency: str | None
    invoice_id: str | None = None


Decision = Start | Retime | End | Convert


def trial_id(sub_id: str) -> str:
    return f"trial-{sub_id}"


def winback_id(customer_id: str, sub_id: str) -> str:
    return f"winback-{customer_id}-{sub_id}"


def scheduled_cancel_id(sub_id: str) -> str:
    return f"scheduled-cancel-{sub_id}"


def renewal_id(sub_id: str, period_end: int) -> str:
    return f"renewal-{sub_id}-{period_end}"


def card_expiring_id(card: PaymentMethodState) -> str:
    return f"card-expiring-{card.id}-{card.exp_year:04d}{card.exp_month:02d}"


def plan_change_id(sub_id: str, created: int) -> str:
    return f"plan-change-{sub_id}-{created}"


def card_expiry(card: PaymentMethodState) -> int | None:
    """The first second the card no longer works: cards are valid through their month."""
    if card.exp_month is None or card.exp_year is None or not 1 <= card.exp_month <= 12:
        return None
    year, month = (
        (card.exp_year + 1, 1) if card.exp_month == 12 else (card.exp_year, card.exp_month + 1)
    )
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


def subscription_of(event: BillingEvent) -> str | None:
    if event.subscription is not None:
        return event.subscription.id
    return event.invoice.subscription_id if event.invoice is not None else None


def decide(event: BillingEvent, before: Sub | None, ledger: CustomerLedger) -> list[Decision]:
    """What this event means for the subscription and card lifecycles of its customer."""
    sub = ledger.snapshot.subscriptions.get(subscription_of(event) or "")
    decisions: list[Decision] = []
    if sub is not None:
        decisions += _trial(event, sub, ledger)
        decisions += _scheduled_cancel(event, before, sub, ledger)
        decisions += _winback(event, before, sub, ledger)
        decisions += _renewal(event, sub, ledger)
        decisions += _plan_change(event, before, sub, ledger)
    decisions += _card_expiring(event, ledger)
    return decisions


def _latest(ledger: CustomerLedger, workflow_id: str) -> LifecycleRef | None:
    refs = [r for r in ledger.state.lifecycles if r.workflow_id == workflow_id]
    return refs[-1] if refs else None


def _running(ledger: CustomerLedger, lifecycle: str) -> list[LifecycleRef]:
    return [
        r for r in ledger.state.lifecycles if r.lifecycle == lifecycle and r.status == "running"
    ]


def _new(ledger: CustomerLedger, workflow_id: str) -> bool:
    return _latest(ledger, workflow_id) is None and not ledger.start_decided(workflow_id)


def _trial(event: BillingEvent, sub: Sub, ledger: CustomerLedger) -> list[Decision]:
    wid = trial_id(sub.id)
    ref = _latest(ledger, wid)
    invoice = event.invoice
    # Trials start with a $0 invoice; the first invoice with money in it is the conversion.
    if invoice is not None and event.type in PAID_EVENTS and invoice.amount_paid > 0:
        if ref is None or ref.converted:
            return []
        converted = Convert(
            "trial_converted",
            TRIAL,
            wid,
            sub.id,
            mrr_delta_cents=sub.mrr_cents,
            amount_cents=invoice.amount_paid,
            currency=invoice.currency or sub.currency,
            invoice_id=invoice.id,
        )
        return [converted, End(wid, "converted")] if ref.status == "running" else [converted]
    if event.subscription is None:
        return []
    if ref is None:
        starts = sub.status == "trialing" and (sub.trial_end or 0) > event.created
        return (
            [Start(TRIAL, wid, sub.id, sub.id, sub.trial_end)]
            if starts and _new(ledger, wid)
            else []
        )
    if ref.status != "running":
        return []
    if event.type == DELETED:
        return [End(wid, "subscription_deleted")]
    if sub.status in TRIAL_LAPSED:
        return [End(wid, "expired")]
    if sub.status in TRIAL_UNPAID:
        # The first charge failed: dunning takes it from here.
        return [End(wid, "payment_failed")]
    if sub.status == "trialing" and sub.trial_end is not None and sub.trial_end != ref.anchor:
        return [Retime(wid, sub.trial_end)]
    return []


def _scheduled_cancel(
    event: BillingEvent, before: Sub | None, sub: Sub, ledger: CustomerLedger
) -> list[Decision]:
    if event.subscription is None:
        return []
    wid = scheduled_cancel_id(sub.id)
    ref = _latest(ledger, wid)
    if ref is not None and ref.status == "running":
        if event.type == DELETED:
            # The period ended: win-back takes over.
            return [End(wid, "cancelled")]
        if not sub.cancel_scheduled and sub.status not in ENDED:
            saved = Convert(
                "saved",
                SCHEDULED_CANCEL,
                wid,
                sub.id,
                mrr_delta_cents=sub.mrr_cents,
                amount_cents=0,
                currency=sub.currency,
            )
            return [saved, End(wid, "saved")]
        if sub.ends_at is not None and sub.ends_at != ref.anchor:
            return [Retime(wid, sub.ends_at)]
        return []
    newly = before is None or not before.cancel_scheduled
    if sub.cancel_scheduled and newly and (sub.ends_at or 0) > event.created:
        return [Start(SCHEDULED_CANCEL, wid, sub.id, sub.id, sub.ends_at, reusable=True)]
    return []


def _winback(
    event: BillingEvent, before: Sub | None, sub: Sub, ledger: CustomerLedger
) -> list[Decision]:
    customer_id = ledger.snapshot.customer_id
    if event.type == DELETED:
        wid = winback_id(customer_id, sub.id)
        # Cancelling one of several subscriptions is not churn.
        if not ledger.has_live_subscription(besides=sub.id) and _new(ledger, wid):
            return [Start(WINBACK, wid, sub.id, sub.id)]
        return []
    if event.subscription is None:
        return []
    became_active = sub.status == "active" and (before is None or before.status != "active")
    came_back_in_trial = sub.status == "trialing" and before is None
    others = [
        r for r in ledger.state.lifecycles if r.lifecycle == WINBACK and r.subscription_id != sub.id
    ]
    if became_active:
        # A comeback through a new trial is credited once, to the trial, when it converts.
        pending = [r for r in others if not r.converted and r.status != "trial_started"]
        if not pending:
            return []
        latest = pending[-1]
        decisions: list[Decision] = [
            Convert(
                "reactivated",
                WINBACK,
                latest.workflow_id,
                sub.id,
                mrr_delta_cents=sub.mrr_cents,
                amount_cents=0,
                currency=sub.currency,
            )
        ]
        return decisions + [
            End(r.workflow_id, "reactivated") for r in others if r.status == "running"
        ]
    if came_back_in_trial:
        # Not revenue yet: the trial lifecycle takes over; a later payment converts it.
        return [End(r.workflow_id, "trial_started") for r in others if r.status == "running"]
    return []


def _renewal(event: BillingEvent, sub: Sub, ledger: CustomerLedger) -> list[Decision]:
    decisions: list[Decision] = []
    invoice = event.invoice
    cycle = invoice is not None and invoice.billing_reason == "subscription_cycle"
    for ref in _running(ledger, RENEWAL):
        if ref.subscription_id != sub.id:
            continue
        # Stripe bills the renewal when the period ends: an invoice of the cycle before
        # (its payment arriving after the new period began) is not this renewal's.
        this_cycle = cycle and event.created >= (ref.anchor or 0) - RENEWAL_INVOICE_SLACK
        outcome = None
        if event.type == DELETED:
            outcome = "subscription_deleted"
        elif this_cycle and event.type in PAID_EVENTS:
            outcome = "renewed"
        elif this_cycle and event.type == "invoice.payment_failed":
            # Dunning takes over the failed renewal invoice.
            outcome = "payment_failed"
        elif sub.cancel_scheduled:
            outcome = "cancel_scheduled"
        elif sub.paused or sub.status == "paused":
            outcome = "paused"
        elif (sub.current_period_end or 0) > (ref.anchor or 0):
            # The period rolled over: whatever the invoice events said, it renewed.
            outcome = "renewed"
        if outcome is not None:
            decisions.append(End(ref.workflow_id, outcome))
    period_end = sub.current_period_end
    renews = sub.status == "active" and not sub.cancel_scheduled and not sub.paused
    if renews and period_end is not None and period_end > event.created:
        wid = renewal_id(sub.id, period_end)
        latest = _latest(ledger, wid)
        # A cancellation undone (or a pause lifted) within the period: remind again.
        resumed = latest is not None and latest.status in ("cancel_scheduled", "paused")
        if resumed or _new(ledger, wid):
            decisions.append(Start(RENEWAL, wid, sub.id, sub.id, period_end, reusable=resumed))
    return decisions


def _plan_change(
    event: BillingEvent, before: Sub | None, sub: Sub, ledger: CustomerLedger
) -> list[Decision]:
    if event.type != "customer.subscription.updated" or before is None:
        return []
    if not PLAN_FIELDS & set(event.previous_attributes):
        return []
    # The change this event made: its own subscription against the one before it (the
    # ledger's state is the whole batch's; an event older than that changed nothing).
    now = event.subscription
    if now is None or event.created < before.version:
        return []
    # Only paying subscriptions move MRR; a trial changing plan is not revenue yet.
    if before.status not in MRR_STATUSES or now.status not in MRR_STATUSES:
        return []
    if before.currency != now.currency:
        return []
    delta = now.mrr_cents - before.mrr_cents
    if delta > 0:
        campaigns = _running(ledger, UPGRADE)
        credited = [
            r for r in ledger.state.lifecycles if r.lifecycle == UPGRADE and not r.converted
        ]
        expansion = Convert(
            "expansion",
            UPGRADE,
            credited[-1].workflow_id if credited else None,
            sub.id,
            mrr_delta_cents=delta,
            amount_cents=0,
            currency=sub.currency,
        )
        return [expansion, *(End(r.workflow_id, "upgraded") for r in campaigns)]
    if delta < 0:
        wid = plan_change_id(sub.id, event.created)
        return [Start(PLAN_CHANGE, wid, sub.id, sub.id)] if _new(ledger, wid) else []
    return []


def _card_expiring(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    card = ledger.billing_payment_method()
    live = ledger.has_live_subscription()
    decisions: list[Decision] = []
    for ref in _running(ledger, CARD_EXPIRING):
        watched = ledger.snapshot.payment_methods.get(ref.subject_id or "")
        # Replaced: detached, or another card is now the one billed. Not knowing which
        # card is billed (a second card, no default seen) replaces nothing.
        if watched is None or watched.detached or (card is not None and card.id != watched.id):
            decisions.append(End(ref.workflow_id, "replaced"))
        elif card_expiry(watched) != ref.anchor:
            # The card network sent new dates (payment_method.automatically_updated).
            decisions.append(End(ref.workflow_id, "card_updated"))
        elif not live:
            decisions.append(End(ref.workflow_id, "no_subscription"))
    expiry = card_expiry(card) if card is not None else None
    if card is not None and expiry is not None and live and expiry > event.created:
        wid = card_expiring_id(card)
        if _new(ledger, wid):
            decisions.append(Start(CARD_EXPIRING, wid, card.id, None, expiry))
    return decisions
