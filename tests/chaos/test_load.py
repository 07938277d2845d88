"""Load and shutdown: SIGTERM under load, three processes with one killed and one stopped, a soak."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from kafka_saga.bus.ports import free_port
from kafka_saga.replay import compare, fetch_live, replay_events

from ..integration.test_crash import mixed_orders
from ..integration.test_saga import submit
from ..support.platform import eventually
from ..support.processes import json_log_lines, memory_kb
from .test_broker_faults import all_demo_orders_ended, check_exactly_once, sagas, spawn

pytestmark = pytest.mark.chaos
SOAK_S = float(os.environ.get("CHAOS_SOAK_S", "45"))
ALL_BUT_DEMO = "orchestrator,inventory,tracker,aggregator,dlq,query"


async def test_sigterm_under_load_exits_zero_quickly_and_loses_nothing(settings, bus, tmp_path):
    first_log, second_log = str(tmp_path / "first.log"), str(tmp_path / "second.log")
    proc = spawn(settings, ALL_BUT_DEMO + ",demo", first_log, DEMO_RATE="300", DEMO_COUNT="3000",
                 QUERY_API_PORT="0")
    try:
        await eventually(lambda: _demo_sent(first_log, 600), timeout=90, interval=0.3,
                         what="load under way")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        stop_s = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0 and stop_s < 10, (code, stop_s)
    sent = max(e.get("sent", 0) for e in json_log_lines(first_log) if "sent" in e)
    # restart without the generator: what was submitted before the stop must all finish
    proc = spawn(settings, ALL_BUT_DEMO, second_log, QUERY_API_PORT="0")
    try:
        found = await eventually(lambda: all_demo_orders_ended(bus, sent), timeout=180,
                                 interval=1.0, what="every order submitted before SIGTERM ended")
        count, redelivered, redone = check_exactly_once(found)
        rehandled = sum(1 for e in json_log_lines(second_log) if e.get("event") == "duplicate command ignored")
        print(f"\nSIGTERM under load: stopped in {stop_s:.2f}s (exit {code}), {count} orders "
              f"submitted before it, lost 0, commands handled again after restart {rehandled}, "
              f"redelivered records {redelivered}, redone steps {redone}")
        assert redone == 0
    finally:
        proc.kill()
        proc.wait()


async def test_three_processes_one_killed_one_stopped_finish_every_saga(settings, bus, tmp_path):
    ports = [free_port() for _ in range(3)]
    procs = [spawn(settings, ALL_BUT_DEMO, str(tmp_path / f"p{i}.log"), QUERY_API_PORT=str(port))
             for i, port in enumerate(ports)]
    orders = mixed_orders(900, seed=4)
    try:
        await asyncio.sleep(8)  # all three in every group
        await submit(bus, *orders[:450])
        await asyncio.sleep(2)
        procs[0].send_signal(signal.SIGKILL)
        await submit(bus, *orders[450:])
        procs[1].send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(procs[1].wait, 15) == 0

        async def done():
            found = await sagas(bus)
            return found if len(found) >= len(orders) and all(
                any(e.type.value in ("OrderRejected", "OrderFailed") or
                    (e.type.value == "OrderApproved" and e.step.value == "Finalize") for e in ev)
                for ev in found.values()) else None

        found = await eventually(done, timeout=240, interval=1.0, what="the survivor finishes")
        count, redelivered, redone = check_exactly_once(found)
        assert count == len(orders)
        url = f"http://127.0.0.1:{ports[2]}"

        async def converged():
            replayed = {u: a.to_dict() for u, a in (await replay_events(bus, timeout=60)).fold.aggregates().items()}
            return not compare(replayed, await fetch_live(url))

        await eventually(converged, timeout=120, interval=2.0, what="survivor's aggregates == replay")
        assert procs[2].poll() is None
        print(f"\nthree processes: {count} orders, 1 SIGKILL + 1 SIGTERM, lost 0, "
              f"redelivered records {redelivered}, redone steps {redone}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def test_soak_memory_flat_lag_bounded_no_errors(settings, bus, tmp_path):
    log_path = str(tmp_path / "soak.log")
    port = free_port()
    proc = spawn(settings, ALL_BUT_DEMO + ",demo", log_path, DEMO_RATE="100", DEMO_COUNT="0",
                 QUERY_API_PORT=str(port), LOG_LEVEL="warning")
    url = f"http://127.0.0.1:{port}"
    samples: list[tuple[float, int, int]] = []
    reads = 0
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal reads
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                for user in ("client01", "client02", "client03", "nobody"):
                    try:
                        async with session.get(f"{url}/aggregates/{user}") as resp:
                            assert resp.status in (200, 404)
                            reads += 1
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.2)

    try:
        await eventually(lambda: _up(url), timeout=60, what="query API up")
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        started = time.monotonic()
        while time.monotonic() - started < SOAK_S:
            await asyncio.sleep(SOAK_S / 12)
            metrics = await _get(f"{url}/metrics")
            samples.append((time.monotonic() - started, memory_kb(proc.pid), sum(metrics["lag"].values())))
        stop.set()
        await asyncio.gather(*readers)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
    warm = [s[1] for s in samples[len(samples) // 3:]]
    growth_mb = (warm[-1] - warm[0]) / 1024
    max_lag = max(s[2] for s in samples)
    errors = [e for e in json_log_lines(log_path) if e.get("level") in ("error", "critical")]
    print(f"\nsoak: {SOAK_S:.0f}s at 100 orders/s with {reads} concurrent reads, RSS "
          f"{warm[0] / 1024:.0f} -> {warm[-1] / 1024:.0f} MB after warm-up, max lag {max_lag}, "
          f"error logs {len(errors)}")
    assert code == 0
    assert growth_mb < 40, samples
    assert max_lag < 2000, samples
    assert not errors, errors[:5]


async def _get(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def _up(url: str) -> bool:
    try:
        await _get(url + "/healthz")
        return True
    except aiohttp.ClientError:
        return False


def _demo_sent(log_path: str, count: int) -> bool:
    return any(e.get("event") == "demo orders submitted" and e.get("sent", 0) >= count
               for e in json_log_lines(log_path))
