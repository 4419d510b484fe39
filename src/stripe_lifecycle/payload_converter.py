"""Temporal's JSON payload conversion, planning each dataclass's reading once.

The SDK's converter resolves a dataclass's type hints (`typing.get_type_hints`) every time
it decodes a value of that class, and converts every field value by walking the SDK's
general rules for its hint (a static attribute lookup for pydantic's `parse_obj` among
them, for every `list[str]` and `dict[str, int]`). The customer workflow decodes a dozen
dataclasses for every batch of billing events it is signalled, and its local activity
decodes the batch's whole snapshot: decoding was most of a tenth of the worker's CPU per
event (README "Performance"). Encoding, the SDK turns each dataclass into a deep copy of
itself as dicts (`dataclasses.asdict`) before writing it, three times the cost of writing
it. This converter writes exactly the JSON the default one writes and reads it back to the
same values, with the same errors: each class's fields and hints are resolved once into a
reader per field for the shapes our messages use (plain values, ISO datetimes, str enums,
dataclasses, and optional, list and str-keyed dict of those); anything else, and any value
a reader is not sure of, goes to the SDK's own rules.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

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
# only a true int: the SDK turns True and 1.0 into 1; for float, only a true float: it
# turns 1 into 1.0).
_SAME_VALUE: frozenset[type] = frozenset({str, int, float, bool})

Reader = Callable[[Any], Any]

_MISSING = object()


class _NotSure(Exception):
    """A reader met a value its shortcut does not cover: the SDK's rules read it."""


@dataclass(frozen=True)
class _Plan:
    """How a dataclass is read: each field's name and reader, those set after `__init__`
    (`init=False`), and the hints the SDK's rules are given where a reader is not sure."""

    fields: tuple[tuple[str, Reader], ...]
    late: frozenset[str]
    hints: dict[str, Any]


# Every converter instance shares the plans: the SDK makes one per workflow instance. Weak
# keys, because a workflow sandbox defines its own copies of the classes in the modules
# it loads, and those must go when the sandbox does.
_PLANS: weakref.WeakKeyDictionary[type, _Plan] = weakref.WeakKeyDictionary()


def _plan(cls: type) -> _Plan:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    return _Plan(
        fields=tuple(
            (field.name, _reader(hints[field.name]) or _by_sdk(hints[field.name]))
            for field in fields
        ),
        late=frozenset(field.name for field in fields if not field.init),
        hints={field.name: hints[field.name] for field in fields},
    )


