"""A burst of orders against a runtime in another process, for the burst test and `make bench`.

An independent client (kafka-python, its own partitioner) writes orders to ``orders.commands``;
this process follows ``orders.events`` and the DLQ and reports each order's outcome, the time
to drain, the throughput and the runtime's peak RSS. ``steady`` measures the same runtime's
steady maximum first: a closed loop that keeps a fixed number of orders outstanding, so the
platform runs at its own pace without a backlog. The ratio burst / steady is the honest figure
on a shared machine (both measured in the same run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaProducer

from kafka_saga.bus.client import Bus
from kafka_saga.bus.follow import TopicFollower, read_topic
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Command
from kafka_saga.core.dead_letters import read_dead_letter
from kafka_saga.core.submission import new_order_command

from .processes import cpu_seconds, memory_kb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_BUT_DEMO = "orchestrator,inventory,tracker,aggregator,dlq,query"
ITEMS = ("espresso", "latte", "cappuccino", "americano")  # 100,000 each: plenty of stock
TERMINAL = ("OrderRejected", "OrderFailed")


def burst_orders(count: int, users: int = 100, tag: str = "b", wrong_price_every: int = 0) -> list[Command]:
    """``count`` valid orders over ``users`` users: every one is approved at any pace, except,
    with ``wrong_price_every`` N, every Nth order, whose price is wrong: the tracker has it
    rejected (``price_mismatch``), before or after its approval."""
    catalog = Catalog()
    return [new_order_command(f"{tag}user{i % users:03d}", ITEMS[i % len(ITEMS)], 1, catalog,
                              price_cents=1 if wrong_price_every and i % wrong_price_every == 0 else None)
            for i in range(count)]


def expected_outcome(command: Command) -> str:
    """The outcome rule of a burst order: a wrong price is rejected, the rest approved."""
    return "rejected" if command.snapshot.price_cents == 1 else "approved"


def write_with_foreign_client(bootstrap: str, topic: str, commands: list[Command]) -> float:
    """Write every command with kafka-python (not our producer) as fast as it goes; seconds."""
    started = time.perf_counter()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                             batch_size=256 * 1024, enable_idempotence=False)
    try:
        sent = [producer.send(topic, key=command.snapshot.order_id.encode(), value=command.encode())
                for command in commands]
        producer.flush(120)
    finally:
        producer.close(5)
    failed = [future.exception for future in sent if not future.succeeded()]
    assert not failed, f"the foreign client failed to write {len(failed)} orders: {failed[:3]}"
    return time.perf_counter() - started


@dataclass
class Outcomes:
    """What ``orders.events`` says of each order: its terminal type and when it was seen."""

    status: dict[str, str] = field(default_factory=dict)  # order_id -> approved | rejected | failed
    at: dict[str, float] = field(default_factory=dict)  # order_id -> perf_counter when terminal
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    partition: dict[str, int] = field(default_factory=dict)  # order_id -> its command partition

    def apply(self, record: Any) -> None:
        data = orjson.loads(record.value)
        kind, step, order_id = data["type"], data["step"], data["snapshot"]["order_id"]
        self.transitions[(order_id, kind, step)] += 1
        if kind == "OrderCreated" and "command_partition" in data.get("metadata", {}):
            self.partition[order_id] = int(data["metadata"]["command_partition"])
        if kind in TERMINAL or (kind == "OrderApproved" and step == "Finalize"):
            outcome = "approved" if kind == "OrderApproved" else kind[5:].lower()
            if kind in TERMINAL or order_id not in self.status:
                self.status[order_id] = outcome
            self.at.setdefault(order_id, time.perf_counter())

    def count(self, order_ids: list[str]) -> Counter[str]:
        return Counter(self.status.get(o, "pending") for o in order_ids)

    def progress_at(self, order_ids: list[str], fraction: float) -> dict[int, float]:
        """Fairness: when ``fraction`` of the orders had ended, the share of each command
        partition's orders that had ended (a starved partition shows 0)."""
        times = sorted(self.at[o] for o in order_ids)
        cut = times[max(0, int(len(times) * fraction) - 1)]
        mine: dict[int, list[str]] = {}
        for order_id in order_ids:
            mine.setdefault(self.partition.get(order_id, -1), []).append(order_id)
        return {p: round(sum(1 for o in ids if self.at[o] <= cut) / len(ids), 3)
                for p, ids in sorted(mine.items())}

    def rate_by(self, order_ids: list[str], started: float, step_s: float = 10.0) -> list[int]:
        """Orders ended per second in each ``step_s`` window from ``started``: the drain's shape."""
        counts: Counter[int] = Counter(int((self.at[o] - started) // step_s) for o in order_ids)
        return [round(counts.get(i, 0) / step_s) for i in range(max(counts) + 1)] if counts else []

    def describe_pending(self, order_ids: list[str], most: int = 5) -> str:
        """What ``orders.events`` holds of the first orders without an end (for a failure)."""
        pending = [o for o in order_ids if o not in self.at][:most]
        steps = {o: [f"{kind}:{step}" for (order, kind, step) in self.transitions if order == o]
                 for o in pending}
        return f"pending (first {most}, with the events seen): {steps}"

    def doubled(self) -> int:
        """Transitions written more than once for the same order (a step run twice)."""
        return sum(1 for n in self.transitions.values() if n > 1)


class Watch:
    """Follows ``orders.events`` in this process while the runtime works in another."""

    def __init__(self, bus: Bus) -> None:
        self.outcomes = Outcomes()
        self.stop = asyncio.Event()
        self.follower = TopicFollower(bus, bus.topics.events, self.outcomes.apply, "burst watch")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.follower.run(self.stop))

    async def wait_for(self, order_ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(o in self.outcomes.at for o in order_ids):
            if time.monotonic() > deadline:
                done = sum(1 for o in order_ids if o in self.outcomes.at)
                raise TimeoutError(f"only {done}/{len(order_ids)} orders ended within {timeout}s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stop.set()
        if self.task:
            await self.task


def spawn_runtime(settings: Any, log_path: str, roles: str = ALL_BUT_DEMO,
                  program: tuple[str, ...] = ("-m", "kafka_saga"), **env: str) -> subprocess.Popen[bytes]:
    """``kafka-saga run`` in a process of its own, logging JSON to ``log_path`` (``program``:
    what Python runs, e.g. a script that sets something up first)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PAYMENT_", "INVENTORY_"))
            or k == "KAFKA_SAGA_PROCESSING"}  # the guarantee the suite is run at
    full = {**base, "PYTHONPATH": ROOT, "LOG_FORMAT": "json", "LOG_LEVEL": "warning",
            "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix, "QUERY_API_PORT": "0",
            "KAFKA_SAGA_PARTITIONS": str(settings.partitions), "PAYMENT_FAILURE_RATE": "0", **env}
    return subprocess.Popen(
        [sys.executable, *program, "run", "--roles", roles,
         "--bootstrap-servers", settings.bootstrap_servers],
        env=full, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115


async def dead_letters(bus: Bus) -> Counter[str]:
    """The DLQ's records by reason."""
    reasons: Counter[str] = Counter()
    await read_topic(bus, bus.topics.dlq, lambda r: reasons.update([read_dead_letter(r).reason]), 60)
    return reasons


async def submit(bus: Bus, commands: list[Command]) -> None:
    """Our own producer, for the warm-up and the steady loop."""
    for command in commands:
        await bus.producer.send(bus.topics.commands, command.encode(), command.key)
    await bus.producer.flush()


async def warm_up(bus: Bus, watch: Watch, timeout: float = 90) -> None:
    """One order through every step: the runtime's groups have joined."""
    order = burst_orders(1, tag="w")
    await submit(bus, order)
    await watch.wait_for([order[0].snapshot.order_id], timeout)


async def steady(bus: Bus, watch: Watch, orders: int, outstanding: int = 400,
                 proc: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """The steady maximum: a closed loop keeping ``outstanding`` orders in the platform
    (with ``proc``, the runtime's CPU per order too)."""
    batch = burst_orders(orders, tag="s")
    cpu = cpu_seconds(proc.pid) if proc is not None else 0.0
    started = time.perf_counter()
    sent = 0
    while sent < len(batch):
        done = sum(1 for c in batch[:sent] if c.snapshot.order_id in watch.outcomes.at)
        room = outstanding - (sent - done)
        if room > 0:
            await submit(bus, batch[sent:sent + room])
            sent = min(len(batch), sent + room)
        await asyncio.sleep(0.01)
    ids = [c.snapshot.order_id for c in batch]
    await watch.wait_for(ids, timeout=600)
    elapsed = max(watch.outcomes.at[o] for o in ids) - started
    result = {"orders": orders, "seconds": round(elapsed, 2), "orders_per_s": round(orders / elapsed, 1),
              "outcomes": dict(watch.outcomes.count(ids))}
    if proc is not None:
        result["cpu_ms_per_order"] = round((cpu_seconds(proc.pid) - cpu) * 1000 / orders, 3)
    return result


async def burst(bus: Bus, watch: Watch, proc: subprocess.Popen[bytes], orders: int,
                timeout: float = 900, kill_after: int | None = None,
                restart: Any = None, wrong_price_every: int = 0) -> dict[str, Any]:
    """``orders`` written at once by a foreign client; with ``kill_after``, the runtime is
    SIGKILLed once that many orders have ended and ``restart()`` starts its replacement."""
    batch = burst_orders(orders, wrong_price_every=wrong_price_every)
    ids = [c.snapshot.order_id for c in batch]
    cpu_used, cpu_mark = 0.0, cpu_seconds(proc.pid)
    started = time.perf_counter()
    write_s = await asyncio.to_thread(write_with_foreign_client, bus.bootstrap, bus.topics.commands, batch)
    peak_kb = 0
    killed_at = None
    deadline = time.monotonic() + timeout
    while True:
        done = sum(1 for o in ids if o in watch.outcomes.at)
        if proc.poll() is None:
            peak_kb = max(peak_kb, memory_kb(proc.pid, "VmHWM"))
        if kill_after is not None and killed_at is None and done >= kill_after:
            cpu_used += cpu_seconds(proc.pid) - cpu_mark  # what the killed runtime used
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = done
            proc = restart()
            cpu_mark = cpu_seconds(proc.pid)
        if done == len(ids):
            cpu_used += cpu_seconds(proc.pid) - cpu_mark
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done}/{len(ids)} burst orders ended within {timeout}s; "
                               f"{watch.outcomes.describe_pending(ids)}")
        await asyncio.sleep(0.25)
    elapsed = max(watch.outcomes.at[o] for o in ids) - started
    # a late reject (the tracker's, for a wrong price) may still compensate an approved order
    for _ in range(120):  # up to 30 s
        if all(watch.outcomes.status[c.snapshot.order_id] == expected_outcome(c) for c in batch):
            break
        await asyncio.sleep(0.25)
    return {"orders": orders, "write_s": round(write_s, 2), "drain_s": round(elapsed, 2),
            "orders_per_s": round(orders / elapsed, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "outcomes": dict(watch.outcomes.count(ids)), "killed_after": killed_at,
            "unexpected": sum(1 for c in batch
                              if watch.outcomes.status[c.snapshot.order_id] != expected_outcome(c)),
            "fairness_at_20pct": watch.outcomes.progress_at(ids, 0.2),
            "orders_per_s_by_10s": watch.outcomes.rate_by(ids, started),
            "cpu_ms_per_order": round(cpu_used * 1000 / orders, 3),
            "process": proc}


@dataclass
class Session:
    """A runtime in its own process, the bus and the watch of this process around it."""

    settings: Any
    log_dir: str
    bus: Bus
    watch: Watch
    proc: subprocess.Popen[bytes] | None = None
    started: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        """(Re)start the runtime, logging to a new file of ``log_dir``."""
        self.started += 1
        self.proc = spawn_runtime(self.settings, os.path.join(self.log_dir, f"runtime-{self.started}.log"))
        return self.proc

    async def burst(self, orders: int, **options: Any) -> dict[str, Any]:
        """:func:`burst` against this runtime (restarted here after a kill); adds the DLQ and
        the doubled transitions."""
        assert self.proc is not None
        result = await burst(self.bus, self.watch, self.proc, orders, restart=self.start, **options)
        self.proc = result.pop("process")
        result["dlq"] = dict(await dead_letters(self.bus))
        result["doubled"] = self.watch.outcomes.doubled()
        return result


@contextlib.asynccontextmanager
async def session(settings: Any, log_dir: str) -> AsyncIterator[Session]:
    """Topics, a started bus, a runtime that finished one order, and the watch; all stopped after."""
    bus = Bus(settings)
    await bus.ensure_topics()
    await bus.start()
    current = Session(settings, log_dir, bus, Watch(bus))
    current.start()
    current.watch.start()
    try:
        await warm_up(bus, current.watch)
        yield current
    finally:
        await current.watch.close()
        await bus.stop()
        if current.proc is not None:
            current.proc.kill()
            current.proc.wait()
