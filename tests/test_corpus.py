"""The corpus (`tests/payloads/`): every event is a well-formed event of its API-version
family, normalises to the customer and object it is about, and reads the same in every
version it exists in, except where the versions really say different things."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.normalise import normalise_event

from . import corpus

API_VERSIONS = {"legacy": "2024-06-20", "basil": "2025-03-31.basil", "clover": "2025-09-30.clover"}

ADA, BEN, GRACE, CLEO = "cus_CorpusAda", "cus_CorpusBen", "cus_CorpusGrace", "cus_CorpusCleo"
EXAMPLE, TEAM, DAN, BEA = "cus_CorpusExample", "cus_CorpusTeam", "cus_CorpusDan", "cus_CorpusBea"
OPS, EMIL = "cus_CorpusOps", "cus_CorpusEmil"

# name -> (the customer the event concerns, the part of the BillingEvent it fills, that
# object's id). No customer: the event concerns none the normaliser can name, and
# normalises to None.
EXPECTED: dict[str, tuple[str | None, str | None, str | None]] = {
    "customer.created": (ADA, "customer", ADA),
    "customer.updated": (ADA, "customer", ADA),
    "customer.deleted": (CLEO, "customer", CLEO),
    "customer.discount.created": (OPS, None, None),
    "customer.subscription.created": (ADA, "subscription", "sub_CorpusAdaPro"),
    "customer.subscription.created.trialing": (GRACE, "subscription", "sub_CorpusGraceTrial"),
    "customer.subscription.created.incomplete": (DAN, "subscription", "sub_CorpusDanPro"),
    "customer.subscription.created.tiered_graduated": (
        OPS,
        "subscription",
        "sub_CorpusOpsGraduated",
    ),
    "customer.subscription.created.tiered_volume": (OPS, "subscription", "sub_CorpusOpsVolume"),
    "customer.subscription.created.transform_quantity": (
        OPS,
        "subscription",
        "sub_CorpusOpsEmails",
    ),
    "customer.subscription.created.tax_inclusive": (
        OPS,
        "subscription",
        "sub_CorpusOpsInclusive",
    ),
    "customer.subscription.created.metered": (OPS, "subscription", "sub_CorpusOpsMetered"),
    "customer.subscription.created.discount_percent_forever": (
        OPS,
        "subscription",
        "sub_CorpusOpsPercentOff",
    ),
    "customer.subscription.created.discount_amount_repeating": (
        OPS,
        "subscription",
        "sub_CorpusOpsAmountOff",
    ),
    "customer.subscription.created.currency_options": (EMIL, "subscription", "sub_CorpusEmilEur"),
    "customer.subscription.created.send_invoice": (BEA, "subscription", "sub_CorpusBeaInvoiced"),
    # An Accounts v2 customer is named in `customer_account`: that account is the customer.
    "customer.subscription.created.customer_account": (
        "acct_CorpusBuyerV2",
        "subscription",
        "sub_CorpusBuyerV2",
    ),
    "customer.subscription.updated.renewal": (ADA, "subscription", "sub_CorpusAdaPro"),
    "customer.subscription.updated.plan_change": (TEAM, "subscription", "sub_CorpusTeam"),
    "customer.subscription.updated.cancel_at_period_end": (
        CLEO,
        "subscription",
        "sub_CorpusCleoPro",
    ),
    "customer.subscription.updated.trial_end_moved": (
        GRACE,
        "subscription",
        "sub_CorpusGraceTrial",
    ),
    "customer.subscription.trial_will_end": (GRACE, "subscription", "sub_CorpusGraceTrial"),
    "customer.subscription.deleted": (CLEO, "subscription", "sub_CorpusCleoPro"),
    "customer.subscription.deleted.payment_failed": (
        EXAMPLE,
        "subscription",
        "sub_CorpusExampleAnnual",
    ),
    "invoice.created": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.finalized": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.finalized.send_invoice": (BEA, "invoice", "in_CorpusBea0005"),
    "invoice.updated": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.payment_failed": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.payment_failed.final_attempt": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.payment_failed.subscription_create": (DAN, "invoice", "in_CorpusDan0001"),
    "invoice.payment_failed.annual": (EXAMPLE, "invoice", "in_CorpusExample0002"),
    "invoice.payment_action_required": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.paid": (ADA, "invoice", "in_CorpusAda0001"),
    "invoice.paid.out_of_band": (BEA, "invoice", "in_CorpusBea0005"),
    "invoice.paid.currency_options": (EMIL, "invoice", "in_CorpusEmil0001"),
    "invoice.paid.connect": ("cus_CorpusConnectedBuyer", "invoice", "in_CorpusConnected0001"),
    "invoice.payment_succeeded": (ADA, "invoice", "in_CorpusAda0001"),
    # An upcoming invoice does not exist yet: it has no id.
    "invoice.upcoming": (ADA, "invoice", None),
    "invoice.voided": (BEN, "invoice", "in_CorpusBen0002"),
    "invoice.marked_uncollectible": (BEN, "invoice", "in_CorpusBen0003"),
    "invoice.will_be_due": (BEA, "invoice", "in_CorpusBea0005"),
    "invoice.overdue": (BEA, "invoice", "in_CorpusBea0005"),
    "payment_method.attached": (ADA, "payment_method", "card_CorpusAdaVisa"),
    "payment_method.updated": (ADA, "payment_method", "card_CorpusAdaVisa"),
    "payment_method.automatically_updated": (ADA, "payment_method", "card_CorpusAdaVisa"),
    # Named through `previous_attributes.customer`: a detached method has no customer.
    "payment_method.detached": (CLEO, "payment_method", "pm_CorpusCleoVisa"),
    "customer.source.expiring": (ADA, "payment_method", "card_CorpusAdaVisa"),
    "customer.source.expiring.receiver_source": (None, None, None),
    "charge.succeeded": (ADA, None, None),
    "charge.refunded": (CLEO, None, None),
    # Refunds and disputes name a charge, not a customer; an expanded charge names it.
    "refund.created": (None, None, None),
    "charge.dispute.created": (None, None, None),
    "charge.dispute.created.expanded_charge": (BEN, None, None),
    "checkout.session.completed": (ADA, None, None),
    "checkout.session.completed.payment_mode": (ADA, None, None),
    # A guest checkout names no customer.
    "checkout.session.completed.guest": (None, None, None),
    "quote.created": (BEA, "quote", "qt_CorpusBea"),
    "quote.finalized": (TEAM, "quote", "qt_CorpusTeam"),
    "quote.will_expire": (BEA, "quote", "qt_CorpusBea"),
    "quote.accepted": (TEAM, "quote", "qt_CorpusTeam"),
    "quote.canceled": (BEA, "quote", "qt_CorpusBea"),
    "price.created": (None, None, None),
}

PARTS = ("customer", "subscription", "invoice", "payment_method", "quote")

ALL = [
    pytest.param(name, version, id=f"{name}@{version}")
    for name in corpus.names()
    for version in corpus.available(name)
]


def test_every_corpus_event_has_expectations() -> None:
    assert corpus.names() == sorted(EXPECTED)


def test_the_manifest_lists_every_event_in_its_versions() -> None:
    readme = (corpus.PAYLOADS_DIR / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `([a-z_.]+)` \| ([a-z, ]+) \|", readme, re.MULTILINE))
    assert sorted(listed) == corpus.names()
    for name, versions in listed.items():
        expected = corpus.VERSIONS if versions == "all" else tuple(versions.split(", "))
        assert corpus.available(name) == expected, name


@pytest.mark.parametrize(("name", "version"), ALL)
def test_corpus_event_is_an_event_of_its_family(name: str, version: str) -> None:
    event = corpus.load(name, version)

    assert (event["object"], event["api_version"]) == ("event", API_VERSIONS[version])
    assert name == event["type"] or name.startswith(event["type"] + "."), event["type"]
    assert event["id"].startswith("evt_Corpus")
    # Test mode throughout (Cards, Discounts and Refunds have no `livemode` of their own).
    assert event["livemode"] is False
    assert event["data"]["object"].get("livemode", False) is False
    assert isinstance(event["created"], int)
    emails = re.findall(r"[\w.+-]+@[\w.-]+", json.dumps(event))
    assert all(email.endswith("example.com") for email in emails), emails
    # One event, rendered in each version: the same id and time everywhere.
    first = corpus.load(name, corpus.available(name)[0])
    assert (event["id"], event["created"]) == (first["id"], first["created"])


@pytest.mark.parametrize(("name", "version"), ALL)
def test_corpus_event_normalises_to_its_customer_and_object(name: str, version: str) -> None:
    payload = corpus.load(name, version)
    customer_id, part, object_id = EXPECTED[name]

    event = normalise_event(payload)

    if customer_id is None:
        assert event is None
        return
    assert event is not None
    assert (event.event_id, event.type, event.created) == (
        payload["id"],
        payload["type"],
        payload["created"],
    )
    assert (event.customer_id, event.api_version) == (customer_id, API_VERSIONS[version])
    filled = [p for p in PARTS if getattr(event, p) is not None]
    assert filled == ([] if part is None else [part])
    if part is not None:
        assert getattr(event, part).id == object_id
    # Every event also carries its object in brief, whatever its type.
    obj = payload["data"]["object"]
    assert event.object is not None
    assert (event.object.type, event.object.id) == (obj["object"], obj.get("id") or "")


# Where the versions of one event do not say the same thing: (what differs, its value in
# each version). A clover event names the discounts of a subscription by id only, so what
# they take off is not in it (a Stripe read fills it in, and until then the MRR is gross
# and not exact); a repeating coupon does not lower MRR in any version (Stripe counts
# forever discounts only). Before basil an invoice paid outside Stripe says so and keeps
# amount_paid at 0; since, only its payments tell.
DISAGREE: dict[str, dict[str, dict[str, object]]] = {
    "customer.subscription.created.discount_percent_forever": {
        "subscription.mrr_cents": {"legacy": 1600, "basil": 1600, "clover": 2000},
        "subscription.mrr_exact": {"legacy": True, "basil": True, "clover": False},
        "subscription.discounts": {
            "legacy": ["CORPUS20"],
            "basil": ["CORPUS20"],
            "clover": [None],
        },
    },
    "customer.subscription.created.discount_amount_repeating": {
        "subscription.mrr_exact": {"legacy": True, "basil": True, "clover": False},
        "subscription.discounts": {
            "legacy": ["CORPUS5X3"],
            "basil": ["CORPUS5X3"],
            "clover": [None],
        },
    },
    "invoice.paid.out_of_band": {
        "invoice.amount_paid": {"legacy": 0, "basil": 6000, "clover": 6000},
        "invoice.paid_out_of_band": {"legacy": True, "basil": False, "clover": False},
    },
}


def _disagreeing(value: Any) -> Any:
    """A disagreeing field as the table above states it: discounts by their coupon id."""
    if isinstance(value, list):
        return [d["coupon_id"] for d in value]
    return value


# Links only the versions before basil send: an invoice named its charge and payment
# intent, a charge its invoice; since, the invoice's payments tell (not in its events).
LINKS_BEFORE_BASIL = {"invoice": ("charge", "payment_intent"), "charge": ("invoice",)}


def _without_links_before_basil(facts: dict[str, Any], version: str) -> None:
    related = facts["object"]["related"]
    for key in LINKS_BEFORE_BASIL.get(facts["object"]["type"], ()):
        if version == "legacy":
            related.pop(key, None)
        else:
            assert key not in related, (version, key)


IN_SEVERAL_VERSIONS = [
    name for name in corpus.names() if EXPECTED[name][0] and len(corpus.available(name)) > 1
]


def _facts(event: BillingEvent) -> dict[str, Any]:
    """What an event says about the customer's billing: all of it but the API version and
    the names of what changed, which the versions render differently."""
    facts = dataclasses.asdict(event)
    del facts["api_version"], facts["previous_attributes"]
    return facts


@pytest.mark.parametrize("name", IN_SEVERAL_VERSIONS)
def test_versions_of_one_event_normalise_alike(name: str) -> None:
    facts: dict[str, dict[str, Any]] = {}
    for version in corpus.available(name):
        event = normalise_event(corpus.load(name, version))
        assert event is not None
        facts[version] = _facts(event)

    for path, values in DISAGREE.get(name, {}).items():
        part, field = path.split(".")
        assert {v: _disagreeing(f[part].pop(field)) for v, f in facts.items()} == values
    for version, version_facts in facts.items():
        _without_links_before_basil(version_facts, version)

    first, *others = facts
    for version in others:
        assert facts[version] == facts[first], f"{version} differs from {first}"


def test_each_version_moves_subscription_periods_where_stripe_does() -> None:
    """The renewal shows in `previous_attributes` as the periods before basil, as the items
    since; the subscription's period reads the same from both."""
    changed = {}
    for version in corpus.VERSIONS:
        event = normalise_event(corpus.load("customer.subscription.updated.renewal", version))
        assert event is not None and event.subscription is not None
        changed[version] = (event.previous_attributes, event.subscription.current_period_end)

    period_end = changed["legacy"][1]
    assert changed == {
        "legacy": (["current_period_end", "current_period_start", "latest_invoice"], period_end),
        "basil": (["items", "latest_invoice"], period_end),
        "clover": (["items", "latest_invoice"], period_end),
    }