def _reader(hint: Any) -> Reader | None:
    """What reads a JSON value of `hint` as the SDK's `value_to_type` would (raising
    `_NotSure` for a value it is not sure of), or None where only the SDK's rules do."""
    if hint is Any:
        return _same
    if hint in _SAME_VALUE:
        return _exactly(hint)
    if hint is datetime:
        return _iso_datetime
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass_reader(hint)
    if (
        isinstance(hint, type)
        and issubclass(hint, Enum)
        and issubclass(hint, str)
        # The SDK reads a class with pydantic v1's `parse_obj` by it, before enums.
        and not isinstance(
            inspect.getattr_static(hint, "parse_obj", None), classmethod | staticmethod
        )
    ):
        return _str_enum(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        [member] = [arg for arg in args if arg is not type(None)]
        read = _reader(member)
        # The SDK tries each member in turn. Every reader here but `_same` refuses None,
        # so None is the NoneType member's (`_same` gives None too); a member only the
        # SDK's rules read might take None itself, and the union is left to them whole.
        return None if read is None else _optional(read)
    if origin is list and len(args) == 1:
        item = _reader(args[0])
        return None if item is None else _list_of(item)
    if origin is dict and len(args) == 2 and args[0] is str:
        value = _reader(args[1])
        return None if value is None else _str_keyed(value)
    return None


def _by_sdk(hint: Any) -> Reader:
    def read(value: Any) -> Any:
        return value_to_type(hint, value, _CHAIN)

    return read


def _same(value: Any) -> Any:
    return value


def _exactly(cls: type) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not cls:
            raise _NotSure
        return value

    return read


def _iso_datetime(value: Any) -> Any:
    if type(value) is not str:
        raise _NotSure
    return datetime.fromisoformat(value)


def _str_enum(cls: type) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not str:
            raise _NotSure
        return cls(value)

    return read


def _dataclass_reader(cls: type) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise _NotSure
        return _read_dataclass(cls, value)

    return read


def _optional(member: Reader) -> Reader:
    def read(value: Any) -> Any:
        return None if value is None else member(value)

    return read


def _list_of(item: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not list:
            raise _NotSure
        return [item(each) for each in value]

    return read


def _str_keyed(item: Reader) -> Reader:
    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise _NotSure
        if item is _same:
            return dict(value)
        return {key: item(each) for key, each in value.items()}

    return read


def _read_dataclass(cls: type, value: dict[str, Any]) -> Any:
    """`cls` from a JSON object as the SDK's `value_to_type` builds a dataclass: unknown
    keys ignored, a missing required field left to the class's `__init__` to refuse,
    fields with `init=False` set afterwards."""
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _plan(cls)
    values: dict[str, Any] = {}
    for name, read in plan.fields:
        raw = value.get(name, _MISSING)
        if raw is _MISSING:
            continue
        try:
            values[name] = read(raw)
        except Exception:
            # Not sure, or refused (by a nested dataclass, say): the SDK's rules decide,
            # and the error is worded as the SDK words it.
            try:
                values[name] = value_to_type(plan.hints[name], raw, _CHAIN)
            except Exception as err:
                raise TypeError(f"Failed converting field {name} on dataclass {cls}") from err
    if not plan.late:
        return cls(**values)
    late = {name: values.pop(name) for name in plan.late if name in values}
    obj = cls(**values)
    for name, converted in late.items():
        object.__setattr__(obj, name, converted)
    return obj


class DataclassReader(JSONTypeConverter):
    """Builds dataclasses from JSON values as the SDK's `value_to_type` does, through
    each class's plan."""

    def to_typed_value(self, hint: type, value: Any) -> Any | None | JSONTypeConverterUnhandled:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return JSONTypeConverter.Unhandled
        if not isinstance(value, dict):
            raise TypeError(f"Cannot convert to dataclass {hint}, value is {type(value)} not dict")
        return _read_dataclass(hint, value)


# The custom converters the SDK's rules are given where a reader hands a value to them:
# ours, so a dataclass inside a shape no reader covers is still read through its plan.
_CHAIN: Final[list[JSONTypeConverter]] = [DataclassReader()]


@dataclass(frozen=True)
class _Writing:
    names: tuple[str, ...]
    # The field names, where an instance's `__dict__` holding exactly them is its fields'
    # values (no slots, no descriptor in the class under a field's name).
    plain: frozenset[str] | None


# Each dataclass's field names, in `dataclasses.fields` order, kept as `_PLANS` is.
_WRITINGS: weakref.WeakKeyDictionary[type, _Writing] = weakref.WeakKeyDictionary()


def _writing(cls: type) -> _Writing:
    names = tuple(field.name for field in dataclasses.fields(cls))
    plain = not hasattr(cls, "__slots__") and not any(
        hasattr(inspect.getattr_static(cls, name, None), "__get__") for name in names
    )
    return _Writing(names, frozenset(names) if plain else None)


class DataclassWriter(AdvancedJSONEncoder):
    """Writes a dataclass as the SDK's encoder does, an object of its fields, but hands the
    encoder the field values themselves (a nested dataclass comes back here in turn)
    instead of `asdict`'s deep copy; the JSON is the same, byte for byte (the SDK writes
    keys sorted, so an instance's own `__dict__` serves when it holds just the fields)."""

    def default(self, o: Any) -> Any:
        cls = type(o)
        # The SDK's encoder writes a datetime as ISO text even where it is a dataclass.
        if dataclasses.is_dataclass(cls) and not isinstance(o, datetime):
            writing = _WRITINGS.get(cls)
            if writing is None:
                writing = _WRITINGS[cls] = _writing(cls)
            if writing.plain is not None:
                own = o.__dict__
                if own.keys() == writing.plain:
                    return own
            return {name: getattr(o, name) for name in writing.names}
        return super().default(o)


class LifecyclePayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, with JSON dataclasses written by `DataclassWriter`
    and read by `DataclassReader`."""

    def __init__(self) -> None:
        json_converter = JSONPlainPayloadConverter(
            encoder=DataclassWriter, custom_type_converters=_CHAIN
        )
        super().__init__(
            *(
                json_converter if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )
