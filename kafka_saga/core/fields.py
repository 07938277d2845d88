"""Declarative field specs: one definition gives strict decoding and JSON Schema.

Pure code, no I/O. Each contract lists its fields once (``FIELDS``); ``decode_fields``
validates a parsed JSON object against them, ``json_schema`` exports them.
"""

from __future__ import annotations

import re
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


# canonical_time's shape: ASCII digits exactly where it writes them (a parse gives them back)
CANONICAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def canonical_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds: sortable as a string."""
    # isoformat pads the year to 4 digits and, with timespec, always writes microseconds;
    # the UTC offset it ends with ("+00:00") becomes "Z"
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def non_negative(raw: str) -> int | None:
    """ASCII digits -> their integer; anything else (sign, space, other digits) -> None."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


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


def decode_fields(fields: tuple[Field, ...], data: dict[str, Any], path: str) -> dict[str, Any]:
    """Validate ``data`` against ``fields``; unknown keys are ignored (tolerant reader)."""
    out: dict[str, Any] = {}
    for field in fields:
        name = field.name
        value = data.get(name, _MISSING)
        if value is _MISSING or (value is None and not field.required):
            if field.required:
                raise ContractError("missing_field", f"{path}.{name}: required field missing")
            default = field.default
            out[name] = default() if callable(default) else default
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