# --- The loader -----------------------------------------------------------------------


def test_event_addresses_a_corpus_event_to_the_test() -> None:
    event = corpus.event(
        "invoice.payment_failed",
        "basil",
        "cus_Test1",
        created=1_800_000_000,
        livemode=True,
        attempt_count=2,
    )

    assert event["id"].startswith("evt_T") and event["id"] != "evt_CorpusBenPaymentFailed1"
    assert (event["created"], event["livemode"]) == (1_800_000_000, True)
    invoice = event["data"]["object"]
    assert (invoice["customer"], invoice["attempt_count"]) == ("cus_Test1", 2)
    assert (
        corpus.event("invoice.paid", "basil", "cus_Test1", created=1, event_id_="evt_x")["id"]
        == "evt_x"
    )


def test_event_of_a_customer_object_replaces_its_id() -> None:
    event = corpus.event("customer.created", "clover", "cus_Test2", created=1)

    customer = event["data"]["object"]
    assert customer["id"] == "cus_Test2" and "customer" not in customer


def test_event_of_a_dispute_addresses_its_expanded_charge_or_nothing() -> None:
    """A dispute names no customer: only an expanded charge is re-addressed."""
    plain = corpus.event("charge.dispute.created", "basil", "cus_Test3", created=1)
    expanded = corpus.event(
        "charge.dispute.created.expanded_charge", "basil", "cus_Test3", created=1
    )

    assert "customer" not in plain["data"]["object"]
    assert "customer" not in expanded["data"]["object"]
    assert expanded["data"]["object"]["charge"]["customer"] == "cus_Test3"


