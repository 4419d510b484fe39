"""What may enter a customer workflow: bounds on a normalised event, applied by the forwarder
before delivery (`admit`).

A signed event is Stripe's word, but nothing makes its fields as small as Stripe's own
objects are: a 10 KiB customer id makes a workflow id over Temporal's 1,000-byte limit, a
3 MiB customer name a signal over its 2 MiB blob limit. Temporal refuses both, every time.
So, before delivery:

- free text is trimmed to Stripe's own limits, with a trailing "…": metadata keeps at most
  50 keys of at most 40 characters (longer keys are dropped), values of at most 500
  characters; a `name` or `nickname` at most 256 characters; any other text at most 5,000
  (Stripe's longest free-text fields, such as descriptions). Nothing the lifecycles
  compute with is free text, so a trimmed event is delivered;
- an event is refused, and the forwarder quarantines it, when an id is longer than any
  Stripe id (255 characters, also the width of our id columns), an email is longer than
  Stripe accepts (512), or the trimmed event still serialises to more than 256 KiB
  (hundreds of invoice lines, say): a workflow id or address cut short would be a
  different customer's, and no event of ours comes near that size.

Pure: no I/O, tested with plain unit tests.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from temporalio.converter import PayloadConverter

from stripe_lifecycle.domain.events import BillingEvent

MAX_ID_LENGTH = 255
MAX_EMAIL_LENGTH = 512
MAX_NAME_LENGTH = 256
MAX_TEXT_LENGTH = 5000
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
MAX_EVENT_BYTES = 256 * 1024

ELLIPSIS = "…"
_METADATA_FIELDS = frozenset({"metadata", "price_metadata", "product_metadata"})
_NAME_FIELDS = frozenset({"name", "nickname"})
_EMAIL_FIELDS = frozenset({"email"})
# Fields holding ids (or, for `related`, a map of ids) besides `id`, `*_id` and `*_ids`.
_ID_FIELDS = frozenset({"account", "related", "default_payment_method", "default_source"})
# JSON escapes a non-ASCII character as \uXXXX (twice for one outside the BMP): at most
# three bytes of payload per byte of UTF-8, which bounds the estimate from above.
_JSON_PER_UTF8_BYTE = 3


@dataclass(frozen=True)
class Admitted:
    """An event fit for a workflow: bounded, with an upper bound of its serialised size."""

    event: BillingEvent
    size: int
    # The fields that were trimmed ("customer.name", "invoice.metadata"), for the log.
    trimmed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refused:
    """An event no workflow may receive, and why (the quarantine's reason)."""

    reason: str


def admit(event: BillingEvent) -> Admitted | Refused:
    """The event with its free text trimmed, or why it cannot be delivered at all."""
    walk = _Walk()
    bounded = walk.dataclass(event, "")
    if walk.refusal is not None:
        return Refused(walk.refusal)
    assert isinstance(bounded, BillingEvent)
    size = walk.size * _JSON_PER_UTF8_BYTE
    if size > MAX_EVENT_BYTES:
        # The estimate is generous; measure what Temporal would send before refusing.
        size = len(PayloadConverter.default.to_payloads([bounded])[0].data)
        if size > MAX_EVENT_BYTES:
            return Refused(
                f"the normalised event is {size} bytes, over the {MAX_EVENT_BYTES}-byte "
                "bound on what enters a workflow"
            )
    return Admitted(bounded, size, tuple(walk.trimmed))


# None, bool, int, float: a few bytes each (a float's repr is at most 24).
_SCALARS = frozenset({bool, int, float})


@functools.cache
def _field_names(cls: Any) -> tuple[tuple[str, ...], int]:
    """A dataclass's field names, and what they add to its JSON."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    return names, sum(len(name) + 4 for name in names)


def _is_id_field(name: str) -> bool:
    return name == "id" or name.endswith(("_id", "_ids")) or name in _ID_FIELDS


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


class _Walk:
    """One pass over an event's dataclasses: trims, sums an upper bound of the size, and
    notes the first refusal."""

    def __init__(self) -> None:
        self.size = 0
        self.trimmed: list[str] = []
        self.refusal: str | None = None

    def dataclass(self, obj: Any, path: str) -> Any:
        changes: dict[str, Any] = {}
        names, overhead = _field_names(obj.__class__)
        self.size += overhead
        for name in names:
            value = getattr(obj, name)
            if value is None or value.__class__ in _SCALARS:
                self.size += 24
                continue
            new = self.value(name, value, f"{path}.{name}" if path else name)
            if new is not value:
                changes[name] = new
        return dataclasses.replace(obj, **changes) if changes else obj

    def value(self, name: str, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self.text(name, value, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.dataclass(value, path)
        if isinstance(value, list):
            items = [self.value(name, item, path) for item in value]
            self.size += 2 * len(items)
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        if isinstance(value, dict):
            if name in _METADATA_FIELDS:
                return self.metadata(value, path)
            entries = {k: self.value(name, v, path) for k, v in value.items()}
            self.size += sum(len(str(k).encode()) + 4 for k in value)
            changed = any(entries[k] is not v for k, v in value.items())
            return entries if changed else value
        self.size += 24
        return value

    def text(self, name: str, value: str, path: str) -> str:
        if _is_id_field(name) and len(value) > MAX_ID_LENGTH:
            self._refuse(
                f"{path} is {len(value)} characters long; Stripe ids are at most "
                f"{MAX_ID_LENGTH} (a workflow id may be at most 1,000 bytes)"
            )
            return value
        if name in _EMAIL_FIELDS and len(value) > MAX_EMAIL_LENGTH:
            self._refuse(
                f"{path} is {len(value)} characters long; Stripe accepts at most {MAX_EMAIL_LENGTH}"
            )
            return value
        limit = MAX_NAME_LENGTH if name in _NAME_FIELDS else MAX_TEXT_LENGTH
        bounded = _trim(value, limit)
        if bounded is not value:
            self.trimmed.append(path)
        self.size += len(bounded.encode("utf-8", "surrogatepass")) + 2
        return bounded

    def metadata(self, value: dict[Any, Any], path: str) -> dict[Any, Any]:
        kept: dict[Any, Any] = {}
        for key, item in value.items():
            if len(kept) == METADATA_MAX_KEYS:
                break
            if not isinstance(key, str) or len(key) > METADATA_MAX_KEY_LENGTH:
                continue
            kept[key] = _trim(item, METADATA_MAX_VALUE_LENGTH) if isinstance(item, str) else item
            self.size += len(key.encode("utf-8", "surrogatepass")) + 4
            self.size += len(str(kept[key]).encode("utf-8", "surrogatepass")) + 2
        if len(kept) == len(value) and all(kept[k] is v for k, v in value.items()):
            return value
        self.trimmed.append(path)
        return kept

    def _refuse(self, reason: str) -> None:
        if self.refusal is None:
            self.refusal = reason
