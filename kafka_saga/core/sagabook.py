"""The sagas of one ``orders.commands`` partition, as a state store. Pure, no I/O.

A :class:`SagaBook` is the orchestrator's per-partition state: the live sagas (running, or
an approved saga compensating after a late reject) and the finished ones it still
remembers, at most ``window`` of them (:class:`~kafka_saga.core.finished.FinishedSagas`),
for duplicate commands and late rejects. Every change goes to its journal as one entry per
saga (``s:<saga_id>`` -> the packed saga, a null once forgotten), which the consume loop
writes to the orchestrator's changelog at each checkpoint.

A saga's transitions are events on ``orders.events``, published before they are applied;
the changelog holds the book as of the last checkpoint. The entry :data:`EVENTS_FROM` says
where, on each events partition, the events written after that checkpoint begin, so a
restore is the changelog plus that tail of ``orders.events`` fed to :meth:`SagaBook.replay`
(applying an event twice changes nothing): no transition is lost or run twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from .contracts import Command, Event, EventType
from .finished import FinishedSagas, pack, settled, unpack
from .saga import Saga
from .store import DEFAULT_WINDOW, Journal

EVENTS_FROM = "~events-from"
SAGA = "s:"


class SagaBook:
    """One commands partition's sagas: live ones, and the finished ones within the window."""

    def __init__(self, partition: int, window: int = DEFAULT_WINDOW) -> None:
        self.partition = partition
        self.live: dict[str, Saga] = {}
        self.by_command: dict[str, str] = {}  # of the live sagas
        self.finished = FinishedSagas(window)
        self.journal = Journal()
        self.events_from: dict[int, int] = {}  # events partition -> offset (see the docstring)
        self.packed: dict[str, bytes] = {}  # live sagas as last journaled (for snapshots)
        self.caught_up = False  # False until the orders.events tail was fed (see replay)

    def __len__(self) -> int:
        return len(self.live) + len(self.finished)

    def knows(self, command: Command) -> bool:
        """Whether ``command`` creates a saga this book already has (a duplicate)."""
        return (command.saga_id in self.live or command.saga_id in self.finished
                or command.command_id in self.by_command
                or self.finished.knows_command(command.command_id))

    def add(self, saga: Saga) -> None:
        """A new saga (or a finished one a late reject brings back), live from now on."""
        self.finished.remove(saga.saga_id)
        self.live[saga.saga_id] = saga
        if saga.command_id:
            self.by_command[saga.command_id] = saga.saga_id
        self.saved(saga)

    def saved(self, saga: Saga) -> None:
        """Record a saga's new state; a settled saga moves to the finished window."""
        key = SAGA + saga.saga_id
        if not settled(saga):
            record = self.packed[saga.saga_id] = pack(saga, self.partition, full=True)
            self.journal.put(key, record)
            return
        self.live.pop(saga.saga_id, None)
        self.packed.pop(saga.saga_id, None)
        if self.by_command.get(saga.command_id) == saga.saga_id:
            del self.by_command[saga.command_id]
        for forgotten in self.finished.add(saga, self.partition):
            self.journal.delete(SAGA + forgotten)
        finished = self.finished.record(saga.saga_id)
        if finished is not None:
            self.journal.put(key, finished)

    def revive(self, saga_id: str) -> Saga | None:
        """The finished saga a late reject still changes (an approved one), live again."""
        done = self.finished.get(saga_id)
        if done is None or done.saga is None:
            return None
        self.add(done.saga)
        return done.saga

    def set_events_from(self, offsets: dict[int, int]) -> bytes:
        """Where the events written after this checkpoint start; the changelog value."""
        self.events_from.update(offsets)
        return orjson.dumps({str(p): o for p, o in sorted(self.events_from.items())})

    # --- the store ---
    def load(self, key: str, value: bytes) -> None:
        if key == EVENTS_FROM:
            self.events_from = {int(p): o for p, o in orjson.loads(value).items()}
            return
        saga_id = key[len(SAGA):]
        saga = unpack(saga_id, value)
        if saga is not None and not settled(saga):
            self.live[saga_id] = saga
            self.packed[saga_id] = value
            if saga.command_id:
                self.by_command[saga.command_id] = saga_id
            return
        self.live.pop(saga_id, None)
        self.packed.pop(saga_id, None)
        self.finished.put_record(saga_id, value)

    def entries(self) -> Iterator[tuple[str, bytes]]:
        yield from self.finished.records()
        for saga_id, record in list(self.packed.items()):  # as journaled: never ahead of it
            yield SAGA + saga_id, record
        if self.events_from:
            yield EVENTS_FROM, self.set_events_from({})

    # --- restore: the events written after the last checkpoint ---
    def replay(self, event: Event, command_partition: int | None) -> Saga | None:
        """Apply one event of the ``orders.events`` tail (in log order); the saga it moved,
        if any. ``command_partition`` is the one an ``OrderCreated`` names: a saga is this
        book's only when created from its partition."""
        saga = self.live.get(event.saga_id)
        if saga is None:
            done = self.finished.get(event.saga_id)
            if done is not None:
                if done.saga is None or not done.saga.apply(event):
                    return None  # rejected or failed, or nothing new: stays finished
                self.add(done.saga)
                return done.saga
            if event.type is not EventType.ORDER_CREATED or command_partition != self.partition:
                return None
            saga = Saga(event.saga_id, event.snapshot, event.command_id)
            saga.apply(event)
            self.add(saga)
            return saga
        if saga.apply(event):
            self.saved(saga)
            return saga
        return None


__all__ = ["EVENTS_FROM", "SagaBook"]
