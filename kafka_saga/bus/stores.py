"""Changelog-backed state stores: the consume loop's checkpoint and restore of a role's state.

A subscription with per-partition ``state`` and a ``changelog`` topic gets a
:class:`StoreKeeper`. At each checkpoint the loop:

1. takes every store's journal (:meth:`StoreKeeper.take`, no await: a consistent cut);
2. flushes the outputs (the records handlers returned, and what a role sent itself);
3. writes the journals to the changelog, at the partition number of the store's input,
   plus what each store seals (:meth:`StoreKeeper.write`), and flushes them;
4. commits the input offsets.

So a committed offset never runs ahead of the state it implies, and a crash in between
redelivers records to a store that may already hold their effect: handlers are idempotent.

**Restore** (:meth:`StoreKeeper.restore`) reads a partition's changelog from its restore
point to its end, keeps the latest value of each key (a null value deletes it) and loads the
live entries into a fresh store; processing then resumes from the committed offset. The
restore point makes the cost follow the live state on any broker: on Apache Kafka the
changelog is compacted, and on a broker that does not compact, the keeper re-writes the
store's live entries (a snapshot) once the changelog since the restore point holds more than
twice what the last snapshot held, and moves the restore point to the snapshot's first record:
once the snapshot is durable, a marker record (key :data:`RESTORE_FROM`, value: that offset)
follows it in the changelog, and a restore first looks for the last marker, reading the
changelog backwards from its end in chunks (what follows the last marker is at most about
twice the live state). A commit's metadata would be the natural place, but not every broker
keeps it (Tansu drops it).

A store given away in a rebalance is kept aside (parked) with its restore point and
committed offset; when the same partition comes back and nobody committed anything for it
meanwhile, the store is taken back as it is: a rebalance in the middle of a restore, or a
run of rebalances, never starts a restore from zero.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import logs
from .client import Bus
from .follow import read_topic
from .handling import Subscription
from .producer import Outgoing

SNAPSHOT_MIN = 1_000  # changelog records since the restore point before a snapshot is worth it
RESTORE_FROM = "~restore-from"  # the keeper's marker key (no store uses it)
_MARKER = RESTORE_FROM.encode()
SendFor = Callable[[int], Callable[..., Awaitable[Outgoing]]]
BACK_CHUNK = 5_000  # records read at a time when looking backwards for the last marker


@dataclass(slots=True)
class _Parked:
    state: Any
    committed: int


@dataclass(slots=True)
class _Log:
    """What the keeper knows of one changelog partition."""

    start: int = 0  # the restore point: a restore reads from here
    written: int = 0  # records from the restore point to the end, as far as we know
    snapshot_size: int = 0  # live entries at the last snapshot or restore
    snapshot_first: Outgoing | None = None  # first record of a snapshot not yet flushed


@dataclass(slots=True)
class _Cut:
    """A store's changes at a checkpoint, and its live entries when a snapshot is due."""

    changes: dict[str, bytes | None]
    snapshot: list[tuple[str, bytes]] | None = None


def restore_from(value: bytes | None) -> int | None:
    """The offset a marker names (None for a malformed one)."""
    try:
        return int(value or b"")
    except ValueError:
        return None


