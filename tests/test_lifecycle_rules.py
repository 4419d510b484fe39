"""Which lifecycles a Stripe event starts, re-times, ends or converts, and the ledger facts
those rules read: the card being billed, live subscriptions, scheduled cancellations.

Events are Stripe payloads (`tests/corpus.py`) normalised the way webhooks are. The
ledger is driven the way the customer workflow drives it: the subscription as it was is
captured before an event is applied, and a batch's decisions are carried out one event
at a time (a started instance gets a `LifecycleRef`, a conversion marks it converted).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from stripe_lifecycle.domain.events import (
    BillingEvent,
    InvoiceInfo,
    PaymentMethodInfo,
    QuoteInfo,
    SubscriptionInfo,
)
from stripe_lifecycle.domain.ids import (
    card_expiring_id,
    customer_workflow_id,
    dunning_id,
    invoice_due_id,
    invoice_finalized_id,
    invoice_overdue_id,
    payment_action_id,
    plan_change_id,
    quote_expiring_id,
    renewal_id,
    scheduled_cancel_id,
    trial_id,
    winback_id,
)
from stripe_lifecycle.domain.ledger import (
    CustomerLedger,
    LifecycleRef,
    PaymentMethodState,
    SubscriptionState,
    billing_period,
    new_state,
)
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.rules import (
    Convert,
    Decision,
    End,
    Forward,
    Refresh,
    Retime,
    Start,
    apply_batch,
    begin,
    card_expiry,
    decide,
    finished,
    legacy_invoice_routes,
    started,
    subscription_of,
)
from stripe_lifecycle.intake.normalise import normalise_event

from . import corpus
from .events import customer_event, subscription_event, unique_customer_id

DAY = 86_400
CREATED = "customer.subscription.created"
UPDATED = "customer.subscription.updated"
DELETED = "customer.subscription.deleted"
PAID = "invoice.paid"
SUCCEEDED = "invoice.payment_succeeded"
FAILED = "invoice.payment_failed"
ATTACHED = "payment_method.attached"


def at(year: int, month: int, day: int = 1) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


# A subscription in the current API shape, started on T and billed monthly at $49.
SUB = "sub_T1"
T = at(2026, 1, 10)
PERIOD_END = T + 30 * DAY
RENEWAL_ID = renewal_id(SUB, PERIOD_END)

# Grace's trialing subscription in the corpus (pre-basil shape, Cool Plan at $10 a month,
# a 14-day trial whose period is the trial).
TRIAL_FIXTURE = "customer.subscription.created.trialing"
TRIAL_SUB = "sub_trial"
_TRIALING = corpus.load(TRIAL_FIXTURE, "legacy")["data"]["object"]
TRIAL_START = _TRIALING["trial_start"]
TRIAL_END = _TRIALING["trial_end"]
TRIAL_ID = trial_id(TRIAL_SUB)

# Ada's card PaymentMethod in the corpus (also her customer's legacy `default_source`),
# here attached 2022-03-26 and valid through March 2023 (card_event sets both).
CARD_FIXTURE = "payment_method.attached"
CARD = corpus.load(CARD_FIXTURE, "legacy")["data"]["object"]["id"]
CARD_ATTACHED = 1_648_320_107
CARD_EXPIRY = at(2023, 4)
CARD_SINCE = CARD_ATTACHED - DAY

INVOICE_FIXTURES = {
    PAID: "invoice.paid",
    SUCCEEDED: "invoice.payment_succeeded",
    FAILED: "invoice.payment_failed",
}


# --- Events -------------------------------------------------------------------------


def from_fixture(name: str, customer_id: str, *, created: int, **fields: Any) -> dict[str, Any]:
    """A corpus event in the pre-basil (`legacy`) shape, whose invoices name their
    subscription at the top level: the tests below set it with `subscription=`."""
    return corpus.event(name, "legacy", customer_id, created=created, **fields)


def normalise(payload: dict[str, Any]) -> BillingEvent:
    event = normalise_event(payload)
    assert event is not None
    return event


def sub_event(
    customer_id: str,
    *,
    created: int,
    status: str = "active",
    sub_id: str = SUB,
    unit_amount: int = 4900,
    quantity: int = 1,
    period_end: int | None = PERIOD_END,
    type_: str = UPDATED,
    previous: dict[str, Any] | None = None,
    **fields: Any,
) -> BillingEvent:
    """A subscription event (2025+ shape); `fields` replace subscription fields."""
    payload = subscription_event(
        customer_id,
        created=created,
        status=status,
        sub_id=sub_id,
        unit_amount=unit_amount,
        quantity=quantity,
        type_=type_,
    )
    obj = payload["data"]["object"]
    if period_end is not None:
        for item in obj["items"]["data"]:
            item["current_period_end"] = period_end
    obj.update(fields)
    if previous is not None:
        payload["data"]["previous_attributes"] = previous
    return normalise(payload)


def trial_event(
    customer_id: str,
    *,
    created: int = TRIAL_START,
    status: str = "trialing",
    trial_end: int = TRIAL_END,
    type_: str = CREATED,
) -> BillingEvent:
    payload = from_fixture(
        TRIAL_FIXTURE,
        customer_id,
        created=created,
        id=TRIAL_SUB,
        status=status,
        trial_end=trial_end,
    )
    payload["type"] = type_
    return normalise(payload)


def invoice_event(
    customer_id: str,
    *,
    created: int,
    sub_id: str | None,
    amount_paid: int,
    type_: str = PAID,
    billing_reason: str = "subscription_cycle",
    invoice_id: str = "in_T1",
) -> BillingEvent:
    return normalise(
        from_fixture(
            INVOICE_FIXTURES[type_],
            customer_id,
            created=created,
            id=invoice_id,
            subscription=sub_id,
            amount_paid=amount_paid,
            billing_reason=billing_reason,
        )
    )


def card_event(
    customer_id: str,
    *,
    created: int = CARD_ATTACHED,
    pm_id: str = CARD,
    exp_month: int = 3,
    exp_year: int = 2023,
    type_: str = ATTACHED,
) -> BillingEvent:
    payload = from_fixture(CARD_FIXTURE, customer_id, created=created, id=pm_id)
    payload["type"] = type_
    payload["data"]["object"]["card"].update(exp_month=exp_month, exp_year=exp_year)
    if type_ == "payment_method.detached":
        # A detached PaymentMethod no longer names its customer; the previous attributes do.
        payload["data"]["object"]["customer"] = None
        payload["data"]["previous_attributes"] = {"customer": customer_id}
    return normalise(payload)


def legacy_card_expiring(
    customer_id: str, *, created: int, card_id: str, exp_month: int, exp_year: int
) -> BillingEvent:
    """Stripe's `customer.source.expiring` for a legacy Card (a Visa ending in 4242)."""
    return normalise(
        from_fixture(
            "customer.source.expiring",
            customer_id,
            created=created,
            id=card_id,
            exp_month=exp_month,
            exp_year=exp_year,
        )
    )


def customer_default(customer_id: str, *, created: int, pm_id: str | None) -> BillingEvent:
    payload = customer_event(customer_id, "ada@example.com", created=created)
    obj = payload["data"]["object"]
    obj["invoice_settings"] = {"default_payment_method": pm_id}
    obj["default_source"] = None
    return normalise(payload)


# --- The customer workflow, as far as the rules see it --------------------------------


class Customer:
    """A ledger driven the way the customer workflow drives it."""

    def __init__(self) -> None:
        self.id = unique_customer_id()
        self.ledger = CustomerLedger(new_state(self.id))

    def seed(self, *events: BillingEvent) -> None:
        """History from before the rules ran: applied, nothing decided."""
        for event in events:
            assert self.ledger.apply(event)

    def step(self, event: BillingEvent) -> list[Decision]:
        """Apply one event and return what the rules decide, without carrying it out."""
        before = self.ledger.subscription(subscription_of(event))
        assert self.ledger.apply(event)
        return without_event_sequences(decide(event, before, self.ledger))

    def batch(self, *events: BillingEvent) -> list[Decision]:
        """One batch: apply all in Stripe's order, then decide and carry out event by
        event, with the bookkeeping the customer workflow uses (every automation matches)."""
        decisions: list[Decision] = []
        for applied in apply_batch(self.ledger, list(events)):
            decided = decide(applied.event, applied.before, self.ledger)
            for decision in without_event_sequences(decided):
                decisions.append(decision)
                if begin(self.ledger, decision) and isinstance(decision, Start):
                    started(self.ledger, decision, "a")
        return decisions

    def add_ref(
        self,
        workflow_id: str,
        lifecycle: Lifecycle,
        *,
        subscription_id: str | None = None,
        subject_id: str | None = None,
        anchor: int | None = None,
        status: str = "running",
        converted: bool = False,
    ) -> LifecycleRef:
        ref = LifecycleRef(
            workflow_id=workflow_id,
            lifecycle=lifecycle,
            automation="a",
            status=status,
            subscription_id=subscription_id,
            subject_id=subject_id,
            anchor=anchor,
            converted=converted,
        )
        self.ledger.state.lifecycles.append(ref)
        return ref

    def running(self, workflow_id: str) -> LifecycleRef | None:
        for ref in self.ledger.state.lifecycles:
            if ref.workflow_id == workflow_id and ref.status == "running":
                return ref
        return None

    def ref(self, workflow_id: str) -> LifecycleRef:
        return [r for r in self.ledger.state.lifecycles if r.workflow_id == workflow_id][-1]


def without_event_sequences(decisions: list[Decision]) -> list[Decision]:
    """Every event may start an `event` sequence (its own tests, in test_trigger_rules.py):
    the rest of what an event means, here."""
    return [d for d in decisions if not (isinstance(d, Start) and d.lifecycle == Lifecycle.EVENT)]


def active_customer() -> Customer:
    """A customer whose $49 subscription started on T, with its renewal instance running."""
    cus = Customer()
    started = cus.batch(sub_event(cus.id, created=T, type_=CREATED))
    assert started == [Start(Lifecycle.RENEWAL, RENEWAL_ID, SUB, SUB, anchor=PERIOD_END)]
    return cus


def of(lifecycle: str, decisions: list[Decision]) -> list[Decision]:
    """The starts and conversions of one lifecycle among `decisions`."""
    return [d for d in decisions if isinstance(d, Start | Convert) and d.lifecycle == lifecycle]


# --- Ids and helpers ----------------------------------------------------------------


def card(
    pm_id: str = "pm_1", exp_month: int | None = 3, exp_year: int | None = 2027
) -> PaymentMethodState:
    return PaymentMethodState(
        id=pm_id, brand="visa", last4="4242", exp_month=exp_month, exp_year=exp_year, version=0
    )


@pytest.mark.parametrize(
    ("exp_month", "exp_year", "expiry"),
    [
        pytest.param(3, 2023, at(2023, 4), id="valid-through-march"),
        pytest.param(1, 2024, at(2024, 2), id="january"),
        pytest.param(11, 2026, at(2026, 12), id="november"),
        pytest.param(12, 2026, at(2027, 1), id="december-rolls-the-year"),
        pytest.param(None, 2026, None, id="no-month"),
        pytest.param(5, None, None, id="no-year"),
        pytest.param(0, 2026, None, id="month-0"),
        pytest.param(13, 2026, None, id="month-13"),
    ],
)
def test_card_expiry_is_the_first_utc_second_after_the_expiry_month(
    exp_month: int | None, exp_year: int | None, expiry: int | None
) -> None:
    assert card_expiry(card(exp_month=exp_month, exp_year=exp_year)) == expiry


