"""`kafka-saga broker --engine kafka` as a user meets it: a real launcher process, real JVMs.

Ready line, pid files, records through the cluster, SIGTERM and SIGKILL of the launcher, a
durable restart, a node killed and started again with SIGHUP, and one-line errors for what
a user gets wrong. Skipped (failed with ``KAFKA_SAGA_REQUIRE_KAFKA=1``) without Java or jars.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient

from kafka_saga.bus.ports import free_port_block as port_block

from ..support.launcher import CLI, LEFT_DOWN, NO_TRACE, READY_S, cli_env, java_and_jars
from ..support.platform import eventually
from ..support.processes import json_log_lines, pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

@pytest.fixture(scope="module")
def kafka() -> tuple[str, Path]:
    return java_and_jars()


class Launcher:
    """One `kafka-saga broker --engine kafka` process, its output in ``log``."""

    def __init__(self, data_dir: Path, nodes: int, port: int, log: Path) -> None:
        self.data_dir, self.nodes, self.port, self.log = data_dir, nodes, port, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [CLI, "broker", "--engine", "kafka", "--nodes", str(nodes), "--port", str(port),
                 "--data-dir", str(data_dir)],
                env=cli_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + i}" for i in range(self.nodes))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> list[dict]:
        return [line for line in json_log_lines(str(self.log)) if line.get("event") == name]

    async def ready(self) -> dict:
        def check() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"launcher exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            found = self.events("Apache Kafka ready")
            return found[0] if found else None

        return await eventually(check, timeout=READY_S, interval=0.25, what="Apache Kafka ready")

    def pid(self, node_id: int) -> int:
        return int((self.data_dir / f"node-{node_id}.pid").read_text())

    def pids(self) -> list[int]:
        return [self.pid(i) for i in range(1, self.nodes + 1)]

    async def wait(self, timeout: float = 90.0) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def kill(self) -> None:
        """Teardown: the launcher, then any JVM of ours a pid file still names."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for pid_file in self.data_dir.glob("node-*.pid"):
            try:
                pid = int(pid_file.read_text())
                if str(self.data_dir).encode() in cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass


@pytest.fixture
def launch(kafka, tmp_path):
    started: list[Launcher] = []

    def start(data_dir: Path, nodes: int = 1, port: int | None = None) -> Launcher:
        port = port or port_block(2 * nodes)
        launcher = Launcher(data_dir, nodes, port, tmp_path / f"launcher-{len(started)}.log")
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.kill()


async def all_gone(pids: list[int], timeout: float = 10.0) -> None:
    await eventually(lambda: not any(pid_alive(p) for p in pids), timeout=timeout,
                     what=f"every JVM of {pids} gone")


async def create_topic(bootstrap: str, name: str, partitions: int, replicas: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, replicas)], timeout_ms=60000)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=30000)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int, expected: int,
                   timeout: float = 60.0) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, once ``expected`` of them were read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, request_timeout_ms=30000)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        found: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                found += [(r.key, r.value) for r in batch]
        return found
    finally:
        await consumer.stop()


