"""The watchdog: a consumer that stopped making progress while records wait is a stalled role.

Every consume loop (:mod:`kafka_saga.bus.loop`) owns a
:class:`~kafka_saga.observation.progress.Progress`: when it last made progress (handled a
record, finished a batch, or saw itself caught up with the log) and, per assigned partition,
how many records wait. The supervisor runs one :class:`Watchdog` and tells it, through the
:data:`~kafka_saga.observation.progress.OWNER` context variable, which role the loops of
each task belong to (a role's loops are created in tasks that inherit that context).

Every ``interval_s`` the watchdog looks at each loop: one with a batch in flight or records
waiting, and no progress for longer than ``threshold_s``, is stalled
(:func:`~kafka_saga.observation.progress.is_stalled`). An
idle consumer (nothing waiting) is never stalled, and a slow handler that still gets through
records resets the clock with every record. A stalled role is logged (role, stage, worker,
group, partitions and their lag), counted (``kafka_saga_stalls``), flagged
(``kafka_saga_stalled{role}`` = 1, ``state: stalled`` in ``/healthz``) and handed to the
supervisor, which restarts it. The flag is cleared once a loop of the restarted role makes
progress.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..observation.metrics import Metrics
from ..observation.progress import Clock, Progress

log = logs.get("watchdog")


@dataclass
class Stall:
    """One detected stall of a role: which of its consumers, which partitions, how long."""

    role: str
    at: float  # the watchdog's clock when detected
    detected: float  # wall clock, for humans
    consumers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def partitions(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for consumer in self.consumers:
            merged.update(consumer["partitions"])
        return dict(sorted(merged.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"detected": self.detected, "partitions": self.partitions,
                "consumers": self.consumers}


class Watchdog:
    """Checks every consume loop of the supervised roles; reports stalled roles to ``on_stall``."""

    def __init__(self, threshold_s: float, interval_s: float,
                 on_stall: Callable[[Stall], None] = lambda _stall: None,
                 metrics: Metrics | None = None, clock: Clock = time.monotonic) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.on_stall = on_stall
        self.metrics = metrics
        self.clock = clock
        self.loops: dict[str, set[Progress]] = {}
        self.stalled: dict[str, Stall] = {}  # roles flagged stalled (until they progress again)
        self.pending: set[str] = set()  # roles handed to on_stall and not restarted yet
        self.stalls: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.threshold_s > 0 and self.interval_s > 0

    def register(self, progress: Progress) -> None:
        self.loops.setdefault(progress.role, set()).add(progress)

    def unregister(self, progress: Progress) -> None:
        self.loops.get(progress.role, set()).discard(progress)

    def restarted(self, role: str) -> None:
        """The supervisor replaced the role: forget its old loops, watch the new ones."""
        self.loops.pop(role, None)
        self.pending.discard(role)

    def check(self) -> list[Stall]:
        """One pass over every loop; returns the stalls detected now (already reported)."""
        now = self.clock()
        found = []
        for role, loops in self.loops.items():
            stuck = [p for p in loops if p.stalled(now, self.threshold_s)]
            if stuck and role not in self.pending:
                found.append(self._report(role, stuck, now))
            elif not stuck and role in self.stalled:
                current = self.stalled[role]
                if any(p.moved and p.created > current.at for p in loops):
                    self._recovered(role)
        for stall in found:
            self.on_stall(stall)
        return found

    def _report(self, role: str, stuck: list[Progress], now: float) -> Stall:
        stall = Stall(role, now, time.time(), [p.describe(now) for p in stuck])
        self.stalled[role] = stall
        self.pending.add(role)
        self.stalls[role] = self.stalls.get(role, 0) + 1
        for consumer in stall.consumers:
            log.error("consumer stalled: no progress while records are waiting; restarting the role",
                      role=role, stage=consumer["stage"], worker=consumer["worker"],
                      group=consumer["group"], partitions=consumer["partitions"],
                      in_flight=consumer["in_flight"], idle_s=consumer["idle_s"],
                      threshold_s=self.threshold_s)
        if self.metrics is not None:
            self.metrics.stalled.labels(role=role).set(1)
            self.metrics.stalls.labels(role=role).inc()
            self.metrics.role_state[role] = "stalled"
        return stall

    def _recovered(self, role: str) -> None:
        stall = self.stalled.pop(role)
        log.info("stalled role is making progress again", role=role,
                 stalled_for_s=round(self.clock() - stall.at, 3))
        if self.metrics is not None:
            self.metrics.stalled.labels(role=role).set(0)

    def health(self, role: str) -> dict[str, Any]:
        stall = self.stalled.get(role)
        return {"stalls": self.stalls.get(role, 0), **({"stall": stall.to_dict()} if stall else {})}

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled."""
        log.info("watchdog started", threshold_s=self.threshold_s, interval_s=self.interval_s)
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watchdog itself must not die
                log.exception("watchdog check failed")
