"""orders.replies, the orchestrator's second input: answers to running sagas only.

Garbage written there is dead-lettered once, with its origin, by the orchestrator's group;
an order-creating command written there starts nothing; the inventory answers of real sagas
arrive there, at the partition of each saga's command, whatever partition the client chose.
"""

from __future__ import annotations

from kafka_saga.bus.follow import read_topic
from kafka_saga.core.contracts import Command
from kafka_saga.core.dead_letters import read_dead_letter

from ..support.orders import produce
from ..support.platform import eventually
from .test_saga import order, trail, wait_terminal


async def test_garbage_and_misplaced_commands_on_replies_are_contained(platform, bus, settings):
    await platform.start("orchestrator", "inventory")
    misplaced = order(user="client07")
    produce(bus.bootstrap, bus.topics.replies, [(b"k1", b"{not json"), (b"k2", b'{"type": "OrderCreate"}'),
                                                (misplaced.key, misplaced.encode())])
    good = order(user="client08")
    produce(bus.bootstrap, bus.topics.commands, [(good.key, good.encode())])
    events = await wait_terminal(bus, good)
    assert trail(events[good.snapshot.order_id])[-1] == "OrderApproved:Finalize"

    async def dead_letters():
        found: list = []
        await read_topic(bus, bus.topics.dlq, found.append, 30)
        return found if len(found) >= 2 else None

    letters = [read_dead_letter(r) for r in await eventually(dead_letters, what="two dead letters")]
    assert sorted(d.origin_topic for d in letters) == [bus.topics.replies] * 2
    assert all(d.role == "orchestrator" and d.reason for d in letters)
    assert misplaced.snapshot.order_id not in events  # an OrderCreate on replies starts nothing


async def test_answers_go_to_the_partition_of_the_command_not_of_its_key(platform, bus):
    await platform.start("orchestrator", "inventory")
    # a client with its own partitioner: every command on the last partition, whatever its key
    commands = [order(user=f"client{i:02d}") for i in range(12)]
    last = bus.settings.partitions - 1
    for command in commands:
        await bus.producer.send(bus.topics.commands, command.encode(), command.key, partition=last)
    await bus.producer.flush()
    events = await wait_terminal(bus, *commands)
    assert all(trail(events[c.snapshot.order_id])[-1] == "OrderApproved:Finalize" for c in commands)
    replies: list = []
    await read_topic(bus, bus.topics.replies, replies.append, 30)
    answered = {Command.decode(r.value).saga_id: r.partition for r in replies}
    assert {answered[c.saga_id] for c in commands} == {last}
