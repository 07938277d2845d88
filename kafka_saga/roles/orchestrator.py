"""orchestrator: runs each order's saga — Validation -> Payment -> Inventory -> Finalize.

Reads ``orders.commands`` (``OrderCreate``, any key, any partitioner) and ``orders.replies``
(the inventory role's answers, the tracker's rejects, cancels) in one group, co-partitioned
(range assignment; equal partition counts checked at start). A saga belongs to the partition
its ``OrderCreate`` was read from: its answers and rejects come to that partition number of
``orders.replies``, named in the ``reply-partition`` header of each request and each event it
writes. Its events go to its user's partition of ``orders.events`` (see :mod:`.saga_books`).

Every transition goes out as an event before the saga moves on, acknowledged before the saga
waits on the inventory or reports an end; steps repeated after a crash are idempotent.
A partition's sagas are a state store (:class:`~kafka_saga.core.sagabook.SagaBook`) on the
shared loop: written to the orchestrator's changelog at each checkpoint, restored from it on
assignment together with the tail of ``orders.events`` written since that checkpoint, then
every unfinished saga resumes. Each saga runs in its own task, bounded by
``KAFKA_SAGA_MAX_IN_FLIGHT`` (a commands partition at its share is paused; replies never
are). The inventory deadline counts from when the request became readable (acknowledged;
under exactly-once, committed) and expires only once ``orders.replies`` was read up to where
it ended then (see :mod:`.answers`). A sweeper restarts any unfinished saga
left without a task. Details: docs/architecture.md and docs/backpressure.md.
"""

from __future__ import annotations

import asyncio
import logging
import types
from typing import Any

import backoff
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from opentelemetry.trace import SpanKind

from .. import logs
from ..bus.fence import Fence, Fenced
from ..bus.inflight import InFlight
from ..bus.loop import consume_workers, wait_unless_stopped
from ..bus.producer import Outgoing
from ..bus.transactions import bind
from ..core.catalog import Catalog
from ..core.contracts import (
    REPLY_PARTITION,
    Command,
    CommandType,
    Event,
    EventType,
    InventoryRequest,
    Step,
    new_id,
)
from ..core.finished import settled
from ..core.payment import APPROVED, SimulatedGateway, TransientPaymentError
from ..core.saga import FAILED, REJECTED, Ending, Saga, validate
from ..core.sagabook import SagaBook
from ..observation import tracing
from . import saga_trace
from .answers import Answers
from .base import Role
from .saga_books import SagaBooks, partition_of
from .saga_clock import SagaClock

log = logs.get("orchestrator")
ANSWERS = (CommandType.INVENTORY_RESERVED, CommandType.INVENTORY_REFUSED)  # the participant's
SWEEP_INTERVAL_S = 2.0


