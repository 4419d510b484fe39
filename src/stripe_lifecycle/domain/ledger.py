"""The customer's billing snapshot and how Stripe events change it (pure, deterministic).

Used inside the customer workflow, so: no I/O, no clock, no randomness.
"""

# No `from __future__ import annotations` here: Temporal's data converter resolves these
# types for every payload, and string annotations make each resolution far slower.

from collections import deque
from dataclasses import dataclass, field, replace

from stripe_lifecycle.domain import mrr
from stripe_lifecycle.domain.events import (
    BillingEvent,
    ChargeInfo,
    CustomerInfo,
    DiscountInfo,
    InvoiceInfo,
    PaymentMethodInfo,
    SubscriptionInfo,
)
from stripe_lifecycle.domain.lifecycles import Lifecycle

# Subscriptions in these states are billed, so they count towards MRR; trials are not
# revenue yet and are shown by status instead (the way Stripe's own MRR chart counts).
MRR_STATUSES = frozenset({"active", "past_due"})

# When a customer has several subscriptions, the snapshot's status is the one that most
# needs attention: a failed payment outranks a healthy plan, which outranks a trial.
STATUS_RANK = (
    "past_due",
    "unpaid",
    "active",
    "trialing",
    "paused",
    "incomplete",
    "incomplete_expired",
    "canceled",
)

# A subscription in one of these is over for good.
ENDED = frozenset({"canceled", "incomplete_expired"})

# Subscriptions that still bill (or will): a customer with one of these has not churned.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid", "paused", "incomplete"})

# The rules a customer workflow run decides by. A run keeps the rules it started with, so
# that its history replays; every run started (or continued as new) since takes the
# newest. 0: no lifecycles besides the invoice ones; 1: the subscription and card
# lifecycles, invoice events forwarded to the invoice lifecycles as they are; 2: every
# lifecycle decided here, with Stripe's own rules for cards, canceled subscriptions,
# first payments, trials with a setup fee and deleted customers; 3: every trigger (invoices
# paid by hand, their due dates and finalization, quotes, any event), an overdue invoice
# being `invoice_overdue`'s rather than dunning's.
RULES_VERSION = 3

RECENT_EVENT_IDS = 500
RECENT_PAID_INVOICES = 100
RECENT_STARTS = 200


@dataclass
class SubscriptionState:
    id: str
    status: str | None
    plan: str | None
    price_id: str | None
    product_id: str | None
    interval: str | None
    quantity: int
    mrr_cents: int
    currency: str | None
    current_period_end: int | None
    trial_end: int | None
    cancel_at_period_end: bool
    version: int
    # What the next billing period is charged as far as known (`mrr.next_bill`), for the
    # email copy and automation filters.
    amount_cents: int = 0
    cancel_at: int | None = None
    cancellation_reason: str | None = None
    paused: bool = False
    default_payment_method: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    default_source: str | None = None
    collection_method: str | None = None
    # How often each item bills, as `billing_period` names it ("month", "year", "3 month").
    billing_periods: list[str] = field(default_factory=list)

    @property
    def periods(self) -> list[str]:
        """The billing periods of its items (state from before they were kept: the first
        item's interval)."""
        if self.billing_periods:
            return self.billing_periods
        period = billing_period(self.interval, 1)
        return [period] if period else []

    # The subscription as its newest event read it: what it buys, to value it again when
    # the customer-wide discount changes and to tell a real plan change from a renewal.
    # None in states recorded before it was kept.
    subscription: SubscriptionInfo | None = None
    mrr_exact: bool = True
    # When it started (Stripe's `start_date`, else `created`), and when its prices last
    # changed: the `created` of the event that changed them, or its start when first seen.
    # None in states recorded before they were kept (for `plan_since`, until the next
    # change of price: a subscription known before cannot tell when its plan began).
    started: int | None = None
    plan_since: int | None = None

    @property
    def cancel_scheduled(self) -> bool:
        """Set to end at period end or on a date, and not over yet."""
        live = self.status not in ("canceled", "incomplete_expired")
        return live and (self.cancel_at_period_end or self.cancel_at is not None)

    @property
    def ends_at(self) -> int | None:
        return self.cancel_at or self.current_period_end