async def group_resumes_at(bootstrap: str, group: str, topic: str) -> dict[TopicPartition, int]:
    """Where a new member of ``group`` starts reading ``topic``: its committed offsets, else the end.

    Not consumer.committed() on a bare client: just after a restart the coordinator answers
    OffsetFetch with a top-level COORDINATOR_LOAD_IN_PROGRESS that aiokafka 0.14 reads as
    "no committed offset"; a member that joined asks a coordinator that has loaded."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="latest")
    await consumer.start()
    try:
        await eventually(lambda: len(consumer.assignment()) == 3, timeout=60,
                         what=f"a member of {group} assigned every partition")
        return {tp: await consumer.position(tp) for tp in consumer.assignment()}
    finally:
        await consumer.stop()


async def brokers_seen_by(address: str) -> int:
    client = AIOKafkaClient(bootstrap_servers=address, request_timeout_ms=10000)
    try:
        await client.bootstrap()
        return len((await client.fetch_all_metadata()).brokers())
    finally:
        await client.close()


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- running ------------------------------------------------------------------------------

async def test_three_nodes_are_ready_serve_records_and_stop_on_sigterm(launch, tmp_path):
    data = tmp_path / "d"
    launcher = launch(data, nodes=3)
    ready = await launcher.ready()
    assert ready["bootstrap"] == launcher.bootstrap
    assert len(launcher.events("Apache Kafka ready")) == 1
    pids = launcher.pids()
    assert len(set(pids)) == 3 and all(pid_alive(p) for p in pids), pids
    assert all(b"kafka.Kafka" in cmdline(pid) for pid in pids)

    await create_topic(launcher.bootstrap, "launcher-check", partitions=3, replicas=3)
    await produce(launcher.bootstrap, "launcher-check", [(b"k", b"through three nodes")])
    assert await read_all(launcher.bootstrap, "launcher-check", 3, 1) == [(b"k", b"through three nodes")]

    launcher.proc.send_signal(signal.SIGTERM)
    assert await launcher.wait() == 0, launcher.output()[-3000:]
    await all_gone(pids)
    assert not list(data.glob("node-*.pid"))
    assert NO_TRACE[0] not in launcher.output()


async def test_sigkill_of_the_launcher_takes_every_node_down(launch, tmp_path):
    launcher = launch(tmp_path / "d", nodes=3)
    await launcher.ready()
    pids = launcher.pids()
    assert all(pid_alive(p) for p in pids)
    launcher.proc.kill()
    await launcher.wait(30)
    await all_gone(pids, timeout=10)


async def test_a_killed_node_is_left_down_until_sighup_starts_it_again(launch, tmp_path):
    launcher = launch(tmp_path / "d", nodes=3)
    await launcher.ready()
    old = launcher.pid(2)
    os.kill(old, signal.SIGKILL)
    reported = await eventually(lambda: launcher.events(LEFT_DOWN), timeout=30,
                                what="the dead node reported")
    assert [(r["node"], r["level"]) for r in reported] == [(2, "warning")]
    await asyncio.sleep(5)  # many turns of the launcher's watch loop: nothing restarts it
    assert not pid_alive(old) and not accepts(launcher.port + 1)
    assert launcher.proc.poll() is None and all(pid_alive(launcher.pid(i)) for i in (1, 3))
    assert len(launcher.events(LEFT_DOWN)) == 1

    launcher.proc.send_signal(signal.SIGHUP)
    again = await eventually(lambda: launcher.events("Kafka nodes started again"), timeout=READY_S,
                             what="node 2 started again")
    assert again[0]["nodes"] == [2]
    new = launcher.pid(2)
    assert new != old and pid_alive(new)
    assert await brokers_seen_by(f"127.0.0.1:{launcher.port + 1}") == 3
    assert launcher.proc.poll() is None

    pids = launcher.pids()
    launcher.proc.send_signal(signal.SIGTERM)
    assert await launcher.wait() == 0, launcher.output()[-3000:]
    await all_gone(pids)


async def test_a_single_node_keeps_records_and_offsets_across_a_restart(launch, tmp_path):
    data, port = tmp_path / "d", port_block(2)
    # a random id starts with "-" once in 64: the state a format that took it for an option
    # left behind (cluster.json written, no node formatted); the launcher must get past it
    cluster_id = "-" + urlsafe_b64encode(uuid.uuid4().bytes).decode()[1:22]
    data.mkdir()
    (data / "cluster.json").write_text(json.dumps({"cluster_id": cluster_id, "nodes": 1}))
    first = launch(data, nodes=1, port=port)
    assert (await first.ready())["cluster_id"] == cluster_id
    records = [(f"k{i}".encode(), f"record {i}".encode()) for i in range(60)]
    await create_topic(first.bootstrap, "durable", partitions=3, replicas=1)
    await produce(first.bootstrap, "durable", records)
    assert sorted(await read_all(first.bootstrap, "durable", 3, len(records))) == sorted(records)
    commits = {TopicPartition("durable", p): 5 + p for p in range(3)}
    consumer = AIOKafkaConsumer(bootstrap_servers=first.bootstrap, group_id="keeper",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(commits))
        await consumer.commit(commits)
    finally:
        await consumer.stop()
    pid = first.pid(1)
    first.proc.send_signal(signal.SIGTERM)
    assert await first.wait() == 0, first.output()[-3000:]
    await all_gone([pid])

    second = launch(data, nodes=1, port=port)
    again = await second.ready()
    assert again["cluster_id"] == cluster_id
    assert json.loads((data / "cluster.json").read_text())["cluster_id"] == cluster_id
    assert sorted(await read_all(second.bootstrap, "durable", 3, len(records))) == sorted(records)
    assert await group_resumes_at(second.bootstrap, "keeper", "durable") == commits
    second.proc.send_signal(signal.SIGTERM)
    assert await second.wait() == 0, second.output()[-3000:]
