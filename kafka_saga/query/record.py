"""What the orders read model knows of one saga (:class:`SagaRecord`), and its two views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.contracts import Snapshot, Step
from ..core.saga import Saga
from ..observation.tracing import trace_id_of
from .history import History, history_view


@dataclass(slots=True)
class SagaRecord:
    """What the view knows of one saga."""

    saga_id: str
    order_id: str
    created_at: str
    owner: bool
    saga: Saga  # the state machine the orchestrator itself uses: one set of transition rules
    partition: int = -1  # of orders.events its events are on (-1: not told)
    updated_at: str = ""
    created: bool = False
    reserved: tuple[str, int] | None = None  # (item, quantity) taken by its Inventory step
    released: bool = False
    history: list[History] = field(default_factory=list)  # the latest, oldest first

    @property
    def snapshot(self) -> Snapshot:
        return self.saga.snapshot

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
            "updated_at": self.updated_at, "trace_id": trace_id_of(self.saga.trace),
            "history": [history_view(entry) for entry in self.history],
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
