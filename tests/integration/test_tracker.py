"""The tracker on the real broker: rejects once per (saga, rule), across redelivery and restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from kafka_saga.bus.follow import read_topic
from kafka_saga.config import Settings
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import (
    Command,
    CommandType,
    Event,
    EventType,
    Snapshot,
    Step,
    reply_partition,
)
from kafka_saga.core.fields import canonical_time

from ..support.orders import produce_events
from ..support.platform import eventually

CATALOG = Catalog()
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def snap(order_id: str, price: int | None = None, user: str = "client01") -> Snapshot:
    good = CATALOG.price("cappuccino", 2) or 0
    return Snapshot(order_id, user, "cappuccino", 2, price_cents=good if price is None else price)


def event(kind: EventType, saga: str, snapshot: Snapshot, step: Step = Step.VALIDATION,
          at: float = 0.0) -> Event:
    return Event.new(kind, snapshot, step, saga,
                     occurred_at=canonical_time(BASE + timedelta(seconds=at)))


def scenario() -> list[Event]:
    late = snap("o-late")
    return [
        event(EventType.ORDER_CREATED, "saga-good", snap("o-good")),
        event(EventType.ORDER_CREATED, "saga-bad", snap("o-bad", price=1)),
        event(EventType.ORDER_APPROVED, "saga-bad", snap("o-bad", price=1)),
        event(EventType.ORDER_CREATED, "saga-dup-1", snap("o-dup")),
        event(EventType.ORDER_CREATED, "saga-dup-2", snap("o-dup")),
        event(EventType.ORDER_CREATED, "saga-late", late),
        *[event(EventType.ORDER_APPROVED, "saga-late", late, s) for s in Step if s is not Step.FINALIZE],
        # the price is wrong only in the Finalize event (noticed at the end of the saga)
        event(EventType.ORDER_APPROVED, "saga-late", snap("o-late", price=5), Step.FINALIZE),
        event(EventType.ORDER_CREATED, "saga-ended", snap("o-ended")),
        event(EventType.ORDER_REJECTED, "saga-ended", snap("o-ended")),
    ]


EXPECTED = {
    ("tracker:price_integrity:saga-bad", "saga-bad", "price_mismatch", Step.VALIDATION),
    ("tracker:duplicate_order:saga-dup-2", "saga-dup-2", "duplicate_order", Step.VALIDATION),
    ("tracker:price_integrity:saga-late", "saga-late", "price_mismatch", Step.FINALIZE),
}


async def commands(bus) -> list[tuple[Command, bytes]]:
    """The tracker's rejects: on orders.replies, each at the saga's partition (the one its
    events name in their reply-partition header)."""
    events: list = []
    await read_topic(bus, bus.topics.events, events.append, 30)
    where = {Event.decode(r.value).saga_id: reply_partition(r.headers) for r in events}
    assert None not in where.values()
    records: list = []
    await read_topic(bus, bus.topics.replies, records.append, 30)
    found = [(Command.decode(r.value), r.key, r.partition) for r in records]
    assert all(partition == where[c.saga_id] for c, _, partition in found)
    return [(c, key) for c, key, _ in found]


async def at_least(bus, count: int) -> list[tuple[Command, bytes]] | None:
    found = await commands(bus)
    return found if len(found) >= count else None


async def caught_up(bus) -> bool:
    """The tracker's group has committed every record of orders.events."""
    ends = await bus.end_offsets(bus.topics.events)
    consumer = await bus.started_consumer(group_id=bus.topics.group("tracker"))
    try:
        for tp, end in ends.items():
            if (await consumer.committed(TopicPartition(tp.topic, tp.partition)) or 0) < end:
                return False
        return True
    finally:
        await consumer.stop()


def summary(found: list[tuple[Command, bytes]]) -> set[tuple[str, str, str, Step]]:
    return {(c.command_id, c.saga_id, c.metadata["reason"], c.step) for c, _ in found}


def tracker(platform):
    return platform.platform.supervisor.current["tracker"]


async def test_tracker_rejects_once_across_redelivery_and_restart(platform, settings, bus):
    await platform.start("tracker")
    events = scenario()
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, events,
                            settings.partitions)

    found = await eventually(lambda: at_least(bus, 3), timeout=60, what="three reject commands")
    await eventually(lambda: caught_up(bus), timeout=30, what="tracker caught up")
    found = await commands(bus)
    assert summary(found) == EXPECTED and len(found) == 3
    for command, key in found:
        assert command.type is CommandType.ORDER_REJECT
        assert key == command.snapshot.order_id.encode()
        assert command.metadata["source"] == "tracker"
        assert command.metadata["rule"] == command.command_id.split(":")[1]
    by_saga = {c.saga_id: c for c, _ in found}
    assert by_saga["saga-bad"].snapshot.price_cents == 1
    assert by_saga["saga-late"].snapshot.price_cents == 5

    # Redelivery (the same events produced again): the fired set is in memory, nothing new.
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, events,
                            settings.partitions)
    await eventually(lambda: caught_up(bus), timeout=30, what="redelivery consumed")
    assert len(await commands(bus)) == 3

    # Restart with two workers: the state is rebuilt from the log, the same events once more
    # fire nothing, and a new offence is still caught.
    await platform.stop()
    await platform.start("tracker", workers={"tracker": 2})
    fresh = event(EventType.ORDER_CREATED, "saga-new-bad", snap("o-new", price=7))
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events,
                            [*events, fresh], settings.partitions)
    found = await eventually(lambda: at_least(bus, 4), timeout=60, what="the new offence")
    await eventually(lambda: caught_up(bus), timeout=30, what="tracker caught up after restart")
    found = await commands(bus)
    assert len(found) == 4, summary(found)
    assert summary(found) == EXPECTED | {
        ("tracker:price_integrity:saga-new-bad", "saga-new-bad", "price_mismatch", Step.VALIDATION)}
    # a worker that joined last may still be restoring its partitions' rules (their offsets
    # were committed by the other worker before the rebalance): wait for all seven
    await eventually(lambda: tracker(platform).health()["sagas"] == 7, timeout=30,
                     what="every saga's rules restored")
    health = tracker(platform).health()
    assert health["rejects_published"] == 1 and health["sagas"] == 7
    assert platform.platform.bus.metrics.snapshot()["role_restarts"] == 0


async def test_velocity_rule_from_the_environment(platform, settings, bus):
    from_env = Settings.from_env({"TRACKER_VELOCITY_LIMIT": "2"})  # read once, with the rest
    platform.settings = replace(settings, tracker_velocity_limit=from_env.tracker_velocity_limit)
    await platform.start("tracker")
    orders = [event(EventType.ORDER_CREATED, f"saga-v{i}", snap(f"o-v{i}", user="busy"), at=i)
              for i in range(4)]
    orders.append(event(EventType.ORDER_CREATED, "saga-calm", snap("o-calm", user="calm"), at=1))
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, orders,
                            settings.partitions)
    # one process owns every partition, so the window sees all of the user's orders; which
    # orders exceed the limit depends on the order in which partitions are read
    found = await eventually(lambda: at_least(bus, 2), timeout=60, what="two velocity rejects")
    await eventually(lambda: caught_up(bus), timeout=30, what="tracker caught up")
    found = await commands(bus)
    assert len(found) == 2
    assert {c.metadata["reason"] for c, _ in found} == {"velocity_exceeded"}
    assert {c.saga_id for c, _ in found} < {f"saga-v{i}" for i in range(4)}
    assert tracker(platform).health()["velocity_limit"] == 2
