"""Whole processes: SIGTERM commits and exits 0; the embedded broker never outlives the runtime."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time

from aiokafka import TopicPartition

from kafka_saga.bus.ports import free_port

from ..support.orders import produce_events, random_orders
from ..support.platform import eventually
from ..support.processes import json_log_lines, pid_alive

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return {**env, "PYTHONPATH": ROOT, "LOG_FORMAT": "json", "LOG_LEVEL": "info", **extra}


def _spawn(args: list[str], env: dict[str, str], log_path: str) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "kafka_saga", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


async def test_sigterm_commits_offsets_and_exits_zero(settings, bus, tmp_path):
    orders = random_orders(40, users=4, seed=21)
    events = list(itertools.chain.from_iterable(orders))
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, events)
    log_path = str(tmp_path / "run.log")
    proc = _spawn(["run", "--roles", "aggregator,dlq", "--bootstrap-servers", settings.bootstrap_servers],
                  _env(KAFKA_SAGA_TOPIC_PREFIX=settings.topic_prefix,
                       KAFKA_SAGA_PARTITIONS=str(settings.partitions)), log_path)
    try:
        group = bus.topics.group("aggregator")
        consumed = await eventually(
            lambda: _consumed(log_path, proc), timeout=60, what="runtime consuming")
        assert consumed
        # let it fold everything, then stop it with SIGTERM
        await eventually(lambda: _aggregates_published(bus, settings), timeout=60,
                         what="aggregates published")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, open(log_path).read()[-3000:]
    assert elapsed < 10
    # Offsets of the consumer group are committed up to the end of the events topic.
    ends = await bus.end_offsets(bus.topics.events)
    consumer = bus.consumer(group_id=group)
    await consumer.start()
    try:
        committed = {tp: await consumer.committed(tp) for tp in ends}
    finally:
        await consumer.stop()
    assert committed == ends
    assert sum(ends.values()) == len(events)
    messages = [line.get("event") for line in json_log_lines(log_path)]
    assert "stop requested" in messages and "runtime stopped" in messages


def _consumed(log_path: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"runtime exited early: {open(log_path).read()[-3000:]}")
    return any(line.get("event") == "partitions assigned" for line in json_log_lines(log_path))


async def _aggregates_published(bus, settings) -> bool:
    ends = await bus.end_offsets(bus.topics.aggregates)
    return sum(ends.values()) > 0


async def test_embedded_broker_dies_with_a_killed_runtime(tmp_path):
    """`run` with no broker configured starts Tansu as a child; SIGKILL of the runtime kills it too."""
    log_path = str(tmp_path / "run.log")
    port = free_port()
    proc = _spawn(["run", "--roles", "dlq"],
                  _env(KAFKA_SAGA_EMBEDDED_PORT=str(port), QUERY_API_PORT="0"), log_path)
    try:
        line = await eventually(lambda: _broker_line(log_path, proc), timeout=60,
                                what="embedded broker log line")
        broker_pid = int(line["pid"])
        assert line["bootstrap"] == f"127.0.0.1:{port}"
        assert pid_alive(broker_pid)
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)
        await eventually(lambda: not pid_alive(broker_pid), timeout=10, what="broker gone")
    finally:
        if proc.poll() is None:
            proc.kill()


def _broker_line(log_path: str, proc: subprocess.Popen[bytes]) -> dict | None:
    if proc.poll() is not None:
        raise AssertionError(f"runtime exited early: {open(log_path).read()[-3000:]}")
    for line in json_log_lines(log_path):
        if line.get("event", "").startswith("using embedded Tansu broker"):
            return line
    return None


async def test_broker_command_runs_in_foreground_and_stops_on_sigterm(tmp_path):
    port = free_port()
    log_path = str(tmp_path / "broker.log")
    proc = _spawn(["broker", "--port", str(port)], _env(), log_path)
    try:
        await eventually(lambda: _ready_line(log_path), timeout=30, what="broker ready")
        from kafka_saga.bus.embedded import wait_until_ready

        await wait_until_ready(f"127.0.0.1:{port}", timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # the port is free again: nothing was left behind
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _ready_line(log_path: str) -> bool:
    return any("ready" in str(line.get("event")) for line in json_log_lines(log_path))


def test_topic_partition_helper_sanity():
    # guards the assumption the SIGTERM test makes about TopicPartition equality
    assert TopicPartition("a", 1) == TopicPartition("a", 1)
