"""The aggregate fold as a state store: changelog, restore, window, replay (pure)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from kafka_saga.bus.topics import user_partition
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.fields import canonical_time
from kafka_saga.core.fold import AggregateFold
from kafka_saga.core.store import MARKED, Journal, NullJournal
from kafka_saga.replay import ReplayResult

C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
V, P, INV, Z = Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def event(order: str, saga: str, type_: EventType, step: Step, t: int, user: str,
          qty: int = 1, price: int = 500) -> Event:
    snap = Snapshot(order_id=order, user=user, item="book", quantity=qty, price_cents=price)
    return Event(event_id=new_id(), saga_id=saga, type=type_, snapshot=snap, step=step,
                 occurred_at=canonical_time(BASE + timedelta(milliseconds=t)))


def saga_events(rng: random.Random, order: str, user: str, t: int) -> list[Event]:
    """One saga: approved | rejected | failed (compensated after) | left pending."""
    saga = new_id() if rng.random() < 0.7 else f"saga-{rng.randrange(10**9)}"  # odd ids too
    qty, price = rng.randint(0, 5), rng.randint(0, 10_000)
    outcome = rng.choice(("approved", "approved", "rejected", "failed", "pending"))
    steps = [V, P, INV, Z]
    cut = 4 if outcome == "approved" else rng.randrange(4)
    plan = [(C, V)] + [(A, s) for s in steps[:cut]]
    if outcome == "rejected":
        plan.append((R, steps[cut]))
    elif outcome == "failed":
        plan += [(F, steps[cut])] + [(X, s) for s in reversed(steps[:cut])]
    return [event(order, saga, type_, step, t + i, user, qty, price)
            for i, (type_, step) in enumerate(plan)]


def random_stream(seed: int, orders: int = 300, users: int = 6) -> list[Event]:
    """Interleaved sagas plus, later on (near or far), redeliveries, late rejects of approved
    orders and second sagas of the same order (duplicates)."""
    rng = random.Random(seed)
    queues = []
    for n in range(orders):
        order = new_id() if rng.random() < 0.7 else f"{seed}-o{n}"
        queues.append(saga_events(rng, order, f"user{rng.randrange(users)}", n * 100))
    stream: list[Event] = []
    while queues:
        i = rng.randrange(min(len(queues), 8))  # a few sagas in flight at a time
        stream.append(queues[i].pop(0))
        if not queues[i]:
            queues.pop(i)
    extra: list[tuple[int, Event]] = []
    for position, e in enumerate(stream):
        later = rng.randrange(position + 1, len(stream) + 1)
        roll = rng.random()
        if roll < 0.08:  # redelivered
            extra.append((later, e))
        elif roll < 0.14 and e.type is A and e.step is Z:  # a late reject of an approved order
            extra.append((later, replace(e, event_id=new_id(), type=R)))
        elif roll < 0.16 and e.type is C:  # a duplicate OrderCreate: a second saga
            extra += [(later, replace(d, event_id=new_id(), saga_id=new_id()))
                      for d in saga_events(rng, e.snapshot.order_id, e.snapshot.user, 10**6)]
    for position, e in sorted(extra, key=lambda pe: pe[0], reverse=True):
        stream.insert(position, e)
    return stream


class Changelog:
    """A compacted changelog partition: last value per key, in the order last written."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.tombstones = 0

    def write(self, taken: dict[str, bytes | None]) -> None:
        for key, value in taken.items():
            self.entries.pop(key, None)
            if value is None:
                self.tombstones += 1
            else:
                self.entries[key] = value

    def restore(self, fold: AggregateFold) -> AggregateFold:
        for key, value in self.entries.items():
            fold.load(key, value)
        return fold


def as_dicts(fold: AggregateFold | ReplayResult) -> dict[str, dict]:
    source = fold.fold if isinstance(fold, ReplayResult) else fold
    return {u: a.to_dict() for u, a in source.aggregates().items()}


