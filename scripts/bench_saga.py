"""Saga-level benchmark scenarios (used by scripts/bench.py): throughput, latency, query API,
replay, saga-state recovery and memory."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kafka_saga.bus.client import Bus
from kafka_saga.bus.follow import TopicFollower
from kafka_saga.bus.ports import free_port
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.submission import new_order_command
from kafka_saga.replay import replay_events
from kafka_saga.runtime.platform import Platform
from tests.support.processes import cpu_seconds, memory_kb

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_S = 1.0  # the runtimes' commit interval at at-least-once
ALL_ROLES = ["orchestrator", "inventory", "tracker", "aggregator", "dlq", "query"]
CATALOG = Catalog()


class TerminalWatch:
    """Follows orders.events and notes when each order first reaches a terminal state."""

    def __init__(self, bus: Bus) -> None:
        self.terminal_at: dict[str, float] = {}
        self.stop = asyncio.Event()
        self.follower = TopicFollower(bus, bus.topics.events, self.apply, "bench watch")
        self.task: asyncio.Task[None] | None = None

    def apply(self, record: Any) -> None:
        data = orjson.loads(record.value)
        kind = data["type"]
        if kind in ("OrderRejected", "OrderFailed") or (kind == "OrderApproved" and data["step"] == "Finalize"):
            self.terminal_at.setdefault(data["snapshot"]["order_id"], time.perf_counter())

    def start(self) -> None:
        self.task = asyncio.create_task(self.follower.run(self.stop))

    async def wait_for(self, order_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(o in self.terminal_at for o in order_ids):
            if time.monotonic() > deadline:
                done = sum(1 for o in order_ids if o in self.terminal_at)
                raise TimeoutError(f"only {done}/{len(order_ids)} orders ended within {timeout}s")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.stop.set()
        if self.task:
            await self.task


async def watched_bus(settings: Any) -> tuple[Bus, TerminalWatch]:
    """A started bus on ``settings``' topics (created if missing), and a watch of its events."""
    bus = Bus(settings)
    await bus.ensure_topics()
    await bus.start()
    watch = TerminalWatch(bus)
    watch.start()
    return bus, watch


def commands(count: int) -> list[Any]:
    return [new_order_command(f"client{i % 100:02d}", ("espresso", "latte", "mocha")[i % 3], 1, CATALOG)
            for i in range(count)]


async def start_platform(settings: Any, roles: list[str]) -> tuple[Platform, asyncio.Task[int]]:
    platform = Platform(settings, roles)
    task = asyncio.create_task(platform.run())
    while platform.supervisor is None:
        await asyncio.sleep(0.05)
    await asyncio.sleep(4.5)  # group joins on the embedded broker take ~3 s
    return platform, task


async def stop_platform(platform: Platform, task: asyncio.Task[int]) -> None:
    platform.request_stop()
    await task


def spawn_runtime(settings: Any, roles: list[str], program: tuple[str, ...] = ("-m", "kafka_saga"),
                  **extra: str) -> subprocess.Popen[bytes]:
    """``kafka-saga run`` in a process of its own (the tree of KAFKA_SAGA_BENCH_RUNTIME_ROOT
    if set, to measure a baseline with the same scenario; ``program``: what Python runs)."""
    root = os.environ.get("KAFKA_SAGA_BENCH_RUNTIME_ROOT", str(ROOT))
    env = {**os.environ, "PYTHONPATH": root, "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix,
           "KAFKA_SAGA_PARTITIONS": str(settings.partitions), "PAYMENT_FAILURE_RATE": "0",
           "LOG_LEVEL": "warning", "QUERY_API_PORT": "0", **extra}
    log_dir = os.environ.get("KAFKA_SAGA_BENCH_LOG_DIR")  # keep the runtimes' logs there
    out: Any = subprocess.DEVNULL
    if log_dir:
        env["LOG_LEVEL"], env["LOG_FORMAT"] = "info", "json"
        out = open(os.path.join(log_dir, f"runtime-{time.time_ns()}.log"), "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, *program, "run", "--roles", ",".join(roles),
                             "--bootstrap-servers", settings.bootstrap_servers], env=env,
                            stdout=out, stderr=subprocess.STDOUT, cwd=root)


