"""Exactly-once checkpoints: one Kafka transaction per owned input partition.

Under ``KAFKA_SAGA_PROCESSING=exactly_once`` (or ``auto`` on a broker with transactions) a
consuming runner opens, for every input partition it is assigned, a transactional producer
whose id names the group and the partition (``<group>.<topic>-<partition>``). What is sent
while handling that partition's records (the handler's outputs, dead letters, the work it
started, e.g. a saga's events) goes into that producer's open transaction, found through a
context variable (:data:`~kafka_saga.bus.producer.scope`) that the loop sets around the
partition's records and that tasks started there inherit.

A checkpoint holds every partition's sends (:meth:`Transactions.hold`: a send waits), takes
the stores' journals, flushes, writes the changelogs into the same transactions, adds the
input offsets (``send_offsets_to_transaction``) and commits each transaction, then opens the
next one: outputs, state and offsets land together or not at all, and readers at
``read_committed`` never see the records of an aborted or unfinished one.

Fencing: the next owner of a partition initialises the same transactional id, which aborts
the previous owner's open transaction and makes its producer's epoch stale; a paused process
that comes back (a zombie) has its sends and its commit refused by the broker
(``ProducerFenced``), counts it in ``kafka_saga_transactions{outcome="fenced"}`` and raises,
so its role restarts from what was committed. aiokafka's ``send_offsets_to_transaction``
carries the group id only (no generation), so the per-partition transactional id is what
fences, as in Kafka Streams' first exactly-once mode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from ..observation import tracing
from .client import Bus
from .fence import Fenced
from .producer import Headers, Outgoing, scope

if TYPE_CHECKING:
    from .stores import StoreKeeper

Send = Callable[..., Awaitable[Outgoing]]
# How long a transaction may stay open before its coordinator aborts it: a transaction its
# producer can no longer finish (the process died, its coordinator moved) holds its readers
# at read_committed back for at most this long.
TRANSACTION_TIMEOUT_MS = 60_000


class TransactionFailed(RuntimeError):
    """A checkpoint transaction could not commit; the role restarts from the last commit."""


class PartitionTransaction:
    """The transactional producer of one input partition, with the transaction now open."""

    def __init__(self, bus: Bus, tp: TopicPartition, transactional_id: str,
                 kafka: Any = None) -> None:
        settings = bus.settings
        self.tp = tp
        self.transactional_id = transactional_id
        self.kafka = kafka or AIOKafkaProducer(
            **bus.options(), acks="all", enable_idempotence=True, linger_ms=settings.linger_ms,
            max_batch_size=256 * 1024, request_timeout_ms=settings.request_timeout_ms,
            transactional_id=transactional_id, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        self.metrics = bus.metrics
        self.open = asyncio.Event()  # set while sends may join the transaction
        self.closed = False
        self.sent = 0  # records in the open transaction
        self.by_topic: dict[str, int] = {}  # of those, per topic (produced once committed)
        self.unacked: set[asyncio.Future[Any]] = set()
        self.error: BaseException | None = None  # the first delivery that failed
        self.committed = self._next_commit()  # done when the open transaction commits

    @staticmethod
    def _next_commit() -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen: never "never retrieved"
        return future

    async def start(self) -> None:
        """Initialise the transactional id (fencing its previous holder) and begin."""
        await self.kafka.start()
        await self.kafka.begin_transaction()
        self.open.set()

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None,
                   headers: Headers | None = None, partition: int | None = None) -> Outgoing:
        """Add a record to the open transaction (waiting while a checkpoint commits)."""
        while not self.open.is_set():
            await self.open.wait()
        return await self.send_now(topic, value, key, headers, partition)

    async def send_now(self, topic: str, value: bytes | None, key: bytes | None = None,
                       headers: Headers | None = None, partition: int | None = None) -> Outgoing:
        """Add a record without waiting for the gate (the checkpoint's own writes)."""
        if self.closed:
            raise Fenced(f"{self.tp.topic}:{self.tp.partition} is no longer held here; "
                         "its next owner carries on from the last commit")
        headers = tracing.inject(headers)  # the trace it is written in goes with it
        record = Outgoing(topic, value, key, headers or [], partition, committed=self.committed)
        future = record.future = await self.kafka.send(topic, value, key=key,
                                                       headers=record.headers, partition=partition)
        self.sent += 1
        self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
        self.unacked.add(future)
        future.add_done_callback(self._acked)
        return record

    def _acked(self, future: asyncio.Future[Any]) -> None:
        self.unacked.discard(future)
        if self.error is None and (future.cancelled() or future.exception() is not None):
            self.error = future.exception() if not future.cancelled() else asyncio.CancelledError()

    async def flush(self) -> None:
        """Wait until every record of the transaction is acknowledged (still uncommitted);
        raise the first delivery error (the transaction can then only abort)."""
        while self.unacked and self.error is None:
            await asyncio.wait(list(self.unacked))
        if self.error is not None:
            raise self.error

    @property
    def dirty(self) -> bool:
        return self.sent > 0

    async def commit(self, offset: int | None, group_id: str) -> bool:
        """Commit the records sent and, if given, the input offset; begin the next one.
        Whether a transaction was committed (nothing to commit: none)."""
        if not self.sent and offset is None:
            self.open.set()
            return False
        await self.flush()
        if offset is not None:
            await self.kafka.send_offsets_to_transaction(
                {self.tp: OffsetAndMetadata(offset, "")}, group_id)
        await self.kafka.commit_transaction()
        self.sent = 0
        for topic, count in self.by_topic.items():  # readers see them from now on
            self.metrics.produced.labels(topic=topic).inc(count)
        self.by_topic = {}
        done, self.committed = self.committed, self._next_commit()
        done.set_result(None)
        await self.kafka.begin_transaction()
        self.open.set()
        return True

    async def close(self) -> None:
        """Give the partition up: abort what is open (nothing, after a checkpoint) and stop."""
        self.closed = True
        self.open.set()  # waiting senders wake up and are refused
        if not self.committed.done():  # whoever waits for the open transaction: it will not commit
            self.committed.set_exception(Fenced(f"{self.tp.topic}:{self.tp.partition}: the "
                                                "transaction was given up before it committed"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kafka.abort_transaction(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kafka.stop(), 10)


class Transactions:
    """The exactly-once side of one consuming runner: a transaction per owned partition."""

    def __init__(self, bus: Bus, group_id: str, role: str, log: Any) -> None:
        self.bus = bus
        self.group_id = group_id
        self.role = role
        self.log = log
        self.by_tp: dict[TopicPartition, PartitionTransaction] = {}
        self.committed = bus.metrics.transactions.labels(role=role, outcome="committed")

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.group_id}.{tp.topic}-{tp.partition}"

    async def open(self, assigned: Iterable[TopicPartition]) -> None:
        """Begin a transaction for every newly assigned partition (fencing its last owner)
        before anything of it is read."""
        new = [PartitionTransaction(self.bus, tp, self.transactional_id(tp))
               for tp in assigned if tp not in self.by_tp]
        if not new:
            return
        results = await asyncio.gather(*(t.start() for t in new), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for txn in new:
            self.by_tp[txn.tp] = txn
            self.bus.transactions[txn.tp] = txn
        if failed:
            raise TransactionFailed(f"could not begin {len(failed)} transaction(s): {failed[0]!r}")

    async def close(self, revoked: Iterable[TopicPartition]) -> None:
        closing = [self.by_tp.pop(tp) for tp in revoked if tp in self.by_tp]
        for txn in closing:
            txn.closed = True  # before any await: nothing joins a transaction being given up
            if self.bus.transactions.get(txn.tp) is txn:
                del self.bus.transactions[txn.tp]
        await asyncio.gather(*(t.close() for t in closing))

    async def close_all(self) -> None:
        await self.close(list(self.by_tp))

    def get(self, tp: TopicPartition) -> PartitionTransaction | None:
        return self.by_tp.get(tp)

    def hold(self) -> None:
        """From now until its commit, a partition's new sends wait for the next transaction."""
        for txn in self.by_tp.values():
            txn.open.clear()

    def release(self) -> None:
        for txn in self.by_tp.values():
            if not txn.closed:
                txn.open.set()

    @property
    def dirty(self) -> bool:
        return any(t.dirty for t in self.by_tp.values())

    async def flush(self) -> None:
        await asyncio.gather(*(t.flush() for t in self.by_tp.values()))

    def owned(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.by_tp if tp.topic == topic}

    def sender(self, topic: str) -> Callable[[int], Send]:
        """The send of partition N of ``topic``'s transaction (for the changelog writes of the
        store of that input partition)."""
        def send_for(partition: int) -> Send:
            txn = self.by_tp.get(TopicPartition(topic, partition))
            return txn.send_now if txn is not None else _NOT_HELD.send
        return send_for

    async def checkpoint(self, stores: StoreKeeper | None, offsets: dict[TopicPartition, int]) -> None:
        """The exactly-once checkpoint: hold new sends, take the stores' journals (a consistent
        cut), flush, write the changelogs into the partitions' transactions, commit each with
        its input offset, then let the held sends into the next transactions."""
        self.hold()
        try:
            cut = stores.take(self.owned(stores.state_topic)) if stores is not None else None
            await self.flush()
            if stores is not None and cut:
                await stores.write(cut, self.sender(stores.state_topic))
            await self.commit(offsets)
            if stores is not None:  # markers after the snapshots now committed: next transaction
                await stores.mark(self.sender(stores.state_topic))
        finally:
            self.release()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit every partition's transaction with its input offset (concurrently)."""
        txns = list(self.by_tp.values())
        results = await asyncio.gather(*(t.commit(offsets.get(t.tp), self.group_id) for t in txns),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.committed.inc(sum(1 for r in results if r is True))
        if not errors:
            return
        fenced = any(isinstance(e, ProducerFenced) for e in errors)
        outcome = "fenced" if fenced else "aborted"
        self.bus.metrics.transactions.labels(role=self.role, outcome=outcome).inc(len(errors))
        self.log.warning("checkpoint transaction failed; the role restarts from the last commit",
                         outcome=outcome, failed=len(errors), error=repr(errors[0])[:200])
        raise TransactionFailed(f"{len(errors)} checkpoint transaction(s) {outcome}: "
                                f"{errors[0]!r}")


def bind(bus: Bus, tp: TopicPartition) -> None:
    """Route the current task's sends into ``tp``'s transaction (exactly-once only): for work
    started outside the loop's handling of that partition (e.g. a saga resumed after a
    restore). A partition not held here makes every send raise :class:`Fenced`."""
    if not bus.exactly_once:
        return
    txn = bus.transactions.get(tp)
    scope.set(txn if txn is not None else _NOT_HELD)


class _NotHeld:
    async def send(self, *_args: Any, **_kwargs: Any) -> Outgoing:
        raise Fenced("the partition of this work is not held here")

    async def flush(self) -> None:
        raise Fenced("the partition of this work is not held here")


_NOT_HELD = _NotHeld()
