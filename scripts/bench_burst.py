"""The burst scenario of scripts/bench.py: the steady maximum, N orders written at once, then
the steady maximum again.

A runtime with every role but the demo runs in a process of its own; this process writes the
orders with an independent client (kafka-python) and follows the outcomes on orders.events.
"""

from __future__ import annotations

import tempfile
from typing import Any

from tests.support.burst import session, steady


async def burst_scenario(settings: Any, orders: int, steady_orders: int = 6000,
                         kill: bool = False) -> dict[str, Any]:
    """Steady maximum, a burst of ``orders`` (with ``kill``: a SIGKILL a third of the way),
    then the steady maximum again."""
    log_dir = tempfile.mkdtemp(prefix="bench-burst-")
    async with session(settings, log_dir) as runtime:
        base = await steady(runtime.bus, runtime.watch, steady_orders, proc=runtime.proc)
        result = await runtime.burst(orders, kill_after=orders // 3 if kill else None)
        # the steady maximum again, with the runtime's state as large as at the burst's end:
        # a long run costs more per order than a fresh one, burst or not
        after = await steady(runtime.bus, runtime.watch, steady_orders, proc=runtime.proc)
        result["steady"], result["steady_after"] = base, after
        result["ratio"] = round(result["orders_per_s"] / base["orders_per_s"], 3)
        result["ratio_to_after"] = round(result["orders_per_s"] / after["orders_per_s"], 3)
        result["logs"] = log_dir
        return result
