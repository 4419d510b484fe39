"""Segments as data: every field and operator, missing data, combinators, facts from the
ledger for every API version's payloads, explanations, and a file's mistakes named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.converter import DataConverter

from stripe_lifecycle.domain.events import SubscriptionInfo, SubscriptionItemInfo
from stripe_lifecycle.domain.ledger import (
    BillingSnapshot,
    CustomerLedger,
    SubscriptionState,
    new_state,
)
from stripe_lifecycle.domain.segments import (
    DAY,
    PACKAGED_DEFAULTS,
    Facts,
    SeatUsage,
    Segment,
    SegmentsConfig,
    SegmentsError,
    billing_facts,
    evaluate,
    explain,
    field_value,
    load_segments,
    parse_segments,
    why_changed,
)
from stripe_lifecycle.intake.normalise import normalise_event

from . import corpus

NOW = 1_760_000_000
SEATS = SeatUsage(limit_key="seats", used="quantity")
ADA, ADA_SUB = "cus_CorpusAda", "sub_CorpusAdaPro"


def base_facts(**changes: Any) -> Facts:
    """An active Starter customer of 120 days, 9 of 10 seats, clicked 3 days ago."""
    facts: Facts = {
        "status": "active",
        "plan": "Starter",
        "products": ["prod_Starter"],
        "prices": ["price_StarterMonthly"],
        "currency": "usd",
        "mrr": {"usd": 4900},
        "ltv": {"usd": 150_000, "eur": 20_000},
        "intervals": ["month"],
        "quantity": 9,
        "price_metadata": {"seats": "10"},
        "customer_created": NOW - 400 * DAY,
        "subscription_started": NOW - 120 * DAY,
        "plan_since": NOW - 45 * DAY,
        "metadata": {"tier": "smb", "employees": "80", "region": "eu-west"},
        "lifecycles": ["renewal"],
        "usage": {"seats_used": 12, "projects": 3.5},
        "last_click_at": NOW - 3 * DAY - 5,
    }
    facts.update(changes)
    return facts


def segment(where: Any, seat_usage: dict[str, Any] | None = None) -> Segment:
    document: dict[str, Any] = {"segments": [{"name": "s", "where": where}]}
    document["seat_usage"] = seat_usage or {"limit_metadata_key": "seats"}
    return parse_segments(yaml.safe_dump(document), "test.yaml").segments[0]


def check(condition: dict[str, Any], facts: Facts, seats: SeatUsage = SEATS) -> bool:
    return evaluate(segment(condition), facts, NOW, seats)


# (condition, changes to the base facts, expected)
CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    # plan: the primary subscription's plan name, compared without case
    ({"field": "plan", "eq": "Starter"}, {}, True),
    ({"field": "plan", "eq": "starter"}, {}, True),
    ({"field": "plan", "eq": "Pro"}, {}, False),
    ({"field": "plan", "ne": "Pro"}, {}, True),
    ({"field": "plan", "ne": "Starter"}, {}, False),
    ({"field": "plan", "in": ["Pro", "Starter"]}, {}, True),
    ({"field": "plan", "not_in": ["Starter"]}, {}, False),
    ({"field": "plan", "not_in": ["Pro"]}, {}, True),
    ({"field": "plan", "exists": True}, {}, True),
    ({"field": "plan", "exists": False}, {}, False),
    # status
    ({"field": "status", "eq": "active"}, {}, True),
    ({"field": "status", "in": ["past_due", "unpaid"]}, {"status": "past_due"}, True),
    ({"field": "status", "in": ["past_due", "unpaid"]}, {}, False),
    ({"field": "status", "eq": "none"}, {"status": "none"}, True),
    ({"field": "status", "eq": "incomplete"}, {"status": "incomplete"}, True),
    ({"field": "status", "ne": "canceled"}, {}, True),
    # currency, named in any case
    ({"field": "currency", "eq": "USD"}, {}, True),
    ({"field": "currency", "in": ["eur", "gbp"]}, {}, False),
    ({"field": "currency", "exists": False}, {"currency": None}, True),
    # product, price, interval, in_lifecycle: lists; eq holds when one of them is it
    ({"field": "product", "eq": "prod_Starter"}, {}, True),
    ({"field": "product", "eq": "prod_Pro"}, {}, False),
    ({"field": "product", "in": ["prod_Pro", "prod_Starter"]}, {}, True),
    ({"field": "product", "not_in": ["prod_Starter"]}, {"products": ["prod_Starter", "x"]}, False),
    ({"field": "product", "exists": False}, {"products": []}, True),
    ({"field": "price", "eq": "price_StarterMonthly"}, {}, True),
    ({"field": "price", "ne": "price_StarterMonthly"}, {}, False),
    ({"field": "interval", "eq": "month"}, {}, True),
    ({"field": "interval", "eq": "12 months"}, {"intervals": ["year"]}, True),
    ({"field": "interval", "in": ["3 months"]}, {"intervals": ["3 month"]}, True),
    ({"field": "interval", "eq": "year"}, {}, False),
    ({"field": "in_lifecycle", "eq": "renewal"}, {}, True),
    ({"field": "in_lifecycle", "eq": "dunning"}, {}, False),
    ({"field": "in_lifecycle", "not_in": ["dunning", "winback"]}, {}, True),
    ({"field": "in_lifecycle", "exists": True}, {"lifecycles": []}, False),
    # mrr_cents / ltv_cents: one currency at a time, the customer's unless named
    ({"field": "mrr_cents", "gte": 4900}, {}, True),
    ({"field": "mrr_cents", "gt": 4900}, {}, False),
    ({"field": "mrr_cents", "eq": 0}, {"mrr": {}}, True),
    ({"field": "mrr_cents", "currency": "eur", "gt": 0}, {}, False),
    ({"field": "mrr_cents", "currency": "EUR", "eq": 2000}, {"mrr": {"usd": 1, "eur": 2000}}, True),
    # never added across currencies: 150,000 usd + 20,000 eur is not 170,000 of anything
    ({"field": "ltv_cents", "gte": 170_000}, {}, False),
    ({"field": "ltv_cents", "gte": 150_000}, {}, True),
    ({"field": "ltv_cents", "currency": "eur", "lt": 20_001}, {}, True),
    ({"field": "ltv_cents", "currency": "gbp", "eq": 0}, {}, True),
    ({"field": "ltv_cents", "eq": 0}, {"currency": None, "ltv": {}}, True),
    # quantity
    ({"field": "quantity", "eq": 9}, {}, True),
    ({"field": "quantity", "between": [9, 20]}, {}, True),
    ({"field": "quantity", "between": [1, 9]}, {}, True),
    ({"field": "quantity", "between": [10, 20]}, {}, False),
    ({"field": "quantity", "in": [1, 5, 9]}, {}, True),
    ({"field": "quantity", "lt": 9}, {}, False),
    ({"field": "quantity", "lte": 9}, {}, True),
    ({"field": "quantity", "exists": False}, {"quantity": None}, True),
    # seat_usage = quantity ÷ the price metadata's limit; exactly 0.9 is 0.9
    ({"field": "seat_usage", "gte": 0.9}, {}, True),
    ({"field": "seat_usage", "gte": 0.9}, {"quantity": 8}, False),
    (
        {"field": "seat_usage", "gte": 0.9},
        {"quantity": 45, "price_metadata": {"seats": "50"}},
        True,
    ),
    ({"field": "seat_usage", "gt": 1}, {"quantity": 11}, True),
    ({"field": "seat_usage", "gte": 0.9}, {"price_metadata": {}}, False),
    ({"field": "seat_usage", "exists": False}, {"price_metadata": {"seats": "lots"}}, True),
    ({"field": "seat_usage", "exists": False}, {"price_metadata": {"seats": "0"}}, True),
    ({"field": "seat_usage", "lt": 0.5}, {"quantity": None}, False),
    # whole days since
    ({"field": "customer_age_days", "gte": 400}, {}, True),
    ({"field": "customer_age_days", "lt": 30}, {"customer_created": NOW - 29 * DAY}, True),
    ({"field": "subscription_age_days", "gte": 90}, {"subscription_started": NOW - 90 * DAY}, True),
    (
        {"field": "subscription_age_days", "gte": 90},
        {"subscription_started": NOW - 90 * DAY + 1},
        False,
    ),
    (
        {"field": "subscription_age_days", "eq": 89},
        {"subscription_started": NOW - 90 * DAY + 1},
        True,
    ),
    ({"field": "subscription_age_days", "gte": 0}, {"subscription_started": None}, False),
    ({"field": "days_on_plan", "between": [45, 60]}, {}, True),
    ({"field": "days_on_plan", "gt": 45}, {}, False),
    ({"field": "clicked_within_days", "lt": 14}, {}, True),
    ({"field": "clicked_within_days", "eq": 3}, {}, True),
    ({"field": "clicked_within_days", "lt": 14}, {"last_click_at": NOW - 14 * DAY}, False),
    ({"field": "clicked_within_days", "lt": 14}, {"last_click_at": None}, False),
    ({"field": "clicked_within_days", "exists": False}, {"last_click_at": None}, True),
    # metadata: text for eq/in, a number for ordered tests
    ({"field": "metadata.tier", "eq": "smb"}, {}, True),
    ({"field": "metadata.tier", "in": ["enterprise", "smb"]}, {}, True),
    ({"field": "metadata.tier", "ne": "enterprise"}, {}, True),
    ({"field": "metadata.employees", "eq": 80}, {}, True),
    ({"field": "metadata.employees", "gte": 50}, {}, True),
    ({"field": "metadata.employees", "between": [81, 500]}, {}, False),
    ({"field": "metadata.region", "gt": 1}, {}, False),
    ({"field": "metadata.vip", "eq": True}, {"metadata": {"vip": "true"}}, True),
    ({"field": "metadata.missing", "exists": True}, {}, False),
    # usage.<metric>: what the app reported
    ({"field": "usage.seats_used", "gt": 10}, {}, True),
    ({"field": "usage.projects", "between": [3, 3.5]}, {}, True),
    ({"field": "usage.projects", "ne": 3.5}, {}, False),
    ({"field": "usage.seats_used", "gt": 10}, {"usage": {}}, False),
    ({"field": "usage.seats_used", "exists": True}, {}, True),
]


@pytest.mark.parametrize(("condition", "changes", "expected"), CASES)
def test_a_condition_holds_for_the_facts_it_describes(
    condition: dict[str, Any], changes: dict[str, Any], expected: bool
) -> None:
    assert check(condition, base_facts(**changes)) is expected


# Missing data: each operator on a field without a value (no such metadata key).
MISSING = [
    ("eq", "x", False),
    ("ne", "x", True),
    ("in", ["x"], False),
    ("not_in", ["x"], True),
    ("gt", 1, False),
    ("gte", 1, False),
    ("lt", 1, False),
    ("lte", 1, False),
    ("between", [0, 1], False),
    ("exists", True, False),
    ("exists", False, True),
]


ORDERED = {"gt", "gte", "lt", "lte", "between"}


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        (field, op, value, expected)
        for field in ("metadata.nothing", "usage.nothing", "plan")
        for op, value, expected in MISSING
        # plan is text: ordered tests are refused when the file loads.
        if not (field == "plan" and op in ORDERED)
    ],
)
def test_missing_data_is_false_except_for_ne_not_in_and_exists_false(
    field: str, op: str, value: Any, expected: bool
) -> None:
    if field == "usage.nothing" and op in ("eq", "ne", "in", "not_in"):
        value = [1] if op in ("in", "not_in") else 1
    assert check({"field": field, op: value}, base_facts(plan=None)) is expected


def test_seat_usage_can_count_a_reported_usage_metric_instead_of_the_quantity() -> None:
    by_usage = SeatUsage(limit_key="seats", used="usage.seats_used")
    where = {"field": "seat_usage", "gte": 1.2}
    assert check(where, base_facts(), by_usage)  # 12 of 10
    assert not check(where, base_facts())  # 9 of 10
    assert field_value("seat_usage", base_facts(usage={}), NOW, by_usage) is None


def test_all_any_and_not_nest() -> None:
    where = {
        "all": [
            {"field": "status", "eq": "active"},
            {
                "any": [
                    {"field": "plan", "eq": "Pro"},
                    {"not": {"field": "metadata.tier", "eq": "enterprise"}},
                ]
            },
        ]
    }
    assert check(where, base_facts())
    assert not check(where, base_facts(metadata={"tier": "enterprise"}))
    assert check(where, base_facts(metadata={"tier": "enterprise"}, plan="Pro"))
    assert not check(where, base_facts(status="past_due", plan="Pro"))


def test_not_of_a_missing_value_holds() -> None:
    assert check({"not": {"field": "usage.nothing", "gte": 1}}, base_facts())


# --- Facts from the ledger, through the normaliser ----------------------------------


def apply(ledger: CustomerLedger, payload: dict[str, Any]) -> None:
    event = normalise_event(payload)
    assert event is not None
    assert ledger.apply(event)


def seats_subscription(version: str, created: int, *, quantity: int, seats: str) -> dict[str, Any]:
    """Ada's Pro subscription with `quantity` seats of a price limited to `seats`."""
    payload = corpus.event("customer.subscription.created", version, ADA, created=created)
    item = payload["data"]["object"]["items"]["data"][0]
    item["quantity"] = quantity
    item["price"]["metadata"] = {"seats": seats}
    return payload


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_seats_near_limit_reads_the_price_metadata_of_every_api_version(version: str) -> None:
    ledger = CustomerLedger(new_state(ADA))
    apply(ledger, seats_subscription(version, NOW - 10 * DAY, quantity=9, seats="10"))
    facts = billing_facts(ledger.snapshot, [])
    config = load_segments(Path("segments.yaml"))
    near = config.get("seats-near-limit")
    assert near is not None
    assert facts["quantity"] == 9
    assert facts["price_metadata"] == {"seats": "10"}
    assert facts["plan"] == "Pro"
    assert facts["prices"] == ["price_CorpusProMonthly"]
    assert facts["products"] == ["prod_CorpusPro"]
    assert facts["intervals"] == ["month"]
    assert facts["subscription_started"] == 1759309320  # the payload's start_date
    assert evaluate(near, facts, NOW, config.seats)

    apply(ledger, seats_subscription(version, NOW - 9 * DAY, quantity=8, seats="10"))
    assert not evaluate(near, billing_facts(ledger.snapshot, []), NOW, config.seats)


