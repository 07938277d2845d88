"""The one producer of a process: batching, circuit breaker, retries, DLQ.

``send`` only enqueues (aiokafka batches with ``linger_ms``); ``flush`` waits until every
record sent so far is acknowledged, re-sending the ones that failed with exponential
backoff behind a circuit breaker. Callers flush before committing offsets (outputs first,
then offsets: at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import backoff
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from .. import logs
from ..core.contracts import TRUNCATED_HEADER, dlq_headers
from ..observation import tracing
from ..observation.metrics import Metrics

log = logs.get("producer")

Headers = list[tuple[str, bytes]]
# A dead letter keeps the original bytes up to this size (below Kafka's default 1 MB
# message limit); a larger one is cut, with a ``value-truncated`` header giving its size.
DLQ_VALUE_MAX = 512 * 1024


class TransactionScope(Protocol):
    """Where the current task's records go under exactly-once (an input partition's open
    transaction, :mod:`kafka_saga.bus.transactions`)."""

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None,
                   headers: Headers | None = None, partition: int | None = None) -> Outgoing: ...

    async def flush(self) -> None: ...


# Set by the consume loop around a partition's records (and inherited by the tasks started
# there) when the runner is transactional; unset, records go to the shared producer.
scope: ContextVar[TransactionScope | None] = ContextVar("kafka_saga_transaction", default=None)


class DeliveryError(RuntimeError):
    """Records could not be delivered within the retry budget."""


@dataclass(slots=True)
class Outgoing:
    """A record handed to :meth:`Producer.send`; once a flush returned, :attr:`offset` is known."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: Headers
    partition: int | None = None
    future: asyncio.Future[Any] | None = field(default=None)
    # exactly-once: done when the transaction holding the record commits (readers at
    # read_committed see it from then on); None outside a transaction
    committed: asyncio.Future[None] | None = field(default=None)
    counted: bool = False  # in the produced metric already (seen acknowledged)

    @property
    def offset(self) -> int | None:
        """Where the record landed (None until acknowledged)."""
        future = self.future
        if future is None or not future.done() or future.cancelled() or future.exception():
            return None
        return int(future.result().offset)


def _permanent(exc: Exception) -> bool:
    """Give up at once on errors a retry cannot fix (e.g. record too large)."""
    return isinstance(exc, KafkaError) and not exc.retriable and not isinstance(
        exc, CircuitBreakerError
    ) and type(exc).__name__ not in ("KafkaTimeoutError", "KafkaConnectionError", "NodeNotReadyError",
                                     "RequestTimedOutError", "NotLeaderForPartitionError")


