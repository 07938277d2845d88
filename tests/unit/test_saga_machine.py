"""The order saga as a pure event-sourced state machine (kafka_saga.core.saga)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step
from kafka_saga.core.saga import APPROVED, FAILED, PENDING, REJECTED, Ending, Saga, validate

CATALOG = Catalog()
CREATED, OK, REJ, FAIL, COMP = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED,
                                EventType.ORDER_REJECTED, EventType.ORDER_FAILED,
                                EventType.ORDER_COMPENSATED)
V, P, INV, F = Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE


def snap(user: str = "alice", item: str = "latte", quantity: int = 2, price: int = 800,
         order_id: str = "o-1") -> Snapshot:
    return Snapshot(order_id=order_id, user=user, item=item, quantity=quantity, price_cents=price)


def new_saga(**kw: Any) -> Saga:
    return Saga("s-1", snap(), "c-1", **kw)


def advance(saga: Saga, *steps: Step) -> Saga:
    for step in steps:
        assert saga.apply(saga.event(OK, step)) is True
    return saga


def state(saga: Saga) -> tuple[Any, ...]:
    return (saga.status, list(saga.completed), list(saga.compensated), saga.retry_count,
            saga.reason, saga.step, saga.ending, saga.origin, saga.command_id)


# --- validate --------------------------------------------------------------------------

@pytest.mark.parametrize("kw, fragment", [
    ({"user": ""}, "user must not be empty"),
    ({"user": "  \t"}, "user must not be empty"),
    ({"quantity": 0}, "between 1 and 100, got 0"),
    ({"quantity": 101}, "between 1 and 100, got 101"),
    ({"quantity": -5}, "got -5"),
    ({"item": "unicorn"}, "unknown item 'unicorn'"),
    ({"price": -1}, "price_cents must not be negative"),
    ({"user": "", "quantity": 0, "item": "unicorn"}, "user must not be empty"),  # user first
    ({"quantity": 0, "item": "unicorn", "price": -1}, "quantity"),  # then quantity
])
def test_validate_refuses(kw: dict[str, Any], fragment: str) -> None:
    reason = validate(snap(**kw), CATALOG)
    assert reason is not None and fragment in reason


@pytest.mark.parametrize("kw", [{"quantity": 1}, {"quantity": 100}, {}, {"price": 0},
                                {"item": "limited-edition", "quantity": 100}])
def test_validate_accepts(kw: dict[str, Any]) -> None:
    assert validate(snap(**kw), CATALOG) is None


def test_validate_uses_the_given_catalog() -> None:
    assert validate(snap(item="latte"), Catalog({})) == "unknown item 'latte'"


# --- approvals and terminals -----------------------------------------------------------

def test_from_event_takes_identity_from_the_event() -> None:
    first = new_saga().event(CREATED, V)
    saga = Saga.from_event(first)
    assert (saga.saga_id, saga.command_id, saga.snapshot) == ("s-1", "c-1", first.snapshot)
    assert (saga.status, saga.completed, saga.step, saga.terminal) == (PENDING, [], V, False)


def test_approvals_append_steps_in_order_and_duplicates_change_nothing() -> None:
    saga = new_saga()
    for done, step in enumerate((V, P, INV), start=1):
        event = saga.event(OK, step)
        assert saga.apply(event) is True
        assert saga.completed == [V, P, INV][:done] and saga.step is step
        before = state(saga)
        assert saga.apply(event) is False
        assert saga.apply(saga.event(OK, step)) is False  # same step, new event id
        assert state(saga) == before
    assert saga.status == PENDING and not saga.terminal


def test_finalize_approval_approves_and_later_approvals_are_ignored() -> None:
    saga = advance(new_saga(), V, P, INV, F)
    assert (saga.status, saga.terminal, saga.step, saga.next_step()) == (APPROVED, True, F, None)
    before = state(saga)
    assert saga.apply(saga.event(OK, F)) is False
    assert state(saga) == before


@pytest.mark.parametrize("kind, outcome", [(REJ, REJECTED), (FAIL, FAILED)])
def test_terminal_from_pending(kind: EventType, outcome: str) -> None:
    saga = advance(new_saga(), V)
    assert saga.apply(saga.event(kind, P, error_message="nope", retry_count=4)) is True
    assert (saga.status, saga.reason, saga.step, saga.retry_count) == (outcome, "nope", P, 4)
    assert saga.terminal
    before = state(saga)
    for again in (REJ, FAIL):  # a second terminal of either kind is a no-op
        assert saga.apply(saga.event(again, INV, error_message="later")) is False
    assert saga.apply(saga.event(OK, P)) is False  # no approval after the end
    assert state(saga) == before


def test_failed_after_approved_is_ignored() -> None:
    saga = advance(new_saga(), V, P, INV, F)
    before = state(saga)
    assert saga.apply(saga.event(FAIL, INV, error_message="too late", retry_count=9)) is False
    assert state(saga) == before


def test_rejected_after_approved_is_the_late_rejection() -> None:
    saga = advance(new_saga(), V, P, INV, F)
    assert saga.apply(saga.event(REJ, F, error_message="price mismatch")) is True
    assert (saga.status, saga.reason, saga.step) == (REJECTED, "price mismatch", F)
    assert saga.completed == [V, P, INV, F]
    assert saga.apply(saga.event(REJ, F, error_message="again")) is False
    assert saga.reason == "price mismatch"


def test_retry_count_is_the_max_seen() -> None:
    saga = new_saga()
    saga.apply(saga.event(OK, V, retry_count=0))
    saga.apply(saga.event(OK, P, retry_count=3))
    saga.apply(saga.event(OK, INV, retry_count=1))
    assert saga.retry_count == 3
    saga.apply(saga.event(REJ, F, retry_count=2))
    assert saga.retry_count == 3
    other = advance(new_saga(), V)
    other.apply(other.event(FAIL, P, retry_count=7))
    assert other.retry_count == 7


# --- origin ------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata, origin", [
    ({"command_partition": "2", "command_offset": "41"}, (2, 41)),
    ({}, None),
    ({"command_partition": "x", "command_offset": "41"}, None),
    ({"command_partition": "2", "command_offset": "4.5"}, None),
    ({"command_partition": "2"}, None),
    ({"command_offset": "41"}, None),
])
def test_origin_from_order_created_metadata(metadata: dict[str, str], origin: Any) -> None:
    saga = Saga.from_event(new_saga().event(CREATED, V, metadata=metadata))
    assert saga.origin == origin


def test_order_created_never_counts_as_a_change_nor_overrides_origin() -> None:
    saga = new_saga(origin=(1, 5))
    event = saga.event(CREATED, V, metadata={"command_partition": "7", "command_offset": "70"})
    assert saga.apply(event) is False
    assert saga.origin == (1, 5)
    restored = Saga.from_event(event)
    assert restored.apply(saga.event(CREATED, V, metadata={"command_partition": "0",
                                                          "command_offset": "0"})) is False
    assert restored.origin == (7, 70)


# --- steps and compensations -------------------------------------------------------------

def test_next_step_walks_the_step_order() -> None:
    saga = new_saga()
    seen = []
    while (step := saga.next_step()) is not None:
        seen.append(step)
        advance(saga, step)
    assert seen == [V, P, INV, F] and saga.status == APPROVED


@pytest.mark.parametrize("steps, pending", [
    ((), []), ((V,), []), ((V, P), [P]), ((V, P, INV), [INV, P]), ((V, P, INV, F), [INV, P]),
])
def test_pending_compensations_most_recent_first(steps: tuple[Step, ...], pending: list[Step]) -> None:
    assert advance(new_saga(), *steps).pending_compensations() == pending


def test_compensations_are_recorded_once_and_shrink_the_pending_list() -> None:
    saga = advance(new_saga(), V, P, INV)
    ending = Ending(REJECTED, INV, "out of stock")
    first = saga.compensation_event(INV, ending)
    assert saga.apply(first) is True
    assert saga.compensated == [INV] and saga.pending_compensations() == [P]
    assert saga.apply(first) is False
    assert saga.apply(saga.compensation_event(INV, Ending(FAILED, F, "other"))) is False
    assert saga.apply(saga.compensation_event(P, ending)) is True
    assert saga.compensated == [INV, P] and saga.pending_compensations() == []
    assert saga.status == PENDING  # the terminal event is written after the compensations
    assert saga.completed == [V, P, INV]


def test_ending_comes_from_the_first_compensation_metadata() -> None:
    saga = advance(new_saga(), V, P, INV)
    saga.apply(saga.compensation_event(INV, Ending(FAILED, INV, "inventory did not answer")))
    assert saga.ending == Ending(FAILED, INV, "inventory did not answer")
    saga.apply(saga.compensation_event(P, Ending(REJECTED, F, "other")))
    assert saga.ending == Ending(FAILED, INV, "inventory did not answer")


@pytest.mark.parametrize("metadata, ending", [
    ({}, None),
    ({"outcome": "approved", "ending_step": "Finalize"}, None),
    ({"outcome": "rejected"}, Ending(REJECTED, P, "why")),  # ending_step defaults to the step
    ({"outcome": "failed", "ending_step": "Inventory"}, Ending(FAILED, INV, "why")),
])
def test_ending_metadata_variants(metadata: dict[str, str], ending: Ending | None) -> None:
    saga = advance(new_saga(), V, P)
    assert saga.apply(saga.event(COMP, P, error_message="why", metadata=metadata)) is True
    assert saga.compensated == [P] and saga.ending == ending


def test_apply_tolerates_a_bad_ending_step() -> None:
    saga = advance(new_saga(), V, P)
    event = saga.event(COMP, P, error_message="why",
                       metadata={"outcome": "rejected", "ending_step": "Bogus"})
    Event.decode(event.encode())  # a contract-valid event
    assert saga.apply(event) is True
    assert saga.compensated == [P]


def test_saga_restored_half_way_through_compensations_knows_its_ending() -> None:
    live = advance(new_saga(), V, P, INV, F)
    log = [live.event(CREATED, V)] + [live.event(OK, s) for s in (V, P, INV, F)]
    planned = live.reject_request("price mismatch")
    assert planned == Ending(REJECTED, F, "price mismatch")
    step = live.pending_compensations()[0]
    log.append(live.compensation_event(step, planned))
    assert live.apply(log[-1]) and step is INV
    # crash here: a new owner rebuilds the saga from the log
    restored = Saga.from_event(log[0])
    for event in log[1:]:
        restored.apply(event)
    assert restored.ending == planned and restored.pending_compensations() == [P]
    assert restored.status == APPROVED  # still approved until the terminal event
    restored.apply(restored.compensation_event(P, restored.ending))
    terminal = restored.terminal_event(restored.ending)
    assert (terminal.type, terminal.step, terminal.error_message) == (REJ, F, "price mismatch")
    assert restored.apply(terminal) and restored.status == REJECTED


# --- events built by the saga ------------------------------------------------------------

def test_event_carries_identity_and_retry_count() -> None:
    saga = new_saga()
    saga.retry_count = 3
    event = saga.event(OK, P, error_message="x")
    assert (event.saga_id, event.command_id, event.correlation_key) == ("s-1", "c-1", "o-1")
    assert (event.type, event.step, event.retry_count, event.error_message) == (OK, P, 3, "x")
    assert event.snapshot is saga.snapshot and event.occurred_at
    assert saga.event(OK, P, retry_count=1).retry_count == 1
    assert saga.event(OK, P).event_id != event.event_id
    assert Event.decode(event.encode()) == event


def test_compensation_event_shape() -> None:
    saga = advance(new_saga(), V, P)
    saga.retry_count = 2
    event = saga.compensation_event(P, Ending(FAILED, INV, "inventory did not answer"))
    assert (event.type, event.step, event.error_message) == (COMP, P, "inventory did not answer")
    assert event.metadata == {"outcome": "failed", "ending_step": "Inventory"}
    assert (event.saga_id, event.correlation_key, event.retry_count) == ("s-1", "o-1", 2)


@pytest.mark.parametrize("outcome, kind", [(REJECTED, REJ), (FAILED, FAIL)])
def test_terminal_event_shape(outcome: str, kind: EventType) -> None:
    saga = advance(new_saga(), V)
    event = saga.terminal_event(Ending(outcome, P, "payment declined"))
    assert (event.type, event.step, event.error_message, event.metadata) == (
        kind, P, "payment declined", {})
    assert (event.saga_id, event.command_id, event.correlation_key) == ("s-1", "c-1", "o-1")


@pytest.mark.parametrize("steps, step, expected", [
    ((), None, V), ((V,), None, P), ((V, P), None, INV), ((V, P, INV), None, F),
    ((V,), INV, INV),  # an explicit step wins
    ((V, P, INV, F), None, F), ((V, P, INV, F), P, F),  # approved: late rejection at Finalize
])
def test_reject_request(steps: tuple[Step, ...], step: Step | None, expected: Step) -> None:
    saga = advance(new_saga(), *steps)
    assert saga.reject_request("cancel", step) == Ending(REJECTED, expected, "cancel")


@pytest.mark.parametrize("kind", [REJ, FAIL])
def test_reject_request_after_the_end_is_ignored(kind: EventType) -> None:
    saga = advance(new_saga(), V)
    saga.apply(saga.event(kind, P))
    assert saga.reject_request("cancel") is None
    assert saga.reject_request("cancel", INV) is None


# --- property: live == restored ----------------------------------------------------------

def simulate(rng: random.Random, n: int) -> tuple[Saga, list[Event]]:
    """Drive one saga like the orchestrator does (plus crashes and redeliveries)."""
    quantity = rng.choice((0, 1, 5, 100, 101))
    live = Saga(f"s-{n}", snap(quantity=quantity, order_id=f"o-{n}"), f"c-{n}",
                origin=(n % 3, n))
    log: list[Event] = []

    def emit(event: Event) -> None:
        if live.apply(event) or event.type is CREATED:
            log.append(event)
        if log and rng.random() < 0.1:  # at-least-once: a record delivered twice
            log.append(rng.choice(log))

    def finish(ending: Ending, crash: bool = False) -> None:
        for step in live.pending_compensations():
            emit(live.compensation_event(step, ending))
            if crash and rng.random() < 0.5:
                return  # the owner dies half-way through its compensations
        emit(live.terminal_event(ending))

    emit(live.event(CREATED, V, metadata={"command_partition": str(n % 3),
                                          "command_offset": str(n)}))
    while not live.terminal:
        if live.ending is not None:
            finish(live.ending)
            continue
        step = live.next_step()
        assert step is not None
        roll = rng.random()
        if step is V and validate(live.snapshot, CATALOG):
            finish(Ending(REJECTED, V, validate(live.snapshot, CATALOG) or ""))
        elif roll < 0.65:
            emit(live.event(OK, step, retry_count=rng.randint(0, 3)))
        elif roll < 0.85:
            outcome = rng.choice((REJECTED, FAILED))
            finish(Ending(outcome, step, f"{outcome} at {step}"), crash=True)
        else:
            ending = live.reject_request("cancelled")
            assert ending == Ending(REJECTED, step, "cancelled")
            finish(ending, crash=True)
    if live.status == APPROVED and rng.random() < 0.5:  # a late rejection
        ending = live.reject_request("late")
        assert ending is not None
        finish(ending, crash=True)
        if live.ending is not None and live.status != REJECTED:
            finish(live.ending)
    if rng.random() < 0.3:  # a stray record after the end: a no-op, live and restored
        stray = live.event(rng.choice((FAIL, OK)), rng.choice((V, P, INV, F)))
        assert live.apply(stray) is False
        log.append(stray)
    return live, log


def restore(log: list[Event]) -> Saga:
    saga = Saga.from_event(log[0])
    for event in log[1:]:
        saga.apply(event)
    return saga


@pytest.mark.parametrize("seed", range(8))
def test_restored_saga_equals_the_live_one(seed: int) -> None:
    rng = random.Random(seed)
    outcomes = set()
    for n in range(60):
        live, log = simulate(rng, n)
        restored = restore(log)
        assert state(restored) == state(live), (seed, n)
        assert restored.terminal
        outcomes.add(restored.status)
        if restored.status in (REJECTED, FAILED):
            assert restored.pending_compensations() == []
        assert set(restored.compensated) <= {P, INV}
        assert len(set(restored.compensated)) == len(restored.compensated)
        before = state(restored)
        for event in log:  # re-applying anything again changes nothing
            assert restored.apply(event) is False
            assert state(restored) == before
    assert outcomes == {APPROVED, REJECTED, FAILED}


@pytest.mark.parametrize("seed", range(4))
def test_every_prefix_of_the_log_restores_to_a_consistent_saga(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for n in range(40):
        _, log = simulate(rng, n)
        for cut in range(1, len(log) + 1):
            partial = restore(log[:cut])
            again = restore(log[:cut] + log[:cut])
            assert state(again) == state(partial)
            assert partial.completed == [s for s in (V, P, INV, F) if s in partial.completed]