def test_legacy_plan_metadata_is_read_where_only_a_plan_is_sent() -> None:
    ledger = CustomerLedger(new_state(ADA))
    payload = corpus.event("customer.subscription.created", "legacy", ADA, created=NOW)
    item = payload["data"]["object"]["items"]["data"][0]
    del item["price"]
    item["plan"]["metadata"] = {"seats": "5"}
    item["quantity"] = 5
    apply(ledger, payload)
    facts = billing_facts(ledger.snapshot, [])
    assert facts["price_metadata"] == {"seats": "5"}
    assert field_value("seat_usage", facts, NOW, SEATS) == 1.0


def test_the_oldest_shape_a_plan_on_the_subscription_carries_its_metadata() -> None:
    ledger = CustomerLedger(new_state(ADA))
    payload = corpus.event("customer.subscription.created", "legacy", ADA, created=NOW)
    obj = payload["data"]["object"]
    obj["plan"] = dict(obj["items"]["data"][0]["plan"], metadata={"seats": "4"})
    obj["quantity"] = 3
    obj["items"] = None
    apply(ledger, payload)
    assert field_value("seat_usage", billing_facts(ledger.snapshot, []), NOW, SEATS) == 0.75


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_metered_items_are_not_seats(version: str) -> None:
    ledger = CustomerLedger(new_state("cus_CorpusOps"))
    apply(
        ledger,
        corpus.event(
            "customer.subscription.created.metered", version, "cus_CorpusOps", created=NOW
        ),
    )
    facts = billing_facts(ledger.snapshot, [])
    assert facts["quantity"] == 1  # the licensed Pro item; the metered one has no seats
    assert facts["prices"] == ["price_CorpusApiCalls", "price_CorpusProMonthly"]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_days_on_plan_counts_from_the_last_price_change_not_a_renewal(version: str) -> None:
    ledger = CustomerLedger(new_state(ADA))
    created = corpus.event("customer.subscription.created", version, ADA, created=NOW - 200 * DAY)
    apply(ledger, created)
    facts = billing_facts(ledger.snapshot, [])
    # First seen: the plan began when the subscription did.
    assert facts["plan_since"] == facts["subscription_started"] == 1759309320

    renewal = corpus.event(
        "customer.subscription.updated.renewal", version, ADA, created=NOW - 100 * DAY
    )
    apply(ledger, renewal)
    assert billing_facts(ledger.snapshot, [])["plan_since"] == 1759309320

    more_seats = corpus.event(
        "customer.subscription.updated.renewal", version, ADA, created=NOW - 90 * DAY
    )
    more_seats["data"]["object"]["items"]["data"][0]["quantity"] = 4
    apply(ledger, more_seats)
    assert billing_facts(ledger.snapshot, [])["plan_since"] == 1759309320

    upgrade = corpus.event(
        "customer.subscription.updated.renewal", version, ADA, created=NOW - 30 * DAY
    )
    price = upgrade["data"]["object"]["items"]["data"][0]["price"]
    price.update(id="price_CorpusBusiness", nickname="Business")
    apply(ledger, upgrade)
    facts = billing_facts(ledger.snapshot, [])
    assert facts["plan_since"] == NOW - 30 * DAY
    assert facts["plan"] == "Business"
    assert field_value("days_on_plan", facts, NOW, SEATS) == 30
    # An older event arriving late changes nothing.
    apply(ledger, corpus.event("customer.subscription.updated.renewal", version, ADA, created=1))
    assert billing_facts(ledger.snapshot, [])["plan_since"] == NOW - 30 * DAY