@pytest.mark.parametrize(
    ("workflow_id", "expected"),
    [
        (trial_id("sub_1"), "trial-sub_1"),
        (winback_id("cus_1", "sub_1"), "winback-cus_1-sub_1"),
        (scheduled_cancel_id("sub_1"), "scheduled-cancel-sub_1"),
        (renewal_id("sub_1", 1_767_225_600), "renewal-sub_1-1767225600"),
        (plan_change_id("sub_1", 1_767_225_600), "plan-change-sub_1-1767225600"),
        (card_expiring_id("pm_1", 2027, 3), "card-expiring-pm_1-202703"),
        (card_expiring_id("pm_1", 2027, 12), "card-expiring-pm_1-202712"),
        (customer_workflow_id("cus_1"), "customer-cus_1"),
        (dunning_id("in_1"), "dunning-in_1"),
        (payment_action_id("in_1"), "payment-action-in_1"),
    ],
)
def test_instance_ids(workflow_id: str, expected: str) -> None:
    assert workflow_id == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        pytest.param(
            BillingEvent("evt_1", UPDATED, 1, False, "cus_1", subscription=SubscriptionInfo("s")),
            "s",
            id="subscription",
        ),
        pytest.param(
            BillingEvent(
                "evt_1", PAID, 1, False, "cus_1", invoice=InvoiceInfo("in_1", subscription_id="s")
            ),
            "s",
            id="subscription-invoice",
        ),
        pytest.param(
            BillingEvent("evt_1", PAID, 1, False, "cus_1", invoice=InvoiceInfo("in_1")),
            None,
            id="one-off-invoice",
        ),
        pytest.param(
            BillingEvent(
                "evt_1", ATTACHED, 1, False, "cus_1", payment_method=PaymentMethodInfo("pm")
            ),
            None,
            id="payment-method",
        ),
    ],
)
def test_subscription_of(event: BillingEvent, expected: str | None) -> None:
    assert subscription_of(event) == expected


# --- Ledger: subscriptions ----------------------------------------------------------


def subscription_state(**fields: Any) -> SubscriptionState:
    base = SubscriptionState(
        id=SUB,
        status="active",
        plan="Pro",
        price_id="price_pro_month",
        product_id="prod_pro",
        interval="month",
        quantity=1,
        mrr_cents=4900,
        currency="usd",
        current_period_end=PERIOD_END,
        trial_end=None,
        cancel_at_period_end=False,
        version=T,
    )
    return replace(base, **fields)


@pytest.mark.parametrize(
    ("fields", "scheduled", "ends_at"),
    [
        pytest.param({}, False, PERIOD_END, id="renews"),
        pytest.param({"cancel_at_period_end": True}, True, PERIOD_END, id="at-period-end"),
        pytest.param({"cancel_at": T + 5 * DAY}, True, T + 5 * DAY, id="on-a-date"),
        pytest.param(
            {"cancel_at_period_end": True, "cancel_at": T + 5 * DAY},
            True,
            T + 5 * DAY,
            id="date-wins-over-period-end",
        ),
        pytest.param(
            {"cancel_at_period_end": True, "status": "past_due"}, True, PERIOD_END, id="past-due"
        ),
        pytest.param(
            {"cancel_at_period_end": True, "status": "canceled"}, False, PERIOD_END, id="over"
        ),
        pytest.param(
            {"cancel_at": T + 5 * DAY, "status": "incomplete_expired"},
            False,
            T + 5 * DAY,
            id="never-started",
        ),
        pytest.param({"current_period_end": None}, False, None, id="no-period"),
    ],
)
def test_cancel_scheduled_and_ends_at(
    fields: dict[str, Any], scheduled: bool, ends_at: int | None
) -> None:
    sub = subscription_state(**fields)
    assert (sub.cancel_scheduled, sub.ends_at) == (scheduled, ends_at)


def test_subscription_fields_the_rules_and_emails_read_are_filled_from_the_event() -> None:
    cus = Customer()
    cus.seed(
        sub_event(
            cus.id,
            created=T,
            quantity=3,
            cancel_at=T + 20 * DAY,
            cancellation_details={"reason": "cancellation_requested", "feedback": "too_expensive"},
            pause_collection={"behavior": "void", "resumes_at": None},
            default_payment_method="pm_sub",
            metadata={"team": "7"},
        )
    )
    sub = cus.ledger.snapshot.subscriptions[SUB]
    assert (sub.amount_cents, sub.mrr_cents, sub.quantity) == (3 * 4900, 3 * 4900, 3)
    assert (sub.cancel_at, sub.cancel_at_period_end, sub.ends_at) == (
        T + 20 * DAY,
        False,
        T + 20 * DAY,
    )
    assert sub.cancellation_reason == "cancellation_requested"
    assert sub.paused is True
    assert sub.default_payment_method == "pm_sub"
    assert (sub.plan, sub.price_id, sub.product_id, sub.interval) == (
        "Pro",
        "price_pro_month",
        "prod_pro",
        "month",
    )
    assert (sub.current_period_end, sub.metadata) == (PERIOD_END, {"team": "7"})


@pytest.mark.parametrize(
    ("fields", "paused", "default_payment_method", "default_source"),
    [
        pytest.param({}, False, None, None, id="plain"),
        pytest.param({"status": "paused"}, True, None, None, id="paused-status"),
        pytest.param(
            {"default_source": "card_legacy"}, False, None, "card_legacy", id="legacy-source"
        ),
        pytest.param(
            {"default_payment_method": {"id": "pm_x", "object": "payment_method"}},
            False,
            "pm_x",
            None,
            id="expanded",
        ),
    ],
)
def test_paused_and_default_payment_method_readings(
    fields: dict[str, Any],
    paused: bool,
    default_payment_method: str | None,
    default_source: str | None,
) -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=T, **fields))
    sub = cus.ledger.snapshot.subscriptions[SUB]
    assert (sub.paused, sub.default_payment_method, sub.default_source) == (
        paused,
        default_payment_method,
        default_source,
    )


def test_old_shape_subscription_fills_the_same_fields() -> None:
    cus = Customer()
    cus.seed(trial_event(cus.id))
    sub = cus.ledger.snapshot.subscriptions[TRIAL_SUB]
    assert (sub.status, sub.trial_end, sub.current_period_end) == ("trialing", TRIAL_END, TRIAL_END)
    assert (sub.amount_cents, sub.mrr_cents, sub.currency) == (1000, 1000, "usd")
    assert (sub.cancel_at, sub.cancellation_reason, sub.paused) == (None, None, False)
    assert sub.default_payment_method is None


def test_subscription_returns_a_copy_the_ledger_does_not_share() -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=T, metadata={"team": "7"}))
    copy = cus.ledger.subscription(SUB)
    assert copy is not None
    copy.status = "canceled"
    copy.cancel_at_period_end = True
    copy.metadata["team"] = "8"
    kept = cus.ledger.snapshot.subscriptions[SUB]
    assert (kept.status, kept.cancel_at_period_end, kept.metadata) == (
        "active",
        False,
        {"team": "7"},
    )
    assert cus.ledger.subscription(SUB) == kept
    assert cus.ledger.subscription("sub_unknown") is None
    assert cus.ledger.subscription(None) is None


@pytest.mark.parametrize(
    ("status", "live"),
    [
        ("active", True),
        ("trialing", True),
        ("past_due", True),
        ("unpaid", True),
        ("paused", True),
        ("incomplete", True),
        ("incomplete_expired", False),
        ("canceled", False),
    ],
)
def test_has_live_subscription(status: str, live: bool) -> None:
    cus = Customer()
    assert not cus.ledger.has_live_subscription()
    cus.seed(sub_event(cus.id, created=T, status=status, sub_id="sub_a"))
    assert cus.ledger.has_live_subscription() is live
    assert not cus.ledger.has_live_subscription(besides="sub_a")
    cus.seed(sub_event(cus.id, created=T, status="canceled", sub_id="sub_b"))
    assert cus.ledger.has_live_subscription(besides="sub_b") is live
    cus.seed(sub_event(cus.id, created=T, status="active", sub_id="sub_c"))
    assert cus.ledger.has_live_subscription(besides="sub_a")


def test_deleted_subscription_is_not_live_whatever_its_payload_says() -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=T, status="active", type_=DELETED))
    assert cus.ledger.snapshot.subscriptions[SUB].status == "canceled"
    assert not cus.ledger.has_live_subscription()


def test_start_decisions_are_remembered_across_continue_as_new_and_bounded() -> None:
    cus = Customer()
    assert not cus.ledger.start_decided("trial-sub_1")
    cus.ledger.decide_start("trial-sub_1")
    assert cus.ledger.start_decided("trial-sub_1")
    assert not cus.ledger.start_decided("trial-sub_2")
    resumed = CustomerLedger(cus.ledger.export())
    assert resumed.start_decided("trial-sub_1")
    for n in range(200):
        resumed.decide_start(f"renewal-sub_1-{n}")
    assert not resumed.start_decided("trial-sub_1")
    assert resumed.start_decided("renewal-sub_1-0")
    assert len(resumed.export().starts_decided) == 200


# --- Ledger: payment methods --------------------------------------------------------


def test_attached_card_is_tracked_with_its_expiry() -> None:
    cus = Customer()
    cus.seed(card_event(cus.id))
    assert cus.ledger.snapshot.payment_methods == {
        CARD: PaymentMethodState(
            id=CARD, brand="visa", last4="4242", exp_month=3, exp_year=2023, version=CARD_ATTACHED
        )
    }


@pytest.mark.parametrize(
    "type_", ["payment_method.updated", "payment_method.automatically_updated"]
)
def test_newer_card_details_replace_the_expiry(type_: str) -> None:
    cus = Customer()
    cus.seed(
        card_event(cus.id),
        card_event(cus.id, created=CARD_ATTACHED + DAY, exp_month=8, exp_year=2027, type_=type_),
    )
    known = cus.ledger.snapshot.payment_methods[CARD]
    assert (known.exp_month, known.exp_year, known.version) == (8, 2027, CARD_ATTACHED + DAY)


@pytest.mark.parametrize("type_", [ATTACHED, "payment_method.updated"])
def test_older_card_event_arriving_late_does_not_overwrite_newer(type_: str) -> None:
    cus = Customer()
    cus.seed(
        card_event(
            cus.id,
            created=CARD_ATTACHED + DAY,
            exp_month=8,
            exp_year=2027,
            type_="payment_method.automatically_updated",
        ),
        card_event(cus.id, created=CARD_ATTACHED, type_=type_),
    )
    known = cus.ledger.snapshot.payment_methods[CARD]
    assert (known.exp_month, known.exp_year, known.version) == (8, 2027, CARD_ATTACHED + DAY)


def test_detached_card_is_forgotten() -> None:
    cus = Customer()
    cus.seed(card_event(cus.id), card_event(cus.id, pm_id="pm_other", exp_year=2030))
    detached = card_event(cus.id, created=CARD_ATTACHED + DAY, type_="payment_method.detached")
    assert detached.customer_id == cus.id
    cus.seed(detached)
    # Kept as a tombstone (see the next test), but never the card billed.
    live = [m.id for m in cus.ledger.snapshot.payment_methods.values() if not m.detached]
    assert live == ["pm_other"]
    billed = cus.ledger.billing_payment_method()
    assert billed is not None and billed.id == "pm_other"


def test_detach_older_than_the_card_details_is_ignored() -> None:
    cus = Customer()
    cus.seed(
        card_event(cus.id, created=CARD_ATTACHED + DAY, type_="payment_method.updated"),
        card_event(cus.id, created=CARD_ATTACHED, type_="payment_method.detached"),
    )
    assert list(cus.ledger.snapshot.payment_methods) == [CARD]


