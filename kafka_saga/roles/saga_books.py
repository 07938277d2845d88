"""The orchestrator's sagas as state stores on the shared loop: one
:class:`~kafka_saga.core.sagabook.SagaBook` per ``orders.commands`` partition.

A saga's events go to its user's partition of ``orders.events`` (so the aggregator and the
tracker find a user on one partition), with the saga's commands partition in the
``reply-partition`` header; the saga's state never depends on where its events are: it is
in the orchestrator's own changelog, co-partitioned with ``orders.commands``.

Each transition is published first and noted in its book after: a checkpoint never holds a
state whose event could still be lost. At a checkpoint the loop takes the books' journals
(the cut), flushes the outputs, then asks each book to seal: for every events partition,
the offset from which the book's events not yet in the changelog may be found (the lowest
of its events sent since the cut before this one, else past everything this process has
seen written there). A restore loads a book from the changelog, then feeds it that tail of
``orders.events`` (see the book's docstring): the sagas come back exactly as their events
left them, and the cost follows the live sagas and about one commit interval of events,
not the history.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from .. import logs
from ..bus.client import Bus
from ..bus.follow import read_topic
from ..bus.handling import PartitionStates
from ..bus.producer import Outgoing
from ..bus.topics import user_partition
from ..core.contracts import REPLY_PARTITION, Event, EventType
from ..core.saga import Saga
from ..core.sagabook import EVENTS_FROM, SagaBook

log = logs.get("orchestrator")
USERS_REMEMBERED = 100_000


def partition_of(saga: Saga) -> int:
    """The commands partition owning ``saga`` (its command's), -1 when unknown."""
    return saga.origin[0] if saga.origin else -1


class _Send:
    """An event on its way to ``partition`` of orders.events: registered before it is handed
    to the producer, so a checkpoint taken meanwhile knows an offset is still to come."""

    __slots__ = ("partition", "record")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.record: Outgoing | None = None

    @property
    def offset(self) -> int | None:
        return self.record.offset if self.record is not None else None


class SagaBooks:
    """The books of the commands partitions this process holds (see the module docstring)."""

    def __init__(self, bus: Bus, window: int) -> None:
        self.bus = bus
        self.states: PartitionStates[SagaBook] = PartitionStates(
            lambda tp: SagaBook(tp.partition, window), self._closed, taken=self._taken,
            seal=self._seal)
        self.owned: set[int] = set()  # commands partitions assigned (parked books are not)
        self.sends: dict[int, list[_Send]] = {}  # events sent since the last cut
        self.cut: dict[int, list[_Send]] = {}  # those of the checkpoint under way
        self.events_partitions = 1  # of orders.events (set by the role at start)
        self.written: dict[int, int] = {}  # events partition -> highest offset seen written
        self.users: dict[str, int] = {}  # user -> events partition
        self.restored = 0  # sagas restored (changelog and events tail), in all

    async def publish(self, saga: Saga, event: Event, partition: int) -> Outgoing:
        """Send a transition already applied to ``saga`` to its user's partition of
        orders.events (``partition``: the saga's, in the header), then note it in its book."""
        send = _Send(self._user_partition(saga.snapshot.user))
        self.sends.setdefault(partition, []).append(send)
        headers = [(REPLY_PARTITION, str(partition).encode())] if partition >= 0 else []
        send.record = await self.bus.producer.send(self.bus.topics.events, event.encode(), event.key,
                                                   partition=send.partition, headers=headers)
        book = self.states.by_partition.get(partition)
        if book is not None:
            if saga.saga_id in book.live:
                book.saved(saga)
            else:
                book.add(saga)
        return send.record

    def _user_partition(self, user: str) -> int:
        """The user's events partition (murmur2, remembered: ~5 events per order)."""
        known = self.users
        partition = known.get(user)
        if partition is None:
            if len(known) >= USERS_REMEMBERED:
                known.clear()
            partition = known[user] = user_partition(user, self.events_partitions)
        return partition

    def live(self, saga_id: str) -> Saga | None:
        for book in self.states.values():
            saga = book.live.get(saga_id)
            if saga is not None:
                return saga
        return None

    def owned_live(self) -> dict[str, Saga]:
        """The live sagas of the partitions held (not of parked books)."""
        return {s.saga_id: s for p, b in self.states.items() if p in self.owned
                for s in b.live.values()}

    # --- the checkpoint hooks ---
    def _closed(self, tp: TopicPartition, _book: SagaBook) -> None:
        self.sends.pop(tp.partition, None)  # given away for good

    def _taken(self, partition: int, _book: SagaBook) -> None:
        """The loop took the book's journal: the events sent so far belong to this cut."""
        self.cut[partition] = self.sends.pop(partition, [])

    def _seal(self, partition: int, book: SagaBook) -> dict[str, bytes]:
        """After the flush: per events partition, where the book's events not in this
        checkpoint may start. Where the book sent events since the cut before this one, the
        lowest of their offsets (kept as it was while one is unknown); elsewhere, past the
        highest offset this process has seen written there (whatever the book sends later
        lands after it). Sealed only when it moved."""
        pending = self.cut.pop(partition, []) + self.sends.get(partition, [])
        for send in pending:
            offset = send.offset
            if offset is not None and offset > self.written.get(send.partition, -1):
                self.written[send.partition] = offset
        lowest: dict[int, int] = {}
        unknown: set[int] = set()
        for send in pending:
            offset = send.offset
            if offset is None:
                unknown.add(send.partition)
            else:
                lowest[send.partition] = min(offset, lowest.get(send.partition, offset))
        moved = {}
        for events_partition in range(self.events_partitions):
            if events_partition in unknown:
                continue
            start = lowest.get(events_partition)
            if start is None and events_partition in self.written:
                start = self.written[events_partition] + 1
            if start is not None and start > book.events_from.get(events_partition, -1):
                moved[events_partition] = start
        return {EVENTS_FROM: book.set_events_from(moved)} if moved else {}

    # --- rebalance ---
    async def assigned(self, committed: dict[TopicPartition, int]) -> list[SagaBook]:
        """The books of the commands partitions assigned; those just loaded from the changelog
        read their orders.events tail first."""
        books = [b for tp in committed if tp.topic == self.bus.topics.commands
                 and (b := self.states.get(tp)) is not None]
        self.owned |= {b.partition for b in books}
        fresh = [b for b in books if not b.caught_up]
        if fresh:
            await self._read_events_tail(fresh)
        log.info("sagas restored", partitions=sorted(b.partition for b in books),
                 from_changelog=sorted(b.partition for b in fresh),
                 live=sum(len(b.live) for b in books), finished=sum(len(b.finished) for b in books))
        return books

    def revoked(self, partitions: set[TopicPartition]) -> set[int]:
        lost = {tp.partition for tp in partitions if tp.topic == self.bus.topics.commands}
        self.owned -= lost
        return lost

    async def _read_events_tail(self, fresh: list[SagaBook]) -> None:
        """Feed each restored book the events written after its last checkpoint, from every
        events partition (a book without a seal reads them from the beginning, once)."""
        start: dict[int, int] = {}
        for book in fresh:
            for events_partition in range(self.events_partitions):
                offset = book.events_from.get(events_partition, 0)
                start[events_partition] = min(offset, start.get(events_partition, offset))

        def apply(record: Any) -> None:
            try:
                event = Event.decode(record.value)
            except ValueError as exc:  # one bad record must not stop the restore of the others
                log.warning("event skipped during restore", partition=record.partition,
                            offset=record.offset, error=str(exc)[:200])
                return
            origin = event.metadata.get("command_partition") if event.type is EventType.ORDER_CREATED else None
            command_partition = int(origin) if origin and origin.isdigit() else None
            for book in fresh:
                if book.replay(event, command_partition) is not None:
                    break

        reader = await read_topic(self.bus, self.bus.topics.events, apply, partitions=sorted(start),
                                  start=start)
        ends = {tp.partition: end for tp, end in reader.target.items()}
        for book in fresh:
            book.caught_up = True
            self.restored += len(book)
            # read up to there: the next seal starts from the ends where the book sends nothing
            moved = {p: e for p, e in ends.items() if e > book.events_from.get(p, -1)}
            if moved:
                book.journal.put(EVENTS_FROM, book.set_events_from(moved))
        log.info("orders.events tail read", partitions=sorted(start), events=reader.records)
