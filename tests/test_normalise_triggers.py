"""What the invoice, quote and `event` automations read of an event (issue 13): quotes,
each event's object in brief (`ObjectInfo`, ids and amounts, never PII), the customer of
objects that name it only through another, and the invoice dates the invoice lifecycles
count from. Every case runs in each API-version family the corpus renders it in."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from stripe_lifecycle.domain.events import ObjectInfo
from stripe_lifecycle.intake.normalise import (
    event_customer_id,
    normalise_event,
    parse_object,
    parse_quote,
)

from . import corpus
from .stripe_fixtures import load_fixture, manifest, needs_shared

ADA, BEN, BEA, TEAM = "cus_CorpusAda", "cus_CorpusBen", "cus_CorpusBea", "cus_CorpusTeam"

BEA_QUOTE_EXPIRES = 1765359000
TEAM_QUOTE_EXPIRES = 1765270860


def _each_version(*names: str) -> list[Any]:
    return [
        pytest.param(name, version, id=f"{name}@{version}")
        for name in names
        for version in corpus.available(name)
    ]


def _object(name: str, version: str) -> Mapping[str, Any]:
    obj: Mapping[str, Any] = corpus.load(name, version)["data"]["object"]
    return obj


# --- Quotes -----------------------------------------------------------------------------

QUOTES: dict[str, dict[str, Any]] = {
    # A draft has no number until it is finalized; its expiry is already set.
    "quote.created": {
        "id": "qt_CorpusBea",
        "customer_id": BEA,
        "status": "draft",
        "expires_at": BEA_QUOTE_EXPIRES,
        "amount_total": 72000,
        "currency": "usd",
        "number": None,
        "metadata": {"deal": "annual-upgrade"},
    },
    "quote.finalized": {
        "id": "qt_CorpusTeam",
        "customer_id": TEAM,
        "status": "open",
        "expires_at": TEAM_QUOTE_EXPIRES,
        "amount_total": 1100,
        "currency": "usd",
        "number": "QT-CORPUS-0001-1",
        "metadata": {},
    },
    "quote.will_expire": {
        "id": "qt_CorpusBea",
        "customer_id": BEA,
        "status": "open",
        "expires_at": BEA_QUOTE_EXPIRES,
        "amount_total": 72000,
        "currency": "usd",
        "number": "QT-CORPUS-0002-1",
        "metadata": {"deal": "annual-upgrade"},
    },
    "quote.accepted": {
        "id": "qt_CorpusTeam",
        "customer_id": TEAM,
        "status": "accepted",
        "expires_at": TEAM_QUOTE_EXPIRES,
        "amount_total": 1100,
        "currency": "usd",
        "number": "QT-CORPUS-0001-1",
        "metadata": {},
    },
    "quote.canceled": {
        "id": "qt_CorpusBea",
        "customer_id": BEA,
        "status": "canceled",
        "expires_at": BEA_QUOTE_EXPIRES,
        "amount_total": 72000,
        "currency": "usd",
        "number": "QT-CORPUS-0002-1",
        "metadata": {"deal": "annual-upgrade"},
    },
}


@pytest.mark.parametrize(("name", "version"), _each_version(*QUOTES))
def test_quote_events_carry_the_quote(name: str, version: str) -> None:
    event = normalise_event(corpus.load(name, version))

    assert event is not None and event.quote is not None
    assert event.customer_id == QUOTES[name]["customer_id"]
    assert dataclasses.asdict(event.quote) == QUOTES[name]
    assert (event.subscription, event.invoice) == (None, None)


@pytest.mark.parametrize(
    ("quote", "fields"),
    [
        # A draft quote need not name a customer yet.
        pytest.param({"id": "qt_1", "object": "quote", "customer": None}, {"customer_id": None}),
        # Expanded customer; upper-case currency as some hand-made payloads write it.
        pytest.param(
            {
                "id": "qt_2",
                "customer": {"id": "cus_2", "email": "x@example.com"},
                "currency": "EUR",
            },
            {"customer_id": "cus_2", "currency": "eur"},
        ),
        # An Accounts v2 customer is named by `customer_account`.
        pytest.param(
            {"id": "qt_3", "customer": None, "customer_account": "acct_3"},
            {"customer_id": "acct_3"},
        ),
        pytest.param({"id": "qt_4"}, {"amount_total": 0, "expires_at": None, "status": None}),
    ],
)
def test_quote_shapes(quote: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    parsed = dataclasses.asdict(parse_quote(quote))

    assert {key: parsed[key] for key in fields} == fields


# --- Every event's object in brief ------------------------------------------------------

SUB_ADA = "sub_CorpusAdaPro"
BEA_INVOICE = {
    "type": "invoice",
    "id": "in_CorpusBea0005",
    "amount": 6000,
    "currency": "usd",
    "status": "open",
    "related": {"customer": BEA, "subscription": "sub_CorpusBeaInvoiced"},
}
BEN_DISPUTE_LINKS = {"charge": "ch_CorpusBen0001", "payment_intent": "pi_CorpusBen0001"}
BEN_DISPUTE: dict[str, Any] = {
    "type": "dispute",
    "id": "dp_CorpusBen0001",
    "amount": 2000,
    "currency": "usd",
    "status": "needs_response",
    "related": BEN_DISPUTE_LINKS,
}

# name -> the ObjectInfo of its object, in every version the corpus has it.
OBJECTS: dict[str, dict[str, Any]] = {
    "checkout.session.completed": {
        "type": "checkout.session",
        "id": "cs_test_CorpusAdaCheckout",
        "amount": 2000,
        "currency": "usd",
        "status": "complete",
        "related": {"customer": ADA, "subscription": SUB_ADA, "invoice": "in_CorpusAda0001"},
    },
    "checkout.session.completed.payment_mode": {
        "type": "checkout.session",
        "id": "cs_test_CorpusAdaCredits",
        "amount": 5000,
        "currency": "usd",
        "status": "complete",
        "related": {"customer": ADA, "payment_intent": "pi_CorpusAdaCredits"},
    },
    "checkout.session.completed.guest": {
        "type": "checkout.session",
        "id": "cs_test_CorpusGuestCredits",
        "amount": 5000,
        "currency": "usd",
        "status": "complete",
        "related": {"payment_intent": "pi_CorpusGuestCredits"},
    },
    "charge.dispute.created": BEN_DISPUTE,
    # The expanded charge gives its id, and names the customer.
    "charge.dispute.created.expanded_charge": {
        **BEN_DISPUTE,
        "related": {**BEN_DISPUTE_LINKS, "customer": BEN},
    },
    "customer.created": {
        "type": "customer",
        "id": ADA,
        "amount": None,
        "currency": "usd",
        "status": None,
        "related": {},
    },
    "customer.subscription.created": {
        "type": "subscription",
        "id": SUB_ADA,
        "amount": None,
        "currency": "usd",
        "status": "active",
        "related": {"customer": ADA, "latest_invoice": "in_CorpusAda0001"},
    },
    "invoice.finalized.send_invoice": BEA_INVOICE,
    "invoice.will_be_due": BEA_INVOICE,
    "invoice.overdue": BEA_INVOICE,
    "quote.will_expire": {
        "type": "quote",
        "id": "qt_CorpusBea",
        "amount": 72000,
        "currency": "usd",
        "status": "open",
        "related": {"customer": BEA},
    },
    "quote.accepted": {
        "type": "quote",
        "id": "qt_CorpusTeam",
        "amount": 1100,
        "currency": "usd",
        "status": "accepted",
        "related": {"customer": TEAM, "subscription": "sub_CorpusTeam"},
    },
    "refund.created": {
        "type": "refund",
        "id": "re_CorpusCleo0004",
        "amount": 2000,
        "currency": "usd",
        "status": "succeeded",
        "related": {"charge": "ch_CorpusCleo0004", "payment_intent": "pi_CorpusCleo0004"},
    },
}


@pytest.mark.parametrize(("name", "version"), _each_version(*OBJECTS))
def test_object_in_brief(name: str, version: str) -> None:
    payload = corpus.load(name, version)

    brief = parse_object(payload["data"]["object"])

    assert dataclasses.asdict(brief) == OBJECTS[name]
    event = normalise_event(payload)
    if event is not None:
        assert event.object == brief


@pytest.mark.parametrize(
    ("name", "version"),
    _each_version("charge.succeeded", "invoice.paid", "invoice.payment_failed"),
)
def test_links_only_older_versions_send_are_kept_where_sent(name: str, version: str) -> None:
    """Before basil an invoice named its charge and payment intent and a charge its invoice;
    the brief passes on what the payload says and nothing it does not."""
    brief = parse_object(_object(name, version))

    older_link = "payment_intent" if brief.type == "invoice" else "invoice"
    assert (older_link in brief.related) == (version == "legacy")


@pytest.mark.parametrize(
    ("obj", "fields"),
    [
        # Credit notes count `total`; payment intents `amount`.
        pytest.param(
            {"object": "credit_note", "id": "cn_1", "total": 500, "invoice": "in_1"},
            {"amount": 500, "related": {"invoice": "in_1"}},
        ),
        pytest.param(
            {"object": "payment_intent", "id": "pi_1", "amount": 700, "currency": "GBP"},
            {"amount": 700, "currency": "gbp"},
        ),
        # Expanded links give their id; links of other kinds (a list, a number) are skipped.
        pytest.param(
            {
                "object": "refund",
                "id": "re_1",
                "charge": {"id": "ch_1", "customer": {"id": "cus_1", "name": "A Person"}},
                "payment_intent": {"id": "pi_1"},
                "invoice": 5,
            },
            {"related": {"charge": "ch_1", "payment_intent": "pi_1", "customer": "cus_1"}},
        ),
        # An expanded charge without a customer (a guest's) names none.
        pytest.param(
            {"object": "dispute", "id": "dp_1", "charge": {"id": "ch_1", "customer": None}},
            {"related": {"charge": "ch_1"}},
        ),
        # A basil invoice reaches its quote through `parent.quote_details`.
        pytest.param(
            {
                "object": "invoice",
                "id": "in_2",
                "parent": {"type": "quote_details", "quote_details": {"quote": "qt_2"}},
            },
            {"related": {"quote": "qt_2"}},
        ),
        # No amount-like integer, a non-text status, no type: nothing invented.
        pytest.param(
            {"id": "x_1", "amount": {"value": 3}, "status": {"code": 1}},
            {"type": "", "amount": None, "status": None, "related": {}},
        ),
    ],
)
def test_object_shapes(obj: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
    brief = dataclasses.asdict(parse_object(obj))

    assert {key: brief[key] for key in fields} == fields


def test_an_event_without_an_object_has_no_brief() -> None:
    payload = corpus.load("customer.created", "basil")
    event = normalise_event(payload)
    assert event is not None and event.object is not None

    # Only a customer object names itself; no object at all names no customer.
    payload["data"]["object"] = {}
    assert normalise_event(payload) is None


# --- No personal data in the brief ------------------------------------------------------

# Fields that hold a person's name, contact or address, wherever they sit in a payload.
_PII_KEYS = frozenset(
    {
        "email",
        "name",
        "phone",
        "customer_email",
        "customer_name",
        "customer_phone",
        "receipt_email",
        "line1",
        "line2",
        "city",
        "postal_code",
        "description",
    }
)
_EMAIL = re.compile(r"[\w.+-]+@[\w.-]+")


def _pii(value: Any, key: str = "") -> Iterator[str]:
    """The personal values of a payload: every string under a PII key, and every email."""
    if isinstance(value, Mapping):
        for child_key, child in value.items():
            yield from _pii(child, str(child_key))
    elif isinstance(value, list):
        for child in value:
            yield from _pii(child, key)
    elif isinstance(value, str) and value:
        if key in _PII_KEYS:
            yield value
        yield from _EMAIL.findall(value)


def _strings(brief: ObjectInfo) -> set[str]:
    values = [brief.type, brief.id, brief.currency, brief.status, *brief.related.values()]
    return {value for value in values if value is not None}


ALL = [
    pytest.param(name, version, id=f"{name}@{version}")
    for name in corpus.names()
    for version in corpus.available(name)
]


@pytest.mark.parametrize(("name", "version"), ALL)
def test_no_personal_data_in_any_brief(name: str, version: str) -> None:
    obj = _object(name, version)
    personal = set(_pii(obj))

    brief = parse_object(obj)

    assert not _strings(brief) & personal
    assert not _EMAIL.search(repr(brief))


def test_the_personal_data_check_sees_what_payloads_hold() -> None:
    """The check above is not vacuous: the guest's and Ben's details are found."""
    guest = set(_pii(_object("checkout.session.completed.guest", "clover")))
    disputed = set(_pii(_object("charge.dispute.created.expanded_charge", "basil")))

    assert {"guest.buyer@example.com", "Gus Guestley", "7 Example Row"} <= guest
    assert {"ben@example.com", "Ben Okafor", "12 Example Close"} <= disputed


# --- The customer of objects that name it only through another ---------------------------

CUSTOMERS: dict[str, str | None] = {
    # The intake reads a dispute's charge from Stripe to learn its customer.
    "charge.dispute.created": None,
    "charge.dispute.created.expanded_charge": BEN,
    "refund.created": None,
    "checkout.session.completed": ADA,
    "checkout.session.completed.payment_mode": ADA,
    "checkout.session.completed.guest": None,
}


@pytest.mark.parametrize(("name", "version"), _each_version(*CUSTOMERS))
def test_customer_named_through_another_object(name: str, version: str) -> None:
    payload = corpus.load(name, version)

    assert event_customer_id(payload) == CUSTOMERS[name]
    event = normalise_event(payload)
    assert (event.customer_id if event else None) == CUSTOMERS[name]


def test_an_expanded_charge_of_no_customer_names_none() -> None:
    payload = corpus.load("charge.dispute.created.expanded_charge", "clover")
    payload["data"]["object"]["charge"]["customer"] = None

    assert event_customer_id(payload) is None


# --- Invoices the invoice lifecycles follow ---------------------------------------------

BEA_DUE = {
    "id": "in_CorpusBea0005",
    "status": "open",
    "collection_method": "send_invoice",
    "due_date": 1764590703,
    "finalized_at": 1761998703,
    "amount_due": 6000,
}
BEN_RENEWAL = {"id": "in_CorpusBen0003", "collection_method": "charge_automatically"}

INVOICES: dict[str, dict[str, Any]] = {
    "invoice.created": {**BEN_RENEWAL, "status": "draft", "due_date": None, "finalized_at": None},
    "invoice.finalized": {
        **BEN_RENEWAL,
        "status": "open",
        "due_date": None,
        "finalized_at": 1763651100,
    },
    "invoice.finalized.send_invoice": BEA_DUE,
    "invoice.will_be_due": BEA_DUE,
    "invoice.overdue": BEA_DUE,
    "invoice.voided": {"id": "in_CorpusBen0002", "status": "void", "finalized_at": 1758553200},
    "invoice.marked_uncollectible": {
        **BEN_RENEWAL,
        "status": "uncollectible",
        "finalized_at": 1763651100,
    },
}


@pytest.mark.parametrize(("name", "version"), _each_version(*INVOICES))
def test_invoice_events_carry_the_invoice_dates(name: str, version: str) -> None:
    payload = corpus.load(name, version)

    event = normalise_event(payload)

    assert event is not None and event.invoice is not None
    assert event.type == payload["type"]
    invoice = dataclasses.asdict(event.invoice)
    assert {key: invoice[key] for key in INVOICES[name]} == INVOICES[name]


# --- The captured payloads, when `shared/` is beside the repository ----------------------

# file -> (the customer the event names, the ObjectInfo fields of its object).
CAPTURED: dict[str, tuple[str | None, dict[str, Any]]] = {
    "charge.dispute.created__dj-stripe.json": (
        None,
        {
            "type": "dispute",
            "id": "dp_1JAyTwJSZQVUcJYgPqasUEn1",
            "amount": 1000,
            "currency": "usd",
            "status": "needs_response",
            "related": {
                "charge": "ch_fakefakefakefakefake0001",
                "payment_intent": "pi_1JAyTwJSZQVUcJYgBbsz0NuH",
            },
        },
    ),
    "charge.dispute.created__stripe-ruby-mock.json": (
        None,
        {
            "type": "dispute",
            "amount": 100,
            "status": "warning_needs_response",
            "related": {"charge": "ch_000000000000000000000000"},
        },
    ),
    "object__dispute__openapi-fixtures3.json": (
        None,
        {"type": "dispute", "amount": 1000, "related": {"charge": "ch_1PgafuB7WZ01zgkWXYmPNZs8"}},
    ),
    "checkout.session.completed.payment_mode__stripe-ruby-mock.json": (
        "cus_00000000000000",
        {
            "type": "checkout.session",
            "amount": 25000,
            "currency": "usd",
            "related": {"customer": "cus_00000000000000", "payment_intent": "pi_00000000000000"},
        },
    ),
    # Setup mode takes no payment: no amount, no customer, a SetupIntent.
    "checkout.session.completed.setup_mode__stripe-ruby-mock.json": (
        None,
        {"amount": None, "currency": None, "related": {"setup_intent": "seti_00000000000000"}},
    ),
    "checkout.session.completed__stripe-ruby-mock.json": (
        "cus_00000000000000",
        {"amount": 3000, "status": "complete"},
    ),
    "object__checkout.session.completed__pay-rails.json": (
        "cus_M5wW9RPFk9xNZ5",
        {
            "amount": 1900,
            "status": "complete",
            "related": {
                "customer": "cus_M5wW9RPFk9xNZ5",
                "subscription": "sub_1LNkeSKXBGcbgpbZ7jMqOPSi",
            },
        },
    ),
    "invoice.finalized__stripe-ruby-mock.json": (
        "cus_00000000000000",
        {"type": "invoice", "amount": 2000, "status": "paid"},
    ),
}


def _captured_object(name: str) -> Mapping[str, Any]:
    payload = load_fixture(name)
    if payload.get("object") == "event":
        obj: Mapping[str, Any] = payload["data"]["object"]
        return obj
    # Some files hold `event.data` ({"object": {...}}) rather than the object itself.
    inner = payload.get("object")
    return inner if isinstance(inner, Mapping) else payload


@needs_shared
@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_object_in_brief(name: str) -> None:
    customer_id, fields = CAPTURED[name]
    obj = _captured_object(name)

    brief = dataclasses.asdict(parse_object(obj))

    assert event_customer_id({"data": {"object": obj}}) == customer_id
    assert {key: brief[key] for key in fields} == fields


@needs_shared
def test_captured_invoice_finalized_names_when() -> None:
    event = normalise_event(load_fixture("invoice.finalized__stripe-ruby-mock.json"))

    assert event is not None and event.invoice is not None
    assert event.invoice.finalized_at == 1648320013


def _captured_payloads() -> list[str]:
    return [
        entry["file"]
        for entry in manifest()
        if entry.get("envelope") != "none" or entry["file"].startswith("object__")
    ]


@needs_shared
@pytest.mark.parametrize("name", _captured_payloads())
def test_no_personal_data_in_captured_briefs(name: str) -> None:
    obj = _captured_object(name)

    brief = parse_object(obj)

    assert not _strings(brief) & set(_pii(obj))