# --- restore == never restarted ------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_a_fold_restored_from_its_changelog_folds_like_the_one_never_restarted(seed: int) -> None:
    rng = random.Random(seed)
    window, open_max = rng.choice((1, 2, 5, 20, 80, 10_000)), rng.choice((1, 3, 10_000))
    stream = random_stream(seed)
    steady = AggregateFold(open_max=open_max, window=window)
    restarted = AggregateFold(open_max=open_max, window=window)
    changelog = Changelog()
    restarts = sorted(rng.sample(range(len(stream)), 3))
    orders = {e.snapshot.order_id for e in stream}
    for n, e in enumerate(stream):
        assert steady.apply(e) == restarted.apply(e)
        if rng.random() < 0.1 or n in restarts:  # a checkpoint: both journals say the same
            taken = steady.journal.take()
            assert list(restarted.journal.take().items()) == list(taken.items())
            changelog.write(taken)
        if n in restarts:
            restarted = changelog.restore(AggregateFold(open_max=open_max, window=window))
            assert len(restarted.journal) == 0  # loading writes nothing
            assert as_dicts(restarted) == as_dicts(steady)
            assert {o: restarted.facts(o) for o in orders} == {o: steady.facts(o) for o in orders}
    assert as_dicts(restarted) == as_dicts(steady)
    assert list(restarted.journal.take().items()) == list(steady.journal.take().items())


def test_the_changelog_entries() -> None:
    fold = AggregateFold(window=1)
    fold.apply(event("o1", "s1", C, V, 1, "ann"))
    approved = [event("o2", "s2", C, V, 5, "ann", 2, 300), event("o2", "s2", A, Z, 7, "ann", 2, 300)]
    for e in approved:
        fold.apply(e)
    taken = fold.journal.take()
    assert list(taken) == ["o:o1", "o:o2", "u:ann"]  # each key at its last write
    assert orjson.loads(taken["o:o2"]) == ["ann", "approved", 300, "s2"]
    assert orjson.loads(taken["o:o1"])[1] == "pending"
    assert orjson.loads(taken["u:ann"]) == [2, 3, 1, 0, 0, 1, 300, "approved", approved[1].occurred_at,
                                            3, approved[1].occurred_at, approved[1].event_id]
    fold.apply(event("o3", "s3", C, V, 9, "ann"))
    fold.apply(event("o3", "s3", F, P, 10, "ann"))  # o2 falls out of the window of 1
    taken = fold.journal.take()
    assert list(taken) == ["o:o3", "o:o2", "u:ann"] and taken["o:o2"] is None  # forgotten
    assert orjson.loads(taken["o:o3"]) == ["ann", "failed", 500, "s3"]
    assert orjson.loads(taken["u:ann"] or b"")[:7] == [3, 4, 1, 0, 1, 1, 300]
    assert fold.facts("o2") is None and fold.facts("o3") is not None
    with pytest.raises(ValueError, match="not an aggregate fold entry"):
        fold.load("x:1", b"[]")


# --- the window ----------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 10, 1000])
def test_memory_stays_bounded_by_the_window(window: int) -> None:
    fold, changelog = AggregateFold(window=window), Changelog()
    rng = random.Random(window)
    approved: list[Event] = []
    closed = 0
    for n in range(20 * window + 500):
        saga = saga_events(rng, new_id(), f"user{n % 7}", n * 10)
        closed += any(e.type in (R, F) or e.step is Z for e in saga)
        for e in saga:
            fold.apply(e)
            if e.type is A and e.step is Z:
                approved.append(e)
        if rng.random() < 0.05:  # a late reject, of an order in the window or not
            late = rng.choice(approved[-2 * window:])
            fold.apply(replace(late, event_id=new_id(), type=R))
        if n % 50 == 0:
            changelog.write(fold.journal.take())
    changelog.write(fold.journal.take())
    assert len(fold.closed) <= window  # the open orders (never forgotten) are in fold.open
    assert len(changelog.entries) <= window + len(fold.open) + len(fold)  # + one per user
    assert closed > 10 * window and changelog.tombstones >= closed - window  # forgotten


def test_beyond_the_window_an_event_counts_as_a_new_order() -> None:
    fold = AggregateFold(window=2)
    first = [event("o1", "s1", C, V, 1, "ann"), event("o1", "s1", A, Z, 2, "ann")]
    for e in first:
        fold.apply(e)
    assert fold.apply(first[1]) is None  # a duplicate in the window: a no-op
    for n in (2, 3):
        fold.apply(event(f"o{n}", f"s{n}", C, V, 10 * n, "ann"))
        fold.apply(event(f"o{n}", f"s{n}", R, V, 10 * n + 1, "ann"))
    assert fold.facts("o1") is None
    assert fold.apply(replace(first[1], type=R, event_id=new_id())) == "ann"  # late, forgotten
    agg = fold.aggregate("ann")
    assert agg is not None and (agg.orders, agg.approved, agg.rejected) == (4, 1, 3)


# --- replay applies the window as live -----------------------------------------------------