def test_plan_change_first_seen_takes_the_subscription_start() -> None:
    ledger = CustomerLedger(new_state("cus_CorpusTeam"))
    apply(
        ledger,
        corpus.event(
            "customer.subscription.updated.plan_change", "clover", "cus_CorpusTeam", created=NOW
        ),
    )
    facts = billing_facts(ledger.snapshot, [])
    assert facts["plan_since"] == 1748854860
    assert facts["quantity"] == 6  # five Team seats and the audit log
    assert facts["prices"] == ["price_CorpusAuditLog", "price_CorpusTeamSeat"]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_ltv_and_mrr_are_kept_per_currency_and_high_ltv_reads_each(version: str) -> None:
    ledger = CustomerLedger(new_state(ADA))
    for n, (currency, amount) in enumerate([("usd", 60_000), ("eur", 90_000), ("usd", 40_000)]):
        apply(
            ledger,
            corpus.invoice_event(
                "invoice.paid",
                version,
                ADA,
                created=NOW - (10 - n) * DAY,
                subscription=ADA_SUB,
                id=f"in_Seg{n}",
                currency=currency,
                amount_paid=amount,
            ),
        )
    facts = billing_facts(ledger.snapshot, [])
    assert facts["ltv"] == {"usd": 100_000, "eur": 90_000}
    assert json.loads(json.dumps(facts)) == facts
    high = load_segments(Path("segments.yaml")).get("high-ltv")
    assert high is not None
    assert evaluate(high, facts, NOW, SEATS)
    # 90,000 eur and 100,000 usd: only the dollars reach the mark.
    assert not evaluate(high, dict(facts, ltv={"usd": 99_999, "eur": 90_000}), NOW, SEATS)


