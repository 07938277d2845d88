"""Pure unit tests of the aggregate fold (kafka_saga.core.fold)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, UserAggregate, new_id
from kafka_saga.core.fields import canonical_time
from kafka_saga.core.fold import AggregateFold

BASE = datetime(2026, 1, 1, tzinfo=UTC)
C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
V, P, INV, Z = Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE


def at(ms: int) -> str:
    return canonical_time(BASE + timedelta(milliseconds=ms))


_ids = iter(range(10**9))


def ev(order: str, type_: EventType, step: Step = V, t: int = 0, *, user: str = "alice",
       qty: int = 2, price: int = 500, eid: str | None = None) -> Event:
    snap = Snapshot(order_id=order, user=user, item="book", quantity=qty, price_cents=price)
    return Event(event_id=eid or f"e{next(_ids):09d}", saga_id=f"saga-{order}", type=type_,
                 snapshot=snap, step=step, occurred_at=at(t))


def counts(agg: UserAggregate | None) -> tuple[int, ...]:
    assert agg is not None
    return (agg.orders, agg.total_items, agg.pending, agg.approved, agg.rejected, agg.failed,
            agg.spent_cents)


def folded(*events: Event) -> AggregateFold:
    fold = AggregateFold()
    for e in events:
        fold.apply(e)
    return fold


# --- single-order transitions ------------------------------------------------------------

def test_created_counts_pending() -> None:
    fold = AggregateFold()
    assert fold.apply(ev("o1", C, t=10, qty=3)) == "alice"
    agg = fold.aggregate("alice")
    assert counts(agg) == (1, 3, 1, 0, 0, 0, 0)
    assert agg is not None and agg.status == "pending"
    assert agg.last_updated == at(10) and agg.metadata == {"revision": "1"}
    assert len(fold) == 1 and fold.facts("o1").status == "pending"


def test_approved_at_finalize() -> None:
    fold = folded(ev("o1", C, t=1, price=750))
    assert fold.apply(ev("o1", A, Z, t=5, price=750)) == "alice"
    agg = fold.aggregate("alice")
    assert counts(agg) == (1, 2, 0, 1, 0, 0, 750)
    assert agg is not None and agg.status == "approved" and agg.last_updated == at(5)
    assert agg.metadata["revision"] == "2"


@pytest.mark.parametrize("step", [V, P, INV])
def test_approved_at_other_steps_is_a_noop(step: Step) -> None:
    fold = folded(ev("o1", C, t=1))
    before = fold.aggregate("alice")
    assert fold.apply(ev("o1", A, step, t=9)) is None
    assert fold.aggregate("alice") == before
    assert fold.facts("o1").status == "pending"


@pytest.mark.parametrize("step", [V, P, INV])
def test_non_terminal_event_registers_unknown_order(step: Step) -> None:
    fold = AggregateFold()
    assert fold.apply(ev("o1", A, step, t=3, qty=4)) == "alice"
    agg = fold.aggregate("alice")
    assert counts(agg) == (1, 4, 1, 0, 0, 0, 0)
    assert agg is not None and agg.status == "pending"


def test_compensated_is_not_terminal() -> None:
    fold = folded(ev("o1", C, t=1))
    assert fold.apply(ev("o1", X, P, t=2)) is None
    assert counts(fold.aggregate("alice")) == (1, 2, 1, 0, 0, 0, 0)


def terminal(outcome: str, t: int) -> Event:
    if outcome == "approved":
        return ev("o1", A, Z, t=t)
    return ev("o1", R if outcome == "rejected" else F, P, t=t)


# (first, second) -> final (pending, approved, rejected, failed, spent), second applies?
TRANSITIONS = [
    ("approved", "rejected", (0, 0, 1, 0, 0), True),
    ("approved", "failed", (0, 1, 0, 0, 500), False),
    ("approved", "approved", (0, 1, 0, 0, 500), False),
    ("rejected", "approved", (0, 0, 1, 0, 0), False),
    ("rejected", "failed", (0, 0, 1, 0, 0), False),
    ("rejected", "rejected", (0, 0, 1, 0, 0), False),
    ("failed", "approved", (0, 0, 0, 1, 0), False),
    ("failed", "rejected", (0, 0, 0, 1, 0), False),
    ("failed", "failed", (0, 0, 0, 1, 0), False),
]


@pytest.mark.parametrize(("first", "second", "final", "moves"), TRANSITIONS)
def test_terminal_after_terminal(first: str, second: str, final: tuple[int, ...],
                                 moves: bool) -> None:
    fold = folded(ev("o1", C, t=1), terminal(first, 2))
    before = fold.aggregate("alice")
    changed = fold.apply(terminal(second, 3))
    agg = fold.aggregate("alice")
    assert agg is not None
    assert (agg.pending, agg.approved, agg.rejected, agg.failed, agg.spent_cents) == final
    assert (changed == "alice") is moves
    if moves:
        assert agg.status == second and agg.last_updated == at(3)
        assert agg.metadata["revision"] == "3"
    else:
        assert agg == before


@pytest.mark.parametrize(("outcome", "final"), [
    ("rejected", (0, 0, 1, 0, 0)), ("failed", (0, 0, 0, 1, 0)), ("approved", (0, 1, 0, 0, 500)),
])
def test_terminal_from_pending(outcome: str, final: tuple[int, ...]) -> None:
    fold = folded(ev("o1", C, t=1))
    assert fold.apply(terminal(outcome, 2)) == "alice"
    agg = fold.aggregate("alice")
    assert agg is not None and agg.status == outcome
    assert (agg.pending, agg.approved, agg.rejected, agg.failed, agg.spent_cents) == final


@pytest.mark.parametrize("outcome", ["approved", "rejected", "failed"])
def test_terminal_event_for_unknown_order_registers_it(outcome: str) -> None:
    fold = AggregateFold()
    assert fold.apply(terminal(outcome, 7)) == "alice"
    agg = fold.aggregate("alice")
    assert agg is not None and (agg.orders, agg.total_items, agg.pending) == (1, 2, 0)
    assert getattr(agg, outcome) == 1 and agg.status == outcome
    assert agg.metadata["revision"] == "1" and agg.last_updated == at(7)


def test_approved_then_rejected_subtracts_spent_of_that_order_only() -> None:
    fold = folded(ev("o1", C, t=1, price=300), ev("o1", A, Z, t=2, price=300),
                  ev("o2", C, t=3, price=900), ev("o2", A, Z, t=4, price=900))
    assert counts(fold.aggregate("alice")) == (2, 4, 0, 2, 0, 0, 1200)
    fold.apply(ev("o1", R, Z, t=5))
    assert counts(fold.aggregate("alice")) == (2, 4, 0, 1, 1, 0, 900)


# --- idempotence and redelivery ----------------------------------------------------------

def lifecycle(order: str = "o1", *, start: int = 0, user: str = "alice",
              reject_after: bool = False) -> list[Event]:
    events = [ev(order, C, V, start, user=user)]
    events += [ev(order, A, s, start + i + 1, user=user) for i, s in enumerate((V, P, INV, Z))]
    if reject_after:
        events.append(ev(order, R, Z, start + 6, user=user))
    return events


@pytest.mark.parametrize("reject_after", [False, True])
def test_every_event_applied_twice_changes_nothing(reject_after: bool) -> None:
    once = folded(*lifecycle(reject_after=reject_after))
    fold = AggregateFold()
    for e in lifecycle(reject_after=reject_after):
        fold.apply(e)
        snapshot = fold.aggregates()
        assert fold.apply(e) is None
        assert fold.aggregates() == snapshot
    assert {u: a.to_dict() for u, a in fold.aggregates().items()} == \
        {u: a.to_dict() for u, a in once.aggregates().items()}


@pytest.mark.parametrize("start", range(6))
def test_redelivered_suffix_is_a_noop(start: int) -> None:
    events = lifecycle(reject_after=True)
    fold = folded(*events)
    before = fold.aggregates()
    assert [fold.apply(e) for e in events[start:]] == [None] * (len(events) - start)
    assert fold.aggregates() == before


# --- status, last_updated, revision --------------------------------------------------------

def test_status_is_latest_terminal_by_occurred_at_not_arrival() -> None:
    fold = folded(ev("o1", C, t=1), ev("o1", A, Z, t=10), ev("o2", C, t=2), ev("o2", R, P, t=5))
    agg = fold.aggregate("alice")
    assert agg is not None and agg.status == "approved" and agg.last_updated == at(10)
    assert agg.rejected == agg.approved == 1


def test_status_tie_broken_by_event_id() -> None:
    a = [ev("o1", C, t=1), ev("o1", A, Z, t=5, eid="b"), ev("o2", C, t=1), ev("o2", F, P, t=5, eid="a")]
    for order in (a, [a[2], a[3], a[0], a[1]]):
        agg = folded(*order).aggregate("alice")
        assert agg is not None and agg.status == "approved"


def test_status_pending_until_first_terminal() -> None:
    fold = folded(ev("o1", C, t=1), ev("o2", C, t=2))
    agg = fold.aggregate("alice")
    assert agg is not None and agg.status == "pending" and agg.pending == 2


def test_last_updated_is_max_and_noops_do_not_touch_it() -> None:
    fold = folded(ev("o1", C, t=50), ev("o2", C, t=20))
    agg = fold.aggregate("alice")
    assert agg is not None and agg.last_updated == at(50)
    assert agg.metadata["revision"] == "2"
    fold.apply(ev("o2", A, P, t=99))  # no-op
    agg = fold.aggregate("alice")
    assert agg is not None and agg.last_updated == at(50) and agg.metadata["revision"] == "2"


def test_aggregates_are_copies_sorted_by_user() -> None:
    fold = folded(ev("o1", C, user="zoe"), ev("o2", C, user="adam"), ev("o3", C, user="mia"))
    assert list(fold.aggregates()) == ["adam", "mia", "zoe"] and len(fold) == 3
    copy = fold.aggregate("mia")
    assert copy is not None
    copy.metadata["revision"] = "999"
    copy.orders = 42
    again = fold.aggregate("mia")
    assert again is not None and again.orders == 1 and again.metadata["revision"] == "1"
    assert fold.aggregate("nobody") is None


def test_aggregate_encodes_as_a_valid_contract() -> None:
    fold = folded(*lifecycle(reject_after=True), *lifecycle("o2", start=100))
    agg = fold.aggregate("alice")
    assert agg is not None and UserAggregate.decode(agg.encode()) == agg


# --- interleaving independence -------------------------------------------------------------

@dataclass
class Scenario:
    orders: list[list[Event]] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)


KINDS = ("approved", "approved_then_rejected", "rejected", "failed", "pending")


def make_scenario(seed: int, n_orders: int = 300, users: int = 5) -> Scenario:
    """Random valid order histories plus an independent oracle of the expected aggregates."""
    rng = random.Random(seed)
    sc = Scenario()
    tally: dict[str, dict[str, Any]] = {}
    for n in range(n_orders):
        user, oid = f"user{rng.randrange(users)}", f"{seed}-o{n}"
        qty, price, kind = rng.randint(0, 5), rng.randint(0, 10_000), rng.choice(KINDS)
        t = rng.randrange(1_000_000)
        steps = [V, P, INV, Z]
        cut = rng.randrange(4) if kind in ("rejected", "failed", "pending") else 4
        plan: list[tuple[EventType, Step]] = [(C, V)] + [(A, s) for s in steps[:cut]]
        if kind in ("rejected", "failed"):
            plan.append((R if kind == "rejected" else F, steps[cut]))
        if kind == "approved_then_rejected":
            plan.append((R, Z))
        events = []
        for type_, step in plan:
            t += rng.randint(1, 5000)
            events.append(ev(oid, type_, step, t, user=user, qty=qty, price=price))
        sc.orders.append(events)
        # oracle: changing events are the first one and the terminal moves
        moves = [e for e in events[1:] if e.type in (R, F) or (e.type is A and e.step is Z)]
        final = {"approved": "approved", "pending": "pending", "failed": "failed"}.get(kind, "rejected")
        u = tally.setdefault(user, {"user": user, "orders": 0, "total_items": 0, "pending": 0,
                                    "approved": 0, "rejected": 0, "failed": 0, "spent_cents": 0,
                                    "changes": [], "terminals": []})
        u["orders"] += 1
        u["total_items"] += qty
        u[final] += 1
        if final == "approved":
            u["spent_cents"] += price
        u["changes"] += [events[0], *moves]
        u["terminals"] += moves
    for user, u in tally.items():
        changes: list[Event] = u.pop("changes")
        terminals: list[Event] = u.pop("terminals")
        latest = max(terminals, key=lambda e: (e.occurred_at, e.event_id), default=None)
        status = "pending" if latest is None else ("approved" if latest.type is A
                                                   else "rejected" if latest.type is R else "failed")
        sc.expected[user] = {**u, "status": status,
                             "last_updated": max(e.occurred_at for e in changes),
                             "metadata": {"revision": str(len(changes))}, "schema_version": 1}
    return sc


def interleave(rng: random.Random, queues: list[list[Event]]) -> list[Event]:
    """A random merge that keeps each queue's own order."""
    queues = [list(q) for q in queues if q]
    out: list[Event] = []
    while queues:
        i = rng.randrange(len(queues))
        out.append(queues[i].pop(0))
        if not queues[i]:
            queues.pop(i)
    return out


