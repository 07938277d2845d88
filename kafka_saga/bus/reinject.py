"""Re-injecting dead letters into the topic they came from.

Shared by ``kafka-saga dlq replay`` and ``POST /dlq/replay``: both read ``orders.dlq`` to
its end as of now, pick records by ``PARTITION:OFFSET`` or all of them (optionally of one
reason), and send each picked dead letter's original key and bytes back to its origin
topic, with the original headers and an incremented re-injection mark
(:func:`~kafka_saga.core.dead_letters.reinjection_headers`). Records written to the DLQ by
hand (no reason/origin) are never re-injected.

Where it goes: to its origin partition, explicitly, whenever the dead letter names one that
still exists. A record of a saga belongs to the partition that owns the saga (the partition
of its command: the orchestrator dead-letters a saga's command with that origin), and the
client that wrote it may have used another partitioner than ours (librdkafka's crc32, or its
own key, or none): sent back by key, it could reach an orchestrator that does not know the
saga and would run it a second time. Back on its own partition, the owner recognises it (a
re-injected ``OrderCreate`` of a saga it still remembers is a duplicate, ignored). The same
holds for garbage and for the other topics: a record goes back exactly where it was read.
Only a dead letter without a usable origin partition (none, negative, or beyond the topic's
current partition count) goes by its key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.contracts import TRUNCATED_HEADER
from ..core.dead_letters import DeadLetter, read_dead_letter, reinjection_headers
from ..core.fields import non_negative
from .client import Bus
from .follow import read_topic

Letter = tuple[Any, DeadLetter]  # (the consumed DLQ record, its parsed view)


class NoSuchDeadLetter(LookupError):
    """No DLQ record at the requested ``PARTITION:OFFSET`` (after the reason filter)."""


def parse_offset(raw: str) -> tuple[int, int]:
    """``"P:O"`` -> ``(P, O)``; ``ValueError`` unless both are non-negative integers."""
    part, sep, off = raw.partition(":")
    partition, offset = non_negative(part), non_negative(off)
    if not sep or partition is None or offset is None:
        raise ValueError(f"{raw[:100]!r}: expected PARTITION:OFFSET (two non-negative integers)")
    return partition, offset


async def read_dead_letters(bus: Bus, timeout: float | None) -> list[Letter]:
    """Every record of the DLQ topic, to its end as of now, with its parsed view."""
    records: list[Any] = []
    await read_topic(bus, bus.topics.dlq, records.append, timeout)
    return [(record, read_dead_letter(record)) for record in records]


def select(letters: Iterable[Letter], *, reason: str | None = None,
           offset: tuple[int, int] | None = None) -> list[Letter]:
    """The letters of ``reason`` (all when None), then only the one at ``offset`` if given."""
    chosen = [(r, d) for r, d in letters if reason is None or d.reason == reason]
    if offset is not None:
        chosen = [(r, d) for r, d in chosen if (d.partition, d.offset) == offset]
        if not chosen:
            raise NoSuchDeadLetter(f"no dlq record at {offset[0]}:{offset[1]}")
    return chosen


async def reinject(bus: Bus, letters: Iterable[Letter],
                   flush_timeout: float | None = None) -> list[DeadLetter]:
    """Send every real dead letter among ``letters`` back to its origin topic; wait for acks.

    ``bus`` must be started. With ``flush_timeout``, ``TimeoutError`` when the broker did
    not acknowledge in time (the shared producer's flush goes on: records may still land).
    Returns the dead letters sent, in order.
    """
    # a truncated dead letter no longer holds the original bytes: it cannot be sent back
    chosen = [(r, d) for r, d in letters if d.is_dead_letter and TRUNCATED_HEADER not in d.headers]
    counts: dict[str, int] = {}  # origin topic -> its partition count now
    for record, letter in chosen:
        partition = letter.origin_partition
        if partition is not None and partition >= 0 and letter.origin_topic not in counts:
            counts[letter.origin_topic] = await _partition_count(bus, letter.origin_topic)
        if partition is not None and not 0 <= partition < counts.get(letter.origin_topic, 0):
            partition = None  # no usable origin partition: by key
        await bus.producer.send(letter.origin_topic, record.value, record.key,
                                reinjection_headers(record), partition=partition)
    await bus.producer.flush_within(flush_timeout)
    return [letter for _, letter in chosen]


async def _partition_count(bus: Bus, topic: str) -> int:
    try:
        return len(await bus.partitions(topic))
    except LookupError:  # the origin topic is gone: by key, as before (the producer decides)
        return 0


def describe(letter: DeadLetter) -> dict[str, Any]:
    """What a re-injection reports about one record."""
    return {"partition": letter.partition, "offset": letter.offset, "key": letter.key,
            "reason": letter.reason, "origin_topic": letter.origin_topic,
            "origin_partition": letter.origin_partition, "origin_offset": letter.origin_offset,
            "reinjected_before": letter.reinjected}


__all__ = ["NoSuchDeadLetter", "describe", "parse_offset", "read_dead_letters", "reinject",
           "select"]