@dataclass
class PaymentMethodState:
    """A card the customer could be billed with, and when it expires."""

    id: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    version: int
    # Kept after a detach so an older `attached` arriving late cannot bring it back.
    detached: bool = False


@dataclass
class LifecycleRef:
    """A lifecycle instance the customer workflow started (a child workflow)."""

    workflow_id: str
    lifecycle: Lifecycle
    automation: str
    status: str = "running"
    invoice_id: str | None = None
    subscription_id: str | None = None
    # What the instance is about when that is not an invoice (a subscription, a card),
    # and the date its `before:` steps count back from.
    subject_id: str | None = None
    anchor: int | None = None
    # A conversion was recorded for it: one per instance, whichever event came first.
    converted: bool = False
    # An upgrade campaign: the segment whose entry started it, and whether leaving that
    # segment ends it (`exit_on_leave`).
    segment: str | None = None
    exit_on_leave: bool = False
    # The customer is in the automation's holdout group: the instance sends nothing.
    held_out: bool = False
    # Recorded in `lifecycle_instances` before its subscription's first event arrived (a
    # failed payment can come first): the MRR there is filled in once it has.
    mrr_unknown: bool = False


@dataclass
class BillingSnapshot:
    """What the customer workflow knows about one customer."""

    customer_id: str
    email: str | None = None
    name: str | None = None
    status: str = "none"
    plan: str | None = None
    mrr_cents: int = 0
    currency: str | None = None
    ltv_cents: int = 0
    customer_since: int | None = None
    livemode: bool = False
    deleted: bool = False
    subscriptions: dict[str, SubscriptionState] = field(default_factory=dict)
    customer_version: int = 0
    events_applied: int = 0
    last_event_type: str | None = None
    last_event_created: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Billing address country (ISO code): the fallback for the customer's time zone.
    country: str | None = None
    # The customer's own defaults: invoice_settings.default_payment_method, and the
    # legacy default_source of customers that never moved to PaymentMethods.
    default_payment_method: str | None = None
    default_source: str | None = None
    payment_methods: dict[str, PaymentMethodState] = field(default_factory=dict)
    # Filled in by the customer workflow's `state` query (the ledger keeps the list).
    lifecycles: list[LifecycleRef] = field(default_factory=list)
    # The customer's personal data was erased: whatever Stripe still sends about them,
    # only the money is kept.
    erased: bool = False
    # The connected account the customer belongs to (Stripe Connect), as its events say.
    stripe_account: str | None = None
    # Money per currency, in minor units, never added across currencies: `mrr` of the
    # subscriptions Stripe bills (`mrr_cents` is the figure in `currency`), `ltv` what the
    # customer paid on invoices net of refunds (`ltv_cents` in `currency`), `refunded` the
    # refunds. `mrr_exact` is False while some counted subscription could not be valued
    # exactly (a coupon or price detail Stripe was not asked for, or could not tell).
    mrr: dict[str, int] = field(default_factory=dict)
    mrr_exact: bool = True
    ltv: dict[str, int] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    # The customer-wide discount (for subscriptions without one of their own), as of the
    # event that last set it.
    customer_discount: DiscountInfo | None = None
    customer_discount_version: int = 0


@dataclass
class ChargeRefunds:
    """What has been refunded of one charge, as of the newest event about it."""

    amount: int
    currency: str
    version: int


@dataclass
class CampaignRecord:
    """The upgrade campaign instances an automation ran for the customer: how many (the
    `n` of `upgrade-{cus}-{automation}-{n}`) and when the last began, for `reentry`."""

    started: int = 0
    last_started: int | None = None


