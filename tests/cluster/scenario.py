"""One fault scenario on the three-node cluster: a runtime, a steady load, a watch, checks.

:class:`Scenario` has its own topic prefix and query port, the runtime (started again after a
SIGKILL), the load and a watch on ``orders.events``. The test injects its fault while the
load runs; :meth:`Scenario.verdict` then reads ``orders.events`` again from the beginning and
checks every order's trail, the live aggregates and ``kafka-saga replay --compare``.
:func:`report` prints the one-line summary and appends it to ``artifacts/cluster-report.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka_saga.bus.client import Bus
from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.kafka_engine import KafkaCluster
from kafka_saga.bus.ports import free_port
from kafka_saga.config import Settings
from kafka_saga.replay import fetch_live

from ..support.burst import ROOT, Watch, burst_orders, dead_letters, submit
from ..support.cluster import (
    PORT_CONFLICTS,
    REPORT,
    Load,
    Runtime,
    coordinators,
    report_conflicts,
    unknown_somewhere,
)
from ..support.platform import eventually

# every order of the load is valid and the gateway never fails: each one is approved
TRAIL = (("OrderCreated", "Validation"), ("OrderApproved", "Validation"),
         ("OrderApproved", "Payment"), ("OrderApproved", "Inventory"), ("OrderApproved", "Finalize"))
# (type, step, event id, saga id, metadata, record timestamp in epoch seconds)
Trail = tuple[str, str, str, str, dict[str, str], float]


def is_terminal(kind: str, step: str) -> bool:
    return kind in ("OrderRejected", "OrderFailed") or (kind, step) == ("OrderApproved", "Finalize")


# --- one scenario ---------------------------------------------------------------------------

class Scenario:
    """A runtime, a load, a watch: see the module doc. Use ``async with``."""

    def __init__(self, name: str, cluster: KafkaCluster, tmp: Path, orders: int = 3000,
                 rate: float = 125.0) -> None:
        self.name, self.cluster, self.tmp = name, cluster, tmp
        self.settings = replace(Settings.from_env({}), bootstrap_servers=cluster.bootstrap,
                                topic_prefix=f"c{uuid.uuid4().hex[:10]}.", partitions=6,
                                query_port=free_port(), payment_failure_rate=0.0)
        self.bus = Bus(self.settings)
        self.runtime = Runtime(self.settings, tmp)
        self.commands = burst_orders(orders, tag=name[:1])
        self.ids = [c.snapshot.order_id for c in self.commands]
        self.load = Load(cluster.bootstrap, self.bus.topics.commands, self.commands, rate)
        self.faults: list[tuple[str, float]] = []  # (what, time.time())
        self.notes: dict[str, Any] = {}
        self.watch: Watch | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.started = self.wall = 0.0
        self.conflicts = len(PORT_CONFLICTS)  # port conflicts before this scenario

    async def __aenter__(self) -> Scenario:
        self.started, self.wall = time.perf_counter(), time.time()
        try:
            await self.bus.ensure_topics()
            topics = list(self.bus.topics.all())
            await eventually(lambda: self._all_know(topics), timeout=60, interval=0.2,
                             what="every node knows the new topics")
            await self.bus.start()
            self.runtime.start()
            self.watch = Watch(self.bus)
            self.watch.start()
            self._tasks.append(asyncio.create_task(self.runtime.poll(self._stop)))
            warm = burst_orders(1, tag="w")
            await submit(self.bus, warm)
            await self.until_done(1, timeout=180, ids=[warm[0].snapshot.order_id])
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _all_know(self, topics: list[str]) -> bool:
        self.notes["unknown_topics_at_start"] = await unknown_somewhere(
            self.cluster, topics, self.settings.partitions)
        return not self.notes["unknown_topics_at_start"]

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self.load.cancelled = True  # (it has finished unless the test failed)
        if self.watch is not None:
            await self.watch.close()
        self.notes["runtime_exit"] = await self.runtime.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.bus.stop()

    # --- during the run ---
    def fault(self, what: str) -> None:
        self.faults.append((what, time.time()))

    async def note_node(self, node: int) -> None:
        """Before a node fails: the platform's consumer groups it coordinates."""
        found = await coordinators(self.cluster, self.settings)
        self.notes.setdefault("groups_of_failed_nodes", {})[node] = sorted(
            group for group, coordinator in found.items() if coordinator == node)

    def start_load(self) -> asyncio.Task[float]:
        task = asyncio.create_task(asyncio.to_thread(self.load.run))
        self._tasks.append(task)
        return task

    async def until_sent(self, count: int) -> None:
        await eventually(lambda: self.load.sent >= count, timeout=300, interval=0.05,
                         what=f"{count} orders submitted")

    def done(self, ids: list[str] | None = None) -> int:
        assert self.watch is not None
        at = self.watch.outcomes.at
        return sum(1 for o in ids or self.ids if o in at)

    async def until_done(self, count: int, timeout: float = 300.0, ids: list[str] | None = None) -> None:
        """Until ``count`` orders (of ``ids``, default the load's) ended; fails at once if the
        runtime exits or the watch stops."""
        deadline = time.monotonic() + timeout
        while self.done(ids) < count:
            task = self.watch.task if self.watch else None
            if task is not None and task.done():
                raise AssertionError(f"the watch on orders.events stopped: {task.exception()!r}")
            proc = self.runtime.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the runtime exited with code {proc.returncode} "
                                     f"({self.done(ids)}/{len(ids or self.ids)} orders ended); log {self.runtime.logs[-1]}, "
                                     f"warnings {self.runtime.warnings()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.done(ids)}/{len(ids or self.ids)} orders ended within "
                                     f"{timeout:.0f}s; warnings {self.runtime.warnings()}")
            await asyncio.sleep(0.25)

    async def finish(self, load: asyncio.Task[float], timeout: float = 300.0) -> None:
        """The load written, then every order ended (or the reason it did not)."""
        self.notes["load_s"] = round(await load, 1)
        await self.until_done(len(self.ids), timeout)
        self.notes["drained_s"] = round(time.perf_counter() - self.started, 1)

    # --- afterwards ---
    def recovery(self, trails: dict[str, list[Trail]]) -> dict[str, Any]:
        """How the order flow came through each fault, from the records' own timestamps (when
        the orchestrator wrote each order's end), each fault until the next one:

        * ``stall_s``: the longest stretch in which no order ended, and ``resumed_s``: the
          seconds from the fault until orders ended again after that stretch;
        * ``new_orders_s``: the seconds until every command partition that got orders after
          the fault had one of those ended (None: no order written after it);
        * ``stall_by_partition``: the first fault's longest stretch per command partition
          (equal everywhere: the whole runtime waited, not only the failed node's partitions).
        """
        ended: dict[str, float] = {}
        partition: dict[str, int] = {}
        for order_id in self.ids:
            for kind, step, _e, _s, meta, stamp in trails.get(order_id, []):
                if kind == "OrderCreated" and "command_partition" in meta:
                    partition.setdefault(order_id, int(meta["command_partition"]))
                if is_terminal(kind, step):
                    ended.setdefault(order_id, stamp)

        def stall(since: float, until: float, ends: Any) -> tuple[float, float]:
            marks = [since, *sorted(t for t in ends if since <= t < until)]
            pairs = list(zip(marks, marks[1:], strict=False)) or [(since, since)]
            start, end = max(pairs, key=lambda pair: pair[1] - pair[0])
            return round(end - start, 1), round(end - since, 1)

        out: dict[str, Any] = {"stall_s": [], "resumed_s": [], "new_orders_s": [], "stall_by_partition": {}}
        times = [at for _what, at in self.faults] + [math.inf]
        for at, until in zip(times, times[1:], strict=False):
            longest, resumed = stall(at, until, ended.values())
            out["stall_s"].append(longest)
            out["resumed_s"].append(resumed)
            first: dict[int, float] = {}
            for order_id, end in ended.items():
                if self.load.sent_at.get(order_id, 0.0) > at:
                    part = partition.get(order_id, -1)
                    first[part] = min(first.get(part, math.inf), end)
            out["new_orders_s"].append(round(max(first.values()) - at, 1) if first else None)
        if self.faults:
            by_part: dict[int, list[float]] = defaultdict(list)
            for order_id, end in ended.items():
                by_part[partition.get(order_id, -1)].append(end)
            out["stall_by_partition"] = {p: stall(times[0], times[1], ends)[0]
                                         for p, ends in sorted(by_part.items())}
        return out

    async def trails(self) -> dict[str, list[Trail]]:
        """Every order's events as read from ``orders.events`` now."""
        found: dict[str, list[Trail]] = defaultdict(list)

        def apply(record: Any) -> None:
            data = json.loads(record.value)
            found[data["snapshot"]["order_id"]].append(
                (data["type"], data["step"], data["event_id"], data["saga_id"],
                 data.get("metadata") or {}, record.timestamp / 1000))

        await read_topic(self.bus, self.bus.topics.events, apply, 120)
        return found

    async def live_orders(self) -> dict[str, int]:
        return {user: int(a["orders"]) for user, a in (await fetch_live(self.runtime.url)).items()}

    def replay(self) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        env.update(PYTHONPATH=ROOT, LOG_LEVEL="warning", KAFKA_BOOTSTRAP_SERVERS=self.cluster.bootstrap,
                   KAFKA_SAGA_TOPIC_PREFIX=self.settings.topic_prefix)
        return subprocess.run(
            [sys.executable, "-m", "kafka_saga", "replay", "--compare", self.runtime.url,
             "--output", str(self.tmp / "replay.json"), "--timeout", "120"],
            env=env, capture_output=True, text=True, timeout=240)

    async def verdict(self) -> dict[str, Any]:
        """Lost and doubled orders, records on ``orders.events``, aggregates, replay, metrics."""
        trails = await self.trails()
        lost, double, redelivered, redone, outcome = [], [], 0, 0, Counter[str]()
        for order_id in self.ids:
            events = trails.get(order_id, [])
            facts = {(e[0], e[1]) for e in events}
            ends = [e for e in events if is_terminal(e[0], e[1])]
            if not ends or not set(TRAIL) <= facts:
                lost.append(order_id)
            # two terminal states (two distinct terminal events) or two sagas; the same terminal
            # event delivered twice (at-least-once) is counted in redelivered_records instead
            if len({e[2] for e in ends}) > 1 or len({e[3] for e in events}) > 1:
                double.append(order_id)
            unique = {e[2]: e for e in events}
            redelivered += len(events) - len(unique)
            redone += len(unique) - len({(e[0], e[1]) for e in unique.values()})
            outcome[ends[-1][0] if ends else "none"] += 1
        expected: Counter[str] = Counter(c.snapshot.user for c in self.commands)
        expected["wuser000"] += 1  # the warm-up order

        async def counted_once() -> dict[str, int] | None:
            live = await self.live_orders()
            return live if live == dict(expected) else None

        try:
            live = await eventually(counted_once, timeout=90, interval=1.0, what="aggregates")
        except AssertionError:
            live = await self.live_orders()
        replay = await asyncio.to_thread(self.replay)
        for _ in range(3):  # the live read model may still be a step behind
            if replay.returncode == 0:
                break
            await asyncio.sleep(3)
            replay = await asyncio.to_thread(self.replay)
        final = await self.runtime.snapshot()
        if final is not None:
            self.runtime.metrics[len(self.runtime.logs)] = final
        return {
            "orders": len(self.ids), "lost": len(lost), "double": len(double),
            "lost_ids": lost[:5], "double_ids": double[:5], "outcomes": dict(outcome),
            "lost_trails": {o: [f"{e[0]}:{e[1]}" for e in trails.get(o, [])] for o in lost[:3]},
            "lost_by_partition": dict(Counter(next((e[4]["command_partition"] for e in trails.get(o, [])
                                                    if "command_partition" in e[4]), "none")
                                              for o in lost)),
            "events": sum(len(trails.get(o, [])) for o in self.ids), "expected_events": len(TRAIL) * len(self.ids),
            "redelivered_records": redelivered, "redone_steps": redone,
            "processing": (final or {}).get("processing") or self.bus.processing,  # the runtime's
            "aggregate_orders": sum(live.values()) - 1, "aggregates_match": live == dict(expected),
            "replay_exit": replay.returncode, "replay_output": replay.stdout.strip().splitlines()[-3:],
            "dlq": dict(await dead_letters(self.bus)),
            "breaker_openings": self.runtime.total("breaker_opened"),
            "role_restarts": self.runtime.total("role_restarts"),
            "runtime_starts": len(self.runtime.logs), "client_resent": self.load.resent,
            **self.recovery(trails),
        }

    def summary(self, verdict: dict[str, Any]) -> dict[str, Any]:
        report_conflicts(self.conflicts, self.name)
        return {"scenario": self.name, **verdict,
                "faults": [(what, round(at - self.wall, 1)) for what, at in self.faults],
                "seconds": round(time.perf_counter() - self.started, 1), "rate": self.load.rate,
                "warnings": self.runtime.warnings(), **self.notes,
                "port_conflicts": len(PORT_CONFLICTS) - self.conflicts,
                "logs": self.runtime.logs, "topic_prefix": self.settings.topic_prefix}


