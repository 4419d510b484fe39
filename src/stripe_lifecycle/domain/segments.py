"""Segments as data: load, validate and evaluate (pure apart from reading the file).

A segment is a named condition over a customer's *facts*: what the ledger knows of their
billing (`billing_facts`, computed inside the customer workflow), plus what the evaluating
activity adds from the database (`usage`, `last_click_at`). Conditions combine with
`all`, `any` and `not`; each compares one field with one operator.

Missing data: a field without a value (no subscription, no such metadata key, usage never
reported, no seat limit known, never clicked) makes `eq`, `in`, `gt`, `gte`, `lt`, `lte`
and `between` false, and `ne` and `not_in` true: `ne` is exactly `not eq`, so "not on
Starter" includes a customer on no plan at all. `exists: true` holds when the field has a
value (a list field: at least one), `exists: false` when it has none.

Times are whole days: `(now - then) // 86400`, so a subscription started 89 days and 23
hours ago is 89 days old.
"""

# No `from __future__ import annotations`: these dataclasses cross the Temporal boundary and
# the data converter resolves their types per payload.

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stripe_lifecycle.domain.ledger import (
    LIVE_STATUSES,
    BillingSnapshot,
    SubscriptionState,
    billing_period,
    primary_subscription,
)
from stripe_lifecycle.domain.lifecycles import Lifecycle

Facts = dict[str, Any]

DAY = 86_400
PACKAGED_DEFAULTS = Path(__file__).with_name("segments.default.yaml")

STATUSES = (
    "active",
    "trialing",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
    "incomplete",
    "incomplete_expired",
    "none",
)
OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists")
COMBINATORS = ("all", "any", "not")

# What a field holds, which decides its operators and the type of their values.
TEXT = "text"  # one string
LIST = "list"  # several strings; `eq X` holds when X is one of them
NUMBER = "number"
METADATA = "metadata"  # a string; compared as text by eq/in, as a number by gt/lt/between

FIELDS: dict[str, str] = {
    "plan": TEXT,
    "status": TEXT,
    "currency": TEXT,
    "product": LIST,
    "price": LIST,
    "interval": LIST,
    "in_lifecycle": LIST,
    "mrr_cents": NUMBER,
    "ltv_cents": NUMBER,
    "quantity": NUMBER,
    "seat_usage": NUMBER,
    "customer_age_days": NUMBER,
    "subscription_age_days": NUMBER,
    "days_on_plan": NUMBER,
    "clicked_within_days": NUMBER,
}
PREFIX_FIELDS = {"metadata.": METADATA, "usage.": NUMBER}
# Fields whose value changes with time alone: segments using them need the periodic sweep.
TIME_FIELDS = frozenset(
    {"customer_age_days", "subscription_age_days", "days_on_plan", "clicked_within_days"}
)
MONEY_FIELDS = frozenset({"mrr_cents", "ltv_cents"})

_TEXT_OPERATORS = ("eq", "ne", "in", "not_in", "exists")
_ALLOWED: dict[str, tuple[str, ...]] = {
    TEXT: _TEXT_OPERATORS,
    LIST: _TEXT_OPERATORS,
    NUMBER: OPERATORS,
    METADATA: OPERATORS,
}
_ORDERED = frozenset({"gt", "gte", "lt", "lte", "between"})
# Names are a Temporal keyword (the `Segments` search attribute) and part of URLs.
NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
NAME_MAX = 64
_NAME = re.compile(NAME_PATTERN)
_CURRENCY = re.compile(r"^[a-z]{3}$")
_LIFECYCLES = tuple(Lifecycle)


@dataclass(frozen=True)
class Node:
    """One node of a segment's `where`: `all`/`any` of `nodes`, `not` of its one node, or
    a `condition` comparing `field_name` with `value` by `op`.

    `currency` picks the currency of `mrr_cents`/`ltv_cents` (None: the customer's own);
    `path` is where the node sits in the file (`where.all[1]`), for messages.
    """

    kind: str
    nodes: list["Node"] = field(default_factory=list)
    field_name: str | None = None
    op: str | None = None
    value: Any = None
    currency: str | None = None
    path: str = "where"


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    where: Node
    # Its conditions include a field that changes with time alone (`TIME_FIELDS`).
    time_based: bool = False