@dataclass
class CustomerState:
    """Everything the entity carries across continue-as-new."""

    snapshot: BillingSnapshot
    recent_event_ids: list[str] = field(default_factory=list)
    paid_invoice_ids: list[str] = field(default_factory=list)
    lifecycles: list[LifecycleRef] = field(default_factory=list)
    # Lifecycle instance ids already decided on (started, or no automation matched), so
    # a trigger seen again costs no second automation lookup and starts nothing twice.
    starts_decided: list[str] = field(default_factory=list)
    # Refunded charges by id: Stripe reports each charge's refunds as a running total, so
    # what changed is what the newest report adds to the last one.
    refunds: dict[str, ChargeRefunds] = field(default_factory=dict)
    # The segments the customer is in, as last evaluated; the segment names that
    # evaluation knew (a segment the customer was never evaluated against is new to them);
    # whether it was ever evaluated.
    segments: list[str] = field(default_factory=list)
    segments_known: list[str] = field(default_factory=list)
    segments_evaluated: bool = False
    # When the customer's segments were first evaluated (epoch seconds).
    segments_first_evaluated: int | None = None
    # Upgrade campaigns by automation name.
    campaigns: dict[str, CampaignRecord] = field(default_factory=dict)


class CustomerLedger:
    """Applies events to a `CustomerState`: dedup by event id, newest `created` wins."""

    def __init__(self, state: CustomerState, rules_version: int = RULES_VERSION) -> None:
        self.state = state
        self.rules_version = rules_version
        self._seen = set(state.recent_event_ids)
        self._recent: deque[str] = deque(state.recent_event_ids, maxlen=RECENT_EVENT_IDS)
        self._paid: deque[str] = deque(state.paid_invoice_ids, maxlen=RECENT_PAID_INVOICES)
        self._decided: deque[str] = deque(state.starts_decided, maxlen=RECENT_STARTS)

    @property
    def snapshot(self) -> BillingSnapshot:
        return self.state.snapshot

    def export(self) -> CustomerState:
        self.state.recent_event_ids = list(self._recent)
        self.state.paid_invoice_ids = list(self._paid)
        self.state.starts_decided = list(self._decided)
        return self.state

    def start_decided(self, workflow_id: str) -> bool:
        return workflow_id in self._decided

    def decide_start(self, workflow_id: str) -> None:
        self._decided.append(workflow_id)

    def subscription(self, sub_id: str | None) -> SubscriptionState | None:
        """A copy of what is known of a subscription (so callers can compare later)."""
        current = self.snapshot.subscriptions.get(sub_id or "")
        return None if current is None else replace(current, metadata=dict(current.metadata))

    def billing_payment_method(self) -> PaymentMethodState | None:
        """The card the next invoice will be charged to, as far as events tell.

        Stripe's order for the subscription that speaks for the customer: its
        `default_payment_method`, its `default_source`, then the customer's
        `invoice_settings.default_payment_method`, then the customer's `default_source`;
        with none of them known, the only card known.
        """
        snap = self.snapshot
        methods = {k: m for k, m in snap.payment_methods.items() if not m.detached}
        primary = min(snap.subscriptions.values(), key=_status_rank, default=None)
        candidates = (
            primary.default_payment_method if primary else None,
            primary.default_source if primary else None,
            snap.default_payment_method,
            snap.default_source,
        )
        if self.rules_version < 2:
            # The order runs from before version 2 decided by: the customer's first.
            customer = snap.default_payment_method or snap.default_source
            subscription = (
                (primary.default_payment_method or primary.default_source) if primary else None
            )
            candidates = (customer, subscription, None, None)
        for candidate in candidates:
            if candidate is not None:
                return methods.get(candidate)
        return next(iter(methods.values())) if len(methods) == 1 else None

    @property
    def timezone(self) -> str | None:
        """An IANA zone the business stored on the Stripe customer, if any."""
        metadata = self.snapshot.metadata
        return metadata.get("timezone") or metadata.get("tz")

    def has_live_subscription(self, *, besides: str | None = None) -> bool:
        return any(
            s.status in LIVE_STATUSES and s.id != besides
            for s in self.snapshot.subscriptions.values()
        )

    def is_paid(self, invoice_id: str) -> bool:
        return invoice_id in self._paid

    def apply(self, event: BillingEvent) -> bool:
        """Apply one event; False if it is a duplicate (already applied)."""
        if event.event_id in self._seen:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._seen.discard(self._recent[0])
        self._recent.append(event.event_id)
        self._seen.add(event.event_id)

        snap = self.snapshot
        snap.events_applied += 1
        snap.livemode = event.livemode
        if event.account is not None:
            snap.stripe_account = event.account
        if snap.last_event_created is None or event.created >= snap.last_event_created:
            snap.last_event_created = event.created
            snap.last_event_type = event.type
        if event.customer is not None:
            self._apply_customer(event.customer, event.created)
        if event.subscription is not None:
            self._apply_subscription(event.subscription, event.created, event.type)
        if event.invoice is not None:
            self._apply_invoice(event.invoice, event.type)
        if event.payment_method is not None:
            self._apply_payment_method(event.payment_method, event.created, event.type)
        if event.discount is not None:
            self._apply_customer_discount(event.discount, event.created, event.type)
        if event.charge is not None:
            self._apply_charge(event.charge, event.created)
        self._recompute()
        return True

    def erase(self) -> None:
        """Forget who the customer is (a data-erasure request); keep what they paid."""
        snap = self.snapshot
        snap.email = snap.name = snap.country = None
        snap.metadata = {}
        snap.payment_methods = {}
        snap.default_payment_method = snap.default_source = None
        snap.deleted = snap.erased = True

    def value(self, sub: SubscriptionInfo) -> mrr.Valuation:
        """The subscription's MRR as this customer is billed: after its own discounts, or
        the customer-wide discount when it has none (Stripe's precedence)."""
        discount = self._discount_for(sub)
        if discount is None:
            # The event's own valuation (its payload, and what Stripe answered since).
            return mrr.Valuation(sub.mrr_cents, [i.mrr_cents for i in sub.items], sub.mrr_exact)
        return mrr.value_subscription(sub, discount)

    def _apply_customer(self, customer: CustomerInfo, created: int) -> None:
        snap = self.snapshot
        # An older customer object arriving late must not overwrite newer details.
        if created < snap.customer_version:
            return
        if snap.erased:
            snap.customer_version = created
            return
        snap.customer_version = created
        snap.email = customer.email
        snap.name = customer.name
        snap.currency = customer.currency or snap.currency
        if customer.created is not None:
            snap.customer_since = customer.created
        snap.deleted = customer.deleted
        snap.metadata = dict(customer.metadata)
        snap.country = customer.country
        snap.default_payment_method = customer.default_payment_method
        snap.default_source = customer.default_source
        # The customer object says which discount it has now, none included.
        self._set_customer_discount(customer.discount, created)

    def _apply_payment_method(self, pm: PaymentMethodInfo, created: int, event_type: str) -> None:
        if self.snapshot.erased:
            return
        methods = self.snapshot.payment_methods
        current = methods.get(pm.id)
        if current is not None and created < current.version:
            return
        if event_type == "payment_method.detached":
            methods[pm.id] = PaymentMethodState(
                pm.id, pm.brand, pm.last4, pm.exp_month, pm.exp_year, created, detached=True
            )
            return
        if event_type == "customer.source.expiring" and self.snapshot.default_source is None:
            # Stripe warns about the card it bills (a legacy default source); the customer
            # object that would name it has not reached us.
            self.snapshot.default_source = pm.id
        # Only cards expire; other payment methods (SEPA, ACH, ...) have nothing to track.
        if pm.exp_month is None or pm.exp_year is None:
            return
        methods[pm.id] = PaymentMethodState(
            id=pm.id,
            brand=pm.brand,
            last4=pm.last4,
            exp_month=pm.exp_month,
            exp_year=pm.exp_year,
            version=created,
        )

    def _apply_subscription(self, sub: SubscriptionInfo, created: int, event_type: str) -> None:
        current = self.snapshot.subscriptions.get(sub.id)
        if current is not None and created < current.version:
            return
        # Stripe never brings a canceled subscription back: an event of the same second as
        # the one that ended it (they keep arrival order there) is older news.
        if (
            self.rules_version >= 2
            and current is not None
            and current.status in ENDED
            and created <= current.version
        ):
            return
        status = "canceled" if event_type == "customer.subscription.deleted" else sub.status
        first = sub.items[0] if sub.items else None
        valuation = self.value(sub)
        started = _first_known(sub.start_date, sub.created, current.started if current else None)
        plan_since: int | None
        if current is None:
            plan_since = started if started is not None else created
        elif _prices_changed(current, sub):
            plan_since = created
        else:
            plan_since = current.plan_since
        self.snapshot.subscriptions[sub.id] = SubscriptionState(
            id=sub.id,
            status=status,
            plan=_plan_name(sub),
            price_id=first.price_id if first else None,
            product_id=first.product_id if first else None,
            interval=first.interval if first else None,
            quantity=sum(item.quantity for item in sub.items) or 1,
            mrr_cents=valuation.mrr_cents,
            currency=sub.currency,
            current_period_end=sub.current_period_end,
            trial_end=sub.trial_end,
            cancel_at_period_end=sub.cancel_at_period_end,
            version=created,
            amount_cents=mrr.next_bill(sub, self._discount_for(sub)),
            cancel_at=sub.cancel_at,
            cancellation_reason=sub.cancellation_reason,
            paused=sub.paused,
            default_payment_method=sub.default_payment_method,
            default_source=sub.default_source,
            collection_method=sub.collection_method,
            billing_periods=sorted(
                {
                    period
                    for item in sub.items
                    if (period := billing_period(item.interval, item.interval_count)) is not None
                }
            ),
            metadata=dict(sub.metadata),
            subscription=sub,
            mrr_exact=valuation.exact,
            started=started,
            plan_since=plan_since,
        )
        if self.snapshot.customer_since is None and sub.created is not None:
            self.snapshot.customer_since = sub.created

    def _apply_invoice(self, invoice: InvoiceInfo, event_type: str) -> None:
        paid = event_type in ("invoice.paid", "invoice.payment_succeeded")
        # Both events fire for one payment; LTV counts the invoice once.
        if not paid or invoice.id is None or invoice.id in self._paid:
            return
        self._paid.append(invoice.id)
        snap = self.snapshot
        self._adopt_single_currency_ltv()
        if snap.currency is None:
            snap.currency = invoice.currency
        currency = invoice.currency or snap.currency or ""
        snap.ltv[currency] = snap.ltv.get(currency, 0) + invoice.amount_paid

    def _apply_charge(self, charge: ChargeInfo, created: int) -> None:
        known = self.state.refunds.get(charge.id)
        if known is None and charge.amount_refunded == 0:
            return
        if known is not None and created < known.version:
            return
        snap = self.snapshot
        self._adopt_single_currency_ltv()
        currency = charge.currency or snap.currency or ""
        before = known.amount if known is not None else 0
        # A failed or canceled refund lowers the running total again: LTV comes back.
        added = charge.amount_refunded - before
        self.state.refunds[charge.id] = ChargeRefunds(charge.amount_refunded, currency, created)
        snap.refunded[currency] = snap.refunded.get(currency, 0) + added
        snap.ltv[currency] = snap.ltv.get(currency, 0) - added

    def _adopt_single_currency_ltv(self) -> None:
        """States recorded before LTV was kept per currency hold one total: it was counted in
        the customer's currency, so it becomes that currency's figure."""
        snap = self.snapshot
        if not snap.ltv and not snap.refunded and snap.ltv_cents and snap.currency:
            snap.ltv = {snap.currency: snap.ltv_cents}

    def _apply_customer_discount(
        self, discount: DiscountInfo, created: int, event_type: str
    ) -> None:
        current = self.snapshot.customer_discount
        if event_type == "customer.discount.deleted":
            # Only the discount it names goes: a newer one may already have replaced it.
            if current is None or current.id == discount.id:
                self._set_customer_discount(None, created)
            return
        self._set_customer_discount(discount, created)

    def _set_customer_discount(self, discount: DiscountInfo | None, created: int) -> None:
        snap = self.snapshot
        # An older customer or discount event arriving late must not undo a newer one.
        if created < snap.customer_discount_version:
            return
        snap.customer_discount_version = created
        if discount == snap.customer_discount:
            return
        snap.customer_discount = discount
        for state in snap.subscriptions.values():
            if state.subscription is None or state.subscription.discounts:
                continue
            valuation = self.value(state.subscription)
            state.mrr_cents, state.mrr_exact = valuation.mrr_cents, valuation.exact
            state.amount_cents = mrr.next_bill(state.subscription, discount)

    def _discount_for(self, sub: SubscriptionInfo) -> DiscountInfo | None:
        # Runs under rules before version 2 valued subscriptions by their own payload.
        if self.rules_version < 2 or sub.discounts:
            return None
        return self.snapshot.customer_discount

    def _recompute(self) -> None:
        snap = self.snapshot
        subs = list(snap.subscriptions.values())
        primary = min(subs, key=_status_rank, default=None)
        if primary is None:
            snap.status, snap.plan = "none", None
        else:
            snap.status = primary.status or "none"
            snap.plan = primary.plan
            if primary.currency:
                snap.currency = primary.currency
        home = snap.currency or ""
        counted = [s for s in subs if s.status in MRR_STATUSES]
        by_currency: dict[str, int] = {}
        for sub in counted:
            currency = sub.currency or home
            by_currency[currency] = by_currency.get(currency, 0) + sub.mrr_cents
        snap.mrr = by_currency
        snap.mrr_cents = by_currency.get(home, 0)
        snap.mrr_exact = all(s.mrr_exact for s in counted)
        if snap.ltv or snap.refunded:
            snap.ltv_cents = snap.ltv.get(home, 0)


