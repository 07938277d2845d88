"""The spans of one saga: each step, each payment attempt, each inventory request, each
compensation; their attributes name the saga (``saga_id``, ``order_id``, ``user``, ``step``,
``retry_count``). Nothing is recorded when tracing is off (:mod:`~kafka_saga.observation.tracing`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.trace import SpanKind

from ..core.contracts import Step
from ..core.saga import Ending, Saga
from ..observation import tracing


def attributes(saga: Saga, step: Step | None = None, **extra: Any) -> dict[str, Any]:
    snap = saga.snapshot
    return {"saga_id": saga.saga_id, "order_id": snap.order_id, "user": snap.user,
            "step": (step or saga.step).value, "retry_count": saga.retry_count, **extra}


def step(saga: Saga, step: Step) -> AbstractContextManager[Any]:
    """A forward step: Validation, Payment, Inventory or Finalize."""
    if not tracing.on():
        return tracing.span("")
    return tracing.span(f"saga step {step.value}", attributes(saga, step))


def attempt(saga: Saga, step: Step, name: str, number: int,
            kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Any]:
    """One try of a step's work (``retry_count`` is the tries before it)."""
    if not tracing.on():
        return tracing.span("")
    return tracing.span(name, attributes(saga, step, retry_count=number - 1, attempt=number), kind)


def compensation(saga: Saga, step: Step, ending: Ending) -> AbstractContextManager[Any]:
    """Undoing a completed step (refund, release) on the way to ``ending``."""
    if not tracing.on():
        return tracing.span("")
    return tracing.span(f"saga compensate {step.value}",
                        attributes(saga, step, outcome=ending.outcome, reason=ending.reason))


def ended(saga: Saga, ending: Ending) -> None:
    """Note how the saga ends on the current span; a failure is an error there."""
    if ending.outcome == "failed":
        tracing.failed(ending.reason, outcome=ending.outcome, saga_id=saga.saga_id)
    else:
        tracing.describe(outcome=ending.outcome, reason=ending.reason)
