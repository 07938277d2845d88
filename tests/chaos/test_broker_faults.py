"""Broker faults between the runtime and the broker: a 15 s cut mid-run, a cut at start-up,
a slow link. A dedicated broker advertises a TCP proxy's port, so every client goes through it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace

import pytest
import pytest_asyncio

from kafka_saga.bus.client import Bus
from kafka_saga.bus.embedded import broker_binary, wait_until_ready
from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.ports import free_port
from kafka_saga.core.contracts import Event
from kafka_saga.replay import compare, fetch_live, replay_events

from ..support.platform import eventually
from ..support.processes import json_log_lines
from ..support.proxy import TcpProxy

pytestmark = pytest.mark.chaos
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORDERS = int(os.environ.get("CHAOS_ORDERS", "2000"))
CUT_S = float(os.environ.get("CHAOS_CUT_S", "15"))


@pytest_asyncio.fixture
async def proxied(settings):
    real, via = free_port(), free_port()
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{real}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{via}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = TcpProxy(via, real)
    await proxy.start()
    await wait_until_ready(f"127.0.0.1:{via}")
    local = replace(settings, bootstrap_servers=f"127.0.0.1:{via}")
    bus = Bus(local)
    await bus.ensure_topics()
    try:
        yield local, proxy, bus
    finally:
        await proxy.cut()
        process.kill()
        process.wait()


def spawn(settings, roles: str, log_path: str, **env: str) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    full = {**base, "PYTHONPATH": ROOT, "LOG_FORMAT": "json", "LOG_LEVEL": "info",
            "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix,
            "KAFKA_SAGA_PARTITIONS": str(settings.partitions), "PAYMENT_FAILURE_RATE": "0",
            "KAFKA_SAGA_REQUEST_TIMEOUT_MS": "3000", "KAFKA_SAGA_BREAKER_FAIL_MAX": "3",
            "KAFKA_SAGA_BREAKER_RESET_S": "2", "KAFKA_SAGA_SEND_RETRY_MAX_S": "120", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "kafka_saga", "run", "--roles", roles,
         "--bootstrap-servers", settings.bootstrap_servers],
        env=full, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115


async def sagas(bus) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = defaultdict(list)

    def apply(record) -> None:
        event = Event.decode(record.value)
        found[event.saga_id].append(event)

    await read_topic(bus, bus.topics.events, apply, 60)
    return found


def final_state(events: list[Event]) -> str | None:
    state = None
    for e in events:
        if e.type.value == "OrderApproved" and e.step.value == "Finalize":
            state = state or "approved"
        elif e.type.value in ("OrderRejected", "OrderFailed"):
            state = e.type.value
    return state


def check_exactly_once(found: dict[str, list[Event]]) -> tuple[int, int, int]:
    """Every saga ended in one terminal state; return (sagas, redelivered records, redone steps).

    A redelivered record (same event_id: a producer retry, at-least-once) and a redone step
    (a new event for a fact already recorded: a step re-run after a rebalance) are both
    absorbed by the idempotent readers; neither may change a saga's outcome.
    """
    redelivered = redone = 0
    for saga_id, events in found.items():
        assert final_state(events), (saga_id, [(e.type.value, e.step.value) for e in events])
        unique = {e.event_id: e for e in events}
        redelivered += len(events) - len(unique)
        facts = [(e.type.value, e.step.value) for e in unique.values()]
        redone += len(facts) - len(set(facts))
        ends = {f for f in facts if f[0] in ("OrderRejected", "OrderFailed")}
        assert len(ends) <= 1, (saga_id, facts)
    return len(found), redelivered, redone


async def all_demo_orders_ended(bus, count: int) -> dict | None:
    found = await sagas(bus)
    sequences = {e.snapshot.sequence for events in found.values() for e in events
                 if e.snapshot.attributes.get("source") == "demo"}
    ended = sum(1 for events in found.values() if final_state(events))
    return found if len(sequences) >= count and ended == len(found) else None


async def test_a_15s_cut_mid_run_opens_the_breaker_and_loses_nothing(proxied, tmp_path):
    settings, proxy, bus = proxied
    port = free_port()
    log_path = str(tmp_path / "run.log")
    proc = spawn(settings, "orchestrator,inventory,tracker,aggregator,dlq,query,demo", log_path,
                 QUERY_API_PORT=str(port), DEMO_RATE="150", DEMO_COUNT=str(ORDERS))
    started = time.monotonic()
    try:
        await eventually(lambda: _demo_sent(log_path, 300), timeout=90, interval=0.5,
                         what="demo well under way")
        await proxy.cut()
        cut_at = time.monotonic()
        await asyncio.sleep(CUT_S)
        await proxy.restore()
        healed_at = time.monotonic()
        assert proc.poll() is None, "the runtime died during the cut"
        found = await eventually(lambda: all_demo_orders_ended(bus, ORDERS), timeout=300,
                                 interval=2.0, what="every demo order ended")
        recovery_s = time.monotonic() - healed_at
        count, redelivered, redone = check_exactly_once(found)
        metrics = await _json(f"http://127.0.0.1:{port}/metrics")
        assert metrics["breaker_opened"] >= 1
        events = [e.get("event", "") for e in json_log_lines(log_path)]
        assert "circuit breaker open" in events and "circuit breaker closed" in events

        async def converged():
            replayed = {u: a.to_dict() for u, a in (await replay_events(bus, timeout=120)).fold.aggregates().items()}
            return not compare(replayed, await fetch_live(f"http://127.0.0.1:{port}"))

        await eventually(converged, timeout=120, interval=2.0, what="aggregates == replay")
        restarts = metrics["role_restarts"]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        print(f"\nbroker cut: {ORDERS} orders ({count} sagas), cut {CUT_S:.0f}s after "
              f"{cut_at - started:.1f}s, lost 0, redelivered records {redelivered}, redone steps {redone}, dlq "
              f"{metrics['dlq']}, role restarts {restarts}, breaker opened "
              f"{metrics['breaker_opened']}x, all ended {recovery_s:.1f}s after the heal")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_cut_at_start_up_waits_and_retries(proxied, tmp_path):
    settings, proxy, bus = proxied
    await proxy.cut()
    log_path = str(tmp_path / "run.log")
    proc = spawn(settings, "orchestrator,inventory,aggregator,demo", log_path, DEMO_RATE="100",
                 DEMO_COUNT="200")
    try:
        await asyncio.sleep(8)
        assert proc.poll() is None, "the runtime exited instead of waiting for the broker"
        waiting = [e for e in json_log_lines(log_path) if e.get("event") == "broker not reachable yet, retrying"]
        assert waiting and "Traceback" not in open(log_path).read()
        await proxy.restore()
        found = await eventually(lambda: all_demo_orders_ended(bus, 200), timeout=120,
                                 interval=1.0, what="orders after a late broker")
        check_exactly_once(found)
    finally:
        proc.kill()
        proc.wait()


async def test_a_slow_link_only_slows_things_down(proxied, tmp_path):
    settings, proxy, bus = proxied
    proxy.delay_s = 0.02
    proc = spawn(settings, "orchestrator,inventory,aggregator,demo", str(tmp_path / "run.log"),
                 DEMO_RATE="100", DEMO_COUNT="300")
    try:
        found = await eventually(lambda: all_demo_orders_ended(bus, 300), timeout=180,
                                 interval=1.0, what="orders over a slow link")
        check_exactly_once(found)
    finally:
        proc.kill()
        proc.wait()


def _demo_sent(log_path: str, count: int) -> bool:
    return any(e.get("event") == "demo orders submitted" and e.get("sent", 0) >= count
               for e in json_log_lines(log_path))


async def _json(url: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()
