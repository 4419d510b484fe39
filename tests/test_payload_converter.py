"""Our payload converter writes every value to the bytes Temporal's default converter
writes, reads every payload to the value it reads, and refuses what it refuses with the
same error; it only resolves each dataclass's fields and type hints once, and copies no
value to write it (README "Performance")."""

from __future__ import annotations

import gc
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.converter import DataConverter

from stripe_lifecycle.domain import rules
from stripe_lifecycle.domain.events import BillingEvents, lean
from stripe_lifecycle.domain.ledger import CustomerLedger, new_state
from stripe_lifecycle.payload_codec import data_converter
from stripe_lifecycle.payload_converter import _PLANS, _WRITINGS
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


class Kind(StrEnum):
    TRIAL = "trial"
    DUNNING = "dunning"


@dataclass
class Shapes:
    """Every shape the readers cover, and some they leave to the SDK's rules."""

    when: datetime
    kind: Kind
    ratio: float = 0.0
    maybe_when: datetime | None = None
    maybe_kind: Kind | None = None
    maybe_line: Line | None = None
    maybe_names: list[str] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    loose: dict[str, Any] = field(default_factory=dict)
    grid: list[list[int]] = field(default_factory=list)
    pair: tuple[int, str] | None = None
    maybe_literal: Literal["a", "b"] | None = None
    keyed_by_int: dict[int, str] = field(default_factory=dict)


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


@dataclass(slots=True)
class Slotted:
    n: int
    line: Line


def _with_extra(line: Line) -> Line:
    # Not a field: the SDK writes fields only.
    line.note = "kept out"  # type: ignore[attr-defined]
    return line