def profile(pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """With KAFKA_SAGA_BENCH_PROFILE=DIR: py-spy samples ``pid`` (not pausing it) into
    DIR/name-<time>.txt, collapsed stacks, until :func:`stop_profile`."""
    where = os.environ.get("KAFKA_SAGA_BENCH_PROFILE")
    if not where:
        return None
    os.makedirs(where, exist_ok=True)
    out = os.path.join(where, f"{name}-{time.time_ns()}.txt")
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                             "--pid", str(pid), "--nonblocking", "--format", "raw", "--rate", "500",
                             "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profiler.wait(30)


async def runtime_metrics(ports: list[int]) -> dict[str, Any]:
    """The runtimes' /metrics JSON (their query role's port), summed over the processes."""
    total: dict[str, Any] = {"produced": 0, "consumed": 0, "produced_by_topic": {}, "step_timeouts": {}}
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                snap = await resp.json()
            total["produced"] += snap["produced"]
            total["consumed"] += snap["consumed"]
            for name in ("produced_by_topic", "step_timeouts"):
                for key, value in snap[name].items():
                    total[name][key] = total[name].get(key, 0) + value
    return total


async def saga_throughput(settings: Any, orders: int, processes: int = 0,
                          program: tuple[str, ...] = ("-m", "kafka_saga"),
                          env: dict[str, str] | None = None) -> dict[str, Any]:
    """Orders end to end through ``processes`` runtime processes (default one), each running
    every role; the orders are submitted, and their terminal events watched, from this
    process. Orders/s from the first submission to the last terminal event; then (one
    runtime) the latency submission -> terminal at half and at the full measured rate."""
    count = max(1, processes)
    ports = [free_port() for _ in range(count)]
    procs = [spawn_runtime(settings, ALL_ROLES, program, QUERY_API_PORT=str(port), **(env or {}))
             for port in ports]
    bus, watch = await watched_bus(settings)
    try:
        await _through(bus, watch, commands(20 * count), 180)  # every group has joined
        watch.terminal_at.clear()
        before = await runtime_metrics(ports)
        cpu = [cpu_seconds(p.pid) for p in procs]
        batch = commands(orders)
        profilers = [profile(p.pid, f"saga-{i}") for i, p in enumerate(procs)]
        started = time.perf_counter()
        for command in batch:
            await bus.producer.send(bus.topics.commands, command.encode(), command.key)
        await bus.producer.flush()
        await watch.wait_for([c.snapshot.order_id for c in batch], timeout=600)
        elapsed = max(watch.terminal_at.values()) - started
        for profiler in profilers:
            stop_profile(profiler)
        cpu_s = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, cpu, strict=True))
        # records count as produced once a flush saw them acknowledged: the next checkpoint
        await asyncio.sleep(2 * CHECKPOINT_S)
        after = await runtime_metrics(ports)
        by_topic = {t.removeprefix(settings.topic_prefix): round(
            (n - before["produced_by_topic"].get(t, 0)) / orders, 2)
            for t, n in after["produced_by_topic"].items()}
        result: dict[str, Any] = {
            "orders": orders, "processes": count, "seconds": elapsed, "orders_per_s": orders / elapsed,
            "layout": f"{count} runtime process(es), every role; submitter and watcher in the bench process",
            "cpu_ms_per_order": cpu_s * 1000 / orders,
            "produced_per_order": (after["produced"] - before["produced"]) / orders,
            "consumed_per_order": (after["consumed"] - before["consumed"]) / orders,
            "produced_per_order_by_topic": {t: n for t, n in sorted(by_topic.items()) if n}}
        if count == 1:
            result["latency"] = await saga_latency(bus, watch, result["orders_per_s"] / 2)
            result["latency_full"] = await saga_latency(bus, watch, result["orders_per_s"])
        result["step_timeouts"] = (await runtime_metrics(ports))["step_timeouts"]
        return result
    finally:
        await watch.close()
        await bus.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


