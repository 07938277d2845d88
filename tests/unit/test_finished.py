"""Finished sagas the orchestrator remembers (kafka_saga.core.finished): packed records and
the bound (the restore is tests/unit/test_sagabook.py)."""

from __future__ import annotations

import tracemalloc

from kafka_saga.core.contracts import EventType, Snapshot, Step, new_id
from kafka_saga.core.finished import FinishedSagas, pack, settled, unpack
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


def test_a_finished_approved_saga_costs_a_few_hundred_bytes():
    sagas = [approved_saga() for _ in range(5000)]
    tracemalloc.start()
    finished = FinishedSagas(10_000)
    for saga in sagas:
        finished.add(saga, 3)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size / len(sagas) < 600  # live Saga objects: ~1.1 KB (ids not counted here)
