"""Changing one field of a Stripe payload at a time, and what the normaliser must answer to
any such payload: the bad-input tests' table and the fuzzing's properties share them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from stripe_lifecycle.domain.events import BillingEvent
from stripe_lifecycle.intake.normalise import UnreadableEvent, normalise_event

Path = tuple[str | int, ...]


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every field and list entry under `value`, parents before children."""
    children: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(payload: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(payload))
    parent: Any = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return copy


def check_total(payload: dict[str, Any]) -> BillingEvent | None | UnreadableEvent:
    """`normalise_event`'s answer, which must be an event (that a signal can carry), None,
    or `UnreadableEvent` with a reason; any other exception fails the test."""
    try:
        event = normalise_event(payload)
    except UnreadableEvent as exc:
        assert str(exc), "an unreadable event needs a reason to record"
        return exc
    if event is not None:
        # What reaches a workflow is plain JSON: no NaN or Infinity hides in it.
        json.dumps(dataclasses.asdict(event), allow_nan=False)
    return event