async def saga_latency(bus: Bus, watch: TerminalWatch, rate: float, seconds: float = 6.0) -> dict[str, Any]:
    """Submission -> terminal event at a fixed rate: every 10 ms the orders due are handed to
    the producer (no flush in between: the client's own batching, as any client's), each
    timed from that moment. Reports the rate achieved beside the one asked for."""
    batch = commands(max(1, int(rate * seconds)))
    submitted: dict[str, float] = {}
    first = time.perf_counter()
    sent = 0
    while sent < len(batch):
        now = time.perf_counter()
        due = min(len(batch), int((now - first) * rate) + 1)
        for command in batch[sent:due]:
            await bus.producer.send(bus.topics.commands, command.encode(), command.key)
            submitted[command.snapshot.order_id] = now
        sent = max(sent, due)
        await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - now)))
    achieved = len(batch) / max(1e-9, time.perf_counter() - first)
    await bus.producer.flush()
    await watch.wait_for(list(submitted), timeout=120)
    values = sorted((watch.terminal_at[o] - t) * 1000 for o, t in submitted.items())

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))], 2)

    return {"rate_per_s": round(rate, 1), "achieved_per_s": round(achieved, 1), "orders": len(values),
            "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


APPROVED_TRAIL = ((EventType.ORDER_CREATED, Step.VALIDATION), (EventType.ORDER_APPROVED, Step.VALIDATION),
                  (EventType.ORDER_APPROVED, Step.PAYMENT), (EventType.ORDER_APPROVED, Step.INVENTORY),
                  (EventType.ORDER_APPROVED, Step.FINALIZE))


async def produce_finished_sagas(settings: Any, sagas: int) -> Bus:
    """Write the events of ``sagas`` approved sagas straight to orders.events (bare aiokafka)."""
    bus = Bus(settings)
    await bus.ensure_topics()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=10)
    await producer.start()
    for i in range(sagas):
        snap = Snapshot(new_id(), f"client{i % 200:03d}", "latte", 1, price_cents=400)
        saga = new_id()
        for kind, step in APPROVED_TRAIL:
            event = Event.new(kind, snap, step, saga)
            await producer.send(bus.topics.events, event.encode(), key=event.key)
    await producer.flush()
    await producer.stop()
    return bus


async def replay(settings: Any, orders: int) -> dict[str, Any]:
    """Replay of orders.events next to raw aiokafka consumption of the same topic."""
    bus = await produce_finished_sagas(settings, orders)
    count = orders * len(APPROVED_TRAIL)
    ends = await bus.end_offsets(bus.topics.events)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                max_poll_records=5000)
    await consumer.start()
    consumer.assign(list(ends))
    await consumer.seek_to_beginning(*ends)
    started = time.perf_counter()
    seen = 0
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500)
        seen += sum(len(r) for r in batch.values())
    raw_s = time.perf_counter() - started
    await consumer.stop()
    started = time.perf_counter()
    single = await replay_events(bus, timeout=600, workers=1)
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    result = await replay_events(bus, timeout=600)  # worker processes, one per core
    replay_s = time.perf_counter() - started
    assert result.events == single.events == count
    assert result.fold.aggregates() == single.fold.aggregates()
    return {"events": count, "replay_per_s": count / replay_s, "raw_consume_per_s": count / raw_s,
            "ratio": raw_s / replay_s, "one_process_per_s": count / single_s,
            "one_process_ratio": raw_s / single_s, "workers": os.cpu_count()}


async def recovery(settings: Any, history: int, chunk: int = 5000) -> dict[str, Any]:
    """Recovery after a crash: ``history`` orders through a runtime process (every role),
    SIGKILL, restart; seconds from the restart until a new order reaches a terminal state.
    The runtime uses static membership (KAFKA_SAGA_INSTANCE_ID), as a production deployment
    with stable process ids would; its peak RSS over the history is reported too."""
    settings = replace(settings, topic_prefix=f"rec{new_id()[:8]}.")
    roles = os.environ.get("KAFKA_SAGA_BENCH_ROLES", ",".join(ALL_ROLES)).split(",")
    env = {"KAFKA_SAGA_INSTANCE_ID": "bench-recovery"}
    proc = spawn_runtime(settings, roles, **env)
    bus, watch = await watched_bus(settings)
    try:
        await _through(bus, watch, commands(1), 120)  # the groups have joined
        started = time.perf_counter()
        for first in range(0, history, chunk):
            await _through(bus, watch, commands(min(chunk, history - first)), 600)
            watch.terminal_at.clear()
        history_s = time.perf_counter() - started
        peak = memory_kb(proc.pid, "VmHWM")
        proc.kill()
        proc.wait()
        restarted = time.perf_counter()
        proc = spawn_runtime(settings, roles, **env)
        order = commands(1)
        await _through(bus, watch, order, 300)
        first_order_s = watch.terminal_at[order[0].snapshot.order_id] - restarted
    finally:
        await watch.close()
        await bus.stop()
        proc.kill()
        proc.wait()
    return {"history": history, "history_orders_per_s": history / history_s,
            "first_order_after_restart_s": first_order_s, "peak_rss_mb": peak / 1024}