def primary_subscription(snapshot: BillingSnapshot) -> SubscriptionState | None:
    """The subscription that speaks for the customer: the one whose status most needs
    attention (`STATUS_RANK`), the most recently changed among equals."""
    return min(snapshot.subscriptions.values(), key=_status_rank, default=None)


def _prices_changed(current: SubscriptionState, sub: SubscriptionInfo) -> bool:
    """Whether it buys other prices now (a quantity or discount change is no plan change)."""
    if current.subscription is None:
        # State from before the subscription was kept knows its first item's price only.
        return (sub.items[0].price_id if sub.items else None) != current.price_id
    return _price_ids(current.subscription) != _price_ids(sub)


def _price_ids(sub: SubscriptionInfo) -> list[str]:
    return sorted({item.price_id for item in sub.items if item.price_id})


def _first_known(*values: int | None) -> int | None:
    return next((value for value in values if value is not None), None)


def _status_rank(sub: SubscriptionState) -> tuple[int, int]:
    rank = STATUS_RANK.index(sub.status) if sub.status in STATUS_RANK else len(STATUS_RANK)
    # Among equals the most recently changed subscription speaks for the customer.
    return rank, -sub.version


def _plan_name(sub: SubscriptionInfo) -> str | None:
    if not sub.items:
        return None
    item = sub.items[0]
    return item.nickname or item.product_id or item.price_id


def billing_period(interval: str | None, interval_count: int) -> str | None:
    """One name per length of billing period, whichever way Stripe spells it: twelve
    months are a `year`, seven days a `week`, three months `3 month`."""
    if interval in ("month", "year"):
        months = interval_count * (12 if interval == "year" else 1)
        if months % 12 == 0:
            return "year" if months == 12 else f"{months // 12} year"
        return "month" if months == 1 else f"{months} month"
    if interval in ("day", "week"):
        days = interval_count * (7 if interval == "week" else 1)
        if days % 7 == 0:
            return "week" if days == 7 else f"{days // 7} week"
        return "day" if days == 1 else f"{days} day"
    return None


def new_state(customer_id: str) -> CustomerState:
    return CustomerState(snapshot=BillingSnapshot(customer_id=customer_id))