def test_event_of_a_guest_checkout_stays_a_guest_when_asked() -> None:
    guest = corpus.event(
        "checkout.session.completed.guest", "clover", "cus_Test4", created=1, customer=None
    )

    assert guest["data"]["object"]["customer"] is None


def test_load_gives_a_copy_the_corpus_does_not_share() -> None:
    changed = corpus.load("customer.updated", "legacy")
    changed["data"]["object"]["email"] = "someone@example.com"

    assert corpus.load("customer.updated", "legacy")["data"]["object"]["email"] == (
        "ada@example.com"
    )


def test_available_names_the_versions_an_event_exists_in() -> None:
    assert corpus.available("invoice.paid") == ("legacy", "basil", "clover")
    assert corpus.available("quote.accepted") == ("legacy", "basil", "clover")
    assert corpus.available("customer.subscription.created.customer_account") == ("clover",)
    assert corpus.available("invoice.nope") == ()


def test_unknown_events_and_versions_are_refused_by_name() -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"no corpus event 'customer.subscription.created.customer_account' in legacy",
    ):
        corpus.load("customer.subscription.created.customer_account", "legacy")
    with pytest.raises(ValueError, match=r"unknown version 'acacia'; versions: legacy, basil"):
        corpus.load("invoice.paid", "acacia")