async def _through(bus: Bus, watch: TerminalWatch, batch: list[Any], timeout: float) -> None:
    for command in batch:
        await bus.producer.send(bus.topics.commands, command.encode(), command.key)
    await bus.producer.flush()
    await watch.wait_for([c.snapshot.order_id for c in batch], timeout=timeout)


async def memory(settings: Any, orders: int, chunk: int = 5000) -> dict[str, Any]:
    """Peak RSS of a runtime process (every role) while ``orders`` orders go through it."""
    proc = spawn_runtime(settings, ALL_ROLES)
    await asyncio.sleep(6)
    bus, watch = await watched_bus(settings)
    peak = 0
    started = time.perf_counter()
    for first in range(0, orders, chunk):
        batch = commands(min(chunk, orders - first))
        for command in batch:
            await bus.producer.send(bus.topics.commands, command.encode(), command.key)
        await bus.producer.flush()
        await watch.wait_for([c.snapshot.order_id for c in batch], timeout=600)
        peak = max(peak, memory_kb(proc.pid, "VmHWM"))  # the kernel's peak, between samples too
        watch.terminal_at.clear()
    elapsed = time.perf_counter() - started
    await watch.close()
    await bus.stop()
    proc.terminate()
    proc.wait()
    return {"orders": orders, "peak_rss_mb": peak / 1024, "seconds": elapsed}


async def processing(settings: Any, orders: int, repeat: int) -> dict[str, Any]:
    """Saga throughput and latency at ``at_least_once`` and at ``exactly_once`` on the same
    broker, alternating runs; skipped (with the reason) where the broker has no transactions."""
    async with Bus(replace(settings, processing="auto")) as probe:
        if not probe.exactly_once:
            return {"skipped": "the broker has no transactions (Tansu): at-least-once only"}
    runs: dict[str, list[dict[str, Any]]] = {"at_least_once": [], "exactly_once": []}
    for _ in range(repeat):
        for mode in runs:
            fresh = replace(settings, processing=mode, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
            runs[mode].append(await saga_throughput(fresh, orders))
    medians = {mode: statistics.median(r["orders_per_s"] for r in rs) for mode, rs in runs.items()}
    latency = {mode: "{}/{}".format(rs[0]["latency"]["p50_ms"], rs[0]["latency"]["p99_ms"])
               for mode, rs in runs.items()}
    return {**{mode: {"median": medians[mode], "runs": rs} for mode, rs in runs.items()},
            "ratio": medians["exactly_once"] / medians["at_least_once"], "latency": latency}


# the runtime with an SDK tracer provider set up first (tests/support/traced_runtime.py)
TRACED = ("-m", "tests.support.traced_runtime")
TRACING_MODES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "off": (("-m", "kafka_saga"), {}),  # the default: the context travels, no spans
    "noop_exporter": (TRACED, {"KAFKA_SAGA_TRACE_EXPORTER": "noop"}),  # spans made, then dropped
    "memory_exporter": (TRACED, {"KAFKA_SAGA_TRACE_EXPORTER": "memory"}),  # spans kept in memory
    "sampled_10pct": (TRACED, {"KAFKA_SAGA_TRACE_EXPORTER": "noop",  # what production would run
                               "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                               "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
}


async def tracing(settings: Any, orders: int, repeat: int) -> dict[str, Any]:
    """Saga throughput with tracing off, on with a no-op exporter and on with the SDK's
    in-memory exporter, on the same broker, alternating runs."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in TRACING_MODES}
    for _ in range(repeat):
        for mode, (program, env) in TRACING_MODES.items():
            fresh = replace(settings, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
            runs[mode].append(await saga_throughput(fresh, orders, program=program, env=env))
    medians = {mode: statistics.median(r["orders_per_s"] for r in rs) for mode, rs in runs.items()}
    cpu = {mode: statistics.median(r["cpu_ms_per_order"] for r in rs) for mode, rs in runs.items()}
    return {**{mode: {"median": medians[mode], "cpu_ms_per_order": cpu[mode], "runs": rs}
               for mode, rs in runs.items()},
            "ratio_noop": medians["noop_exporter"] / medians["off"],
            "ratio_memory": medians["memory_exporter"] / medians["off"],
            "ratio_sampled": medians["sampled_10pct"] / medians["off"]}
