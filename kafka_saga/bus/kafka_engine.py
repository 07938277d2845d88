"""Apache Kafka in KRaft mode, run straight from its jars: a durable local node or cluster.

Each node is one JVM acting as broker and controller, on 127.0.0.1: client ports
``port .. port+N-1``, controller ports ``port+N .. port+2N-1``. Everything a node keeps
lives under the data directory ``D``::

    D/cluster.json      cluster id and node count, written when D is first formatted
    D/node-<id>/        server.properties, log4j.properties and the node's log directory
    D/node-<id>.pid     the JVM's pid (a test can kill one chosen node); removed at a clean stop
    D/node-<id>.log     what the JVM prints (warnings and start/stop lines)

The jars and Java are found by :mod:`kafka_saga.bus.kafka_jars`. A JVM dies with the
process that started it, even when that one is SIGKILLed (PR_SET_PDEATHSIG, as for the
embedded Tansu broker). Misconfiguration is raised as
:class:`LaunchError`, one line meant for a human.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.coordination import FindCoordinatorRequest

from .. import logs
from ..config import Settings
from .embedded import _die_with_parent
from .kafka_jars import KAFKA_VERSION, LaunchError, java_binary, libs_dir
from .ports import port_is_free

log = logs.get("kafka")

# --- one node --------------------------------------------------------------------------------

@dataclass
class Node:
    node_id: int
    client_port: int
    controller_port: int
    home: Path  # D/node-<id>
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def pid_file(self) -> Path:
        return self.home.parent / f"node-{self.node_id}.pid"

    @property
    def log_file(self) -> Path:
        return self.home.parent / f"node-{self.node_id}.log"

    @property
    def log_dir(self) -> Path:
        return self.home / "data"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_error(self) -> str:
        """The last ERROR/FATAL line (or last line) of the node's log, for a one-line message."""
        with contextlib.suppress(OSError):
            lines = [x.strip() for x in self.log_file.read_text(errors="replace").splitlines() if x.strip()]
            errors = [x for x in lines if " ERROR " in x or " FATAL " in x or "Exception" in x]
            if errors or lines:
                return (errors or lines)[-1][:400]
        return "no output"


