"""The burst scenario of scripts/bench.py: the steady maximum, then N orders written at once.

A runtime with every role but the demo runs in a process of its own; this process writes the
orders with an independent client (kafka-python) and follows the outcomes on orders.events.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from kafka_saga.bus.client import Bus
from tests.support.burst import Watch, burst, dead_letters, spawn_runtime, steady, warm_up


async def burst_scenario(settings: Any, orders: int, steady_orders: int = 6000,
                         kill: bool = False) -> dict[str, Any]:
    """Steady maximum, a burst of ``orders`` (with ``kill``: a SIGKILL a third of the way),
    then the steady maximum again."""
    log_dir = tempfile.mkdtemp(prefix="bench-burst-")
    runs = iter(range(100))

    def start() -> Any:
        return spawn_runtime(settings, os.path.join(log_dir, f"runtime-{next(runs)}.log"))

    bus = Bus(settings, settings.bootstrap_servers)
    await bus.ensure_topics()
    await bus.start()
    proc = start()
    watch = Watch(bus)
    watch.start()
    try:
        await warm_up(bus, watch)
        base = await steady(bus, watch, steady_orders, proc=proc)
        result = await burst(bus, watch, proc, orders, kill_after=orders // 3 if kill else None,
                             restart=start)
        proc = result.pop("process")
        result["dlq"] = dict(await dead_letters(bus))
        # the steady maximum again, with the runtime's state as large as at the burst's end:
        # a long run costs more per order than a fresh one, burst or not
        after = await steady(bus, watch, steady_orders, proc=proc)
        result["steady"], result["steady_after"] = base, after
        result["ratio"] = round(result["orders_per_s"] / base["orders_per_s"], 3)
        result["ratio_to_after"] = round(result["orders_per_s"] / after["orders_per_s"], 3)
        result["doubled_transitions"] = watch.outcomes.doubled()
        result["logs"] = log_dir
        return result
    finally:
        await watch.close()
        await bus.stop()
        proc.terminate()
        proc.wait()
