"""Process-wide metrics: Prometheus collectors plus a compact JSON snapshot."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


class LatencyWindow:
    """The most recent N latencies, for exact percentiles in the JSON snapshot."""

    def __init__(self, size: int = 2048) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self.count = 0

    def observe(self, seconds: float) -> None:
        self._values.append(seconds)
        self.count += 1

    def summary(self) -> dict[str, float | int]:
        values = sorted(self._values)
        if not values:
            return {"count": self.count, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3)

        return {"count": self.count, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


class RecentLatencies:
    """The latencies of the last ``window_s`` seconds (at most ``size`` of them), for the
    dashboard's p50/p95/p99 "now"; Prometheus keeps the full histograms."""

    def __init__(self, window_s: float = 60.0, size: int = 4096) -> None:
        self.window_s = window_s
        self._values: deque[tuple[float, float]] = deque(maxlen=size)  # (when, seconds)

    def observe(self, seconds: float, now: float | None = None) -> None:
        self._values.append((time.monotonic() if now is None else now, seconds))

    def summary(self, now: float | None = None) -> dict[str, float | int]:
        since = (time.monotonic() if now is None else now) - self.window_s
        while self._values and self._values[0][0] < since:
            self._values.popleft()
        values = sorted(seconds for _, seconds in self._values)
        if not values:
            return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3)

        return {"count": len(values), "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


# Saga step and end-to-end latency buckets: a step is milliseconds, a retried payment or an
# inventory timeout is seconds.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Counters shared by every role of one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.produced = Counter("kafka_saga_produced", "Records produced", ["topic"], registry=r)
        self.consumed = Counter("kafka_saga_consumed", "Records consumed", ["role", "topic"], registry=r)
        self.dlq = Counter("kafka_saga_dlq", "Records sent to the DLQ", ["role", "reason"], registry=r)
        self.dlq_read = Counter("kafka_saga_dlq_read", "DLQ records read", ["reason"], registry=r)
        self.dlq_garbage = Counter(
            "kafka_saga_dlq_garbage", "Records on the DLQ without DLQ headers (never re-published)",
            registry=r)
        self.skipped = Counter("kafka_saga_skipped", "Unreadable records skipped (dead-lettered by "
                               "another group)", ["role", "reason"], registry=r)
        self.broker_resets = Counter("kafka_saga_broker_resets",
                                     "Times the broker was found without our topics (data lost)",
                                     registry=r)
        self.places_lost = Counter("kafka_saga_places_lost", "Partitions read again from their start "
                                   "because their end fell below the reader's position (log reset)",
                                   ["role"], registry=r)
        self.errors = Counter("kafka_saga_handler_errors", "Handler errors", ["role"], registry=r)
        self.restarts = Counter("kafka_saga_role_restarts", "Role restarts", ["role"], registry=r)
        self.stalled = Gauge("kafka_saga_stalled", "1 while the watchdog reports the role stalled "
                             "(no progress while records wait)", ["role"], registry=r)
        self.stalls = Counter("kafka_saga_stalls", "Stalls detected by the watchdog", ["role"],
                              registry=r)
        # the breaker's state is the producer's (bus.producer.Producer); exported here only
        self.breaker = Gauge(
            "kafka_saga_breaker_state", "Producer circuit breaker (0 closed, 1 half-open, 2 open)",
            registry=r,
        )
        self.breaker_openings = Counter("kafka_saga_breaker_openings",
                                        "Times the producer circuit breaker opened", registry=r)
        self.lag = Gauge("kafka_saga_consumer_lag", "Records waiting", ["role", "topic", "partition"], registry=r)
        self.step_timeouts = Counter("kafka_saga_step_timeouts", "Saga step attempts whose "
                                     "participant did not answer by the deadline", ["step"],
                                     registry=r)
        self.in_flight = Gauge("kafka_saga_in_flight", "Work started from records and not finished "
                               "(sagas in progress)", ["role"], registry=r)
        self.in_flight_limit = Gauge("kafka_saga_in_flight_limit", "Bound of kafka_saga_in_flight "
                                     "(KAFKA_SAGA_MAX_IN_FLIGHT)", ["role"], registry=r)
        self.paused = Gauge("kafka_saga_partition_paused", "1 while a partition is paused because "
                            "its work in flight is at its bound", ["role", "topic", "partition"],
                            registry=r)
        self.handle_seconds = Histogram(
            "kafka_saga_batch_seconds", "Time to handle and commit one batch", ["role"], registry=r
        )
        self.restore_seconds = Histogram(
            "kafka_saga_store_restore_seconds", "Time to restore a consumer's state stores from "
            "their changelog on an assignment", ["role"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.restore_records = Counter("kafka_saga_store_restore_records", "Changelog records read "
                                       "by restores (from the restore points)", ["role"], registry=r)
        self.restored_entries = Counter("kafka_saga_store_restored_entries", "Live state store "
                                        "entries loaded from changelogs", ["role"], registry=r)
        self.fenced = Counter("kafka_saga_fenced", "Side effects refused because the process may "
                              "have lost its partitions (paused past its session)", ["role"],
                              registry=r)
        self.processing_mode = Gauge(
            "kafka_saga_processing", "1 for the processing guarantee in force (exactly_once or "
            "at_least_once)", ["mode"], registry=r)
        self.transactions = Counter("kafka_saga_transactions", "Checkpoint transactions by "
                                    "outcome (committed, aborted, fenced)", ["role", "outcome"],
                                    registry=r)
        self.sagas = Counter("kafka_saga_sagas", "Sagas by outcome: started (OrderCreate read), "
                             "approved, rejected, failed", ["outcome"], registry=r)
        self.step_seconds = Histogram(
            "kafka_saga_step_seconds", "Time a saga spent in a step: from the transition before "
            "it to its event (outcome: approved, rejected, failed, compensated)",
            ["step", "outcome"], registry=r, buckets=STEP_BUCKETS)
        self.saga_seconds = Histogram(
            "kafka_saga_saga_seconds", "Submission (the OrderCreate record's timestamp) to the "
            "saga's terminal event", ["outcome"], registry=r, buckets=STEP_BUCKETS)
        self.recent_steps: dict[str, RecentLatencies] = {}  # step -> the last minute, any outcome
        self.recent_sagas = RecentLatencies()
        self.processing = ""
        self.latency = LatencyWindow()
        self.role_state: dict[str, str] = {}
        self.started = time.time()

    def export_breaker(self, state: str) -> None:
        """Export a change of the producer's breaker: the state gauge, and a count of openings."""
        self.breaker.set(BREAKER_STATES.get(state, 0))
        if state == "open":
            self.breaker_openings.inc()

    def export_processing(self, mode: str) -> None:
        """The processing guarantee chosen at start (one gauge at 1, the other at 0)."""
        self.processing = mode
        for name in ("exactly_once", "at_least_once"):
            self.processing_mode.labels(mode=name).set(1 if name == mode else 0)

    def _exported_breaker(self) -> str:
        """The breaker state as last exported (closed before any change)."""
        value = next((sample.value for metric in self.breaker.collect()
                      for sample in metric.samples), 0)
        return next((name for name, code in BREAKER_STATES.items() if code == value), "closed")

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def _total(counter: Counter, by: str | None = None) -> Any:
        total = 0.0
        split: dict[str, float] = {}
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
                    if by:
                        key = sample.labels.get(by, "")
                        split[key] = split.get(key, 0) + sample.value
        if by:
            return int(total), {k: int(v) for k, v in sorted(split.items())}
        return int(total)

    def _stalled_roles(self) -> list[str]:
        return sorted(sample.labels["role"] for metric in self.stalled.collect()
                      for sample in metric.samples if sample.value)

    def _backpressure(self) -> dict[str, dict[str, Any]]:
        """Per flow-controlled role: work in flight, its bound, the partitions paused now."""
        out: dict[str, dict[str, Any]] = {}
        for gauge, key in ((self.in_flight_limit, "limit"), (self.in_flight, "in_flight")):
            for metric in gauge.collect():
                for sample in metric.samples:
                    entry = out.setdefault(sample.labels["role"], {"in_flight": 0, "paused": []})
                    entry[key] = int(sample.value)
        for metric in self.paused.collect():
            for sample in metric.samples:
                if sample.value:
                    out.setdefault(sample.labels["role"], {"in_flight": 0, "paused": []})[
                        "paused"].append(f"{sample.labels['topic']}:{sample.labels['partition']}")
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON view: produced, consumed, dlq, breaker_open, latency and per-role detail."""
        consumed, consumed_by_role = self._total(self.consumed, "role")
        dlq, dlq_by_reason = self._total(self.dlq, "reason")
        produced, produced_by_topic = self._total(self.produced, "topic")
        breaker = self._exported_breaker()
        lag: dict[str, int] = {}
        for metric in self.lag.collect():
            for sample in metric.samples:
                role = sample.labels["role"]
                lag[role] = lag.get(role, 0) + int(sample.value)
        return {
            "backpressure": self._backpressure(),
            "produced": produced,
            "produced_by_topic": produced_by_topic,
            "consumed": consumed,
            "consumed_by_role": consumed_by_role,
            "dlq": dlq,
            "dlq_by_reason": dlq_by_reason,
            "dlq_read": self._total(self.dlq_read),
            "dlq_garbage": self._total(self.dlq_garbage),
            "skipped": self._total(self.skipped),
            "broker_resets": self._total(self.broker_resets),
            "places_lost": self._total(self.places_lost),
            "handler_errors": self._total(self.errors),
            "step_timeouts": self._total(self.step_timeouts, "step")[1],
            "role_restarts": self._total(self.restarts),
            "breaker_open": breaker == "open",
            "breaker_state": breaker,
            "breaker_opened": self._total(self.breaker_openings),
            "latency": self.latency.summary(),
            "lag": lag,
            "stalled": self._stalled_roles(),
            "stalls": self._total(self.stalls),
            "roles": dict(self.role_state),
            "processing": self.processing,
            "transactions": self._total(self.transactions, "outcome")[1],
            "sagas": self._total(self.sagas, "outcome")[1],
            "steps": {step: window.summary() for step, window in self.recent_steps.items()},
            "saga_latency": self.recent_sagas.summary(),
            "uptime_s": round(time.time() - self.started, 3),
        }