class StoreKeeper:
    """The changelog side of one consumer's per-partition state stores."""

    def __init__(self, bus: Bus, sub: Subscription, log: Any = None) -> None:
        assert sub.state is not None and sub.changelog is not None
        self.bus = bus
        self.role = sub.role
        self.states = sub.state
        self.topic = sub.changelog
        self.state_topic = sub.topics[0]
        self.log = log or logs.get("stores", role=sub.role)
        self.logs: dict[int, _Log] = {}
        self.parked: dict[int, _Parked] = {}
        self.restored_entries = 0  # in all, for health and tests
        self.restore_seconds = 0.0

    # --- checkpoint ---
    def take(self, owned: set[int]) -> dict[int, _Cut]:
        """The changes since the last checkpoint of the stores of the ``owned`` partitions
        (the runner's: workers of one process share the stores), and their live entries when
        a snapshot is due (step 1: no await, so the cut is consistent)."""
        taken = {}
        hook = self.states.taken
        for partition, state in self.states.items():
            if partition in self.parked or partition not in owned:
                continue
            changes = state.journal.take()
            if hook is not None:
                hook(partition, state)
            if not changes and self.states.seal is None:
                continue
            log = self.logs.setdefault(partition, _Log())
            due = log.written + len(changes) > max(SNAPSHOT_MIN, 2 * log.snapshot_size)
            taken[partition] = _Cut(changes, list(state.entries()) if due else None)
        return taken

    async def write(self, taken: dict[int, _Cut], send_for: SendFor | None = None) -> bool:
        """Send the changes, what the stores seal and the snapshots due to the changelog;
        whether anything was sent (then the caller flushes before committing). ``send_for``:
        the send of each partition (its transaction, under exactly-once)."""
        topic = self.topic
        sent = False
        for partition, cut in taken.items():
            send = send_for(partition) if send_for is not None else self.bus.producer.send
            changes = cut.changes
            state = self.states.by_partition.get(partition)
            if state is not None and self.states.seal is not None:
                changes.update(self.states.seal(partition, state))
            log = self.logs.setdefault(partition, _Log())
            for key, value in changes.items():
                await send(topic, value, key.encode(), partition=partition)
            log.written += len(changes)
            sent = sent or bool(changes)
            if cut.snapshot:
                # re-write the live entries (as of the cut, with what was sealed: the
                # changes again); the restore point moves to the first once flushed
                entries = dict(cut.snapshot)
                entries.update((k, v) for k, v in changes.items() if v is not None)
                first = None
                for key, value in entries.items():
                    if value is None:
                        continue
                    record = await send(topic, value, key.encode(), partition=partition)
                    first = first or record
                log.snapshot_first = first
                log.snapshot_size = log.written = len(entries)
                sent = True
        return sent

    async def mark(self, send_for: SendFor | None = None) -> None:
        """After the changelog writes were flushed: a marker after each snapshot now durable
        (delivered by the next flush; until then a restore starts at the previous marker)."""
        for partition, log in self.logs.items():
            first = log.snapshot_first
            if first is not None and first.offset is not None:
                log.start = first.offset
                log.snapshot_first = None
                send = send_for(partition) if send_for is not None else self.bus.producer.send
                await send(self.topic, str(first.offset).encode(), RESTORE_FROM.encode(),
                           partition=partition)

    # --- rebalance ---
    def park(self, partition: int, committed: int) -> None:
        """Keep a revoked partition's store aside, in case it comes back unchanged."""
        state = self.states.by_partition.get(partition)
        if state is not None:
            self.parked[partition] = _Parked(state, committed)

    async def restore(self, consumer: AIOKafkaConsumer,
                      assigned: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Open the store of every newly assigned partition: taken back from the parked ones
        when nothing moved meanwhile, else loaded from the changelog. Returns the committed
        offset of every assigned partition."""
        assigned = list(assigned)
        committed = {tp: await consumer.committed(tp) or 0 for tp in assigned}
        kept, load = [], []
        for tp in assigned:
            if tp.topic != self.state_topic:
                continue
            parked = self.parked.pop(tp.partition, None)
            # kept only if nobody committed meanwhile and it did not change since (a change
            # after the last checkpoint was never committed)
            if parked is not None and parked.committed == committed[tp] \
                    and not len(parked.state.journal):
                kept.append(tp.partition)  # nobody handled it meanwhile: it is as we left it
                continue
            self.states.open(tp)
            load.append(tp.partition)
        for partition in list(self.parked):  # given away for good
            gone = self.parked.pop(partition)
            # (another worker of this process may hold that partition's new store by now)
            if self.states.by_partition.get(partition) is gone.state:
                self.states.close(TopicPartition(self.state_topic, partition))
        if load:
            await self._load(await self._restore_points(load))
        if kept:
            self.log.info("state kept across the rebalance", partitions=sorted(kept))
        return committed

    async def _restore_points(self, partitions: list[int]) -> dict[int, int]:
        """Per partition, the offset the last marker names (0 without one), found reading the
        changelog backwards from its exact end, a chunk at a time."""
        ends = await self.bus.end_offsets(self.topic)
        points = dict.fromkeys(partitions, 0)
        tps = [tp for tp in ends if tp.partition in points and ends[tp] > 0]
        if not tps:
            return points
        consumer = await self.bus.started_consumer(fetch_max_wait_ms=50)
        try:
            consumer.assign(tps)
            for tp in tps:
                high = ends[tp]
                found = None
                while high > 0 and found is None:
                    low = max(0, high - BACK_CHUNK)
                    consumer.seek(tp, low)
                    position, idle = low, 0
                    while position < high and idle < 3:  # a compacted gap ends an empty fetch
                        batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                        idle = 0 if batch else idle + 1
                        for record in batch:
                            if record.offset < high and record.key == _MARKER:
                                found = restore_from(record.value)
                        position = max(position, await consumer.position(tp))
                    high = low
                points[tp.partition] = found or 0
        finally:
            await consumer.stop()
        return points

    async def _load(self, starts: dict[int, int]) -> None:
        started = time.perf_counter()
        latest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in starts}
        counts = dict.fromkeys(starts, 0)

        def apply(record: Any) -> None:
            counts[record.partition] += 1
            entries = latest[record.partition]
            entries.pop(record.key, None)  # the order of the last writes
            entries[record.key] = record.value

        await read_topic(self.bus, self.topic, apply, partitions=sorted(starts), start=starts)
        loaded = 0
        for partition, entries in latest.items():
            state = self.states.by_partition[partition]
            live = 0
            for key, value in entries.items():
                if value is not None and key is not None and key != _MARKER:
                    state.load(key.decode(), value)
                    live += 1
            loaded += live
            self.logs[partition] = _Log(start=starts[partition], written=counts[partition],
                                        snapshot_size=live)
        seconds = time.perf_counter() - started
        self.restored_entries += loaded
        self.restore_seconds += seconds
        self.bus.metrics.restore_seconds.labels(role=self.role).observe(seconds)
        self.bus.metrics.restored_entries.labels(role=self.role).inc(loaded)
        self.bus.metrics.restore_records.labels(role=self.role).inc(sum(counts.values()))
        self.log.info("state restored from the changelog", changelog=self.topic,
                      partitions=sorted(starts), records_read=sum(counts.values()), live_entries=loaded,
                      seconds=round(seconds, 3))
