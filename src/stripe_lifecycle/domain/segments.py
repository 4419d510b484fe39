"""PLACEHOLDER for the segments domain module, written on the `helper-segapi` branch only so
the segments API, CLI and dashboard can import and be tested. The real module (helper
"segments-domain", /work/notes/spec12.md) replaces this file at merge; nothing here is
meant to survive it. Only these names are relied on: `load_segments`, `SegmentsConfig`
(`segments`, `seats`), `Segment` (`name`, `description`, `where`, `time_based`),
`evaluate` and `explain`.

It understands just enough of the file to serve those callers: `all` / `any` / `not`,
the operators on fields read straight from the facts (`usage.<metric>`,
`metadata.<key>`, and `subscription_age_days` from `subscription_started`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Facts = dict[str, Any]

PACKAGED_DEFAULTS = Path(__file__).with_name("segments.default.yaml")
_TIME_FIELDS = frozenset(
    {"customer_age_days", "subscription_age_days", "days_on_plan", "clicked_within_days"}
)
_OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists")


class SegmentsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SeatUsage:
    limit_key: str | None = None
    used: str = "quantity"


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    where: dict[str, Any]
    time_based: bool


@dataclass(frozen=True)
class SegmentsConfig:
    segments: list[Segment]
    seats: SeatUsage = field(default_factory=SeatUsage)


def load_segments(configured: Path) -> SegmentsConfig:
    if configured == Path("segments.yaml") and not configured.exists():
        if not PACKAGED_DEFAULTS.exists():
            return SegmentsConfig(segments=[])
        configured = PACKAGED_DEFAULTS
    data = yaml.safe_load(configured.read_text(encoding="utf-8")) or {}
    segments = [
        Segment(
            name=str(entry["name"]),
            description=str(entry.get("description", "")),
            where=dict(entry.get("where") or {}),
            time_based=_uses_time(entry.get("where") or {}),
        )
        for entry in data.get("segments") or []
    ]
    seats = data.get("seat_usage") or {}
    return SegmentsConfig(
        segments=segments,
        seats=SeatUsage(seats.get("limit_metadata_key"), seats.get("used", "quantity")),
    )


def _uses_time(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("field") in _TIME_FIELDS:
            return True
        return any(_uses_time(v) for v in node.values())
    if isinstance(node, list):
        return any(_uses_time(v) for v in node)
    return False


def _value(name: str, facts: Facts, now: int) -> Any:
    if name == "subscription_age_days":
        started = facts.get("subscription_started")
        return None if started is None else (now - int(started)) // 86_400
    if "." in name:
        group, _, key = name.partition(".")
        inner = facts.get(group)
        return inner.get(key) if isinstance(inner, dict) else None
    return facts.get(name)


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "exists":
        return (actual is not None) == bool(expected)
    if actual is None:
        return False
    if operator == "eq":
        return bool(actual == expected)
    if operator == "ne":
        return bool(actual != expected)
    if operator == "in":
        return actual in expected
    if operator == "not_in":
        return actual not in expected
    if operator == "gt":
        return bool(actual > expected)
    if operator == "gte":
        return bool(actual >= expected)
    if operator == "lt":
        return bool(actual < expected)
    if operator == "lte":
        return bool(actual <= expected)
    return bool(expected[0] <= actual <= expected[1])


def _check(node: dict[str, Any], facts: Facts, now: int, lines: list[str], depth: int) -> bool:
    pad = "  " * depth
    if "all" in node or "any" in node:
        kind = "all" if "all" in node else "any"
        lines.append(f"{pad}{kind}:")
        results = [_check(child, facts, now, lines, depth + 1) for child in node[kind]]
        return all(results) if kind == "all" else any(results)
    if "not" in node:
        lines.append(f"{pad}not:")
        return not _check(node["not"], facts, now, lines, depth + 1)
    operator = next(op for op in _OPERATORS if op in node)
    actual = _value(str(node["field"]), facts, now)
    held = _compare(operator, actual, node[operator])
    mark = "✓" if held else "✗"
    lines.append(f"{pad}{mark} {node['field']} {operator} {node[operator]!r} (is {actual!r})")
    return held


def evaluate(segment: Segment, facts: Facts, now: int, seats: SeatUsage) -> bool:  # noqa: ARG001
    return _check(segment.where, facts, now, [], 0)


def explain(segment: Segment, facts: Facts, now: int, seats: SeatUsage) -> list[str]:  # noqa: ARG001
    lines: list[str] = []
    _check(segment.where, facts, now, lines, 0)
    return lines
