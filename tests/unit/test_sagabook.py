"""The orchestrator's per-partition state store (kafka_saga.core.sagabook): its changelog
entries rebuild the same book, the finished window is bounded and tombstoned, and the
orders.events tail moves restored sagas on without running a step twice."""

from __future__ import annotations

from kafka_saga.core.contracts import Command, CommandType, Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.saga import APPROVED, FAILED, PENDING, REJECTED, Ending, Saga
from kafka_saga.core.sagabook import EVENTS_FROM, SagaBook

C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
STEPS = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)


def snap() -> Snapshot:
    return Snapshot(order_id=new_id(), user="u", item="latte", quantity=1, price_cents=400)


def trail(saga_id: str, snapshot: Snapshot, kinds: list[tuple[EventType, Step]],
          partition: int = 1) -> list[Event]:
    extra = {"metadata": {"outcome": REJECTED, "ending_step": "Finalize"}}
    created = {"metadata": {"command_partition": str(partition), "command_offset": "7"}}
    return [Event.new(kind, snapshot, step, saga_id,
                      **(extra if kind is X else created if kind is C else {}))
            for kind, step in kinds]


def drive(book: SagaBook, events: list[Event]) -> Saga:
    """What the orchestrator does: apply each event, then note the saga in its book."""
    saga = Saga(events[0].saga_id, events[0].snapshot, "cmd-" + events[0].saga_id, origin=(1, 7))
    for event in events:
        saga.apply(event)
        if saga.saga_id in book.live:
            book.saved(saga)
        else:
            book.add(saga)
    return saga


def compacted(*journals: dict[str, bytes | None]) -> dict[str, bytes]:
    """The changelog as a compacted topic: last write wins, in last-write order, no tombstones."""
    log: dict[str, bytes | None] = {}
    for journal in journals:
        for key, value in journal.items():
            log.pop(key, None)
            log[key] = value
    return {k: v for k, v in log.items() if v is not None}


def restored(entries: dict[str, bytes], window: int = 10) -> SagaBook:
    book = SagaBook(1, window)
    for key, value in entries.items():
        book.load(key, value)
    assert not book.journal  # loading writes nothing back
    return book


def test_the_changelog_rebuilds_the_same_book():
    book = SagaBook(1, window=10)
    approved = drive(book, trail(new_id(), snap(), [(C, Step.VALIDATION)] + [(A, s) for s in STEPS]))
    half = drive(book, trail(new_id(), snap(), [(C, Step.VALIDATION), (A, Step.VALIDATION)]))
    failed = drive(book, trail(new_id(), snap(), [(C, Step.VALIDATION), (F, Step.PAYMENT)]))
    first = book.journal.take()
    book.set_events_from({1: 42})
    second = {EVENTS_FROM: book.set_events_from({})}
    back = restored(compacted(first, second))
    assert set(back.live) == {half.saga_id} and back.live[half.saga_id] == half
    assert back.finished.get(approved.saga_id).saga == approved  # type: ignore[union-attr]
    assert back.finished.get(failed.saga_id).status == FAILED  # type: ignore[union-attr]
    assert back.events_from == {1: 42}
    duplicate = Command("cmd-" + half.saga_id, new_id(), CommandType.ORDER_CREATE, half.snapshot)
    assert back.knows(duplicate)  # a redelivered OrderCreate is recognised by its command id
    assert dict(back.entries()) == compacted(first, second)  # a snapshot writes the same


def test_the_finished_window_is_bounded_and_tombstoned():
    book = SagaBook(1, window=3)
    sagas = [drive(book, trail(new_id(), snap(), [(C, Step.VALIDATION), (R, Step.VALIDATION)]))
             for _ in range(5)]
    journal = book.journal.take()
    assert len(book.finished) == 3 and not book.live
    gone = [s.saga_id for s in sagas[:2]]
    assert all(journal["s:" + saga_id] is None for saga_id in gone)
    back = restored(compacted(journal), window=3)
    assert len(back.finished) == 3 and all(s not in back.finished for s in gone)


def test_the_events_tail_moves_restored_sagas_on_once():
    book = SagaBook(1, window=10)
    approved_id, half_id = new_id(), new_id()
    approved_events = trail(approved_id, snap(), [(C, Step.VALIDATION)] + [(A, s) for s in STEPS])
    half_events = trail(half_id, snap(), [(C, Step.VALIDATION), (A, Step.VALIDATION), (A, Step.PAYMENT)])
    drive(book, approved_events)
    drive(book, half_events[:2])
    back = restored(compacted(book.journal.take()))
    late = trail(approved_id, approved_events[0].snapshot,
                 [(X, Step.INVENTORY), (X, Step.PAYMENT), (R, Step.FINALIZE)])
    stranger = trail(new_id(), snap(), [(C, Step.VALIDATION)], partition=2)  # another book's
    tail = half_events[1:] + late[:1] + stranger  # the tail overlaps the checkpoint: harmless
    moved = [back.replay(e, int(e.metadata["command_partition"]) if e.type is C else None) for e in tail]
    assert [m is not None for m in moved] == [False, True, True, False]
    assert back.live[half_id].completed == [Step.VALIDATION, Step.PAYMENT]
    compensating = back.live[approved_id]  # an approved saga a late reject is compensating
    assert compensating.status == APPROVED and compensating.ending == Ending(REJECTED, Step.FINALIZE, "")
    for event in late[1:]:
        back.replay(event, None)
    assert approved_id not in back.live
    assert back.finished.get(approved_id).status == REJECTED  # type: ignore[union-attr]
    created = trail(new_id(), snap(), [(C, Step.VALIDATION)])[0]  # written after the checkpoint
    saga = back.replay(created, 1)
    assert saga is not None and saga.status == PENDING and saga.origin == (1, 7)
