"""Bounded work in flight: the backpressure rule of the shared consume loop.

A role that starts work from a record and finishes it later (the orchestrator starts a saga
per ``OrderCreate``) counts that work here, per input partition: :meth:`InFlight.begin` when
it starts, :meth:`InFlight.end` when it finishes. The loop (:mod:`kafka_saga.bus.loop`) asks
:meth:`InFlight.full` before handling each record of a governed partition; at the bound it
seeks the partition back to that record and pauses it, so the backlog stays in Kafka, not
in memory or in timers. A paused partition resumes once its count is down to the low-water
mark (half the bound): hysteresis, so a busy partition is not paused and resumed per record.

The process bound ``limit`` is shared equally by the partitions the process owns (``share``,
rounded up): a partition with a deep backlog cannot take the room of the others, so every
partition keeps making progress during a burst (fairness), and the total never exceeds
``limit`` (a partition is also full while the process is at its bound). Each finished unit of work is progress for the stall
watchdog: a paused consumer whose work is completing is busy, not stalled.

No I/O here: the loop does the pausing, this only keeps the counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

Key = Any  # a TopicPartition in the loop; anything hashable in tests


class InFlight:
    """Work in progress per partition, against a process-wide bound shared by the partitions."""

    def __init__(self, limit: int, topics: Iterable[str] = (), low_ratio: float = 0.5) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.topics = frozenset(topics)  # the topics whose partitions are governed ("" = all)
        self.low_ratio = low_ratio
        self.counts: dict[Key, int] = {}
        self.owned: set[Key] = set()
        self.paused: set[Key] = set()
        self.peak = 0
        self.total = 0
        self._progress: dict[Key, Callable[[], None]] = {}

    # --- ownership (from the loop's rebalance callbacks) ---
    def own(self, keys: Iterable[Key], on_progress: Callable[[], None] | None = None) -> None:
        for key in keys:
            if self.governs(key):
                self.owned.add(key)
                if on_progress is not None:
                    self._progress[key] = on_progress

    def disown(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.owned.discard(key)
            self.paused.discard(key)
            self._progress.pop(key, None)

    def governs(self, key: Key) -> bool:
        return not self.topics or getattr(key, "topic", "") in self.topics

    # --- the bound ---
    @property
    def share(self) -> int:
        """The bound of one partition: the process bound split between the owned partitions."""
        return max(1, math.ceil(self.limit / max(1, len(self.owned))))

    def full(self, key: Key) -> bool:
        """At the partition's share, or the process at its bound (the shares are rounded up)."""
        return self.counts.get(key, 0) >= self.share or self.total >= self.limit

    def has_room(self, key: Key) -> bool:
        """Below the low-water mark: a paused partition may resume."""
        return self.counts.get(key, 0) <= int(self.share * self.low_ratio) and self.total < self.limit

    # --- the work ---
    def begin(self, key: Key) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.peak = max(self.peak, self.total)

    def end(self, key: Key) -> None:
        count = self.counts.get(key, 0)
        if count <= 0:
            return
        if count == 1:
            del self.counts[key]
        else:
            self.counts[key] = count - 1
        self.total -= 1
        progress = self._progress.get(key)
        if progress is not None:
            progress()

    def describe(self) -> dict[str, Any]:
        """For ``/healthz`` and the dashboard."""
        return {"in_flight": self.total, "limit": self.limit, "share": self.share,
                "peak": self.peak, "paused": sorted(_name(k) for k in self.paused)}


def _name(key: Key) -> str:
    topic = getattr(key, "topic", None)
    return f"{topic}:{key.partition}" if topic is not None else str(key)
