"""The aggregate fold: order events -> per-user aggregates. Pure, no I/O.

The aggregator (live) and the replayer (event sourcing) both use :class:`AggregateFold`,
so a replay equals the live read model by construction.

Each order moves through a monotone state machine (unknown -> pending -> approved /
rejected / failed, plus approved -> rejected when an approved order is rejected later).
An event that would not move its order is a no-op, which makes the fold idempotent
(redeliveries and duplicates change nothing) and insensitive to the interleaving of
different orders. Everything the fold derives — including ``status`` (the outcome of the
latest terminal event by ``occurred_at``) and ``last_updated`` — depends only on the set
of events and each order's own order, never on arrival order across orders.
"""

from __future__ import annotations

from dataclasses import dataclass

from .contracts import Event, EventType, Step, UserAggregate

PENDING, APPROVED, REJECTED, FAILED = "pending", "approved", "rejected", "failed"


@dataclass(slots=True)
class OrderFacts:
    """What the fold remembers of one order: enough to move it between counters."""

    user: str
    status: str
    price_cents: int
    saga_id: str = ""


@dataclass(slots=True)
class _UserState:
    aggregate: UserAggregate
    terminal_key: tuple[str, str] = ("", "")
    revision: int = 0


def _terminal_outcome(event: Event) -> str | None:
    if event.type is EventType.ORDER_APPROVED:
        return APPROVED if event.step is Step.FINALIZE else None
    if event.type is EventType.ORDER_REJECTED:
        return REJECTED
    if event.type is EventType.ORDER_FAILED:
        return FAILED
    return None


class AggregateFold:
    """Folds order events into per-user aggregates, idempotently."""

    __slots__ = ("orders", "_users")

    def __init__(self) -> None:
        self.orders: dict[str, OrderFacts] = {}
        self._users: dict[str, _UserState] = {}

    def __len__(self) -> int:
        return len(self._users)

    def apply(self, event: Event) -> str | None:
        """Fold one event; return the user whose aggregate changed, or None for a no-op."""
        snap = event.snapshot
        facts = self.orders.get(snap.order_id)
        changed = False
        if facts is not None and facts.saga_id != event.saga_id:
            return None  # a second saga for the same order (rejected as a duplicate): not counted
        if facts is None:
            facts = OrderFacts(snap.user, PENDING, snap.price_cents, event.saga_id)
            self.orders[snap.order_id] = facts
            agg = self._user(snap.user).aggregate
            agg.orders += 1
            agg.total_items += snap.quantity
            agg.pending += 1
            changed = True
        outcome = _terminal_outcome(event)
        if outcome is not None and self._move(facts, outcome):
            state = self._users[facts.user]
            key = (event.occurred_at, event.event_id)
            if key >= state.terminal_key:
                state.terminal_key = key
                state.aggregate.status = outcome
            changed = True
        if not changed:
            return None
        state = self._users[facts.user]
        state.revision += 1
        agg = state.aggregate
        if event.occurred_at > agg.last_updated:
            agg.last_updated = event.occurred_at
        agg.metadata["revision"] = str(state.revision)
        if not agg.status:
            agg.status = PENDING
        return facts.user

    def _move(self, facts: OrderFacts, outcome: str) -> bool:
        old = facts.status
        if old == outcome or old in (REJECTED, FAILED):
            return False
        if old == APPROVED and outcome != REJECTED:
            return False
        agg = self._users[facts.user].aggregate
        if old == PENDING:
            agg.pending -= 1
        else:  # approved -> rejected: the sale is undone
            agg.approved -= 1
            agg.spent_cents -= facts.price_cents
        if outcome == APPROVED:
            agg.approved += 1
            agg.spent_cents += facts.price_cents
        elif outcome == REJECTED:
            agg.rejected += 1
        else:
            agg.failed += 1
        facts.status = outcome
        return True

    def _user(self, user: str) -> _UserState:
        state = self._users.get(user)
        if state is None:
            state = self._users[user] = _UserState(UserAggregate(user=user))
        return state

    def aggregate(self, user: str) -> UserAggregate | None:
        """A copy of one user's aggregate."""
        state = self._users.get(user)
        return state.aggregate.copy() if state else None

    def aggregates(self) -> dict[str, UserAggregate]:
        """Copies of every aggregate, sorted by user."""
        return {u: self._users[u].aggregate.copy() for u in sorted(self._users)}