class Doubling:
    """A field's descriptor: the instance keeps the value under another name, and reading
    the field doubles it."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = f"_{name}"

    def __get__(self, obj: object, objtype: type | None = None) -> int:
        return 0 if obj is None else 2 * int(getattr(obj, self._name))

    def __set__(self, obj: object, value: int) -> None:
        setattr(obj, self._name, value)


@dataclass
class Shadowed:
    size: Doubling = Doubling()


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
    ("a dataclass with slots", Slotted(1, Line("p"))),
    ("an instance given an attribute beyond its fields", _with_extra(Line("p"))),
    ("a field shadowed by a property", Shadowed(2)),
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


SHAPE_CASES: list[tuple[str, Any]] = [
    (
        "every shape given its type",
        {
            "when": "2026-12-01T10:00:00+00:00",
            "kind": "trial",
            "ratio": 0.5,
            "maybe_when": "2026-12-02T00:00:00Z",
            "maybe_kind": "dunning",
            "maybe_line": {"price": "p"},
            "maybe_names": ["a", "b"],
            "counts": {"x": 1},
            "loose": {"y": [1, {"z": None}]},
            "grid": [[1, 2], []],
            "pair": [1, "s"],
            "maybe_literal": "a",
            "keyed_by_int": {"3": "three"},
        },
    ),
    ("None where optional", {"when": "2026-12-01", "kind": "trial", "maybe_line": None}),
    ("a float field given an int", {"when": "2026-12-01", "kind": "trial", "ratio": 2}),
    ("a float field given a bool", {"when": "2026-12-01", "kind": "trial", "ratio": True}),
    ("a datetime that is not ISO", {"when": "yesterday", "kind": "trial"}),
    ("a datetime given a number", {"when": 5, "kind": "trial"}),
    ("an enum value unknown", {"when": "2026-12-01", "kind": "winback"}),
    ("an optional enum value unknown", {"when": "2026-12-01", "kind": "trial", "maybe_kind": "x"}),
    (
        "an optional dataclass refusing",
        {"when": "2026-12-01", "kind": "trial", "maybe_line": {"quantity": 1}},
    ),
    (
        "a list item of the wrong type",
        {"when": "2026-12-01", "kind": "trial", "maybe_names": ["a", 1]},
    ),
    (
        "a dict value of the wrong type",
        {"when": "2026-12-01", "kind": "trial", "counts": {"x": "1"}},
    ),
    ("a list where a dict goes", {"when": "2026-12-01", "kind": "trial", "counts": [1]}),
    ("a dict where a list goes", {"when": "2026-12-01", "kind": "trial", "grid": {"a": 1}}),
    ("a nested list item wrong", {"when": "2026-12-01", "kind": "trial", "grid": [[1, "2"]]}),
    ("a literal outside its values", {"when": "2026-12-01", "kind": "trial", "maybe_literal": "c"}),
    (
        "an int key that is not a number",
        {"when": "2026-12-01", "kind": "trial", "keyed_by_int": {"x": "y"}},
    ),
]


@pytest.mark.parametrize(("case", "value"), SHAPE_CASES, ids=[case for case, _ in SHAPE_CASES])
def test_each_shape_reads_as_the_default_converter_reads_it(case: str, value: Any) -> None:
    ours = outcome(OURS, value, Shapes)
    assert ours == outcome(DEFAULT, value, Shapes), case
    assert ours[0] == (
        "value"
        if case
        in (
            "every shape given its type",
            "None where optional",
            "a float field given an int",
            "a float field given a bool",
        )
        else "error"
    ), case


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["trial", "dunning", "a", "2026-12-01T10:00:00+00:00", "p"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["price", "quantity", "x", "3"]), children, max_size=3)
    ),
    max_leaves=8,
)
TEXT = st.text(max_size=4)
ISO = st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
LINE = st.fixed_dictionaries({"price": TEXT}, optional={"quantity": st.integers()})
WELL_TYPED: dict[str, st.SearchStrategy[Any]] = {
    "when": ISO,
    "kind": st.sampled_from([kind.value for kind in Kind]),
    "ratio": st.floats(allow_nan=False, allow_infinity=False),
    "maybe_when": st.none() | ISO,
    "maybe_kind": st.none() | st.sampled_from([kind.value for kind in Kind]),
    "maybe_line": st.none() | LINE,
    "maybe_names": st.none() | st.lists(TEXT, max_size=3),
    "counts": st.dictionaries(TEXT, st.integers(), max_size=3),
    "loose": st.dictionaries(TEXT, JSON_VALUES, max_size=3),
    "grid": st.lists(st.lists(st.integers(), max_size=3), max_size=3),
    "pair": st.none() | st.tuples(st.integers(), TEXT).map(list),
    "maybe_literal": st.none() | st.sampled_from(["a", "b"]),
    "keyed_by_int": st.dictionaries(st.integers().map(str), TEXT, max_size=3),
}


# Any JSON, and containers of any JSON where the readers expect containers.
WRONG = (
    JSON_VALUES
    | st.lists(JSON_VALUES, min_size=1, max_size=3)
    | st.dictionaries(TEXT, JSON_VALUES, min_size=1, max_size=3)
)


@st.composite
def shapes_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A `Shapes` object as a payload holds it, every field well typed or left out but
    one, which holds any JSON value: a wrong value anywhere, not only in the first field
    read (well-typed objects are the cases above)."""
    value = {
        name: draw(strategy)
        for name, strategy in WELL_TYPED.items()
        if name in ("when", "kind") or draw(st.booleans())
    }
    value[draw(st.sampled_from(list(WELL_TYPED)))] = draw(WRONG)
    return value


@settings(max_examples=300, deadline=None)
@given(shapes_objects())
def test_any_json_object_reads_as_the_default_converter_reads_it(value: dict[str, Any]) -> None:
    """Right or wrong, whatever JSON a payload holds is read to the SDK's value or refused
    with the SDK's error."""
    assert outcome(OURS, value, Shapes) == outcome(DEFAULT, value, Shapes)


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
        assert Copy in _WRITINGS

    gc.collect()
    before = len(_WRITINGS)
    a_sandboxed_copy()
    gc.collect()
    assert len(_WRITINGS) == before
