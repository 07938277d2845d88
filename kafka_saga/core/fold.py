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

from .compact import IdRefs, IdTable
from .contracts import Event, EventType, Step, UserAggregate

PENDING, APPROVED, REJECTED, FAILED = "pending", "approved", "rejected", "failed"
STATUSES = (PENDING, APPROVED, REJECTED, FAILED)  # an order's status code is its index here
_CODE = {status: code for code, status in enumerate(STATUSES)}


OPEN_MAX = 10_000  # pending orders kept as objects; beyond, the oldest are packed too


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
    index: int  # in AggregateFold._user_names
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
    """Folds order events into per-user aggregates, idempotently.

    Every order is remembered for good (forgetting one would count its redelivered events
    again). Pending orders, whose events are still coming, are :class:`OrderFacts` in
    ``open`` (at most ``open_max``); the others are four machine words in ``closed``, an
    :class:`~kafka_saga.core.compact.IdTable`: ``(saga high, saga low, user index,
    status | odd saga << 2 | price_cents << 3)``, about 50 bytes an order. Where an order
    is kept changes nothing it folds to. Snapshots must be contract-valid (price 0 .. 10**12).
    """

    __slots__ = ("open", "closed", "open_max", "_refs", "_users", "_user_names")

    def __init__(self, open_max: int = OPEN_MAX) -> None:
        self.open: dict[str, OrderFacts] = {}
        self.closed = IdTable(width=4)
        self.open_max = max(1, open_max)
        self._refs = IdRefs()  # saga ids as words
        self._users: dict[str, _UserState] = {}
        self._user_names: list[str] = []

    def __len__(self) -> int:
        return len(self._users)

    def facts(self, order_id: str) -> OrderFacts | None:
        """What the fold remembers of one order (None if never seen)."""
        facts = self.open.get(order_id)
        if facts is not None:
            return OrderFacts(facts.user, facts.status, facts.price_cents, facts.saga_id)
        record = self.closed.get(order_id)
        return None if record is None else self._unpack(record)

    def apply(self, event: Event) -> str | None:
        """Fold one event; return the user whose aggregate changed, or None for a no-op."""
        snap = event.snapshot
        order_id = snap.order_id
        facts = self.open.get(order_id)
        closed = False
        changed = False
        if facts is None:
            record = self.closed.get(order_id)
            if record is not None:
                high, low, _, word = record
                if self._refs.find(event.saga_id) != (high, low, word >> 2 & 1):
                    return None  # a second saga for the same order (a duplicate): not counted
                facts, closed = self._unpack(record), True
        elif facts.saga_id != event.saga_id:
            return None  # as above
        if facts is None:
            facts = self.open[order_id] = OrderFacts(snap.user, PENDING, snap.price_cents,
                                                     event.saga_id)
            agg = self._user(snap.user).aggregate
            agg.orders += 1
            agg.total_items += snap.quantity
            agg.pending += 1
            changed = True
            if len(self.open) > self.open_max:
                oldest = next(iter(self.open))
                self._pack(oldest, self.open.pop(oldest))
        outcome = _terminal_outcome(event)
        if outcome is not None and self._move(facts, outcome):
            if closed or self.open.pop(order_id, None) is not None:
                self._pack(order_id, facts)
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

    def _pack(self, order_id: str, facts: OrderFacts) -> None:
        high, low, odd = self._refs.words(facts.saga_id)
        self.closed.put(order_id, (high, low, self._users[facts.user].index,
                                   _CODE[facts.status] | odd << 2 | facts.price_cents << 3))

    def _unpack(self, record: tuple[int, ...]) -> OrderFacts:
        high, low, user, word = record
        return OrderFacts(self._user_names[user], STATUSES[word & 3], word >> 3,
                          self._refs.text(high, low, word >> 2 & 1))

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
            state = self._users[user] = _UserState(UserAggregate(user=user), len(self._user_names))
            self._user_names.append(user)
        return state

    def aggregate(self, user: str) -> UserAggregate | None:
        """A copy of one user's aggregate."""
        state = self._users.get(user)
        return state.aggregate.copy() if state else None

    def aggregates(self) -> dict[str, UserAggregate]:
        """Copies of every aggregate, sorted by user."""
        return {u: self._users[u].aggregate.copy() for u in sorted(self._users)}
