"""Temporal's JSON payload conversion, reading each dataclass's fields once.

The SDK's converter resolves a dataclass's type hints (`typing.get_type_hints`) every time
it decodes a value of that class. Inside the workflow sandbox that lookup is slow, and the
customer workflow decodes a dozen dataclasses for every billing event it is signalled: it
was a fifth of the worker's CPU per event (README "Performance"). Encoding, the SDK turns
each dataclass into a deep copy of itself as dicts (`dataclasses.asdict`) before writing
it, three times the cost of writing it. This converter writes exactly the JSON the default
one writes and reads it back to the same values, with the same errors, resolving each
class's fields and hints once and copying nothing.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.converter import (
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    JSONTypeConverterUnhandled,
    value_to_type,
)

# Hints whose values the SDK returns unchanged when they already have the type (for int,
# only a true int: the SDK turns True and 1.0 into 1).
_SAME_VALUE: frozenset[type] = frozenset({str, int, bool})


@dataclass(frozen=True)
class _Field:
    name: str
    hint: Any
    init: bool
    # The one type whose values pass unchanged, and whether None passes unchanged.
    exact: type | None
    optional: bool


# Every converter instance shares the plans: the SDK makes one per workflow instance. Weak
# keys, because a workflow sandbox defines its own copies of the classes in the modules
# it loads, and those must go when the sandbox does.
_PLANS: weakref.WeakKeyDictionary[type, tuple[_Field, ...]] = weakref.WeakKeyDictionary()


def _fields(cls: type) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    plan = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        members = args if is_union else (hint,)
        plain = [m for m in members if m is not type(None)]
        exact = plain[0] if len(plain) == 1 and plain[0] in _SAME_VALUE else None
        plan.append(_Field(field.name, hint, field.init, exact, type(None) in members))
    return tuple(plan)


class DataclassReader(JSONTypeConverter):
    """Builds dataclasses from JSON values as the SDK's `value_to_type` does: unknown keys
    ignored, a missing required field left to the class's `__init__` to refuse, fields
    with `init=False` set afterwards, any other value converted by the SDK."""

    def __init__(self) -> None:
        self._chain: list[JSONTypeConverter] = [self]

    def to_typed_value(self, hint: type, value: Any) -> Any | None | JSONTypeConverterUnhandled:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        plan = _PLANS.get(hint)
        if plan is None:
            plan = _PLANS[hint] = _fields(hint)
        values: dict[str, Any] = {}
        late: dict[str, Any] = {}
        for field in plan:
            if field.name not in value:
                continue
            raw = value[field.name]
            if (raw is None and field.optional) or (
                field.exact is not None and type(raw) is field.exact
            ):
                converted = raw
            else:
                try:
                    converted = value_to_type(field.hint, raw, self._chain)
                except Exception as err:
                    raise TypeError(
                        f"Failed converting field {field.name} on dataclass {hint}"
                    ) from err
            (values if field.init else late)[field.name] = converted
        obj = hint(**values)
        for name, converted in late.items():
            object.__setattr__(obj, name, converted)
        return obj


# Each dataclass's field names, in `dataclasses.fields` order, kept as `_PLANS` is.
_NAMES: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


class DataclassWriter(AdvancedJSONEncoder):
    """Writes a dataclass as the SDK's encoder does, an object of its fields, but hands the
    encoder the field values themselves (a nested dataclass comes back here in turn)
    instead of `asdict`'s deep copy; the JSON is the same, byte for byte."""

    def default(self, o: Any) -> Any:
        cls = type(o)
        # The SDK's encoder writes a datetime as ISO text even where it is a dataclass.
        if dataclasses.is_dataclass(cls) and not isinstance(o, datetime):
            names = _NAMES.get(cls)
            if names is None:
                names = _NAMES[cls] = tuple(field.name for field in dataclasses.fields(cls))
            return {name: getattr(o, name) for name in names}
        return super().default(o)


class LifecyclePayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, with JSON dataclasses written by `DataclassWriter`
    and read by `DataclassReader`."""

    def __init__(self) -> None:
        json_converter = JSONPlainPayloadConverter(
            encoder=DataclassWriter, custom_type_converters=[DataclassReader()]
        )
        super().__init__(
            *(
                json_converter if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )
