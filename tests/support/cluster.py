"""A three-node Apache Kafka cluster under test, and what runs against it (``tests/cluster``).

Looking at the cluster (partition leaders, group coordinators, replicas out of sync) and
making it whole again; :class:`Load`, valid orders written at a steady rate by kafka-python
(a client we did not write), keyed by order id; :class:`Runtime`, ``kafka-saga run`` (every
role but the demo) in a process of its own, with its ``/metrics`` polled so the figures of a
runtime that gets SIGKILLed are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.cluster import ClusterMetadata
from aiokafka.protocol.metadata import MetadataRequest
from kafka import KafkaProducer

from kafka_saga.bus.client import Bus
from kafka_saga.bus.kafka_engine import KafkaCluster
from kafka_saga.bus.kafka_jars import LaunchError
from kafka_saga.config import Settings
from kafka_saga.core.contracts import Command

from .burst import spawn_runtime
from .platform import eventually
from .processes import json_log_lines

LOG_LEVEL = os.environ.get("CLUSTER_LOG_LEVEL", "warning")  # of the runtime under test
REPORT = Path(__file__).resolve().parents[2] / "artifacts" / "cluster-report.jsonl"


# --- the cluster ----------------------------------------------------------------------------

async def metadata(bootstrap: str) -> Any:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return await client.fetch_all_metadata()
    finally:
        await client.close()


async def leader_of(cluster: KafkaCluster, topic: str, partition: int) -> int:
    leader = (await metadata(cluster.bootstrap)).leader_for_partition(TopicPartition(topic, partition))
    assert leader is not None and leader >= 0, f"{topic}:{partition} has no leader"
    return int(leader)


async def coordinators(cluster: KafkaCluster, settings: Settings) -> dict[str, int]:
    """The node coordinating each consumer group of the platform (FindCoordinator)."""
    topics = Bus(settings).topics
    groups = ("orchestrator", "inventory", "tracker", "aggregator",
              "dlq", "dlq.aggregates-audit")
    client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return {group: int(await client.coordinator_lookup(CoordinationType.GROUP, topics.group(group)))
                for group in groups}
    finally:
        await client.close()


async def unknown_somewhere(cluster: KafkaCluster, topics: list[str], partitions: int) -> list[str]:
    """``topic@node`` for each node whose metadata does not yet show every partition of a topic
    with a leader. Each node learns of a new topic on its own: ``Bus.ensure_topics`` asks
    one, and a reader asking another a moment later may be told the topic does not exist."""
    client = AIOKafkaClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=5000)
    missing = []
    try:
        await client.bootstrap()
        for node in cluster.nodes:
            seen = ClusterMetadata()
            seen.update_metadata(await client.send(node.node_id, MetadataRequest(topics, False)))
            missing += [f"{topic}@{node.node_id}" for topic in topics
                        if len(seen.available_partitions_for_topic(topic) or ()) < partitions]
    finally:
        await client.close()
    return missing


async def out_of_sync(cluster: KafkaCluster) -> list[str]:
    """Partitions (of every topic, internal ones too) without a leader or with a replica
    out of the ISR, as the metadata says now."""
    meta = await metadata(cluster.bootstrap)
    return sorted(f"{topic}:{p}" for topic in meta.topics(exclude_internal_topics=False)
                  for p, part in meta._partitions[topic].items()  # noqa: SLF001 - ISR is kept there only
                  if part.leader < 0 or len(part.isr) < len(part.replicas))


async def wait_in_sync(cluster: KafkaCluster, timeout: float = 180.0) -> float:
    """Until every replica of every partition is in sync again; the seconds it took."""
    started = time.monotonic()

    async def in_sync() -> bool:
        try:
            return not await out_of_sync(cluster)
        except Exception:  # noqa: BLE001 - a node still starting: ask again
            return False

    await eventually(in_sync, timeout=timeout, interval=0.5, what="every replica in sync")
    return round(time.monotonic() - started, 1)


PORT_CONFLICTS: list[dict[str, Any]] = []  # restarts refused because a node's port was taken


def port_holders(port: int) -> list[str]:
    """The sockets (``ss -tanp``) using ``port`` on 127.0.0.1 as their local port."""
    try:
        out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"ss failed: {exc}"]
    return [" ".join(line.split()) for line in out.splitlines()
            if len(line.split()) > 3 and line.split()[3] == f"127.0.0.1:{port}"]


async def start_node(cluster: KafkaCluster, node_id: int, attempts: int = 20) -> None:
    """``cluster.start_node``, tried again while one of the node's ports is taken.

    A node keeps its ports for good, and they come from the ephemeral range (they were free
    ports when the cluster started): while the node is down any outgoing connection may be
    given one as its local port, even a client reconnecting to that very port (a TCP
    self-connect). Who held the port is kept in :data:`PORT_CONFLICTS`.
    """
    node = cluster.node(node_id)
    for attempt in range(attempts):
        try:
            await cluster.start_node(node_id)
            return
        except LaunchError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
            PORT_CONFLICTS.append({"node": node_id, "attempt": attempt + 1, "at": time.time(), "holders": {
                port: port_holders(port) for port in (node.client_port, node.controller_port)}})
            await asyncio.sleep(3)


def report_conflicts(since: int, where: str) -> None:
    """Print the port conflicts from ``PORT_CONFLICTS[since:]`` and add them to the report file."""
    for conflict in PORT_CONFLICTS[since:]:
        print(f"\nport conflict ({where}): node {conflict['node']} could not bind, attempt "
              f"{conflict['attempt']}; held by {conflict['holders']}")
        REPORT.parent.mkdir(exist_ok=True)
        with REPORT.open("a") as out:
            out.write(json.dumps({"port_conflict": where, **conflict}) + "\n")


async def restore_cluster(cluster: KafkaCluster) -> list[int]:
    """Start every node that is down, wait until all replicas are in sync; the nodes started."""
    down = [node.node_id for node in cluster.nodes if not node.alive()]
    for node_id in down:
        await start_node(cluster, node_id)
    await wait_in_sync(cluster)
    return down


# --- the load -------------------------------------------------------------------------------

class Load:
    """Orders written at ``rate`` per second (changeable while it runs) by kafka-python (not our client): keyed by order
    id, acks=all, idempotent. A send the client gives up on is sent once more after the
    flush (the orchestrator drops a repeated command), and counted."""

    def __init__(self, bootstrap: str, topic: str, commands: list[Command], rate: float) -> None:
        self.bootstrap, self.topic, self.commands, self.rate = bootstrap, topic, commands, rate
        self.sent_at: dict[str, float] = {}  # order id -> time.time() when handed to the client
        self.sent = 0
        self.resent = 0
        self.errors: list[str] = []
        self.cancelled = False  # set by a failing test: stop writing at once
        self._failed: list[Command] = []
        self._lock = threading.Lock()

    def _send(self, producer: KafkaProducer, command: Command) -> None:
        def failed(exc: BaseException) -> None:
            with self._lock:
                self._failed.append(command)
                self.errors.append(repr(exc)[:200])

        producer.send(self.topic, key=command.snapshot.order_id.encode(),
                      value=command.encode()).add_errback(failed)

    def run(self) -> float:
        """Submit every order (in a thread of its own); the seconds it took."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                 enable_idempotence=True)
        started = next_at = time.perf_counter()
        try:
            for i, command in enumerate(self.commands):
                if self.cancelled:
                    return time.perf_counter() - started
                wait = next_at - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                self._send(producer, command)
                self.sent_at[command.snapshot.order_id] = time.time()
                self.sent = i + 1
                # ``rate`` may be changed meanwhile; a late writer catches up one second at most
                next_at = max(next_at + 1 / self.rate, time.perf_counter() - 1.0)
            producer.flush(180)
            for _ in range(3):
                with self._lock:
                    again, self._failed = self._failed, []
                if not again:
                    break
                self.resent += len(again)
                for command in again:
                    self._send(producer, command)
                producer.flush(180)
        finally:
            producer.close(10)
        return time.perf_counter() - started


# --- the runtime ----------------------------------------------------------------------------

class Runtime:
    """``kafka-saga run`` (every role but the demo) in a process of its own; a new log file
    per start. Its JSON ``/metrics`` are polled every second, so the figures of a runtime
    that gets SIGKILLed are kept too."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings, self.log_dir = settings, log_dir
        self.url = f"http://127.0.0.1:{settings.query_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[str] = []
        self.metrics: dict[int, dict[str, Any]] = {}  # generation -> last snapshot seen

    def start(self) -> None:
        self.logs.append(str(self.log_dir / f"runtime-{len(self.logs) + 1}.log"))
        self.proc = spawn_runtime(self.settings, self.logs[-1], QUERY_API_PORT=str(self.settings.query_port),
                                  LOG_LEVEL=LOG_LEVEL)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code of the SIGTERM (None: killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    async def snapshot(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                    session.get(self.url + "/metrics") as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def poll(self, stop: asyncio.Event) -> None:
        """Keep the last snapshot of each runtime, and a line a second in ``metrics.jsonl``
        beside the logs (how long /metrics took to answer shows a busy event loop)."""
        keep = ("breaker_state", "role_restarts", "lag", "backpressure", "roles")
        with (self.log_dir / "metrics.jsonl").open("a") as out:
            while not stop.is_set():
                generation, asked = len(self.logs), time.time()
                found = await self.snapshot()
                if found is not None and generation == len(self.logs):
                    self.metrics[generation] = found
                out.write(json.dumps({"at": round(asked, 2), "answer_s": round(time.time() - asked, 3),
                                      "generation": generation,
                                      **{k: (found or {}).get(k) for k in keep}}) + "\n")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    def total(self, name: str) -> int:
        return sum(int(m.get(name, 0)) for m in self.metrics.values())

    def warnings(self) -> dict[str, int]:
        """Warning and error lines of every runtime log, by level and event."""
        seen: Counter[str] = Counter()
        for path in self.logs:
            with contextlib.suppress(OSError):
                for line in json_log_lines(path):
                    if line.get("level") in ("warning", "error", "critical"):
                        seen[f"{line['level']}: {line.get('event', '?')}"] += 1
        return dict(seen.most_common(12))
