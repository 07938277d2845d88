"""Reading a whole topic without a consumer group: table followers and bounded reads.

Used where every reader needs *all* partitions (the query read model, the DLQ view, the
replayer, the DLQ CLI) rather than a share of them. Nothing is committed: the state is
rebuilt from the log at start (event sourcing), so there is nothing to lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

from .. import logs
from .client import Bus, retry_until
from .lost_places import LostPlaces

Apply = Callable[[Any], Awaitable[None] | None]
YIELD_EVERY = 256  # records applied between two turns of the event loop while following
log = logs.get("follow")


class TopicFollower:
    """Reads every partition of a topic from the beginning and calls ``apply`` per record.

    ``caught_up`` is set once the reader has reached the end of the topic as it was when
    the follower started (exact end, see :meth:`Bus.end_offsets`).
    """

    def __init__(self, bus: Bus, topic: str, apply: Apply, name: str = "follower",
                 connect_timeout: float = 60.0, partitions: list[int] | None = None,
                 start: dict[int, int] | None = None, ends: dict[int, int] | None = None) -> None:
        self.bus = bus
        self.start = start or {}  # partition -> first offset to read (default: the beginning)
        self.ends = ends  # partition -> the end to read to (default: the end when run starts)
        self.only = set(partitions) if partitions is not None else None
        self.connect_timeout = connect_timeout
        self.topic = topic
        self.apply = apply
        self.name = name
        self.caught_up = asyncio.Event()
        self.target: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.records = 0

    def progress(self) -> tuple[int, int]:
        """(records read towards the target, records in the target)."""
        done = sum(max(0, min(self.positions.get(tp, 0), end) - self.start.get(tp.partition, 0))
                   for tp, end in self.target.items())
        return done, sum(max(0, end - self.start.get(tp.partition, 0))
                         for tp, end in self.target.items())

    def _check_caught_up(self) -> None:
        if not self.caught_up.is_set() and all(
            self.positions.get(tp, 0) >= end for tp, end in self.target.items()
        ):
            self.caught_up.set()

    async def run(self, stop: asyncio.Event | None = None, until_end: bool = False,
                  on_batch: Callable[[], None] | None = None) -> None:
        """Follow the topic until ``stop`` is set (or, with ``until_end``, until caught up)."""
        stop = stop or asyncio.Event()
        if self.ends is not None:
            target = {TopicPartition(self.topic, p): end for p, end in self.ends.items()}
        else:
            target = await retry_until(f"{self.name} end offsets", self.bus.bootstrap,
                                       lambda: self.bus.end_offsets(self.topic),
                                       self.connect_timeout)
        self.target = {tp: end for tp, end in target.items()
                       if self.only is None or tp.partition in self.only}
        consumer = await self.bus.started_consumer(max_poll_records=5000)
        lost = LostPlaces()
        try:
            tps = list(self.target)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*(tp for tp in tps if tp.partition not in self.start))
            for tp in tps:
                if tp.partition in self.start:
                    consumer.seek(tp, self.start[tp.partition])
                    self.positions[tp] = self.start[tp.partition]
            self._check_caught_up()
            while not stop.is_set() and not (until_end and self.caught_up.is_set()):
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        if until_end and record.offset >= self.target.get(tp, 0):
                            break  # past the end as it was at start: not ours to read
                        result = self.apply(record)
                        if result is not None:
                            await result
                        self.records += 1
                        if not (until_end or self.records % YIELD_EVERY):
                            await asyncio.sleep(0)  # following live: other work steps meanwhile
                    self.positions[tp] = records[-1].offset + 1
                for tp in tps:  # an empty or compacted tail still counts as reached
                    if tp not in batches and consumer.highwater(tp) is not None:
                        self.positions[tp] = max(self.positions.get(tp, 0), await consumer.position(tp))
                await self._rewind_lost(consumer, lost, [tp for tp in tps if tp not in batches])
                if on_batch:
                    on_batch()
                self._check_caught_up()
        finally:
            await consumer.stop()

    async def _rewind_lost(self, consumer: Any, lost: LostPlaces, idle: list[TopicPartition]) -> None:
        """Read again from its start a partition whose place the broker forgot (a restarted
        memory-only broker: see :mod:`~kafka_saga.bus.lost_places`)."""
        for tp in await lost.rewind(consumer, idle, log, reader=self.name):
            self.positions[tp] = 0


async def read_topic(bus: Bus, topic: str, apply: Apply, timeout: float | None = None,
                     on_batch: Callable[[TopicFollower], None] | None = None,
                     partitions: list[int] | None = None,
                     start: dict[int, int] | None = None,
                     ends: dict[int, int] | None = None) -> TopicFollower:
    """Read ``topic`` (or some of its partitions, from the ``start`` offsets given, else from
    the beginning) to its exact end as of now (or to the ``ends`` given)."""
    follower = TopicFollower(bus, topic, apply, name=f"read {topic}",
                             connect_timeout=timeout if timeout else 60.0, partitions=partitions,
                             start=start, ends=ends)
    task = asyncio.create_task(follower.run(
        until_end=True, on_batch=(lambda: on_batch(follower)) if on_batch else None))
    try:
        await asyncio.wait_for(task, timeout)
    except TimeoutError:
        done, total = follower.progress()
        raise TimeoutError(f"reading {topic} did not finish within {timeout}s "
                           f"({done}/{total} records)") from None
    return follower
