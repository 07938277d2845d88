"""Reading dead-letter records: their headers, and whether one may be re-injected. Pure."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .contracts import (
    DLQ_ERROR,
    DLQ_HEADERS,
    DLQ_ORIGIN_OFFSET,
    DLQ_ORIGIN_PARTITION,
    DLQ_ORIGIN_TOPIC,
    DLQ_PUBLISHED,
    DLQ_REASON,
    DLQ_RETRY_COUNT,
    DLQ_ROLE,
    REINJECTED_HEADER,
    headers_dict,
)


@dataclass(slots=True)
class DeadLetter:
    """One record of ``orders.dlq`` as people and tools see it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value_preview: str
    value_size: int
    reason: str
    error: str
    origin_topic: str
    origin_partition: int | None
    origin_offset: int | None
    role: str
    published: str
    retry_count: int
    reinjected: int
    headers: dict[str, str]

    @property
    def is_dead_letter(self) -> bool:
        """False for garbage written to the DLQ by hand (no ``reason``/``origin-topic``)."""
        return bool(self.reason and self.origin_topic)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _preview(value: bytes | None, limit: int = 512) -> str:
    if value is None:
        return ""
    head = value[:limit]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the limit: binary
            return "base64:" + base64.b64encode(head).decode()
        text = head[:exc.start].decode("utf-8")
    return text + ("…" if len(value) > limit else "")


def read_dead_letter(record: Any) -> DeadLetter:
    """Parse a consumed DLQ record; never raises (garbage gets empty fields)."""
    headers = headers_dict(record.headers)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp or 0,
        key=key,
        value_preview=_preview(record.value),
        value_size=len(record.value) if record.value is not None else 0,
        reason=headers.get(DLQ_REASON, ""),
        error=headers.get(DLQ_ERROR, ""),
        origin_topic=headers.get(DLQ_ORIGIN_TOPIC, ""),
        origin_partition=_int(headers.get(DLQ_ORIGIN_PARTITION)),
        origin_offset=_int(headers.get(DLQ_ORIGIN_OFFSET)),
        role=headers.get(DLQ_ROLE, ""),
        published=headers.get(DLQ_PUBLISHED, ""),
        retry_count=_int(headers.get(DLQ_RETRY_COUNT)) or 0,
        reinjected=_int(headers.get(REINJECTED_HEADER)) or 0,
        headers=headers,
    )


def reinjection_headers(record: Any) -> list[tuple[str, bytes]]:
    """The original record's headers (DLQ ones removed) plus an incremented re-injection mark."""
    dlq_keys = {*DLQ_HEADERS, REINJECTED_HEADER}
    count = (_int(headers_dict(record.headers).get(REINJECTED_HEADER)) or 0) + 1
    kept = [(k, v) for k, v in (record.headers or ()) if k not in dlq_keys]
    return [*kept, (REINJECTED_HEADER, str(count).encode())]
