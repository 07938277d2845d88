"""The watchdog under backpressure: a paused orchestrator whose sagas keep finishing is busy,
not stalled; one whose sagas stopped finishing while commands wait is stalled, and caught."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from kafka_saga.core.catalog import Catalog
from kafka_saga.core.submission import new_order_command

from ..support.burst import write_with_foreign_client
from ..support.platform import RunningPlatform, eventually

pytestmark = pytest.mark.chaos


def slow_orders(count: int, delay_ms: int) -> list:
    catalog = Catalog()
    return [new_order_command(f"wuser{i % 7}", "latte", 1, catalog,
                              attributes={"payment_delay_ms": str(delay_ms)}) for i in range(count)]


async def _sample_while(platform, done, interval: float = 0.1) -> list[dict]:
    """Snapshots of the orchestrator's health until ``done()``."""
    samples = []
    while not await done():
        samples.append(platform.platform.supervisor.health()["roles"]["orchestrator"])
        await asyncio.sleep(interval)
    return samples


async def test_a_paused_orchestrator_whose_sagas_finish_is_never_stalled(settings):
    local = replace(settings, max_in_flight=12, stall_threshold_s=2.0, watchdog_interval_s=0.25)
    running = RunningPlatform(local)
    try:
        platform = await running.start("orchestrator", "inventory")
        orders = slow_orders(480, 250)  # 12 in flight x 250 ms each: ~10 s of paused partitions
        await asyncio.to_thread(write_with_foreign_client, local.bootstrap_servers,
                                platform.bus.topics.commands, orders)

        async def drained() -> bool:
            role = platform.supervisor.current["orchestrator"]
            return role.health()["finished_sagas"] >= len(orders)

        samples = await _sample_while(running, drained)
        paused = [s for s in samples if s["backpressure"]["paused"]]
        assert len(paused) > 2.0 / 0.1, "the partitions were not paused for longer than the threshold"
        assert all(s["state"] == "running" and s["stalls"] == 0 for s in samples)
        assert max(s["backpressure"]["in_flight"] for s in samples) <= 12
        assert platform.bus.metrics.snapshot()["stalls"] == 0
    finally:
        await running.stop()


async def test_sagas_that_stop_finishing_during_a_burst_are_a_stall(settings):
    local = replace(settings, max_in_flight=6, stall_threshold_s=2.0, watchdog_interval_s=0.25,
                    payment_timeout_s=3600.0)
    running = RunningPlatform(local)
    try:
        platform = await running.start("orchestrator", "inventory")
        orders = slow_orders(200, 3_600_000)  # the payment gateway never answers
        await asyncio.to_thread(write_with_foreign_client, local.bootstrap_servers,
                                platform.bus.topics.commands, orders)

        def stalled() -> dict | None:
            health = platform.supervisor.health()["roles"]["orchestrator"]
            return health if health["stalls"] >= 1 else None

        health = await eventually(stalled, timeout=30, what="the stall reported")
        assert platform.bus.metrics.snapshot()["stalls"] >= 1
        assert any(".orders.commands:" in p for p in health["stall"]["partitions"]), health
    finally:
        await running.stop()
