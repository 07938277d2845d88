"""orchestrator: runs each order's saga — Validation -> Payment -> Inventory -> Finalize.

Commands come in on ``orders.commands`` (``OrderCreate`` from clients, keyed and partitioned
however the client likes); messages to running sagas on ``orders.replies`` (the inventory
participant's answers, the tracker's rejects, cancels from ``kafka-saga cancel`` and the API),
read by the same consumer group, co-partitioned with the commands (range assignment, same
partition count, checked at start). Every state transition goes out as an event on
``orders.events`` before the saga moves on, and is acknowledged by the broker before the
saga waits on the inventory participant or reports an end. In between, the saga does not
wait for acknowledgements: the steps it may repeat after a crash lost an unacknowledged
event are idempotent (validation is pure; the payment gateway and the inventory ledger
answer a repeated request for the same saga id the same way). Saga state is never stored
elsewhere: when this process is assigned a commands partition it re-reads the same partition
of ``orders.events`` and resumes every unfinished saga, so a ``kill -9`` or a rebalance
loses nothing.

A saga belongs to the partition its ``OrderCreate`` was read from; everything of it goes to
that partition number explicitly, never by a key hash a client may disagree with (librdkafka
hashes with crc32, Java with murmur2; a client may use another key, or none): its events on
``orders.events``, its answers and rejects on ``orders.replies``.

Backpressure: each saga runs in its own task, counted against ``KAFKA_SAGA_MAX_IN_FLIGHT``
(:mod:`kafka_saga.bus.inflight`); a commands partition at its share of the bound is paused
and the backlog waits in Kafka. ``orders.replies`` is never paused, so the answers a running
saga waits for never queue behind new orders. The inventory deadline counts from the
broker's acknowledgement of the request, and expires only once this process has read
``orders.replies`` up to where it ended at the deadline: an answer that arrived while we
were busy is not the participant being late. A sweeper restarts any unfinished saga left
without a task, so no saga stays pending forever.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

import backoff
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from .. import logs
from ..bus.follow import read_topic
from ..bus.inflight import InFlight
from ..bus.loop import Subscription, consume_workers
from ..config import ConfigError
from ..core.catalog import Catalog
from ..core.contracts import Command, CommandType, Event, EventType, InventoryRequest, Step, new_id
from ..core.finished import FinishedSagas, SagaRestore, settled
from ..core.payment import APPROVED, SimulatedGateway, TransientPaymentError
from ..core.saga import FAILED, REJECTED, Ending, Saga, validate
from .answers import Answers
from .base import Role
from .inventory import REPLY_PARTITION, InventoryParticipant
from .inventory import SOURCE as INVENTORY_SOURCE

log = logs.get("orchestrator")
SWEEP_INTERVAL_S = 2.0


class OrchestratorRole(Role):
    name = "orchestrator"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        settings = ctx.settings
        self.bus = ctx.bus
        self.catalog = Catalog.load(settings.catalog_path)
        self.gateway = ctx.shared.get("payment_gateway") or SimulatedGateway(settings.payment_failure_rate)
        self.inventory = InventoryParticipant(self.bus, self.catalog)
        self.sagas: dict[str, Saga] = {}  # live: running, or being compensated by a late reject
        self.partition_of: dict[str, int] = {}  # of the live sagas
        self.by_command: dict[str, str] = {}  # of the live sagas
        self.finished = FinishedSagas(settings.finished_sagas_max)  # packed, bounded
        self.restored = 0  # sagas rebuilt from orders.events, in all (finished or not)
        self.runners: dict[str, asyncio.Task[None]] = {}
        self.answers = Answers(self.bus)  # participant answers awaited by running sagas
        self.limit = InFlight(settings.max_in_flight, topics=(self.bus.topics.commands,))

    # --- commands ----------------------------------------------------------------------
    async def on_command(self, command: Command, record: Any) -> None:
        if record.topic == self.bus.topics.replies:
            self.answers.seen(record)
            if command.metadata.get("source") == INVENTORY_SOURCE:
                self.answers.deliver(command)
                return
            if command.type is not CommandType.ORDER_REJECT:
                log.warning("reply ignored: only participant answers and rejects go on replies",
                            order_id=command.snapshot.order_id, saga_id=command.saga_id,
                            type=command.type.value)
                return
        if command.type is CommandType.ORDER_CREATE:
            await self.create(command, record)
        elif command.type is CommandType.ORDER_REJECT:
            await self.reject(command)
        else:
            log.warning("command ignored: OrderApprove is only a participant's answer",
                        order_id=command.snapshot.order_id, saga_id=command.saga_id)

    async def create(self, command: Command, record: Any) -> None:
        if (command.saga_id in self.sagas or command.saga_id in self.finished
                or command.command_id in self.by_command
                or self.finished.knows_command(command.command_id)):
            log.info("duplicate command ignored", command_id=command.command_id,
                     saga_id=command.saga_id, order_id=command.snapshot.order_id)
            return
        saga = Saga(command.saga_id, command.snapshot, command.command_id,
                    origin=(record.partition, record.offset))
        self._register(saga, record.partition)
        await self.emit(saga, saga.event(EventType.ORDER_CREATED, Step.VALIDATION, metadata={
            "command_partition": str(record.partition), "command_offset": str(record.offset)}),
            flush=False)
        self.start(saga)

    async def reject(self, command: Command) -> None:
        reason = command.metadata.get("reason") or "rejected"
        saga = self.sagas.get(command.saga_id) or self._revive(command, reason)
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

    def _revive(self, command: Command, reason: str) -> Saga | None:
        """The finished saga a reject still changes (an approved one), live again until it ends."""
        done = self.finished.get(command.saga_id)
        if done is None:
            log.warning("reject for an unknown saga ignored", saga_id=command.saga_id,
                        order_id=command.snapshot.order_id, reason=reason)
        elif done.saga is None:
            log.info("reject ignored: saga already ended", saga_id=command.saga_id,
                     order_id=command.snapshot.order_id, status=done.status)
        else:
            self._register(done.saga, done.partition)
        return done.saga if done else None

    # --- the saga itself ---------------------------------------------------------------
    def start(self, saga: Saga) -> None:
        if saga.saga_id not in self.runners and not saga.terminal:
            runner = asyncio.create_task(self.drive(saga), name=f"saga:{saga.saga_id}")
            self.runners[saga.saga_id] = runner
            partition = TopicPartition(self.bus.topics.commands, self.partition_of.get(saga.saga_id, -1))
            self.limit.begin(partition)
            runner.add_done_callback(lambda _task: self.limit.end(partition))

    async def drive(self, saga: Saga) -> None:
        try:
            while not saga.terminal:
                if saga.ending is not None:  # resumed half-way through its compensations
                    await self.finish(saga, saga.ending)
                    return
                step = saga.next_step()
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
        except Exception as exc:  # noqa: BLE001 - the sweeper resumes the saga
            log.error("saga step failed, will resume", saga_id=saga.saga_id, order_id=saga.order_id,
                      error=f"{type(exc).__name__}: {exc}")
        finally:
            if self.runners.get(saga.saga_id) is asyncio.current_task():
                del self.runners[saga.saga_id]

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
            await self.dead_letter(saga, "payment_retries_exhausted", error)
            await self.finish(saga, Ending(FAILED, Step.PAYMENT,
                                           f"payment failed after {tries - 1} retries: {error}"))
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
        partition = self.partition_of.get(saga.saga_id, -1)
        headers = [(REPLY_PARTITION, str(partition).encode())] if partition >= 0 else []
        for attempt in range(1, settings.inventory_max_tries + 1):
            waiter = self.answers.expect(saga.saga_id)
            try:
                await self.bus.producer.send_and_wait(self.bus.topics.inventory, request.encode(),
                                                      request.key, headers)
                approved, reason = await self.answers.wait(waiter, partition, settings.inventory_timeout_s)
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
        await self.release(saga)  # it may have reserved without us hearing the answer
        await self.dead_letter(saga, "inventory_timeout", "inventory did not answer")
        await self.finish(saga, Ending(FAILED, Step.INVENTORY, "inventory did not answer in time"))

    async def finish(self, saga: Saga, ending: Ending) -> None:
        """Compensate completed steps in reverse order, then write the terminal event."""
        for step in saga.pending_compensations():
            if step is Step.INVENTORY:
                await self.release(saga)
            else:
                await self.gateway.refund(saga.saga_id, saga.snapshot)
            await self.emit(saga, saga.compensation_event(step, ending))
        await self.emit(saga, saga.terminal_event(ending))

    async def release(self, saga: Saga) -> None:
        snap = saga.snapshot
        request = InventoryRequest(new_id(), saga.saga_id, snap.order_id, snap.item, snap.quantity, "release")
        await self.bus.producer.send(self.bus.topics.inventory, request.encode(), request.key)

    async def emit(self, saga: Saga, event: Event, flush: bool = True) -> None:
        """Record a transition: apply it, publish it to the saga's partition of orders.events
        (its command's: where its owner restores it from), and (by default) wait until durable."""
        if not saga.apply(event) and event.type is not EventType.ORDER_CREATED:
            return
        await self.bus.producer.send(self.bus.topics.events, event.encode(), event.key,
                                     partition=self._partition(saga))
        if flush:
            await self.bus.producer.flush()
        # terminal outcomes at info; the steps in between at debug (hot path: ~5 per order)
        (log.info if saga.terminal or event.type is EventType.ORDER_COMPENSATED else log.debug)(
            "saga event", type=event.type.value, step=event.step.value, saga_id=saga.saga_id,
            order_id=saga.order_id, retry_count=event.retry_count,
            **({"reason": event.error_message} if event.error_message else {}))
        if settled(saga):
            self._retire(saga)

    async def dead_letter(self, saga: Saga, reason: str, error: str) -> None:
        """Send the saga's original command to the DLQ (rebuilt from the saga's own record)."""
        command = Command(saga.command_id or new_id(), saga.saga_id, CommandType.ORDER_CREATE,
                          saga.snapshot)
        partition, offset = saga.origin or (-1, -1)
        origin = types.SimpleNamespace(topic=self.bus.topics.commands, partition=partition,
                                       offset=offset, key=command.key, value=command.encode(),
                                       headers=[])
        await self.bus.producer.send_to_dlq(origin, reason, error, self.name, saga.retry_count)

    # --- ownership and memory ----------------------------------------------------------
    def _partition(self, saga: Saga) -> int | None:
        """The partition owning ``saga``: its command's (None, by key, only when unknown)."""
        partition = self.partition_of.get(saga.saga_id, saga.origin[0] if saga.origin else -1)
        return partition if partition >= 0 else None

    def _register(self, saga: Saga, partition: int) -> None:
        self.sagas[saga.saga_id] = saga
        self.partition_of[saga.saga_id] = partition
        if saga.command_id:
            self.by_command[saga.command_id] = saga.saga_id

    def _retire(self, saga: Saga) -> None:
        """A finished saga is packed (for duplicates and late rejects), up to a bound."""
        partition = self.partition_of.get(saga.saga_id, -1)
        self._forget(saga.saga_id)
        self.gateway.forget(saga.saga_id)
        self.finished.add(saga, partition)

    def _forget(self, saga_id: str) -> None:
        saga = self.sagas.pop(saga_id, None)
        self.partition_of.pop(saga_id, None)
        if saga is not None:
            self.by_command.pop(saga.command_id, None)

    async def assigned(self, _consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        topics = self.bus.topics
        for tp, offset in committed.items():
            if tp.topic == topics.replies:
                self.answers.assigned(tp.partition, offset)
        partitions = sorted(tp.partition for tp in committed if tp.topic == topics.commands)
        restore = SagaRestore(self.ctx.settings.finished_sagas_max)

        def apply(record: Any) -> None:
            try:
                restore.feed(Event.decode(record.value), record.partition)
            except ValueError as exc:  # one bad record must not stop the restore of the others
                log.warning("event skipped during restore", partition=record.partition,
                            offset=record.offset, error=str(exc)[:200])

        await read_topic(self.bus, self.bus.topics.events, apply, partitions=partitions)
        for saga, partition in restore.unfinished.values():  # registered only once complete:
            self._register(saga, partition)  # no half-built saga runs
        self.finished.merge(restore.finished)
        self.restored += restore.sagas
        unfinished = [s for s, _ in restore.unfinished.values() if not s.terminal]
        for saga in unfinished:
            self.start(saga)
        log.info("sagas restored from orders.events", partitions=partitions,
                 sagas=restore.sagas, finished=len(restore.finished), resumed=len(unfinished))

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions if tp.topic == self.bus.topics.commands}
        for tp in partitions:
            if tp.topic == self.bus.topics.replies:
                self.answers.revoked(tp.partition)
        for saga_id in [s for s, p in self.partition_of.items() if p in lost]:
            runner = self.runners.pop(saga_id, None)
            if runner is not None:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            self._forget(saga_id)
        self.finished.remove_partitions(lost)
        # what the stopped runners already sent must be durable before the next owner
        # restores these sagas from orders.events, or it would redo those steps
        await self.bus.producer.flush()

    async def sweep(self, stop: asyncio.Event) -> None:
        """Restart unfinished sagas that lost their task (a step crashed).

        A saga counts as stalled when two sweeps in a row find it without a task: one being
        created (registered, its first event on the way, its task not started yet) is not.
        """
        suspects: set[str] = set()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL_S)
            except TimeoutError:
                idle = {s.saga_id for s in self.sagas.values()
                        if not s.terminal and s.saga_id not in self.runners}
                for saga_id in idle & suspects:
                    saga = self.sagas[saga_id]
                    log.warning("resuming a stalled saga", saga_id=saga_id, order_id=saga.order_id)
                    self.start(saga)
                suspects = idle

    async def check_partitions(self) -> None:
        """A saga's partition number is used on all three topics: their counts must be equal
        (a :class:`ConfigError` stops the process; no restart can fix it)."""
        topics = self.bus.topics
        counts = {t: len(await self.bus.partitions(t))
                  for t in (topics.commands, topics.events, topics.replies)}
        if len(set(counts.values())) > 1:
            raise ConfigError(", ".join(f"{t} has {n} partitions" for t, n in counts.items())
                              + ": the orchestrator needs the same count on all three (a saga's "
                              "events and replies go to its command's partition number)")

    async def run(self, stop: asyncio.Event) -> None:
        await self.check_partitions()
        topics, workers = self.bus.topics, self.ctx.options.workers
        commands = Subscription("orchestrator", (topics.commands, topics.replies),
                                topics.group("orchestrator"), Command.decode, self.on_command,
                                on_assigned=self.assigned, on_revoked=self.revoked,
                                in_flight=self.limit,
                                # co-partitioned: partition N of both topics to the same member
                                consumer_options={"partition_assignment_strategy":
                                                  (RangePartitionAssignor,)})
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(consume_workers(self.bus, self.inventory.subscription(), stop, workers))
                group.create_task(consume_workers(self.bus, commands, stop, workers))
                group.create_task(self.sweep(stop))
        finally:
            for runner in list(self.runners.values()):
                runner.cancel()
            await asyncio.gather(*self.runners.values(), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        active = sum(1 for s in self.sagas.values() if not s.terminal)
        return {"active_sagas": active, "finished_sagas": len(self.finished), "restored": self.restored,
                "running": len(self.runners), "backpressure": self.limit.describe(),
                "stock": self.inventory.stock()}