def with_redelivery(rng: random.Random, orders: list[list[Event]]) -> list[list[Event]]:
    """Each order, possibly followed by one or two redelivered suffixes of itself."""
    out = []
    for events in orders:
        stream = list(events)
        for _ in range(rng.choice((0, 0, 1, 2))):
            stream += events[rng.randrange(len(events)):]
        out.append(stream)
    return out


def fold_dicts(events: list[Event]) -> dict[str, dict[str, Any]]:
    return {u: a.to_dict() for u, a in folded(*events).aggregates().items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 42])
def test_interleaving_independence(seed: int) -> None:
    sc = make_scenario(seed)
    rng = random.Random(seed * 1000)
    sequential = [e for order in sc.orders for e in order]
    reference = fold_dicts(sequential)
    assert reference == {u: sc.expected[u] for u in sorted(sc.expected)}
    assert sum(a["pending"] for a in reference.values()) == sum(
        1 for o in sc.orders if o[-1].type is C or (o[-1].type is A and o[-1].step is not Z))
    variants = [
        [e for order in reversed(sc.orders) for e in order],
        sorted(sequential, key=lambda e: (e.occurred_at, e.event_id)),
        *(interleave(rng, sc.orders) for _ in range(4)),
        *(interleave(rng, with_redelivery(rng, sc.orders)) for _ in range(4)),
    ]
    for events in variants:
        assert fold_dicts(events) == reference


