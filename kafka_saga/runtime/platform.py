"""One process: the broker connection (or the embedded broker), the bus, the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from .. import logs
from ..bus.client import Bus
from ..bus.embedded import EmbeddedBroker
from ..bus.kafka_engine import KafkaCluster
from ..bus.ports import free_port, free_port_pair, port_is_free
from ..config import QUERY_PORT_SETTING, PortTaken, Settings, metrics_port_setting
from ..observation import tracing
from ..observation.http import bind_problem, listen_error
from ..roles.base import RoleContext
from .broker_watch import BrokerWatch
from .supervisor import Supervisor

log = logs.get("runtime")
LocalBroker = EmbeddedBroker | KafkaCluster


@contextlib.asynccontextmanager
async def broker_for(settings: Settings) -> AsyncIterator[tuple[str, LocalBroker | None]]:
    """Yield a bootstrap address (and the local broker when one was started here).

    Without ``KAFKA_BOOTSTRAP_SERVERS``: the embedded Tansu broker (memory-only), or with
    ``KAFKA_SAGA_ENGINE=kafka`` a durable single Apache Kafka node keeping its data in
    ``KAFKA_SAGA_KAFKA_DATA_DIR``, on ``KAFKA_SAGA_EMBEDDED_PORT`` when free.
    """
    if settings.bootstrap_servers:
        log.info("using external Kafka broker", bootstrap=settings.bootstrap_servers)
        yield settings.bootstrap_servers, None
        return
    port = settings.embedded_port if port_is_free(settings.embedded_port) else free_port()
    if settings.engine == "kafka":
        if not port_is_free(port + 1):
            port = free_port_pair()
        node = KafkaCluster.for_settings(settings, settings.kafka_data_dir, nodes=1, port=port)
        await node.start()
        log.info("using a local Apache Kafka node (durable)", bootstrap=node.bootstrap,
                 data_dir=str(node.data_dir))
        try:
            yield node.bootstrap, node
        finally:
            node.stop()
        return
    broker = EmbeddedBroker(port, log_level=settings.tansu_log)
    await broker.start()
    log.info("using embedded Tansu broker (memory-only: data is lost when it stops)",
             bootstrap=broker.bootstrap, pid=broker.process.pid if broker.process else None)
    try:
        yield broker.bootstrap, broker
    finally:
        broker.stop()


class Platform:
    """Runs the chosen roles until SIGINT/SIGTERM or a crash loop; see :meth:`run`."""

    def __init__(self, settings: Settings, role_names: list[str]) -> None:
        self.settings = settings
        self.role_names = role_names
        self.supervisor: Supervisor | None = None
        self.bus: Bus | None = None
        self.shared: dict[str, object] = {}
        self._stop_requested = asyncio.Event()
        self._exit_code = 0

    def _fatal(self, code: int) -> None:
        self._exit_code = code
        self.request_stop()

    def request_stop(self) -> None:
        self._stop_requested.set()
        if self.supervisor:
            self.supervisor.request_stop()

    async def run(self, on_ready: Callable[[Platform], None] | None = None) -> int:
        """Run until stopped; return the exit code. A setting no restart can fix raises its
        :class:`~kafka_saga.config.ConfigError` (before anything starts, when it can be seen)."""
        check_listening(self.settings, self.role_names)
        exporter = tracing.configure()  # OTEL_TRACES_EXPORTER: none (the default), console, otlp
        if tracing.on():
            log.info("tracing on", exporter=exporter)
        try:
            return await self._run(on_ready)
        finally:
            tracing.shutdown()  # what is still buffered is exported

    async def _run(self, on_ready: Callable[[Platform], None] | None) -> int:
        async with broker_for(self.settings) as (bootstrap, embedded):
            self.settings = replace(self.settings, bootstrap_servers=bootstrap)  # settled here, once
            bus = self.bus = Bus(self.settings)
            await bus.ensure_topics()
            await bus.start()
            try:
                contexts = {name: RoleContext(bus, self.settings, self.settings.role(name), self.shared)
                            for name in self.role_names}
                self.supervisor = Supervisor(
                    contexts.__getitem__, self.role_names,
                    restart_max=self.settings.restart_max,
                    restart_window_s=self.settings.restart_window_s,
                    shutdown_timeout_s=self.settings.shutdown_timeout_s)
                self.shared["health"] = self.supervisor.health
                if self._stop_requested.is_set():
                    self.supervisor.request_stop()
                if on_ready:
                    on_ready(self)
                watch_stop = asyncio.Event()
                watch = asyncio.create_task(BrokerWatch(
                    bus, embedded, self._fatal, self.settings.broker_watch_s).run(watch_stop))
                try:
                    code = await self.supervisor.run()
                finally:
                    watch_stop.set()
                    await asyncio.gather(watch, return_exceptions=True)
                code = code or self._exit_code
            finally:
                await bus.stop()  # flush the shared producer last
            log.info("runtime stopped", exit_code=code)
            if self.supervisor.config_error is not None:
                raise self.supervisor.config_error
            return code


def check_listening(settings: Settings, names: list[str]) -> None:
    """Raise :class:`PortTaken` unless every port the roles ``names`` will listen on is free."""
    wanted: list[tuple[str, int | None]] = [(QUERY_PORT_SETTING, settings.query_port)] if "query" in names else []
    wanted += [(metrics_port_setting(name), settings.role(name).metrics_port) for name in names]
    claimed: dict[int, str] = {}
    for setting, port in wanted:
        if not port:
            continue
        if port in claimed:
            raise PortTaken(listen_error(setting, settings.query_host, port,
                                         f"{claimed[port]} names it too"))
        problem = bind_problem(settings.query_host, port)
        if problem:
            raise PortTaken(listen_error(setting, settings.query_host, port, problem))
        claimed[port] = setting


async def run_with_signals(settings: Settings, role_names: list[str]) -> int:
    """Run the platform; SIGINT/SIGTERM stop it cleanly (exit 0)."""
    platform = Platform(settings, role_names)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, platform.request_stop)
    try:
        return await platform.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