@dataclass(frozen=True)
class SeatUsage:
    """How `seat_usage` is computed: `used` (`quantity`, or `usage.<metric>`) divided by the
    number in the primary subscription's price metadata under `limit_key`."""

    limit_key: str | None = None
    used: str = "quantity"


@dataclass(frozen=True)
class SegmentsConfig:
    segments: list[Segment]
    seats: SeatUsage = field(default_factory=SeatUsage)

    def get(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]


class SegmentsError(ValueError):
    """Every problem found in a segments file, each naming file, segment and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- Facts --------------------------------------------------------------------------


def billing_facts(snapshot: BillingSnapshot, running_lifecycles: Iterable[str]) -> Facts:
    """The facts segments read from the ledger, as JSON values. Pure and cheap: it runs in
    the customer workflow on every snapshot change.

    `products`, `prices` and `intervals` are those of the live subscriptions (not ended);
    `quantity`, `price_metadata`, `subscription_started` and `plan_since` are the primary
    subscription's (the one whose status speaks for the customer).
    """
    subscriptions = list(snapshot.subscriptions.values())
    live = [s for s in subscriptions if s.status in LIVE_STATUSES]
    primary = primary_subscription(snapshot)
    return {
        "status": snapshot.status,
        "plan": snapshot.plan,
        "products": sorted({p for s in live for p in _item_ids(s, "product")}),
        "prices": sorted({p for s in live for p in _item_ids(s, "price")}),
        "currency": snapshot.currency,
        "mrr": _per_currency(snapshot.mrr, snapshot.mrr_cents, snapshot.currency),
        "ltv": _per_currency(snapshot.ltv, snapshot.ltv_cents, snapshot.currency),
        "intervals": sorted({p for s in live for p in s.periods}),
        "quantity": _seat_quantity(primary) if primary is not None else None,
        "price_metadata": _price_metadata(primary) if primary is not None else {},
        "customer_created": snapshot.customer_since,
        "subscription_started": _started(primary) if primary is not None else None,
        "plan_since": primary.plan_since if primary is not None else None,
        "metadata": dict(snapshot.metadata),
        "lifecycles": sorted({str(key) for key in running_lifecycles}),
    }


def _item_ids(sub: SubscriptionState, which: str) -> list[str]:
    if sub.subscription is None:
        # State from before the subscription was kept knows its first item only.
        first = sub.product_id if which == "product" else sub.price_id
        return [first] if first else []
    items = sub.subscription.items
    ids = (i.product_id if which == "product" else i.price_id for i in items)
    return [i for i in ids if i]


def _per_currency(amounts: Mapping[str, int], single: int, currency: str | None) -> dict[str, int]:
    # States recorded before money was kept per currency hold one figure, in the
    # customer's currency.
    if not amounts and single and currency:
        return {currency: single}
    return dict(amounts)


def _seat_quantity(sub: SubscriptionState) -> int | None:
    """Seats: the quantities of its licensed items (metered usage has no quantity)."""
    if sub.subscription is None:
        return sub.quantity
    licensed = [item.quantity for item in sub.subscription.items if not item.metered]
    return sum(licensed) if licensed else None


def _price_metadata(sub: SubscriptionState) -> dict[str, str]:
    """Its prices' metadata, over their products' where known; the first item's wins (the
    plan, usually, rather than an add-on)."""
    merged: dict[str, str] = {}
    if sub.subscription is None:
        return merged
    for item in reversed(sub.subscription.items):
        merged.update(item.product_metadata)
        merged.update(item.price_metadata)
    return merged


def _started(sub: SubscriptionState) -> int | None:
    if sub.started is not None:
        return sub.started
    info = sub.subscription
    return None if info is None else (info.start_date or info.created)


# --- Evaluating ---------------------------------------------------------------------


def field_value(
    field_name: str, facts: Facts, now: int, seats: SeatUsage, *, currency: str | None = None
) -> Any:
    """A field's value for these facts at `now` (epoch seconds): a string, a number, a
    list of strings, or None when missing. `currency` picks the currency of a money field
    (default: the customer's)."""
    if field_name in ("plan", "status", "currency"):
        return facts.get(field_name)
    if field_name in _LIST_FACTS:
        return list(facts.get(_LIST_FACTS[field_name]) or [])
    if field_name in MONEY_FIELDS:
        return _money(facts, field_name.removesuffix("_cents"), currency)
    if field_name == "quantity":
        return _number(facts.get("quantity"))
    if field_name == "seat_usage":
        return _seat_usage(facts, seats)
    if field_name in _SINCE_FACTS:
        return _days_since(facts.get(_SINCE_FACTS[field_name]), now)
    if field_name.startswith("metadata."):
        value = (facts.get("metadata") or {}).get(field_name.removeprefix("metadata."))
        return None if value is None else str(value)
    if field_name.startswith("usage."):
        return _number((facts.get("usage") or {}).get(field_name.removeprefix("usage.")))
    raise ValueError(f"unknown segment field {field_name!r}")


_LIST_FACTS = {
    "product": "products",
    "price": "prices",
    "interval": "intervals",
    "in_lifecycle": "lifecycles",
}
_SINCE_FACTS = {
    "customer_age_days": "customer_created",
    "subscription_age_days": "subscription_started",
    "days_on_plan": "plan_since",
    "clicked_within_days": "last_click_at",
}


def _money(facts: Facts, key: str, currency: str | None) -> int | None:
    """The amount in one currency, never a sum across currencies: 0 when the customer has
    none in it; missing only when no currency is named and the customer has none."""
    amounts: Mapping[str, int] = facts.get(key) or {}
    chosen = currency or facts.get("currency")
    if chosen is None:
        return None if amounts else 0
    return int(amounts.get(chosen, 0))


def _seat_usage(facts: Facts, seats: SeatUsage) -> float | None:
    if seats.limit_key is None:
        return None
    limit = _number((facts.get("price_metadata") or {}).get(seats.limit_key))
    if limit is None or limit <= 0:
        return None
    if seats.used == "quantity":
        used = _number(facts.get("quantity"))
    else:
        used = _number((facts.get("usage") or {}).get(seats.used.removeprefix("usage.")))
    return None if used is None else used / limit


def _days_since(then: Any, now: int) -> int | None:
    moment = _number(then)
    return None if moment is None else max(0, int(now - moment) // DAY)


def _number(value: Any) -> int | float | None:
    """A number from a fact (metadata holds text): None when it is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def evaluate(segment: Segment, facts: Facts, now: int, seats: SeatUsage) -> bool:
    """Whether a customer with these facts is in the segment at `now`."""
    return _evaluate(segment.where, facts, now, seats)


def _evaluate(node: Node, facts: Facts, now: int, seats: SeatUsage) -> bool:
    if node.kind == "all":
        return all(_evaluate(n, facts, now, seats) for n in node.nodes)
    if node.kind == "any":
        return any(_evaluate(n, facts, now, seats) for n in node.nodes)
    if node.kind == "not":
        return not _evaluate(node.nodes[0], facts, now, seats)
    return holds(node, _value_of(node, facts, now, seats))


def _value_of(node: Node, facts: Facts, now: int, seats: SeatUsage) -> Any:
    return field_value(node.field_name or "", facts, now, seats, currency=node.currency)


def holds(condition: Node, value: Any) -> bool:
    """Whether a field `value` (as `field_value` gives it) meets a condition."""
    op, target = condition.op, condition.value
    present = value is not None and value != []
    if op == "exists":
        return present == bool(target)
    if op == "ne":
        return not holds(_with_op(condition, "eq"), value)
    if op == "not_in":
        return not holds(_with_op(condition, "in"), value)
    if not present:
        return False
    if op in _ORDERED:
        number = _number(value)
        if number is None:
            return False
        if op == "between":
            return bool(target[0] <= number <= target[1])
        return bool(_COMPARE[op](number, target))
    candidates = target if op == "in" else [target]
    values = value if isinstance(value, list) else [value]
    if field_kind(condition.field_name or "") == NUMBER:
        return any(_number(v) == c for v in values for c in candidates)
    if condition.field_name == "plan":
        # Stripe shows plan names as typed; "starter" means Starter.
        return any(str(v).casefold() == str(c).casefold() for v in values for c in candidates)
    return any(str(v) == str(c) for v in values for c in candidates)


_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _with_op(condition: Node, op: str) -> Node:
    return Node(
        kind="condition",
        field_name=condition.field_name,
        op=op,
        value=condition.value,
        currency=condition.currency,
        path=condition.path,
    )


# --- Explaining ---------------------------------------------------------------------


def explain(segment: Segment, facts: Facts, now: int, seats: SeatUsage) -> list[str]:
    """One line per node, indented by depth, ✓ or ✗, and each condition's actual value:
    `✓ subscription_age_days gte 90 — 120`."""
    lines: list[str] = []
    _explain(segment.where, facts, now, seats, 0, lines)
    return lines


def _explain(
    node: Node, facts: Facts, now: int, seats: SeatUsage, depth: int, lines: list[str]
) -> None:
    mark = "✓" if _evaluate(node, facts, now, seats) else "✗"
    indent = "  " * depth
    if node.kind == "condition":
        value = _value_of(node, facts, now, seats)
        lines.append(f"{indent}{mark} {describe(node)} — {show(value)}")
        return
    lines.append(f"{indent}{mark} {_LABELS[node.kind]}:")
    for child in node.nodes:
        _explain(child, facts, now, seats, depth + 1, lines)


_LABELS = {"all": "all of", "any": "any of", "not": "not"}


def why_changed(
    segment: Segment,
    old: Facts | None,
    old_now: int | None,
    new: Facts,
    now: int,
    seats: SeatUsage,
) -> str:
    """Why membership may have changed between two evaluations: each condition whose
    outcome flipped, with its value before and after (`subscription_age_days 89 → 90
    (gte 90)`), joined by "; ". "first evaluation" without an earlier one."""
    if old is None:
        return "first evaluation"
    then = now if old_now is None else old_now
    reasons: list[str] = []
    for leaf in conditions(segment.where):
        before = _value_of(leaf, old, then, seats)
        after = _value_of(leaf, new, now, seats)
        if holds(leaf, before) != holds(leaf, after):
            reason = f"{_subject(leaf)} {show(before)} → {show(after)} ({_test(leaf)})"
            if reason not in reasons:
                reasons.append(reason)
    return "; ".join(reasons) or "no condition changed outcome (the segment's definition changed)"


def conditions(node: Node) -> Iterator[Node]:
    """The conditions under a node, in file order."""
    if node.kind == "condition":
        yield node
    for child in node.nodes:
        yield from conditions(child)


def describe(node: Node) -> str:
    """A node as one line: `all(plan in [Starter], status eq active)`."""
    if node.kind == "condition":
        return f"{_subject(node)} {_test(node)}"
    return f"{node.kind}({', '.join(describe(n) for n in node.nodes)})"


def _subject(node: Node) -> str:
    currency = f" ({node.currency})" if node.currency else ""
    return f"{node.field_name}{currency}"


def _test(node: Node) -> str:
    return f"{node.op} {show(node.value)}"


def show(value: Any) -> str:
    """A value as the explanations print it."""
    if value is None or value == []:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{round(value, 4):g}"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


# --- Parsing ------------------------------------------------------------------------


@dataclass
class _Checker:
    source: str
    problems: list[str] = field(default_factory=list)

    def problem(self, segment: str | None, where: str, message: str) -> None:
        who = f"segment {segment!r}" if segment else "top level"
        self.problems.append(f"{self.source}: {who}: {where}: {message}")


_TOP_KEYS = {"segments", "seat_usage"}
_SEGMENT_KEYS = {"name", "description", "where"}
_SEAT_KEYS = {"limit_metadata_key", "used"}


def parse_segments(text: str, source: str) -> SegmentsConfig:
    """Parse and validate; raises SegmentsError listing every problem found."""
    check = _Checker(source)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SegmentsError([f"{source}: not valid YAML: {exc}"]) from exc
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
        raise SegmentsError([f"{source}: top level: expected a mapping with a `segments` list"])
    for key in sorted(set(document) - _TOP_KEYS, key=str):
        check.problem(None, str(key), "unknown field (expected segments, seat_usage)")
    seats = _parse_seat_usage(check, document.get("seat_usage"))
    segments: list[Segment] = []
    seen: set[str] = set()
    for position, raw in enumerate(document["segments"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in seen:
                check.problem(name, "name", "used by more than one segment")
            seen.add(name)
        segment = _parse_segment(check, raw, position, seats)
        if segment is not None:
            segments.append(segment)
    if check.problems:
        raise SegmentsError(check.problems)
    return SegmentsConfig(segments=segments, seats=seats)


def _parse_seat_usage(check: _Checker, raw: object) -> SeatUsage:
    if raw is None:
        return SeatUsage()
    if not isinstance(raw, dict):
        check.problem(None, "seat_usage", "expected {limit_metadata_key: seats, used: quantity}")
        return SeatUsage()
    for key in sorted(set(raw) - _SEAT_KEYS, key=str):
        check.problem(
            None, f"seat_usage.{key}", "unknown field (expected limit_metadata_key, used)"
        )
    key = raw.get("limit_metadata_key")
    if not isinstance(key, str) or not key.strip():
        check.problem(
            None,
            "seat_usage.limit_metadata_key",
            "required: the price metadata key holding the plan's seat limit, e.g. seats",
        )
        key = None
    used = raw.get("used", "quantity")
    if not (
        used == "quantity"
        or (isinstance(used, str) and used.startswith("usage.") and len(used) > len("usage."))
    ):
        check.problem(
            None,
            "seat_usage.used",
            f"{used!r} is not quantity or usage.<metric> (e.g. usage.seats)",
        )
        used = "quantity"
    return SeatUsage(limit_key=key, used=str(used))


def _parse_segment(check: _Checker, raw: object, position: int, seats: SeatUsage) -> Segment | None:
    if not isinstance(raw, dict):
        check.problem(None, f"segments[{position}]", "expected a mapping")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        check.problem(None, f"segments[{position}].name", "required, a non-empty string")
        return None
    if len(name) > NAME_MAX or not _NAME.match(name):
        check.problem(
            name,
            "name",
            f"use lowercase letters, digits and single hyphens, at most {NAME_MAX} characters "
            "(it becomes a Temporal search attribute value and part of URLs)",
        )
    for key in sorted(set(raw) - _SEGMENT_KEYS, key=str):
        check.problem(name, str(key), "unknown field (expected name, description, where)")
    description = raw.get("description", "")
    if not isinstance(description, str):
        check.problem(name, "description", f"{description!r} is not a string")
        description = ""
    if "where" not in raw:
        check.problem(name, "where", "required: the segment's conditions")
        return None
    where = _parse_node(check, name, raw["where"], "where", seats)
    if where is None:
        return None
    return Segment(
        name=name,
        description=description.strip(),
        where=where,
        time_based=any(c.field_name in TIME_FIELDS for c in conditions(where)),
    )


def _parse_node(
    check: _Checker, name: str, raw: object, path: str, seats: SeatUsage
) -> Node | None:
    if not isinstance(raw, dict):
        check.problem(
            name, path, "expected a condition {field: ..., <operator>: ...} or all, any or not"
        )
        return None
    combinators = [key for key in COMBINATORS if key in raw]
    if len(combinators) + ("field" in raw) != 1:
        check.problem(
            name,
            path,
            "expected exactly one of field (a condition), all, any or not",
        )
        return None
    if not combinators:
        return _parse_condition(check, name, raw, path, seats)
    kind = combinators[0]
    for key in sorted(set(raw) - {kind}, key=str):
        check.problem(name, f"{path}.{key}", f"unknown field beside {kind}")
    value, inner = raw[kind], f"{path}.{kind}"
    if kind == "not":
        child = _parse_node(check, name, value, inner, seats)
        return None if child is None else Node(kind="not", nodes=[child], path=path)
    if not isinstance(value, list) or not value:
        check.problem(name, inner, "expected a non-empty list of conditions")
        return None
    children = [
        _parse_node(check, name, item, f"{inner}[{i}]", seats) for i, item in enumerate(value)
    ]
    if any(child is None for child in children):
        return None
    return Node(kind=kind, nodes=[c for c in children if c is not None], path=path)


def field_kind(field_name: str) -> str | None:
    """TEXT, LIST, NUMBER or METADATA; None for a field that does not exist."""
    if field_name in FIELDS:
        return FIELDS[field_name]
    for prefix, kind in PREFIX_FIELDS.items():
        if field_name.startswith(prefix) and len(field_name) > len(prefix):
            return kind
    return None


def _parse_condition(
    check: _Checker, name: str, raw: dict[Any, Any], path: str, seats: SeatUsage
) -> Node | None:
    field_name = raw["field"]
    kind = field_kind(field_name) if isinstance(field_name, str) else None
    ok = True
    if kind is None:
        known = ", ".join([*FIELDS, "metadata.<key>", "usage.<metric>"])
        check.problem(name, f"{path}.field", f"unknown field {field_name!r} (one of {known})")
        ok = False
    elif field_name == "seat_usage" and seats.limit_key is None:
        check.problem(
            name,
            f"{path}.field",
            "seat_usage needs the plan's limit: add `seat_usage: {limit_metadata_key: seats}` "
            "at the top of the file",
        )
        ok = False
    for key in sorted(set(raw) - {"field", "currency", *OPERATORS}, key=str):
        check.problem(
            name, f"{path}.{key}", f"unknown operator {key!r} (one of {', '.join(OPERATORS)})"
        )
        ok = False
    operators = [key for key in OPERATORS if key in raw]
    if len(operators) != 1:
        check.problem(
            name,
            path,
            f"expected exactly one operator ({', '.join(OPERATORS)}), not {len(operators)}",
        )
        return None
    op = operators[0]
    currency_ok, currency = _parse_currency_option(check, name, raw, path, field_name)
    if kind is None or not ok:
        return None
    if op not in _ALLOWED[kind]:
        check.problem(
            name,
            f"{path}.{op}",
            f"{field_name} is not a number: use {', '.join(_ALLOWED[kind])}",
        )
        return None
    valid, value = _parse_value(check, name, f"{path}.{op}", field_name, kind, op, raw[op])
    if not valid or not currency_ok:
        return None
    return Node(
        kind="condition",
        field_name=field_name,
        op=op,
        value=value,
        currency=currency,
        path=path,
    )


def _parse_currency_option(
    check: _Checker, name: str, raw: dict[Any, Any], path: str, field_name: object
) -> tuple[bool, str | None]:
    """(valid, the condition's `currency` lowercased, None when it names none)."""
    if "currency" not in raw:
        return True, None
    value = raw["currency"]
    if field_name not in MONEY_FIELDS:
        check.problem(name, f"{path}.currency", "only mrr_cents and ltv_cents take a currency")
        return False, None
    if not isinstance(value, str) or not _CURRENCY.match(value.lower()):
        check.problem(name, f"{path}.currency", f"{value!r} is not a currency code (e.g. usd)")
        return False, None
    return True, value.lower()


def _parse_value(
    check: _Checker, name: str, path: str, field_name: str, kind: str, op: str, raw: object
) -> tuple[bool, Any]:
    """(valid, the value normalised): numbers for numeric tests, strings for text ones."""
    if op == "exists":
        if not isinstance(raw, bool):
            check.problem(name, path, f"{raw!r} is not true or false")
            return False, None
        return True, raw
    if op == "between":
        if not (isinstance(raw, list) and len(raw) == 2 and all(_is_number(v) for v in raw)):
            check.problem(name, path, f"{raw!r} is not a list of two numbers [low, high]")
            return False, None
        if raw[0] > raw[1]:
            check.problem(name, path, f"low {raw[0]} is greater than high {raw[1]}")
            return False, None
        return True, list(raw)
    if op in _ORDERED:
        if not _is_number(raw):
            check.problem(name, path, f"{raw!r} is not a number")
            return False, None
        return True, raw
    if op in ("in", "not_in"):
        if not isinstance(raw, list) or not raw:
            check.problem(name, path, f"{raw!r} is not a non-empty list")
            return False, None
        items = [
            _parse_item(check, name, f"{path}[{i}]", field_name, kind, v) for i, v in enumerate(raw)
        ]
        if any(not valid for valid, _ in items):
            return False, None
        return True, [item for _, item in items]
    if isinstance(raw, list):
        check.problem(name, path, f"{op} takes one value; use in or not_in for a list")
        return False, None
    return _parse_item(check, name, path, field_name, kind, raw)


def _parse_item(
    check: _Checker, name: str, path: str, field_name: str, kind: str, raw: object
) -> tuple[bool, Any]:
    if kind == NUMBER:
        if not _is_number(raw):
            check.problem(name, path, f"{raw!r} is not a number")
            return False, None
        return True, raw
    if kind == METADATA:
        # Stripe metadata values are text: `eq: 5` means the text "5".
        if isinstance(raw, bool):
            return True, "true" if raw else "false"
        if isinstance(raw, str | int | float):
            return True, str(raw)
        check.problem(name, path, f"{raw!r} is not a string")
        return False, None
    if not isinstance(raw, str):
        check.problem(name, path, f"{raw!r} is not a string")
        return False, None
    if field_name == "status" and raw not in STATUSES:
        check.problem(name, path, f"{raw!r} is not a status ({', '.join(STATUSES)})")
        return False, None
    if field_name == "currency":
        if not _CURRENCY.match(raw.lower()):
            check.problem(name, path, f"{raw!r} is not a currency code (e.g. usd)")
            return False, None
        return True, raw.lower()
    if field_name == "interval":
        period = _billing_period(raw)
        if period is None:
            check.problem(
                name,
                path,
                f"{raw!r} is not a billing period (day, week, month, year, or e.g. 3 month)",
            )
            return False, None
        return True, period
    if field_name == "in_lifecycle" and raw not in _LIFECYCLES:
        check.problem(name, path, f"{raw!r} is not a lifecycle ({', '.join(_LIFECYCLES)})")
        return False, None
    return True, raw


def _billing_period(value: str) -> str | None:
    """`year`, `month`, `3 month`, `12 months`... as `ledger.billing_period` names them."""
    count, _, unit = value.strip().lower().rpartition(" ")
    number = int(count) if count.isdigit() else (0 if count else 1)
    return billing_period(unit.removesuffix("s"), number) if number >= 1 else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- Loading ------------------------------------------------------------------------


def segments_path(configured: Path) -> Path:
    """The configured file; the packaged default set while the default name is absent."""
    if configured.exists():
        return configured
    if configured == Path("segments.yaml"):
        return PACKAGED_DEFAULTS
    raise SegmentsError([f"{configured}: LIFECYCLE_SEGMENTS names a file that does not exist"])


def load_segments(configured: Path) -> SegmentsConfig:
    path = segments_path(configured)
    return parse_segments(path.read_text(encoding="utf-8"), str(path))
