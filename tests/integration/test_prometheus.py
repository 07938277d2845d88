"""A real Prometheus scrapes a running platform with the project's scrape config and rules,
and its HTTP API answers with the values the platform reports (deploy/prometheus)."""

from __future__ import annotations

import math

import pytest

from tests.support.prometheus import Prometheus, binary

from ..support.platform import eventually
from .test_saga import order, submit, wait_terminal

pytestmark = pytest.mark.slow


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative ``buckets`` (upper bound -> count)."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    rank = q * total
    below, lower = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return bounds[-2]
            return lower + (bound - lower) * (rank - below) / (count - below)
        below, lower = count, bound
    raise AssertionError("no bucket reached the rank")


async def test_prometheus_scrapes_the_platform_and_reports_its_values(platform, tmp_path):
    binary("prometheus")
    runtime = await platform.start("orchestrator", "inventory", "query")
    orders = [order(user=f"prom{i % 3}") for i in range(12)]
    orders += [order(user="prom9", payment_errors="1"), order(user="prom9", payment="decline")]
    await submit(runtime.bus, *orders)
    await wait_terminal(runtime.bus, *orders)
    metrics = runtime.bus.metrics
    assert metrics.snapshot()["sagas"]["approved"] == 13

    target = platform.url.removeprefix("http://")
    prometheus = Prometheus(tmp_path, [target])
    try:
        await prometheus.ready()
        approved = 'sum(kafka_saga_sagas_total{outcome="approved"})'
        await eventually(lambda: _equals(prometheus, approved, 13.0), timeout=60, interval=0.5,
                         what="Prometheus has scraped the saga counter")
        assert await prometheus.value('up{job="kafka-saga"}') == 1.0
        assert await prometheus.value('sum(kafka_saga_sagas_total{outcome="rejected"})') == 1.0
        # a step-latency quantile, as Prometheus computes it and from the platform's own buckets
        buckets: dict[float, float] = {}
        for family in metrics.step_seconds.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels["step"] == "Payment":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        for q in (0.5, 0.99):
            answered = await prometheus.value(_payment_quantile(q))
            assert answered == pytest.approx(histogram_quantile(q, buckets), rel=1e-9), q
        # the rules are loaded, evaluated, and none fires on a healthy platform
        rules = [r for g in (await prometheus.api("rules"))["groups"] for r in g["rules"]]
        assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), rules
        firing = [a for a in (await prometheus.api("alerts"))["alerts"] if a["state"] == "firing"]
        assert firing == []
        print(f"\nprometheus: {len(orders)} orders, approved 13 and rejected 1 as scraped; "
              f"Payment p50 {await prometheus.value(_payment_quantile(0.5))}s p99 {await prometheus.value(_payment_quantile(0.99))}s")
    finally:
        prometheus.stop()


def _payment_quantile(q: float) -> str:
    return f'histogram_quantile({q}, sum by (le) (kafka_saga_step_seconds_bucket{{step="Payment"}}))'


async def _equals(prometheus: Prometheus, query: str, expected: float) -> bool:
    return await prometheus.value(query) == expected
