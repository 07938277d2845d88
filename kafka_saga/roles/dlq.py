"""dlq: reads ``orders.dlq``, logs each record with its headers, counts by reason.

Garbage written to the DLQ itself (no DLQ headers) is counted and logged, never
re-published. Re-injection is a deliberate act: ``kafka-saga dlq replay``.

It also audits ``orders.aggregates`` in a consumer group of its own: the query instances
read that topic without a group (each needs all of it), so the one place that dead-letters
a malformed aggregate exactly once is here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .. import logs
from ..bus.loop import Subscription
from ..core.contracts import UserAggregate
from ..core.dead_letters import DeadLetter, read_dead_letter
from .base import Role

log = logs.get("dlq")


def _raw(value: bytes | None) -> bytes | None:
    return value


def _aggregate_or_tombstone(value: bytes | None) -> UserAggregate | None:
    return None if value is None else UserAggregate.decode(value)


def _valid(_message: object, _record: object) -> None:
    """Nothing to do with a valid aggregate: the loop dead-letters the ones that do not decode."""


class DlqRole(Role):
    name = "dlq"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.recent: deque[DeadLetter] = deque(maxlen=ctx.settings.dlq_recent)
        self.by_reason: dict[str, int] = {}

    def inspect(self, _value: bytes | None, record: Any) -> None:
        letter = read_dead_letter(record)
        metrics = self.ctx.metrics
        if not letter.is_dead_letter:
            metrics.dlq_garbage.inc()
            log.warning("garbage on the dlq (no dlq headers), counted and skipped",
                        partition=record.partition, offset=record.offset, size=letter.value_size)
            return
        metrics.dlq_read.labels(reason=letter.reason).inc()
        self.by_reason[letter.reason] = self.by_reason.get(letter.reason, 0) + 1
        self.recent.append(letter)
        log.info("dead letter", reason=letter.reason, error=letter.error[:300],
                 origin=f"{letter.origin_topic}:{letter.origin_partition}:{letter.origin_offset}",
                 role_of_origin=letter.role, order_id=letter.key, reinjected=letter.reinjected,
                 partition=record.partition, offset=record.offset)

    def subscriptions(self) -> list[Subscription]:
        return [self.subscription("dlq", _raw, self.inspect),  # never re-publishes garbage
                self.subscription("dlq.aggregates-audit", _aggregate_or_tombstone, _valid,
                                  label="dlq")]

    def health(self) -> dict[str, Any]:
        return {"by_reason": dict(self.by_reason), "recent": len(self.recent)}