def test_billing_facts_keys_and_values_for_two_subscriptions_in_two_currencies() -> None:
    ledger = CustomerLedger(new_state(ADA))
    apply(ledger, seats_subscription("clover", NOW - 5 * DAY, quantity=2, seats="3"))
    euro = corpus.event(
        "customer.subscription.created.currency_options",
        "clover",
        ADA,
        created=NOW - 4 * DAY,
    )
    apply(ledger, euro)
    facts = billing_facts(ledger.snapshot, ["dunning", "renewal", "dunning"])
    assert set(facts) == {
        "status",
        "plan",
        "products",
        "prices",
        "currency",
        "mrr",
        "ltv",
        "intervals",
        "quantity",
        "price_metadata",
        "customer_created",
        "subscription_started",
        "plan_since",
        "metadata",
        "lifecycles",
    }
    assert facts["lifecycles"] == ["dunning", "renewal"]
    assert set(facts["mrr"]) == {"usd", "eur"}
    assert facts["mrr"]["usd"] == 4000  # $20 × 2 seats, never summed with the euros
    eur = field_value("mrr_cents", facts, NOW, SEATS, currency="eur")
    assert eur == facts["mrr"]["eur"] > 0


def test_a_customer_without_subscriptions_has_status_none_and_nothing_else_to_read() -> None:
    facts = billing_facts(BillingSnapshot(customer_id="cus_X"), [])
    assert facts["status"] == "none"
    assert facts["plan"] is None and facts["quantity"] is None
    assert facts["products"] == facts["prices"] == facts["intervals"] == []
    assert facts["price_metadata"] == {} and facts["mrr"] == {} and facts["ltv"] == {}
    assert field_value("mrr_cents", facts, NOW, SEATS) == 0
    assert field_value("seat_usage", facts, NOW, SEATS) is None
    free = load_segments(Path("segments.yaml")).get("heavy-free-users")
    assert free is not None
    assert evaluate(free, dict(facts, usage={"seats_used": 3}), NOW, SEATS)
    assert not evaluate(free, dict(facts, usage={"seats_used": 2}), NOW, SEATS)