def test_scenario_covers_every_kind() -> None:
    sc = make_scenario(1)
    lasts = {(o[-1].type, o[-1].step is Z, len(o)) for o in sc.orders}
    assert (R, True, 6) in lasts and (A, True, 5) in lasts
    assert any(t is F for t, _, _ in lasts) and any(n < 5 and t is A for t, _, n in lasts)
    assert len({u for o in sc.orders for u in [o[0].snapshot.user]}) == 5


# --- compact facts --------------------------------------------------------------------------

def with_canonical_ids(events: list[Event]) -> list[Event]:
    """The same histories, with order and saga ids as ``new_id()`` makes them."""
    ids: dict[str, str] = {}
    return [replace(e, saga_id=ids.setdefault(e.saga_id, new_id()), snapshot=replace(
        e.snapshot, order_id=ids.setdefault(e.snapshot.order_id, new_id()))) for e in events]


@pytest.mark.parametrize("open_max", [1, 7, 10_000])
def test_compact_facts_fold_exactly_like_the_reference(open_max: int) -> None:
    sc = make_scenario(11)
    rng = random.Random(11)
    events = with_canonical_ids(interleave(rng, with_redelivery(rng, sc.orders)))
    fold = folded_with(AggregateFold(open_max=open_max), events)
    assert {u: a.to_dict() for u, a in fold.aggregates().items()} == {
        u: sc.expected[u] for u in sorted(sc.expected)}
    assert len(fold.open) <= open_max
    for event in events:  # everything again: exactly idempotent
        assert fold.apply(event) is None
    last = events[-1]
    facts = fold.facts(last.snapshot.order_id)
    assert facts is not None and facts.saga_id == last.saga_id and facts.user == last.snapshot.user
    assert facts.price_cents == last.snapshot.price_cents
    other_saga = replace(last, saga_id=new_id(), event_id=new_id(), type=R, step=Z)
    assert fold.apply(other_saga) is None  # a second saga of a known order is not counted


def folded_with(fold: AggregateFold, events: list[Event]) -> AggregateFold:
    for event in events:
        fold.apply(event)
    return fold


def test_a_closed_order_in_the_window_costs_under_two_hundred_bytes() -> None:
    import tracemalloc

    streams = [with_canonical_ids([ev("o", C, V, 1), ev("o", A, Z, 2)]) for _ in range(20_000)]
    tracemalloc.start()
    fold = AggregateFold(window=len(streams))  # every order stays in the window
    for n, stream in enumerate(streams):
        folded_with(fold, stream)
        if n % 500 == 0:
            fold.journal.take()  # as the loop does at each checkpoint
    fold.journal.take()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # ~50 bytes in the IdTable and ~70 for its place in the window (its id's string, ~80 more,
    # is the events' here); as OrderFacts in a dict: ~350
    assert not fold.open and len(fold.closed) == len(streams) and size / len(streams) < 160