def test_attach_older_than_a_detach_arriving_late_does_not_bring_the_card_back() -> None:
    cus = Customer()
    cus.seed(
        card_event(cus.id, created=CARD_ATTACHED + DAY, type_="payment_method.detached"),
        card_event(cus.id, created=CARD_ATTACHED),
    )
    assert cus.ledger.snapshot.payment_methods[CARD].detached
    assert cus.ledger.billing_payment_method() is None


def test_payment_methods_without_an_expiry_are_not_tracked() -> None:
    cus = Customer()
    sepa = from_fixture(CARD_FIXTURE, cus.id, created=CARD_ATTACHED, id="pm_sepa", card=None)
    sepa["data"]["object"].update(type="sepa_debit", sepa_debit={"last4": "3000"})
    ach_source = from_fixture(
        "customer.source.expiring.receiver_source", cus.id, created=CARD_ATTACHED
    )
    cus.seed(normalise(sepa), normalise(ach_source))
    assert cus.ledger.snapshot.payment_methods == {}


def test_expiring_legacy_card_source_is_tracked() -> None:
    cus = Customer()
    cus.seed(
        legacy_card_expiring(
            cus.id, created=CARD_ATTACHED, card_id="card_legacy", exp_month=4, exp_year=2022
        )
    )
    assert cus.ledger.snapshot.payment_methods == {
        "card_legacy": PaymentMethodState(
            id="card_legacy",
            brand="visa",
            last4="4242",
            exp_month=4,
            exp_year=2022,
            version=CARD_ATTACHED,
        )
    }


def test_customer_defaults_are_read_from_invoice_settings_and_default_source() -> None:
    cus = Customer()
    cus.seed(normalise(customer_event(cus.id, "ada@example.com", created=CARD_ATTACHED)))
    # The real payload has only a legacy `default_source`.
    snap = cus.ledger.snapshot
    assert (snap.default_payment_method, snap.default_source) == (None, CARD)
    cus.seed(customer_default(cus.id, created=CARD_ATTACHED + 1, pm_id="pm_new"))
    assert (snap.default_payment_method, snap.default_source) == ("pm_new", None)


@pytest.mark.parametrize(
    ("customer_default_pm", "subscription_defaults", "cards", "billed"),
    [
        pytest.param(None, {}, ["pm_a"], "pm_a", id="only-card"),
        pytest.param(None, {}, ["pm_a", "pm_b"], None, id="two-cards-no-default"),
        pytest.param(None, {}, [], None, id="no-card"),
        pytest.param("pm_b", {}, ["pm_a", "pm_b"], "pm_b", id="customer-default"),
        # Stripe charges the subscription's own default before the customer's.
        pytest.param(
            "pm_b", {"sub_a": "pm_a"}, ["pm_a", "pm_b"], "pm_a", id="subscription-beats-customer"
        ),
        pytest.param(None, {"sub_a": "pm_a"}, ["pm_a", "pm_b"], "pm_a", id="subscription-default"),
        pytest.param(
            "pm_sepa", {}, ["pm_a"], None, id="default-that-is-not-a-card-is-billed-not-the-card"
        ),
        pytest.param(
            None,
            {"sub_a": "pm_a", "sub_b": "pm_b"},
            ["pm_a", "pm_b"],
            "pm_b",
            id="primary-subscription-past-due-outranks-active",
        ),
    ],
)
def test_billing_payment_method(
    customer_default_pm: str | None,
    subscription_defaults: dict[str, str],
    cards: list[str],
    billed: str | None,
) -> None:
    cus = Customer()
    statuses = {"sub_a": "active", "sub_b": "past_due"}
    for sub_id, pm_id in subscription_defaults.items():
        cus.seed(
            sub_event(
                cus.id,
                created=CARD_SINCE,
                status=statuses[sub_id],
                sub_id=sub_id,
                default_payment_method=pm_id,
            )
        )
    for n, pm_id in enumerate(cards):
        cus.seed(card_event(cus.id, created=CARD_ATTACHED + n, pm_id=pm_id))
    if customer_default_pm is not None:
        cus.seed(customer_default(cus.id, created=CARD_ATTACHED + 10, pm_id=customer_default_pm))
    found = cus.ledger.billing_payment_method()
    assert (found.id if found else None) == billed


@pytest.mark.parametrize(
    ("subscription_defaults", "customer_defaults", "billed"),
    [
        (("pm_sub", "card_sub"), ("pm_cus", "card_cus"), "pm_sub"),
        ((None, "card_sub"), ("pm_cus", "card_cus"), "card_sub"),
        ((None, None), ("pm_cus", "card_cus"), "pm_cus"),
        ((None, None), (None, "card_cus"), "card_cus"),
    ],
)
def test_stripes_order_of_defaults(
    subscription_defaults: tuple[str | None, str | None],
    customer_defaults: tuple[str | None, str | None],
    billed: str,
) -> None:
    # subscription.default_payment_method > subscription.default_source >
    # customer invoice_settings.default_payment_method > customer.default_source.
    cus = Customer()
    for n, pm_id in enumerate(["pm_sub", "card_sub", "pm_cus", "card_cus"]):
        cus.seed(card_event(cus.id, created=CARD_ATTACHED + n, pm_id=pm_id))
    payload = customer_event(cus.id, "ada@example.com", created=CARD_ATTACHED + 10)
    pm, source = customer_defaults
    payload["data"]["object"].update(
        invoice_settings={"default_payment_method": pm}, default_source=source
    )
    cus.seed(normalise(payload))
    pm, source = subscription_defaults
    cus.seed(
        sub_event(
            cus.id, created=CARD_ATTACHED + 11, default_payment_method=pm, default_source=source
        )
    )
    found = cus.ledger.billing_payment_method()
    assert found is not None and found.id == billed


# --- Trial --------------------------------------------------------------------------


def test_trialing_subscription_starts_its_trial_anchored_to_the_trial_end() -> None:
    cus = Customer()
    assert cus.step(trial_event(cus.id)) == [
        Start(Lifecycle.TRIAL, TRIAL_ID, TRIAL_SUB, TRIAL_SUB, anchor=TRIAL_END)
    ]


def test_trial_seen_after_its_end_starts_nothing() -> None:
    cus = Customer()
    assert cus.step(trial_event(cus.id, created=TRIAL_END)) == []


@pytest.mark.parametrize("prior", ["decided-without-automation", "running", "finished"])
def test_trial_starts_once(prior: str) -> None:
    cus = Customer()
    if prior == "decided-without-automation":
        cus.ledger.decide_start(TRIAL_ID)
    else:
        status = "running" if prior == "running" else "expired"
        cus.add_ref(
            TRIAL_ID, Lifecycle.TRIAL, subscription_id=TRIAL_SUB, anchor=TRIAL_END, status=status
        )
    assert cus.step(trial_event(cus.id, type_=UPDATED)) == []


def trialing_customer() -> Customer:
    cus = Customer()
    assert cus.batch(trial_event(cus.id)) == [
        Start(Lifecycle.TRIAL, TRIAL_ID, TRIAL_SUB, TRIAL_SUB, anchor=TRIAL_END)
    ]
    return cus


@pytest.mark.parametrize("trial_end", [TRIAL_END + 7 * DAY, TRIAL_END - DAY])
def test_moved_trial_end_retimes_the_trial(trial_end: int) -> None:
    cus = trialing_customer()
    moved = trial_event(cus.id, created=TRIAL_START + 60, trial_end=trial_end, type_=UPDATED)
    assert cus.batch(moved) == [Retime(TRIAL_ID, trial_end)]
    assert cus.ref(TRIAL_ID).anchor == trial_end
    again = trial_event(cus.id, created=TRIAL_START + 120, trial_end=trial_end, type_=UPDATED)
    assert cus.batch(again) == []


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("canceled", "expired"),
        ("incomplete_expired", "expired"),
        ("paused", "expired"),
        ("past_due", "payment_failed"),
        ("unpaid", "payment_failed"),
    ],
)
def test_trial_that_did_not_become_a_paying_subscription_ends(status: str, outcome: str) -> None:
    cus = trialing_customer()
    ended = trial_event(cus.id, created=TRIAL_END, status=status, type_=UPDATED)
    assert cus.step(ended) == [End(TRIAL_ID, outcome)]


def test_deleted_trial_ends_and_the_customer_is_up_for_win_back() -> None:
    cus = trialing_customer()
    deleted = trial_event(cus.id, created=TRIAL_START + DAY, status="canceled", type_=DELETED)
    assert cus.step(deleted) == [
        End(TRIAL_ID, "subscription_deleted"),
        Start(Lifecycle.WINBACK, winback_id(cus.id, TRIAL_SUB), TRIAL_SUB, TRIAL_SUB),
    ]


def test_trial_becoming_active_is_not_yet_a_conversion() -> None:
    cus = trialing_customer()
    # The old-shape payload keeps the trial's period: it ends after this event.
    active = trial_event(cus.id, created=TRIAL_END - 60, status="active", type_=UPDATED)
    assert cus.step(active) == [
        Start(
            Lifecycle.RENEWAL,
            renewal_id(TRIAL_SUB, TRIAL_END),
            TRIAL_SUB,
            TRIAL_SUB,
            anchor=TRIAL_END,
        )
    ]


def test_zero_invoice_of_a_trial_is_not_a_conversion() -> None:
    cus = trialing_customer()
    zero = invoice_event(
        cus.id,
        created=TRIAL_START,
        sub_id=TRIAL_SUB,
        amount_paid=0,
        billing_reason="subscription_create",
    )
    assert cus.step(zero) == []


def trial_converted(invoice_id: str = "in_T1") -> Convert:
    return Convert(
        "trial_converted",
        Lifecycle.TRIAL,
        TRIAL_ID,
        TRIAL_SUB,
        mrr_delta_cents=1000,
        amount_cents=1200,
        currency="usd",
        invoice_id=invoice_id,
    )


@pytest.mark.parametrize("type_", [PAID, SUCCEEDED])
def test_first_paid_invoice_converts_the_trial(type_: str) -> None:
    cus = trialing_customer()
    # The amount paid (with tax, say) is what was charged; the MRR is the subscription's.
    paid = invoice_event(cus.id, created=TRIAL_END, sub_id=TRIAL_SUB, amount_paid=1200, type_=type_)
    assert cus.step(paid) == [trial_converted(), End(TRIAL_ID, "converted")]


def test_paid_and_payment_succeeded_of_one_payment_convert_once() -> None:
    cus = trialing_customer()
    paid, succeeded = (
        invoice_event(cus.id, created=TRIAL_END, sub_id=TRIAL_SUB, amount_paid=1200, type_=t)
        for t in (PAID, SUCCEEDED)
    )
    assert cus.batch(paid, succeeded) == [trial_converted(), End(TRIAL_ID, "converted")]
    assert (cus.ref(TRIAL_ID).status, cus.ref(TRIAL_ID).converted) == ("converted", True)


def test_second_payment_event_gives_nothing_once_the_trial_is_marked_converted() -> None:
    cus = trialing_customer()
    succeeded = invoice_event(
        cus.id, created=TRIAL_END, sub_id=TRIAL_SUB, amount_paid=1200, type_=SUCCEEDED
    )
    assert cus.step(succeeded) == [trial_converted(), End(TRIAL_ID, "converted")]
    cus.ref(TRIAL_ID).converted = True
    paid = invoice_event(cus.id, created=TRIAL_END, sub_id=TRIAL_SUB, amount_paid=1200)
    assert cus.step(paid) == []
    # Nor does any later renewal payment of the subscription.
    later = invoice_event(
        cus.id, created=TRIAL_END + 30 * DAY, sub_id=TRIAL_SUB, amount_paid=1200, invoice_id="in_2"
    )
    assert cus.step(later) == []


