"""A saga belongs to the partition of its command, whatever partitioner put the command there.

Commands are written by confluent-kafka with librdkafka's DEFAULT partitioner (crc32 of the
key, a random partition without one), keyed by the order id, by another key, or not keyed.
Everything addressed to a saga must then go to that partition explicitly: the tracker's
rejects and the cancels (API, CLI) on ``orders.replies`` (found in the ``reply-partition``
header of the saga's events, which are on its user's partition of ``orders.events``), and a
dead letter re-injected into ``orders.commands``. Commands and replies with unequal
partition counts stop the orchestrator with one clear line.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import replace

from aiokafka.admin import NewTopic
from confluent_kafka import Producer

from kafka_saga.bus import reinject
from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.topics import user_partition
from kafka_saga.core.contracts import (
    REINJECTED_HEADER,
    Command,
    CommandType,
    Event,
    headers_dict,
    reply_partition,
)

from ..support.burst import spawn_runtime
from ..support.foreign import KEYS, murmur2_partition, write_with_librdkafka
from ..support.platform import eventually
from ..support.processes import json_log_lines
from .test_orders_api import call
from .test_saga import APPROVED_TRAIL, order, trail, wait_terminal
from .test_submit import cli

TOKEN = "partition-admin"


def _orders(count: int, **attributes: str) -> list[Command]:
    return [order(user=f"client{i % 9:02d}", item="espresso", quantity=1, **attributes)
            for i in range(count)]


async def _write(bus, commands: list[Command], keying: str, partition: int | None = None) -> list[int]:
    return await asyncio.to_thread(write_with_librdkafka, bus.bootstrap, bus.topics.commands,
                                   commands, KEYS[keying], partition)


async def _records(bus, topic: str) -> list:
    found: list = []
    await read_topic(bus, topic, found.append, 30)
    return found


async def _rejects_on_replies(bus) -> list[tuple[int, Command]]:
    decoded = [(r.partition, Command.decode(r.value)) for r in await _records(bus, bus.topics.replies)]
    return [(p, c) for p, c in decoded if c.type is CommandType.ORDER_REJECT
            and c.metadata.get("source") != "inventory"]


async def test_every_event_of_a_saga_is_on_its_users_partition_and_names_its_own(platform, bus):
    await platform.start("orchestrator", "inventory")
    commands, landed = [], []
    for keying in KEYS:
        batch = _orders(10)
        landed += await _write(bus, batch, keying)
        commands += batch
    partitions = bus.settings.partitions
    assert any(p != murmur2_partition(c.key, partitions) for c, p in zip(commands, landed, strict=True))
    await wait_terminal(bus, *commands)
    where: dict[str, set[int]] = defaultdict(set)
    named: dict[str, set[int | None]] = defaultdict(set)
    created: dict[str, Event] = {}
    for record in await _records(bus, bus.topics.events):
        event = Event.decode(record.value)
        where[event.saga_id].add(record.partition)
        named[event.saga_id].add(reply_partition(record.headers))
        if event.type.value == "OrderCreated":
            created[event.saga_id] = event
    for command, partition in zip(commands, landed, strict=True):
        user = command.snapshot.user
        assert where[command.saga_id] == {user_partition(user, partitions)}, where[command.saga_id]
        assert named[command.saga_id] == {partition}, (command.snapshot.order_id, named[command.saga_id])
        assert created[command.saga_id].metadata["command_partition"] == str(partition)


async def test_the_same_command_twice_on_its_partition_starts_one_saga(platform, bus):
    await platform.start("orchestrator", "inventory")
    [command] = _orders(1)
    await _write(bus, [command, command], "no_key", partition=1)
    await wait_terminal(bus, command)
    await asyncio.sleep(1.5)
    events = [Event.decode(r.value) for r in await _records(bus, bus.topics.events)]
    assert trail([e for e in events if e.saga_id == command.saga_id]) == APPROVED_TRAIL


async def test_rejects_and_cancels_go_to_the_partition_owning_the_saga(platform, bus, settings):
    platform.settings = replace(settings, admin_token=TOKEN)
    await platform.start("orchestrator", "inventory", "tracker", "query")
    cheap = order(user="client05", item="latte", quantity=1, price=1)  # the tracker rejects it
    by_api, by_cli = _orders(2)
    commands = [cheap, by_api, by_cli]
    landed = dict(zip((c.saga_id for c in commands), await _write(bus, commands, "other_key"),
                      strict=True))
    await wait_terminal(bus, *commands)
    order_id = by_api.snapshot.order_id

    async def seen() -> bool:
        return (await call(platform, f"/orders/{order_id}")).status == 200

    await eventually(seen, timeout=60, what="the order in the query view")
    admin = {"Authorization": f"Bearer {TOKEN}"}
    reply = await call(platform, f"/orders/{order_id}/cancel", "POST", headers=admin,
                       json={"reason": "by_api"})
    assert reply.status == 202, reply.text
    proc = await asyncio.to_thread(cli, settings, "cancel", by_cli.snapshot.order_id, "--reason", "by_cli")
    assert proc.returncode == 0, proc.stderr

    async def rejected() -> dict[str, list[Event]] | None:
        found: dict[str, list[Event]] = defaultdict(list)
        for record in await _records(bus, bus.topics.events):
            event = Event.decode(record.value)
            found[event.saga_id].append(event)
        ends = [found[c.saga_id][-1] for c in commands]
        return found if all(e.type.value == "OrderRejected" for e in ends) else None

    found = await eventually(rejected, timeout=60, what="three sagas rejected")
    assert [found[c.saga_id][-1].error_message for c in commands] == ["price_mismatch", "by_api", "by_cli"]
    rejects = await _rejects_on_replies(bus)
    assert sorted((c.metadata["source"], p == landed[c.saga_id]) for p, c in rejects) == [
        ("api", True), ("cli", True), ("tracker", True)]
    assert all(Command.decode(r.value).type is CommandType.ORDER_CREATE
               for r in await _records(bus, bus.topics.commands))  # no reject went by key


async def test_a_dead_letter_goes_back_to_its_origin_partition(platform, bus):
    await platform.start("orchestrator", "inventory")
    broken = order(user="client06", payment_errors="10")  # payment retries exhausted: dlq
    [origin] = await _write(bus, [broken], "other_key")
    garbage_key = next(k for k in (f"g{i}".encode() for i in range(100))
                       if murmur2_partition(k, bus.settings.partitions) != 2)
    producer = Producer({"bootstrap.servers": bus.bootstrap})  # garbage, its key hashing elsewhere
    producer.produce(bus.topics.commands, value=b"{not json", key=garbage_key, partition=2)
    assert producer.flush(30) == 0
    del producer  # librdkafka's threads stop with it
    await wait_terminal(bus, broken)

    async def letters():
        found = await reinject.read_dead_letters(bus, 30)
        return found if len(found) >= 2 else None

    letters = await eventually(letters, timeout=60, what="two dead letters")
    assert sorted((d.reason, d.origin_partition) for _, d in letters) == sorted(
        [("payment_retries_exhausted", origin), ("invalid_json", 2)])
    await reinject.reinject(bus, letters, 30)
    copies = [r for r in await _records(bus, bus.topics.commands)
              if REINJECTED_HEADER in headers_dict(r.headers)]
    assert sorted(r.partition for r in copies) == sorted([origin, 2])
    await asyncio.sleep(2)  # the owner knows the saga: the re-injected OrderCreate is a duplicate
    events = [Event.decode(r.value) for r in await _records(bus, bus.topics.events)]
    assert trail([e for e in events if e.saga_id == broken.saga_id])[-1] == "OrderFailed:Payment"
    assert sum(1 for e in events if e.type.value == "OrderCreated" and e.saga_id == broken.saga_id) == 1


async def test_unequal_partition_counts_stop_the_orchestrator_with_one_clear_line(settings, tmp_path):
    from kafka_saga.bus.client import Bus
    from kafka_saga.config import PartitionsDisagree

    bus = Bus(settings)
    admin = bus.admin()
    await admin.start()
    try:
        created = await admin.create_topics([NewTopic(bus.topics.replies, settings.partitions + 1,
                                                      settings.replication_factor or 1)])
        assert [code for _, code, *_ in created.topic_errors] == [0]
    finally:
        await admin.close()
    log_path = str(tmp_path / "orchestrator.log")
    proc = spawn_runtime(settings, log_path, roles="orchestrator,inventory")
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        proc.kill()
    lines = [e for e in json_log_lines(log_path) if e.get("level") in ("error", "critical")]
    assert code == PartitionsDisagree.exit_code == 8, lines
    assert len(lines) == 1, lines
    [line] = lines
    assert line["event"] == "role misconfigured: stopping the process", line
    assert f"{bus.topics.replies} has {settings.partitions + 1} partitions" in line["error"]
    assert "Traceback" not in json.dumps(lines)
