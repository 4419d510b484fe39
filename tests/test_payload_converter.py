"""Our payload converter writes every value to the bytes Temporal's default converter
writes, reads every payload to the value it reads, and refuses what it refuses with the
same error; it only resolves each dataclass's fields and type hints once, and copies no
value to write it (README "Performance")."""

from __future__ import annotations

import gc
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from temporalio.converter import DataConverter

from stripe_lifecycle.domain import rules
from stripe_lifecycle.domain.events import BillingEvents, lean
from stripe_lifecycle.domain.ledger import CustomerLedger, new_state
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.payload_converter import _NAMES, _PLANS
from tests import corpus

DEFAULT = DataConverter.default.payload_converter
OURS = data_converter(None).payload_converter


@dataclass
class Line:
    price: str
    quantity: int = 1


@dataclass
class Order:
    id: str
    lines: list[Line]
    note: str | None = None
    paid: bool = False
    total: int | float = 0
    kind: Literal["new", "renewal"] = "new"
    extra: dict[str, Line] = field(default_factory=dict)
    either: Line | Order | None = None
    anything: Any = None
    computed: int = field(default=0, init=False)


def decode(converter: Any, value: Any, hint: Any) -> Any:
    [payload] = DEFAULT.to_payloads([value])
    [decoded] = converter.from_payloads([payload], [hint])
    return decoded


def outcome(converter: Any, value: Any, hint: Any) -> tuple[str, Any]:
    try:
        return "value", decode(converter, value, hint)
    except Exception as err:
        # The composite converter wraps the error; the cause chain says what was refused.
        causes = []
        cause: BaseException | None = err
        while cause is not None:
            causes.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return "error", causes


@pytest.mark.parametrize("version", corpus.VERSIONS)
@pytest.mark.parametrize("shape", ["full", "lean"])
def test_every_corpus_event_decodes_to_what_the_default_converter_reads(
    version: str, shape: str
) -> None:
    batch = corpus.billing_batch(version)
    value = lean(batch) if shape == "lean" else batch
    ours = decode(OURS, value, BillingEvents)
    assert ours == decode(DEFAULT, value, BillingEvents)
    assert ours == batch


def written(converter: Any, value: Any) -> tuple[str, Any]:
    try:
        [payload] = converter.to_payloads([value])
    except Exception as err:
        return "error", f"{type(err).__name__}: {err}"
    return "payload", (dict(payload.metadata), payload.data)


@pytest.mark.parametrize("version", corpus.VERSIONS)
def test_every_corpus_event_and_the_state_it_makes_write_the_default_converter_s_bytes(
    version: str,
) -> None:
    batch = corpus.billing_batch(version)
    ledger = CustomerLedger(new_state(batch.events[0].customer_id))
    applied = rules.apply_batch(ledger, batch.events)
    assert applied
    for value in (batch, lean(batch), ledger.snapshot, ledger.export(), applied[0].before):
        ours = written(OURS, value)
        assert ours[0] == "payload"
        assert ours == written(DEFAULT, value)


@dataclass(init=False)
class Stamp(datetime):
    """A datetime that is also a dataclass: the SDK writes it as ISO text."""


WRITE_CASES: list[tuple[str, Any]] = [
    (
        "nested everywhere",
        Order(
            id="o1",
            lines=[Line("p", 2), Line("q")],
            note="n",
            total=2.5,
            extra={"b": Line("r"), "a": Line("s", 3)},
            either=Order(id="o2", lines=[]),
            anything={"t": (Line("u"), [Line("v")]), "when": datetime(2026, 12, 1, tzinfo=UTC)},
        ),
    ),
    ("the init=False field", Order(id="o1", lines=[])),
    ("a dataclass in a tuple and a set beside it", (Line("p"), {1, 2}, frozenset({"a"}))),
    ("a uuid", Order(id="o1", lines=[], anything=uuid.UUID(int=7))),
    ("a datetime that is a dataclass", Stamp(2026, 12, 1)),
    ("a dataclass class, not an instance", Order(id="o1", lines=[], anything=Line)),
    ("something JSON cannot write", Order(id="o1", lines=[], anything=object())),
    ("no dataclass at all", {"k": [1, 2.5, None, True, "s"]}),
]


