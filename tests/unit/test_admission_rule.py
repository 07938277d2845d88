"""The admission rule of POST /orders, pure: Retry-After from the measured drain rate."""

from __future__ import annotations

from kafka_saga.api.admission import RETRY_MAX_S, RETRY_MIN_S, RETRY_UNKNOWN_S, Backlog
from kafka_saga.bus.client import Bus
from kafka_saga.config import Settings


def backlog_with(samples: list[tuple[float, int]], value: int) -> Backlog:
    backlog = Backlog(Bus(Settings(bootstrap_servers="127.0.0.1:1")), limit=100)
    for at, committed in samples:
        backlog._samples.append((at, committed))
    backlog._value, backlog._at = value, samples[-1][0]
    return backlog


def test_retry_after_follows_the_drain_rate_within_bounds(monkeypatch):
    monkeypatch.setattr("time.monotonic", lambda: 11.0)
    assert backlog_with([(10.0, 0), (11.0, 50)], 300).retry_after(300) == 4  # 200 over at 50/s
    assert backlog_with([(10.0, 0), (11.0, 100_000)], 300).retry_after(300) == RETRY_MIN_S
    assert backlog_with([(10.0, 0), (11.0, 1)], 100_000).retry_after(100_000) == RETRY_MAX_S


def test_nothing_drained_advises_the_longest_wait_and_one_sample_is_unknown(monkeypatch):
    monkeypatch.setattr("time.monotonic", lambda: 11.0)
    stuck = backlog_with([(10.0, 500), (11.0, 500)], 300)
    assert stuck.retry_after(300) == RETRY_MAX_S
    refusal = stuck.refusal()
    assert refusal is not None and refusal.status == 503
    assert refusal.headers["Retry-After"] == str(RETRY_MAX_S)
    assert backlog_with([(11.0, 500)], 300).retry_after(300) == RETRY_UNKNOWN_S
    assert backlog_with([(10.0, 0), (11.0, 50)], 100).refusal() is None  # at the limit: admitted