def test_finished_unconverted_trial_still_converts_without_an_end() -> None:
    cus = trialing_customer()
    assert cus.batch(trial_event(cus.id, created=TRIAL_END, status="past_due", type_=UPDATED)) == [
        End(TRIAL_ID, "payment_failed")
    ]
    # Dunning recovered the first charge.
    recovered = invoice_event(
        cus.id, created=TRIAL_END + 3 * DAY, sub_id=TRIAL_SUB, amount_paid=1200
    )
    assert cus.step(recovered) == [trial_converted()]


def test_payment_of_a_subscription_without_a_trial_converts_nothing() -> None:
    cus = active_customer()
    first = invoice_event(
        cus.id, created=T, sub_id=SUB, amount_paid=4900, billing_reason="subscription_create"
    )
    assert cus.step(first) == []


# How the subscription and invoice events of one moment can reach the customer workflow.
DELIVERY_ORDERS = [
    "subscription-then-invoice",
    "invoice-then-subscription",
    "one-batch-subscription-first",
    "one-batch-invoice-first",
]


def delivered(
    cus: Customer, order: str, subscription: BillingEvent, invoice: BillingEvent
) -> list[Decision]:
    """What `cus` decides on the two events, delivered in `order` (one of DELIVERY_ORDERS)."""
    if order == "subscription-then-invoice":
        return cus.batch(subscription) + cus.batch(invoice)
    if order == "invoice-then-subscription":
        return cus.batch(invoice) + cus.batch(subscription)
    if order == "one-batch-subscription-first":
        return cus.batch(subscription, invoice)
    assert order == "one-batch-invoice-first"
    return cus.batch(invoice, subscription)


@pytest.mark.parametrize("order", DELIVERY_ORDERS)
def test_trial_conversion_race_converts_exactly_once(order: str) -> None:
    cus = Customer()
    trial_end = T + 14 * DAY
    started = cus.batch(
        sub_event(
            cus.id,
            created=T,
            status="trialing",
            period_end=trial_end,
            trial_end=trial_end,
            type_=CREATED,
        )
    )
    assert started == [Start(Lifecycle.TRIAL, trial_id(SUB), SUB, SUB, anchor=trial_end)]
    activated = sub_event(
        cus.id,
        created=trial_end,
        status="active",
        period_end=trial_end + 30 * DAY,
        trial_end=trial_end,
        previous={"status": "trialing"},
    )
    paid = invoice_event(cus.id, created=trial_end, sub_id=SUB, amount_paid=4900)
    decisions = delivered(cus, order, activated, paid)
    assert [d for d in decisions if isinstance(d, Convert)] == [
        Convert(
            "trial_converted",
            Lifecycle.TRIAL,
            trial_id(SUB),
            SUB,
            mrr_delta_cents=4900,
            amount_cents=4900,
            currency="usd",
            invoice_id="in_T1",
        )
    ]
    # Only the trial's ends: when the subscription comes first, this first cycle invoice also
    # ends the renewal the activation started (see the renewal race below).
    trial_ends = [d for d in decisions if isinstance(d, End) and d.workflow_id == trial_id(SUB)]
    assert trial_ends == [End(trial_id(SUB), "converted")]
    assert of(Lifecycle.RENEWAL, decisions) == [
        Start(
            Lifecycle.RENEWAL, renewal_id(SUB, trial_end + 30 * DAY), SUB, SUB, trial_end + 30 * DAY
        )
    ]


# --- Scheduled cancellation ---------------------------------------------------------

SC_ID = scheduled_cancel_id(SUB)


def scheduled(anchor: int) -> Start:
    return Start(Lifecycle.SCHEDULED_CANCEL, SC_ID, SUB, SUB, anchor=anchor, reusable=True)


@pytest.mark.parametrize(
    ("fields", "anchor"),
    [
        pytest.param({"cancel_at_period_end": True}, PERIOD_END, id="at-period-end"),
        pytest.param({"cancel_at": T + 10 * DAY}, T + 10 * DAY, id="on-a-date"),
    ],
)
def test_scheduling_a_cancellation_starts_it_and_ends_the_renewal(
    fields: dict[str, Any], anchor: int
) -> None:
    cus = active_customer()
    cancel = sub_event(cus.id, created=T + DAY, previous={"cancel_at_period_end": False}, **fields)
    assert cus.step(cancel) == [scheduled(anchor), End(RENEWAL_ID, "cancel_scheduled")]


def test_first_sight_of_an_already_scheduled_cancellation_starts_it() -> None:
    cus = Customer()
    assert cus.step(sub_event(cus.id, created=T, cancel_at_period_end=True)) == [
        scheduled(PERIOD_END)
    ]


def test_cancellation_already_due_starts_nothing() -> None:
    cus = Customer()
    assert cus.step(sub_event(cus.id, created=T, cancel_at=T - DAY)) == []


def test_ended_subscription_is_no_scheduled_cancellation() -> None:
    cus = Customer()
    ended = sub_event(cus.id, created=T, status="canceled", cancel_at_period_end=True)
    assert cus.step(ended) == []


def scheduled_customer(cancel_at: int | None = None) -> Customer:
    """An active customer who scheduled cancelling at period end (or on `cancel_at`)."""
    cus = active_customer()
    fields = {"cancel_at_period_end": True} if cancel_at is None else {"cancel_at": cancel_at}
    assert cus.batch(sub_event(cus.id, created=T + DAY, **fields)) == [
        scheduled(cancel_at or PERIOD_END),
        End(RENEWAL_ID, "cancel_scheduled"),
    ]
    return cus


def test_still_scheduled_subscription_changing_something_else_gives_nothing() -> None:
    cus = scheduled_customer()
    other = sub_event(cus.id, created=T + 2 * DAY, cancel_at_period_end=True, metadata={"x": "1"})
    assert cus.step(other) == []


def test_undoing_the_cancellation_saves_the_subscription() -> None:
    cus = scheduled_customer()
    undone = sub_event(cus.id, created=T + 2 * DAY, previous={"cancel_at_period_end": True})
    # The renewal of this period ended when the cancellation was scheduled: it restarts
    # under the same id, so the reminders come back.
    assert cus.batch(undone) == [
        Convert(
            "saved",
            Lifecycle.SCHEDULED_CANCEL,
            SC_ID,
            SUB,
            mrr_delta_cents=4900,
            amount_cents=0,
            currency="usd",
        ),
        End(SC_ID, "saved"),
        Start(Lifecycle.RENEWAL, RENEWAL_ID, SUB, SUB, anchor=PERIOD_END, reusable=True),
    ]
    # Scheduled again: the same id is started again.
    again = sub_event(cus.id, created=T + 3 * DAY, cancel_at=T + 9 * DAY)
    assert cus.batch(again) == [scheduled(T + 9 * DAY), End(RENEWAL_ID, "cancel_scheduled")]
    assert [r.status for r in cus.ledger.state.lifecycles if r.workflow_id == SC_ID] == [
        "saved",
        "running",
    ]


def test_subscription_ending_ends_the_scheduled_cancellation_and_starts_win_back() -> None:
    cus = scheduled_customer()
    deleted = sub_event(
        cus.id, created=PERIOD_END, status="canceled", cancel_at_period_end=True, type_=DELETED
    )
    assert cus.step(deleted) == [
        End(SC_ID, "cancelled"),
        Start(Lifecycle.WINBACK, winback_id(cus.id, SUB), SUB, SUB),
    ]


@pytest.mark.parametrize(
    ("fields", "anchor"),
    [
        pytest.param({"cancel_at": T + 12 * DAY}, T + 12 * DAY, id="later-date"),
        pytest.param({"cancel_at": T + 5 * DAY}, T + 5 * DAY, id="earlier-date"),
        pytest.param({"cancel_at_period_end": True}, PERIOD_END, id="date-to-period-end"),
    ],
)
def test_moved_cancellation_date_retimes(fields: dict[str, Any], anchor: int) -> None:
    cus = scheduled_customer(cancel_at=T + 10 * DAY)
    assert cus.ref(SC_ID).anchor == T + 10 * DAY
    moved = sub_event(cus.id, created=T + 2 * DAY, **fields)
    assert cus.batch(moved) == [Retime(SC_ID, anchor)]
    assert cus.ref(SC_ID).anchor == anchor


# --- Win-back -----------------------------------------------------------------------

DELETED_FIXTURE = "customer.subscription.deleted"
DELETED_SUB = "sub_000000000000000000000000"
DELETED_AT = 1_648_320_097


def deleted_event(customer_id: str) -> BillingEvent:
    return normalise(from_fixture(DELETED_FIXTURE, customer_id, created=DELETED_AT, id=DELETED_SUB))


def test_cancelled_last_subscription_starts_win_back() -> None:
    cus = Customer()
    assert cus.step(deleted_event(cus.id)) == [
        Start(Lifecycle.WINBACK, f"winback-{cus.id}-{DELETED_SUB}", DELETED_SUB, DELETED_SUB)
    ]


@pytest.mark.parametrize(
    ("other_status", "churned"),
    [
        ("active", False),
        ("trialing", False),
        ("past_due", False),
        ("unpaid", False),
        ("paused", False),
        ("incomplete", False),
        ("canceled", True),
        ("incomplete_expired", True),
    ],
)
def test_win_back_only_when_no_other_subscription_is_live(other_status: str, churned: bool) -> None:
    cus = Customer()
    cus.seed(
        sub_event(
            cus.id,
            created=DELETED_AT - DAY,
            status=other_status,
            sub_id="sub_other",
            trial_end=None,
        )
    )
    expected = [Start(Lifecycle.WINBACK, winback_id(cus.id, DELETED_SUB), DELETED_SUB, DELETED_SUB)]
    assert cus.step(deleted_event(cus.id)) == (expected if churned else [])


def test_win_back_starts_once() -> None:
    cus = Customer()
    cus.ledger.decide_start(winback_id(cus.id, DELETED_SUB))
    assert cus.step(deleted_event(cus.id)) == []


def churned_customer() -> Customer:
    cus = Customer()
    assert len(cus.batch(deleted_event(cus.id))) == 1
    return cus


def comeback(cus: Customer, **fields: Any) -> BillingEvent:
    """The churned customer's new subscription `sub_new`, created the day after."""
    return sub_event(cus.id, created=DELETED_AT + DAY, sub_id="sub_new", type_=CREATED, **fields)


def reactivated(workflow_id: str, mrr_delta_cents: int) -> Convert:
    """The win-back `workflow_id` credited with a new subscription `sub_new`."""
    return Convert(
        "reactivated",
        Lifecycle.WINBACK,
        workflow_id,
        "sub_new",
        mrr_delta_cents=mrr_delta_cents,
        amount_cents=0,
        currency="usd",
    )


def test_new_active_subscription_converts_the_win_back() -> None:
    cus = churned_customer()
    wid = winback_id(cus.id, DELETED_SUB)
    period_end = DELETED_AT + 31 * DAY
    back = comeback(cus, unit_amount=9900, period_end=period_end)
    assert cus.batch(back) == [
        reactivated(wid, mrr_delta_cents=9900),
        End(wid, "reactivated"),
        Start(
            Lifecycle.RENEWAL, renewal_id("sub_new", period_end), "sub_new", "sub_new", period_end
        ),
    ]
    # The subscription coming back from a failed payment later is no second reactivation.
    cus.seed(sub_event(cus.id, created=DELETED_AT + 40 * DAY, sub_id="sub_new", status="past_due"))
    recovered = sub_event(
        cus.id,
        created=DELETED_AT + 41 * DAY,
        sub_id="sub_new",
        unit_amount=9900,
        period_end=period_end,
    )
    assert cus.step(recovered) == []


