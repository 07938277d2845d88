"""The consume -> handle -> flush -> commit loop shared by every consuming role.

A role describes *what* to do with a :class:`Subscription` (topics, group, decoder,
handler); :func:`consume` is the one runner. Per batch: decode and handle each record
(a record that fails decoding, or whose handler raises a non-retriable error, goes to the
DLQ with its reason and origin, and the loop continues), then ``on_batch_end`` (a role
publishes what it accumulated). At most every ``commit_interval_ms`` (and at once when idle,
on a rebalance and on the way out) comes the checkpoint: the producer is flushed, then the
offsets of every batch handled so far are committed. A crash re-delivers what was handled
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from .. import logs
from ..core.contracts import ContractError
from ..runtime.watchdog import Progress
from .client import Bus, retry_until
from .inflight import InFlight
from .producer import DeliveryError

Handler = Callable[[Any, Any], Awaitable[None]]
Partitions = Iterable[TopicPartition]
RETRIABLE = (DeliveryError, OSError, asyncio.TimeoutError)


@dataclass
class Subscription:
    """What a role consumes and how it handles each record."""

    role: str
    topics: tuple[str, ...]
    group_id: str
    decode: Callable[[bytes | None], Any]
    handle: Handler
    on_batch_end: Callable[[], Awaitable[None]] | None = None
    on_assigned: Callable[[AIOKafkaConsumer, dict[TopicPartition, int]], Awaitable[None]] | None = None
    on_revoked: Callable[[set[TopicPartition]], Awaitable[None]] | None = None
    consumer_options: dict[str, Any] = field(default_factory=dict)
    # Whether this subscription dead-letters what it cannot read. Exactly one group per topic
    # does (so a bad record lands in the DLQ once); the others, and the DLQ's own reader
    # (never re-publish garbage), count and skip it.
    dead_letter: bool = True
    # Event-sourced state: when set, each assigned partition is re-read from its beginning and
    # records below the committed offset go to ``restore`` (rebuild state, no side effects);
    # the rest go to ``handle`` as usual.
    restore: Handler | None = None
    # Work started per record and finished later (e.g. sagas): bounded, with pause/resume.
    in_flight: InFlight | None = None


def is_retriable(exc: BaseException) -> bool:
    """Retriable errors crash the role (the supervisor restarts it, the batch is redelivered)."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or type(exc).__name__ in ("KafkaConnectionError", "KafkaTimeoutError")
    return isinstance(exc, RETRIABLE)


