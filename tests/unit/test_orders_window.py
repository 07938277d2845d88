"""The orders view's bounded window (kafka_saga.query.orders): eviction order, exact counters
and stock after eviction, events of evicted sagas, the compact history."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from datetime import UTC, datetime, timedelta
from itertools import count

from kafka_saga.core.catalog import Catalog, CatalogItem
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.fields import canonical_time
from kafka_saga.query.orders import OrdersView

BASE = datetime(2026, 1, 1, tzinfo=UTC)
C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
V, P, INV, Z = Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE
CATALOG = Catalog({"book": CatalogItem(500, 10_000), "pen": CatalogItem(120, 10_000)})
_clock = count()

# the events one saga writes, per outcome
TRAILS = {
    "approved": [(C, V), (A, V), (A, P), (A, INV), (A, Z)],
    "late_rejected": [(C, V), (A, V), (A, P), (A, INV), (A, Z), (X, INV), (X, P), (R, Z)],
    "no_stock": [(C, V), (A, V), (A, P), (X, P), (R, INV)],
    "failed": [(C, V), (A, V), (F, P)],
    "pending": [(C, V), (A, V)],
    "duplicate": [(C, V), (R, V)],
}


def saga_events(order: str, trail: str, saga: str | None = None, item: str = "book",
                qty: int = 2) -> list[Event]:
    snap = Snapshot(order_id=order, user="alice", item=item, quantity=qty, price_cents=100 * qty)
    saga = saga or new_id()
    return [Event.new(kind, snap, step, saga,
                      occurred_at=canonical_time(BASE + timedelta(milliseconds=next(_clock))),
                      error_message="no" if kind in (R, F) else "")
            for kind, step in TRAILS[trail]]


def feed(view: OrdersView, events: list[Event]) -> OrdersView:
    for event in events:
        view.apply(event)
    return view


def counters(view: OrdersView, orders: list[str]) -> dict:
    return {"by_status": dict(view.by_status), "sagas": view.total(), "orders": len(view),
            "events": view.events, "duplicates": view.duplicates, "stock": view.catalog_view(),
            "status": {o: view.status(o) for o in orders}}


def test_the_oldest_finished_sagas_go_first_and_unfinished_ones_stay():
    view = OrdersView(CATALOG, max_sagas=3)
    feed(view, saga_events("a", "approved") + saga_events("b", "pending")
         + saga_events("c", "failed") + saga_events("d", "pending"))
    assert set(view.owners) == {"b", "c", "d"} and view.evicted == 1
    feed(view, saga_events("e", "pending"))
    assert set(view.owners) == {"b", "d", "e"}  # c was the only finished one left
    feed(view, saga_events("f", "pending"))  # none finished: the oldest unfinished goes
    assert set(view.owners) == {"d", "e", "f"} and view.evicted == 3
    assert [s["order_id"] for s in view.page(10)[0]] == sorted(
        ["d", "e", "f"], key=lambda o: view.owners[o])
    for order, status in (("a", "approved"), ("c", "failed"), ("b", "pending")):
        assert view.order(order) is None and view.status(order) == status
        evicted = view.evicted_order(order)
        assert evicted is not None and evicted["status"] == status
    assert view.evicted_order("b")["step"] == "Payment"  # where the pending saga stood
    assert view.evicted_order("d") is None and view.status("nope") is None
    assert len(view) == 6 and view.total() == 6 and view.by_status["pending"] == 4


def test_a_late_reject_of_an_evicted_order_moves_the_counters_and_the_stock():
    events = saga_events("old", "late_rejected", qty=7)
    view = feed(OrdersView(CATALOG, max_sagas=1), events[:5])
    feed(view, saga_events("new", "approved"))
    assert view.order("old") is None and view.stock("book") == 10_000 - 7 - 2
    assert view.by_status == {"pending": 0, "approved": 2, "rejected": 0, "failed": 0}
    for event in events[5:] + events:  # the late reject, then every event again
        view.apply(event)
    assert view.by_status == {"pending": 0, "approved": 1, "rejected": 1, "failed": 0}
    assert view.stock("book") == 10_000 - 2 and view.status("old") == "rejected"
    assert view.events == 5 + 5 + 3 and view.duplicates == len(events)


def test_a_second_saga_of_an_evicted_order_does_not_own_it():
    first = saga_events("o", "approved")
    view = feed(OrdersView(CATALOG, max_sagas=1), first + saga_events("x", "approved"))
    second = saga_events("o", "duplicate")
    feed(view, second)
    assert view.evicted_order("o")["saga_id"] == first[0].saga_id and len(view) == 2
    [summary], _ = view.page(10)
    assert summary["saga_id"] == second[0].saga_id and summary["duplicate"] is True
    assert view.status("o") == "approved" and view.total() == 3
    feed(view, saga_events("y", "approved"))  # the duplicate saga is evicted in turn
    assert not view.apply(second[-1]) and view.by_status["rejected"] == 1


def test_counters_funnel_and_stock_are_exact_whatever_the_window():
    rng = random.Random(5)
    sagas: list[list[Event]] = []
    orders: list[str] = []
    for n in range(300):
        order = new_id() if n % 3 else f"order-{n}"  # canonical ids and others
        orders.append(order)
        sagas.append(saga_events(order, rng.choice(list(TRAILS)[:-1]), item=rng.choice(["book", "pen"]),
                                 qty=rng.randint(1, 5)))
        if rng.random() < 0.1:  # a second saga of the same order
            sagas.append(saga_events(order, "duplicate", saga=None if n % 2 else f"dup-{n}"))
    queues = [list(s) for s in sagas]
    stream: list[Event] = []
    while queues:  # a random interleaving, each saga in its own order, with redeliveries
        queue = rng.choice(queues)
        stream.append(queue.pop(0))
        if rng.random() < 0.1:
            stream.append(rng.choice(stream[-50:]))
        if not queue:
            queues.remove(queue)
    reference = counters(feed(OrdersView(CATALOG, max_sagas=10**6), stream), orders)
    for window in (1, 2, 7, 50):
        view = feed(OrdersView(CATALOG, max_sagas=window), stream)
        assert len(view.sagas) <= window and view.evicted == view.total() - len(view.sagas)
        assert counters(view, orders) == reference, window


def test_evicted_orders_are_waited_for_like_the_others():
    async def scenario() -> None:
        view = feed(OrdersView(CATALOG, max_sagas=1), saga_events("done", "approved"))
        pending = saga_events("later", "no_stock")
        feed(view, pending[:2] + saga_events("x", "pending"))  # "later" evicted while pending
        assert view.order("later") is None and view.status("later") == "pending"
        feed(view, saga_events("y", "pending"))
        assert await view.wait_terminal("done", 5) is True  # evicted, already ended
        waiting = asyncio.create_task(view.wait_terminal("later", 5))
        await asyncio.sleep(0.01)
        feed(view, pending[2:])
        assert await waiting is True and view.status("later") == "rejected"

    asyncio.run(scenario())


def test_history_keeps_every_field_exactly():
    view = OrdersView(CATALOG)
    snap = Snapshot(order_id="h", user="bob", item="pen", quantity=1)
    events = [Event("e1", "s", C, snap, V, "2026-01-01T00:00:00.000001Z"),
              Event("e2", "s", A, snap, V, "0001-01-01T00:00:00.000000Z", retry_count=16383),
              Event("e3", "s", A, snap, P, "9999-12-31T23:59:59.999999Z", retry_count=2),
              Event("e4", "s", F, snap, INV, "2026-01-01T00:00:01Z", retry_count=20000,
                    error_message="not canonical, kept as it came")]
    feed(view, events)
    assert view.order("h")["history"] == [
        {"type": e.type.value, "step": e.step.value, "occurred_at": e.occurred_at,
         "retry_count": e.retry_count, "error_message": e.error_message} for e in events]


def test_an_evicted_order_costs_a_few_dozen_bytes():
    batches = [saga_events(new_id(), "approved") for _ in range(3000)]
    tracemalloc.start()
    view = OrdersView(CATALOG, max_sagas=10)
    for events in batches:
        feed(view, events)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert view.evicted == 2990 and size / 3000 < 150  # in full: ~1.4 KB


def test_the_partition_owning_an_order_is_kept_after_eviction():
    view = OrdersView(CATALOG, max_sagas=2)
    first = saga_events("o-p4", "late_rejected")
    for event in first[:5]:  # approved
        view.apply(event, 4)
    for order, partition in (("o-p0", 0), ("o-new1", 1), ("o-new2", 2)):
        for event in saga_events(order, "approved"):
            view.apply(event, partition)
    for event in saga_events("o-untold", "pending"):
        view.apply(event)  # no partition told
    assert view.evicted_order("o-p4") is not None and view.evicted_order("o-p0") is not None
    assert [view.partition(o) for o in ("o-p4", "o-p0", "o-new2", "o-untold", "o-ghost")] == [
        4, 0, 2, None, None]
    for event in first[5:]:  # the evicted saga is compensated by a late reject
        assert view.apply(event, 4)
    assert view.status("o-p4") == "rejected" and view.partition("o-p4") == 4
