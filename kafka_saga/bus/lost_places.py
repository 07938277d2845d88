"""Readers whose place the broker forgot: a partition whose end fell below the reader's position.

That happens when a memory-only broker restarts (every log starts again at 0) or a log is
truncated. Apache Kafka then answers a fetch with OFFSET_OUT_OF_RANGE and the client starts
again as ``auto_offset_reset`` says (the earliest offset for us). A broker that answers such a
fetch with no records and no error leaves the reader waiting for offsets that may never come:
:class:`LostPlaces` notices a position that stays beyond the end the fetches report, and the
reader (the consume loop, a table follower) reads that partition again from its start, as
Kafka's own reset would. The wait tells a lost place from a high watermark that is briefly
behind after a leader change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

LOST_AFTER_S = 5.0  # a position beyond the end for this long is lost, not a lagging watermark


class LostPlaces:
    """Remembers since when each partition's position is beyond its end."""

    def __init__(self, after_s: float = LOST_AFTER_S) -> None:
        self.after_s = after_s
        self.beyond_since: dict[TopicPartition, float] = {}

    async def check(self, consumer: AIOKafkaConsumer,
                    partitions: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """The partitions whose place is lost, each with (position, end)."""
        now = time.monotonic()
        lost = {}
        for tp in partitions:
            end = consumer.highwater(tp)
            if end is None:  # nothing fetched yet: the end is not known
                continue
            position = await consumer.position(tp)
            if position <= end:
                self.beyond_since.pop(tp, None)
                continue
            if now - self.beyond_since.setdefault(tp, now) >= self.after_s:
                lost[tp] = (position, end)
                del self.beyond_since[tp]
        return lost

    async def rewind(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                     log: Any, **fields: Any) -> list[TopicPartition]:
        """:meth:`check`, then seek every lost partition to its start, with one error line
        each; returns them (for the reader's own bookkeeping)."""
        lost = await self.check(consumer, partitions)
        for tp, (position, end) in lost.items():
            log.error("the partition's end fell below our position: the broker lost or "
                      "truncated its log; reading it again from its start",
                      partition=f"{tp.topic}:{tp.partition}", position=position, end=end, **fields)
        if lost:
            await consumer.seek_to_beginning(*lost)
        return list(lost)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.beyond_since.pop(tp, None)
