"""Exactly-once on the real broker: the processing guarantee chosen from the broker's answer,
and a runtime SIGKILLed three times mid-flow writing every saga transition once.

On Apache Kafka (``auto`` = exactly-once) the events are counted by event id and by
transition both as a ``read_committed`` reader sees them (the platform's readers: must be
exactly once) and as a ``read_uncommitted`` one does (what the aborted transactions of the
killed runtime left in the log); the same scenario at ``at_least_once`` runs beside it for
comparison. On Tansu (no transactions) ``auto`` is at-least-once and ``exactly_once`` refuses
to start with one clear line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kafka_saga.bus.client import Bus
from kafka_saga.bus.follow import read_topic
from kafka_saga.config import ConfigError
from kafka_saga.core.contracts import Event

from ..support.burst import TERMINAL, burst_orders, spawn_runtime, submit
from ..support.engines import TEST_ENGINE
from ..support.platform import eventually

pytestmark = [pytest.mark.broker]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
kafka_only = pytest.mark.skipif(TEST_ENGINE != "kafka", reason="transactions need Apache Kafka "
                                "(KAFKA_SAGA_TEST_ENGINE=kafka)")
tansu_only = pytest.mark.skipif(TEST_ENGINE != "tansu", reason="Tansu has no transactions")


async def test_auto_chooses_the_guarantee_from_the_broker(settings):
    async with Bus(replace(settings, processing="auto")) as bus:
        expected = "exactly_once" if TEST_ENGINE == "kafka" else "at_least_once"
        assert bus.processing == expected
        text = bus.metrics.prometheus().decode()
        assert f'kafka_saga_processing{{mode="{expected}"}} 1.0' in text
        assert bus.metrics.snapshot()["processing"] == expected
        # every reader of the platform (roles, restores, followers, replay, the DLQ tools)
        assert bus.consumer(group_id=None)._isolation_level == "read_committed"
    async with Bus(replace(settings, processing="at_least_once")) as bus:
        assert bus.processing == "at_least_once"


@tansu_only
async def test_exactly_once_on_a_broker_without_transactions_refuses_to_start(settings):
    with pytest.raises(ConfigError, match="KAFKA_SAGA_PROCESSING=exactly_once: the broker at .* "
                                          "has no transactions"):
        async with Bus(replace(settings, processing="exactly_once")):
            pass
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")},
           "PYTHONPATH": ROOT, "KAFKA_SAGA_PROCESSING": "exactly_once",
           "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix, "QUERY_API_PORT": "0"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "kafka_saga", "run", "--roles", "tracker",
                         "--bootstrap-servers", settings.bootstrap_servers],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "exactly_once" in line]
    assert lines and "has no transactions" in lines[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


async def _read_events(bootstrap: str, topic: str, isolation: str) -> list[Event]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, isolation_level=isolation,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    events: list[Event] = []
    try:
        idle = 0
        while idle < 4:
            batches = await consumer.getmany(timeout_ms=500)
            idle = 0 if batches else idle + 1
            for records in batches.values():
                events.extend(Event.decode(r.value) for r in records)
    finally:
        await consumer.stop()
    return events


def _figures(events: list[Event]) -> dict[str, int]:
    by_id = Counter(e.event_id for e in events)
    by_step = Counter((e.saga_id, e.type.value, e.step.value, e.retry_count) for e in events)
    terminals = Counter(e.saga_id for e in events
                        if e.type.value in TERMINAL or (e.type.value, e.step.value)
                        == ("OrderApproved", "Finalize"))
    return {"records": len(events), "event ids seen twice": sum(1 for n in by_id.values() if n > 1),
            "transitions written twice": sum(1 for n in by_step.values() if n > 1),
            "sagas ended twice": sum(1 for n in terminals.values() if n > 1),
            "sagas ended": len(terminals)}


async def _three_kills(settings, bus: Bus, tmp_path, processing: str) -> tuple[dict, dict]:
    orders = burst_orders(600, users=30, tag=processing[:3])
    log_path = str(tmp_path / f"{processing}.log")
    roles = "orchestrator,inventory,tracker,aggregator"
    env = {"KAFKA_SAGA_PROCESSING": processing, "KAFKA_SAGA_INSTANCE_ID": "eos-test"}
    proc = spawn_runtime(settings, log_path, roles, **env)
    try:
        sagas = {o.saga_id for o in orders}

        async def ended() -> int:
            seen = await _read_events(settings.bootstrap_servers, bus.topics.events,
                                      "read_committed")
            return _figures([e for e in seen if e.saga_id in sagas])["sagas ended"]

        for kill in range(3):
            part = orders[kill * 150:(kill + 1) * 150]
            await submit(bus, part)
            goal = kill * 150 + 60
            await eventually(lambda g=goal: _at_least(ended, g), timeout=180, interval=1.0,
                             what=f"progress before kill {kill + 1}")
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            proc = spawn_runtime(settings, log_path, roles, **env)
        await submit(bus, orders[450:])
        await eventually(lambda: _at_least(ended, len(orders)), timeout=300, interval=2.0,
                         what="every order ended")
    finally:
        proc.kill()
        proc.wait()
    committed = await _read_events(settings.bootstrap_servers, bus.topics.events, "read_committed")
    everything = await _read_events(settings.bootstrap_servers, bus.topics.events,
                                    "read_uncommitted")
    return _figures(committed), _figures(everything)


async def _at_least(ended, goal: int) -> bool:
    return await ended() >= goal


@kafka_only
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_three_sigkills_write_every_transition_once_under_read_committed(settings, bus,
                                                                             tmp_path):
    eos_committed, eos_all = await _three_kills(settings, bus, tmp_path, "exactly_once")
    alo_settings = replace(settings, topic_prefix=settings.topic_prefix + "alo.")
    async with Bus(alo_settings) as alo_bus:
        await alo_bus.ensure_topics()
        alo_committed, _ = await _three_kills(alo_settings, alo_bus, tmp_path, "at_least_once")
    print(f"\nexactly-once, 3 SIGKILLs, 600 orders: read_committed {eos_committed}; "
          f"read_uncommitted {eos_all}\nat-least-once, same scenario: {alo_committed}")
    assert eos_committed["sagas ended"] == 600
    assert eos_committed["event ids seen twice"] == 0
    assert eos_committed["transitions written twice"] == 0
    assert eos_committed["sagas ended twice"] == 0
    assert alo_committed["sagas ended"] == 600 and alo_committed["sagas ended twice"] == 0


@kafka_only
async def test_a_bounded_read_ends_at_the_last_stable_offset_not_behind_an_open_transaction(bus):
    """A producer killed mid-transaction leaves it open until its timeout (a minute): a reader
    reading "to the end as of now" must end at what it can see, not wait for that timeout."""
    topic = bus.topics.events
    plain = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap_servers)
    stuck = AIOKafkaProducer(bootstrap_servers=bus.settings.bootstrap_servers,
                             transactional_id=f"{topic}.stuck", transaction_timeout_ms=60_000)
    await plain.start()
    await stuck.start()
    try:
        for i in range(5):
            await plain.send_and_wait(topic, f"before {i}".encode(), partition=0)
        await stuck.begin_transaction()
        await stuck.send_and_wait(topic, b"uncommitted", partition=0)  # the transaction stays open
        await plain.send_and_wait(topic, b"after", partition=0)  # beyond the last stable offset
        ends = await bus.end_offsets(topic)
        assert ends[TopicPartition(topic, 0)] == 5
        seen: list[bytes] = []
        started = asyncio.get_running_loop().time()
        await read_topic(bus, topic, lambda record: seen.append(record.value), timeout=20)
        assert seen == [f"before {i}".encode() for i in range(5)]
        assert asyncio.get_running_loop().time() - started < 15
        await stuck.abort_transaction()
        seen.clear()
        await read_topic(bus, topic, lambda record: seen.append(record.value), timeout=20)
        assert seen == [*(f"before {i}".encode() for i in range(5)), b"after"]
    finally:
        await stuck.stop()
        await plain.stop()
