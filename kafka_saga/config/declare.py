"""How a setting is declared and read: the parsers, the checks, :func:`setting` and the reading
of a declared class from the environment (used by :mod:`kafka_saga.config`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, field, fields
from typing import Any

from ..core.fields import non_negative


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it. ``exit_code`` is the process's
    exit code for it, one per kind an operator's tooling may tell apart (docs/cli.md)."""

    exit_code = 2


class PortTaken(ConfigError):
    """A port the process must listen on is taken (or its host is not this machine's)."""

    exit_code = 5


class BadBootstrap(ConfigError):
    """A bootstrap address that is not ``host:port`` or whose host does not exist."""

    exit_code = 6


class UnreadableRoleList(ConfigError):
    """A role list file that cannot be read or does not say which roles to run."""

    exit_code = 7


class PartitionsDisagree(ConfigError):
    """Topics that must have the same partition count do not."""

    exit_code = 8


def bootstrap_addresses(value: str) -> str | None:
    """What is wrong with a ``host:port[,host:port]`` list, if anything."""
    for entry in value.split(","):
        host, colon, port = entry.strip().rpartition(":")
        if not colon or not host.strip("[]"):
            return f"{entry.strip()!r} is not host:port"
        if not port.isdigit() or not 0 < int(port) < 65536:
            return f"{port!r} in {entry.strip()!r} is not a port (1-65535)"
    return None


# --- parsers (raw text -> value; a ValueError says what is wrong) and checks -------------

def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("is not an integer") from None


def number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("is not a number") from None


def flag(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def text(raw: str) -> str:
    return raw


def stripped(raw: str) -> str:
    return raw.strip()


def lower(raw: str) -> str:
    return raw.strip().lower()


def upper(raw: str) -> str:
    return raw.strip().upper()


Check = Callable[[Any], str | None]  # None: fine; else what is wrong


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}"


def between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be between {low} and {high}"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"use {', '.join(choices)}"


def non_negative_int(origin: str, value: Any) -> int:
    """An integer >= 0 given as a number or its digits (role list options); ``origin`` names
    it in the error."""
    parsed = non_negative(value.strip()) if isinstance(value, str) else value
    if type(parsed) is not int or parsed < 0:
        raise ConfigError(f"{origin} must be a non-negative integer, got {value!r}")
    return parsed


def setting(default: Any, env: str, meaning: str, parse: Callable[[str], Any] = text,
            check: Check | None = None, *, zero_is_default: bool = False,
            secret: bool = False, error: type[ConfigError] = ConfigError) -> Any:
    """A field read from ``env``: blank or unset means ``default`` (so does 0 when
    ``zero_is_default``); ``parse`` turns the text into the value, ``check`` vets the value
    (a problem raises ``error``); a ``secret`` stays out of ``repr`` (and so out of the logs)."""
    return field(default=default, repr=not secret, metadata={
        "env": env, "meaning": meaning, "parse": parse, "check": check,
        "zero_is_default": zero_is_default, "error": error})


def declared(cls: type) -> Iterator[tuple[Field[Any], dict[str, Any]]]:
    """The fields of ``cls`` read from the environment, with their declarations."""
    for f in fields(cls):
        if "env" in f.metadata:
            yield f, dict(f.metadata)


def read_declared(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f, spec in declared(cls):
        raw = env.get(spec["env"])
        if raw is None or raw.strip() == "":
            continue
        try:
            value = spec["parse"](raw)
        except ValueError as exc:
            raise spec["error"](f"{spec['env']}={raw!r} {exc}") from None
        if spec["zero_is_default"] and value == 0:
            continue
        values[f.name] = value
    return values


def check_declared(obj: object) -> None:
    for f, spec in declared(type(obj)):
        value = getattr(obj, f.name)
        problem = spec["check"](value) if spec["check"] and value is not None else None
        if problem:
            raise spec["error"](f"{spec['env']}={value!r}: {problem}")
