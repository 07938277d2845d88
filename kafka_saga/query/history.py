"""Saga history entries, packed: one int per event instead of a dict (~50 bytes, not ~450).

An entry is ``occurred_at (microseconds since year 1) << 19 | retry_count << 5 | step << 3 |
type``, or ``(that int, error_message)`` when there is an error message. A timestamp that is
not canonical (RFC 3339, UTC, microseconds: what the contracts decode to) or a retry count
beyond 14 bits keeps the plain tuple, so :func:`history_view` always gives back the event's
own values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.contracts import Event, EventType, Step
from ..core.fields import CANONICAL_TIME, canonical_time
from ..core.saga import STEP_ORDER

History = int | tuple[int, str] | tuple[EventType, Step, str, int, str]
_TYPES = tuple(EventType)
_TYPE_CODE = {kind: code for code, kind in enumerate(_TYPES)}
_STEP_CODE = {step: code for code, step in enumerate(STEP_ORDER)}
_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def history_entry(event: Event) -> History:
    """The entry of one event, packed when it can be given back exactly."""
    at, retries, error = event.occurred_at, event.retry_count, event.error_message
    try:
        when = datetime.fromisoformat(at) if CANONICAL_TIME.fullmatch(at) else None
    except ValueError:  # e.g. February 30th
        when = None
    if when is None or not 0 <= retries < 1 << 14:
        return (event.type, event.step, at, retries, error)
    entry = ((when - _YEAR_ONE) // _MICROSECOND << 19 | retries << 5
             | _STEP_CODE[event.step] << 3 | _TYPE_CODE[event.type])
    return (entry, error) if error else entry


def history_view(entry: History) -> dict[str, Any]:
    """``{type, step, occurred_at, retry_count, error_message}`` of an entry."""
    if isinstance(entry, tuple) and len(entry) == 5:
        kind, step, at, retries, error = entry
    else:
        packed, error = entry if isinstance(entry, tuple) else (entry, "")
        kind, step = _TYPES[packed & 7], STEP_ORDER[packed >> 3 & 3]
        at = canonical_time(_YEAR_ONE + (packed >> 19) * _MICROSECOND)
        retries = packed >> 5 & 0x3FFF
    return {"type": kind.value, "step": step.value, "occurred_at": at, "retry_count": retries,
            "error_message": error}


__all__ = ["History", "history_entry", "history_view"]
