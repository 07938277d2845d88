"""The orders read model: a fold of ``orders.events`` into per-order and per-saga views.

Pure apart from asyncio futures (for :meth:`OrdersView.wait_terminal`); no I/O. Events of one
saga arrive in order (all on its user's partition; :meth:`OrdersView.partition` gives the
saga's own); events of different sagas interleave freely. The fold is idempotent through the saga state machine itself
(:meth:`kafka_saga.core.saga.Saga.apply`): an event it would not act on — a redelivery, a
repeated step, an approval after the end, a second terminal outcome — changes nothing.

The first saga of an order owns it: events of a later saga for the same order (a duplicate
submission the orchestrator refuses) are kept in the sagas index but never change the order.
Stock per item is the catalog's initial stock minus the quantity of every saga whose
``Inventory`` step was approved and not compensated (each saga counted once).

Memory is bounded: full detail (snapshot, history, timestamps) is kept for at most
``max_sagas`` sagas (``QUERY_ORDERS_MAX``). Beyond, the oldest finished saga is evicted
(the oldest unfinished one only when none has finished) and leaves a trace of a few machine
words: its state-machine state and reservation, so later events of it still move the
counters, the funnel and the stock exactly. An evicted order answers with its status only
(:meth:`OrdersView.evicted_order`); it is no longer listed by :meth:`OrdersView.page`.
"""

from __future__ import annotations

import asyncio
import bisect
import sys
from collections import deque
from typing import Any

from ..core.catalog import Catalog
from ..core.compact import IdRefs, IdTable, Names
from ..core.contracts import STATUSES, Event, EventType, Snapshot, Step
from ..core.saga import FAILED, PENDING, REJECTED, STEP_ORDER, TERMINAL, Saga
from .history import history_entry
from .record import SagaRecord

HISTORY_MAX = 50
RECENT_MAX = 200
ORDERS_MAX = 20_000  # QUERY_ORDERS_MAX
# An evicted saga's state word: status | completed << 2 | compensated << 6 | created << 10 |
# reserved << 11 | released << 12 | odd saga id << 13 | quantity << 16 | item index << 36
# (a contract-valid quantity is at most WIRE_MAX_QUANTITY = 10**6 < 2**20)
_CODE = {status: code for code, status in enumerate(STATUSES)}
_STEP_BITS = {step: 1 << n for n, step in enumerate(STEP_ORDER)}
_ODD = 13


def _bits(steps: list[Step]) -> int:
    return sum(_STEP_BITS[step] for step in steps)


def _steps(bits: int) -> list[Step]:
    return [step for step in STEP_ORDER if bits & _STEP_BITS[step]]


