"""Progress of a consume loop: what it tells the watchdog.

Every consume loop (:mod:`kafka_saga.bus.loop`) owns a :class:`Progress`: when it last made
progress (handled a record, finished a batch, or saw itself caught up with the log) and, per
assigned partition, how many records wait. The watchdog (:mod:`kafka_saga.runtime.watchdog`)
reads it; the supervisor tells a role's loops, through the :data:`OWNER` context variable,
which watcher they report to (a role's loops are created in tasks that inherit that context).
This module knows only the :class:`Watcher` protocol, not the watchdog itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol

Clock = Callable[[], float]


class Watcher(Protocol):
    """What a loop's progress reports to (the runtime's watchdog)."""

    def register(self, progress: Progress) -> None: ...

    def unregister(self, progress: Progress) -> None: ...


# (watcher, supervised role name) of the current task; set by the supervisor for each role.
OWNER: ContextVar[tuple[Watcher, str] | None] = ContextVar("kafka_saga_watchdog_owner",
                                                           default=None)


def is_stalled(waiting: Mapping[str, int], in_flight: bool, last_progress: float, now: float,
               threshold_s: float) -> bool:
    """The stall rule: work is waiting (a batch in flight or records behind the consumer's
    position) and nothing moved for longer than ``threshold_s``."""
    has_work = in_flight or any(lag > 0 for lag in waiting.values())
    return has_work and now - last_progress > threshold_s


class Progress:
    """What one consume loop tells the watchdog. Updated by the loop, read by the watchdog."""

    def __init__(self, stage: str, group: str, worker: int, clock: Clock = time.monotonic) -> None:
        self.stage = stage  # the subscription's name (a role may run several stages)
        self.role = stage  # the supervised role; set by attach() when a watchdog is watching
        self.group = group
        self.worker = worker
        self.clock = clock
        self.created = self.last = clock()
        self.moved = False  # progress was made since created (not just "created recently")
        self.in_flight = False  # a fetched batch is being handled, flushed and committed
        self.waiting: dict[str, int] = {}  # "topic:partition" -> records not yet handled
        self.watchdog: Watcher | None = None

    def tick(self) -> None:
        """Progress: a record handled, a batch committed, a rebalance completed."""
        self.last = self.clock()
        self.moved = True

    def begin(self, waiting: Mapping[str, int]) -> None:
        """A batch was fetched (progress of the fetcher): its records, and whatever follows
        them, are waiting until handled."""
        self.in_flight = True
        self.waiting.update(waiting)
        self.tick()

    def settle(self, partition: str, lag: int) -> None:
        """The batch's records of one partition are handled; ``lag`` records still follow."""
        if lag > 0:
            self.waiting[partition] = lag
        else:
            self.waiting.pop(partition, None)

    def end(self) -> None:
        """The batch is handled, flushed and committed."""
        self.in_flight = False
        self.tick()

    def observe(self, waiting: Mapping[str, int]) -> None:
        """An empty poll: the lag per partition as seen now. Being caught up is progress."""
        self.waiting = {p: lag for p, lag in waiting.items() if lag > 0}
        if not self.waiting:
            self.tick()

    def forget(self, partitions: list[str]) -> None:
        for partition in partitions:
            self.waiting.pop(partition, None)

    def stalled(self, now: float, threshold_s: float) -> bool:
        return is_stalled(self.waiting, self.in_flight, self.last, now, threshold_s)

    def describe(self, now: float) -> dict[str, Any]:
        return {"stage": self.stage, "group": self.group, "worker": self.worker,
                "idle_s": round(now - self.last, 3), "in_flight": self.in_flight,
                "partitions": dict(sorted(self.waiting.items()))}

    def attach(self) -> None:
        """Report to the watchdog of the current task's role, if any (else stay detached)."""
        owner = OWNER.get()
        if owner is not None:
            self.watchdog, self.role = owner
            self.watchdog.register(self)

    def detach(self) -> None:
        if self.watchdog is not None:
            self.watchdog.unregister(self)
            self.watchdog = None