def test_incomplete_subscription_converts_the_win_back_when_its_first_payment_succeeds() -> None:
    cus = churned_customer()
    wid = winback_id(cus.id, DELETED_SUB)
    period_end = DELETED_AT + 31 * DAY
    incomplete = comeback(cus, status="incomplete", period_end=period_end)
    assert cus.batch(incomplete) == []
    active = sub_event(
        cus.id, created=DELETED_AT + DAY + 60, sub_id="sub_new", period_end=period_end
    )
    assert of(Lifecycle.WINBACK, cus.batch(active)) == [reactivated(wid, mrr_delta_cents=4900)]


@pytest.mark.parametrize(
    ("refs", "credited", "ended"),
    [
        pytest.param(
            [("w_a", "reactivated", True), ("w_b", "completed", False), ("w_c", "running", False)],
            "w_c",
            ["w_c"],
            id="latest-running",
        ),
        pytest.param(
            [("w_a", "running", False), ("w_b", "completed", False)],
            "w_b",
            ["w_a"],
            id="latest-finished-credited-running-ended",
        ),
        pytest.param(
            [("w_a", "completed", False), ("w_b", "reactivated", True)],
            "w_a",
            [],
            id="latest-unconverted",
        ),
    ],
)
def test_reactivation_is_credited_to_the_latest_unconverted_win_back(
    refs: list[tuple[str, str, bool]], credited: str, ended: list[str]
) -> None:
    cus = Customer()
    for wid, status, converted in refs:
        cus.add_ref(
            wid,
            Lifecycle.WINBACK,
            subscription_id=f"sub_{wid}",
            subject_id=f"sub_{wid}",
            status=status,
            converted=converted,
        )
    cus.ledger.decide_start(renewal_id("sub_new", PERIOD_END))
    back = sub_event(cus.id, created=T, sub_id="sub_new", type_=CREATED)
    assert cus.step(back) == [
        reactivated(credited, mrr_delta_cents=4900),
        *(End(wid, "reactivated") for wid in ended),
    ]


def test_all_win_backs_converted_gives_no_second_reactivation() -> None:
    cus = Customer()
    cus.add_ref(
        "w_a", Lifecycle.WINBACK, subscription_id="sub_a", status="reactivated", converted=True
    )
    cus.ledger.decide_start(renewal_id("sub_new", PERIOD_END))
    assert cus.step(sub_event(cus.id, created=T, sub_id="sub_new", type_=CREATED)) == []


def test_new_trial_ends_the_win_back_without_converting_it() -> None:
    cus = churned_customer()
    wid = winback_id(cus.id, DELETED_SUB)
    trial_end = DELETED_AT + 15 * DAY
    trial = comeback(cus, status="trialing", period_end=trial_end, trial_end=trial_end)
    assert cus.batch(trial) == [
        Start(Lifecycle.TRIAL, trial_id("sub_new"), "sub_new", "sub_new", anchor=trial_end),
        End(wid, "trial_started"),
    ]
    assert (cus.ref(wid).status, cus.ref(wid).converted) == ("trial_started", False)


# --- Renewal ------------------------------------------------------------------------


def test_active_subscription_starts_the_renewal_of_its_period() -> None:
    cus = Customer()
    updated = normalise(
        from_fixture(
            "customer.subscription.updated.renewal",
            cus.id,
            created=1_648_320_106,
            id="sub_000000000000000000000000",
            current_period_end=1_650_998_505,
        )
    )
    sub_id, period_end = "sub_000000000000000000000000", 1_650_998_505
    assert cus.step(updated) == [
        Start(
            Lifecycle.RENEWAL, f"renewal-{sub_id}-{period_end}", sub_id, sub_id, anchor=period_end
        )
    ]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"cancel_at_period_end": True}, id="cancel-scheduled"),
        pytest.param({"cancel_at": T + 5 * DAY}, id="cancel-on-a-date"),
        pytest.param({"pause_collection": {"behavior": "void"}}, id="collection-paused"),
        pytest.param({"status": "paused"}, id="paused"),
        pytest.param({"status": "trialing"}, id="trialing"),
        pytest.param({"status": "past_due"}, id="past-due"),
        pytest.param({"status": "incomplete"}, id="incomplete"),
        pytest.param({"period_end": T}, id="period-already-over"),
    ],
)
def test_no_renewal_for_a_subscription_that_will_not_renew(fields: dict[str, Any]) -> None:
    cus = Customer()
    assert of(Lifecycle.RENEWAL, cus.step(sub_event(cus.id, created=T, **fields))) == []


def test_renewal_starts_once() -> None:
    cus = Customer()
    cus.ledger.decide_start(RENEWAL_ID)
    assert cus.step(sub_event(cus.id, created=T)) == []


@pytest.mark.parametrize(
    ("type_", "billing_reason", "amount_paid", "outcome"),
    [
        (PAID, "subscription_cycle", 4900, "renewed"),
        (SUCCEEDED, "subscription_cycle", 4900, "renewed"),
        (FAILED, "subscription_cycle", 0, "payment_failed"),
        (PAID, "manual", 2000, None),
        (PAID, "subscription_update", 1500, None),
        (FAILED, "subscription_update", 0, None),
    ],
)
def test_renewal_ends_on_its_cycle_invoice(
    type_: str, billing_reason: str, amount_paid: int, outcome: str | None
) -> None:
    cus = active_customer()
    invoice = invoice_event(
        cus.id,
        created=PERIOD_END,
        sub_id=SUB,
        amount_paid=amount_paid,
        type_=type_,
        billing_reason=billing_reason,
    )
    # A failed subscription invoice also starts its dunning, whichever period it bills.
    dunning: list[Decision] = (
        [Start(Lifecycle.DUNNING, dunning_id("in_T1"), "in_T1", SUB, invoice=invoice.invoice)]
        if type_ == FAILED
        else []
    )
    ended: list[Decision] = [] if outcome is None else [End(RENEWAL_ID, outcome)]
    assert cus.step(invoice) == dunning + ended


def test_upcoming_invoice_ends_nothing_and_gives_the_renewal_its_real_amount() -> None:
    cus = active_customer()
    upcoming = normalise(
        from_fixture(
            "invoice.upcoming",
            cus.id,
            created=PERIOD_END - 7 * DAY,
            subscription=SUB,
            amount_due=5_390,
        )
    )
    assert cus.step(upcoming) == [Refresh(RENEWAL_ID, upcoming.invoice)]
    assert upcoming.invoice is not None and upcoming.invoice.amount_due == 5_390


def test_cycle_invoice_of_another_subscription_leaves_the_renewal_running() -> None:
    cus = active_customer()
    cus.seed(sub_event(cus.id, created=T + 1, sub_id="sub_b", period_end=PERIOD_END + DAY))
    paid = invoice_event(cus.id, created=PERIOD_END + DAY, sub_id="sub_b", amount_paid=4900)
    assert cus.step(paid) == []


def test_deleted_subscription_ends_its_renewal_and_starts_win_back() -> None:
    cus = active_customer()
    deleted = sub_event(cus.id, created=T + DAY, status="canceled", type_=DELETED)
    assert cus.step(deleted) == [
        Start(Lifecycle.WINBACK, winback_id(cus.id, SUB), SUB, SUB),
        End(RENEWAL_ID, "subscription_deleted"),
    ]


def test_period_rolling_over_renews_and_starts_the_next_renewal() -> None:
    cus = active_customer()
    next_end = PERIOD_END + 31 * DAY
    rolled = sub_event(cus.id, created=PERIOD_END, period_end=next_end)
    assert cus.step(rolled) == [
        End(RENEWAL_ID, "renewed"),
        Start(Lifecycle.RENEWAL, renewal_id(SUB, next_end), SUB, SUB, anchor=next_end),
    ]


@pytest.mark.parametrize("order", DELIVERY_ORDERS)
def test_renewal_renews_once_whichever_event_of_the_cycle_comes_first(order: str) -> None:
    cus = active_customer()
    next_end = PERIOD_END + 31 * DAY
    next_id = renewal_id(SUB, next_end)
    rolled = sub_event(cus.id, created=PERIOD_END, period_end=next_end)
    paid = invoice_event(cus.id, created=PERIOD_END, sub_id=SUB, amount_paid=4900)
    decisions = delivered(cus, order, rolled, paid)
    assert sorted(decisions, key=repr) == [
        End(RENEWAL_ID, "renewed"),
        Start(Lifecycle.RENEWAL, next_id, SUB, SUB, anchor=next_end),
    ]
    assert (cus.ref(RENEWAL_ID).status, cus.ref(next_id).status) == ("renewed", "running")


# --- Plan change --------------------------------------------------------------------

PLAN_CHANGE_FIXTURE = "customer.subscription.updated.plan_change"
PLAN_SUB = "su_00000000000000"
PLAN_PERIOD_START = 1_381_080_561
PLAN_PERIOD_END = 1_383_758_961
# $1 + 5 x $2 a month.
PLAN_MRR = 1100


@pytest.mark.parametrize(
    ("before_amount", "expected"),
    [
        pytest.param(
            4900,
            [
                Start(
                    Lifecycle.PLAN_CHANGE,
                    plan_change_id(PLAN_SUB, PLAN_PERIOD_START + DAY),
                    PLAN_SUB,
                    PLAN_SUB,
                )
            ],
            id="downgrade",
        ),
        pytest.param(
            500,
            [Convert("expansion", Lifecycle.UPGRADE, None, PLAN_SUB, 600, 0, "usd")],
            id="upgrade",
        ),
        pytest.param(PLAN_MRR, [], id="same-mrr"),
    ],
)
def test_plan_change_of_a_real_payload(before_amount: int, expected: list[Decision]) -> None:
    cus = Customer()
    started = cus.batch(
        sub_event(
            cus.id,
            created=PLAN_PERIOD_START,
            sub_id=PLAN_SUB,
            unit_amount=before_amount,
            period_end=PLAN_PERIOD_END,
            type_=CREATED,
        )
    )
    assert of(Lifecycle.RENEWAL, started) == [
        Start(
            Lifecycle.RENEWAL,
            renewal_id(PLAN_SUB, PLAN_PERIOD_END),
            PLAN_SUB,
            PLAN_SUB,
            PLAN_PERIOD_END,
        )
    ]
    changed = normalise(
        from_fixture(
            PLAN_CHANGE_FIXTURE,
            cus.id,
            created=PLAN_PERIOD_START + DAY,
            id=PLAN_SUB,
            current_period_start=PLAN_PERIOD_START,
            current_period_end=PLAN_PERIOD_END,
        )
    )
    assert changed.previous_attributes == ["plan"]
    assert cus.step(changed) == expected


@pytest.mark.parametrize(
    ("previous", "unit_amount", "quantity", "expected"),
    [
        pytest.param(
            {"items": {"data": []}},
            9900,
            1,
            [Convert("expansion", Lifecycle.UPGRADE, None, SUB, 5000, 0, "usd")],
            id="pricier-item",
        ),
        pytest.param(
            {"quantity": 1},
            4900,
            3,
            [Convert("expansion", Lifecycle.UPGRADE, None, SUB, 9800, 0, "usd")],
            id="more-seats",
        ),
        pytest.param(
            {"plan": {"id": "price_pro"}},
            2900,
            1,
            [Start(Lifecycle.PLAN_CHANGE, plan_change_id(SUB, T + DAY), SUB, SUB)],
            id="cheaper-plan",
        ),
        pytest.param({"items": {"data": []}}, 4900, 1, [], id="same-mrr"),
        pytest.param(None, 9900, 1, [], id="no-previous-attributes"),
        pytest.param({"metadata": {}}, 9900, 1, [], id="not-a-plan-change"),
    ],
)
def test_plan_change(
    previous: dict[str, Any] | None, unit_amount: int, quantity: int, expected: list[Decision]
) -> None:
    cus = active_customer()
    changed = sub_event(
        cus.id, created=T + DAY, unit_amount=unit_amount, quantity=quantity, previous=previous
    )
    assert cus.step(changed) == expected