def test_state_recorded_before_start_and_plan_since_were_kept_still_reads() -> None:
    info = SubscriptionInfo(
        id="sub_old",
        status="active",
        created=NOW - 100 * DAY,
        items=[SubscriptionItemInfo(price_id="price_A", product_id="prod_A", quantity=3)],
    )
    old = SubscriptionState(
        id="sub_old",
        status="active",
        plan="A",
        price_id="price_A",
        product_id="prod_A",
        interval="month",
        quantity=3,
        mrr_cents=0,
        currency="usd",
        current_period_end=None,
        trial_end=None,
        cancel_at_period_end=False,
        version=1,
        subscription=info,
    )
    snapshot = BillingSnapshot(customer_id="cus_X", status="active", subscriptions={"s": old})
    facts = billing_facts(snapshot, [])
    assert facts["subscription_started"] == NOW - 100 * DAY
    assert facts["plan_since"] is None
    assert facts["quantity"] == 3


# --- Explaining ---------------------------------------------------------------------


STARTER = {
    "all": [
        {"field": "plan", "in": ["Starter"]},
        {"field": "status", "eq": "active"},
        {"field": "subscription_age_days", "gte": 90},
    ]
}


def test_explain_shows_each_condition_its_outcome_and_the_actual_value() -> None:
    facts = base_facts(subscription_started=NOW - 45 * DAY)
    assert explain(segment(STARTER), facts, NOW, SEATS) == [
        "✗ all of:",
        "  ✓ plan in [Starter] — Starter",
        "  ✓ status eq active — active",
        "  ✗ subscription_age_days gte 90 — 45",
    ]
    lines = explain(
        segment({"not": {"field": "ltv_cents", "currency": "eur", "gte": 1}}),
        base_facts(ltv={}),
        NOW,
        SEATS,
    )
    assert lines == ["✓ not:", "  ✗ ltv_cents (eur) gte 1 — 0"]
    assert explain(segment({"field": "usage.x", "exists": True}), base_facts(), NOW, SEATS) == [
        "✗ usage.x exists true — missing"
    ]


