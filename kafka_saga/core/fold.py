"""The aggregate fold: order events -> per-user aggregates, a state store. Pure, no I/O.

The aggregator (live, one fold per partition of ``orders.events``) and the
replayer (event sourcing, :mod:`kafka_saga.replay`) both use :class:`AggregateFold`, so
a replay equals the live read model by construction.

Each order moves through a monotone state machine (unknown -> pending -> approved /
rejected / failed, plus approved -> rejected when an approved order is rejected later).
An event that would not move its order is a no-op, which makes the fold idempotent
(redeliveries and duplicates change nothing) and insensitive to the interleaving of
different orders. Everything the fold derives — including ``status`` (the outcome of the
latest terminal event by ``occurred_at``) and ``last_updated`` — depends only on the set
of events and each order's own order, never on arrival order across orders.

**The limit of idempotence.** A closed order (approved at Finalize, rejected, failed) is
remembered while fewer than ``window`` orders of its fold closed after it (each change of
a closed order, such as a late reject, closes it again); then it is forgotten, and an event
of it counts as a new order. Live never writes such an event but a duplicate: compensations
and redeliveries follow their saga closely, and the orchestrator refuses a late reject
beyond its own window of finished sagas (counted per commands partition, so the two
windows are alike, not equal). The window counts the orders of one fold — of one partition,
whatever its users — so it bounds a fold's memory; the replay keeps one fold per partition
of ``orders.events`` to count it the same way. Open orders and the per-user
aggregates (the output) are never forgotten.

**Changelog** (:class:`~kafka_saga.core.store.Journal`; keys marked as they change, values
encoded with orjson when the journal is taken; :meth:`AggregateFold.load` reads them back):

* ``u:<user>`` -> ``[orders, total_items, approved, rejected, failed, pending, spent_cents,
  status, last_updated, revision, terminal occurred_at, terminal event_id]``;
* ``o:<order_id>`` -> ``[user, status, price_cents, saga_id]``, open orders too; a
  tombstone when the order is forgotten. Closed orders are last written in the order they
  closed, so a restore rebuilds the window as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from .compact import IdRefs, IdTable
from .contracts import (
    APPROVED,
    FAILED,
    PENDING,
    REJECTED,
    STATUSES,  # an order's status code is its index there
    Event,
    EventType,
    Step,
    UserAggregate,
)
from .store import DEFAULT_WINDOW, Journal, NullJournal, Retention

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


def _dumps(value: list[object]) -> bytes:
    # a copy: orjson's own bytes sit in a 4 KiB allocation, slow to make by the thousand
    return bytes(memoryview(orjson.dumps(value)))


def _terminal_outcome(event: Event) -> str | None:
    if event.type is EventType.ORDER_APPROVED:
        return APPROVED if event.step is Step.FINALIZE else None
    if event.type is EventType.ORDER_REJECTED:
        return REJECTED
    if event.type is EventType.ORDER_FAILED:
        return FAILED
    return None


class AggregateFold:
    """Folds order events into per-user aggregates, idempotently; a state store.

    Open orders, whose events are still coming, are :class:`OrderFacts` in ``open`` (at most
    ``open_max``); the others — closed orders in the window, and open ones beyond
    ``open_max`` — are four machine words in ``closed``, an
    :class:`~kafka_saga.core.compact.IdTable`: ``(saga high, saga low, user index,
    status | odd saga << 2 | price_cents << 3)``, about 50 bytes an order. Where an order
    is kept changes nothing it folds to. Snapshots must be contract-valid (price 0 .. 10**12).
    ``journaled=False``: no changelog is kept (a fold that is never restored).
    """

    __slots__ = ("open", "closed", "open_max", "journal", "_retention", "_refs", "_users",
                 "_user_names")

    def __init__(self, open_max: int = OPEN_MAX, window: int = DEFAULT_WINDOW, *,
                 journaled: bool = True) -> None:
        self.open: dict[str, OrderFacts] = {}
        self.closed = IdTable(width=4)
        self.open_max = max(1, open_max)
        self.journal = Journal(self._entry) if journaled else NullJournal()
        self._retention = Retention(window)  # closed orders, oldest closed first
        self._refs = IdRefs()  # saga ids as words
        self._users: dict[str, _UserState] = {}
        self._user_names: list[str] = []

    @property
    def window(self) -> int:
        return self._retention.limit

    def __len__(self) -> int:
        return len(self._users)

    def facts(self, order_id: str) -> OrderFacts | None:
        """What the fold remembers of one order (None if never seen, or forgotten)."""
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
                self._pack_oldest_open()
        outcome = _terminal_outcome(event)
        mark = self.journal.mark
        if outcome is not None and self._move(facts, outcome):
            if closed or self.open.pop(order_id, None) is not None:
                self._pack(order_id, facts)
            state = self._users[facts.user]
            key = (event.occurred_at, event.event_id)
            if key >= state.terminal_key:
                state.terminal_key = key
                state.aggregate.status = outcome
            mark("o:" + order_id)
            for gone in self._retention.settle(order_id):
                self.closed.pop(gone)  # out of the window: forgotten
                self.journal.delete("o:" + gone)
        elif changed:
            mark("o:" + order_id)
        else:
            return None
        state = self._users[facts.user]
        state.revision += 1
        agg = state.aggregate
        if event.occurred_at > agg.last_updated:
            agg.last_updated = event.occurred_at
        agg.metadata["revision"] = str(state.revision)
        if not agg.status:
            agg.status = PENDING
        mark("u:" + facts.user)
        return facts.user

    # --- the store ---------------------------------------------------------------------

    def _entry(self, key: str) -> bytes | None:
        """The changelog value of ``key`` as of now (None: a forgotten order)."""
        if key[0] == "u":
            state = self._users[key[2:]]
            a = state.aggregate
            return _dumps([a.orders, a.total_items, a.approved, a.rejected, a.failed, a.pending,
                           a.spent_cents, a.status, a.last_updated, state.revision,
                           *state.terminal_key])
        order_id = key[2:]
        facts = self.open.get(order_id)
        if facts is not None:
            return _dumps([facts.user, facts.status, facts.price_cents, facts.saga_id])
        record = self.closed.get(order_id)
        if record is None:
            return None  # not known (forgotten orders are deleted, not marked)
        high, low, user, word = record
        return _dumps([self._user_names[user], STATUSES[word & 3], word >> 3,
                       self._refs.text(high, low, word >> 2 & 1)])

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """Every live entry as the journal writes it (a snapshot): users, open orders, the
        closed orders packed outside the window (pending ones beyond ``open_max``), then those
        in the window, oldest closed first."""
        entry = self._entry
        for user in list(self._user_names):
            yield "u:" + user, entry("u:" + user)  # type: ignore[misc]
        for order_id in list(self.open):
            yield "o:" + order_id, entry("o:" + order_id)  # type: ignore[misc]
        window = self._retention
        for order_id, _ in list(self.closed.items()):
            if order_id not in window:
                yield "o:" + order_id, entry("o:" + order_id)  # type: ignore[misc]
        for order_id in window:
            value = entry("o:" + order_id)
            if value is not None:
                yield "o:" + order_id, value

    def load(self, key: str, value: bytes) -> None:
        """Take back one changelog entry (see the module's docstring); writes no journal."""
        kind, name = key[:2], key[2:]
        fields = orjson.loads(value)
        if kind == "u:":
            state = self._user(name)
            a = state.aggregate
            (a.orders, a.total_items, a.approved, a.rejected, a.failed, a.pending,
             a.spent_cents, a.status, a.last_updated, state.revision, at, event_id) = fields
            state.terminal_key = (at, event_id)
            a.metadata["revision"] = str(state.revision)
        elif kind == "o:":
            user, status, price_cents, saga_id = fields
            self._user(user)
            facts = OrderFacts(user, status, price_cents, saga_id)
            if status == PENDING:
                self.open[name] = facts
                if len(self.open) > self.open_max:
                    self._pack_oldest_open()
            else:
                self._pack(name, facts)
                for gone in self._retention.settle(name):
                    self.closed.pop(gone)  # the window was made smaller since it was written
        else:
            raise ValueError(f"not an aggregate fold entry: {key!r}")

    # --- compact facts -----------------------------------------------------------------

    def _pack_oldest_open(self) -> None:
        oldest = next(iter(self.open))
        self._pack(oldest, self.open.pop(oldest))

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
