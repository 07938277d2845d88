"""The tracker's rules, pure: price integrity, duplicate orders, velocity, idempotence, restore."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Command, CommandType, Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.fields import canonical_time
from kafka_saga.core.rules import (
    DUPLICATE,
    PRICE,
    VELOCITY,
    TrackerRules,
    VelocityWindow,
    reject_command,
    reject_command_id,
)

CATALOG = Catalog()
BASE = datetime(2026, 1, 1, tzinfo=UTC)
FORWARD = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)


def snap(order_id: str = "o-1", user: str = "u1", item: str = "latte", quantity: int = 2,
         price: int | None = None) -> Snapshot:
    if price is None:
        price = CATALOG.price(item, quantity) or 0
    return Snapshot(order_id, user, item, quantity, price_cents=price)


def ev(kind: EventType, saga: str, snapshot: Snapshot, step: Step = Step.VALIDATION,
       at: float = 0.0, **extra: object) -> Event:
    when = canonical_time(BASE + timedelta(seconds=at))
    return Event.new(kind, snapshot, step, saga, occurred_at=when, **extra)


def created(saga: str, snapshot: Snapshot, at: float = 0.0) -> Event:
    return ev(EventType.ORDER_CREATED, saga, snapshot, at=at)


def approvals(saga: str, snapshot: Snapshot, at: float = 0.0) -> list[Event]:
    return [ev(EventType.ORDER_APPROVED, saga, snapshot, step, at + i) for i, step in enumerate(FORWARD)]


def lifecycle(saga: str, snapshot: Snapshot, at: float = 0.0) -> list[Event]:
    return [created(saga, snapshot, at), *approvals(saga, snapshot, at + 0.1)]


def run(rules: TrackerRules, events: list[Event]) -> list[tuple[str, str, str]]:
    return [(v.saga_id, v.rule, v.reason) for e in events for v in rules.observe(e)]


# --- price integrity ---------------------------------------------------------------------

def test_matching_price_never_fires():
    rules = TrackerRules(CATALOG)
    assert run(rules, lifecycle("s1", snap())) == []
    assert rules.owner("o-1") == "s1" and rules.fired("s1") == frozenset()


def test_price_mismatch_on_create_fires_once_for_the_saga():
    rules = TrackerRules(CATALOG)
    wrong = snap(price=1)
    first = rules.observe(created("s1", wrong))
    assert [(v.saga_id, v.rule, v.reason) for v in first] == [("s1", PRICE, "price_mismatch")]
    assert first[0].order_id == "o-1" and first[0].event.type is EventType.ORDER_CREATED
    assert "1 != catalog 800" in first[0].detail
    assert run(rules, approvals("s1", wrong)) == []  # the later events carry it too: no re-fire
    assert rules.fired("s1") == {PRICE} and rules.fired_total == 1


def test_mismatch_noticed_only_at_finalize_still_fires():
    rules = TrackerRules(CATALOG)  # e.g. the tracker was down while the saga ran
    final = ev(EventType.ORDER_APPROVED, "s1", snap(price=9), Step.FINALIZE)
    [violation] = rules.observe(final)
    assert violation.rule == PRICE and violation.event.step is Step.FINALIZE
    command = reject_command(violation)
    assert command.step is Step.FINALIZE and command.saga_id == "s1"


def test_price_changed_mid_saga_fires_at_the_event_that_changed_it():
    rules = TrackerRules(CATALOG)
    good = snap()
    assert run(rules, [created("s1", good), ev(EventType.ORDER_APPROVED, "s1", good)]) == []
    bad = snap(price=good.price_cents + 1)
    assert run(rules, [ev(EventType.ORDER_APPROVED, "s1", bad, Step.PAYMENT)]) == [
        ("s1", PRICE, "price_mismatch")]


@pytest.mark.parametrize("item, quantity, price", [
    ("latte", 3, 1200), ("espresso", 1, 250), ("limited-edition", 2, 3000), ("mocha", 0, 0)])
def test_price_is_unit_price_times_quantity(item, quantity, price):
    rules = TrackerRules(CATALOG)
    assert rules.observe(created("s", snap(item=item, quantity=quantity, price=price))) == []
    assert rules.observe(created("t", snap("o-2", item=item, quantity=quantity, price=price + 1)))


def test_unknown_item_has_no_price_rule_and_custom_catalogs_are_used():
    rules = TrackerRules(CATALOG)
    assert rules.observe(created("s1", snap(item="tea", price=12345))) == []
    custom = TrackerRules(Catalog.from_mapping({"tea": {"price_cents": 100, "stock": 1}}))
    assert custom.observe(created("s2", snap("o-2", item="tea", quantity=2, price=200))) == []
    assert custom.observe(created("s3", snap("o-3", item="tea", quantity=2, price=250)))


# --- duplicate orders --------------------------------------------------------------------

def test_second_saga_of_an_order_is_a_duplicate_the_first_owns_it():
    rules = TrackerRules(CATALOG)
    order = snap()
    assert run(rules, [created("first", order)]) == []
    assert run(rules, [created("second", order)]) == [("second", DUPLICATE, "duplicate_order")]
    assert run(rules, approvals("first", order) + approvals("second", order)) == []
    assert run(rules, [created("third", order)]) == [("third", DUPLICATE, "duplicate_order")]
    assert rules.owner("o-1") == "first"
    assert run(rules, [created("other", snap("o-2"))]) == []


def test_duplicate_with_a_wrong_price_breaks_both_rules_once_each():
    rules = TrackerRules(CATALOG)
    rules.observe(created("a", snap()))
    found = run(rules, [created("b", snap(price=3)), *approvals("b", snap(price=3))])
    assert found == [("b", DUPLICATE, "duplicate_order"), ("b", PRICE, "price_mismatch")]


def test_the_first_saga_keeps_the_order_even_once_it_ended():
    rules = TrackerRules(CATALOG)
    order = snap()
    run(rules, [created("a", order), ev(EventType.ORDER_REJECTED, "a", order, error_message="x")])
    assert run(rules, [created("b", order)]) == [("b", DUPLICATE, "duplicate_order")]


# --- at most once, redelivery, restore ---------------------------------------------------

def test_redelivery_of_everything_fires_nothing_new():
    rules = TrackerRules(CATALOG, velocity_limit=1)
    events = [*lifecycle("a", snap(price=5)), created("b", snap()), created("c", snap("o-9"), at=1)]
    assert run(rules, events) == [("a", PRICE, "price_mismatch"), ("b", DUPLICATE, "duplicate_order"),
                                  ("b", VELOCITY, "velocity_exceeded"),
                                  ("c", VELOCITY, "velocity_exceeded")]
    assert run(rules, events) == [] and run(rules, list(reversed(events))) == []


def _stream(seed: int, orders: int = 40) -> list[Event]:
    """Orders of a few users, some with wrong prices, some duplicated, some ended; interleaved."""
    rng = random.Random(seed)
    per_saga: list[list[Event]] = []
    for i in range(orders):
        order_id = f"o-{rng.randrange(orders // 2)}"  # collisions: duplicates
        item, quantity = rng.choice(list(CATALOG.items)), rng.randint(1, 4)
        good = CATALOG.price(item, quantity) or 0
        start = snap(order_id, f"u{rng.randrange(3)}", item, quantity, good)
        late = snap(order_id, start.user, item, quantity, good + rng.choice((0, 0, 0, 7)))
        if rng.random() < 0.2:
            start = late
        at, saga = i * 5.0 + rng.random(), f"s{i}"
        events = [created(saga, start, at)]
        events += [ev(EventType.ORDER_APPROVED, saga, late, s, at + 1) for s in FORWARD[:rng.randint(0, 4)]]
        if rng.random() < 0.3:
            events.append(ev(rng.choice((EventType.ORDER_REJECTED, EventType.ORDER_FAILED)), saga, late))
        per_saga.append(events)
    merged: list[Event] = []
    while any(per_saga):
        merged.append(rng.choice([s for s in per_saga if s]).pop(0))
    return merged


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("velocity", [0, 2])
def test_restore_then_handle_equals_the_live_run_for_every_split(seed, velocity):
    events = _stream(seed)
    live = TrackerRules(CATALOG, velocity)
    per_event = [[v.command_id for v in live.observe(e)] for e in events]
    assert any(per_event), "the stream should break some rules"
    for split in range(0, len(events) + 1, 3):
        rules = TrackerRules(CATALOG, velocity)
        for event in events[:split]:
            rules.observe(event)  # restore: state only
        handled = [[v.command_id for v in rules.observe(e)] for e in events[split:]]
        assert handled == per_event[split:]
        # a redelivered tail (the batch after the last commit) changes nothing more
        assert run(rules, events[max(0, split - 5):]) == []


# --- sagas that ended --------------------------------------------------------------------

@pytest.mark.parametrize("ending", [
    ev(EventType.ORDER_REJECTED, "s1", snap(), error_message="quantity"),
    ev(EventType.ORDER_FAILED, "s1", snap(), Step.PAYMENT, retry_count=3),
    ev(EventType.ORDER_COMPENSATED, "s1", snap(), Step.PAYMENT, metadata={"outcome": "rejected"}),
    ev(EventType.ORDER_COMPENSATED, "s1", snap(), Step.INVENTORY, metadata={"outcome": "failed"}),
])
def test_ended_sagas_are_left_alone(ending):
    rules = TrackerRules(CATALOG, velocity_limit=1)
    rules.observe(created("s0", snap("o-0")))
    assert rules.observe(ending) == [] and rules.ended("s1")
    later = [created("s1", snap(price=1)), ev(EventType.ORDER_APPROVED, "s1", snap(price=1), Step.FINALIZE)]
    assert run(rules, later) == []  # redelivered or late events: nothing more to do
    assert rules.fired("s1") == frozenset()


def test_compensation_without_an_outcome_does_not_end_the_saga():
    rules = TrackerRules(CATALOG)
    assert rules.observe(ev(EventType.ORDER_COMPENSATED, "s1", snap(), Step.PAYMENT)) == []
    assert not rules.ended("s1")
    assert rules.observe(ev(EventType.ORDER_APPROVED, "s1", snap(price=2), Step.FINALIZE))


def test_a_saga_rejected_after_approval_is_ended_too():
    rules = TrackerRules(CATALOG)
    order = snap()
    run(rules, lifecycle("s1", order))
    assert rules.observe(ev(EventType.ORDER_REJECTED, "s1", order, Step.FINALIZE)) == []
    assert rules.ended("s1")
    assert rules.observe(ev(EventType.ORDER_APPROVED, "s1", snap(price=1), Step.FINALIZE)) == []


def test_an_approved_saga_can_still_be_rejected():
    rules = TrackerRules(CATALOG)
    order = snap()
    run(rules, lifecycle("a", order))
    assert run(rules, lifecycle("b", order, at=100)) == [("b", DUPLICATE, "duplicate_order")]


# --- velocity ----------------------------------------------------------------------------

def test_velocity_is_off_by_default():
    rules = TrackerRules(CATALOG)
    assert rules.window is None
    assert run(rules, [created(f"s{i}", snap(f"o-{i}"), at=i * 0.1) for i in range(50)]) == []
    assert TrackerRules(CATALOG, window=VelocityWindow(0)).window is None


def test_velocity_fires_past_the_limit_within_60s_of_event_time():
    rules = TrackerRules(CATALOG, velocity_limit=2)
    events = [created(f"s{i}", snap(f"o-{i}"), at=at) for i, at in enumerate((0, 10, 20, 59.9, 80))]
    events.append(created("other-user", snap("o-x", user="u2"), at=21))
    found = run(rules, events)
    # s2: 0,10,20 -> 3 > 2 ; s3: (-0.1, 59.9] -> 4 ; s4: (20, 80] holds 59.9, 80 -> 2
    assert found == [("s2", VELOCITY, "velocity_exceeded"), ("s3", VELOCITY, "velocity_exceeded")]
    assert run(rules, events) == []
    # only creations count, not the other events of the same sagas
    assert run(rules, approvals("s0", snap("o-0"), at=21)) == []


def test_velocity_window_boundary_and_event_time_order():
    window = VelocityWindow(limit=1)
    assert window.add("u", "a", 100.0) == 1
    assert window.add("u", "b", 160.0) == 1  # exactly 60 s later: outside (t-60, t]
    assert window.add("u", "c", 130.0) == 2  # a late arrival: (70, 130] holds a and c
    assert window.add("u", "c", 130.0) == 2  # idempotent per saga


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_velocity_rejects_the_last_seen_of_a_burst_whatever_the_arrival_order(order):
    rules = TrackerRules(CATALOG, velocity_limit=2)
    events = [created(f"s{i}", snap(f"o-{i}"), at=i * 10.0) for i in range(4)]
    found = run(rules, [events[i] for i in order])
    assert [saga for saga, _, _ in found] == [f"s{i}" for i in order[2:]]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_velocity_counts_orders_within_one_60s_window_not_around_one_order(order):
    rules = TrackerRules(CATALOG, velocity_limit=2)  # 0, 50, 100: no 60 s holds all three
    events = [created(f"s{i}", snap(f"o-{i}"), at=i * 50.0) for i in range(3)]
    assert run(rules, [events[i] for i in order]) == []


def test_velocity_window_is_shared_across_partitions_and_forgets_one():
    window = VelocityWindow(limit=2)
    p0 = TrackerRules(CATALOG, partition=0, window=window)
    p1 = TrackerRules(CATALOG, partition=1, window=window)
    assert run(p0, [created("a", snap("o-a"), at=1)]) == []
    assert run(p1, [created("b", snap("o-b"), at=2)]) == []
    assert run(p0, [created("c", snap("o-c"), at=3)]) == [("c", VELOCITY, "velocity_exceeded")]
    window.forget(0)
    assert window.users["u1"] == {"b": (window.users["u1"]["b"][0], 1)}
    window.forget(1)
    assert window.users == {}


def test_velocity_window_bounds_users_and_orders_per_user():
    window = VelocityWindow(limit=1000, max_users=3, max_per_user=5)
    for i in range(10):
        window.add(f"user{i}", "s", 0.0)
        assert window.add("hot", f"s{i}", float(i)) == min(i + 1, 5)
    assert len(window.users) == 3 and "hot" in window.users and len(window.users["hot"]) == 5


def test_velocity_ignores_unparseable_event_times():
    rules = TrackerRules(CATALOG, velocity_limit=1)
    events = [created(f"s{i}", snap(f"o-{i}")) for i in range(3)]
    events[2].occurred_at = "not a time"
    assert run(rules, events) == [("s1", VELOCITY, "velocity_exceeded")]


# --- commands and memory -----------------------------------------------------------------

def test_reject_command_carries_the_saga_snapshot_step_and_reason():
    [violation] = TrackerRules(CATALOG).observe(
        ev(EventType.ORDER_APPROVED, "s1", snap(price=3), Step.INVENTORY))
    command = reject_command(violation)
    assert command.type is CommandType.ORDER_REJECT and command.saga_id == "s1"
    assert command.command_id == "tracker:price_integrity:s1"
    assert command.snapshot == violation.event.snapshot and command.step is Step.INVENTORY
    assert command.metadata == {"reason": "price_mismatch", "source": "tracker", "rule": PRICE}
    assert command.key == b"o-1"
    assert Command.decode(command.encode()) == command  # valid on the wire


def test_command_id_stays_deterministic_and_valid_for_long_saga_ids():
    saga = "x" * 128
    assert reject_command_id(DUPLICATE, saga) == reject_command_id(DUPLICATE, saga)
    assert len(reject_command_id(DUPLICATE, saga)) <= 128
    assert reject_command_id(DUPLICATE, saga) != reject_command_id(PRICE, saga)
    rules = TrackerRules(CATALOG)
    [violation] = rules.observe(created(saga, snap(price=1)))
    command = reject_command(violation)
    assert Command.decode(command.encode()).command_id == command.command_id


def test_memory_is_bounded_oldest_sagas_first():
    rules = TrackerRules(CATALOG, max_sagas=3)
    run(rules, [created(f"s{i}", snap(f"o-{i}", price=1)) for i in range(5)])
    assert len(rules) == 3 and rules.fired_total == 5
    assert rules.owner("o-0") is None and rules.owner("o-4") == "s4"
    assert rules.fired("s0") == frozenset() and rules.fired("s4") == {PRICE}
    # the bound is documented: a forgotten saga's redelivery could fire again
    assert run(rules, [created("s0", snap("o-0", price=1))]) == [("s0", PRICE, "price_mismatch")]


def test_canonical_ids_are_kept_as_numbers_and_given_back_as_they_came():
    rules = TrackerRules(CATALOG, max_sagas=2)
    order, first, second, third = new_id(), new_id(), new_id(), new_id()
    assert run(rules, lifecycle(first, snap(order))) == []
    [violation] = rules.observe(created(second, snap(order)))
    assert violation.rule == DUPLICATE and first in violation.detail
    assert rules.owner(order) == first and rules.fired(second) == {DUPLICATE}
    rules.observe(ev(EventType.ORDER_REJECTED, second, snap(order)))
    assert rules.ended(second) and not rules.ended(first)
    assert run(rules, [created(third, snap(new_id()))]) == []  # the first saga is forgotten
    assert rules.owner(order) is None and len(rules) == 2 and rules.fired(first) == frozenset()