class OrchestratorRole(Role):
    name = "orchestrator"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.bus = ctx.bus
        self.catalog = Catalog.load(settings.catalog_path)
        self.gateway = ctx.shared.get("payment_gateway") or SimulatedGateway(settings.payment_failure_rate)
        self.books = SagaBooks(self.bus, settings.state_window)  # the sagas, per partition
        self.runners: dict[str, asyncio.Task[None]] = {}
        self.last_event: dict[str, Outgoing] = {}  # each running saga's latest event sent
        self.answers = Answers(self.bus)  # participant answers awaited by running sagas
        self.limit = InFlight(settings.max_in_flight, topics=(self.bus.topics.commands,))
        self.fence = Fence(settings.session_timeout_ms / 3000)
        self.clock = SagaClock(self.bus.metrics)  # per-step latency

    # --- commands ----------------------------------------------------------------------
    async def on_command(self, command: Command, record: Any, book: SagaBook) -> None:
        if record.topic == self.bus.topics.replies:
            self.answers.seen(record)
            if command.type in ANSWERS:
                self.answers.deliver(command)
                return
            if command.type is not CommandType.ORDER_REJECT:
                log.warning("reply ignored: only participant answers and rejects go on replies",
                            order_id=command.snapshot.order_id, saga_id=command.saga_id,
                            type=command.type.value)
                return
        if command.type is CommandType.ORDER_CREATE:
            await self.create(command, record, book)
        elif command.type is CommandType.ORDER_REJECT:
            await self.reject(command, book)
        else:
            log.warning("command ignored: only OrderCreate and OrderReject go on commands",
                        order_id=command.snapshot.order_id, saga_id=command.saga_id,
                        type=command.type.value)

    async def create(self, command: Command, record: Any, book: SagaBook) -> None:
        if book.knows(command):
            log.info("duplicate command ignored", command_id=command.command_id,
                     saga_id=command.saga_id, order_id=command.snapshot.order_id)
            return
        saga = Saga(command.saga_id, command.snapshot, command.command_id,
                    origin=(record.partition, record.offset))
        self.clock.started(saga.saga_id, record.partition, record.timestamp)
        token = tracing.attach_new()  # a command written without a trace starts one here
        try:
            await self.emit(saga, saga.event(EventType.ORDER_CREATED, Step.VALIDATION, metadata={
                "command_partition": str(record.partition), "command_offset": str(record.offset),
                "traceparent": tracing.traceparent()}), flush=False)
            self.start(saga)
        finally:
            tracing.detach(token)

    async def reject(self, command: Command, book: SagaBook) -> None:
        reason = command.metadata.get("reason") or "rejected"
        saga = book.live.get(command.saga_id) or self._revive(command, book, reason)
        if saga is None:
            return
        ending = saga.ending or saga.reject_request(reason)
        if ending is None:
            log.info("reject ignored: saga already ended", saga_id=saga.saga_id,
                     order_id=saga.order_id, status=saga.status)
            return
        runner = self.runners.get(saga.saga_id)
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        log.info("saga rejected by command", saga_id=saga.saga_id, order_id=saga.order_id,
                 reason=reason, was=saga.status)
        await self.finish(saga, ending)

    def _revive(self, command: Command, book: SagaBook, reason: str) -> Saga | None:
        """The finished saga a reject still changes (an approved one), live again until it ends."""
        done = book.finished.get(command.saga_id)
        if done is None:
            log.warning("reject refused: unknown saga, or finished longer ago than the state "
                        "window (KAFKA_SAGA_STATE_WINDOW) remembers", saga_id=command.saga_id,
                        order_id=command.snapshot.order_id, reason=reason)
            return None
        if done.saga is None:
            log.info("reject ignored: saga already ended", saga_id=command.saga_id,
                     order_id=command.snapshot.order_id, status=done.status)
            return None
        return book.revive(command.saga_id)

    # --- the saga itself ---------------------------------------------------------------
    def start(self, saga: Saga) -> None:
        if saga.saga_id not in self.runners and not saga.terminal and partition_of(saga) in self.books.owned:
            runner = asyncio.create_task(self.drive(saga), name=f"saga:{saga.saga_id}")
            self.runners[saga.saga_id] = runner
            self.clock.resumed(saga.saga_id, partition_of(saga))
            partition = TopicPartition(self.bus.topics.commands, partition_of(saga))
            self.limit.begin(partition)
            runner.add_done_callback(lambda _task: self.limit.end(partition))

    async def drive(self, saga: Saga) -> None:
        # exactly-once: the saga's records join its commands partition's transaction
        bind(self.bus, TopicPartition(self.bus.topics.commands, partition_of(saga)))
        tracing.attach_traceparent(saga.trace)  # this task's own context: its order's trace
        try:
            while not saga.terminal:
                if saga.ending is not None:  # resumed half-way through its compensations
                    await self.finish(saga, saga.ending)
                    return
                step = saga.next_step() or Step.FINALIZE
                with saga_trace.step(saga, step):
                    if step is Step.VALIDATION:
                        refusal = validate(saga.snapshot, self.catalog)
                        if refusal:
                            await self.finish(saga, Ending(REJECTED, step, refusal))
                        else:
                            await self.emit(saga, saga.event(EventType.ORDER_APPROVED, step), flush=False)
                    elif step is Step.PAYMENT:
                        await self.pay(saga)
                    elif step is Step.INVENTORY:
                        await self.reserve(saga)
                    else:
                        await self.emit(saga, saga.event(EventType.ORDER_APPROVED, Step.FINALIZE))
        except asyncio.CancelledError:
            raise
        except Fenced:
            log.info("saga held: this process may have lost its partition", saga_id=saga.saga_id,
                     order_id=saga.order_id)
        except Exception as exc:  # noqa: BLE001 - the sweeper resumes the saga
            log.error("saga step failed, will resume", saga_id=saga.saga_id, order_id=saga.order_id,
                      error=f"{type(exc).__name__}: {exc}")
        finally:
            if self.runners.get(saga.saga_id) is asyncio.current_task():
                del self.runners[saga.saga_id]
                self.last_event.pop(saga.saga_id, None)

    async def pay(self, saga: Saga) -> None:
        settings = self.ctx.settings
        tries = 0
        outcome = ""
        error = ""
        waits = backoff.expo(factor=settings.payment_backoff_s, max_value=5)
        next(waits)  # a backoff wait generator starts primed
        while True:  # a plain loop: a decorator built per saga cost more than the step itself
            tries += 1
            try:
                with saga_trace.attempt(saga, Step.PAYMENT, "payment attempt", tries):
                    await self.fence.owned()  # never charge for a saga this process may have lost
                    async with asyncio.timeout(settings.payment_timeout_s):
                        outcome = await self.gateway.charge(saga.saga_id, saga.snapshot)
                break
            except (TransientPaymentError, TimeoutError) as exc:
                error = str(exc) or f"no answer within {settings.payment_timeout_s}s"
                if isinstance(exc, TimeoutError):
                    self.bus.metrics.step_timeouts.labels(step=Step.PAYMENT.value).inc()
                if tries > settings.payment_max_retries:
                    break
                delay = backoff.full_jitter(next(waits))
                log.info("payment attempt failed, retrying", saga_id=saga.saga_id,
                         order_id=saga.order_id, attempt=tries, wait_s=round(delay, 3), error=error[:200])
                await asyncio.sleep(delay)
        if not outcome:
            saga.retry_count = max(saga.retry_count, tries - 1)
            letter = await self.dead_letter(saga, "payment_retries_exhausted", error)
            await self.finish(saga, Ending(FAILED, Step.PAYMENT,
                                           f"payment failed after {tries - 1} retries: {error}"),
                              sent=(letter,))
            return
        if outcome == APPROVED:
            await self.emit(saga, saga.event(EventType.ORDER_APPROVED, Step.PAYMENT, retry_count=tries - 1),
                            flush=False)  # acknowledged with the inventory request that follows
        else:
            await self.finish(saga, Ending(REJECTED, Step.PAYMENT, "payment declined"))

    async def reserve(self, saga: Saga) -> None:
        settings = self.ctx.settings
        if not saga.snapshot.inventory_available or saga.snapshot.attributes.get("inventory") == "unavailable":
            await self.finish(saga, Ending(REJECTED, Step.INVENTORY, "inventory unavailable"))
            return
        snap = saga.snapshot
        request = InventoryRequest(new_id(), saga.saga_id, snap.order_id, snap.item, snap.quantity, "reserve")
        partition = partition_of(saga)
        headers = [(REPLY_PARTITION, str(partition).encode())] if partition >= 0 else []
        for attempt in range(1, settings.inventory_max_tries + 1):
            waiter = self.answers.expect(saga.saga_id)
            try:
                with saga_trace.attempt(saga, Step.INVENTORY, "inventory request", attempt, SpanKind.PRODUCER):
                    await self.fence.owned()
                    # acknowledged with the saga's events before it (their partition keeps order)
                    last = self.last_event.get(saga.saga_id)
                    await self.bus.producer.send_and_wait(self.bus.topics.inventory, request.encode(),
                                                          request.key, headers,
                                                          after=(last,) if last is not None else ())
                    approved, reason = await self.answers.wait(waiter, partition,
                                                               settings.inventory_timeout_s)
                    tracing.describe(approved=approved, reason=reason)
            except TimeoutError:
                self.bus.metrics.step_timeouts.labels(step=Step.INVENTORY.value).inc()
                log.warning("inventory did not answer in time", saga_id=saga.saga_id,
                            order_id=saga.order_id, attempt=attempt)
                continue
            finally:
                self.answers.done(saga.saga_id)
            if approved:
                await self.emit(saga, saga.event(EventType.ORDER_APPROVED, Step.INVENTORY), flush=False)
            else:
                await self.finish(saga, Ending(REJECTED, Step.INVENTORY, reason))
            return
        released = await self.release(saga)  # it may have reserved without us hearing the answer
        letter = await self.dead_letter(saga, "inventory_timeout", "inventory did not answer")
        await self.finish(saga, Ending(FAILED, Step.INVENTORY, "inventory did not answer in time"),
                          sent=(released, letter))

    async def finish(self, saga: Saga, ending: Ending, sent: tuple[Outgoing, ...] = ()) -> None:
        """Compensate completed steps in reverse order, then write the terminal event; each
        event is acknowledged with what the saga sent before it (``sent``: a dead letter, a
        release request)."""
        before = list(sent)
        saga_trace.ended(saga, ending)
        for step in saga.pending_compensations():
            with saga_trace.compensation(saga, step, ending):
                if step is Step.INVENTORY:
                    before.append(await self.release(saga))
                else:
                    await self.fence.owned()
                    await self.gateway.refund(saga.saga_id, saga.snapshot)
                await self.emit(saga, saga.compensation_event(step, ending), after=tuple(before))
            before = []
        await self.emit(saga, saga.terminal_event(ending), after=tuple(before))

    async def release(self, saga: Saga) -> Outgoing:
        snap = saga.snapshot
        request = InventoryRequest(new_id(), saga.saga_id, snap.order_id, snap.item, snap.quantity, "release")
        await self.fence.owned()
        return await self.bus.producer.send(self.bus.topics.inventory, request.encode(), request.key)

    async def emit(self, saga: Saga, event: Event, flush: bool = True,
                   after: tuple[Outgoing, ...] = ()) -> None:
        """Record a transition: apply it, publish it to the saga's user's partition of
        orders.events, then note it in the saga's book; (by default) wait until it is
        acknowledged, with the records ``after`` names (what the saga sent before it).
        The book notes it only once the event is handed to the producer: a checkpoint never
        holds a state whose event could still be lost."""
        await self.fence.owned()  # a paused process writes nothing until it knows it may
        if not saga.apply(event) and event.type is not EventType.ORDER_CREATED:
            if after:
                await self.bus.producer.delivered(*after)
            return
        record = await self.books.publish(saga, event, partition_of(saga))
        self.clock.transition(event, partition_of(saga))
        if flush:  # the saga's own records only (its events: one partition, in order)
            await self.bus.producer.delivered(*after, record)
        elif saga.saga_id in self.runners:
            self.last_event[saga.saga_id] = record
        # terminal outcomes at info; the steps in between at debug (hot path: ~5 per order)
        outcome = saga.terminal or event.type is EventType.ORDER_COMPENSATED
        if outcome or logs.enabled(logging.DEBUG):
            (log.info if outcome else log.debug)(
                "saga event", type=event.type.value, step=event.step.value, saga_id=saga.saga_id,
                order_id=saga.order_id, retry_count=event.retry_count,
                **({"reason": event.error_message} if event.error_message else {}))
        if settled(saga):
            self.gateway.forget(saga.saga_id)

    async def dead_letter(self, saga: Saga, reason: str, error: str) -> Outgoing:
        """Send the saga's original command to the DLQ (rebuilt from the saga's own record)."""
        command = Command(saga.command_id or new_id(), saga.saga_id, CommandType.ORDER_CREATE,
                          saga.snapshot)
        partition, offset = saga.origin or (-1, -1)
        origin = types.SimpleNamespace(topic=self.bus.topics.commands, partition=partition,
                                       offset=offset, key=command.key, value=command.encode(),
                                       headers=[])
        await self.fence.owned()
        return await self.bus.producer.send_to_dlq(origin, reason, error, self.name, saga.retry_count)

    # --- ownership ----------------------------------------------------------------------
    async def assigned(self, _consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        for tp, offset in committed.items():
            if tp.topic == self.bus.topics.replies:
                self.answers.assigned(tp.partition, offset)
        books = await self.books.assigned(committed)
        resumed = 0
        for book in books:
            for saga in list(book.live.values()):
                if not saga.terminal or saga.ending is not None:
                    self.start(saga)
                    resumed += 1
        log.info("sagas resumed", partitions=sorted(b.partition for b in books), resumed=resumed)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        lost = self.books.revoked(partitions)
        self.clock.forget(lost)
        for tp in partitions:
            if tp.topic == self.bus.topics.replies:
                self.answers.revoked(tp.partition)
        for saga_id, runner in list(self.runners.items()):
            saga = self.books.live(saga_id)
            if saga is None or partition_of(saga) in lost:
                self.runners.pop(saga_id, None)
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
        # what the stopped runners already sent must be durable before the next owner
        # restores these sagas (changelog, then the events tail), or it would redo those steps
        await self.bus.producer.flush()

    async def sweep(self, stop: asyncio.Event) -> None:
        """Restart unfinished sagas that lost their task (a step crashed).

        A saga counts as stalled when two sweeps in a row find it without a task: one being
        created (registered, its first event on the way, its task not started yet) is not.
        """
        suspects: set[str] = set()
        while not stop.is_set():
            if not await wait_unless_stopped(stop, SWEEP_INTERVAL_S):
                live = self.books.owned_live()
                idle = {i for i, s in live.items() if not s.terminal and i not in self.runners}
                for saga_id in idle & suspects:
                    saga = live[saga_id]
                    log.warning("resuming a stalled saga", saga_id=saga_id, order_id=saga.order_id)
                    self.start(saga)
                suspects = idle

    async def run(self, stop: asyncio.Event) -> None:
        self.fence.refused = self.bus.metrics.fenced.labels(role=self.name)
        topics = self.bus.topics  # a saga's partition number is used on both
        await self.bus.require_copartitioned(
            (topics.commands, topics.replies),
            "the orchestrator needs the same count on both (a saga's replies go to its "
            "command's partition number)")
        self.books.events_partitions = len(await self.bus.partitions(topics.events))
        commands = self.subscription(
            "orchestrator", Command.decode, self.on_command, state=self.books.states,
            on_assigned=self.assigned, on_revoked=self.revoked, in_flight=self.limit,
            fence=self.fence,
            # co-partitioned: partition N of both topics to the same member
            consumer_options={"partition_assignment_strategy": (RangePartitionAssignor,)})
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(consume_workers(self.bus, commands, stop, self.ctx.options.workers))
                group.create_task(self.sweep(stop))
                group.create_task(self.fence.run(stop))
        finally:
            for runner in list(self.runners.values()):
                runner.cancel()
            await asyncio.gather(*self.runners.values(), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        books = list(self.books.states.values())
        active = sum(1 for b in books for s in b.live.values() if not s.terminal)
        return {"active_sagas": active, "finished_sagas": sum(len(b.finished) for b in books),
                "restored": self.books.restored, "running": len(self.runners),
                "backpressure": self.limit.describe(),
                "fence": {"state": self.fence.state, "pauses": self.fence.pauses,
                          "refused": self.fence.fenced}}