def _consume(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        task.result()  # the awaiting caller reports it; never "exception never retrieved"


def _failed(future: asyncio.Future[Any]) -> BaseException | None:
    """The error of a finished delivery future (cancelled counts as failed), else None."""
    return asyncio.CancelledError() if future.cancelled() else future.exception()


class _BreakerWatch(CircuitBreakerListener):
    """Keeps the producer's breaker state, exports each change to the metrics and logs it."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        name = {"OPEN": "open", "HALF_OPEN": "half-open", "CLOSED": "closed"}[new.state.name]
        producer = self.producer
        producer.breaker_state = name
        if name == "open":
            producer.breaker_opened += 1
        producer.metrics.export_breaker(name)
        event = log.warning if name == "open" else log.info
        event("circuit breaker " + name, breaker="producer")


class Producer:
    """A shared, batching producer with a circuit breaker around deliveries.

    The breaker's state is the producer's: :attr:`breaker_state` (``closed``, ``half-open``,
    ``open``, as the breaker last reported it) and :attr:`breaker_opened`; the metrics only
    export it (``kafka_saga_breaker_state``). While it is open, :meth:`send` only enqueues
    and callers that must not wait (the HTTP commands) check :attr:`breaker_open`.
    """

    def __init__(self, kafka: AIOKafkaProducer, metrics: Metrics, *, fail_max: int = 5,
                 reset_s: float = 10.0, retry_max_s: float = 60.0, dlq_topic: str = "orders.dlq") -> None:
        self.kafka = kafka
        self.metrics = metrics
        self.dlq_topic = dlq_topic
        self.retry_max_s = retry_max_s
        self.breaker_state = "closed"
        self.breaker_opened = 0  # times the breaker opened
        self.breaker = CircuitBreaker(
            fail_max=fail_max, timeout_duration=timedelta(seconds=reset_s),
            listeners=[_BreakerWatch(self)], name="producer",
        )
        self._pending: list[Outgoing] = []
        self._last: asyncio.Future[None] | None = None
        self._opening: list[Outgoing] | None = None  # batch of the delivery not yet started
        # one retry policy for every delivery (a decorator built per flush showed in profiles)
        self._attempt = backoff.on_exception(
            backoff.expo, Exception, max_time=lambda: self.retry_max_s, max_value=5,
            giveup=_permanent, on_backoff=self._on_backoff, raise_on_giveup=True, logger=None,
        )(self._attempt_once)

    @property
    def breaker_open(self) -> bool:
        return self.breaker_state == "open"

    async def start(self) -> None:
        await self.kafka.start()

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            await self.kafka.stop()

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None,
                   headers: Headers | None = None, partition: int | None = None) -> Outgoing:
        """Enqueue one record (to ``partition`` if given, else by key); it is delivered by the
        next :meth:`flush` at the latest. Returns the record (its offset once flushed).
        Inside a transaction's scope (exactly-once), the record joins that transaction."""
        headers = tracing.inject(headers)  # the trace it is written in goes with it
        txn = scope.get()
        if txn is not None:
            return await txn.send(topic, value, key, headers, partition)
        record = Outgoing(topic, value, key, headers or [], partition)
        if self.breaker_state != "open":
            try:
                record.future = await self.kafka.send(topic, value, key=key, headers=record.headers,
                                                      partition=partition)
            except KafkaError:
                record.future = None  # re-sent by flush, behind the breaker
        # Pending only once handed to the client: a flush running meanwhile (kafka.send may
        # wait for buffer space or metadata) must not send this record a second time.
        self._pending.append(record)
        return record

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes | None = None,
                            headers: Headers | None = None, after: tuple[Outgoing, ...] = ()) -> None:
        """Send one record and wait until its readers can read it: acknowledged (with the
        records ``after`` names: what it must not overtake), and inside a transaction's scope,
        committed (a deadline that counts from here then measures the reader, not our own
        commit interval)."""
        record = await self.send(topic, value, key, headers)
        await self.delivered(*after, record)
        if record.committed is not None:
            await asyncio.shield(record.committed)

    async def delivered(self, *records: Outgoing) -> None:
        """Wait until ``records`` are acknowledged: only them, not everything enqueued (a
        record acknowledged means the earlier ones of its partition were too: the client
        keeps one request in flight per partition). A record that failed, or never reached
        the client, falls back to :meth:`flush`, which re-sends it behind the breaker.
        Inside a transaction's scope: :meth:`flush` (that transaction's records)."""
        if scope.get() is not None:
            await self.flush()
            return
        for record in records:
            future = record.future
            if future is not None and not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001,S110 - read below: flush re-sends it
                    pass
            if future is None or _failed(future) is not None:
                await self.flush()
                return
        self._count_produced(records)  # acknowledged (a later flush skips them)

    async def send_to_dlq(self, record: Any, reason: str, error: str, role: str,
                          retry_count: int = 0) -> Outgoing:
        """Dead-letter a consumed record: original key and bytes, reason and origin headers."""
        headers = dlq_headers(
            reason=reason, error=error, topic=record.topic, partition=record.partition,
            offset=record.offset, role=role, retry_count=retry_count,
            original=list(record.headers or ()),
        )
        value = record.value
        if value is not None and len(value) > DLQ_VALUE_MAX:
            # the origin (topic, partition, offset) still points at the full record
            headers.append((TRUNCATED_HEADER, str(len(value)).encode()))
            value = value[:DLQ_VALUE_MAX]
        self.metrics.dlq.labels(role=role, reason=reason).inc()
        log.warning("sent to dlq", reason=reason, error=error[:300], role=role,
                    topic=record.topic, partition=record.partition, offset=record.offset)
        return await self.send(self.dlq_topic, value, record.key, headers)

    async def flush(self) -> None:
        """Wait until every record enqueued so far is acknowledged (retrying behind the breaker).

        Each call hands the records pending now to a delivery that starts at once but
        completes only after the delivery before it (a chain), so waiting for the newest
        delivery means everything sent before this call is durable — for any caller, in
        O(1), without serialising the deliveries themselves. Flushes made before the newest
        delivery has started (e.g. many sagas stepping in one event-loop turn) join its batch.
        Inside a transaction's scope: that transaction's records (acknowledged, uncommitted).
        """
        txn = scope.get()
        if txn is not None:
            await txn.flush()
            return
        if self._pending:
            if self._opening is not None:
                self._opening.extend(self._pending)
                self._pending = []
            else:
                batch, self._pending = self._pending, []
                self._opening = batch
                self._last = asyncio.ensure_future(self._deliver_after(self._last, batch))
        last = self._last
        if last is None:
            return
        try:
            await asyncio.shield(last)
        except Exception:
            if self._last is last:
                self._last = None  # reported once to every waiter; later deliveries start afresh
            raise

    async def flush_within(self, timeout: float | None) -> None:
        """:meth:`flush`, waiting at most ``timeout`` seconds (None: no limit).

        ``TimeoutError`` when the broker did not acknowledge in time; the flush itself is never
        cancelled (the producer is shared: other callers' records ride on it), it goes on and
        the records may still land. Its outcome is then left to those other callers.
        """
        flush = asyncio.ensure_future(self.flush())
        flush.add_done_callback(_consume)
        await asyncio.wait_for(asyncio.shield(flush), timeout)

    async def _deliver_after(self, previous: asyncio.Future[None] | None, batch: list[Outgoing]) -> None:
        if self._opening is batch:
            self._opening = None  # started: later flushes start the next delivery
        await self._deliver_with_retries(batch)
        if previous is not None:
            await previous

    async def _deliver_with_retries(self, batch: list[Outgoing]) -> None:
        try:
            await self._attempt(batch)
        except Exception as exc:
            raise DeliveryError(f"{len(batch)} record(s) not delivered: {exc!r}") from exc

    async def _attempt_once(self, batch: list[Outgoing]) -> None:
        await self.breaker.call_async(self._deliver, batch)

    @staticmethod
    def _on_backoff(details: Any) -> None:
        exc = details.get("exception")
        log.warning("delivery failed, retrying", tries=details["tries"],
                    wait_s=round(details["wait"], 3), error=repr(exc)[:200])

    def _count_produced(self, records: Iterable[Outgoing]) -> None:
        """Count acknowledged records in the produced metric, each once (whichever of
        :meth:`delivered` and :meth:`flush` saw it acknowledged first)."""
        by_topic: dict[str, int] = {}
        for rec in records:
            if not rec.counted:
                rec.counted = True
                by_topic[rec.topic] = by_topic.get(rec.topic, 0) + 1
        for topic, count in by_topic.items():
            self.metrics.produced.labels(topic=topic).inc(count)

    async def _deliver(self, batch: list[Outgoing]) -> None:
        for rec in batch:
            if rec.future is None or (rec.future.done() and _failed(rec.future)):
                rec.future = await self.kafka.send(rec.topic, rec.value, key=rec.key, headers=rec.headers,
                                                   partition=rec.partition)
        for rec in batch:  # records of one produce request complete together: few real waits
            future = rec.future
            if not future.done():  # type: ignore[union-attr]
                try:
                    await future  # type: ignore[misc]
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this delivery itself is cancelled, not just the record's future
                except Exception:  # noqa: BLE001,S110 - every outcome is read below
                    pass
        acknowledged: list[Outgoing] = []
        failed: list[Outgoing] = []
        error: BaseException | None = None
        for rec in batch:
            result = _failed(rec.future)  # type: ignore[arg-type]
            if result is not None:
                failed.append(rec)
                error = result
            else:
                acknowledged.append(rec)
        self._count_produced(acknowledged)
        if error is not None:
            batch[:] = failed  # only these are re-sent on the next attempt
            raise error
