"""Where a book's events tail starts, per events partition, when its sagas' events go to
their users' partitions of orders.events (the seal of :class:`SagaBooks`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
from aiokafka import TopicPartition

from kafka_saga.bus.producer import Outgoing
from kafka_saga.bus.topics import Topics, user_partition
from kafka_saga.core.contracts import REPLY_PARTITION, EventType, Snapshot, Step, new_id
from kafka_saga.core.saga import Saga
from kafka_saga.core.sagabook import EVENTS_FROM
from kafka_saga.roles.saga_books import SagaBooks

EVENTS_PARTITIONS = 3


class Producer:
    """Hands out offsets per partition, acknowledged at once unless ``held``."""

    def __init__(self) -> None:
        self.ends = [0] * EVENTS_PARTITIONS
        self.held = False
        self.sent: list[Outgoing] = []

    async def send(self, topic, value, key=None, partition=None, headers=()):  # noqa: ANN001
        record = Outgoing(topic, value, key, list(headers), partition)
        record.future = asyncio.get_running_loop().create_future()
        if not self.held:
            self.ack(record)
        self.sent.append(record)
        return record

    def ack(self, record: Outgoing) -> None:
        record.future.set_result(SimpleNamespace(offset=self.ends[record.partition]))
        self.ends[record.partition] += 1


def user_on(partition: int) -> str:
    return next(u for u in (f"user{i}" for i in range(1000))
                if user_partition(u, EVENTS_PARTITIONS) == partition)


def books() -> tuple[SagaBooks, Producer]:
    producer = Producer()
    bus = SimpleNamespace(producer=producer, topics=Topics(""))
    keeper = SagaBooks(bus, window=10)  # type: ignore[arg-type]
    keeper.events_partitions = EVENTS_PARTITIONS
    for partition in (0, 1):
        keeper.states.open(TopicPartition("orders.commands", partition))
        keeper.owned.add(partition)
    return keeper, producer


async def publish(keeper: SagaBooks, book: int, events_partition: int) -> Saga:
    snapshot = Snapshot(new_id(), user_on(events_partition), "espresso", 1)
    saga = Saga(new_id(), snapshot, new_id(), origin=(book, 0))
    event = saga.event(EventType.ORDER_CREATED, Step.VALIDATION)
    saga.apply(event)
    await keeper.publish(saga, event, book)
    return saga


def seal(keeper: SagaBooks, book: int) -> dict[int, int] | None:
    """One checkpoint of ``book``: the cut, then the seal; the mapping it wrote, if any."""
    state = keeper.states.by_partition[book]
    keeper.states.taken(book, state)
    sealed = keeper.states.seal(book, state)
    if not sealed:
        return None
    return {int(p): o for p, o in orjson.loads(sealed[EVENTS_FROM]).items()}


async def test_events_go_to_the_users_partition_and_name_the_sagas() -> None:
    keeper, producer = books()
    await publish(keeper, 1, 2)
    [record] = producer.sent
    assert record.partition == 2 and record.headers == [(REPLY_PARTITION, b"1")]


async def test_the_tail_starts_at_the_books_lowest_send_else_past_what_was_written() -> None:
    keeper, producer = books()
    producer.ends = [10, 20, 30]
    await publish(keeper, 0, 0)  # offset 10
    await publish(keeper, 0, 0)  # 11
    await publish(keeper, 1, 1)  # 20: another book's, on a partition book 0 never wrote
    assert seal(keeper, 1) == {1: 20}  # its own lowest; nothing known yet elsewhere
    assert seal(keeper, 0) == {0: 10, 1: 21}  # past book 1's 20 on 1; nothing known on 2
    # nothing sent since: the next checkpoints move the tails past what this process wrote
    assert seal(keeper, 1) == {0: 12, 1: 21}
    assert seal(keeper, 0) == {0: 12, 1: 21}  # the whole mapping, 0 moved
    assert seal(keeper, 0) is None  # nothing moved: nothing written


async def test_an_unacknowledged_send_after_the_cut_holds_its_partition() -> None:
    keeper, producer = books()
    await publish(keeper, 0, 2)  # offset 0 on 2
    book = keeper.states.by_partition[0]
    keeper.states.taken(0, book)  # the cut
    producer.held = True
    await publish(keeper, 0, 1)  # after the cut, not acknowledged yet
    sealed = keeper.states.seal(0, book)
    assert orjson.loads(sealed[EVENTS_FROM]) == {"2": 0}  # 1 stays where it was (unknown)
    producer.ack(producer.sent[-1])
    assert seal(keeper, 0) == {1: 0, 2: 1}  # the late send now counts (from its offset)
