"""Per-step latency: the clock's rules and the last-minute window (pure, no broker)."""

from __future__ import annotations

from kafka_saga.core.contracts import EventType, Step
from kafka_saga.core.saga import Saga
from kafka_saga.observation.metrics import Metrics, RecentLatencies
from kafka_saga.roles.saga_clock import SagaClock
from tests.support.burst import burst_orders


def order():
    return burst_orders(1)[0]


def counts(metrics: Metrics) -> dict[str, float]:
    return {s.labels["step"] + ":" + s.labels["outcome"]: s.value
            for m in metrics.step_seconds.collect() for s in m.samples if s.name.endswith("_count")}


def test_the_window_keeps_the_last_minute_only():
    window = RecentLatencies(window_s=60)
    for i in range(100):
        window.observe(i / 1000, now=1000.0 + i)  # one a second, 0..99 ms
    summary = window.summary(now=1100.0)
    assert summary["count"] == 60  # those of the last 60 s: 40..99 ms
    assert summary["p50_ms"] == 70.0 and summary["p99_ms"] == 99.0
    assert window.summary(now=2000.0) == {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}


def test_a_saga_created_here_is_timed_per_step_and_end_to_end():
    metrics = Metrics()
    clock = SagaClock(metrics)
    command = order()
    saga = Saga(command.saga_id, command.snapshot, command.command_id)
    clock.started(saga.saga_id, 3, submitted_ms=1)  # submitted long ago: a large total
    for step in (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE):
        clock.transition(saga.event(EventType.ORDER_APPROVED, step), 3)
    assert counts(metrics) == {f"{s}:approved": 1 for s in ("Validation", "Payment", "Inventory", "Finalize")}
    snapshot = metrics.snapshot()
    assert snapshot["sagas"] == {"started": 1, "approved": 1}
    assert snapshot["saga_latency"]["count"] == 1 and snapshot["saga_latency"]["p50_ms"] > 1e9


def test_a_resumed_saga_is_timed_from_its_resumption_and_has_no_total():
    metrics = Metrics()
    clock = SagaClock(metrics)
    command = order()
    saga = Saga(command.saga_id, command.snapshot, command.command_id)
    clock.transition(saga.event(EventType.ORDER_APPROVED, Step.VALIDATION), 0)  # never seen: not timed
    clock.resumed(saga.saga_id, 0)
    clock.transition(saga.event(EventType.ORDER_COMPENSATED, Step.PAYMENT), 0)
    clock.transition(saga.event(EventType.ORDER_REJECTED, Step.INVENTORY), 0)
    assert counts(metrics) == {"Payment:compensated": 1, "Inventory:rejected": 1}
    assert metrics.snapshot()["sagas"] == {"rejected": 1}
    assert metrics.snapshot()["saga_latency"]["count"] == 0


def test_sagas_of_a_revoked_partition_are_forgotten():
    metrics = Metrics()
    clock = SagaClock(metrics)
    kept, lost = order(), order()
    clock.resumed(kept.saga_id, 1)
    clock.resumed(lost.saga_id, 2)
    clock.forget({2})
    for command in (kept, lost):
        saga = Saga(command.saga_id, command.snapshot, command.command_id)
        clock.transition(saga.event(EventType.ORDER_APPROVED, Step.PAYMENT), 1)
    assert counts(metrics) == {"Payment:approved": 1}