def records(stream: list[Event], partitions: int = 1) -> list[SimpleNamespace]:
    """The events as the orchestrator writes them: each on its user's partition."""
    return [SimpleNamespace(value=e.encode(), partition=user_partition(e.snapshot.user, partitions))
            for e in stream]


@pytest.mark.parametrize(("seed", "window"), [(1, 1), (2, 5), (3, 40), (4, 10_000)])
def test_replay_with_the_same_window_equals_the_live_fold(seed: int, window: int) -> None:
    stream = random_stream(seed)
    live = AggregateFold(window=window)
    for e in stream:
        live.apply(e)
    replay = ReplayResult(window=window)
    for record in records(stream):
        replay.apply(record)
    assert replay.events == len(stream) and as_dicts(replay) == as_dicts(live)
    assert all(len(f.journal) == 0 for f in replay.fold.folds.values())  # never restored
    if window < 10:  # the window matters here: a fold without one says otherwise
        assert as_dicts(folded(AggregateFold(window=10**9), stream)) != as_dicts(live)


def folded(fold: AggregateFold, stream: list[Event]) -> AggregateFold:
    for e in stream:
        fold.apply(e)
    return fold


@pytest.mark.parametrize("partitions", [1, 3, 6])
def test_replay_counts_the_window_per_partition_of_the_events(partitions: int) -> None:
    stream, window = random_stream(5, users=12), 3
    live: dict[int, AggregateFold] = {}  # the aggregator: a fold per partition it owns
    for record, e in zip(records(stream, partitions), stream, strict=True):
        live.setdefault(record.partition, AggregateFold(window=window)).apply(e)
    expected = {u: a.to_dict() for f in live.values() for u, a in f.aggregates().items()}
    replay = ReplayResult(window=window)
    for record in records(stream, partitions):
        replay.apply(record)
    assert as_dicts(replay) == dict(sorted(expected.items()))
    assert sorted(replay.fold.folds) == sorted({r.partition for r in records(stream, partitions)})
    if partitions > 1:  # one fold for every partition would forget sooner
        assert as_dicts(folded(AggregateFold(window=window), stream)) != as_dicts(replay)


def test_user_partition_is_the_kafka_clients_partitioner() -> None:
    for user in ("ann", "bob", "client07", "zoë", "x" * 100):
        for partitions in (1, 3, 6, 12):
            every = list(range(partitions))
            assert user_partition(user, partitions) == DefaultPartitioner()(
                user.encode(), every, every)


async def test_replay_events_reads_the_events_with_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka_saga import replay as module
    from kafka_saga.bus.topics import Topics
    from kafka_saga.config import Settings

    async def read_topic(_bus, topic, apply, *_args, ends=None, **_kwargs):  # type: ignore[no-untyped-def]
        assert topic == bus.topics.events and ends == {p: 100 for p in range(6)}
        for record in records(stream, 6):
            apply(record)

    async def end_offsets(topic: str) -> dict[TopicPartition, int]:
        return {TopicPartition(topic, p): 100 for p in range(6)}  # small: one process

    stream = random_stream(8, users=10)
    settings = replace(Settings(), state_window=3, partitions=6)
    bus = SimpleNamespace(settings=settings, topics=Topics(""), bootstrap="-", end_offsets=end_offsets)
    monkeypatch.setattr(module, "read_topic", read_topic)
    for window in (None, 2):
        result = await module.replay_events(bus, window=window)  # type: ignore[arg-type]
        expected = ReplayResult(window=window or 3)
        for record in records(stream, 6):
            expected.apply(record)
        assert result.fold.window == (window or 3)
        assert as_dicts(result) == as_dicts(expected)


# --- the journal's marks -------------------------------------------------------------------

def test_marked_entries_are_encoded_at_take_in_last_written_order() -> None:
    state = {"a": 1, "b": 2}
    journal = Journal(lambda key: str(state[key]).encode() if key in state else None)
    journal.mark("a")
    journal.put("c", b"raw")
    journal.mark("b")
    state["a"] = 10
    journal.mark("a")  # written again: moves to the end, encoded once
    del state["b"]
    assert journal.entries["a"] is MARKED and len(journal) == 3
    assert list(journal.take().items()) == [("c", b"raw"), ("b", None), ("a", b"10")]
    assert journal.take() == {}
    journal.put("c", b"1")
    journal.delete("d")
    journal.put("c", b"2")
    assert list(journal.take().items()) == [("d", None), ("c", b"2")]
    with pytest.raises(TypeError):
        Journal().mark("a")
    null = NullJournal()
    null.put("a", b"1")
    null.mark("b")
    null.delete("c")
    assert len(null) == 0 and null.take() == {}
