"""Overload without failures: a burst of orders written at once by a client we did not write.

The runtime (every role but the demo) runs in a process of its own on the embedded broker.
Every order must reach the outcome it has at a steady pace (valid orders approved, wrong
prices rejected by the tracker even when the reject arrives during the burst), with nothing
failed or dead-lettered for a timeout, no step written twice, every partition progressing,
and the runtime's memory bounded. Sized for CI; `make bench` runs 100,000 (scenario burst).
"""

from __future__ import annotations

import os

import pytest

from ..support.burst import session

# the burst has its own deadline (a stuck drain reports how far it got), inside the test's
pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(360)]
BURST = int(os.environ.get("BURST_ORDERS", "20000"))
KILL_BURST = int(os.environ.get("BURST_KILL_ORDERS", "10000"))
RSS_LIMIT_MB = 250  # the unbounded runtime peaked at 320 MB on 20,000 orders


async def _run_burst(settings, tmp_path, orders: int, kill: bool) -> dict:
    async with session(settings, str(tmp_path)) as runtime:
        return await runtime.burst(orders, timeout=240, wrong_price_every=50,
                                   kill_after=orders // 3 if kill else None)


def _check(result: dict, orders: int) -> None:
    assert result["outcomes"] == {"approved": orders - orders // 50, "rejected": orders // 50}, result
    assert result["unexpected"] == 0, result
    assert result["dlq"] == {}, result  # nothing dead-lettered, for a timeout or anything else
    assert result["doubled"] == 0, result  # no saga step written twice
    # fairness: when a fifth of the orders had ended, every partition had made progress
    assert min(result["fairness_at_20pct"].values()) >= 0.05, result


async def test_a_burst_is_delayed_never_failed(settings, tmp_path):
    result = await _run_burst(settings, tmp_path, BURST, kill=False)
    print(f"\nburst of {BURST} orders: {result['outcomes']}, drained in {result['drain_s']} s "
          f"({result['orders_per_s']} orders/s), peak RSS {result['peak_rss_mb']} MB, "
          f"progress per partition at 20%: {result['fairness_at_20pct']}")
    _check(result, BURST)
    assert result["peak_rss_mb"] < RSS_LIMIT_MB, result


async def test_a_runtime_killed_mid_burst_loses_nothing_and_doubles_nothing(settings, tmp_path):
    result = await _run_burst(settings, tmp_path, KILL_BURST, kill=True)
    print(f"\nburst of {KILL_BURST} orders, SIGKILL after {result['killed_after']} ended: "
          f"{result['outcomes']}, drained in {result['drain_s']} s, dlq {result['dlq']}")
    assert result["killed_after"] is not None
    _check(result, KILL_BURST)