class KafkaCluster:
    """``nodes`` Apache Kafka KRaft nodes on 127.0.0.1 with their data in ``data_dir``.

    Start and stop them from the main thread: a JVM is bound to the thread that started it
    (it dies with it), which is what makes it die with a SIGKILLed launcher.
    """

    kind = "local Apache Kafka"

    def __init__(self, data_dir: str | Path, nodes: int = 1, port: int = 9092, heap: str = "512m",
                 cluster_id: str | None = None, java_home: str | None = None,
                 kafka_home: str | None = None, kafka_cache: str | None = None) -> None:
        if nodes < 1:
            raise LaunchError("--nodes must be at least 1")
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.heap = heap
        self.expected_cluster_id = cluster_id
        self.java_home, self.kafka_home, self.kafka_cache = java_home, kafka_home, kafka_cache
        self.nodes = [Node(i + 1, port + i, port + nodes + i, self.data_dir / f"node-{i + 1}")
                      for i in range(nodes)]
        self.cluster_id = ""
        self._java = ""
        self._libs: Path | None = None

    @classmethod
    def for_settings(cls, settings: Settings, data_dir: str | Path, *, nodes: int = 1,
                     port: int, **options: Any) -> KafkaCluster:
        """A cluster run on the Java and the jars ``settings`` name (JAVA_HOME,
        KAFKA_SAGA_KAFKA_HOME, KAFKA_SAGA_KAFKA_CACHE)."""
        return cls(data_dir, nodes=nodes, port=port, java_home=settings.java_home,
                   kafka_home=settings.kafka_home, kafka_cache=settings.kafka_cache, **options)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def alive(self) -> bool:
        """True while at least one node runs."""
        return any(node.alive() for node in self.nodes)

    # --- preparing the data directory ----------------------------------------------------

    def prepare(self) -> None:
        """Check Java, the jars, the ports and the data directory; format it on first start."""
        self._java = java_binary(self.java_home)
        self._libs = libs_dir(self.kafka_home, self.kafka_cache)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._refuse_running(node)
        for node in self.nodes:
            for port, what in ((node.client_port, "client"), (node.controller_port, "controller")):
                if not port_is_free(port):
                    raise LaunchError(f"port {port} (node {node.node_id} {what} port) is taken: stop "
                                      "what uses it or choose another --port")
        self.cluster_id = self._cluster_identity()
        self._format()

    def _refuse_running(self, node: Node) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(node.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"kafka.Kafka" in cmdline:
                raise LaunchError(f"node {node.node_id} of {self.data_dir} is already running "
                                  f"(pid {pid}): stop it first")
        node.pid_file.unlink(missing_ok=True)

    def _cluster_identity(self) -> str:
        meta = self.data_dir / "cluster.json"
        if meta.exists():
            try:
                known = json.loads(meta.read_text())
                cluster_id, nodes = str(known["cluster_id"]), int(known["nodes"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise LaunchError(f"{meta} is unreadable ({exc}): remove {self.data_dir} to start "
                                  "afresh") from None
            if self.expected_cluster_id and self.expected_cluster_id != cluster_id:
                raise LaunchError(f"{self.data_dir} belongs to cluster {cluster_id}, not "
                                  f"{self.expected_cluster_id}: use another --data-dir")
            if nodes != len(self.nodes):
                raise LaunchError(f"{self.data_dir} holds a {nodes}-node cluster: start it with "
                                  f"--nodes {nodes}, or use another --data-dir")
        else:
            cluster_id = self.expected_cluster_id or \
                urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            meta.write_text(json.dumps({"cluster_id": cluster_id, "nodes": len(self.nodes),
                                        "kafka": KAFKA_VERSION}) + "\n")
        for node in self.nodes:  # a node directory formatted for another cluster
            found = _meta_cluster_id(node.log_dir)
            if found and found != cluster_id:
                raise LaunchError(f"{node.log_dir} belongs to cluster {found}, not {cluster_id} "
                                  f"(see {meta}): use another --data-dir")
        return cluster_id

    def _format(self) -> None:
        todo = [node for node in self.nodes if not (node.log_dir / "meta.properties").exists()]
        for node in self.nodes:
            self._write_config(node)
        if not todo:
            return
        log.info("formatting Kafka storage", cluster_id=self.cluster_id, nodes=[n.node_id for n in todo])
        running = [(node, subprocess.Popen(
            [self._java, "-Xmx256m", *self._logging(node), "-cp", f"{self._libs}/*",
             "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
             "-c", str(node.home / "server.properties"), "--ignore-formatted"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)) for node in todo]
        for node, proc in running:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                lines = [x for x in output.decode(errors="replace").splitlines() if x.strip()]
                raise LaunchError(f"formatting node {node.node_id} failed: "
                                  f"{(lines[-1] if lines else 'no output')[:300]}")

    def _write_config(self, node: Node) -> None:
        count = len(self.nodes)
        replicas = min(3, count)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        config = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.client_port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.client_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": node.log_dir,
            "default.replication.factor": replicas,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": 12,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min(2, replicas),
            "transaction.state.log.num.partitions": 12,
            # sized for a small machine and for tests: a group forms at once, a dead broker
            # is fenced within seconds, a lagging replica leaves the ISR within 10 s
            "group.initial.rebalance.delay.ms": 0,
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 6000,
            "replica.lag.time.max.ms": 10000,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "num.replica.fetchers": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
            "log.cleaner.backoff.ms": 5000,
        }
        node.home.mkdir(parents=True, exist_ok=True)
        (node.home / "server.properties").write_text(
            "# written by kafka-saga at every start; edits are overwritten\n"
            + "".join(f"{k}={v}\n" for k, v in config.items()))
        (node.home / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.server.KafkaRaftServer=INFO\n"
            "log4j.logger.kafka.server.BrokerServer=INFO\n"
            "log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN\n")

    def _logging(self, node: Node) -> list[str]:
        return [f"-Dlog4j.configuration=file:{node.home / 'log4j.properties'}",
                f"-Dkafka.logs.dir={node.home}"]

    # --- running --------------------------------------------------------------------------

    def spawn(self, node: Node) -> None:
        """Start one node's JVM (prepare() first); returns at once."""
        if node.alive():
            return
        with open(node.log_file, "ab") as out:
            node.process = subprocess.Popen(
                [self._java, "-Xms128m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                 "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", *self._logging(node),
                 "-cp", f"{self._libs}/*", "kafka.Kafka", str(node.home / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
            )
        node.pid_file.write_text(f"{node.process.pid}\n")

    async def start(self, timeout: float = 180.0) -> str:
        """Prepare, start every node, wait until each answers metadata; return the bootstrap."""
        self.prepare()
        for node in self.nodes:
            self.spawn(node)
        try:
            await self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("Apache Kafka ready", bootstrap=self.bootstrap, nodes=len(self.nodes),
                 data_dir=str(self.data_dir), cluster_id=self.cluster_id, version=KAFKA_VERSION)
        return self.bootstrap

    async def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Start one stopped node again and wait until it answers."""
        node = self.node(node_id)
        self.spawn(node)
        await self.wait_ready(timeout, [node])

    async def wait_ready(self, timeout: float, nodes: list[Node] | None = None) -> None:
        """Every node answers metadata naming all brokers, then a group coordinator answers.

        The coordinator check makes "ready" mean ready for consumer groups too: on a fresh
        cluster the first FindCoordinator creates ``__consumer_offsets`` and is refused
        (COORDINATOR_NOT_AVAILABLE) until its partitions are led.
        """
        deadline = time.monotonic() + timeout
        await asyncio.gather(*(self._wait_node(node, deadline) for node in nodes or self.nodes))
        await self._wait_coordinator(deadline)

    async def _wait_coordinator(self, deadline: float) -> None:
        async def coordinator(client: AIOKafkaClient) -> str | None:
            answer = await client.send(client.get_random_node(),
                                       FindCoordinatorRequest("kafka-saga.ready", 0))
            return None if answer.error_code == 0 else f"FindCoordinator error {answer.error_code}"

        await _poll(self.bootstrap, coordinator, deadline,
                    "Kafka answered metadata but no group coordinator in time")

    async def _wait_node(self, node: Node, deadline: float) -> None:
        async def registered(client: AIOKafkaClient) -> str | None:
            # three answers in a row, 0.5 s apart: a restarted node can list every broker once
            # and then be fenced again for a moment by the controller (seen in CI)
            for turn in range(3):
                brokers = len((await client.fetch_all_metadata()).brokers())
                if brokers < len(self.nodes):
                    return f"{brokers} of {len(self.nodes)} brokers registered"
                if turn < 2:
                    await asyncio.sleep(0.5)
            return None

        def exited() -> None:
            if not node.alive():
                code = node.process.returncode if node.process else None
                raise LaunchError(f"Kafka node {node.node_id} exited with code {code} while starting: "
                                  f"{node.last_error()} (log: {node.log_file})")

        await _poll(node.address, registered, deadline, f"Kafka node {node.node_id} did not answer a "
                    f"metadata request in time (log: {node.log_file})", exited)

    def stop_node(self, node_id: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop one node: SIGTERM (a clean, controlled shutdown) then SIGKILL after ``timeout``."""
        self._stop([self.node(node_id)], sig, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node cleanly (SIGTERM, SIGKILL after ``timeout``)."""
        self._stop(self.nodes, signal.SIGTERM, timeout)

    def _stop(self, nodes: list[Node], sig: int, timeout: float) -> None:
        running = [n for n in nodes if n.alive()]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                node.process.send_signal(sig)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for node in running:
            assert node.process is not None
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Kafka node did not stop in time: killed", node=node.node_id, timeout_s=timeout)
                node.process.kill()
                node.process.wait(10)
            log.info("Kafka node stopped", node=node.node_id, code=node.process.returncode)
        for node in nodes:
            if not node.alive():
                node.pid_file.unlink(missing_ok=True)


async def _poll(bootstrap: str, ask: Callable[[AIOKafkaClient], Awaitable[str | None]], deadline: float,
                failure: str, check: Callable[[], None] = lambda: None) -> None:
    """Ask ``bootstrap`` until ``ask`` answers None (ready) or ``deadline``; ``check`` may raise."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    last = "no answer yet"
    while time.monotonic() < deadline:
        check()
        try:  # a plain TCP connect first: quiet while the JVM boots
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.close()
        except OSError:
            await asyncio.sleep(0.25)
            continue
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await client.bootstrap()
            answer = await ask(client)
            if answer is None:
                return
            last = answer
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = str(exc)[:200] or type(exc).__name__
        finally:
            await client.close()
        await asyncio.sleep(0.25)
    raise LaunchError(f"{failure}: {last}")


def _meta_cluster_id(log_dir: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in (log_dir / "meta.properties").read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    return None