def report(line: dict[str, Any]) -> None:
    """The one-line summary on stdout (``-s``), and the JSON line in the report file."""
    print(f"\n{line['scenario']}: {line['orders']} orders, lost {line['lost']}, double {line['double']}, "
          f"orders ended again {line['resumed_s']} s after the fault(s) (stalled {line['stall_s']} s), "
          f"breaker openings {line['breaker_openings']}, role restarts {line['role_restarts']}, "
          f"{line['processing']}, records seen twice {line['redelivered_records']}, "
          f"replay exit {line['replay_exit']}, {line['seconds']} s in all")
    REPORT.parent.mkdir(exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **line}) + "\n")


def conclude(run: Scenario, verdict: dict[str, Any]) -> None:
    """Summarise a finished scenario, report it, and check it lost and doubled nothing."""
    line = run.summary(verdict)
    report(line)
    check(line)


def check(line: dict[str, Any]) -> None:
    assert line["lost"] == 0, line
    assert line["double"] == 0, line
    assert line["redone_steps"] == 0, line  # no saga step (payment included) run twice
    if line["processing"] == "exactly_once":  # read_committed: no record of orders.events twice
        assert line["redelivered_records"] == 0, line
    assert line["events"] >= line["expected_events"], line
    assert line["aggregates_match"], line
    assert line["replay_exit"] == 0, line
