"""A verified webhook body read into the payload the inbox stores.

A body that is not a Stripe event envelope (not JSON, not an object, no string `id`,
`type`, numeric `created` or `data.object`) is refused: there is nothing to store it by.
An envelope we can store by but not keep whole is kept in brief, with the problem named:
JSON nested deeper than `MAX_DEPTH` (deeper than Python's parser can go, or than any Stripe
object) and numbers no JSON column can hold (`1e999999` reads as infinity). The intake
stores such an event as unreadable; Stripe's events are neither.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Stripe's objects nest about ten deep (event → data → object → items → data → price →
# currency_options → tiers); metadata is flat.
MAX_DEPTH = 64
# The envelope fields kept when the payload cannot be kept whole.
_ENVELOPE_FIELDS = ("id", "object", "type", "created", "livemode", "api_version", "account")
# The C string scanner `json` itself uses (typeshed does not declare it).
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_SCALAR = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


class NotAStripeEvent(ValueError):
    """The body cannot be stored as a Stripe event (the webhook answers 400)."""


@dataclass(frozen=True)
class ReadBody:
    payload: dict[str, Any]
    # Why the payload cannot be read (it is then the envelope alone), or None.
    problem: str | None = None


def read_body(body: bytes) -> ReadBody:
    """The payload of a verified webhook body; raises `NotAStripeEvent`."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        # Python's parser recurses per level; the envelope sits at the first.
        return _in_brief(_top_level_scalars(text), "JSON nested too deep to read")
    except ValueError as exc:
        raise NotAStripeEvent("body is not JSON") from exc
    if not isinstance(payload, dict) or payload.get("object") not in (None, "event"):
        raise NotAStripeEvent("body is not a Stripe event")
    _check_envelope(payload)
    problem = _unstorable(payload)
    return ReadBody(payload) if problem is None else _in_brief(payload, problem)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _check_envelope(payload: dict[str, Any]) -> None:
    problems = [
        name
        for name, kind in (("id", str), ("type", str), ("created", int | float), ("data", dict))
        if not isinstance(payload.get(name), kind) or isinstance(payload.get(name), bool)
    ]
    if not problems and not isinstance(payload["data"].get("object"), dict):
        problems.append("data.object")
    if not problems and not 0 < len(payload["id"]) <= 255:
        problems.append("id (1 to 255 characters)")
    if problems:
        raise NotAStripeEvent(f"Stripe event is missing or has malformed: {', '.join(problems)}")


def _in_brief(payload: dict[str, Any], problem: str) -> ReadBody:
    """The envelope alone (its storable scalars), for a payload that cannot be kept whole."""
    envelope = {
        name: value
        for name in _ENVELOPE_FIELDS
        if isinstance(value := payload.get(name), str | int | bool)
        or (isinstance(value, float) and math.isfinite(value))
    }
    id_ = envelope.get("id")
    if not isinstance(id_, str) or not isinstance(envelope.get("type"), str):
        raise NotAStripeEvent(f"Stripe event without a readable id and type ({problem})")
    if not 0 < len(id_) <= 255 or isinstance(envelope.get("created"), bool):
        raise NotAStripeEvent(f"Stripe event without a readable envelope ({problem})")
    if "created" not in envelope:
        raise NotAStripeEvent(f"Stripe event is missing or has malformed: created ({problem})")
    return ReadBody(envelope, problem)


def _unstorable(payload: dict[str, Any]) -> str | None:
    """Why the payload cannot be stored whole as JSON, or None. Iterative: no recursion."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return "a number out of range"
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"JSON nested deeper than {MAX_DEPTH} levels"
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return None


def _top_level_scalars(text: str) -> dict[str, Any]:
    """The string, number and literal members of a top-level JSON object, read without
    recursion: for a body too deep for `json.loads`. Raises `NotAStripeEvent`."""
    if not text.lstrip().startswith("{"):
        raise NotAStripeEvent("body is not a Stripe event")
    found: dict[str, Any] = {}
    depth = 0
    key: str | None = None
    expecting_key = False
    index = 0
    try:
        while index < len(text):
            char = text[index]
            if char == '"':
                string, index = _scanstring(text, index + 1)
                if depth == 1 and expecting_key:
                    key, expecting_key = string, False
                elif depth == 1 and key is not None:
                    found[key], key = string, None
                continue
            if char in "{[":
                depth += 1
                expecting_key = depth == 1
                if depth == 2:
                    key = None  # an object or array: not a scalar
            elif char in "}]":
                depth -= 1
            elif char == "," and depth == 1:
                expecting_key = True
            elif depth == 1 and key is not None and (match := _SCALAR.match(text, index)):
                found[key], key = json.loads(match.group()), None
                index = match.end()
                continue
            index += 1
    except ValueError as exc:
        raise NotAStripeEvent("body is not JSON") from exc
    return found