def test_why_changed_names_the_conditions_that_flipped_with_old_and_new_values() -> None:
    starter = segment(STARTER)
    day_89 = base_facts(subscription_started=NOW - 89 * DAY)
    # The same facts a day later: time alone moved it.
    assert (
        why_changed(starter, day_89, NOW, day_89, NOW + DAY, SEATS)
        == "subscription_age_days 89 → 90 (gte 90)"
    )
    left = base_facts(plan="Pro", status="past_due")
    assert (
        why_changed(starter, base_facts(), NOW, left, NOW, SEATS)
        == "plan Starter → Pro (in [Starter]); status active → past_due (eq active)"
    )
    assert why_changed(starter, None, None, base_facts(), NOW, SEATS) == "first evaluation"
    seat = segment({"field": "seat_usage", "gte": 0.9})
    assert (
        why_changed(seat, base_facts(quantity=8), NOW, base_facts(), NOW, SEATS)
        == "seat_usage 0.8 → 0.9 (gte 0.9)"
    )
    clicks = segment({"field": "clicked_within_days", "lt": 14})
    assert (
        why_changed(clicks, base_facts(last_click_at=None), NOW, base_facts(), NOW, SEATS)
        == "clicked_within_days missing → 3 (lt 14)"
    )


# --- The file -----------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(SegmentsError) as caught:
        parse_segments(text, "segs.yaml")
    return caught.value.problems


def one_segment(where: str, name: str = "s", top: str = "") -> str:
    return f"{top}segments:\n  - name: {name}\n    where: {where}\n"


