"""How long each saga step takes, as the orchestrator that runs it sees it.

A step's time runs from the transition before it (the saga's ``OrderCreated``, or the step
before's event) to the event that ends it: Payment includes its retries and backoff, Inventory
the request and the participant's answer, a compensation its release or refund. Each is
observed in ``kafka_saga_step_seconds{step, outcome}``; a terminal event also observes
submission -> terminal (``kafka_saga_saga_seconds{outcome}``), counted from the timestamp of the
``OrderCreate`` record. A saga resumed by another process (after a crash or a rebalance) is
timed from its resumption: its first step there and its total are not observed.
"""

from __future__ import annotations

import time

from ..core.contracts import Event, EventType
from ..observation.metrics import Metrics, RecentLatencies

OUTCOMES = {EventType.ORDER_APPROVED: "approved", EventType.ORDER_REJECTED: "rejected",
            EventType.ORDER_FAILED: "failed", EventType.ORDER_COMPENSATED: "compensated"}
TERMINAL = (EventType.ORDER_REJECTED, EventType.ORDER_FAILED)


class SagaClock:
    """The time of each running saga's last transition (and its submission), per partition."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._last: dict[str, tuple[int, float, float | None]] = {}  # saga -> (partition, last, submitted)

    def started(self, saga_id: str, partition: int, submitted_ms: int | None) -> None:
        """A saga created from its command here; ``submitted_ms``: the command record's timestamp."""
        self.metrics.sagas.labels(outcome="started").inc()
        submitted = submitted_ms / 1000 if submitted_ms and submitted_ms > 0 else time.time()
        self._last[saga_id] = (partition, time.monotonic(), submitted)

    def resumed(self, saga_id: str, partition: int) -> None:
        """A saga this process runs from now on, created elsewhere or earlier."""
        self._last.setdefault(saga_id, (partition, time.monotonic(), None))

    def transition(self, event: Event, partition: int) -> None:
        """Observe the step ``event`` ends (it was applied: not a duplicate)."""
        outcome = OUTCOMES.get(event.type)
        if outcome is None:
            return
        now = time.monotonic()
        known = self._last.get(event.saga_id)
        step = event.step.value
        if known is not None:
            seconds = now - known[1]
            self.metrics.step_seconds.labels(step=step, outcome=outcome).observe(seconds)
            window = self.metrics.recent_steps.get(step)
            if window is None:
                window = self.metrics.recent_steps[step] = RecentLatencies()
            window.observe(seconds, now)
        ended = event.type in TERMINAL or (outcome == "approved" and step == "Finalize")
        if not ended:
            self._last[event.saga_id] = (partition, now, known[2] if known else None)
            return
        self._last.pop(event.saga_id, None)
        self.metrics.sagas.labels(outcome=outcome).inc()
        if known is not None and known[2] is not None:
            total = max(0.0, time.time() - known[2])
            self.metrics.saga_seconds.labels(outcome=outcome).observe(total)
            self.metrics.recent_sagas.observe(total, now)

    def forget(self, partitions: set[int]) -> None:
        """Sagas of partitions this process no longer owns."""
        for saga_id in [s for s, (p, _, _) in self._last.items() if p in partitions]:
            del self._last[saga_id]