def test_plan_change_starts_once() -> None:
    cus = active_customer()
    cus.ledger.decide_start(plan_change_id(SUB, T + DAY))
    cheaper = sub_event(cus.id, created=T + DAY, unit_amount=2900, previous={"items": {}})
    assert cus.step(cheaper) == []


def test_plan_change_in_another_currency_is_no_mrr_change() -> None:
    cus = active_customer()
    euro = sub_event(
        cus.id, created=T + DAY, unit_amount=9900, currency="eur", previous={"items": {}}
    )
    assert cus.step(euro) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [("trialing", "trialing"), ("trialing", "active"), ("active", "trialing")],
)
def test_plan_change_of_a_trial_is_not_revenue(before: str, after: str) -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=T, status=before))
    changed = sub_event(
        cus.id, created=T + DAY, status=after, unit_amount=9900, previous={"items": {}}
    )
    decisions = cus.step(changed)
    assert of(Lifecycle.UPGRADE, decisions) == []
    assert of(Lifecycle.PLAN_CHANGE, decisions) == []


def test_first_sight_of_a_subscription_is_no_plan_change() -> None:
    cus = Customer()
    changed = sub_event(cus.id, created=T, unit_amount=9900, previous={"items": {}})
    assert cus.step(changed) == [Start(Lifecycle.RENEWAL, RENEWAL_ID, SUB, SUB, anchor=PERIOD_END)]


@pytest.mark.parametrize(
    ("refs", "credited", "ended"),
    [
        pytest.param([], None, [], id="nobody-campaigned"),
        pytest.param([("u_1", "running", False)], "u_1", ["u_1"], id="running-campaign"),
        pytest.param(
            [("u_1", "completed", False), ("u_2", "running", False)],
            "u_2",
            ["u_2"],
            id="latest",
        ),
        pytest.param(
            [("u_1", "running", False), ("u_2", "completed", False)],
            "u_2",
            ["u_1"],
            id="latest-finished-credited-running-ended",
        ),
        pytest.param([("u_1", "upgraded", True)], None, [], id="already-converted"),
    ],
)
def test_upgrade_is_credited_to_the_latest_unconverted_upgrade_campaign(
    refs: list[tuple[str, str, bool]], credited: str | None, ended: list[str]
) -> None:
    cus = active_customer()
    for wid, status, converted in refs:
        cus.add_ref(
            wid,
            Lifecycle.UPGRADE,
            subscription_id=SUB,
            subject_id=SUB,
            status=status,
            converted=converted,
        )
    upgraded = sub_event(cus.id, created=T + DAY, unit_amount=9900, previous={"items": {}})
    assert cus.step(upgraded) == [
        Convert("expansion", Lifecycle.UPGRADE, credited, SUB, 5000, 0, "usd"),
        *(End(wid, "upgraded") for wid in ended),
    ]


# --- Card expiring ------------------------------------------------------------------


def card_start(pm_id: str = CARD, yyyymm: str = "202303", expiry: int = CARD_EXPIRY) -> Start:
    return Start(
        Lifecycle.CARD_EXPIRING, f"card-expiring-{pm_id}-{yyyymm}", pm_id, None, anchor=expiry
    )


def subscribed_customer(**fields: Any) -> Customer:
    """A customer with a live subscription since the day before the card was attached."""
    cus = Customer()
    cus.seed(sub_event(cus.id, created=CARD_SINCE, period_end=CARD_SINCE + 30 * DAY, **fields))
    return cus


def test_billing_card_starts_card_expiring_anchored_to_its_expiry() -> None:
    cus = subscribed_customer()
    assert cus.step(card_event(cus.id)) == [card_start()]


def test_december_card_expires_at_new_year() -> None:
    cus = subscribed_customer()
    december = card_event(cus.id, exp_month=12, exp_year=2022)
    assert cus.step(december) == [card_start(yyyymm="202212", expiry=at(2023, 1))]


@pytest.mark.parametrize("status", ["canceled", "incomplete_expired"])
def test_no_card_expiring_without_a_live_subscription(status: str) -> None:
    cus = Customer()
    assert cus.step(card_event(cus.id)) == []
    cus = subscribed_customer(status=status)
    assert cus.step(card_event(cus.id, pm_id="pm_2")) == []


def test_expired_card_starts_nothing() -> None:
    cus = subscribed_customer()
    assert cus.step(card_event(cus.id, exp_month=2, exp_year=2022)) == []


def test_card_expiring_starts_once() -> None:
    cus = subscribed_customer()
    cus.ledger.decide_start(f"card-expiring-{CARD}-202303")
    assert cus.step(card_event(cus.id)) == []


def test_only_the_card_being_billed_is_watched() -> None:
    cus = subscribed_customer()
    cus.seed(card_event(cus.id, pm_id="pm_a", exp_year=2024))
    # Two cards and no default: which one Stripe charges is unknown.
    assert cus.step(card_event(cus.id, created=CARD_ATTACHED + 1, pm_id="pm_b")) == []
    chosen = customer_default(cus.id, created=CARD_ATTACHED + 2, pm_id="pm_b")
    assert cus.step(chosen) == [card_start("pm_b")]


def test_subscription_default_card_is_watched_when_the_customer_has_none() -> None:
    cus = subscribed_customer(default_payment_method="pm_a")
    cus.seed(card_event(cus.id, pm_id="pm_a", exp_year=2024))
    assert cus.step(card_event(cus.id, created=CARD_ATTACHED + 1, pm_id="pm_b")) == [
        card_start("pm_a", "202403", at(2024, 4))
    ]


def watching_customer() -> Customer:
    """A subscribed customer whose default card (valid through March 2023) is watched."""
    cus = subscribed_customer()
    assert cus.batch(card_event(cus.id)) == [card_start()]
    return cus


def test_new_default_card_replaces_the_watched_one() -> None:
    cus = watching_customer()
    cus.seed(card_event(cus.id, created=CARD_ATTACHED + 1, pm_id="pm_new", exp_year=2027))
    chosen = customer_default(cus.id, created=CARD_ATTACHED + 2, pm_id="pm_new")
    assert cus.step(chosen) == [
        End(card_start().workflow_id, "replaced"),
        card_start("pm_new", "202703", at(2027, 4)),
    ]


def test_detached_card_ends_its_watch() -> None:
    cus = watching_customer()
    detached = card_event(cus.id, created=CARD_ATTACHED + DAY, type_="payment_method.detached")
    assert cus.step(detached) == [End(card_start().workflow_id, "replaced")]


def test_new_expiry_from_the_card_network_restarts_the_watch() -> None:
    cus = watching_customer()
    renewed = card_event(
        cus.id,
        created=CARD_ATTACHED + DAY,
        exp_month=3,
        exp_year=2027,
        type_="payment_method.automatically_updated",
    )
    assert cus.step(renewed) == [
        End(card_start().workflow_id, "card_updated"),
        card_start(yyyymm="202703", expiry=at(2027, 4)),
    ]


def test_cancelled_subscription_ends_the_watch() -> None:
    cus = watching_customer()
    deleted = sub_event(cus.id, created=CARD_ATTACHED + DAY, status="canceled", type_=DELETED)
    assert cus.step(deleted) == [
        Start(Lifecycle.WINBACK, winback_id(cus.id, SUB), SUB, SUB),
        End(card_start().workflow_id, "no_subscription"),
    ]


def test_unrelated_event_leaves_the_watch_running() -> None:
    cus = watching_customer()
    paid = invoice_event(cus.id, created=CARD_ATTACHED + DAY, sub_id=None, amount_paid=2000)
    assert cus.step(paid) == []


LEGACY_AT = 1_326_853_478


def legacy_customer() -> Customer:
    """A 2012 customer with a live subscription and a card PaymentMethod of their own."""
    cus = Customer()
    cus.seed(
        sub_event(cus.id, created=LEGACY_AT - DAY, period_end=LEGACY_AT + 29 * DAY),
        card_event(cus.id, created=LEGACY_AT - DAY, pm_id="pm_a", exp_year=2014),
    )
    return cus


def test_expiring_legacy_card_is_watched() -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=LEGACY_AT - DAY, period_end=LEGACY_AT + 29 * DAY))
    expiring = legacy_card_expiring(
        cus.id, created=LEGACY_AT, card_id="card_legacy", exp_month=2, exp_year=2012
    )
    assert cus.step(expiring) == [card_start("card_legacy", "201202", at(2012, 3))]


def test_expiring_legacy_card_is_watched_among_several_cards() -> None:
    cus = legacy_customer()
    expiring = legacy_card_expiring(
        cus.id, created=LEGACY_AT, card_id="card_legacy", exp_month=2, exp_year=2012
    )
    assert cus.step(expiring) == [card_start("card_legacy", "201202", at(2012, 3))]


def test_legacy_card_watch_survives_the_next_unrelated_event() -> None:
    cus = legacy_customer()
    expiring = legacy_card_expiring(
        cus.id, created=LEGACY_AT, card_id="card_legacy", exp_month=2, exp_year=2012
    )
    assert cus.batch(expiring) == [card_start("card_legacy", "201202", at(2012, 3))]
    paid = invoice_event(cus.id, created=LEGACY_AT + DAY, sub_id=None, amount_paid=2000)
    assert cus.step(paid) == []


# --- Regressions found in review ----------------------------------------------------


def test_two_upgrades_in_one_batch_add_up_to_the_real_gain() -> None:
    """$49 → $99 → $149 delivered together: +$50 and +$50, not +$100 and +$50."""
    cus = active_customer()
    items: dict[str, Any] = {"items": {"data": []}}
    decisions = cus.batch(
        sub_event(cus.id, created=T + DAY, unit_amount=9900, previous=items),
        sub_event(cus.id, created=T + DAY + 1, unit_amount=14900, previous=items),
    )
    gains = [d.mrr_delta_cents for d in decisions if isinstance(d, Convert)]
    assert gains == [5000, 5000]


def test_a_cancellation_that_went_through_is_never_saved() -> None:
    """An update and the deletion of a scheduled cancellation in one batch: cancelled."""
    cus = scheduled_customer()
    decisions = cus.batch(
        sub_event(cus.id, created=T + 2 * DAY, cancel_at_period_end=True, metadata={"x": "1"}),
        sub_event(cus.id, created=T + 3 * DAY, status="canceled", type_=DELETED),
    )
    assert not [d for d in decisions if isinstance(d, Convert)]
    assert End(SC_ID, "cancelled") in decisions
    assert End(SC_ID, "saved") not in decisions


def test_a_comeback_through_a_trial_is_credited_once_to_the_trial() -> None:
    cus = churned_customer()
    trial_end = DELETED_AT + 15 * DAY
    cus.batch(comeback(cus, status="trialing", period_end=trial_end, trial_end=trial_end))
    paid = invoice_event(
        cus.id, created=trial_end + 60, sub_id="sub_new", amount_paid=4900, invoice_id="in_new"
    )
    active = sub_event(
        cus.id, created=trial_end + 30, sub_id="sub_new", period_end=trial_end + 30 * DAY
    )
    conversions = [d for d in cus.batch(active, paid) if isinstance(d, Convert)]
    assert [(c.kind, c.lifecycle) for c in conversions] == [("trial_converted", Lifecycle.TRIAL)]


