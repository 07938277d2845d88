"""An in-memory bus for unit tests: a role's subscriptions run in milliseconds, no broker.

In the spirit of a test broker: topics are lists of records per partition, a subscription
is assigned partitions like a consumer group member, and :meth:`MemoryBus.drain` delivers
every record not yet handled through the same :func:`~kafka_saga.bus.handling.handle_record`
the real loop runs, publishing what handlers return back into the in-memory topics. A
rebalance is :meth:`MemoryBus.revoke` then :meth:`MemoryBus.assign`: each delivery ends with a
checkpoint that writes the state stores' journals to their changelog topics, and an assigned
partition's store is loaded back from its changelog, as on Kafka. Records that cannot be handled are kept in
:attr:`MemoryBus.dead_letters` with their reason.

It does not replace the real-broker tests: no network, no batching, no producer failures.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CoroutineType
from typing import cast

from aiokafka import TopicPartition

from ..observation import tracing
from ..observation.metrics import Metrics
from .handling import Emit, Outcome, Rejected, Subscription, batch_end, handle_record
from .topics import Topics


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """The fields of a consumed record the handlers read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


@dataclass
class _Member:
    sub: Subscription
    assigned: set[TopicPartition] = field(default_factory=set)
    position: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryBus:
    """Topics in memory, and subscriptions consuming them (one member each)."""

    def __init__(self, topics: Topics | None = None, partitions: int = 3) -> None:
        self.topics = topics or Topics()
        self.partitions = partitions
        self.log: dict[str, list[list[MemoryRecord]]] = {}
        self.committed: dict[tuple[str, TopicPartition], int] = {}  # (group, tp) -> offset
        self.dead_letters: list[tuple[MemoryRecord, Rejected, str]] = []  # (record, why, role)
        self.members: list[_Member] = []
        self.metrics = Metrics()  # what the roles count, as on the real bus

    # --- topics ---
    def _partitions_of(self, topic: str) -> list[list[MemoryRecord]]:
        return self.log.setdefault(topic, [[] for _ in range(self.partitions)])

    def publish(self, topic: str, value: bytes | None, key: bytes | None = None,
                partition: int | None = None,
                headers: Iterable[tuple[str, bytes]] = ()) -> MemoryRecord:
        """Append a record (to ``partition``, else by a crc32 of the key, else to 0)."""
        parts = self._partitions_of(topic)
        if partition is None:
            partition = zlib.crc32(key) % len(parts) if key is not None else 0
        record = MemoryRecord(topic, partition, len(parts[partition]), key, value, tuple(headers))
        parts[partition].append(record)
        return record

    def records(self, topic: str, partition: int | None = None) -> list[MemoryRecord]:
        parts = self._partitions_of(topic)
        chosen = parts if partition is None else [parts[partition]]
        return [r for part in chosen for r in part]

    # --- subscriptions ---
    async def subscribe(self, sub: Subscription, partitions: Iterable[int] | None = None) -> None:
        """Add ``sub`` as a member owning ``partitions`` (default: all) of each of its topics."""
        member = _Member(sub)
        self.members.append(member)
        await self.assign(sub, partitions)

    def _member(self, sub: Subscription) -> _Member:
        return next(m for m in self.members if m.sub is sub)

    async def assign(self, sub: Subscription, partitions: Iterable[int] | None = None) -> None:
        """Assign partitions; stateful subscriptions rebuild their state from the log."""
        member = self._member(sub)
        wanted = list(range(self.partitions)) if partitions is None else list(partitions)
        new = {TopicPartition(t, p) for t in sub.topics for p in wanted} - member.assigned
        for tp in sorted(new):
            committed = self.committed.get((sub.group_id, tp), 0)
            member.assigned.add(tp)
            member.position[tp] = committed
            if sub.state is not None and tp.topic == sub.topics[0]:
                state = sub.state.open(tp)
                if sub.changelog is not None:
                    self._load(sub.changelog, tp.partition, state)
        if sub.on_assigned is not None and new:
            await sub.on_assigned(None, {tp: member.position[tp] for tp in new})

    async def revoke(self, sub: Subscription, partitions: Iterable[int] | None = None) -> None:
        """Commit what was handled and give ``partitions`` (default: all) away."""
        member = self._member(sub)
        wanted = set(range(self.partitions) if partitions is None else partitions)
        gone = {tp for tp in member.assigned if tp.partition in wanted}
        self._checkpoint(sub)
        for tp in gone:
            self.committed[(sub.group_id, tp)] = member.position.pop(tp)
            member.assigned.discard(tp)
            if sub.state is not None and tp.topic == sub.topics[0]:
                sub.state.close(tp)
        if sub.on_revoked is not None and gone:
            await sub.on_revoked(gone)

    async def drain(self, rounds: int = 100) -> int:
        """Deliver records until no member has any left (outputs may feed other members);
        returns how many records were handled."""
        total = 0
        for _ in range(rounds):
            handled = 0
            for member in self.members:
                handled += await self._deliver(member)
            total += handled
            if not handled:
                return total
        raise RuntimeError(f"still records to deliver after {rounds} rounds (a cycle?)")

    async def _deliver(self, member: _Member) -> int:
        sub = member.sub
        handled = 0
        for tp in sorted(member.assigned):
            log = self._partitions_of(tp.topic)[tp.partition]
            state = sub.state.get(tp) if sub.state is not None else None
            while member.position[tp] < len(log):
                record = log[member.position[tp]]
                member.position[tp] += 1
                handled += 1
                traced = tracing.consuming(sub.role, sub.group_id, record, sub.span_name)
                out: Outcome = None
                try:
                    result = handle_record(sub, record, state)
                    out = cast(Outcome, await result if type(result) is CoroutineType else result)
                    if isinstance(out, Rejected):
                        if sub.dead_letter:
                            self.dead_letters.append((record, out, sub.role))
                    else:
                        self._publish(out)
                finally:
                    tracing.consumed(traced, out.reason if isinstance(out, Rejected) else None)
            self.committed[(sub.group_id, tp)] = member.position[tp]
        if handled:
            self._publish(await batch_end(sub))
        self._checkpoint(sub)
        return handled

    def _checkpoint(self, sub: Subscription) -> None:
        """The stores' journals (and what they seal) to their changelog."""
        states = sub.state
        if states is None or sub.changelog is None:
            return
        for partition, state in states.items():
            changes = state.journal.take()
            if states.taken is not None:
                states.taken(partition, state)
            if states.seal is not None:
                changes.update(states.seal(partition, state))
            for key, value in changes.items():
                self.publish(sub.changelog, value, key.encode(), partition)

    def _load(self, changelog: str, partition: int, state: object) -> None:
        latest: dict[bytes | None, bytes | None] = {}
        for record in self._partitions_of(changelog)[partition]:
            latest.pop(record.key, None)
            latest[record.key] = record.value
        for key, value in latest.items():
            if key is not None and value is not None:
                state.load(key.decode(), value)  # type: ignore[attr-defined]

    def _publish(self, out: Iterable[Emit] | None) -> None:
        for emit in out or ():
            self.publish(emit.topic, emit.value, emit.key, emit.partition,
                         tracing.inject(emit.headers) or ())