@pytest.mark.parametrize(("case", "value"), WRITE_CASES, ids=[case for case, _ in WRITE_CASES])
def test_each_value_is_written_as_the_default_converter_writes_it(case: str, value: Any) -> None:
    ours = written(OURS, value)
    assert ours == written(DEFAULT, value), case
    assert ours[0] == ("error" if "cannot" in case or "not an instance" in case else "payload")


CASES: list[tuple[str, Any]] = [
    (
        "all fields",
        {
            "id": "o1",
            "lines": [{"price": "p", "quantity": 2}],
            "note": "n",
            "paid": True,
            "total": 2.5,
            "kind": "renewal",
            "extra": {"a": {"price": "q"}},
            "either": {"id": "o2", "lines": []},
            "anything": {"x": [1]},
            "computed": 7,
        },
    ),
    ("defaults left out", {"id": "o1", "lines": []}),
    ("unknown keys ignored", {"id": "o1", "lines": [], "later_field": 1}),
    ("a required field missing", {"lines": []}),
    ("a wrong-typed field", {"id": 5, "lines": []}),
    ("a wrong-typed nested field", {"id": "o1", "lines": [{"price": "p", "quantity": "2"}]}),
    ("not an object", ["o1"]),
    ("an int field given a bool", {"id": "o1", "lines": [{"price": "p", "quantity": True}]}),
    ("an int field given a float", {"id": "o1", "lines": [{"price": "p", "quantity": 2.0}]}),
    ("a bool field given an int", {"id": "o1", "lines": [], "paid": 1}),
    ("None for an optional field", {"id": "o1", "lines": [], "note": None}),
    ("None for a required field", {"id": None, "lines": []}),
    ("a literal outside its values", {"id": "o1", "lines": [], "kind": "other"}),
    (
        "a union's first member refusing",
        {"id": "o1", "lines": [], "either": {"id": "o3", "lines": []}},
    ),
    ("a union no member reads", {"id": "o1", "lines": [], "either": {"quantity": 1}}),
    ("an int-or-float given an int", {"id": "o1", "lines": [], "total": 3}),
]


@pytest.mark.parametrize(("case", "value"), CASES, ids=[case for case, _ in CASES])
def test_each_rule_of_the_default_converter_holds(case: str, value: Any) -> None:
    ours = outcome(OURS, value, Order)
    assert ours == outcome(DEFAULT, value, Order), case
    if case == "all fields":
        order = ours[1]
        # init=False fields are set after the class is built, as the SDK does.
        assert order.computed == 7
        assert order.either == Order(id="o2", lines=[])
        assert order.extra == {"a": Line(price="q")}


def test_a_class_s_plan_goes_with_the_class() -> None:
    """A workflow sandbox defines its own copy of each class it loads; the plans kept for
    them must not outlive the sandbox."""

    def a_sandboxed_copy() -> type:
        @dataclass
        class Copy:
            id: str

        assert decode(OURS, {"id": "x"}, Copy) == Copy(id="x")
        assert Copy in _PLANS
        return Copy

    # Classes that died before (earlier tests' sandboxes) go first: only this one is counted.
    gc.collect()
    before = len(_PLANS)
    a_sandboxed_copy()
    gc.collect()
    assert len(_PLANS) == before


def test_a_class_s_field_names_go_with_the_class() -> None:
    def a_sandboxed_copy() -> None:
        @dataclass
        class Copy:
            id: str

        assert written(OURS, Copy(id="x")) == written(DEFAULT, Copy(id="x"))
        assert Copy in _NAMES

    gc.collect()
    before = len(_NAMES)
    a_sandboxed_copy()
    gc.collect()
    assert len(_NAMES) == before
