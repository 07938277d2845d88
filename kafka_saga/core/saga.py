"""The order saga as an event-sourced state machine. Pure, no I/O.

A :class:`Saga` changes only by applying its own events (``apply``), both live and when a
process restores it from ``orders.events`` after a crash or a rebalance, so the two can
never disagree. The orchestrator asks it what to do next (``next_step``,
``pending_compensations``, ``ending``) and records each answer as an event.

Steps: Validation -> Payment -> Inventory -> Finalize. Compensations run in reverse order
of the completed compensable steps (Inventory: release stock, Payment: refund), exactly
once each; the terminal ``OrderRejected``/``OrderFailed`` is written after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import Catalog
from .contracts import (
    APPROVED,
    FAILED,
    ORDER_MAX_QUANTITY,
    PENDING,
    REJECTED,
    Event,
    EventType,
    Snapshot,
    Step,
)

TERMINAL = (APPROVED, REJECTED, FAILED)
STEP_ORDER = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)
COMPENSABLE = (Step.PAYMENT, Step.INVENTORY)


def validate(snapshot: Snapshot, catalog: Catalog) -> str | None:
    """The Validation step: ``None`` when valid, else the reason of the business refusal."""
    if not snapshot.user.strip():
        return "user must not be empty"
    if not 1 <= snapshot.quantity <= ORDER_MAX_QUANTITY:
        return f"quantity must be between 1 and {ORDER_MAX_QUANTITY}, got {snapshot.quantity}"
    if snapshot.item not in catalog:
        return f"unknown item {snapshot.item!r}"
    if snapshot.price_cents < 0:
        return "price_cents must not be negative"
    return None


@dataclass(slots=True)
class Ending:
    """How a saga that is compensating will end: its terminal outcome, step and reason."""

    outcome: str  # rejected | failed
    step: Step
    reason: str


@dataclass(slots=True)
class Saga:
    """One order's saga, rebuilt from (and advanced only by) its events."""

    saga_id: str
    snapshot: Snapshot
    command_id: str = ""
    status: str = PENDING
    completed: list[Step] = field(default_factory=list)
    compensated: list[Step] = field(default_factory=list)
    retry_count: int = 0
    reason: str = ""
    step: Step = Step.VALIDATION
    ending: Ending | None = None
    origin: tuple[int, int] | None = None  # (partition, offset) of the OrderCreate command
    trace: str = ""  # the W3C traceparent its records continue (from its OrderCreated)

    @property
    def order_id(self) -> str:
        return self.snapshot.order_id

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_event(cls, event: Event) -> Saga:
        saga = cls(event.saga_id, event.snapshot, event.command_id)
        saga.apply(event)
        return saga

    def apply(self, event: Event) -> bool:
        """Apply one of this saga's events; return False when it changes nothing (a duplicate)."""
        kind, step = event.type, event.step
        if kind is EventType.ORDER_CREATED:
            if self.origin is None and "command_partition" in event.metadata:
                try:
                    self.origin = (int(event.metadata["command_partition"]),
                                   int(event.metadata["command_offset"]))
                except (KeyError, ValueError):
                    self.origin = None
            if not self.trace:
                self.trace = event.metadata.get("traceparent", "")
            return False
        if kind is EventType.ORDER_APPROVED:
            if step in self.completed or self.status != PENDING:
                return False
            self.completed.append(step)
            self.retry_count = max(self.retry_count, event.retry_count)
            self.step = step
            if step is Step.FINALIZE:
                self.status = APPROVED
            return True
        if kind is EventType.ORDER_COMPENSATED:
            if step in self.compensated:
                return False
            self.compensated.append(step)
            if self.ending is None and event.metadata.get("outcome") in (REJECTED, FAILED):
                try:
                    ending_step = Step(event.metadata.get("ending_step", step))
                except ValueError:
                    ending_step = step
                self.ending = Ending(event.metadata["outcome"], ending_step, event.error_message)
            return True
        if kind in (EventType.ORDER_REJECTED, EventType.ORDER_FAILED):
            outcome = REJECTED if kind is EventType.ORDER_REJECTED else FAILED
            if self.status in (REJECTED, FAILED):
                return False
            if self.status == APPROVED and outcome != REJECTED:
                return False
            self.status = outcome
            self.reason = event.error_message
            self.step = step
            self.retry_count = max(self.retry_count, event.retry_count)
            return True
        return False

    def next_step(self) -> Step | None:
        """The next forward step, or None when every step is done."""
        for step in STEP_ORDER:
            if step not in self.completed:
                return step
        return None

    def pending_compensations(self) -> list[Step]:
        """Completed compensable steps not yet compensated, most recent first."""
        return [s for s in reversed(self.completed) if s in COMPENSABLE and s not in self.compensated]

    def compensation_event(self, step: Step, ending: Ending) -> Event:
        """The ``OrderCompensated`` event for ``step``, carrying how the saga will end."""
        return self.event(EventType.ORDER_COMPENSATED, step, error_message=ending.reason,
                          metadata={"outcome": ending.outcome, "ending_step": ending.step.value})

    def terminal_event(self, ending: Ending) -> Event:
        kind = EventType.ORDER_REJECTED if ending.outcome == REJECTED else EventType.ORDER_FAILED
        return self.event(kind, ending.step, error_message=ending.reason)

    def event(self, kind: EventType, step: Step, **extra: object) -> Event:
        extra.setdefault("retry_count", self.retry_count)
        return Event.new(kind, self.snapshot, step, self.saga_id, command_id=self.command_id,
                         correlation_key=self.order_id, **extra)

    def reject_request(self, reason: str, step: Step | None = None) -> Ending | None:
        """What an ``OrderReject`` command does to this saga (None: ignored, already ended)."""
        if self.status in (REJECTED, FAILED):
            return None
        if self.status == APPROVED:
            return Ending(REJECTED, Step.FINALIZE, reason)
        return Ending(REJECTED, step or self.next_step() or Step.FINALIZE, reason)