class OrdersView:
    """``order_id -> order``, ``saga_id -> saga`` and stock per item, from saga events."""

    def __init__(self, catalog: Catalog | None = None, history_max: int = HISTORY_MAX,
                 max_sagas: int = ORDERS_MAX) -> None:
        self.catalog = catalog or Catalog()
        self.history_max = history_max
        self.max_sagas = max(1, max_sagas)
        self.sagas: dict[str, SagaRecord] = {}  # the window: sagas kept in full
        self.owners: dict[str, str] = {}  # order_id -> saga_id of its first saga (in the window)
        self.by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)  # every saga, evicted too
        self.reserved: dict[str, int] = {}  # item -> quantity held by approved reservations
        self.events = 0  # events applied (changed something)
        self.duplicates = 0  # events that changed nothing
        self.orders_seen = 0
        self.sagas_seen = 0
        self.evicted = 0
        self._sorted: list[str] = []  # saga ids of the window, sorted
        self.latest: deque[str] = deque(maxlen=RECENT_MAX)  # saga ids, newest last
        self._finished: deque[str] = deque()  # saga ids of the window's finished sagas, oldest first
        self._arrived: deque[str] = deque()  # saga ids of the window (and some gone), oldest first
        # order_id -> (saga high, saga low, state, partition + 1 (0: not told))
        self._evicted_owners = IdTable(width=4)
        self._evicted_duplicates = IdTable(width=1)  # saga_id -> (state,)
        self._refs = IdRefs()
        self._items = Names()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # --- folding ------------------------------------------------------------------------

    def apply(self, event: Event, partition: int = -1) -> bool:
        """Fold one event (``partition``: the saga's, from its reply-partition header, when
        told); return False when it changed nothing (a duplicate or a no-op)."""
        record = self.sagas.get(event.saga_id)
        if record is not None:
            return self._apply(record, event)
        order_id = event.snapshot.order_id
        owner_trace = self._evicted_owners.get(order_id)
        if owner_trace is not None:
            high, low, state, where = owner_trace
            if self._refs.find(event.saga_id) == (high, low, state >> _ODD & 1):
                return self._apply_evicted(event, state, (high, low, where))
        duplicate_trace = self._evicted_duplicates.get(event.saga_id)
        if duplicate_trace is not None:
            return self._apply_evicted(event, duplicate_trace[0], None)
        record = self._new_saga(event, owner=owner_trace is None and order_id not in self.owners)
        record.partition = partition
        applied = self._apply(record, event)
        self._evict()
        return applied

    def _apply(self, record: SagaRecord, event: Event) -> bool:
        old_status = record.status
        if not self._advance(record, event):
            self.duplicates += 1
            return False
        self._count(record, old_status)
        if record.terminal and old_status not in TERMINAL:
            self._finished.append(record.saga_id)
        snap = event.snapshot  # event-carried state: the latest wins (its strings shared)
        record.saga.snapshot = Snapshot(
            order_id=record.order_id, user=sys.intern(snap.user), item=sys.intern(snap.item),
            quantity=snap.quantity, sequence=snap.sequence, price_cents=snap.price_cents,
            inventory_available=snap.inventory_available, attributes=snap.attributes)
        if event.occurred_at > record.updated_at:
            record.updated_at = event.occurred_at
        history = record.history
        history.append(history_entry(event))
        if len(history) > self.history_max:
            del history[:len(history) - self.history_max]
        return True

    def _count(self, record: SagaRecord, old_status: str) -> None:
        self.events += 1
        if record.status != old_status:
            self.by_status[old_status] -= 1
            self.by_status[record.status] += 1
        if record.owner and record.terminal and old_status not in TERMINAL:
            self._wake(record.order_id)

    def _new_saga(self, event: Event, owner: bool) -> SagaRecord:
        order_id = event.snapshot.order_id
        if owner:
            self.owners[order_id] = event.saga_id
            self.orders_seen += 1
        record = SagaRecord(event.saga_id, order_id, event.occurred_at, owner,
                            Saga(event.saga_id, event.snapshot), updated_at=event.occurred_at)
        self.sagas[event.saga_id] = record
        bisect.insort(self._sorted, event.saga_id)
        self.latest.append(event.saga_id)
        self._arrived.append(event.saga_id)
        self.by_status[PENDING] += 1
        self.sagas_seen += 1
        return record

    def _advance(self, record: SagaRecord, event: Event) -> bool:
        """The saga state machine's rules (see ``Saga.apply``); True when the event counts."""
        kind, step = event.type, event.step
        if kind is EventType.ORDER_CREATED:
            if record.created:
                return False
            record.created = True
            record.saga.apply(event)  # its origin and its trace
            return True
        if not record.saga.apply(event):
            return False
        if step is Step.INVENTORY and kind is EventType.ORDER_APPROVED and record.reserved is None:
            snap = event.snapshot
            record.reserved = (snap.item, snap.quantity)
            self.reserved[snap.item] = self.reserved.get(snap.item, 0) + snap.quantity
        elif (step is Step.INVENTORY and kind is EventType.ORDER_COMPENSATED
              and record.reserved is not None and not record.released):
            item, quantity = record.reserved
            record.released = True
            self.reserved[item] -= quantity
        return True

    # --- eviction -----------------------------------------------------------------------

    def _evict(self) -> None:
        """Evict the oldest finished sagas (unfinished ones only if none has finished)."""
        while len(self.sagas) > self.max_sagas:
            saga_id = (self._finished or self._arrived).popleft()
            record = self.sagas.pop(saga_id, None)
            if record is None:
                continue  # already evicted (finished)
            del self._sorted[bisect.bisect_left(self._sorted, saga_id)]
            if record.owner:
                del self.owners[record.order_id]
                high, low, odd = self._refs.words(saga_id)
                self._evicted_owners.put(record.order_id, (high, low, self._pack(record) | odd << _ODD,
                                                           max(0, record.partition + 1)))
            else:
                self._evicted_duplicates.put(saga_id, (self._pack(record),))
            self.evicted += 1
        if len(self._arrived) > 2 * len(self.sagas) + 64:  # drop the ids already evicted
            self._arrived = deque(s for s in self._arrived if s in self.sagas)

    def _pack(self, record: SagaRecord) -> int:
        saga = record.saga
        state = (_CODE[saga.status] | _bits(saga.completed) << 2 | _bits(saga.compensated) << 6
                 | record.created << 10 | record.released << 12)
        if record.reserved is not None:
            item, quantity = record.reserved
            state |= 1 << 11 | quantity << 16 | self._items.index(item) << 36
        return state

    def _unpack(self, event: Event, owner: bool, state: int) -> SagaRecord:
        saga = Saga(event.saga_id, event.snapshot, status=STATUSES[state & 3],
                    completed=_steps(state >> 2), compensated=_steps(state >> 6))
        reserved = (self._items[state >> 36], state >> 16 & 0xFFFFF) if state >> 11 & 1 else None
        return SagaRecord(event.saga_id, event.snapshot.order_id, "", owner, saga,
                          created=bool(state >> 10 & 1), reserved=reserved,
                          released=bool(state >> 12 & 1))

    def _apply_evicted(self, event: Event, state: int, owner_ref: tuple[int, int, int] | None) -> bool:
        """An event of an evicted saga (its order's owner when ``owner_ref`` is its id's
        words and its partition word): the same rules, on its trace."""
        record = self._unpack(event, owner_ref is not None, state)
        old_status = record.status
        if not self._advance(record, event):
            self.duplicates += 1
            return False
        self._count(record, old_status)
        if owner_ref is not None:
            high, low, where = owner_ref
            self._evicted_owners.put(record.order_id,
                                     (high, low, self._pack(record) | (state & 1 << _ODD), where))
        else:
            self._evicted_duplicates.put(event.saga_id, (self._pack(record),))
        return True

    # --- reading ------------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any] | None:
        """The order's view (its first saga), or None when unknown or evicted."""
        saga_id = self.owners.get(order_id)
        return self.sagas[saga_id].order_view() if saga_id is not None else None

    def evicted_order(self, order_id: str) -> dict[str, str] | None:
        """What is left of an evicted order: ``{order_id, saga_id, status, step}``, where
        ``step`` is the forward step its saga is at; None unless the order was evicted."""
        trace = self._evicted_owners.get(order_id)
        if trace is None:
            return None
        high, low, state, _ = trace
        step = next((s for s in STEP_ORDER if not state >> 2 & _STEP_BITS[s]), Step.FINALIZE)
        return {"order_id": order_id, "saga_id": self._refs.text(high, low, state >> _ODD & 1),
                "status": STATUSES[state & 3], "step": step.value}

    def status(self, order_id: str) -> str | None:
        """The order's status, evicted or not; None when no event of it was seen."""
        record = self.owner(order_id)
        if record is not None:
            return record.status
        trace = self._evicted_owners.get(order_id)
        return None if trace is None else STATUSES[trace[2] & 3]

    def owner(self, order_id: str) -> SagaRecord | None:
        saga_id = self.owners.get(order_id)
        return self.sagas[saga_id] if saga_id is not None else None

    def partition(self, order_id: str) -> int | None:
        """The partition owning the order's saga, evicted or not: that of its command,
        named by its events' reply-partition header (None when unknown or not told)."""
        record = self.owner(order_id)
        if record is not None:
            return record.partition if record.partition >= 0 else None
        trace = self._evicted_owners.get(order_id)
        return trace[3] - 1 if trace is not None and trace[3] else None

    def page(self, limit: int, after: str | None = None, status: str | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Summaries of the sagas in the window, sorted by saga id after the cursor ``after``;
        and the next cursor."""
        start = bisect.bisect_right(self._sorted, after) if after is not None else 0
        items: list[dict[str, Any]] = []
        for index in range(start, len(self._sorted)):
            record = self.sagas[self._sorted[index]]
            if status is not None and record.status != status:
                continue
            if len(items) == limit:  # one more match exists: there is a next page
                return items, items[-1]["saga_id"]
            items.append(record.summary())
        return items, None

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest sagas first, each with its history (for the live dashboard)."""
        ids = list(self.latest)[-limit:][::-1]
        return [self.sagas[s].order_view() | {"duplicate": not self.sagas[s].owner}
                for s in ids if s in self.sagas]

    def total(self, status: str | None = None) -> int:
        """Sagas seen (with ``status``), evicted ones included."""
        return self.sagas_seen if status is None else self.by_status.get(status, 0)

    def stock(self, item: str) -> int:
        """Initial stock minus what approved, uncompensated reservations hold."""
        return self.catalog.initial_stock(item) - self.reserved.get(item, 0)

    def catalog_view(self) -> dict[str, dict[str, int]]:
        """``{item: {price_cents, stock}}`` with the current stock."""
        return {name: {"price_cents": entry.price_cents, "stock": self.stock(name)}
                for name, entry in self.catalog.items.items()}

    def __len__(self) -> int:
        """Orders seen, evicted ones included."""
        return self.orders_seen

    # --- waiting ------------------------------------------------------------------------

    async def wait_terminal(self, order_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the order to reach approved/rejected/failed.

        Returns True once it is terminal (at once if it already is), False on time-out. The
        order need not be known yet: it may appear, then end, while this waits.
        """
        if self.status(order_id) in TERMINAL:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(order_id, [])
        waiters.append(future)
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
            return bool(done)
        finally:
            if not future.done():
                future.cancel()
            remaining = self._waiters.get(order_id)
            if remaining is not None:
                if future in remaining:
                    remaining.remove(future)
                if not remaining:
                    del self._waiters[order_id]

    def waiting(self) -> int:
        """How many ``wait_terminal`` calls are in progress."""
        return sum(len(w) for w in self._waiters.values())

    def _wake(self, order_id: str) -> None:
        for future in self._waiters.pop(order_id, ()):
            if not future.done():
                future.set_result(None)


__all__ = ["FAILED", "HISTORY_MAX", "ORDERS_MAX", "REJECTED", "STATUSES", "TERMINAL", "OrdersView",
           "SagaRecord"]
