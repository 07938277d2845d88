"""Generated fast decoders: one straight-line Python function per contract. Pure, no I/O.

:func:`~kafka_saga.core.fields.decode_fields` walks a contract's ``FIELDS`` one by one
with a generic check per kind: clear errors, but a loop, a dispatch and a function call per
field, on every record of every consumer. :func:`fast_decoder` compiles the same ``FIELDS``
into one function with each check inlined and the contract built directly.

The fast decoder only ever *accepts* a value that the full check would return unchanged;
for anything else (a missing required field, a wrong type, a value to normalise, a bound
crossed) it returns ``None`` and the caller takes the full path, which raises the precise
:class:`~kafka_saga.core.fields.ContractError`. So it changes speed, never behaviour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .fields import CANONICAL_TIME, Field

_CANONICAL = CANONICAL_TIME.fullmatch
_fromisoformat = datetime.fromisoformat


def is_canonical_time(value: str) -> bool:
    """An RFC 3339 UTC timestamp exactly as we write it, a real date in years 1000-9998."""
    if not _CANONICAL(value) or value < "1000" or value[:4] > "9998":
        return False
    try:
        _fromisoformat(value)
    except ValueError:
        return False
    return True


def _map_ok(high: int) -> Callable[[dict[Any, Any]], bool]:
    def ok(value: dict[Any, Any]) -> bool:
        if len(value) > 64:
            return False
        for key, item in value.items():
            if type(item) is not str or len(item) > high or len(key) > 256:
                return False
        return True
    return ok


_DECODERS: dict[type, Callable[[dict[str, Any]], Any]] = {}


def fast_decoder(model: type) -> Callable[[dict[str, Any]], Any]:
    """The compiled decoder of ``model`` (a contract class with ``FIELDS``), built once."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = _compile(model)
    return decoder


def _compile(model: type) -> Callable[[dict[str, Any]], Any]:
    fields: tuple[Field, ...] = model.FIELDS  # type: ignore[attr-defined]
    enums: dict[str, Any] = getattr(model, "ENUMS", {})
    env: dict[str, Any] = {"MODEL": model, "is_canonical_time": is_canonical_time}
    lines = ["def decode(data):", "    get = data.get"]
    for i, field in enumerate(fields):
        lines.append(f"    v = get({field.name!r})")
        checks = _checks(field, i, enums.get(field.name), env)
        if field.required:
            lines.append("    if v is None: return None")
            lines.extend("    " + line for line in checks)
        else:
            default = f"D{i}() " if callable(field.default) else f"D{i}"
            env[f"D{i}"] = field.default
            lines.append(f"    if v is None: v = {default}")
            lines.append("    else:")
            lines.extend("        " + line for line in checks)
        lines.append(f"    f{i} = v")
    names = [f.name for f in fields]
    if [f.name for f in dataclasses.fields(model)] == names:
        args = ", ".join(f"f{i}" for i in range(len(fields)))
    else:  # pragma: no cover - every contract lists FIELDS in its dataclass order
        args = ", ".join(f"{name}=f{i}" for i, name in enumerate(names))
    lines.append(f"    return MODEL({args})")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<decoder {model.__name__}>", "exec"), env, namespace)  # noqa: S102
    return namespace["decode"]


def _bounds(name: str, low: int | None, high: int | None) -> str:
    parts = []
    if low is not None:
        parts.append(f"{name} < {low}")
    if high is not None:
        parts.append(f"{name} > {high}")
    return " or ".join(parts)


def _checks(field: Field, i: int, enum: Any, env: dict[str, Any]) -> list[str]:
    """Statements that leave ``v`` valid and canonical, or ``return None``."""
    kind = field.kind
    if kind == "str":
        bounds = _bounds("len(v)", field.min or None, field.max_len)
        return [f"if type(v) is not str or {bounds}: return None"]
    if kind == "int":
        bounds = _bounds("v", field.min, field.max)
        return [f"if type(v) is not int{' or ' + bounds if bounds else ''}: return None"]
    if kind == "bool":
        return ["if type(v) is not bool: return None"]
    if kind == "enum":
        env[f"E{i}"] = {c: (enum(c) if enum else c) for c in field.choices}
        return [f"v = E{i}.get(v) if type(v) is str else None", "if v is None: return None"]
    if kind == "time":
        return ["if type(v) is not str or not is_canonical_time(v): return None"]
    if kind == "map":
        env[f"M{i}"] = _map_ok(field.max_len)
        return [f"if type(v) is not dict or (v and not M{i}(v)): return None"]
    if kind == "object":
        env[f"S{i}"] = fast_decoder(field.model)
        return ["if type(v) is not dict: return None", f"v = S{i}(v)", "if v is None: return None"]
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover
