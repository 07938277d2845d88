"""The tracker's rules as a state store: journal, changelog, restore (kafka_saga.core.rules)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.fields import canonical_time
from kafka_saga.core.rules import DUPLICATE, PRICE, VELOCITY, TrackerRules, VelocityWindow
from kafka_saga.core.store import DEFAULT_WINDOW, Store
from tests.support.changelog import Changelog

CATALOG = Catalog()
BASE = datetime(2026, 1, 1, tzinfo=UTC)
T0 = BASE.timestamp()
FORWARD = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)


def snap(order_id: str = "o-1", user: str = "u1", price: int | None = None) -> Snapshot:
    good = CATALOG.price("latte", 2) or 0
    return Snapshot(order_id, user, "latte", 2, price_cents=good if price is None else price)


def ev(kind: EventType, saga: str, snapshot: Snapshot, at: float = 0.0, step: Step = Step.VALIDATION,
       **extra: object) -> Event:
    return Event.new(kind, snapshot, step, saga, occurred_at=canonical_time(BASE + timedelta(seconds=at)),
                     **extra)


def created(saga: str, snapshot: Snapshot, at: float = 0.0) -> Event:
    return ev(EventType.ORDER_CREATED, saga, snapshot, at)


def fired(rules: TrackerRules, events: list[Event]) -> list[tuple[str, str]]:
    return [(v.saga_id, v.rule) for e in events for v in rules.observe(e)]


def restored(rules: TrackerRules, velocity_limit: int = 0, max_sagas: int = DEFAULT_WINDOW
             ) -> TrackerRules:
    changelog = Changelog()
    changelog.write(rules)
    return changelog.restore(TrackerRules(CATALOG, velocity_limit, max_sagas=max_sagas))


def test_the_rules_are_a_store_remembering_the_window_by_default():
    rules = TrackerRules(CATALOG)
    assert isinstance(rules, Store) and rules.max_sagas == DEFAULT_WINDOW
    assert TrackerRules(CATALOG, max_sagas=7).max_sagas == 7


def test_a_new_saga_writes_its_order_and_whether_it_owns_it():
    rules = TrackerRules(CATALOG)
    fired(rules, [created("a", snap()), ev(EventType.ORDER_APPROVED, "a", snap(), 1)])
    assert rules.journal.take() == {"a:a": b"1o-1"}  # nothing fired: no state entry
    assert fired(rules, [created("b", snap())]) == [("b", DUPLICATE)]
    assert rules.journal.take() == {"a:b": b"0o-1", "s:b": b"2"}
    fired(rules, [created("b", snap()), created("a", snap())])  # redelivered: nothing new
    assert rules.journal.take() == {}


def test_fired_rules_ending_and_counted_creations_are_written():
    rules = TrackerRules(CATALOG, velocity_limit=1)
    assert fired(rules, [created("a", snap(price=1), at=1.5)]) == [("a", PRICE)]
    assert rules.journal.take() == {"a:a": b"1o-1", "v:a": f"{T0 + 1.5!r} u1".encode(),
                                    "s:a": b"17"}  # price, counted
    assert fired(rules, [created("b", snap("o-2", "user two"), at=2)]) == []
    assert rules.journal.take() == {"a:b": b"1o-2", "v:b": f"{T0 + 2.0!r} user two".encode()}
    fired(rules, [ev(EventType.ORDER_REJECTED, "b", snap("o-2", "user two"), 3)])
    assert rules.journal.take() == {"s:b": b"24"}  # ended, counted
    fired(rules, [ev(EventType.ORDER_FAILED, "b", snap("o-2", "user two"), 4)])
    assert rules.journal.take() == {}  # already ended


def test_forgotten_sagas_are_tombstoned_with_every_entry_they_had():
    rules = TrackerRules(CATALOG, velocity_limit=5, max_sagas=2)
    fired(rules, [created("a", snap(price=1)), created("b", snap("o-2"))])
    rules.journal.take()
    fired(rules, [created("c", snap("o-3"))])
    assert rules.journal.take() == {"a:c": b"1o-3", "v:c": f"{T0!r} u1".encode(),
                                    "a:a": None, "s:a": None, "v:a": None}
    plain = TrackerRules(CATALOG, max_sagas=1)
    fired(plain, [created("a", snap()), created("b", snap("o-2"))])
    assert plain.journal.take() == {"a:b": b"1o-2", "a:a": None}


def test_a_restore_keeps_owners_fired_rules_and_endings():
    rules = TrackerRules(CATALOG)
    first, second = new_id(), new_id()
    fired(rules, [created(first, snap()), created(second, snap(price=3)),
                  ev(EventType.ORDER_COMPENSATED, "c", snap("o-3"), metadata={"outcome": "failed"})])
    copy = restored(rules)
    assert (copy.owner("o-1"), copy.fired(second), copy.ended("c"), len(copy)) == (
        first, {DUPLICATE, PRICE}, True, 3)
    assert len(copy.journal) == 0
    later = [created(second, snap(price=3)), created("d", snap()),
             ev(EventType.ORDER_APPROVED, "c", snap("o-3", price=1), 5)]
    assert fired(copy, later) == [("d", DUPLICATE)]


def test_a_restore_keeps_the_arrival_order_not_the_order_of_the_last_change():
    rules = TrackerRules(CATALOG, max_sagas=3)
    fired(rules, [created("a", snap("o-a")), created("b", snap("o-b"))])
    fired(rules, [ev(EventType.ORDER_REJECTED, "a", snap("o-a"), 1)])  # "a" changes last
    copy = restored(rules, max_sagas=3)
    for both in (rules, copy):
        fired(both, [created("c", snap("o-c")), created("d", snap("o-d"))])
        assert both.owner("o-a") is None and both.owner("o-b") == "b" and len(both) == 3


def test_a_forgotten_owner_stays_forgotten_after_a_restore():
    rules = TrackerRules(CATALOG, max_sagas=3)
    fired(rules, [created("a", snap()), created("b", snap())])  # b: a duplicate of a's order
    fired(rules, [created("x", snap("o-x")), created("y", snap("o-y"))])  # a is forgotten
    copy = restored(rules, max_sagas=3)
    assert rules.owner("o-1") is copy.owner("o-1") is None
    for both in (rules, copy):
        assert fired(both, [ev(EventType.ORDER_APPROVED, "b", snap(), 1)]) == []
        assert both.fired("b") == {DUPLICATE}
        assert fired(both, [created("c", snap())]) == []  # the next saga of the order owns it
        assert both.owner("o-1") == "c"


def test_a_restore_refills_the_shared_velocity_window():
    window = VelocityWindow(limit=2)
    p0 = TrackerRules(CATALOG, partition=0, window=window)
    p1 = TrackerRules(CATALOG, partition=1, window=window)
    fired(p0, [created("a", snap("o-a"), at=1), created("b", snap("o-b"), at=2)])
    fired(p1, [created("x", snap("o-x"), at=3)])
    assert len(window.users["u1"]) == 3
    changelog = Changelog()
    changelog.write(p0)
    window.forget(0)  # reassigned: the role forgets the partition's creations, then restores
    copy = changelog.restore(TrackerRules(CATALOG, partition=0, window=window))
    assert window.users["u1"] == {"x": (T0 + 3, 1), "a": (T0 + 1, 0), "b": (T0 + 2, 0)}
    assert fired(copy, [created("c", snap("o-c"), at=4)]) == [("c", VELOCITY)]
    assert fired(copy, [created("a", snap("o-a"), at=1)]) == []  # counted once, still


def test_the_limit_a_forgotten_sagas_creation_no_longer_counts_after_a_restore():
    """Live, the shared window still counts a saga the rules forgot; a restore brings back
    the creations of remembered sagas only (the default window: 10,000 sagas a partition)."""
    live = TrackerRules(CATALOG, velocity_limit=2, max_sagas=2)
    fired(live, [created("a", snap("o-a"), at=0), created("b", snap("o-b"), at=1),
                 created("x", snap("o-x", "u2"), at=1)])  # a is forgotten, its creation counted
    copy = restored(live, velocity_limit=2, max_sagas=2)
    late = created("c", snap("o-c"), at=2)
    assert fired(live, [late]) == [("c", VELOCITY)] and fired(copy, [late]) == []


def test_entries_of_a_saga_forgotten_while_loading_are_skipped():
    rules = TrackerRules(CATALOG, velocity_limit=9)
    fired(rules, [created("a", snap("o-a")), created("b", snap("o-b"), at=1)])
    fired(rules, [ev(EventType.ORDER_REJECTED, "a", snap("o-a"), 2)])  # written after b's arrival
    copy = restored(rules, velocity_limit=9, max_sagas=1)
    assert len(copy) == 1 and copy.owner("o-b") == "b" and not copy.ended("a")
    assert copy.window is not None and "b" in copy.window.users["u1"]


@pytest.mark.parametrize("key, value", [("x:s", b"1"), ("s:s", b"bits"), ("v:s", b"x u"),
                                        ("a:t", b"o-1")])
def test_a_foreign_entry_is_refused(key, value):
    rules = TrackerRules(CATALOG, velocity_limit=1)
    rules.load("a:s", b"1o-1")
    with pytest.raises(ValueError):
        rules.load(key, value)


def random_stream(rng: random.Random, orders: int) -> list[Event]:
    """Sagas a few at a time: some duplicated orders, wrong or changed prices, a missed
    creation, endings of every kind, redeliveries; three users ordering often."""
    per_saga: list[list[Event]] = []
    for i in range(orders):
        order_id = f"o-{rng.randrange(orders // 2)}" if rng.random() < 0.5 else new_id()
        saga = new_id() if i % 2 else f"s{i}"
        good = snap(order_id, f"u{rng.randrange(3)}")
        start = snap(order_id, good.user, price=rng.choice((None, None, None, 1)))
        late = snap(order_id, good.user, price=rng.choice((None, None, None, 7)))
        at = i * 8.0 + rng.random() * 4
        events = [created(saga, start, at)] if rng.random() < 0.9 else []
        events += [ev(EventType.ORDER_APPROVED, saga, late, at + 1, step)
                   for step in FORWARD[:rng.randint(0, 4)]]
        ending = rng.random()
        if ending < 0.15:
            events.append(ev(rng.choice((EventType.ORDER_REJECTED, EventType.ORDER_FAILED)), saga, late))
        elif ending < 0.3:
            outcome = rng.choice(("rejected", "failed", ""))
            events.append(ev(EventType.ORDER_COMPENSATED, saga, late, at + 2, Step.PAYMENT,
                             metadata={"outcome": outcome} if outcome else {}))
        per_saga.append(events)
    merged: list[Event] = []
    while any(per_saga):
        if merged and rng.random() < 0.1:
            merged.append(rng.choice(merged))  # redelivery
        merged.append(rng.choice([s for s in per_saga if s][:4]).pop(0))
    return merged


def violations(rules: TrackerRules, event: Event) -> list[tuple[str, str, str, str]]:
    return [(v.saga_id, v.rule, v.reason, v.detail) for v in rules.observe(event)]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("velocity, max_sagas", [(0, DEFAULT_WINDOW), (0, 5), (2, DEFAULT_WINDOW),
                                                 (2, 25)])
def test_rules_restored_at_any_point_find_what_the_original_finds(seed, velocity, max_sagas):
    """Random events; the journal taken every few events into a compacted changelog; rules
    loaded from it at a random point then break the same rules as the original from there.
    (With velocity, 25 sagas span over two velocity windows: see the limit above.)"""
    rng = random.Random(seed * 7 + max_sagas + velocity)
    events = random_stream(rng, 60)
    split = rng.randrange(len(events))
    original, changelog = TrackerRules(CATALOG, velocity, max_sagas=max_sagas), Changelog()
    found = []
    for step, event in enumerate(events[:split]):
        found.append(violations(original, event))
        if rng.random() < 0.3 or step == split - 1:
            changelog.write(original)
    copy_log = changelog.copy()
    copy = copy_log.restore(TrackerRules(CATALOG, velocity, max_sagas=max_sagas))
    assert len(copy) == len(original)
    for event in events[split:]:
        found.append(violations(original, event))
        assert violations(copy, event) == found[-1]
        if rng.random() < 0.3:
            changelog.write(original)
            copy_log.write(copy)
    changelog.write(original)
    copy_log.write(copy)
    assert list(copy_log.entries.items()) == list(changelog.entries.items())
    sagas = {event.saga_id for event in events}
    assert {s: (copy.fired(s), copy.ended(s)) for s in sagas} == {
        s: (original.fired(s), original.ended(s)) for s in sagas}
    assert len(copy) == len(original) <= max_sagas
    assert sum(key.startswith("a:") for key in changelog.entries) == len(original)
    assert any(found), "the stream should break some rules"
