"""A memory-only broker that restarts loses everything: the runtime notices, says so, carries on."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from kafka_saga.bus.client import Bus
from kafka_saga.bus.embedded import EmbeddedBroker
from kafka_saga.bus.ports import free_port
from kafka_saga.runtime.broker_watch import EXIT_BROKER_DIED, BrokerWatch

from ..support.orders import produce_events, random_orders
from ..support.platform import RunningPlatform, eventually

pytestmark = pytest.mark.chaos


async def test_restarted_broker_is_noticed_and_the_platform_carries_on(settings):
    port = free_port()
    broker = EmbeddedBroker(port)
    await broker.start()
    running = RunningPlatform(replace(settings, bootstrap_servers=broker.bootstrap, broker_watch_s=0.5))
    try:
        await running.start("aggregator", "query")
        bus = running.platform.bus
        first = list(itertools.chain.from_iterable(random_orders(5, users=2, seed=1)))
        await asyncio.to_thread(produce_events, broker.bootstrap, bus.topics.events, first)
        await eventually(lambda: _users(running, 2), timeout=60, what="aggregates before the restart")

        broker.stop()  # all topics, records and offsets are gone with it
        broker = EmbeddedBroker(port)
        await broker.start()
        metrics = bus.metrics
        await eventually(lambda: metrics.snapshot()["broker_resets"] >= 1, timeout=30,
                         what="broker reset noticed")


        async def recreated():  # the count goes up before the topics are created again
            return set(bus.topics.all()) <= set(await bus.list_topics())

        await eventually(recreated, timeout=30, what="topics created again")

        later = list(itertools.chain.from_iterable(random_orders(4, users=6, seed=2)))
        await asyncio.to_thread(produce_events, broker.bootstrap, bus.topics.events, later)

        async def new_users_served():
            code, body = await running.get("/aggregates")
            users = {a["user"] for a in body["aggregates"]} if code == 200 else set()
            return users >= {e.snapshot.user for e in later}

        await eventually(new_users_served, timeout=90, interval=0.5, what="processing after the reset")
        assert not running.task.done()  # still running: no crash loop, no hang
    finally:
        await running.stop()
        broker.stop()


async def _users(running, count):
    code, body = await running.get("/aggregates")
    return code == 200 and body["total"] >= count


async def test_an_embedded_broker_that_dies_stops_the_process_with_a_clear_code(settings):
    broker = EmbeddedBroker()
    await broker.start()
    bus = Bus(replace(settings, bootstrap_servers=broker.bootstrap))
    await bus.ensure_topics()
    codes: list[int] = []
    watch = BrokerWatch(bus, broker, codes.append, interval_s=0.1)
    assert await watch.check() == "ok"
    broker.stop()
    assert await watch.check() == "died"
    assert codes == [EXIT_BROKER_DIED]
