"""Declarative field specs: one definition gives strict decoding and JSON Schema.

Pure code, no I/O. Each contract lists its fields once (``FIELDS``); ``decode_fields``
validates a parsed JSON object against them, ``json_schema`` exports them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class ContractError(ValueError):
    """A message that does not satisfy its contract. ``reason`` is a short stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_MISSING = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a contract: name, JSON kind, bounds and default."""

    name: str
    kind: str  # "str" | "int" | "bool" | "enum" | "time" | "map" | "object"
    default: Any = _MISSING
    min: int | None = None
    max: int | None = None
    max_len: int = 1024
    choices: tuple[str, ...] = ()
    model: Any = None  # nested contract class for kind == "object"
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def canonical_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: sortable as a string."""
    utc = value.astimezone(UTC)
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return canonical_time(datetime.now(UTC))


def _fail(path: str, what: str) -> ContractError:
    return ContractError("invalid_field", f"{path}: {what}")


def check_value(field: Field, value: Any, path: str) -> Any:
    """Validate one value; return it in canonical form."""
    kind = field.kind
    if kind == "str":
        if type(value) is not str:
            raise _fail(path, f"expected string, got {type(value).__name__}")
        if len(value) > field.max_len:
            raise _fail(path, f"longer than {field.max_len} characters")
        if field.min is not None and len(value) < field.min:
            raise _fail(path, "must not be empty")
        return value
    if kind == "int":
        if type(value) is not int:
            raise _fail(path, f"expected integer, got {type(value).__name__}")
        if field.min is not None and value < field.min:
            raise _fail(path, f"{value} is below {field.min}")
        if field.max is not None and value > field.max:
            raise _fail(path, f"{value} is above {field.max}")
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise _fail(path, f"expected boolean, got {type(value).__name__}")
        return value
    if kind == "enum":
        if type(value) is not str or value not in field.choices:
            raise ContractError(
                "unknown_value", f"{path}: {value!r} is not one of {', '.join(field.choices)}"
            )
        return value
    if kind == "time":
        if type(value) is not str or len(value) > 64:
            raise _fail(path, "expected an RFC 3339 timestamp string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _fail(path, f"{value!r} is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise _fail(path, f"{value!r} has no time zone")
        if not 1000 <= parsed.year <= 9998:
            raise _fail(path, f"{value!r} is out of the supported range (years 1000-9998)")
        return canonical_time(parsed)
    if kind == "map":
        if type(value) is not dict:
            raise _fail(path, f"expected object of strings, got {type(value).__name__}")
        if len(value) > 64:
            raise _fail(path, "more than 64 entries")
        for key, item in value.items():
            if type(item) is not str or len(item) > field.max_len or len(key) > 256:
                raise _fail(f"{path}.{key}", "expected a string value")
        return value
    if kind == "object":
        if type(value) is not dict:
            raise _fail(path, f"expected object, got {type(value).__name__}")
        return field.model.from_dict(value, path)
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover


_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _fast_check(field: Field) -> Callable[[Any], bool]:
    """A quick test that accepts only values ``check_value`` returns unchanged.

    Values it does not accept go through ``check_value`` (same errors, same normalisation),
    so the fast path changes speed, never behaviour.
    """
    kind = field.kind
    if kind == "str":
        low, high = field.min or 0, field.max_len
        return lambda v: type(v) is str and low <= len(v) <= high
    if kind == "int":
        low = field.min if field.min is not None else -(2**63)
        high = field.max if field.max is not None else 2**63
        return lambda v: type(v) is int and low <= v <= high
    if kind == "bool":
        return lambda v: type(v) is bool
    if kind == "enum":
        choices = frozenset(field.choices)
        return lambda v: type(v) is str and v in choices
    if kind == "time":  # already canonical (what we write), and a real date in range
        def canonical(v: Any) -> bool:
            if type(v) is not str or not _CANONICAL.fullmatch(v) or v < "1000":
                return False
            try:
                datetime.fromisoformat(v)
            except ValueError:
                return False
            return v[:4] <= "9998"
        return canonical
    if kind == "map":
        high = field.max_len
        return lambda v: (type(v) is dict and len(v) <= 64 and all(
            type(x) is str and len(x) <= high and len(k) <= 256 for k, x in v.items()))
    return lambda v: False  # nested objects: always the full path


# keyed by the identity of a contract's FIELDS tuple (a class attribute, alive for good):
# hashing the tuple itself would cost more than the checks it saves
_COMPILED: dict[int, tuple[tuple[Field, ...], list[tuple[Field, Callable[[Any], bool]]]]] = {}


def decode_fields(fields: tuple[Field, ...], data: dict[str, Any], path: str) -> dict[str, Any]:
    """Validate ``data`` against ``fields``; unknown keys are ignored (tolerant reader)."""
    entry = _COMPILED.get(id(fields))
    if entry is None or entry[0] is not fields:
        entry = _COMPILED[id(fields)] = (fields, [(f, _fast_check(f)) for f in fields])
    compiled = entry[1]
    out: dict[str, Any] = {}
    for field, fast in compiled:
        name = field.name
        value = data.get(name, _MISSING)
        if value is _MISSING or (value is None and not field.required):
            if field.required:
                raise ContractError("missing_field", f"{path}.{name}: required field missing")
            default = field.default
            out[name] = default() if callable(default) else default
        elif fast(value):
            out[name] = value
        else:
            out[name] = check_value(field, value, f"{path}.{name}")
    return out


def _field_schema(field: Field) -> dict[str, Any]:
    schema: dict[str, Any]
    if field.kind == "str":
        schema = {"type": "string", "maxLength": field.max_len}
        if field.min:
            schema["minLength"] = field.min
    elif field.kind == "int":
        schema = {"type": "integer"}
        if field.min is not None:
            schema["minimum"] = field.min
        if field.max is not None:
            schema["maximum"] = field.max
    elif field.kind == "bool":
        schema = {"type": "boolean"}
    elif field.kind == "enum":
        schema = {"type": "string", "enum": list(field.choices)}
    elif field.kind == "time":
        schema = {"type": "string", "format": "date-time"}
    elif field.kind == "map":
        schema = {"type": "object", "additionalProperties": {"type": "string"}}
    else:
        schema = json_schema(field.model, nested=True)
    if field.description:
        schema["description"] = field.description
    if not field.required and not callable(field.default):
        schema["default"] = field.default
    return schema


def json_schema(model: Any, nested: bool = False) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a contract class with a ``FIELDS`` tuple."""
    schema: dict[str, Any] = {
        "title": model.__name__,
        "type": "object",
        "properties": {f.name: _field_schema(f) for f in model.FIELDS},
        "required": [f.name for f in model.FIELDS if f.required],
    }
    if model.__doc__:
        schema["description"] = model.__doc__.strip().splitlines()[0]
    if not nested:
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
