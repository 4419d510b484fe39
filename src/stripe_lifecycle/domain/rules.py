"""What each Stripe event means for the customer's lifecycles: which it starts, re-times,
refreshes, ends or converts; and the bookkeeping of carrying that out.

Pure and deterministic. The customer workflow applies a batch of events to its ledger
(`apply_batch`), calls `decide` for each event it applied, with the subscription as it
was before the event and the ledger as it is after the batch, and carries out what comes
back (starting children, signalling them, recording conversions); `begin` and `started`
keep the ledger's record of its lifecycles, for the workflow and the table tests alike.

Stripe sends related events within a second of each other and in no guaranteed order
(`customer.subscription.updated` and `invoice.paid` of one renewal, say), so every rule
reads the state the ledger settled on, not the order events came in.
"""

# No `from __future__ import annotations`: these dataclasses are workflow values.

import calendar
from dataclasses import dataclass, replace

from stripe_lifecycle.domain import ids, mrr
from stripe_lifecycle.domain.automations import Automation
from stripe_lifecycle.domain.conversions import (
    EXPANSION,
    INVOICE_PAID,
    QUOTE_ACCEPTED,
    REACTIVATED,
    RECOVERED,
    SAVED,
    TRIAL_CONVERTED,
)
from stripe_lifecycle.domain.events import BillingEvent, InvoiceInfo, SubscriptionInfo
from stripe_lifecycle.domain.ledger import (
    ENDED,
    MRR_STATUSES,
    CampaignRecord,
    CustomerLedger,
    LifecycleRef,
    PaymentMethodState,
    primary_subscription,
)
from stripe_lifecycle.domain.ledger import SubscriptionState as Sub
from stripe_lifecycle.domain.lifecycles import INVOICE_LIFECYCLES, Lifecycle

PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
# What a sync started with `--start-lifecycles` starts for situations in progress: running
# trials, scheduled cancellations and open failed invoices. Renewals, card expiries and
# win-backs begin anew from later events; a cancellation of long ago is not a win-back.
BACKFILL_STARTS = frozenset({Lifecycle.TRIAL, Lifecycle.SCHEDULED_CANCEL, Lifecycle.DUNNING})
UPCOMING = "invoice.upcoming"
DELETED = "customer.subscription.deleted"
# A trial that ends in one of these did not turn into a paying subscription.
TRIAL_LAPSED = frozenset({"canceled", "incomplete_expired", "paused"})
TRIAL_UNPAID = frozenset({"past_due", "unpaid"})
# Seconds before a renewal date that its invoice may be dated (clocks, Stripe's batching).
RENEWAL_INVOICE_SLACK = 3600
# `previous_attributes` keys of a subscription update that may have changed what is bought
# (a renewal lists `items` too, since basil: their period moved).
PLAN_FIELDS = frozenset({"items", "plan", "quantity", "discount", "discounts"})
LEGACY_PLAN_FIELDS = frozenset({"items", "plan", "quantity"})

RUNNING = "running"
# An upgrade campaign whose customer left the segment that started it.
LEFT_SEGMENT = "left_segment"
CUSTOMER_DELETED = "customer_deleted"
# The event that starts an invoice lifecycle; its repeats refresh the invoice (attempt
# count, next retry) for the copy.
INVOICE_TRIGGERS = {
    Lifecycle.DUNNING: "invoice.payment_failed",
    Lifecycle.PAYMENT_ACTION: "invoice.payment_action_required",
}
# An invoice the customer pays by hand (`send_invoice`) is never charged, so it never
# fails: its dunning starts when it is overdue.
OVERDUE = "invoice.overdue"
SEND_INVOICE = "send_invoice"
# With Stripe's automations, a later retry's date arrives on `invoice.updated`.
INVOICE_UPDATED = "invoice.updated"
FINALIZED = "invoice.finalized"
# The first invoice of a subscription: the customer is usually still at checkout, and
# Stripe voids it (`incomplete_expired`) if it is not paid within about a day.
SUBSCRIPTION_CREATE = "subscription_create"
AT_CHECKOUT = frozenset({"incomplete", "incomplete_expired"})
PAID_OUT_OF_BAND = "paid_out_of_band"
OUT_OF_BAND_REASON = "paid out of band: marked paid in Stripe without a charge"
INVOICE_ENDINGS = {
    "invoice.paid": RECOVERED,
    "invoice.payment_succeeded": RECOVERED,
    "invoice.voided": "voided",
    "invoice.marked_uncollectible": "uncollectible",
}
# A failure of an invoice awaiting 3-D Secure confirmation: dunning takes over.
PAYMENT_ACTION_ENDINGS = {**INVOICE_ENDINGS, "invoice.payment_failed": "payment_failed"}


@dataclass(frozen=True)
class Start:
    """Start a lifecycle instance (if an automation of the lifecycle matches)."""

    lifecycle: Lifecycle
    workflow_id: str
    subject_id: str
    subscription_id: str | None
    # The date `before:` steps count back from (trial end, period end, card expiry).
    anchor: int | None = None
    # A scheduled cancellation can be undone and scheduled again: its id comes back.
    reusable: bool = False
    # The invoice an invoice lifecycle is about.
    invoice: InvoiceInfo | None = None
    # Started by a sync for a situation that began before it (a trial half over): when it
    # began, which its `after:` steps count from; steps already due are skipped.
    since: int | None = None
    # An upgrade campaign: the segment whose entry started it, whether leaving it ends it.
    segment: str | None = None
    exit_on_leave: bool = False
    # An `event` sequence: the Stripe event type it is for (its automation, chosen by the
    # customer workflow, names its id).
    trigger_event: str | None = None


@dataclass(frozen=True)
class Retime:
    """The anchor moved (a trial extended, a cancellation date changed)."""

    workflow_id: str
    anchor: int


@dataclass(frozen=True)
class Refresh:
    """Fresher template data for a running instance (an invoice's next retry)."""

    workflow_id: str
    invoice: InvoiceInfo | None = None


@dataclass(frozen=True)
class End:
    workflow_id: str
    outcome: str


@dataclass(frozen=True)
class Convert:
    """A Stripe fact with money, credited to a lifecycle (instance, if there is one)."""

    kind: str
    lifecycle: Lifecycle
    # The instance that earned it; None when no instance of the lifecycle ran (an upgrade
    # nobody campaigned for): still recorded, unattributed.
    workflow_id: str | None
    subscription_id: str | None
    mrr_delta_cents: int
    amount_cents: int
    currency: str | None
    invoice_id: str | None = None
    # Recorded, but credited to no email, and why.
    uncredited_reason: str | None = None


@dataclass(frozen=True)
class Forward:
    """Pass the event on to a running invoice lifecycle, which reads it itself: what
    customer workflow runs from before these rules decided invoice lifecycles do."""

    workflow_id: str


Decision = Start | Retime | Refresh | End | Convert | Forward


@dataclass(frozen=True)
class Applied:
    """An event the ledger applied, with its subscription as it was before the event."""

    event: BillingEvent
    before: Sub | None


def subscription_of(event: BillingEvent) -> str | None:
    if event.subscription is not None:
        return event.subscription.id
    return event.invoice.subscription_id if event.invoice is not None else None


def card_expiry(card: PaymentMethodState) -> int | None:
    """The first second the card no longer works: cards are valid through their month."""
    if card.exp_month is None or card.exp_year is None or not 1 <= card.exp_month <= 12:
        return None
    year, month = (
        (card.exp_year + 1, 1) if card.exp_month == 12 else (card.exp_year, card.exp_month + 1)
    )
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


def apply_batch(ledger: CustomerLedger, batch: list[BillingEvent]) -> list[Applied]:
    """Apply a batch in Stripe's order (a stable sort: same-second events keep arrival
    order); the events applied, duplicates left out."""
    applied: list[Applied] = []
    for event in sorted(batch, key=lambda e: e.created):
        before = ledger.subscription(subscription_of(event))
        if ledger.apply(event):
            applied.append(Applied(event, before))
    return applied


def decide(event: BillingEvent, before: Sub | None, ledger: CustomerLedger) -> list[Decision]:
    """What this event means for every lifecycle of its customer, by the rules of the
    run's version (`ledger.RULES_VERSION`)."""
    version = ledger.rules_version
    if version < 2:
        legacy = legacy_invoice_routes(event, ledger)
        return legacy + subscription_decisions(event, before, ledger) if version >= 1 else legacy
    if ledger.snapshot.deleted:
        # A deleted customer (often a data-erasure request) is mailed no more: whatever
        # runs ends, nothing starts, whatever Stripe sends after the deletion.
        return [
            End(ref.workflow_id, CUSTOMER_DELETED)
            for ref in ledger.state.lifecycles
            if ref.status == RUNNING
        ]
    decisions = invoice_decisions(event, ledger) + subscription_decisions(event, before, ledger)
    if version >= 3:
        decisions += billed_invoice_decisions(event, ledger)
        decisions += quote_decisions(event, ledger)
        if not event.backfill:
            decisions.append(event_sequence(event))
    return decisions


