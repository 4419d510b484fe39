"""The historical sync's backfill, pure: how a listed Stripe object becomes backfill events
(`intake/backfill.py`), how big a list is judged to be (`domain/sync.py`), what the rules
make of a backfill (`rules.backfill_decisions`) and how backfills and webhooks of the same
objects meet in the ledger.

Objects are the `data.object` of the corpus's events (`tests/corpus.py`) in every API
version family: what a Stripe list returns is the object a webhook carries. The ledger is
driven the way the customer workflow's `_apply_pending` drives it: a batch applied with
`apply_batch`, then every applied event decided, a backfill by `backfill_decisions`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import replace
from typing import Any

import pytest
from temporalio.converter import value_to_type

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.domain.ids import dunning_id, scheduled_cancel_id, trial_id
from stripe_lifecycle.domain.ledger import CustomerLedger, LifecycleRef, new_state
from stripe_lifecycle.domain.lifecycles import Lifecycle
from stripe_lifecycle.domain.rules import (
    BACKFILL_STARTS,
    Convert,
    Decision,
    End,
    Retime,
    Start,
    apply_batch,
    backfill_decisions,
    begin,
    decide,
    started,
)
from stripe_lifecycle.domain.sync import EXPAND, Resource, estimate_in_windows, estimate_total
from stripe_lifecycle.intake.backfill import Backfill, backfills, digest
from stripe_lifecycle.intake.normalise import normalise_event

from . import corpus

DAY = 86_400
VERSIONS = pytest.mark.parametrize("version", corpus.VERSIONS)
# 2026-01-01T00:00:00Z: after every object of the corpus was created.
READ_AT = 1_767_225_600
ACCOUNT = "acct_CorpusSync"

# The corpus's people and their objects (the same ids in every version family).
ADA = "cus_CorpusAda"
ADA_SUB = "sub_CorpusAdaPro"
ADA_CARD = "card_CorpusAdaVisa"  # her legacy Card (`default_source`)
ADA_PM = "pm_CorpusAdaVisa"  # the same Visa as a PaymentMethod (renamed here to tell apart)
ADA_INVOICE = "in_CorpusAda0001"  # $20.00, paid at signup
ADA_INVOICE_CREATED = 1_759_309_320
GRACE = "cus_CorpusGrace"
GRACE_SUB = "sub_CorpusGraceTrial"
TRIAL_START = 1_762_185_630
TRIAL_END = 1_763_395_230
TRIAL_END_MOVED = 1_764_000_030
CLEO = "cus_CorpusCleo"
CLEO_SUB = "sub_CorpusCleoPro"
CLEO_CANCEL_ASKED = 1_764_099_000  # `canceled_at` of her scheduled cancellation
CLEO_ENDS = 1_765_526_700  # `cancel_at`, the period end
BEN = "cus_CorpusBen"
BEN_SUB = "sub_CorpusBenPro"
BEN_INVOICE = "in_CorpusBen0003"
BEN_INVOICE_CREATED = 1_763_647_503


# --- Objects and events -------------------------------------------------------------


def listed(name: str, version: str) -> dict[str, Any]:
    """The object of a corpus event, as a Stripe list returns it (the caller's copy)."""
    obj: dict[str, Any] = corpus.load(name, version)["data"]["object"]
    return obj


def reordered(value: Any) -> Any:
    """`value` with the keys of every object in reverse order."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def ada_with_cards(version: str) -> dict[str, Any]:
    """Ada listed with `EXPAND[customers]`: her `invoice_settings.default_payment_method`
    a card PaymentMethod, her `default_source` a legacy Card, both Visa 4242 until 03/2026."""
    customer = listed("customer.updated", version)
    payment_method = listed("payment_method.attached", version)
    payment_method["id"] = ADA_PM
    customer["invoice_settings"]["default_payment_method"] = payment_method
    customer["default_source"] = listed("customer.source.expiring", version)
    return customer


def only(items: list[Backfill]) -> Backfill:
    assert len(items) == 1, [item.event.type for item in items]
    return items[0]


def sync_events(
    resource: Resource, obj: dict[str, Any], *, read_at: int, starts: bool = False
) -> list[BillingEvent]:
    """The events a sync delivers for one object; `starts`: run with `--start-lifecycles`."""
    events = [item.event for item in backfills(resource, obj, read_at=read_at, account=None)]
    for event in events:
        event.backfill_starts = starts
    return events


def webhook(name: str, version: str, *, created: int, **fields: Any) -> BillingEvent:
    """A corpus event as its webhook arrives: a fresh id, `created`, `fields` replacing
    top-level fields of its object."""
    payload = corpus.load(name, version)
    payload["id"] = corpus.event_id()
    payload["created"] = created
    payload["data"]["object"].update(fields)
    event = normalise_event(payload)
    assert event is not None
    return event


class Customer:
    """A customer workflow's ledger, fed as `CustomerWorkflow._apply_pending` feeds it
    (every automation matches, so every start is carried out)."""

    def __init__(self, customer_id: str, *, rules_version: int = 2) -> None:
        self.ledger = CustomerLedger(new_state(customer_id), rules_version=rules_version)

    def batch(self, *events: BillingEvent) -> list[Decision]:
        decisions: list[Decision] = []
        for applied in apply_batch(self.ledger, list(events)):
            rules = backfill_decisions if applied.event.backfill else decide
            for decision in rules(applied.event, applied.before, self.ledger):
                decisions.append(decision)
                if begin(self.ledger, decision) and isinstance(decision, Start):
                    started(self.ledger, decision, "a")
        return decisions

    def running(self) -> list[str]:
        return [r.workflow_id for r in self.ledger.state.lifecycles if r.status == "running"]


# --- backfills(): what each listed object becomes -----------------------------------


def test_the_sync_expands_the_cards_backfills_reads() -> None:
    assert EXPAND[Resource.CUSTOMERS] == [
        "data.invoice_settings.default_payment_method",
        "data.default_source",
    ]
    assert EXPAND[Resource.SUBSCRIPTIONS] == ["data.default_payment_method"]
    assert EXPAND[Resource.INVOICES] == EXPAND[Resource.CHARGES] == []


LISTED_AS = {
    "customer": Resource.CUSTOMERS,
    "subscription": Resource.SUBSCRIPTIONS,
    "invoice": Resource.INVOICES,
    "charge": Resource.CHARGES,
}


@VERSIONS
def test_the_stored_backfill_reads_back_as_the_event_it_stands_for(version: str) -> None:
    """Until delivery the sync keeps each backfill event as JSON in the database
    (`Backfill.stored_event`), and `sync_deliver` reads it back with Temporal's converter:
    the same event, for every object of the corpus a list returns. Rows an earlier release
    stored with every field written out read back the same too."""
    items = [
        item
        for name in corpus.names(version)
        if (obj := listed(name, version)).get("object") in LISTED_AS
        for item in backfills(LISTED_AS[obj["object"]], obj, read_at=READ_AT, account=ACCOUNT)
    ]
    assert {item.resource for item in items} == set(LISTED_AS.values())
    assert len(items) > 30
    lean_bytes = full_bytes = 0
    for item in items:
        stored = json.dumps(item.stored_event())
        full = json.dumps(dataclasses.asdict(item.event))
        assert value_to_type(BillingEvent, json.loads(stored)) == item.event, item.object_id
        assert value_to_type(BillingEvent, json.loads(full)) == item.event, item.object_id
        lean_bytes, full_bytes = lean_bytes + len(stored), full_bytes + len(full)
    # Most of an event's fields are empty: a quarter of the bytes or more go.
    assert lean_bytes < full_bytes * 3 / 4


@VERSIONS
def test_a_customer_is_one_customer_updated_event(version: str) -> None:
    obj = listed("customer.updated", version)
    item = only(backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=ACCOUNT))
    fingerprint = digest(obj)
    assert (item.object_id, item.listed_id, item.resource, item.digest) == (
        ADA,
        ADA,
        Resource.CUSTOMERS,
        fingerprint,
    )
    event = item.event
    assert event.event_id == f"sync_{ADA}_{fingerprint}"
    assert (event.type, event.created, event.customer_id, event.account) == (
        "customer.updated",
        READ_AT,
        ADA,
        ACCOUNT,
    )
    assert (event.backfill, event.backfill_starts, event.livemode) == (True, False, False)
    assert event.customer is not None
    assert (event.customer.email, event.customer.default_source) == (obj["email"], ADA_CARD)
    assert (event.subscription, event.invoice, event.payment_method) == (None, None, None)


@VERSIONS
@pytest.mark.parametrize("card_names_customer", [True, False], ids=["named", "unnamed"])
def test_a_customer_s_expanded_cards_are_card_events_of_the_customer(
    version: str, card_names_customer: bool
) -> None:
    obj = ada_with_cards(version)
    payment_method = obj["invoice_settings"]["default_payment_method"]
    card = obj["default_source"]
    if not card_names_customer:
        payment_method["customer"] = None
        del card["customer"]

    items = backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=ACCOUNT)

    assert [(i.event.type, i.object_id) for i in items] == [
        ("customer.updated", ADA),
        ("payment_method.attached", ADA_PM),
        ("payment_method.attached", ADA_CARD),
    ]
    for item in items:
        assert (item.listed_id, item.resource) == (ADA, Resource.CUSTOMERS)
        assert item.event.event_id == f"sync_{item.object_id}_{item.digest}"
        assert (item.event.created, item.event.account, item.event.backfill) == (
            READ_AT,
            ACCOUNT,
            True,
        )
        assert item.event.customer_id == ADA
    assert items[0].event.customer is not None
    assert items[0].event.customer.default_payment_method == ADA_PM
    cards = [item.event.payment_method for item in items[1:]]
    assert [
        (c.id, c.customer_id, c.type, c.brand, c.last4, c.exp_month, c.exp_year)
        for c in cards
        if c is not None
    ] == [
        (ADA_PM, ADA, "card", "visa", "4242", 3, 2026),
        (ADA_CARD, ADA, "card", "visa", "4242", 3, 2026),
    ]
    # The digest is of the card as owned by the customer: the same whether Stripe named
    # the customer in it or the sync filled it in.
    assert items[2].digest == digest({**card, "customer": ADA})


@VERSIONS
def test_a_customer_s_backfill_gives_the_ledger_the_card_it_bills(version: str) -> None:
    customer = Customer(ADA)
    assert (
        customer.batch(*sync_events(Resource.CUSTOMERS, ada_with_cards(version), read_at=READ_AT))
        == []
    )
    snapshot = customer.ledger.snapshot
    assert (snapshot.default_payment_method, snapshot.default_source) == (ADA_PM, ADA_CARD)
    assert sorted(snapshot.payment_methods) == [ADA_CARD, ADA_PM]
    billed = customer.ledger.billing_payment_method()
    assert billed is not None
    assert (billed.id, billed.exp_month, billed.exp_year) == (ADA_PM, 3, 2026)


@VERSIONS
def test_a_live_customer_s_legacy_card_is_live_too(version: str) -> None:
    # A legacy Card object has no `livemode` of its own; it is in its customer's mode.
    obj = ada_with_cards(version)
    obj["livemode"] = True
    obj["invoice_settings"]["default_payment_method"]["livemode"] = True
    assert "livemode" not in obj["default_source"]

    items = backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=None)

    assert [item.event.livemode for item in items] == [True, True, True]
    customer = Customer(ADA)
    customer.batch(*(item.event for item in items))
    assert customer.ledger.snapshot.livemode is True


@VERSIONS
def test_a_deleted_customer_is_nothing(version: str) -> None:
    obj = listed("customer.deleted", version)
    obj["deleted"] = True
    assert backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=ACCOUNT) == []
    # However much of it was expanded.
    obj["default_source"] = listed("customer.source.expiring", version)
    assert backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=ACCOUNT) == []


@VERSIONS
@pytest.mark.parametrize(
    ("fixture", "sub_id", "customer_id", "status"),
    [
        pytest.param("customer.subscription.created", ADA_SUB, ADA, "active", id="active"),
        pytest.param(
            "customer.subscription.created.trialing", GRACE_SUB, GRACE, "trialing", id="trialing"
        ),
        pytest.param(
            "customer.subscription.updated.cancel_at_period_end",
            CLEO_SUB,
            CLEO,
            "active",
            id="cancel-scheduled",
        ),
        pytest.param(
            "customer.subscription.created.incomplete",
            "sub_CorpusDanPro",
            "cus_CorpusDan",
            "incomplete",
            id="incomplete",
        ),
        pytest.param("customer.subscription.deleted", CLEO_SUB, CLEO, "canceled", id="canceled"),
    ],
)
def test_a_subscription_in_any_status_is_a_subscription_update(
    version: str, fixture: str, sub_id: str, customer_id: str, status: str
) -> None:
    obj = listed(fixture, version)
    item = only(backfills(Resource.SUBSCRIPTIONS, obj, read_at=READ_AT, account=ACCOUNT))
    assert (item.object_id, item.listed_id, item.resource) == (
        sub_id,
        sub_id,
        Resource.SUBSCRIPTIONS,
    )
    event = item.event
    assert event.event_id == f"sync_{sub_id}_{digest(obj)}"
    assert (event.type, event.created, event.customer_id, event.account, event.backfill) == (
        "customer.subscription.updated",
        READ_AT,
        customer_id,
        ACCOUNT,
        True,
    )
    assert event.subscription is not None
    assert (event.subscription.id, event.subscription.status) == (sub_id, status)
    assert event.previous_attributes == []


@VERSIONS
def test_a_subscription_s_expanded_card_is_a_card_event_of_its_customer(version: str) -> None:
    obj = listed("customer.subscription.created", version)
    payment_method = listed("payment_method.attached", version)
    payment_method["id"] = ADA_PM
    del payment_method["customer"]
    obj["default_payment_method"] = payment_method

    items = backfills(Resource.SUBSCRIPTIONS, obj, read_at=READ_AT, account=ACCOUNT)

    assert [(i.event.type, i.object_id, i.listed_id) for i in items] == [
        ("customer.subscription.updated", ADA_SUB, ADA_SUB),
        ("payment_method.attached", ADA_PM, ADA_SUB),
    ]
    subscription, card = items[0].event.subscription, items[1].event.payment_method
    assert subscription is not None and card is not None
    assert subscription.default_payment_method == ADA_PM
    assert (card.id, card.customer_id, card.exp_month, card.exp_year) == (ADA_PM, ADA, 3, 2026)
    assert items[1].event.customer_id == ADA
    assert items[1].event.event_id == f"sync_{ADA_PM}_{digest({**payment_method, 'customer': ADA})}"


@VERSIONS
@pytest.mark.parametrize(
    ("fixture", "event_type", "invoice_id"),
    [
        pytest.param("invoice.paid", "invoice.paid", ADA_INVOICE, id="paid"),
        pytest.param(
            "invoice.paid.out_of_band", "invoice.paid", "in_CorpusBea0005", id="paid-out-of-band"
        ),
        pytest.param(
            "invoice.payment_failed", "invoice.payment_failed", BEN_INVOICE, id="open-failed-once"
        ),
        pytest.param(
            "invoice.payment_failed.final_attempt",
            "invoice.payment_failed",
            BEN_INVOICE,
            id="open-failed-four-times",
        ),
    ],
)
def test_a_paid_or_failed_invoice_is_its_event(
    version: str, fixture: str, event_type: str, invoice_id: str
) -> None:
    obj = listed(fixture, version)
    item = only(backfills(Resource.INVOICES, obj, read_at=READ_AT, account=ACCOUNT))
    event = item.event
    assert (item.object_id, item.listed_id, item.resource) == (
        invoice_id,
        invoice_id,
        Resource.INVOICES,
    )
    assert event.event_id == f"sync_{invoice_id}_{digest(obj)}"
    assert (event.type, event.created, event.customer_id, event.account, event.backfill) == (
        event_type,
        READ_AT,
        obj["customer"],
        ACCOUNT,
        True,
    )
    assert event.invoice is not None
    assert (event.invoice.id, event.invoice.status, event.invoice.attempt_count) == (
        invoice_id,
        obj["status"],
        obj["attempt_count"],
    )


@VERSIONS
def test_a_failed_invoice_names_its_subscription_in_every_version(version: str) -> None:
    event = only(
        backfills(
            Resource.INVOICES,
            listed("invoice.payment_failed", version),
            read_at=READ_AT,
            account=None,
        )
    ).event
    assert event.invoice is not None
    assert (event.invoice.subscription_id, event.invoice.created) == (
        BEN_SUB,
        BEN_INVOICE_CREATED,
    )


@VERSIONS
@pytest.mark.parametrize(
    ("fixture", "status", "attempts"),
    [
        pytest.param("invoice.created", "draft", 0, id="draft"),
        pytest.param("invoice.finalized", "open", 0, id="open-never-attempted"),
        pytest.param("invoice.voided", "void", 0, id="void"),
        pytest.param("invoice.marked_uncollectible", "uncollectible", 4, id="uncollectible"),
    ],
)
def test_an_invoice_neither_paid_nor_failed_is_nothing(
    version: str, fixture: str, status: str, attempts: int
) -> None:
    obj = listed(fixture, version)
    assert (obj["status"], obj["attempt_count"]) == (status, attempts)
    assert backfills(Resource.INVOICES, obj, read_at=READ_AT, account=ACCOUNT) == []


@VERSIONS
def test_an_object_of_no_customer_is_nothing(version: str) -> None:
    obj = listed("invoice.paid", version)
    obj["customer"] = None
    assert backfills(Resource.INVOICES, obj, read_at=READ_AT, account=ACCOUNT) == []


@VERSIONS
def test_a_refunded_charge_is_charge_refunded(version: str) -> None:
    obj = listed("charge.refunded", version)
    item = only(backfills(Resource.CHARGES, obj, read_at=READ_AT, account=ACCOUNT))
    event = item.event
    assert event.event_id == f"sync_ch_CorpusCleo0004_{digest(obj)}"
    assert (event.type, event.created, event.customer_id, event.account, event.backfill) == (
        "charge.refunded",
        READ_AT,
        CLEO,
        ACCOUNT,
        True,
    )
    assert event.charge is not None
    assert (event.charge.id, event.charge.amount_refunded, event.charge.currency) == (
        "ch_CorpusCleo0004",
        2000,
        "usd",
    )


@VERSIONS
def test_a_charge_never_refunded_is_nothing(version: str) -> None:
    obj = listed("charge.succeeded", version)
    assert obj["amount_refunded"] == 0
    assert backfills(Resource.CHARGES, obj, read_at=READ_AT, account=ACCOUNT) == []


EVERY_RESOURCE = pytest.mark.parametrize(
    ("resource", "fixture"),
    [
        pytest.param(Resource.CUSTOMERS, "customer.updated", id="customer"),
        pytest.param(Resource.SUBSCRIPTIONS, "customer.subscription.created", id="subscription"),
        pytest.param(Resource.INVOICES, "invoice.paid", id="invoice"),
        pytest.param(Resource.CHARGES, "charge.refunded", id="charge"),
    ],
)


@VERSIONS
@EVERY_RESOURCE
def test_a_field_of_a_newer_api_version_is_read_past_and_changes_the_digest(
    version: str, resource: Resource, fixture: str
) -> None:
    obj = listed(fixture, version)
    newer = {**obj, "future_field": {"object": "future_thing", "enabled": True}}

    [was] = backfills(resource, obj, read_at=READ_AT, account=ACCOUNT)
    [now] = backfills(resource, newer, read_at=READ_AT, account=ACCOUNT)

    assert now.digest != was.digest
    assert now.event.event_id == f"sync_{obj['id']}_{now.digest}" != was.event.event_id
    # Read the same otherwise.
    assert replace(now.event, event_id=was.event.event_id) == was.event


@VERSIONS
@EVERY_RESOURCE
def test_the_digest_does_not_depend_on_key_order(
    version: str, resource: Resource, fixture: str
) -> None:
    obj = listed(fixture, version)
    shuffled = reordered(obj)
    assert list(shuffled) != list(obj)
    assert digest(shuffled) == digest(obj)
    assert len(digest(obj)) == 20
    [first] = backfills(resource, obj, read_at=READ_AT, account=ACCOUNT)
    [again] = backfills(resource, shuffled, read_at=READ_AT, account=ACCOUNT)
    assert again.event.event_id == first.event.event_id


@VERSIONS
def test_the_same_object_read_again_is_the_same_event_a_changed_one_a_new_one(
    version: str,
) -> None:
    obj = ada_with_cards(version)
    first = backfills(Resource.CUSTOMERS, obj, read_at=READ_AT, account=ACCOUNT)
    # Read again a day later: the same events (the customer workflow drops them).
    again = backfills(
        Resource.CUSTOMERS, copy.deepcopy(obj), read_at=READ_AT + DAY, account=ACCOUNT
    )
    assert [i.event.event_id for i in again] == [i.event.event_id for i in first]

    obj["email"] = "ada@analytical.example.com"
    changed = backfills(Resource.CUSTOMERS, obj, read_at=READ_AT + DAY, account=ACCOUNT)
    # The customer changed, and so did her digest; her cards did not.
    assert changed[0].object_id == first[0].object_id == ADA
    assert changed[0].event.event_id != first[0].event.event_id
    assert [i.event.event_id for i in changed[1:]] == [i.event.event_id for i in first[1:]]

    customer = Customer(ADA)
    customer.batch(*(i.event for i in first))
    applied = apply_batch(customer.ledger, [i.event for i in again])
    assert applied == []
    applied = apply_batch(customer.ledger, [i.event for i in changed])
    assert [a.event.type for a in applied] == ["customer.updated"]
    assert customer.ledger.snapshot.email == "ada@analytical.example.com"


# --- estimate_total() ---------------------------------------------------------------

SINCE = 1_700_000_000  # the account's creation
UNTIL = SINCE + 1000 * DAY  # when the sync began


@pytest.mark.parametrize(
    ("read", "until", "oldest_read", "since", "expected"),
    [
        pytest.param(100, UNTIL, SINCE + 500 * DAY, None, None, id="account-created-unknown"),
        pytest.param(100, UNTIL, None, SINCE, None, id="nothing-dated-read"),
        pytest.param(0, UNTIL, SINCE + 500 * DAY, SINCE, None, id="nothing-read"),
        pytest.param(100, SINCE, SINCE, SINCE, None, id="no-time-range"),
        pytest.param(100, UNTIL, UNTIL, SINCE, None, id="read-covers-no-time"),
        pytest.param(250, UNTIL, SINCE, SINCE, 250, id="reached-the-start"),
        pytest.param(250, UNTIL, SINCE - DAY, SINCE, 250, id="reached-before-the-start"),
        pytest.param(100, UNTIL, SINCE + 500 * DAY, SINCE, 200, id="half-covered"),
        pytest.param(300, UNTIL, SINCE + 750 * DAY, SINCE, 1200, id="quarter-covered"),
        pytest.param(100, UNTIL, SINCE + 200 * DAY, SINCE, 125, id="four-fifths-covered"),
        pytest.param(1, UNTIL, UNTIL - DAY, SINCE, 1000, id="one-day-of-a-thousand"),
    ],
)
def test_estimate_total(
    read: int, until: int, oldest_read: int | None, since: int | None, expected: int | None
) -> None:
    assert estimate_total(read, until, oldest_read, since) == expected


@pytest.mark.parametrize("oldest_read", [SINCE - 10 * DAY, SINCE, SINCE + DAY, UNTIL - 1])
@pytest.mark.parametrize("read", [1, 7, 99, 100, 12_345])
def test_estimate_total_is_never_below_what_was_read(read: int, oldest_read: int) -> None:
    total = estimate_total(read, UNTIL, oldest_read, SINCE)
    assert total is not None
    assert total >= read


@pytest.mark.parametrize(
    ("read", "spans", "since", "expected"),
    [
        pytest.param(100, [(SINCE, UNTIL)], None, None, id="account-created-unknown"),
        pytest.param(100, [], SINCE, None, id="no-window-read-yet"),
        pytest.param(300, [(SINCE, UNTIL)], SINCE, 300, id="one-window-done"),
        pytest.param(300, [(0, UNTIL)], SINCE, 300, id="from-the-epoch-done"),
        pytest.param(
            150,
            [(UNTIL - 250 * DAY, UNTIL), (SINCE + 250 * DAY, SINCE + 500 * DAY)],
            SINCE,
            300,
            id="two-windows-half-covered",
        ),
        pytest.param(
            100,
            [(UNTIL - 100 * DAY, UNTIL), (0, SINCE - 1)],
            SINCE,
            1000,
            id="a-window-before-the-account-covers-nothing",
        ),
    ],
)
def test_estimate_in_windows(
    read: int, spans: list[tuple[int, int]], since: int | None, expected: int | None
) -> None:
    assert estimate_in_windows(read, UNTIL, spans, since) == expected


def test_windows_read_to_their_end_count_by_their_seconds() -> None:
    open_window = [(UNTIL - 250 * DAY, UNTIL)]
    assert estimate_in_windows(200, UNTIL, open_window, SINCE, covered=250 * DAY) == 400
    assert estimate_in_windows(500, UNTIL, [], SINCE, covered=1000 * DAY) == 500


# --- rules.backfill_decisions(): what a sync starts -----------------------------------


def situation(kind: str, version: str) -> tuple[str, Resource, dict[str, Any], int]:
    """A situation in progress when the sync reads it: (customer, resource, object,
    read_at)."""
    if kind == "trial":
        # Grace on day 2 of her 14-day trial.
        obj = listed("customer.subscription.created.trialing", version)
        return GRACE, Resource.SUBSCRIPTIONS, obj, TRIAL_START + DAY
    if kind == "scheduled_cancel":
        # Cleo a day after she scheduled her cancellation, two weeks before it takes effect.
        obj = listed("customer.subscription.updated.cancel_at_period_end", version)
        return CLEO, Resource.SUBSCRIPTIONS, obj, CLEO_CANCEL_ASKED + DAY
    if kind == "failed_invoice":
        # Ben's renewal invoice a day after its first charge failed.
        obj = listed("invoice.payment_failed", version)
        return BEN, Resource.INVOICES, obj, BEN_INVOICE_CREATED + DAY
    if kind == "canceled":
        # Cleo's subscription, ended a week ago.
        obj = listed("customer.subscription.deleted", version)
        return CLEO, Resource.SUBSCRIPTIONS, obj, CLEO_ENDS + 7 * DAY
    assert kind == "paid_invoice"
    obj = listed("invoice.paid", version)
    return ADA, Resource.INVOICES, obj, ADA_INVOICE_CREATED + DAY


SITUATIONS = ["trial", "scheduled_cancel", "failed_invoice", "canceled", "paid_invoice"]


@VERSIONS
@pytest.mark.parametrize("kind", SITUATIONS)
def test_without_backfill_starts_a_sync_decides_nothing(version: str, kind: str) -> None:
    customer_id, resource, obj, read_at = situation(kind, version)
    customer = Customer(customer_id)
    events = sync_events(resource, obj, read_at=read_at, starts=False)
    assert events
    assert customer.batch(*events) == []
    assert customer.ledger.state.lifecycles == []
    assert customer.ledger.snapshot.events_applied == len(events)


def expected_starts(kind: str, event: BillingEvent) -> list[Decision]:
    if kind == "trial":
        return [
            Start(
                Lifecycle.TRIAL,
                trial_id(GRACE_SUB),
                GRACE_SUB,
                GRACE_SUB,
                anchor=TRIAL_END,
                since=TRIAL_START,
            )
        ]
    if kind == "scheduled_cancel":
        return [
            Start(
                Lifecycle.SCHEDULED_CANCEL,
                scheduled_cancel_id(CLEO_SUB),
                CLEO_SUB,
                CLEO_SUB,
                anchor=CLEO_ENDS,
                reusable=True,
                since=CLEO_CANCEL_ASKED,
            )
        ]
    if kind == "failed_invoice":
        return [
            Start(
                Lifecycle.DUNNING,
                dunning_id(BEN_INVOICE),
                BEN_INVOICE,
                BEN_SUB,
                invoice=event.invoice,
                since=BEN_INVOICE_CREATED,
            )
        ]
    # A cancellation of long ago is no win-back; a payment of long ago converts nothing.
    return []


@VERSIONS
@pytest.mark.parametrize("kind", SITUATIONS)
def test_with_backfill_starts_a_sync_starts_what_is_in_progress_from_when_it_began(
    version: str, kind: str
) -> None:
    customer_id, resource, obj, read_at = situation(kind, version)
    customer = Customer(customer_id)
    events = sync_events(resource, obj, read_at=read_at, starts=True)

    decisions = customer.batch(*events)

    assert decisions == expected_starts(kind, events[0])
    assert customer.running() == [d.workflow_id for d in decisions if isinstance(d, Start)]
    # The same objects read again start nothing twice.
    assert customer.batch(*sync_events(resource, obj, read_at=read_at + DAY, starts=True)) == []


@VERSIONS
def test_a_trial_over_before_the_sync_starts_nothing(version: str) -> None:
    customer = Customer(GRACE)
    obj = listed("customer.subscription.created.trialing", version)
    assert obj["status"] == "trialing"
    events = sync_events(Resource.SUBSCRIPTIONS, obj, read_at=TRIAL_END + 1, starts=True)
    assert customer.batch(*events) == []
    # Exactly at its end it is over too.
    events = sync_events(Resource.SUBSCRIPTIONS, obj, read_at=TRIAL_END, starts=True)
    assert Customer(GRACE).batch(*events) == []


@VERSIONS
def test_a_sync_starts_no_renewal_or_card_expiry(version: str) -> None:
    # Ada's active subscription a day in, billed to a card that expires in 03/2026: as
    # news, that would start her renewal reminder and her card's expiry warning.
    obj = listed("customer.subscription.created", version)
    payment_method = listed("payment_method.attached", version)
    obj["default_payment_method"] = payment_method
    events = sync_events(
        Resource.SUBSCRIPTIONS, obj, read_at=ADA_INVOICE_CREATED + DAY, starts=True
    )
    customer = Customer(ADA)
    applied = apply_batch(customer.ledger, events)
    assert [a.event.type for a in applied] == [
        "customer.subscription.updated",
        "payment_method.attached",
    ]

    as_news = {
        d.lifecycle
        for a in applied
        for d in decide(a.event, a.before, customer.ledger)
        if isinstance(d, Start)
    }
    assert as_news == {Lifecycle.RENEWAL, Lifecycle.CARD_EXPIRING}
    assert [backfill_decisions(a.event, a.before, customer.ledger) for a in applied] == [[], []]


def test_backfill_starts_are_trials_scheduled_cancellations_and_dunning() -> None:
    assert BACKFILL_STARTS == {Lifecycle.TRIAL, Lifecycle.SCHEDULED_CANCEL, Lifecycle.DUNNING}


@VERSIONS
def test_a_sync_after_a_plan_change_starts_no_plan_change(version: str) -> None:
    customer = Customer(ADA)
    customer.batch(webhook("customer.subscription.created", version, created=ADA_INVOICE_CREATED))
    # Read a week later on a cheaper plan: no seats left.
    obj = listed("customer.subscription.created", version)
    for item in obj["items"]["data"]:
        item["quantity"] = 0
    if "quantity" in obj:
        obj["quantity"] = 0
    events = sync_events(
        Resource.SUBSCRIPTIONS, obj, read_at=ADA_INVOICE_CREATED + 7 * DAY, starts=True
    )
    assert customer.batch(*events) == []
    assert customer.ledger.snapshot.mrr == {"usd": 0}


@VERSIONS
@pytest.mark.parametrize("starts", [False, True], ids=["plain", "start-lifecycles"])
def test_a_paid_invoice_read_after_a_running_trial_converts_nothing(
    version: str, starts: bool
) -> None:
    customer = Customer(GRACE)
    trial = customer.batch(
        webhook("customer.subscription.created.trialing", version, created=TRIAL_START)
    )
    assert [d.workflow_id for d in trial if isinstance(d, Start)] == [trial_id(GRACE_SUB)]
    # Her first invoice after the trial, $10 paid: as news, the trial converted.
    invoice = corpus.invoice_event(
        "invoice.paid",
        version,
        GRACE,
        created=TRIAL_END,
        subscription=GRACE_SUB,
        id="in_CorpusGrace0001",
        billing_reason="subscription_cycle",
        amount_paid=1000,
    )["data"]["object"]
    events = sync_events(Resource.INVOICES, invoice, read_at=TRIAL_END + DAY, starts=starts)
    applied = apply_batch(customer.ledger, events)
    [paid] = applied
    assert [type(d) for d in decide(paid.event, paid.before, customer.ledger)] == [Convert, End]

    assert backfill_decisions(paid.event, paid.before, customer.ledger) == []
    assert customer.running() == [trial_id(GRACE_SUB)]
    # The money is counted all the same.
    assert customer.ledger.snapshot.ltv == {"usd": 1000}


@VERSIONS
@pytest.mark.parametrize(
    ("fixture", "fields", "as_news"),
    [
        pytest.param(
            "customer.subscription.updated.trial_end_moved",
            {},
            Retime(trial_id(GRACE_SUB), TRIAL_END_MOVED),
            id="trial-extended",
        ),
        pytest.param(
            "customer.subscription.created.trialing",
            {"status": "canceled"},
            End(trial_id(GRACE_SUB), "expired"),
            id="trial-canceled",
        ),
    ],
)
def test_a_sync_retimes_and_ends_nothing(
    version: str, fixture: str, fields: dict[str, Any], as_news: Decision
) -> None:
    customer = Customer(GRACE)
    customer.batch(webhook("customer.subscription.created.trialing", version, created=TRIAL_START))
    assert customer.running() == [trial_id(GRACE_SUB)]
    obj = {**listed(fixture, version), **fields}
    events = sync_events(Resource.SUBSCRIPTIONS, obj, read_at=TRIAL_START + 2 * DAY, starts=True)
    [applied] = apply_batch(customer.ledger, events)

    assert decide(applied.event, applied.before, customer.ledger) == [as_news]
    assert backfill_decisions(applied.event, applied.before, customer.ledger) == []


@VERSIONS
@pytest.mark.parametrize("kind", ["trial", "scheduled_cancel", "failed_invoice"])
def test_a_sync_starts_nothing_for_a_deleted_customer(version: str, kind: str) -> None:
    customer_id, resource, obj, read_at = situation(kind, version)
    customer = Customer(customer_id)
    customer.batch(webhook("customer.deleted", version, created=read_at - DAY, id=customer_id))
    assert customer.ledger.snapshot.deleted is True
    # Something still running there: as news, the rules would end it.
    customer.ledger.state.lifecycles.append(
        LifecycleRef("renewal-sub_x-1", Lifecycle.RENEWAL, "a", subscription_id="sub_x")
    )
    events = sync_events(resource, obj, read_at=read_at, starts=True)
    applied = apply_batch(customer.ledger, events)
    assert len(applied) == 1

    assert decide(applied[0].event, applied[0].before, customer.ledger) == [
        End("renewal-sub_x-1", "customer_deleted")
    ]
    assert backfill_decisions(applied[0].event, applied[0].before, customer.ledger) == []


@VERSIONS
@pytest.mark.parametrize("rules_version", [0, 1])
@pytest.mark.parametrize("kind", ["trial", "scheduled_cancel", "failed_invoice"])
def test_a_run_under_rules_before_version_2_starts_nothing_from_a_sync(
    version: str, rules_version: int, kind: str
) -> None:
    customer_id, resource, obj, read_at = situation(kind, version)
    customer = Customer(customer_id, rules_version=rules_version)
    assert customer.batch(*sync_events(resource, obj, read_at=read_at, starts=True)) == []
    assert customer.ledger.state.lifecycles == []


# --- The ledger: backfills and webhooks of the same objects ---------------------------


@VERSIONS
@pytest.mark.parametrize("order", ["backfill-then-webhook", "webhook-then-backfill", "one-batch"])
def test_an_invoice_backfilled_and_paid_by_webhook_counts_once(version: str, order: str) -> None:
    customer = Customer(ADA)
    backfill = sync_events(
        Resource.INVOICES, listed("invoice.paid", version), read_at=READ_AT, starts=True
    )
    paid = webhook("invoice.paid", version, created=ADA_INVOICE_CREATED + 2)
    succeeded = webhook("invoice.payment_succeeded", version, created=ADA_INVOICE_CREATED + 2)
    if order == "backfill-then-webhook":
        customer.batch(*backfill)
        customer.batch(paid, succeeded)
    elif order == "webhook-then-backfill":
        customer.batch(paid, succeeded)
        customer.batch(*backfill)
    else:
        customer.batch(*backfill, paid, succeeded)

    snapshot = customer.ledger.snapshot
    assert snapshot.events_applied == 3
    assert snapshot.ltv == {"usd": 2000}
    assert snapshot.ltv_cents == 2000
    assert customer.ledger.is_paid(ADA_INVOICE)


@VERSIONS
@pytest.mark.parametrize("backfill_first", [True, False], ids=["backfill-first", "webhook-first"])
@pytest.mark.parametrize(
    ("webhook_offset", "status"),
    [
        pytest.param(60, "past_due", id="webhook-after-the-read-wins"),
        pytest.param(-60, "active", id="webhook-before-the-read-loses"),
    ],
)
def test_the_newer_of_a_backfill_and_a_webhook_of_a_subscription_wins(
    version: str, backfill_first: bool, webhook_offset: int, status: str
) -> None:
    read_at = ADA_INVOICE_CREATED + 10 * DAY
    backfill = sync_events(
        Resource.SUBSCRIPTIONS, listed("customer.subscription.created", version), read_at=read_at
    )
    update = webhook(
        "customer.subscription.created",
        version,
        created=read_at + webhook_offset,
        status="past_due",
    )
    customer = Customer(ADA)
    if backfill_first:
        customer.batch(*backfill)
        customer.batch(update)
    else:
        customer.batch(update)
        customer.batch(*backfill)

    state = customer.ledger.snapshot.subscriptions[ADA_SUB]
    assert state.status == status
    assert state.version == max(read_at, read_at + webhook_offset)
    assert customer.ledger.snapshot.status == status
    assert customer.ledger.snapshot.mrr == {"usd": 2000}
