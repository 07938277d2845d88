"""Finished sagas the orchestrator remembers (kafka_saga.core.finished): packed records, the
bound, and the restore from orders.events in bounded memory."""

from __future__ import annotations

import tracemalloc

from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.finished import FinishedSagas, SagaRestore, pack, settled, unpack
from kafka_saga.core.saga import APPROVED, FAILED, REJECTED, Ending, Saga

C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
STEPS = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)


def approved_saga(**attributes: str) -> Saga:
    snap = Snapshot(order_id=new_id(), user="bob", item="latte", quantity=3, sequence=4,
                    price_cents=1200, inventory_available=False, attributes=attributes)
    saga = Saga(new_id(), snap, new_id(), origin=(2, 41))
    for step in STEPS:
        saga.apply(saga.event(A, step, retry_count=2 if step is Step.PAYMENT else 0))
    return saga


def ended(outcome: str) -> Saga:
    saga = Saga(new_id(), Snapshot(order_id=new_id(), user="u", item="latte", quantity=1), new_id())
    saga.apply(saga.terminal_event(Ending(outcome, Step.PAYMENT, "no")))
    return saga


def test_an_approved_saga_comes_back_whole():
    saga = approved_saga(gift="yes")
    assert saga.status == APPROVED and settled(saga)
    assert unpack(saga.saga_id, pack(saga, 2)) == saga
    saga.apply(saga.compensation_event(Step.INVENTORY, Ending(REJECTED, Step.FINALIZE, "late")))
    assert not settled(saga)  # being compensated by a late reject
    back = unpack(saga.saga_id, pack(saga, 2))
    assert back == saga and back.pending_compensations() == [Step.PAYMENT]


def test_rejected_and_failed_sagas_keep_only_what_a_reject_needs():
    finished = FinishedSagas(10)
    for outcome in (REJECTED, FAILED):
        saga = ended(outcome)
        record = pack(saga, 1)
        assert len(record) < 60 and unpack(saga.saga_id, record) is None
        finished.add(saga, 1)
        done = finished.get(saga.saga_id)
        assert done is not None and (done.status, done.partition, done.saga) == (outcome, 1, None)
        assert saga.saga_id in finished and finished.knows_command(saga.command_id)


def test_the_oldest_finished_are_forgotten_first():
    finished = FinishedSagas(3)
    sagas = [approved_saga() for _ in range(5)]
    forgotten = [gone for saga in sagas[:4] for gone in finished.add(saga, 0)]
    assert forgotten == [sagas[0].saga_id]
    assert finished.add(sagas[1], 0) == []  # remembered again: now the newest
    assert finished.add(sagas[4], 0) == [sagas[2].saga_id]
    assert [s.saga_id in finished for s in sagas] == [False, True, False, True, True]
    assert not finished.knows_command(sagas[0].command_id) and finished.knows_command(sagas[4].command_id)
    assert finished.get(sagas[1].saga_id).saga == sagas[1]  # type: ignore[union-attr]


def test_partitions_are_forgotten_together_and_restores_merge():
    finished, other = FinishedSagas(4), FinishedSagas(4)
    mine = [approved_saga() for _ in range(2)]
    for partition, saga in enumerate(mine):
        finished.add(saga, partition)
    finished.remove_partitions({0})
    assert len(finished) == 1 and mine[1].saga_id in finished
    theirs = [ended(REJECTED) for _ in range(4)]
    for saga in theirs:
        other.add(saga, 5)
    assert finished.merge(other) == [mine[1].saga_id]  # over the bound: ours were older
    assert len(finished) == 4 and all(finished.knows_command(s.command_id) for s in theirs)


def trail(saga_id: str, snap: Snapshot, kinds: list[tuple[EventType, Step]]) -> list[Event]:
    extra = {"metadata": {"outcome": REJECTED, "ending_step": "Finalize"}}
    return [Event.new(kind, snap, step, saga_id, **(extra if kind is X else {}))
            for kind, step in kinds]


def test_restore_packs_finished_sagas_and_resumes_the_others():
    def snap() -> Snapshot:
        return Snapshot(order_id=new_id(), user="u", item="latte", quantity=1, price_cents=400)

    approved = trail(new_id(), snap(), [(C, Step.VALIDATION)] + [(A, s) for s in STEPS])
    late = trail(approved[0].saga_id, approved[0].snapshot,
                 [(X, Step.INVENTORY), (X, Step.PAYMENT), (R, Step.FINALIZE)])
    half = trail(new_id(), snap(), [(C, Step.VALIDATION), (A, Step.VALIDATION)])
    failed = trail(new_id(), snap(), [(C, Step.VALIDATION), (F, Step.PAYMENT)])
    stranger = trail(new_id(), snap(), [(A, Step.VALIDATION)])  # no OrderCreated: not ours
    restore = SagaRestore(limit=10)
    for event in approved + half + failed + stranger + late[:1]:
        restore.feed(event, 1)
    assert set(restore.unfinished) == {half[0].saga_id, approved[0].saga_id}  # one compensating
    assert restore.finished.get(failed[0].saga_id).status == FAILED  # type: ignore[union-attr]
    for event in late[1:]:
        restore.feed(event, 1)
    done = restore.finished.get(approved[0].saga_id)
    assert done is not None and done.status == REJECTED and restore.sagas == 3
    assert set(restore.unfinished) == {half[0].saga_id}


def test_restore_stays_within_the_bound_and_never_restarts_a_forgotten_saga():
    restore = SagaRestore(limit=2)
    first = None
    for _ in range(5):
        snap = Snapshot(order_id=new_id(), user="u", item="latte", quantity=1)
        events = trail(new_id(), snap, [(C, Step.VALIDATION), (R, Step.VALIDATION)])
        first = first or events
        for event in events:
            restore.feed(event, 0)
    assert len(restore.finished) == 2 and not restore.unfinished
    for event in first:  # the forgotten saga's events again (e.g. a re-run)
        restore.feed(event, 0)
    assert not restore.unfinished and first[0].saga_id not in restore.finished


def test_a_finished_approved_saga_costs_a_few_hundred_bytes():
    sagas = [approved_saga() for _ in range(5000)]
    tracemalloc.start()
    finished = FinishedSagas(10_000)
    for saga in sagas:
        finished.add(saga, 3)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size / len(sagas) < 600  # live Saga objects: ~1.1 KB (ids not counted here)