INVALID = [
    ("{field: plann, eq: x}", "segs.yaml: segment 's': where.field: unknown field 'plann'"),
    ("{field: metadata., eq: x}", "segment 's': where.field: unknown field 'metadata.'"),
    ("{field: plan, equals: x}", "segment 's': where.equals: unknown operator 'equals'"),
    ("{field: plan}", "segment 's': where: expected exactly one operator"),
    ("{field: plan, eq: x, ne: y}", "segment 's': where: expected exactly one operator"),
    ("{field: mrr_cents, gte: abc}", "segment 's': where.gte: 'abc' is not a number"),
    ("{field: mrr_cents, gte: true}", "where.gte: True is not a number"),
    ("{field: mrr_cents, eq: '5'}", "where.eq: '5' is not a number"),
    ("{field: quantity, between: [5]}", "where.between: [5] is not a list of two numbers"),
    ("{field: quantity, between: 5}", "where.between: 5 is not a list of two numbers"),
    ("{field: quantity, between: [9, 1]}", "where.between: low 9 is greater than high 1"),
    ("{field: plan, in: Starter}", "where.in: 'Starter' is not a non-empty list"),
    ("{field: plan, in: []}", "where.in: [] is not a non-empty list"),
    ("{field: plan, eq: [Starter]}", "where.eq: eq takes one value; use in or not_in"),
    ("{field: plan, gte: 3}", "where.gte: plan is not a number: use eq, ne, in, not_in, exists"),
    ("{field: status, eq: activ}", "where.eq: 'activ' is not a status (active, trialing"),
    ("{field: status, in: [active, gone]}", "where.in[1]: 'gone' is not a status"),
    ("{field: currency, eq: dollars}", "where.eq: 'dollars' is not a currency code"),
    ("{field: interval, eq: fortnight}", "where.eq: 'fortnight' is not a billing period"),
    ("{field: in_lifecycle, eq: onboarding}", "where.eq: 'onboarding' is not a lifecycle"),
    ("{field: plan, exists: yes please}", "where.exists: 'yes please' is not true or false"),
    ("{field: plan, currency: usd, eq: x}", "where.currency: only mrr_cents and ltv_cents"),
    ("{field: ltv_cents, currency: 12, gte: 1}", "where.currency: 12 is not a currency code"),
    ("{all: []}", "segment 's': where.all: expected a non-empty list of conditions"),
    ("{any: {field: plan, eq: x}}", "where.any: expected a non-empty list"),
    ("{all: [{field: plan, eq: x}, {any: [{field: nope, eq: 1}]}]}", "where.all[1].any[0].field"),
    ("{not: [1]}", "segment 's': where.not: expected a condition"),
    ("{all: [{field: plan, eq: x}], field: plan}", "where: expected exactly one of field"),
    ("{all: [{field: plan, eq: x}], extra: 1}", "where.extra: unknown field beside all"),
    ("[]", "segment 's': where: expected a condition"),
    ("{field: seat_usage, gte: 0.9}", "where.field: seat_usage needs the plan's limit"),
]


@pytest.mark.parametrize(("where", "expected"), INVALID)
def test_a_mistake_is_named_by_file_segment_and_field(where: str, expected: str) -> None:
    found = problems(one_segment(where))
    assert any(expected in p for p in found), found
    assert all(p.startswith("segs.yaml: ") for p in found)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("starter-3-months", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("Starter", False),
        ("starter_3", False),
        ("starter 3", False),
        ("-starter", False),
        ("starter--3", False),
        ("seats-near-limit", True),
    ],
)
def test_names_must_be_usable_as_a_temporal_keyword(name: str, valid: bool) -> None:
    text = one_segment("{field: plan, eq: x}", name=json.dumps(name))
    if valid:
        assert parse_segments(text, "segs.yaml").segments[0].name == name
    else:
        assert any("name: use lowercase letters" in p for p in problems(text))


def test_every_problem_is_reported_at_once() -> None:
    text = """
segments:
  - name: a
    where: {field: plann, eq: x}
  - name: a
    where: {field: plan, eq: x}
  - name: b
  - name: c
    colour: red
    where: {all: [{field: mrr_cents, gte: abc}, {field: status, eq: nope}]}
  - {where: {field: plan, eq: x}}
  - not-a-mapping
unknown_top: 1
seat_usage: {limit_metadata_key: "", used: seats}
"""
    found = problems(text)
    assert found == [
        "segs.yaml: top level: unknown_top: unknown field (expected segments, seat_usage)",
        "segs.yaml: top level: seat_usage.limit_metadata_key: required: the price metadata key "
        "holding the plan's seat limit, e.g. seats",
        "segs.yaml: top level: seat_usage.used: 'seats' is not quantity or usage.<metric> "
        "(e.g. usage.seats)",
        "segs.yaml: segment 'a': where.field: unknown field 'plann' (one of plan, status, "
        "currency, product, price, interval, in_lifecycle, mrr_cents, ltv_cents, quantity, "
        "seat_usage, customer_age_days, subscription_age_days, days_on_plan, "
        "clicked_within_days, metadata.<key>, usage.<metric>)",
        "segs.yaml: segment 'a': name: used by more than one segment",
        "segs.yaml: segment 'b': where: required: the segment's conditions",
        "segs.yaml: segment 'c': colour: unknown field (expected name, description, where)",
        "segs.yaml: segment 'c': where.all[0].gte: 'abc' is not a number",
        "segs.yaml: segment 'c': where.all[1].eq: 'nope' is not a status (active, trialing, "
        "past_due, canceled, unpaid, paused, incomplete, incomplete_expired, none)",
        "segs.yaml: top level: segments[4].name: required, a non-empty string",
        "segs.yaml: top level: segments[5]: expected a mapping",
    ]
    assert str(SegmentsError(found)) == "\n".join(found)


