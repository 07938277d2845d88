"""The stateful roles on the in-memory bus: their handlers, state and rebalances, no broker.

The same records go through the same ``handle_record`` as on Kafka; the real-broker tests
(tests/integration) cover the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kafka_saga.bus.memory import MemoryBus
from kafka_saga.config import RoleOptions, Settings
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import (
    REPLY_PARTITION,
    Command,
    CommandType,
    Event,
    EventType,
    InventoryRequest,
    Snapshot,
    Step,
    UserAggregate,
    new_id,
)
from kafka_saga.core.fields import canonical_time
from kafka_saga.roles import ROLES
from kafka_saga.roles.base import RoleContext

BASE = datetime(2026, 1, 1, tzinfo=UTC)
PRICE = Catalog().price("cappuccino", 2) or 0


def role(name: str, bus: MemoryBus, **extra: object):
    ctx = RoleContext(bus, Settings.from_env({}), RoleOptions(extra=dict(extra)))  # type: ignore[arg-type]
    return ROLES[name](ctx)


def event(kind: EventType, saga: str, order: str, price: int = PRICE, user: str = "client01",
          step: Step = Step.VALIDATION, at: int = 0) -> Event:
    snap = Snapshot(order, user, "cappuccino", 2, price_cents=price)
    return Event.new(kind, snap, step, saga, occurred_at=canonical_time(BASE + timedelta(seconds=at)))


def commands(bus: MemoryBus, topic: str) -> list[tuple[int, Command]]:
    return [(r.partition, Command.decode(r.value)) for r in bus.records(topic)]


async def test_tracker_rejects_on_the_events_partition_and_not_again_after_a_rebalance():
    bus = MemoryBus(partitions=3)
    tracker = role("tracker", bus)
    [sub] = tracker.subscriptions()
    await bus.subscribe(sub)
    topic = bus.topics.events
    bus.publish(topic, event(EventType.ORDER_CREATED, "s-bad", "o-bad", price=1).encode(), partition=2)
    bus.publish(topic, event(EventType.ORDER_CREATED, "s-ok", "o-ok").encode(), partition=1)
    bus.publish(topic, event(EventType.ORDER_CREATED, "s-dup", "o-ok").encode(), partition=1)
    await bus.drain()
    rejects = commands(bus, bus.topics.replies)
    assert sorted((p, c.saga_id, c.type, c.metadata["reason"]) for p, c in rejects) == [
        (1, "s-dup", CommandType.ORDER_REJECT, "duplicate_order"),
        (2, "s-bad", CommandType.ORDER_REJECT, "price_mismatch")]
    assert tracker.health()["partitions"] == [0, 1, 2]

    # a rebalance: state is rebuilt from the log, nothing is published again ...
    await bus.revoke(sub)
    assert tracker.health()["partitions"] == [] and tracker.health()["sagas"] == 0
    await bus.assign(sub)
    assert tracker.health()["sagas"] == 3
    await bus.drain()
    assert len(commands(bus, bus.topics.replies)) == 2
    # ... and the rebuilt state still knows the order: a third saga for it is a duplicate
    bus.publish(topic, event(EventType.ORDER_CREATED, "s-dup-2", "o-ok").encode(), partition=1)
    await bus.drain()
    assert [c.saga_id for p, c in commands(bus, bus.topics.replies) if p == 1] == ["s-dup", "s-dup-2"]


async def test_inventory_answers_by_type_at_the_reply_partition_and_remembers_stock():
    bus = MemoryBus(partitions=2)
    inventory = role("inventory", bus)
    [sub] = inventory.subscriptions()
    await bus.subscribe(sub)

    def request(saga: str, quantity: int, action: str = "reserve", reply_to: int = 1) -> InventoryRequest:
        req = InventoryRequest(new_id(), saga, f"o-{saga}", "limited-edition", quantity, action)
        bus.publish(bus.topics.inventory, req.encode(), req.key,
                    headers=[(REPLY_PARTITION, str(reply_to).encode())])
        return req

    request("a", 3)
    request("b", 3, reply_to=0)
    await bus.drain()
    answers = commands(bus, bus.topics.replies)
    assert sorted((c.saga_id, p, c.type) for p, c in answers) == [
        ("a", 1, CommandType.INVENTORY_RESERVED), ("b", 0, CommandType.INVENTORY_REFUSED)]
    assert all(c.step is Step.INVENTORY and "source" not in c.metadata for _, c in answers)
    assert inventory.stock()["limited-edition"] == 2

    await bus.revoke(sub)  # another owner restores the ledger from the request log
    assert inventory.stock() == {}
    await bus.assign(sub)
    assert inventory.stock()["limited-edition"] == 2
    request("c", 2)
    await bus.drain()
    assert [c.type for _, c in commands(bus, bus.topics.replies) if c.saga_id == "c"] == [
        CommandType.INVENTORY_RESERVED]
    assert inventory.stock()["limited-edition"] == 0


async def test_aggregator_publishes_one_snapshot_per_user_and_batch_and_survives_a_rebalance():
    bus = MemoryBus(partitions=2)
    aggregator = role("aggregator", bus)
    [fold] = aggregator.subscriptions()
    await bus.subscribe(fold)
    for i in range(3):
        saga = f"s{i}"
        for kind, step in ((EventType.ORDER_CREATED, Step.VALIDATION),
                           *((EventType.ORDER_APPROVED, s) for s in Step)):
            bus.publish(bus.topics.events, event(kind, saga, f"o{i}", user="alice", step=step,
                                                 at=i).encode(), partition=1)  # alice's
    await bus.drain()
    snapshots = [UserAggregate.decode(r.value) for r in bus.records(bus.topics.aggregates)]
    assert len(snapshots) == 1  # one batch, one user: one snapshot
    assert snapshots[-1].orders == 3 and snapshots[-1].approved == 3

    await bus.revoke(fold)
    await bus.assign(fold)
    published = len(bus.records(bus.topics.aggregates))
    await bus.drain()
    assert len(bus.records(bus.topics.aggregates)) == published  # restoring publishes nothing
    bus.publish(bus.topics.events, event(EventType.ORDER_CREATED, "s9", "o9", user="alice",
                                         at=9).encode(), partition=1)
    await bus.drain()
    latest = UserAggregate.decode(bus.records(bus.topics.aggregates)[-1].value)
    assert latest.orders == 4  # the restored fold counted the first three


@pytest.mark.parametrize("value", [b"not json", b"{}", None])
async def test_an_unreadable_record_is_dead_lettered_with_its_reason_once(value):
    bus = MemoryBus(partitions=1)
    aggregator, tracker = role("aggregator", bus), role("tracker", bus)
    for sub in (*aggregator.subscriptions(), *tracker.subscriptions()):
        await bus.subscribe(sub)
    bus.publish(bus.topics.events, value, b"k")
    await bus.drain()
    [(record, why, by)] = bus.dead_letters  # the aggregator owns orders.events; tracker skips
    assert record.value == value and by == "aggregator" and why.reason