def billed_invoice_decisions(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    """Invoices as bills: reminders before an invoice the customer pays by hand falls due
    (`invoice_due`), after it is overdue (`invoice_overdue`), and after any invoice is
    finalized (`invoice_finalized`); each ends when the invoice is paid, voided or marked
    uncollectible, a payment converting it."""
    invoice = event.invoice
    if invoice is None or invoice.id is None:
        return []
    decisions: list[Decision] = []
    outcome = INVOICE_ENDINGS.get(event.type)
    for lifecycle, wid in _billed_instances(invoice.id):
        ref = _running_ref(ledger, wid)
        if ref is None:
            continue
        if outcome is not None:
            decisions += _billed_ending(lifecycle, wid, ref, invoice, outcome, ledger)
        elif lifecycle == Lifecycle.INVOICE_DUE and invoice.due_date not in (None, ref.anchor):
            decisions.append(Retime(wid, invoice.due_date or 0))
        else:
            decisions.append(Refresh(wid, invoice))
    if outcome is not None or invoice.status != "open" or ledger.is_paid(invoice.id):
        return decisions
    finalized = ids.invoice_finalized_id(invoice.id)
    if event.type == FINALIZED and _new(ledger, finalized):
        decisions.append(
            Start(
                Lifecycle.INVOICE_FINALIZED,
                finalized,
                invoice.id,
                invoice.subscription_id,
                invoice=invoice,
            )
        )
    if invoice.collection_method != SEND_INVOICE or invoice.due_date is None:
        return decisions
    due, overdue = ids.invoice_due_id(invoice.id), ids.invoice_overdue_id(invoice.id)
    if event.type == OVERDUE or invoice.due_date <= event.created:
        if _running_ref(ledger, due) is not None:
            decisions.append(End(due, "overdue"))
        if _new(ledger, overdue):
            decisions.append(
                Start(
                    Lifecycle.INVOICE_OVERDUE,
                    overdue,
                    invoice.id,
                    invoice.subscription_id,
                    anchor=invoice.due_date,
                    invoice=invoice,
                )
            )
    elif _new(ledger, due):
        decisions.append(
            Start(
                Lifecycle.INVOICE_DUE,
                due,
                invoice.id,
                invoice.subscription_id,
                anchor=invoice.due_date,
                invoice=invoice,
            )
        )
    return decisions


def _billed_instances(invoice_id: str) -> list[tuple[Lifecycle, str]]:
    return [
        (Lifecycle.INVOICE_DUE, ids.invoice_due_id(invoice_id)),
        (Lifecycle.INVOICE_OVERDUE, ids.invoice_overdue_id(invoice_id)),
        (Lifecycle.INVOICE_FINALIZED, ids.invoice_finalized_id(invoice_id)),
    ]


def _billed_ending(
    lifecycle: Lifecycle,
    wid: str,
    ref: LifecycleRef,
    invoice: InvoiceInfo,
    outcome: str,
    ledger: CustomerLedger,
) -> list[Decision]:
    """How an invoice that was paid, voided or marked uncollectible ends an instance; a
    payment converts it: an overdue invoice paid is money recovered, one paid on time
    after its reminders an invoice paid."""
    paid = outcome == RECOVERED
    out_of_band = paid and invoice.paid_out_of_band
    decisions: list[Decision] = []
    if paid and not ref.converted:
        sub = ledger.snapshot.subscriptions.get(invoice.subscription_id or "")
        overdue = lifecycle == Lifecycle.INVOICE_OVERDUE
        decisions.append(
            Convert(
                RECOVERED if overdue else INVOICE_PAID,
                lifecycle,
                wid,
                invoice.subscription_id,
                mrr_delta_cents=sub.mrr_cents if sub and overdue else 0,
                amount_cents=invoice.amount_paid or invoice.amount_due,
                currency=invoice.currency,
                invoice_id=invoice.id,
                uncredited_reason=OUT_OF_BAND_REASON if out_of_band else None,
            )
        )
    ending = "paid" if paid else outcome
    decisions.append(End(wid, PAID_OUT_OF_BAND if out_of_band else ending))
    return decisions


def quote_decisions(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    """An open quote with an expiry: reminders before it expires; ends accepted (a
    conversion with its amount) or canceled; a new expiry re-times them."""
    quote = event.quote
    if quote is None:
        return []
    wid = ids.quote_expiring_id(quote.id)
    ref = _running_ref(ledger, wid)
    if ref is not None:
        if quote.status == "accepted":
            accepted = Convert(
                QUOTE_ACCEPTED,
                Lifecycle.QUOTE_EXPIRING,
                wid,
                None,
                mrr_delta_cents=0,
                amount_cents=quote.amount_total,
                currency=quote.currency,
            )
            return [accepted, End(wid, "accepted")] if not ref.converted else [End(wid, "accepted")]
        if quote.status == "canceled":
            return [End(wid, "canceled")]
        if quote.expires_at is not None and quote.expires_at != ref.anchor:
            return [Retime(wid, quote.expires_at)]
        return []
    live = quote.status == "open" and (quote.expires_at or 0) > event.created
    if live and _new(ledger, wid):
        return [Start(Lifecycle.QUOTE_EXPIRING, wid, quote.id, None, anchor=quote.expires_at)]
    return []


def event_sequence(event: BillingEvent) -> Start:
    """Any Stripe event may start an `event` sequence: which automation, if any, the
    customer workflow asks (and names the instance after it)."""
    return Start(
        Lifecycle.EVENT,
        workflow_id="",
        subject_id=event.object.id if event.object is not None else event.event_id,
        subscription_id=subscription_of(event),
        trigger_event=event.type,
    )


def backfill_decisions(
    event: BillingEvent, before: Sub | None, ledger: CustomerLedger
) -> list[Decision]:
    """What a sync's backfill event means: nothing, as a rule. It is the present state of
    an object, not a change that just happened, so it ends, re-times and converts nothing
    (a payment made last year earned no email anything). Only a sync asked to start
    lifecycles starts those for situations in progress now (`BACKFILL_STARTS`), each from
    when it began, so that it goes on from its current step rather than from step one."""
    if not event.backfill_starts or ledger.rules_version < 2:
        return []
    starts: list[Decision] = []
    for decision in decide(event, before, ledger):
        if isinstance(decision, Start) and decision.lifecycle in BACKFILL_STARTS:
            starts.append(replace(decision, since=_began(decision.lifecycle, event)))
    return starts


def _began(lifecycle: Lifecycle, event: BillingEvent) -> int | None:
    sub, invoice = event.subscription, event.invoice
    if lifecycle == Lifecycle.TRIAL and sub is not None:
        return sub.trial_start
    if lifecycle == Lifecycle.SCHEDULED_CANCEL and sub is not None:
        # When the cancellation was asked for.
        return sub.canceled_at
    if lifecycle == Lifecycle.DUNNING and invoice is not None:
        # Stripe charges a subscription invoice about an hour after it is created; the
        # first failure is not in the invoice itself.
        return invoice.created
    return None


def invoice_decisions(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    """Dunning and payment action: started by their trigger, refreshed by its repeats,
    ended (and a payment converted) by what settles the invoice."""
    invoice = event.invoice
    decisions: list[Decision] = []
    if invoice is None or invoice.id is None:
        if event.type == DELETED and event.subscription is not None:
            decisions += [
                End(ref.workflow_id, "subscription_deleted")
                for ref in _running_invoice_lifecycles(ledger)
                if ref.subscription_id == event.subscription.id
            ]
        return decisions
    sub = ledger.snapshot.subscriptions.get(invoice.subscription_id or "")
    for lifecycle in INVOICE_LIFECYCLES:
        wid = _invoice_lifecycle_id(lifecycle, invoice.id)
        ref = _running_ref(ledger, wid)
        trigger = _invoice_trigger(lifecycle, invoice, ledger.rules_version)
        if ref is not None:
            endings = (
                PAYMENT_ACTION_ENDINGS if lifecycle == Lifecycle.PAYMENT_ACTION else INVOICE_ENDINGS
            )
            outcome = endings.get(event.type)
            # Marked paid by hand (a wire, a write-off): no email made that happen.
            out_of_band = outcome == RECOVERED and invoice.paid_out_of_band
            if outcome == RECOVERED and not ref.converted:
                decisions.append(
                    Convert(
                        RECOVERED,
                        lifecycle,
                        wid,
                        invoice.subscription_id,
                        mrr_delta_cents=sub.mrr_cents if sub else 0,
                        amount_cents=invoice.amount_paid or invoice.amount_due,
                        currency=invoice.currency,
                        invoice_id=invoice.id,
                        uncredited_reason=OUT_OF_BAND_REASON if out_of_band else None,
                    )
                )
            if outcome is not None:
                decisions.append(End(wid, PAID_OUT_OF_BAND if out_of_band else outcome))
            elif event.type in (trigger, INVOICE_UPDATED):
                decisions.append(Refresh(wid, invoice))
        elif trigger is not None and event.type == trigger and _new(ledger, wid):
            if _invoice_lifecycle_starts(lifecycle, invoice, ledger):
                decisions.append(
                    Start(lifecycle, wid, invoice.id, invoice.subscription_id, invoice=invoice)
                )
    return decisions


def legacy_invoice_routes(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    """How customer workflow runs that began before `invoice_decisions` route invoice
    lifecycles: every event of a running instance's invoice is forwarded to it (the
    instance reads the outcome and records its recovery itself), and every trigger not
    yet running tries a start. Kept so those runs replay; a run continued as new, or
    started since, uses `invoice_decisions`."""
    invoice = event.invoice
    if invoice is None or invoice.id is None:
        if event.type != DELETED or event.subscription is None:
            return []
        return [
            Forward(ref.workflow_id)
            for ref in _running_invoice_lifecycles(ledger)
            if ref.subscription_id == event.subscription.id
        ]
    decisions: list[Decision] = []
    for lifecycle in INVOICE_LIFECYCLES:
        wid = _invoice_lifecycle_id(lifecycle, invoice.id)
        if _running_ref(ledger, wid) is not None:
            decisions.append(Forward(wid))
        elif event.type == INVOICE_TRIGGERS[lifecycle]:
            # The start conditions of those runs, unchanged: they must replay.
            subscription_only = lifecycle == Lifecycle.DUNNING and not invoice.subscription_id
            if not subscription_only and not ledger.is_paid(invoice.id):
                decisions.append(
                    Start(lifecycle, wid, invoice.id, invoice.subscription_id, invoice=invoice)
                )
    return decisions


def subscription_decisions(
    event: BillingEvent, before: Sub | None, ledger: CustomerLedger
) -> list[Decision]:
    """The subscription and card lifecycles."""
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


def begin(ledger: CustomerLedger, decision: Decision) -> bool:
    """Record a decision in the ledger as it is carried out; False when there is nothing
    to carry out (the instance to start runs already, the one to tell has ended).

    A start is recorded as decided at once, so the same trigger seen again costs no second
    automation lookup; the instance itself is recorded by `started` once it runs. An end
    is recorded now, not when the instance's report arrives: an event right behind this
    one (a cancellation scheduled again) must find it ended.
    """
    if isinstance(decision, Start):
        if decision.lifecycle == Lifecycle.EVENT and not decision.workflow_id:
            # Not an instance yet: the automation chosen names it, and begins it then.
            return True
        if _running_ref(ledger, decision.workflow_id) is not None:
            return False
        if not decision.reusable:
            ledger.decide_start(decision.workflow_id)
        return True
    if isinstance(decision, Convert):
        ref = latest(ledger, decision.workflow_id) if decision.workflow_id else None
        if ref is not None:
            ref.converted = True
        return True
    ref = _running_ref(ledger, decision.workflow_id)
    if ref is None:
        return False
    if isinstance(decision, Retime):
        ref.anchor = decision.anchor
    elif isinstance(decision, End):
        ref.status = decision.outcome
    return True


def moot(ledger: CustomerLedger, decision: Decision) -> bool:
    """Whether `begin` would find nothing to carry out, asked without recording anything.
    An `event` sequence start is never moot here: whether its type triggers one is the
    worker's to say."""
    if isinstance(decision, Start):
        if decision.lifecycle == Lifecycle.EVENT and not decision.workflow_id:
            return False
        return _running_ref(ledger, decision.workflow_id) is not None
    if isinstance(decision, Convert):
        return False
    return _running_ref(ledger, decision.workflow_id) is None


def started(
    ledger: CustomerLedger,
    start: Start,
    automation: str,
    *,
    held_out: bool = False,
    at: int | None = None,
) -> LifecycleRef:
    """Record an instance that now runs `automation` (an upgrade campaign's, begun at
    `at`, is counted for its re-entry rule)."""
    ref = LifecycleRef(
        workflow_id=start.workflow_id,
        lifecycle=start.lifecycle,
        automation=automation,
        invoice_id=start.invoice.id if start.invoice is not None else None,
        subscription_id=start.subscription_id,
        subject_id=start.subject_id,
        anchor=start.anchor,
        segment=start.segment,
        exit_on_leave=start.exit_on_leave,
        held_out=held_out,
    )
    ledger.state.lifecycles.append(ref)
    if start.lifecycle == Lifecycle.UPGRADE:
        record = ledger.state.campaigns.setdefault(automation, CampaignRecord())
        record.started += 1
        record.last_started = at
    return ref


def campaign_start(
    ledger: CustomerLedger, automation: Automation, segment: str, now: int
) -> Start | None:
    """The upgrade campaign to start for an entry into `segment`, or None when its
    `reentry` rule says no: `never` after a first instance; a duration since the last one
    began; and never while one runs."""
    record = ledger.state.campaigns.get(automation.name)
    if record is not None and record.started:
        if any(
            r.automation == automation.name and r.status == RUNNING for r in ledger.state.lifecycles
        ):
            return None
        if automation.reentry_seconds is None:
            return None
        if now - (record.last_started or 0) < automation.reentry_seconds:
            return None
    customer_id = ledger.snapshot.customer_id
    n = (record.started if record is not None else 0) + 1
    primary = primary_subscription(ledger.snapshot)
    return Start(
        Lifecycle.UPGRADE,
        ids.upgrade_id(customer_id, automation.name, n),
        subject_id=primary.id if primary is not None else customer_id,
        subscription_id=primary.id if primary is not None else None,
        segment=segment,
        exit_on_leave=automation.exit_on_leave,
    )


def campaign_exits(ledger: CustomerLedger, exited: list[str]) -> list[End]:
    """Campaigns that end because their customer left the segment that started them."""
    return [
        End(ref.workflow_id, LEFT_SEGMENT)
        for ref in _running(ledger, Lifecycle.UPGRADE)
        if ref.exit_on_leave and ref.segment in exited
    ]


def finished(ledger: CustomerLedger, workflow_id: str, outcome: str, keep: int) -> None:
    """An instance reported its end; keep the last `keep` ended ones (and all running)."""
    for ref in ledger.state.lifecycles:
        # A scheduled cancellation's id comes back: only the running one has ended.
        if ref.workflow_id == workflow_id and ref.status == RUNNING:
            ref.status = outcome
    running = [r for r in ledger.state.lifecycles if r.status == RUNNING]
    ended = [r for r in ledger.state.lifecycles if r.status != RUNNING]
    ledger.state.lifecycles = ended[max(0, len(ended) - keep) :] + running


def _invoice_lifecycle_id(lifecycle: Lifecycle, invoice_id: str) -> str:
    if lifecycle == Lifecycle.DUNNING:
        return ids.dunning_id(invoice_id)
    return ids.payment_action_id(invoice_id)


def _invoice_trigger(lifecycle: Lifecycle, invoice: InvoiceInfo, version: int) -> str | None:
    if lifecycle == Lifecycle.DUNNING and invoice.collection_method == SEND_INVOICE:
        # Since rules version 3 an overdue invoice is `invoice_overdue`'s: dunning is for
        # payments that failed.
        return OVERDUE if version < 3 else None
    return INVOICE_TRIGGERS[lifecycle]


def _invoice_lifecycle_starts(
    lifecycle: Lifecycle, invoice: InvoiceInfo, ledger: CustomerLedger
) -> bool:
    # Dunning is for subscription invoices; and a payment Stripe already reports as made
    # (events arriving out of order) needs neither lifecycle.
    if lifecycle == Lifecycle.DUNNING and not invoice.subscription_id:
        return False
    if lifecycle == Lifecycle.DUNNING and invoice.billing_reason == SUBSCRIPTION_CREATE:
        # A first payment failing at checkout is not a customer to win back: Stripe lets
        # the checkout retry it, then voids it. Once the subscription is live (a trial's
        # first invoice fails later), it is.
        sub = ledger.snapshot.subscriptions.get(invoice.subscription_id or "")
        if sub is None or sub.status in AT_CHECKOUT:
            return False
    return not ledger.is_paid(invoice.id or "")


def _running_invoice_lifecycles(ledger: CustomerLedger) -> list[LifecycleRef]:
    return [r for r in ledger.state.lifecycles if r.status == RUNNING and r.invoice_id is not None]


def _running_ref(ledger: CustomerLedger, workflow_id: str) -> LifecycleRef | None:
    for ref in ledger.state.lifecycles:
        if ref.workflow_id == workflow_id and ref.status == RUNNING:
            return ref
    return None


def latest(ledger: CustomerLedger, workflow_id: str) -> LifecycleRef | None:
    refs = [r for r in ledger.state.lifecycles if r.workflow_id == workflow_id]
    return refs[-1] if refs else None


def _running(ledger: CustomerLedger, lifecycle: Lifecycle) -> list[LifecycleRef]:
    return [r for r in ledger.state.lifecycles if r.lifecycle == lifecycle and r.status == RUNNING]


def _new(ledger: CustomerLedger, workflow_id: str) -> bool:
    return latest(ledger, workflow_id) is None and not ledger.start_decided(workflow_id)


def _trial(event: BillingEvent, sub: Sub, ledger: CustomerLedger) -> list[Decision]:
    wid = ids.trial_id(sub.id)
    ref = latest(ledger, wid)
    invoice = event.invoice
    # The trial converts on the first paid invoice for the time after it: the invoice a
    # trial starts with may carry money too (a setup fee, a paid trial), and is not it.
    signup = (
        invoice is not None
        and invoice.billing_reason == SUBSCRIPTION_CREATE
        and ledger.rules_version >= 2
    )
    if (
        invoice is not None
        and event.type in PAID_EVENTS
        and invoice.amount_paid > 0
        and not (signup and (sub.trial_end or 0) > (invoice.created or event.created))
    ):
        if ref is None or ref.converted:
            return []
        converted = Convert(
            TRIAL_CONVERTED,
            Lifecycle.TRIAL,
            wid,
            sub.id,
            mrr_delta_cents=sub.mrr_cents,
            amount_cents=invoice.amount_paid,
            currency=invoice.currency or sub.currency,
            invoice_id=invoice.id,
        )
        return [converted, End(wid, "converted")] if ref.status == RUNNING else [converted]
    if event.subscription is None:
        return []
    if ref is None:
        starts = sub.status == "trialing" and (sub.trial_end or 0) > event.created
        return (
            [Start(Lifecycle.TRIAL, wid, sub.id, sub.id, sub.trial_end)]
            if starts and _new(ledger, wid)
            else []
        )
    if ref.status != RUNNING:
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
    wid = ids.scheduled_cancel_id(sub.id)
    ref = latest(ledger, wid)
    if ref is not None and ref.status == RUNNING:
        if event.type == DELETED:
            # The period ended: win-back takes over.
            return [End(wid, "cancelled")]
        if not sub.cancel_scheduled and sub.status not in ENDED:
            saved = Convert(
                SAVED,
                Lifecycle.SCHEDULED_CANCEL,
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
        return [Start(Lifecycle.SCHEDULED_CANCEL, wid, sub.id, sub.id, sub.ends_at, reusable=True)]
    return []


def _winback(
    event: BillingEvent, before: Sub | None, sub: Sub, ledger: CustomerLedger
) -> list[Decision]:
    customer_id = ledger.snapshot.customer_id
    if event.type == DELETED:
        wid = ids.winback_id(customer_id, sub.id)
        # Cancelling one of several subscriptions is not churn.
        if not ledger.has_live_subscription(besides=sub.id) and _new(ledger, wid):
            return [Start(Lifecycle.WINBACK, wid, sub.id, sub.id)]
        return []
    if event.subscription is None:
        return []
    became_active = sub.status == "active" and (before is None or before.status != "active")
    came_back_in_trial = sub.status == "trialing" and before is None
    others = [
        r
        for r in ledger.state.lifecycles
        if r.lifecycle == Lifecycle.WINBACK and r.subscription_id != sub.id
    ]
    if became_active:
        # A comeback through a new trial is credited once, to the trial, when it converts.
        pending = [r for r in others if not r.converted and r.status != "trial_started"]
        if not pending:
            return []
        latest = pending[-1]
        decisions: list[Decision] = [
            Convert(
                REACTIVATED,
                Lifecycle.WINBACK,
                latest.workflow_id,
                sub.id,
                mrr_delta_cents=sub.mrr_cents,
                amount_cents=0,
                currency=sub.currency,
            )
        ]
        return decisions + [
            End(r.workflow_id, "reactivated") for r in others if r.status == RUNNING
        ]
    if came_back_in_trial:
        # Not revenue yet: the trial lifecycle takes over; a later payment converts it.
        return [End(r.workflow_id, "trial_started") for r in others if r.status == RUNNING]
    return []


def _renewal(event: BillingEvent, sub: Sub, ledger: CustomerLedger) -> list[Decision]:
    decisions: list[Decision] = []
    invoice = event.invoice
    cycle = invoice is not None and invoice.billing_reason == "subscription_cycle"
    for ref in _running(ledger, Lifecycle.RENEWAL):
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
        elif event.type == UPCOMING and invoice is not None and ledger.rules_version >= 2:
            # What Stripe will really charge (prorations, usage, tax, discounts): the
            # reminders quote it from now on.
            decisions.append(Refresh(ref.workflow_id, invoice))
    period_end = sub.current_period_end
    renews = sub.status == "active" and not sub.cancel_scheduled and not sub.paused
    if renews and period_end is not None and period_end > event.created:
        wid = ids.renewal_id(sub.id, period_end)
        last = latest(ledger, wid)
        # A cancellation undone (or a pause lifted) within the period: remind again.
        resumed = last is not None and last.status in ("cancel_scheduled", "paused")
        if resumed or _new(ledger, wid):
            decisions.append(
                Start(Lifecycle.RENEWAL, wid, sub.id, sub.id, period_end, reusable=resumed)
            )
    return decisions


def _plan_change(
    event: BillingEvent, before: Sub | None, sub: Sub, ledger: CustomerLedger
) -> list[Decision]:
    if event.type != "customer.subscription.updated" or before is None:
        return []
    # The change this event made: its own subscription against the one before it (the
    # ledger's state is the whole batch's; an event older than that changed nothing).
    now = event.subscription
    if now is None or event.created < before.version:
        return []
    if not _plan_changed(event, before, now, ledger.rules_version):
        return []
    # Only paying subscriptions move MRR; a trial changing plan is not revenue yet.
    if before.status not in MRR_STATUSES or now.status not in MRR_STATUSES:
        return []
    if before.currency != now.currency:
        return []
    delta = ledger.value(now).mrr_cents - before.mrr_cents
    if delta > 0:
        campaigns = _running(ledger, Lifecycle.UPGRADE)
        credited = [
            r
            for r in ledger.state.lifecycles
            if r.lifecycle == Lifecycle.UPGRADE and not r.converted
        ]
        expansion = Convert(
            EXPANSION,
            Lifecycle.UPGRADE,
            credited[-1].workflow_id if credited else None,
            sub.id,
            mrr_delta_cents=delta,
            amount_cents=0,
            currency=sub.currency,
        )
        return [expansion, *(End(r.workflow_id, "upgraded") for r in campaigns)]
    if delta < 0:
        wid = ids.plan_change_id(sub.id, event.created)
        return [Start(Lifecycle.PLAN_CHANGE, wid, sub.id, sub.id)] if _new(ledger, wid) else []
    return []


def _plan_changed(
    event: BillingEvent, before: Sub, now: SubscriptionInfo, rules_version: int
) -> bool:
    """A real price, quantity or discount change, not a renewal: since basil every renewal
    lists `items` among the previous attributes (their period moved), and a discount may
    be spelled differently from one API version to the next, or run out."""
    if rules_version < 2:
        # Runs under earlier rules took the event's word for it.
        return bool(LEGACY_PLAN_FIELDS & set(event.previous_attributes))
    if not PLAN_FIELDS & set(event.previous_attributes):
        return False
    was = before.subscription
    if was is None:
        # Recorded before the ledger kept what a subscription buys: the event's word.
        return True
    return not mrr.same_plan(was, now, event.created)


def _card_expiring(event: BillingEvent, ledger: CustomerLedger) -> list[Decision]:
    card = ledger.billing_payment_method()
    live = ledger.has_live_subscription()
    decisions: list[Decision] = []
    for ref in _running(ledger, Lifecycle.CARD_EXPIRING):
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
    if card is None or card.exp_year is None or card.exp_month is None:
        return decisions
    expiry = card_expiry(card)
    if expiry is not None and live and expiry > event.created:
        wid = ids.card_expiring_id(card.id, card.exp_year, card.exp_month)
        if _new(ledger, wid):
            decisions.append(Start(Lifecycle.CARD_EXPIRING, wid, card.id, None, expiry))
    return decisions
