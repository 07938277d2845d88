"""The orders read model: a fold of ``orders.events`` into per-order and per-saga views.

Pure apart from asyncio futures (for :meth:`OrdersView.wait_terminal`); no I/O. Events of one
order arrive in order (the topic is keyed by ``order_id``); events of different orders
interleave freely. The fold is idempotent: an event already seen (same ``event_id``) changes
nothing, and so does an event the saga state machine would not act on (a repeated step, an
approval after the end, a second terminal outcome) — the same rules as
:meth:`kafka_saga.core.saga.Saga.apply`.

The first saga of an order owns it: events of a later saga for the same order (a duplicate
submission the orchestrator refuses) are kept in the sagas index but never change the order.
Stock per item is the catalog's initial stock minus the quantity of every saga whose
``Inventory`` step was approved and not compensated (each saga counted once).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..core.catalog import Catalog
from ..core.contracts import Event, EventType, Snapshot, Step
from ..core.saga import APPROVED, FAILED, PENDING, REJECTED, TERMINAL, Saga

STATUSES = (PENDING, APPROVED, REJECTED, FAILED)
HISTORY_MAX = 50
RECENT_MAX = 200


@dataclass(slots=True)
class SagaRecord:
    """What the view knows of one saga."""

    saga_id: str
    order_id: str
    snapshot: Snapshot
    created_at: str
    owner: bool
    saga: Saga  # the state machine the orchestrator itself uses: one set of transition rules
    updated_at: str = ""
    created: bool = False
    reserved: tuple[str, int] | None = None  # (item, quantity) taken by its Inventory step
    released: bool = False
    seen: set[str] = field(default_factory=set)  # event ids applied or ignored
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))

    @property
    def status(self) -> str:
        return self.saga.status

    @property
    def step(self) -> Step:
        return self.saga.step

    @property
    def reason(self) -> str:
        return self.saga.reason

    @property
    def retry_count(self) -> int:
        return self.saga.retry_count

    @property
    def terminal(self) -> bool:
        return self.saga.terminal

    def next_step(self) -> Step:
        """The forward step the saga is at (Finalize once every step is approved)."""
        return self.saga.next_step() or Step.FINALIZE

    def order_view(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "order_id": self.order_id, "saga_id": self.saga_id, "user": snap.user,
            "item": snap.item, "quantity": snap.quantity, "price_cents": snap.price_cents,
            "status": self.status, "step": self.step.value, "reason": self.reason,
            "retry_count": self.retry_count, "created_at": self.created_at,
            "updated_at": self.updated_at, "history": list(self.history),
        }

    def summary(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "saga_id": self.saga_id, "order_id": self.order_id, "user": snap.user,
            "item": snap.item, "quantity": snap.quantity, "status": self.status,
            "step": self.step.value, "reason": self.reason, "retry_count": self.retry_count,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "duplicate": not self.owner,
        }


class OrdersView:
    """``order_id -> order``, ``saga_id -> saga`` and stock per item, from saga events."""

    def __init__(self, catalog: Catalog | None = None, history_max: int = HISTORY_MAX) -> None:
        self.catalog = catalog or Catalog()
        self.history_max = history_max
        self.sagas: dict[str, SagaRecord] = {}
        self.owners: dict[str, str] = {}  # order_id -> saga_id of its first saga
        self.by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.reserved: dict[str, int] = {}  # item -> quantity held by approved reservations
        self.events = 0  # events applied (changed something)
        self.duplicates = 0  # events that changed nothing
        self._sorted: list[str] = []  # saga ids, sorted
        self.latest: deque[str] = deque(maxlen=RECENT_MAX)  # saga ids, newest last
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    # --- folding ------------------------------------------------------------------------

    def apply(self, event: Event) -> bool:
        """Fold one event; return False when it changed nothing (a duplicate or a no-op)."""
        record = self.sagas.get(event.saga_id)
        if record is None:
            record = self._new_saga(event)
        if event.event_id in record.seen:
            self.duplicates += 1
            return False
        record.seen.add(event.event_id)
        old_status = record.status
        if not self._advance(record, event):
            self.duplicates += 1
            return False
        self.events += 1
        if record.status != old_status:
            self.by_status[old_status] -= 1
            self.by_status[record.status] += 1
        record.snapshot = event.snapshot  # event-carried state: the latest wins
        if event.occurred_at > record.updated_at:
            record.updated_at = event.occurred_at
        record.history.append({
            "type": event.type.value, "step": event.step.value, "occurred_at": event.occurred_at,
            "retry_count": event.retry_count, "error_message": event.error_message,
        })
        if record.owner and record.terminal and old_status not in TERMINAL:
            self._wake(record.order_id)
        return True

    def _new_saga(self, event: Event) -> SagaRecord:
        order_id = event.snapshot.order_id
        owner = order_id not in self.owners
        if owner:
            self.owners[order_id] = event.saga_id
        record = SagaRecord(event.saga_id, order_id, event.snapshot, event.occurred_at, owner,
                            Saga(event.saga_id, event.snapshot, event.command_id),
                            updated_at=event.occurred_at,
                            history=deque(maxlen=self.history_max))
        self.sagas[event.saga_id] = record
        bisect.insort(self._sorted, event.saga_id)
        self.latest.append(event.saga_id)
        self.by_status[PENDING] += 1
        return record

    def _advance(self, record: SagaRecord, event: Event) -> bool:
        """The saga state machine's rules (see ``Saga.apply``); True when the event counts."""
        kind, step = event.type, event.step
        if kind is EventType.ORDER_CREATED:
            if record.created:
                return False
            record.created = True
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

    # --- reading ------------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any] | None:
        """The order's view (its first saga), or None when no event of it was seen."""
        saga_id = self.owners.get(order_id)
        return self.sagas[saga_id].order_view() if saga_id is not None else None

    def owner(self, order_id: str) -> SagaRecord | None:
        saga_id = self.owners.get(order_id)
        return self.sagas[saga_id] if saga_id is not None else None

    def page(self, limit: int, after: str | None = None, status: str | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Saga summaries sorted by saga id after the cursor ``after``; and the next cursor."""
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
        return len(self.sagas) if status is None else self.by_status.get(status, 0)

    def stock(self, item: str) -> int:
        """Initial stock minus what approved, uncompensated reservations hold."""
        return self.catalog.initial_stock(item) - self.reserved.get(item, 0)

    def catalog_view(self) -> dict[str, dict[str, int]]:
        """``{item: {price_cents, stock}}`` with the current stock."""
        return {name: {"price_cents": entry.price_cents, "stock": self.stock(name)}
                for name, entry in self.catalog.items.items()}

    def __len__(self) -> int:
        return len(self.owners)

    # --- waiting ------------------------------------------------------------------------

    async def wait_terminal(self, order_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the order to reach approved/rejected/failed.

        Returns True once it is terminal (at once if it already is), False on time-out. The
        order need not be known yet: it may appear, then end, while this waits.
        """
        record = self.owner(order_id)
        if record is not None and record.terminal:
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


__all__ = ["HISTORY_MAX", "STATUSES", "TERMINAL", "OrdersView", "SagaRecord"]