def test_a_file_that_is_not_a_segments_file_is_refused() -> None:
    assert problems("segments: {}") == [
        "segs.yaml: top level: expected a mapping with a `segments` list"
    ]
    assert problems("segments: [")[0].startswith("segs.yaml: not valid YAML")


@pytest.mark.parametrize(
    ("where", "time_based"),
    [
        ("{field: plan, eq: x}", False),
        ("{field: customer_age_days, gte: 1}", True),
        ("{field: subscription_age_days, gte: 1}", True),
        ("{field: days_on_plan, gte: 1}", True),
        ("{field: clicked_within_days, lt: 14}", True),
        ("{all: [{field: plan, eq: x}, {not: {any: [{field: days_on_plan, lt: 3}]}}]}", True),
        ("{field: usage.seats, gte: 1}", False),
    ],
)
def test_segments_with_conditions_that_change_with_time_alone_are_time_based(
    where: str, time_based: bool
) -> None:
    assert parse_segments(one_segment(where), "s.yaml").segments[0].time_based is time_based


def test_the_packaged_defaults_parse_and_hold_the_campaign_segments() -> None:
    config = load_segments(Path("segments.yaml"))
    assert config == parse_segments(PACKAGED_DEFAULTS.read_text(encoding="utf-8"), "x")
    assert config.seats == SeatUsage(limit_key="seats", used="quantity")
    names = config.names
    for name in (
        "starter-3-months",
        "seats-near-limit",
        "high-ltv",
        "trialing",
        "past-due",
        "heavy-free-users",
        "engaged",
        "churn-risk",
    ):
        assert name in names
    starter = config.get("starter-3-months")
    assert starter is not None and starter.time_based
    day_90 = base_facts(subscription_started=NOW - 90 * DAY)
    assert evaluate(starter, day_90, NOW, config.seats)
    assert not evaluate(starter, day_90, NOW - 1, config.seats)
    assert not evaluate(starter, base_facts(plan="Pro"), NOW, config.seats)
    engaged, churn = config.get("engaged"), config.get("churn-risk")
    assert engaged is not None and churn is not None
    assert evaluate(engaged, base_facts(), NOW, config.seats)
    quiet = base_facts(last_click_at=NOW - 61 * DAY)
    assert not evaluate(engaged, quiet, NOW, config.seats)
    assert evaluate(churn, quiet, NOW, config.seats)
    assert not evaluate(churn, base_facts(last_click_at=None), NOW, config.seats)


def test_a_configured_file_is_read_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    mine = tmp_path / "segments.yaml"
    mine.write_text(one_segment("{field: status, eq: trialing}", name="mine"), encoding="utf-8")
    assert load_segments(mine).names == ["mine"]
    with pytest.raises(SegmentsError, match="LIFECYCLE_SEGMENTS names a file that does not"):
        load_segments(tmp_path / "other.yaml")
    mine.write_text(one_segment("{field: status, eq: nope}"), encoding="utf-8")
    with pytest.raises(SegmentsError, match=f"{mine}: segment 's': where.eq"):
        load_segments(mine)


def test_a_config_crosses_the_temporal_boundary_unchanged() -> None:
    config = load_segments(Path("segments.yaml"))
    converter = DataConverter.default.payload_converter
    payloads = converter.to_payloads([config])
    (decoded,) = converter.from_payloads(payloads, [SegmentsConfig])
    assert decoded == config
    facts = base_facts()
    for before, after in zip(config.segments, decoded.segments, strict=True):
        assert evaluate(before, facts, NOW, config.seats) == evaluate(
            after, facts, NOW, decoded.seats
        )
