"""The consume -> handle -> publish -> flush -> commit loop shared by every consuming role.

A role describes *what* to do with a :class:`~kafka_saga.bus.handling.Subscription` (topics,
group, decoder, a handler that returns what it emits, optional per-partition state);
:func:`consume` is the one runner. Per batch: decode and handle each record
(:func:`~kafka_saga.bus.handling.handle_record`; a record that fails decoding, or whose
handler raises a non-retriable error, goes to the DLQ with its reason and origin, and the
loop continues) and publish what the handler returned, then ``on_batch_end`` (a role
publishes what it accumulated). Per-partition state stores are restored from their changelog
on assignment (:mod:`kafka_saga.bus.stores`). At most every ``commit_interval_ms`` once
records were handled (under exactly-once also at once when idle), on a rebalance and on the
way out comes the checkpoint: the stores' journals are taken, the outputs flushed, the journals written to the changelogs and flushed,
then the offsets of every batch handled so far are committed. A crash re-delivers what was handled
since the last checkpoint: handlers are idempotent. Checkpointing every batch instead would
put a flush and a commit round trip on every record's path at low rates.

A subscription with an :class:`~kafka_saga.bus.inflight.InFlight` bound is flow-controlled:
a governed partition whose work in flight reaches its share of the bound is sought back to
the first record not handled and paused, and resumed at the low-water mark (see
:mod:`kafka_saga.bus.inflight`); the records wait in Kafka.

Each runner reports its progress (records handled, batches committed, lag per partition) to
the supervisor's watchdog (:mod:`kafka_saga.runtime.watchdog`), which restarts a role whose
consumer stopped moving while records wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import CoroutineType
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata

from .. import logs
from ..observation import tracing
from ..observation.progress import Progress
from .client import Bus, retry_until, visible_end
from .handling import (
    Emits,
    Outcome,
    Rejected,
    Subscription,
    batch_end,
    handle_record,
    is_retriable,
)
from .lost_places import LostPlaces
from .ownership import PartitionOwnership, RebalanceFailed, name
from .producer import scope
from .stores import StoreKeeper
from .transactions import Transactions

Partitions = Iterable[TopicPartition]


YIELD_EVERY = 256  # records handled between two turns of the event loop (latency of the rest)

__all__ = ["ConsumerCancelled", "RebalanceFailed", "Subscription", "consume", "consume_workers", "is_retriable", "wait_unless_stopped"]


class _Runner(PartitionOwnership):
    def __init__(self, bus: Bus, sub: Subscription, worker: int) -> None:
        self.bus = bus
        self.sub = sub
        self.worker = worker
        self.log = logs.get("loop", role=sub.role, worker=worker)
        self.consumer: AIOKafkaConsumer  # created by run(), once per start attempt
        self.committed: dict[TopicPartition, int] = {}
        self.handled: dict[TopicPartition, int] = {}
        self.stores = StoreKeeper(bus, sub, self.log) if sub.state is not None and sub.changelog else None
        # exactly-once: a transaction per owned input partition (kafka_saga.bus.transactions)
        self.txns = (Transactions(bus, sub.group_id, sub.role, self.log)
                     if bus.exactly_once and sub.transactional else None)
        self.lock = asyncio.Lock()
        self.failure: Exception | None = None  # what a rebalance listener raised (see below)
        interval_ms = bus.settings.commit_interval_ms
        if interval_ms is None:  # exactly-once: a transaction's records wait for its commit
            interval_ms = 100 if self.txns is not None else 1000
        self.commit_interval_s = interval_ms / 1000
        self.consumed = {t: bus.metrics.consumed.labels(role=sub.role, topic=t) for t in sub.topics}
        self.progress = Progress(sub.role, sub.group_id, worker)
        self.lost = LostPlaces()
        self.gate = sub.in_flight
        if self.gate is not None:  # only flow-controlled roles report these
            self.in_flight_gauge = bus.metrics.in_flight.labels(role=sub.role)
            bus.metrics.in_flight_limit.labels(role=sub.role).set(self.gate.limit)

    # --- the loop ---
    async def run(self, stop: asyncio.Event) -> None:
        async def start() -> None:
            options = dict(self.sub.consumer_options)
            instance = self.bus.settings.instance_id
            if instance:  # static membership: one id per process, group and worker
                options["group_instance_id"] = f"{instance}.{self.sub.group_id}.{self.worker}"
            self.consumer = self.bus.consumer(group_id=self.sub.group_id, **options)
            self.consumer.subscribe(list(self.sub.topics), listener=self)
            try:
                await self.consumer.start()
            except BaseException:
                await self.consumer.stop()
                raise

        await retry_until(f"{self.sub.role} consumer start", self.bus.bootstrap, start, 60)
        if self.sub.fence is not None:
            self.sub.fence.register(self.consumer)
        progress = self.progress
        progress.attach()  # to the watchdog of the supervised role running this task, if any
        clean = False
        next_checkpoint = 0.0
        try:
            while not stop.is_set():
                paused = False
                if self.gate is not None:  # sagas finish between batches: refresh every turn
                    paused = self._resume_with_room()
                    self.in_flight_gauge.set(self.gate.total)
                # while paused, poll often: a partition resumes as soon as its work drains;
                # under exactly-once, work sent meanwhile is visible only once committed
                quick = paused or self.txns is not None
                batches = await self.consumer.getmany(timeout_ms=50 if quick else 200)
                self._raise_rebalance_failure()  # before handling anything more
                if not batches:
                    # idle: under exactly-once commit now (what was sent is invisible until
                    # then); else at the interval, as when busy
                    if (self.txns is not None and self.txns.dirty) or (
                            self.handled and time.monotonic() >= next_checkpoint):
                        async with self.lock:
                            await self._checkpoint()
                        next_checkpoint = time.monotonic() + self.commit_interval_s
                    progress.observe(await self._update_idle_lag())
                    await self._rewind_lost()
                    continue
                async with self.lock:
                    started = time.perf_counter()
                    progress.begin({name(tp): self._waiting_from(tp, records[0].offset, records)
                                    for tp, records in batches.items()})
                    owned = self.consumer.assignment()
                    for tp, records in batches.items():
                        if tp in owned:  # a rebalance may have moved it while we waited
                            await self._handle_records(tp, records)
                        else:
                            progress.settle(name(tp), 0)
                    await self._publish(await batch_end(self.sub))
                    now = time.monotonic()
                    if now >= next_checkpoint:
                        await self._checkpoint()
                        next_checkpoint = now + self.commit_interval_s
                        await self._rewind_lost()  # a partition that fetches nothing is not here
                    progress.end()
                    self.bus.metrics.handle_seconds.labels(role=self.sub.role).observe(
                        time.perf_counter() - started)
            clean = True
        finally:
            progress.detach()
            try:
                if clean:  # after a crash nothing is committed: the batch comes again
                    async with self.lock:
                        await self._checkpoint()
            finally:
                if self.sub.fence is not None:
                    self.sub.fence.unregister(self.consumer)
                if self.txns is not None:  # after a crash, what is open is aborted
                    await self.txns.close_all()
                await self.consumer.stop()
                self.log.info("consumer stopped")

    def _waiting_from(self, tp: TopicPartition, offset: int, records: list[Any]) -> int:
        """Records from ``offset`` to the end of the partition as last seen by the fetcher."""
        end = max(visible_end(self.consumer, tp) or 0, records[-1].offset + 1)
        return max(0, end - offset)

    async def _handle_records(self, tp: TopicPartition, records: list[Any]) -> None:
        sub = self.sub
        progress = self.progress
        gate = self.gate if self.gate is not None and self.gate.governs(tp) else None
        state = self.sub.state.get(tp) if self.sub.state is not None else None
        send = self.bus.producer.send
        txn = self.txns.get(tp) if self.txns is not None else None
        # what the records' handling sends (and the work it starts) joins tp's transaction
        token = scope.set(txn) if txn is not None else None
        try:
            handled = await self._handle_each(tp, records, state, gate, send)
        finally:
            if token is not None:
                scope.reset(token)
        if not handled:
            return
        self.handled[tp] = max(self.handled.get(tp, 0), records[handled - 1].offset + 1)
        self.consumed[tp.topic].inc(handled)
        high = visible_end(self.consumer, tp)
        lag = max(0, (high or 0) - self.handled[tp])
        progress.settle(name(tp), lag)
        if high is not None:
            self.bus.metrics.lag.labels(role=sub.role, topic=tp.topic, partition=str(tp.partition)).set(lag)

    async def _handle_each(self, tp: TopicPartition, records: list[Any], state: Any,
                           gate: Any, send: Any) -> int:
        sub = self.sub
        now = time.time()
        latency = self.bus.metrics.latency
        progress = self.progress
        handled = 0
        for record in records:
            if gate is not None and gate.full(tp):
                self._pause(tp, record.offset)  # the rest waits in Kafka
                break
            handled += 1
            if not handled % YIELD_EVERY:  # let the other roles' work (sagas) step meanwhile
                await asyncio.sleep(0)
            traced = tracing.consuming(sub.role, sub.group_id, record, sub.span_name)  # its trace, current
            rejected = None
            try:
                result = handle_record(sub, record, state)
                out = cast(Outcome, await result if type(result) is CoroutineType else result)
                if isinstance(out, Rejected):
                    rejected = out.reason
                    if out.by_handler:
                        self.bus.metrics.errors.labels(role=sub.role).inc()
                    await self._reject(record, out.reason, out.error)
                elif out:
                    for emit in out:  # delivered by the next checkpoint's flush
                        await send(emit.topic, emit.value, emit.key, emit.headers, partition=emit.partition)
            finally:
                tracing.consumed(traced, rejected)
            if record.timestamp and record.timestamp > 0:
                latency.observe(max(0.0, now - record.timestamp / 1000))
            progress.tick()  # a slow handler that gets through records is not stalled
        return handled

    # --- backpressure ---
    def _pause(self, tp: TopicPartition, offset: int) -> None:
        """Stop fetching ``tp`` at ``offset`` (the first record not handled) until it has room."""
        self.consumer.seek(tp, offset)
        self.consumer.pause(tp)
        assert self.gate is not None
        self.gate.paused.add(tp)
        self._paused_gauge(tp, 1)

    def _resume_with_room(self) -> bool:
        """Resume the paused partitions back at their low-water mark; whether any stay paused."""
        gate = self.gate
        assert gate is not None
        if not gate.paused:
            return False
        mine = self.consumer.assignment()
        still = False
        for tp in list(gate.paused):
            if tp not in mine:
                continue
            if gate.has_room(tp):
                self.consumer.resume(tp)
                gate.paused.discard(tp)
                self._paused_gauge(tp, 0)
            else:
                still = True
        return still

    def _paused_gauge(self, tp: TopicPartition, value: int) -> None:
        self.bus.metrics.paused.labels(role=self.sub.role, topic=tp.topic,
                                       partition=str(tp.partition)).set(value)

    async def _publish(self, out: Emits) -> None:
        """Hand what a handler returned to the producer (delivered by the next checkpoint)."""
        if not out:
            return
        send: Any = self.bus.producer.send
        # under exactly-once, into the transaction of the partition that caused each record
        send_for = self.txns.sender(self.sub.topics[0]) if self.txns is not None else None
        for emit in out:
            if send_for is not None:
                send = send_for(emit.source if emit.source is not None else -1)
            await send(emit.topic, emit.value, emit.key, emit.headers, partition=emit.partition)

    async def _reject(self, record: Any, reason: str, error: str) -> None:
        if self.sub.dead_letter:
            await self.bus.producer.send_to_dlq(record, reason, error, self.sub.role)
        else:
            self.bus.metrics.skipped.labels(role=self.sub.role, reason=reason).inc()
            self.log.warning("unreadable record skipped", reason=reason, error=error[:300],
                             topic=record.topic, partition=record.partition, offset=record.offset)

    async def _checkpoint(self) -> None:
        """Outputs first, then the state stores' changes, then offsets (never commit what is
        not yet safely published); under exactly-once, all three in one transaction per
        partition."""
        stores = self.stores
        if self.txns is not None:
            ends = {tp: offset for tp, offset in self.handled.items()
                    if offset > self.committed.get(tp, -1) and tp in self.committed}
            self.handled.clear()
            await self.txns.checkpoint(stores, ends)
            self.committed.update(ends)
            return
        cut = None
        if stores is not None:
            cut = stores.take({tp.partition for tp in self.committed if tp.topic == stores.state_topic})
        await self.bus.producer.flush()
        if stores is not None and cut and await stores.write(cut):
            await self.bus.producer.flush()
            await stores.mark()
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in self.handled.items()
                   if offset > self.committed.get(tp, -1) and tp in self.committed}
        self.handled.clear()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on without us (our session expired while the broker was away, or
            # a rebalance is under way): whoever owns these partitions now redelivers from the
            # last commit, and the handlers are idempotent. The consumer rejoins on its next
            # fetch; crashing the role would only count towards its restart limit.
            self.log.warning("commit refused: the group moved on; the partitions' next owner "
                             "redelivers from the last commit", error=str(exc)[:200],
                             partitions=len(offsets))
            return
        for tp, meta in offsets.items():
            self.committed[tp] = meta.offset

    async def _rewind_lost(self) -> None:
        """Read again from its start every partition whose place the broker forgot
        (:mod:`~kafka_saga.bus.lost_places`); its records come again, as after a crash."""
        for tp in await self.lost.rewind(self.consumer, self.consumer.assignment(), self.log):
            self.handled.pop(tp, None)
            if tp in self.committed:  # the offsets to come are below the last commit
                self.committed[tp] = 0
            self.bus.metrics.places_lost.labels(role=self.sub.role).inc()

    async def _update_idle_lag(self) -> dict[str, int]:
        """Lag of every assigned partition whose end is known; returned for the watchdog."""
        lags = {}
        for tp in self.consumer.assignment():
            high = visible_end(self.consumer, tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            lag = lags[name(tp)] = max(0, high - position)
            self.bus.metrics.lag.labels(role=self.sub.role, topic=tp.topic,
                                        partition=str(tp.partition)).set(lag)
        return lags


class ConsumerCancelled(RuntimeError):
    """The Kafka client ended a consume loop with a cancellation nobody asked for."""


async def consume(bus: Bus, sub: Subscription, stop: asyncio.Event, worker: int = 0) -> None:
    """Run one member of ``sub.group_id`` until ``stop`` is set; commits on the way out.

    A cancellation raised from inside the client (aiokafka re-raises a cancelled background
    task of its own from ``getmany``) is a crash, with its reason: a task group takes a
    cancelled child for a quiet end, and the role would return as if asked to stop."""
    try:
        await _Runner(bus, sub, worker).run(stop)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # asked for: the role is being stopped or restarted
        raise ConsumerCancelled(f"{sub.role} worker {worker}: the Kafka client cancelled the "
                                "consume loop from inside (a background task of its own ended "
                                "cancelled)") from exc


async def consume_workers(bus: Bus, sub: Subscription, stop: asyncio.Event, workers: int) -> None:
    """``workers`` competing members of the same group, in one task group."""
    async with asyncio.TaskGroup() as group:
        for worker in range(workers):
            group.create_task(consume(bus, sub, stop, worker), name=f"{sub.role}-{worker}")


async def wait_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set first; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