def test_a_second_card_without_a_known_default_replaces_nothing() -> None:
    cus = subscribed_customer()
    assert cus.step(card_event(cus.id)) == [card_start()]
    second = card_event(cus.id, created=CARD_ATTACHED + DAY, pm_id="pm_other", exp_year=2030)
    assert [d for d in cus.step(second) if isinstance(d, End)] == []


# --- Invoice lifecycles: dunning and payment action ------------------------------------

DUNNING_ID = dunning_id("in_T1")
PAYMENT_ACTION_ID = payment_action_id("in_T1")
ACTION_REQUIRED = "invoice.payment_action_required"


def invoice_of(
    type_: str,
    customer_id: str,
    *,
    sub_id: str | None = SUB,
    version: str = "legacy",
    **fields: Any,
) -> BillingEvent:
    """An invoice event of any type, from the failed-invoice payload in the shape of API
    version `version`; `fields` replace invoice fields."""
    payload = corpus.invoice_event(
        INVOICE_FIXTURES[FAILED],
        version,
        customer_id,
        created=T + DAY,
        subscription=sub_id,
        id="in_T1",
        amount_paid=0,
        billing_reason="subscription_cycle",
    )
    payload["type"] = type_
    payload["id"] = f"evt_{type_}_{fields.pop('n', 1)}"
    payload["data"]["object"].update(fields)
    return normalise(payload)


def in_dunning(lifecycle: Lifecycle = Lifecycle.DUNNING, version: str = "legacy") -> Customer:
    cus = active_customer()
    trigger = FAILED if lifecycle == Lifecycle.DUNNING else ACTION_REQUIRED
    first = invoice_of(trigger, cus.id, version=version)
    [start] = [d for d in cus.batch(first) if isinstance(d, Start)]
    assert start.lifecycle == lifecycle
    return cus


@pytest.mark.parametrize(
    ("type_", "sub_id", "starts"),
    [
        (FAILED, SUB, Lifecycle.DUNNING),
        # Dunning is for subscription invoices; a one-off invoice has no plan to save.
        (FAILED, None, None),
        (ACTION_REQUIRED, SUB, Lifecycle.PAYMENT_ACTION),
        (ACTION_REQUIRED, None, Lifecycle.PAYMENT_ACTION),
        # Any finalized invoice may be followed up (`invoice_finalized`, rules version 3).
        ("invoice.finalized", SUB, Lifecycle.INVOICE_FINALIZED),
    ],
)
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_invoice_lifecycles_start_on_their_trigger(
    type_: str, sub_id: str | None, starts: Lifecycle | None, version: str
) -> None:
    cus = active_customer()
    event = invoice_of(type_, cus.id, sub_id=sub_id, version=version)
    starts_now = [d for d in cus.step(event) if isinstance(d, Start)]
    expected = (
        []
        if starts is None
        else [
            Start(
                starts,
                {
                    Lifecycle.DUNNING: DUNNING_ID,
                    Lifecycle.PAYMENT_ACTION: PAYMENT_ACTION_ID,
                    Lifecycle.INVOICE_FINALIZED: invoice_finalized_id("in_T1"),
                }[starts],
                "in_T1",
                sub_id,
                invoice=event.invoice,
            )
        ]
    )
    assert starts_now == expected


def test_a_failure_reported_after_the_payment_starts_no_dunning() -> None:
    cus = active_customer()
    paid = invoice_of(PAID, cus.id, amount_paid=4900, status="paid")
    failed = invoice_of(FAILED, cus.id)
    # Stripe delivered them out of order, in one batch: the payment settles it.
    assert not [
        d for d in cus.batch(failed, replace(paid, created=failed.created)) if isinstance(d, Start)
    ]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_a_payment_converts_and_ends_the_running_dunning(version: str) -> None:
    cus = in_dunning(version=version)
    paid = invoice_of(
        PAID, cus.id, amount_paid=4900, amount_due=4900, status="paid", version=version
    )
    assert cus.batch(paid) == [
        Convert(
            "recovered",
            Lifecycle.DUNNING,
            DUNNING_ID,
            SUB,
            mrr_delta_cents=4900,
            amount_cents=4900,
            currency="usd",
            invoice_id="in_T1",
        ),
        End(DUNNING_ID, "recovered"),
    ]
    assert (cus.ref(DUNNING_ID).status, cus.ref(DUNNING_ID).converted) == ("recovered", True)
    # invoice.payment_succeeded of the same payment: already ended, nothing twice.
    assert (
        cus.batch(invoice_of(SUCCEEDED, cus.id, amount_paid=4900, status="paid", version=version))
        == []
    )


@pytest.mark.parametrize(
    ("type_", "outcome"),
    [("invoice.voided", "voided"), ("invoice.marked_uncollectible", "uncollectible")],
)
def test_an_invoice_settled_without_payment_ends_dunning_without_a_conversion(
    type_: str, outcome: str
) -> None:
    cus = in_dunning()
    assert cus.batch(invoice_of(type_, cus.id)) == [End(DUNNING_ID, outcome)]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_a_later_failure_refreshes_the_running_dunning(version: str) -> None:
    cus = in_dunning(version=version)
    again = invoice_of(
        FAILED, cus.id, n=2, attempt_count=2, next_payment_attempt=T + 5 * DAY, version=version
    )
    assert cus.batch(again) == [Refresh(DUNNING_ID, again.invoice)]
    assert again.invoice is not None and again.invoice.attempt_count == 2


def test_the_subscription_deleted_ends_its_invoices_lifecycles() -> None:
    cus = in_dunning()
    deleted = sub_event(cus.id, created=T + 2 * DAY, status="canceled", type_=DELETED)
    assert End(DUNNING_ID, "subscription_deleted") in cus.batch(deleted)


def test_a_failure_hands_a_payment_action_over_to_dunning() -> None:
    cus = in_dunning(Lifecycle.PAYMENT_ACTION)
    failed = invoice_of(FAILED, cus.id)
    assert cus.batch(failed) == [
        Start(Lifecycle.DUNNING, DUNNING_ID, "in_T1", SUB, invoice=failed.invoice),
        End(PAYMENT_ACTION_ID, "payment_failed"),
    ]


def test_a_dunning_support_stopped_is_not_started_again() -> None:
    cus = in_dunning()
    cus.ref(DUNNING_ID).status = "cancelled"
    assert cus.batch(invoice_of(FAILED, cus.id, n=2, attempt_count=2)) == []


def test_older_customer_runs_forward_every_event_of_a_running_invoice_lifecycle() -> None:
    cus = in_dunning()
    again = invoice_of(FAILED, cus.id, n=2, attempt_count=2)
    assert cus.ledger.apply(again)
    assert legacy_invoice_routes(again, cus.ledger) == [Forward(DUNNING_ID)]
    # ...and try a start on every trigger, whatever was decided before.
    cus.ref(DUNNING_ID).status = "cancelled"
    third = invoice_of(FAILED, cus.id, n=3, attempt_count=3)
    assert cus.ledger.apply(third)
    assert legacy_invoice_routes(third, cus.ledger) == [
        Start(Lifecycle.DUNNING, DUNNING_ID, "in_T1", SUB, invoice=third.invoice)
    ]


def test_bookkeeping_of_a_started_and_ended_instance() -> None:
    cus = active_customer()
    start = Start(Lifecycle.DUNNING, DUNNING_ID, "in_T1", SUB, invoice=InvoiceInfo(id="in_T1"))
    assert begin(cus.ledger, start)
    assert cus.ledger.start_decided(DUNNING_ID)
    ref = started(cus.ledger, start, "dunning-default")
    assert (ref.invoice_id, ref.subscription_id, ref.automation) == (
        "in_T1",
        SUB,
        "dunning-default",
    )
    # Running: a second start is moot.
    assert not begin(cus.ledger, start)
    assert begin(cus.ledger, End(DUNNING_ID, "voided")) and ref.status == "voided"
    # Ended: telling it anything more is moot.
    assert not begin(cus.ledger, End(DUNNING_ID, "recovered"))
    finished(cus.ledger, DUNNING_ID, "voided", keep=0)
    assert DUNNING_ID not in {r.workflow_id for r in cus.ledger.state.lifecycles}


# --- Stripe truth: what the invoices and subscriptions really say ----------------------


def test_a_trials_signup_invoice_with_a_setup_fee_does_not_convert_it() -> None:
    cus = trialing_customer()
    setup_fee = invoice_event(
        cus.id,
        created=TRIAL_START,
        sub_id=TRIAL_SUB,
        amount_paid=5000,
        billing_reason="subscription_create",
    )
    assert setup_fee.invoice is not None
    setup_fee.invoice.created = TRIAL_START
    assert cus.step(setup_fee) == []
    # The first invoice for the time after the trial does.
    paid = invoice_event(
        cus.id, created=TRIAL_END, sub_id=TRIAL_SUB, amount_paid=1200, invoice_id="in_T2"
    )
    assert cus.step(paid) == [trial_converted("in_T2"), End(TRIAL_ID, "converted")]


@pytest.mark.parametrize(
    ("status", "starts"),
    [("incomplete", False), ("incomplete_expired", False), ("past_due", True)],
)
@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_a_first_payment_failing_at_checkout_starts_no_dunning(
    status: str, starts: bool, version: str
) -> None:
    cus = Customer()
    cus.seed(sub_event(cus.id, created=T, status=status, type_=CREATED))
    failed = invoice_of(FAILED, cus.id, billing_reason="subscription_create", version=version)
    started_now = [d for d in cus.step(failed) if isinstance(d, Start)]
    assert bool(started_now) is starts


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_an_invoice_update_refreshes_the_retry_date_and_a_null_one_says_no_retry(
    version: str,
) -> None:
    cus = in_dunning(version=version)
    moved = invoice_of(
        "invoice.updated", cus.id, n=2, next_payment_attempt=T + 9 * DAY, version=version
    )
    assert cus.batch(moved) == [Refresh(DUNNING_ID, moved.invoice)]
    stopped = invoice_of("invoice.updated", cus.id, n=3, next_payment_attempt=None, version=version)
    [refresh] = cus.batch(stopped)
    assert isinstance(refresh, Refresh) and refresh.invoice is not None
    assert refresh.invoice.next_payment_attempt is None


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_a_send_invoice_subscription_is_dunned_when_its_invoice_is_overdue(version: str) -> None:
    # Under rules version 2; since version 3 the overdue invoice is `invoice_overdue`'s
    # (test_trigger_rules.py).
    cus = active_customer()
    cus.ledger.rules_version = 2
    by_hand: dict[str, Any] = {"collection_method": "send_invoice", "due_date": T + 15 * DAY}
    # It is never charged, so it never fails; finalizing it starts nothing either.
    assert not [
        d
        for d in cus.step(invoice_of("invoice.finalized", cus.id, **by_hand, version=version))
        if isinstance(d, Start)
    ]
    overdue = invoice_of("invoice.overdue", cus.id, n=2, **by_hand, version=version)
    assert [d for d in cus.batch(overdue) if isinstance(d, Start)] == [
        Start(Lifecycle.DUNNING, DUNNING_ID, "in_T1", SUB, invoice=overdue.invoice)
    ]


def test_an_invoice_paid_out_of_band_ends_dunning_uncredited() -> None:
    cus = in_dunning()
    wire = invoice_of(PAID, cus.id, amount_paid=4900, status="paid", paid_out_of_band=True)
    [convert, end] = cus.batch(wire)
    assert isinstance(convert, Convert) and convert.uncredited_reason is not None
    assert "out of band" in convert.uncredited_reason
    assert end == End(DUNNING_ID, "paid_out_of_band")