class _Runner(ConsumerRebalanceListener):
    def __init__(self, bus: Bus, sub: Subscription, worker: int) -> None:
        self.bus = bus
        self.sub = sub
        self.worker = worker
        self.log = logs.get("loop", role=sub.role, worker=worker)
        self.consumer: AIOKafkaConsumer  # created by run(), once per start attempt
        self.committed: dict[TopicPartition, int] = {}
        self.handled: dict[TopicPartition, int] = {}
        self.restore_until: dict[TopicPartition, int] = {}
        self.lock = asyncio.Lock()
        self.commit_interval_s = bus.settings.commit_interval_ms / 1000
        self.consumed = {t: bus.metrics.consumed.labels(role=sub.role, topic=t) for t in sub.topics}
        self.progress = Progress(sub.role, sub.group_id, worker)
        self.gate = sub.in_flight
        if self.gate is not None:  # only flow-controlled roles report these
            self.in_flight_gauge = bus.metrics.in_flight.labels(role=sub.role)
            bus.metrics.in_flight_limit.labels(role=sub.role).set(self.gate.limit)

    # --- rebalance: finish and commit the current batch before giving partitions away ---
    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            if revoked:
                await self._checkpoint()
                for tp in revoked:
                    self.committed.pop(tp, None)
                    self.restore_until.pop(tp, None)
                self.progress.forget(_names(revoked))
                if self.gate is not None:
                    for tp in revoked & self.gate.paused:
                        self._paused_gauge(tp, 0)
                    self.gate.disown(revoked)
                if self.sub.on_revoked:
                    await self.sub.on_revoked(set(revoked))
                self.log.info("partitions revoked", partitions=_names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        async with self.lock:  # no batch is handled while a role restores its state
            await self._assigned(assigned)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        committed = {}
        for tp in assigned:
            committed[tp] = await self.consumer.committed(tp) or 0
        self.committed.update(committed)
        if self.sub.restore is not None:
            self.restore_until.update(committed)
            await self.consumer.seek_to_beginning(*assigned)
            if any(committed.values()):
                self.log.info("restoring state from the log",
                              until={f"{tp.topic}:{tp.partition}": o for tp, o in committed.items()})
        if self.gate is not None:
            self.gate.own(assigned, self.progress.tick)  # finished work is progress
        if self.sub.on_assigned:
            await self.sub.on_assigned(self.consumer, committed)
        self.progress.tick()
        self.log.info("partitions assigned", partitions=_names(assigned))

    # --- the loop ---
    async def run(self, stop: asyncio.Event) -> None:
        async def start() -> None:
            self.consumer = self.bus.consumer(group_id=self.sub.group_id, **self.sub.consumer_options)
            self.consumer.subscribe(list(self.sub.topics), listener=self)
            try:
                await self.consumer.start()
            except BaseException:
                await self.consumer.stop()
                raise

        await retry_until(f"{self.sub.role} consumer start", self.bus.bootstrap, start, 60)
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
                # while paused, poll often: a partition resumes as soon as its work drains
                batches = await self.consumer.getmany(timeout_ms=50 if paused else 200)
                if not batches:
                    if self.handled:  # idle: nothing left to batch with, commit now
                        async with self.lock:
                            await self._checkpoint()
                    progress.observe(await self._update_idle_lag())
                    continue
                async with self.lock:
                    started = time.perf_counter()
                    progress.begin({_name(tp): self._waiting_from(tp, records[0].offset, records)
                                    for tp, records in batches.items()})
                    owned = self.consumer.assignment()
                    for tp, records in batches.items():
                        if tp in owned:  # a rebalance may have moved it while we waited
                            await self._handle_records(tp, records)
                        else:
                            progress.settle(_name(tp), 0)
                    if self.sub.on_batch_end:
                        await self.sub.on_batch_end()
                    now = time.monotonic()
                    if now >= next_checkpoint:
                        await self._checkpoint()
                        next_checkpoint = now + self.commit_interval_s
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
                await self.consumer.stop()
                self.log.info("consumer stopped")

    def _waiting_from(self, tp: TopicPartition, offset: int, records: list[Any]) -> int:
        """Records from ``offset`` to the end of the partition as last seen by the fetcher."""
        end = max(self.consumer.highwater(tp) or 0, records[-1].offset + 1)
        return max(0, end - offset)

    async def _handle_records(self, tp: TopicPartition, records: list[Any]) -> None:
        sub = self.sub
        now = time.time()
        latency = self.bus.metrics.latency
        restore_until = self.restore_until.get(tp, 0)
        progress = self.progress
        gate = self.gate if self.gate is not None and self.gate.governs(tp) else None
        handled = 0
        for record in records:
            if gate is not None and record.offset >= restore_until and gate.full(tp):
                self._pause(tp, record.offset)  # the rest waits in Kafka
                break
            handled += 1
            handler = sub.handle
            if record.offset < restore_until:
                handler = sub.restore  # type: ignore[assignment]
            try:
                message = sub.decode(record.value)
            except ContractError as exc:
                if record.offset >= restore_until:  # dead-lettered the first time round
                    await self._reject(record, exc.reason, str(exc))
            except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the role
                if record.offset >= restore_until:
                    await self._reject(record, "decode_error", f"{type(exc).__name__}: {exc}")
            else:
                try:
                    await handler(message, record)
                except Exception as exc:
                    if is_retriable(exc):
                        raise
                    self.bus.metrics.errors.labels(role=sub.role).inc()
                    await self._reject(record, "handler_error", f"{type(exc).__name__}: {exc}")
            if record.timestamp and record.timestamp > 0:
                latency.observe(max(0.0, now - record.timestamp / 1000))
            progress.tick()  # a slow handler that gets through records is not stalled
        if not handled:
            return
        self.handled[tp] = max(self.handled.get(tp, 0), records[handled - 1].offset + 1)
        self.consumed[tp.topic].inc(handled)
        high = self.consumer.highwater(tp)
        lag = max(0, (high or 0) - self.handled[tp])
        progress.settle(_name(tp), lag)
        if high is not None:
            self.bus.metrics.lag.labels(role=sub.role, topic=tp.topic, partition=str(tp.partition)).set(lag)

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

    async def _reject(self, record: Any, reason: str, error: str) -> None:
        if self.sub.dead_letter:
            await self.bus.producer.send_to_dlq(record, reason, error, self.sub.role)
        else:
            self.bus.metrics.skipped.labels(role=self.sub.role, reason=reason).inc()
            self.log.warning("unreadable record skipped", reason=reason, error=error[:300],
                             topic=record.topic, partition=record.partition, offset=record.offset)

    async def _checkpoint(self) -> None:
        """Outputs first, then offsets (never commit what is not yet safely published)."""
        await self.bus.producer.flush()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self.handled.items()
            if offset > self.committed.get(tp, -1) and tp in self.committed
        }
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

    async def _update_idle_lag(self) -> dict[str, int]:
        """Lag of every assigned partition whose end is known; returned for the watchdog."""
        lags = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = await self.consumer.position(tp)
            lag = lags[_name(tp)] = max(0, high - position)
            self.bus.metrics.lag.labels(role=self.sub.role, topic=tp.topic,
                                        partition=str(tp.partition)).set(lag)
        return lags


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(_name(tp) for tp in tps)


async def consume(bus: Bus, sub: Subscription, stop: asyncio.Event, worker: int = 0) -> None:
    """Run one member of ``sub.group_id`` until ``stop`` is set; commits on the way out."""
    await _Runner(bus, sub, worker).run(stop)


async def consume_workers(bus: Bus, sub: Subscription, stop: asyncio.Event, workers: int) -> None:
    """``workers`` competing members of the same group, in one task group."""
    async with asyncio.TaskGroup() as group:
        for worker in range(workers):
            group.create_task(consume(bus, sub, stop, worker), name=f"{sub.role}-{worker}")
