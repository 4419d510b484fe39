"""Validly signed events we cannot read: the normaliser answers a `BillingEvent` or raises
`UnreadableEvent`, never anything else; the webhook stores such an event as unreadable
with the reason and acknowledges it (Stripe would retry a 500 for three days), and no
workflow ever receives it.

Here the fuzzing is table-driven: every field of every corpus payload replaced in turn by
each wrong-typed value below, and the cases the fuzzing of the running API found;
`test_fuzz.py` adds hypothesis's generated events.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select
from sqlmodel import col
from temporalio.testing import WorkflowEnvironment

from stripe_lifecycle.intake.body import NotAStripeEvent, read_body
from stripe_lifecycle.intake.normalise import (
    UnreadableEvent,
    normalise_event,
    parse_subscription_item,
)
from stripe_lifecycle.storage.models import InboxStatus, WebhookEvent

from . import corpus
from .conftest import app_settings, running_api, temporal_address
from .events import customer_event, unique_customer_id
from .mutation_helpers import check_total, paths, replaced
from .signing import stripe_signature

T0 = 1_790_000_000

# What a fuzzer puts where a field was: text where numbers go, numbers where text, lists
# and objects where neither, values out of every range.
WRONG_VALUES: tuple[Any, ...] = (
    "abc",
    "NaN",
    "1e999999",
    1.5,
    math.inf,
    math.nan,
    1e20,
    10**20,
    -(10**15),
    True,
    -1,
    [7, "x"],
    {"a": {"b": [1]}},
    None,
)


def corpus_payloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{version}/{name}", corpus.load(name, version))
        for version in corpus.VERSIONS
        for name in corpus.names(version)
    ]


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_every_field_replaced_by_every_wrong_value_is_read_or_unreadable(version: str) -> None:
    answers = {"event": 0, "none": 0, "unreadable": 0}
    for name in corpus.names(version):
        payload = corpus.load(name, version)
        for path in list(paths(payload)):
            parent: Any = payload
            for key in path[:-1]:
                parent = parent[key]
            original = parent[path[-1]]
            for value in WRONG_VALUES:
                # In place and put back: a copy per case would make the sweep slow.
                parent[path[-1]] = value
                try:
                    answer = check_total(payload)
                except Exception as exc:  # the failure report names the case
                    raise AssertionError(
                        f"{version}/{name}: {'.'.join(map(str, path))} = {value!r} "
                        f"raised {type(exc).__name__}: {exc}"
                    ) from exc
                kind = (
                    "unreadable"
                    if isinstance(answer, UnreadableEvent)
                    else "none"
                    if answer is None
                    else "event"
                )
                answers[kind] += 1
            parent[path[-1]] = original
    # The sweep did reach both outcomes, many times over.
    assert answers["event"] > 1000 and answers["unreadable"] > 1000, answers


def subscription(cus: str, **changes: Any) -> dict[str, Any]:
    return corpus.event("customer.subscription.created", "clover", cus, created=T0, **changes)


def invoice(cus: str, **changes: Any) -> dict[str, Any]:
    return corpus.event("invoice.payment_failed", "clover", cus, created=T0, **changes)


def with_price(event: dict[str, Any], **price: Any) -> dict[str, Any]:
    event["data"]["object"]["items"]["data"][0]["price"].update(price)
    return event


def with_item(event: dict[str, Any], **item: Any) -> dict[str, Any]:
    event["data"]["object"]["items"]["data"][0].update(item)
    return event


def with_coupon(event: dict[str, Any], **coupon: Any) -> dict[str, Any]:
    event["data"]["object"]["discounts"] = [
        {"id": "di_1", "object": "discount", "coupon": {"id": "co_1", **coupon}}
    ]
    return event


def with_envelope(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event.update(fields)
    return event


# The wrong-typed fields the fuzzing of the running API answered 500 for, each as a
# signed event must now be recorded: (case, event builder, words of the recorded reason).
FOUND_BY_FUZZING: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
    ("int() of a string", lambda cus: invoice(cus, amount_due="abc"), "amount_due"),
    ("int() of a fraction", lambda cus: invoice(cus, attempt_count=1.5), "attempt_count"),
    ("int() of a huge number", lambda cus: invoice(cus, total=10**20), "total"),
    (
        "Decimal('abc')",
        lambda cus: with_price(subscription(cus), unit_amount_decimal="abc"),
        "unit_amount_decimal",
    ),
    (
        "Decimal('NaN') in rounding",
        lambda cus: with_price(subscription(cus), unit_amount_decimal="NaN"),
        "unit_amount_decimal",
    ),
    (
        "Decimal('1e999999') in rounding",
        lambda cus: with_price(subscription(cus), unit_amount_decimal="1e999999"),
        "unit_amount_decimal",
    ),
    (
        "percent_off 'x'",
        lambda cus: with_coupon(subscription(cus), percent_off="x", duration="forever"),
        "percent_off",
    ),
    ("discounts: 5", lambda cus: subscription(cus, discounts=5), "discounts"),
    ("items.data: 7", lambda cus: subscription(cus, items={"object": "list", "data": 7}), "data"),
    ("created 1e20", lambda cus: with_envelope(subscription(cus), created=1e20), "created"),
    ("created -1e15", lambda cus: with_envelope(subscription(cus), created=-(10**15)), "created"),
    ("trial_end 1e20", lambda cus: subscription(cus, trial_end=10**20), "trial_end"),
    ("quantity -3", lambda cus: with_item(subscription(cus), quantity=-3), "quantity"),
]
# What the normaliser reads but the inbox's columns cannot hold.
TOO_WIDE_TO_STORE = [
    with_envelope(invoice(unique_customer_id()), type="x" * 300),
    with_envelope(invoice(unique_customer_id()), api_version="2025-" * 20),
    with_envelope(invoice(unique_customer_id()), api_version=20250930),
]


@pytest.mark.parametrize(
    ("case", "build", "reason"), FOUND_BY_FUZZING, ids=[c[0] for c in FOUND_BY_FUZZING]
)
def test_found_by_fuzzing_reads_as_unreadable(
    case: str, build: Callable[[str], dict[str, Any]], reason: str
) -> None:
    del case
    event = build(unique_customer_id())
    with pytest.raises(UnreadableEvent, match=reason):
        normalise_event(event)


def test_text_of_the_wrong_type_reads_as_absent() -> None:
    """Descriptive text (no money, no time) of another type is read as missing rather than
    refusing the event: an email name of `{}` becomes no name, not the text "{}"."""
    cus = unique_customer_id()
    event = customer_event(cus, "ada@example.com", created=T0)
    event["data"]["object"]["name"] = {"first": "Ada"}
    event["data"]["object"]["metadata"] = ["not", "a", "map"]
    billing = normalise_event(event)
    assert billing is not None and billing.customer is not None
    assert (billing.customer.name, billing.customer.metadata) == (None, {})


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("case", "body", "problem"),
    [
        ("10,000 deep", '"metadata": {"deep": ' + nested(10_000) + "}", "nested too deep"),
        ("100 deep", '"metadata": {"deep": ' + nested(100) + "}", "nested deeper than 64"),
        ("1e999999", '"amount_due": 1e999999', "out of range"),
    ],
)
def test_a_body_that_cannot_be_stored_whole_is_kept_in_brief(
    case: str, body: str, problem: str
) -> None:
    del case
    text = (
        '{"id": "evt_deep", "object": "event", "type": "invoice.paid", "created": 1790000000,'
        ' "livemode": false, "data": {"object": {"object": "invoice", "customer": "cus_1", '
        + body
        + "}}}"
    )
    read = read_body(text.encode())
    assert read.problem is not None and problem in read.problem
    assert read.payload == {
        "id": "evt_deep",
        "object": "event",
        "type": "invoice.paid",
        "created": 1790000000,
        "livemode": False,
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "evt_1", "type": "x", "created": NaN, "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "x", "created": Infinity, "data": {"object": {}}}',
        b"[" * 5000 + b"]" * 5000,
        b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"id": "' + b"e" * 300 + b'", "type": "x", "created": 1, "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "x", "created": true, "data": {"object": {}}}',
    ],
    ids=["NaN", "Infinity", "deep array", "deep without an id", "long id", "created true"],
)
def test_what_cannot_be_stored_by_its_id_is_refused(body: bytes) -> None:
    with pytest.raises(NotAStripeEvent):
        read_body(body)


# --- Through the real app -----------------------------------------------------------


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment, database_url: str, task_queue: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = app_settings(database_url, temporal_address(dev_env), task_queue)
    async with running_api(settings) as pair:
        yield pair


async def post_raw(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"},
    )


async def stored(app: FastAPI, event_id: str) -> WebhookEvent:
    async with app.state.lifecycle.sessionmaker() as session:
        row = await session.execute(
            select(WebhookEvent).where(col(WebhookEvent.event_id) == event_id)
        )
        found: WebhookEvent = row.scalar_one()
        return found


def fuzzed_sample(size: int) -> list[dict[str, Any]]:
    """A reproducible sample of corpus events with one field replaced, each unreadable and
    encodable as JSON (what a webhook body can carry)."""
    chooser = random.Random(14)
    payloads = corpus_payloads()
    sample: list[dict[str, Any]] = []
    while len(sample) < size:
        _, payload = chooser.choice(payloads)
        path = chooser.choice(list(paths(payload["data"]["object"])))
        value = chooser.choice(
            [v for v in WRONG_VALUES if not isinstance(v, float) or math.isfinite(v)]
        )
        candidate = replaced(payload, ("data", "object", *path), value)
        candidate["id"] = corpus.event_id()
        if isinstance(check_total(candidate), UnreadableEvent):
            sample.append(candidate)
    return sample


async def test_signed_unreadable_events_are_stored_and_acknowledged(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    built = [build(unique_customer_id()) for _, build, _ in FOUND_BY_FUZZING]
    built += [{**event, "id": corpus.event_id()} for event in TOO_WIDE_TO_STORE]
    for event in [*built, *fuzzed_sample(25)]:
        response = await post_raw(http, json.dumps(event).encode())
        assert response.status_code == 200, response.text
        assert response.json()["status"] == InboxStatus.UNREADABLE, event
        row = await stored(app, event["id"])
        assert row.status == InboxStatus.UNREADABLE
        assert row.last_error, "the reason is recorded"
        assert row.payload == event
    # Stripe's retry of one is a duplicate, acknowledged again.
    again = await post_raw(http, json.dumps(built[0]).encode())
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    await app.state.lifecycle.forwarder.drained()
    assert app.state.lifecycle.forwarder.backlog() == 0


async def test_signed_bodies_too_deep_or_too_large_a_number_are_stored_in_brief(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, http = api
    cus = unique_customer_id()
    for event_id, field in (
        ("evt_T_deep_10000", '"metadata": {"deep": ' + nested(10_000) + "}"),
        ("evt_T_infinite", '"amount_due": 1e999999'),
    ):
        body = (
            f'{{"id": "{event_id}", "object": "event", "type": "invoice.payment_failed",'
            f' "created": {T0}, "livemode": false, "data": {{"object": {{"object": "invoice",'
            f' "customer": "{cus}", {field}}}}}}}'
        ).encode()
        response = await post_raw(http, body)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "received": True,
            "event_id": event_id,
            "duplicate": False,
            "status": "unreadable",
        }
        row = await stored(app, event_id)
        assert (row.status, row.type, row.created) == (
            InboxStatus.UNREADABLE,
            "invoice.payment_failed",
            datetime.fromtimestamp(T0, UTC),
        )
        assert row.last_error and row.payload["id"] == event_id and "data" not in row.payload


async def test_an_unreadable_row_left_pending_is_set_aside_by_the_forwarder(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """A row an earlier version stored pending, now unreadable, neither crashes the sweep
    nor holds up the rows after it."""
    app, _ = api
    bad = invoice(unique_customer_id(), amount_due="abc")
    good = customer_event(unique_customer_id(), "lin@example.com", created=T0)
    rows = [
        {
            "event_id": event["id"],
            "type": event["type"],
            "livemode": False,
            "customer_id": event["data"]["object"].get("customer") or event["data"]["object"]["id"],
            "created": datetime.fromtimestamp(T0, UTC),
            "payload": event,
            "received_at": datetime(2026, 1, 1, tzinfo=UTC),
            "status": InboxStatus.PENDING,
            "attempts": 0,
        }
        for event in (bad, good)
    ]
    async with app.state.lifecycle.sessionmaker() as session:
        await session.execute(insert(WebhookEvent), rows)
        await session.commit()
    forwarder = app.state.lifecycle.forwarder
    await forwarder.sweep()
    await forwarder.drained()
    bad_row, good_row = await stored(app, bad["id"]), await stored(app, good["id"])
    assert bad_row.status == InboxStatus.UNREADABLE
    assert bad_row.last_error is not None and "amount_due" in bad_row.last_error
    assert good_row.status == InboxStatus.FORWARDED


def test_decimal_amounts_read_by_the_stripe_library_are_amounts() -> None:
    # The stripe library reads `*_decimal` fields of API answers as Decimal, not text.
    item = parse_subscription_item(
        {
            "price": {
                "id": "price_T1",
                "currency": "usd",
                "unit_amount_decimal": Decimal("4900.5"),
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [{"up_to": None, "unit_amount_decimal": Decimal("12.25")}],
                "recurring": {"interval": "month", "interval_count": 1},
            }
        },
        "usd",
    )
    assert item.unit_amount_decimal == "4900.5"
    assert item.tiers is not None and item.tiers[0].unit_amount_decimal == "12.25"