@pytest.mark.parametrize("stale_second", [0, -1])
def test_a_canceled_subscription_is_never_revived_by_an_event_of_its_second(
    stale_second: int,
) -> None:
    cus = active_customer()
    deleted = sub_event(cus.id, created=T + DAY, status="canceled", type_=DELETED)
    stale = sub_event(cus.id, created=T + DAY + stale_second, status="active")
    # Same second: Stripe's order is the arrival order, and the deletion came first.
    cus.batch(deleted, stale)
    assert cus.ledger.snapshot.subscriptions[SUB].status == "canceled"
    assert cus.ledger.snapshot.status == "canceled"


@pytest.mark.parametrize(
    ("interval", "count", "period"),
    [
        ("month", 1, "month"),
        ("month", 12, "year"),
        ("month", 3, "3 month"),
        ("year", 1, "year"),
        ("year", 2, "2 year"),
        ("week", 1, "week"),
        ("day", 14, "2 week"),
        ("day", 3, "3 day"),
        (None, 1, None),
    ],
)
def test_billing_periods_have_one_name_per_length(
    interval: str | None, count: int, period: str | None
) -> None:
    assert billing_period(interval, count) == period


def test_a_subscription_knows_the_billing_period_of_each_item() -> None:
    cus = Customer()
    event = sub_event(cus.id, created=T)
    assert event.subscription is not None
    event.subscription.items[0].interval, event.subscription.items[0].interval_count = "month", 12
    cus.seed(event)
    assert cus.ledger.snapshot.subscriptions[SUB].periods == ["year"]


# --- Deleted customers -------------------------------------------------------------------


def deleted(customer_id: str, created: int) -> BillingEvent:
    return normalise(
        customer_event(customer_id, "ada@example.com", created=created, type_="customer.deleted")
    )


def test_a_deleted_customer_ends_every_running_lifecycle_and_starts_no_win_back() -> None:
    cus = in_dunning()
    ended = cus.batch(deleted(cus.id, T + 2 * DAY))
    assert sorted(ended, key=str) == sorted(
        [End(DUNNING_ID, "customer_deleted"), End(RENEWAL_ID, "customer_deleted")], key=str
    )
    assert {r.status for r in cus.ledger.state.lifecycles} == {"customer_deleted"}
    # Stripe deletes the subscriptions right after: no win-back for a deleted customer.
    gone = sub_event(cus.id, created=T + 2 * DAY, status="canceled", type_=DELETED)
    assert cus.batch(gone) == []


# --- Runs that began under earlier rules keep them ---------------------------------------


def test_runs_under_rules_version_1_keep_the_card_order_and_the_setup_fee_conversion() -> None:
    cus = trialing_customer()
    cus.ledger.rules_version = 1
    setup_fee = invoice_event(
        cus.id,
        created=TRIAL_START,
        sub_id=TRIAL_SUB,
        amount_paid=1200,
        billing_reason="subscription_create",
    )
    assert setup_fee.invoice is not None
    setup_fee.invoice.created = TRIAL_START
    # Version 1 took any paid invoice with money for the conversion.
    assert cus.step(setup_fee) == [trial_converted(), End(TRIAL_ID, "converted")]

    both = Customer()
    both.ledger.rules_version = 1
    for n, pm_id in enumerate(["pm_sub", "pm_cus"]):
        both.seed(card_event(both.id, created=CARD_ATTACHED + n, pm_id=pm_id))
    both.seed(customer_default(both.id, created=CARD_ATTACHED + 5, pm_id="pm_cus"))
    both.seed(sub_event(both.id, created=CARD_ATTACHED + 6, default_payment_method="pm_sub"))
    found = both.ledger.billing_payment_method()
    # Version 1 watched the customer's default first.
    assert found is not None and found.id == "pm_cus"


def test_runs_under_rules_version_0_decide_only_invoice_lifecycles() -> None:
    cus = Customer()
    cus.ledger.rules_version = 0
    assert cus.batch(trial_event(cus.id)) == []
    failed = invoice_of(FAILED, cus.id)
    assert cus.step(failed) == [
        Start(Lifecycle.DUNNING, DUNNING_ID, "in_T1", SUB, invoice=failed.invoice)
    ]


# --- Rules version 3: invoices paid by hand, finalized invoices, quotes, any event ------

DUE_ID = invoice_due_id("in_T1")
OVERDUE_ID = invoice_overdue_id("in_T1")
FINALIZED_ID = invoice_finalized_id("in_T1")
BY_HAND: dict[str, Any] = {"collection_method": "send_invoice", "status": "open"}


def starts_of(decisions: list[Decision]) -> list[tuple[Lifecycle, str, int | None]]:
    return [(d.lifecycle, d.workflow_id, d.anchor) for d in decisions if isinstance(d, Start)]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_an_invoice_paid_by_hand_is_reminded_before_it_is_due_then_followed_up_overdue(
    version: str,
) -> None:
    cus = active_customer()
    due = T + 15 * DAY
    finalized = invoice_of("invoice.finalized", cus.id, due_date=due, **BY_HAND, version=version)
    assert starts_of(cus.batch(finalized)) == [
        (Lifecycle.INVOICE_FINALIZED, FINALIZED_ID, None),
        (Lifecycle.INVOICE_DUE, DUE_ID, due),
    ]
    # Never charged, so never failed: no dunning for it.
    assert cus.running(DUNNING_ID) is None
    # The due date moves: the reminders move with it; the finalized instance is refreshed.
    later = T + 20 * DAY
    moved = invoice_of("invoice.updated", cus.id, n=2, due_date=later, **BY_HAND, version=version)
    assert cus.batch(moved) == [Retime(DUE_ID, later), Refresh(FINALIZED_ID, moved.invoice)]
    # Stripe says it is overdue: the due reminders end, the overdue sequence begins.
    overdue = invoice_of("invoice.overdue", cus.id, n=3, due_date=later, **BY_HAND, version=version)
    decided = cus.batch(overdue)
    assert End(DUE_ID, "overdue") in decided
    assert starts_of(decided) == [(Lifecycle.INVOICE_OVERDUE, OVERDUE_ID, later)]
    # Paid: money recovered by the overdue sequence; the finalized one ends paid too.
    paid = invoice_of(
        PAID, cus.id, n=4, due_date=later, amount_paid=4900, **{**BY_HAND, "status": "paid"}
    )
    decided = cus.batch(paid)
    conversions = {
        (d.kind, d.workflow_id, d.amount_cents) for d in decided if isinstance(d, Convert)
    }
    assert conversions == {
        ("recovered", OVERDUE_ID, 4900),
        ("invoice_paid", FINALIZED_ID, 4900),
    }
    assert {d for d in decided if isinstance(d, End)} == {
        End(OVERDUE_ID, "paid"),
        End(FINALIZED_ID, "paid"),
    }


def test_an_invoice_already_past_its_due_date_starts_overdue_without_stripes_event() -> None:
    # `invoice.overdue` is sent only with Stripe's setting on; the due date passing is enough.
    cus = active_customer()
    late = invoice_of("invoice.updated", cus.id, due_date=T, **BY_HAND)
    assert starts_of(cus.batch(late)) == [(Lifecycle.INVOICE_OVERDUE, OVERDUE_ID, T)]


@pytest.mark.parametrize(
    ("type_", "ending"),
    [("invoice.voided", "voided"), ("invoice.marked_uncollectible", "uncollectible")],
)
def test_a_voided_or_uncollectible_invoice_ends_its_reminders_without_a_conversion(
    type_: str, ending: str
) -> None:
    cus = active_customer()
    cus.batch(invoice_of("invoice.finalized", cus.id, due_date=T + 15 * DAY, **BY_HAND))
    decided = cus.batch(invoice_of(type_, cus.id, n=2, due_date=T + 15 * DAY, **BY_HAND))
    assert not [d for d in decided if isinstance(d, Convert)]
    assert {d for d in decided if isinstance(d, End)} == {
        End(DUE_ID, ending),
        End(FINALIZED_ID, ending),
    }


def test_a_charged_invoice_is_only_followed_up_as_finalized() -> None:
    cus = active_customer()
    charged = invoice_of("invoice.finalized", cus.id, status="open", due_date=None)
    assert starts_of(cus.batch(charged)) == [(Lifecycle.INVOICE_FINALIZED, FINALIZED_ID, None)]


def test_under_rules_version_2_nothing_of_version_3_starts() -> None:
    cus = active_customer()
    cus.ledger.rules_version = 2
    finalized = invoice_of("invoice.finalized", cus.id, due_date=T + 15 * DAY, **BY_HAND)
    decided = decide(finalized, None, cus.ledger)
    assert decided == []


def quote_event(
    type_: str, customer_id: str, *, status: str, expires_at: int, n: int = 1
) -> BillingEvent:
    return BillingEvent(
        event_id=f"evt_quote_{n}",
        type=type_,
        created=T + n,
        livemode=False,
        customer_id=customer_id,
        quote=QuoteInfo(
            id="qt_T1",
            customer_id=customer_id,
            status=status,
            expires_at=expires_at,
            amount_total=120_000,
            currency="usd",
        ),
    )


def test_an_open_quote_is_reminded_before_it_expires_and_ends_accepted_with_its_amount() -> None:
    cus = active_customer()
    wid = quote_expiring_id("qt_T1")
    opened = quote_event("quote.finalized", cus.id, status="open", expires_at=T + 30 * DAY)
    assert starts_of(cus.batch(opened)) == [(Lifecycle.QUOTE_EXPIRING, wid, T + 30 * DAY)]
    moved = quote_event("quote.updated", cus.id, status="open", expires_at=T + 40 * DAY, n=2)
    assert cus.batch(moved) == [Retime(wid, T + 40 * DAY)]
    accepted = quote_event(
        "quote.accepted", cus.id, status="accepted", expires_at=T + 40 * DAY, n=3
    )
    [convert, end] = cus.batch(accepted)
    assert isinstance(convert, Convert)
    assert (convert.kind, convert.amount_cents, convert.currency) == (
        "quote_accepted",
        120_000,
        "usd",
    )
    assert end == End(wid, "accepted")


def test_a_canceled_or_already_expired_quote() -> None:
    cus = active_customer()
    wid = quote_expiring_id("qt_T1")
    expired = quote_event("quote.finalized", cus.id, status="open", expires_at=T - DAY)
    assert cus.batch(expired) == []
    cus.batch(quote_event("quote.finalized", cus.id, status="open", expires_at=T + DAY, n=2))
    assert cus.batch(
        quote_event("quote.canceled", cus.id, status="canceled", expires_at=T + DAY, n=3)
    ) == [End(wid, "canceled")]


def test_every_event_but_a_syncs_backfill_may_start_an_event_sequence() -> None:
    cus = active_customer()
    created = customer_event(cus.id, "ada@example.com", created=T + DAY)
    event = normalise(created)
    [start] = [
        d
        for d in decide(event, None, cus.ledger)
        if isinstance(d, Start) and d.lifecycle == Lifecycle.EVENT
    ]
    # The automation chosen names the instance; until then it has no id and begins free.
    assert (start.workflow_id, start.trigger_event) == ("", "customer.updated")
    assert begin(cus.ledger, start) and not cus.ledger.start_decided("")
    backfill = replace(event, backfill=True)
    assert not [
        d
        for d in decide(backfill, None, cus.ledger)
        if isinstance(d, Start) and d.lifecycle == Lifecycle.EVENT
    ]
