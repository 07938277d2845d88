"""Pure unit tests of the orders view (kafka_saga.query.orders) and order submission
(kafka_saga.core.submission)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from kafka_saga.core.catalog import Catalog, CatalogItem
from kafka_saga.core.contracts import Command, CommandType, Event, EventType, Snapshot, Step
from kafka_saga.core.fields import ContractError, canonical_time
from kafka_saga.core.submission import (
    new_order_command,
    parse_cancel_request,
    parse_order_request,
    reject_command,
)
from kafka_saga.query.orders import HISTORY_MAX, OrdersView

BASE = datetime(2026, 1, 1, tzinfo=UTC)
C, A, R, F, X = (EventType.ORDER_CREATED, EventType.ORDER_APPROVED, EventType.ORDER_REJECTED,
                 EventType.ORDER_FAILED, EventType.ORDER_COMPENSATED)
V, P, INV, Z = Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE
CATALOG = Catalog({"book": CatalogItem(500, 10), "pen": CatalogItem(120, 1000)})
_ids = count()


def ev(order: str, type_: EventType, step: Step = V, t: int = 0, *, saga: str | None = None,
       item: str = "book", qty: int = 2, price: int = 1000, user: str = "alice",
       eid: str | None = None, retry: int = 0, error: str = "") -> Event:
    snap = Snapshot(order_id=order, user=user, item=item, quantity=qty, price_cents=price)
    return Event(event_id=eid or f"e{next(_ids):09d}", saga_id=saga or f"saga-{order}", type=type_,
                 snapshot=snap, step=step, occurred_at=canonical_time(BASE + timedelta(milliseconds=t)),
                 retry_count=retry, error_message=error)


def approved(order: str, **kw: Any) -> list[Event]:
    return [ev(order, C, V, 0, **kw)] + [ev(order, A, s, i + 1, **kw) for i, s in enumerate((V, P, INV, Z))]


def view_of(events: list[Event]) -> OrdersView:
    view = OrdersView(CATALOG)
    for event in events:
        view.apply(event)
    return view


# --- the order view ---------------------------------------------------------------------------

def test_approved_order_view_has_every_field_and_its_history():
    view = view_of(approved("o1", user="bob", qty=3, price=1500))
    order = view.order("o1")
    assert order is not None
    history = order.pop("history")
    assert order == {
        "order_id": "o1", "saga_id": "saga-o1", "user": "bob", "item": "book", "quantity": 3,
        "price_cents": 1500, "status": "approved", "step": "Finalize", "reason": "",
        "retry_count": 0, "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.004000Z", "trace_id": None,
    }
    assert [(h["type"], h["step"]) for h in history] == [
        ("OrderCreated", "Validation"), ("OrderApproved", "Validation"), ("OrderApproved", "Payment"),
        ("OrderApproved", "Inventory"), ("OrderApproved", "Finalize")]
    assert set(history[0]) == {"type", "step", "occurred_at", "retry_count", "error_message"}
    assert view.order("nope") is None and len(view) == 1


def test_an_order_reports_the_trace_its_created_event_names():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    events = approved("o1")
    events[0] = dataclasses.replace(events[0], metadata={"traceparent": parent})
    events[1] = dataclasses.replace(events[1], metadata={"traceparent": "00-" + "f" * 32 + "-" + "1" * 16 + "-01"})
    view = view_of(events)
    order = view.order("o1")
    assert order is not None and order["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    malformed = approved("o2")
    malformed[0] = dataclasses.replace(malformed[0], metadata={"traceparent": "garbage"})
    view = view_of(malformed)
    assert view.order("o2")["trace_id"] is None  # type: ignore[index]


def test_pending_failed_and_rejected_states():
    view = view_of([ev("p", C), ev("p", A, V, 1), ev("p", A, P, 2, retry=2)])
    assert (view.order("p")["status"], view.order("p")["step"]) == ("pending", "Payment")
    assert view.order("p")["retry_count"] == 2

    view.apply(ev("p", F, P, 3, retry=3, error="gateway down"))
    view.apply(ev("p", X, V, 4))
    failed = view.order("p")
    assert (failed["status"], failed["step"], failed["reason"], failed["retry_count"]) == (
        "failed", "Payment", "gateway down", 3)
    assert failed["history"][-1]["type"] == "OrderCompensated"
    assert failed["history"][-2]["error_message"] == "gateway down"

    # Terminal rejected/failed stays: a later approval or another outcome changes nothing.
    assert not view.apply(ev("p", R, Z, 5, error="late"))
    assert not view.apply(ev("p", A, INV, 6))
    assert view.order("p")["status"] == "failed" and len(view.order("p")["history"]) == 5


def test_an_approved_order_can_later_be_rejected_but_not_failed():
    view = view_of(approved("o"))
    assert not view.apply(ev("o", F, Z, 9, error="no"))
    assert view.order("o")["status"] == "approved"
    assert view.apply(ev("o", R, Z, 10, error="price_mismatch"))
    order = view.order("o")
    assert (order["status"], order["reason"], order["updated_at"]) == (
        "rejected", "price_mismatch", "2026-01-01T00:00:00.010000Z")
    assert view.by_status == {"pending": 0, "approved": 0, "rejected": 1, "failed": 0}


def test_a_duplicate_event_changes_nothing():
    events = approved("o") + [ev("o", X, INV, 7), ev("o", R, Z, 8)]
    once = view_of(events)
    twice = OrdersView(CATALOG)
    for event in events:
        assert twice.apply(event)
        assert not twice.apply(event)  # redelivered at once
    for event in events:
        assert not twice.apply(event)  # and all of them again
    assert twice.order("o") == once.order("o")
    assert twice.page(10) == once.page(10)
    assert twice.catalog_view() == once.catalog_view()
    assert twice.events == len(events) and twice.duplicates == 2 * len(events)
    # The same fact under a new event id (e.g. re-emitted after a restart) is a no-op too.
    assert not twice.apply(ev("o", A, P, 20))
    assert not twice.apply(ev("o", C, V, 21))
    assert twice.order("o") == once.order("o")


def test_the_first_saga_owns_the_order_and_a_second_one_is_only_indexed():
    first = [ev("o", C, V, 0, saga="s1"), ev("o", A, V, 1, saga="s1")]
    second = [ev("o", C, V, 2, saga="s2", qty=9, user="mallory"),
              ev("o", R, V, 3, saga="s2", error="duplicate order")]
    view = view_of(first + second)
    order = view.order("o")
    assert (order["saga_id"], order["status"], order["user"], order["quantity"]) == (
        "s1", "pending", "alice", 2)
    assert len(order["history"]) == 2 and order["updated_at"] == first[-1].occurred_at
    sagas, _ = view.page(10)
    assert [(s["saga_id"], s["status"], s["duplicate"]) for s in sagas] == [
        ("s1", "pending", False), ("s2", "rejected", True)]
    assert len(view) == 1 and view.total() == 2 and view.total("rejected") == 1
    assert view.owner("o").saga_id == "s1"


def test_history_is_bounded_to_the_latest_entries():
    assert OrdersView().history_max == HISTORY_MAX == 50
    view = OrdersView(CATALOG, history_max=3)
    events = approved("o") + [ev("o", R, Z, 9, error="late")]
    for event in events:
        view.apply(event)
    history = view.order("o")["history"]
    assert [(h["type"], h["step"]) for h in history] == [
        ("OrderApproved", "Inventory"), ("OrderApproved", "Finalize"), ("OrderRejected", "Finalize")]
    assert history[-1]["error_message"] == "late"
    assert view.order("o")["created_at"] == events[0].occurred_at  # not lost with the entry


# --- sagas index ------------------------------------------------------------------------------

def test_sagas_page_sorted_with_cursor_and_status_filter():
    events: list[Event] = []
    for i in range(12):
        order = f"o{i:02d}"
        saga = f"s{(i * 7) % 12:02d}"  # created out of id order
        events.append(ev(order, C, V, i, saga=saga))
        if i % 3 == 0:
            events.append(ev(order, R, V, i, saga=saga, error="no"))
    view = view_of(events)
    everything, cursor = view.page(100)
    assert [s["saga_id"] for s in everything] == [f"s{i:02d}" for i in range(12)] and cursor is None

    seen: list[str] = []
    after = None
    while True:
        items, after = view.page(5, after)
        seen += [s["saga_id"] for s in items]
        if after is None:
            break
        assert after == items[-1]["saga_id"]
    assert seen == [f"s{i:02d}" for i in range(12)]

    rejected, cursor = view.page(2, None, "rejected")
    assert [s["status"] for s in rejected] == ["rejected"] * 2 and cursor == rejected[-1]["saga_id"]
    rest, cursor = view.page(2, cursor, "rejected")
    assert len(rest) == 2 and cursor is None  # exactly 4 rejected: the last page says so
    assert view.total("rejected") == 4 and view.total("pending") == 8 and view.total() == 12
    assert view.page(3, "zzz") == ([], None)
    assert set(rest[0]) == {"saga_id", "order_id", "user", "item", "quantity", "status", "step",
                            "reason", "retry_count", "created_at", "updated_at", "duplicate"}


# --- stock ------------------------------------------------------------------------------------

def test_stock_counts_inventory_approvals_and_compensations_once_per_saga():
    view = OrdersView(CATALOG)
    assert view.stock("book") == 10 and view.catalog_view()["book"] == {"price_cents": 500, "stock": 10}
    for event in approved("a", qty=3):
        view.apply(event)
    assert view.stock("book") == 7
    view.apply(ev("a", A, INV, 50))  # the same fact again, new event id
    assert view.stock("book") == 7
    for event in [ev("b", C), ev("b", A, V), ev("b", A, P), ev("b", A, INV, qty=4)]:
        view.apply(event)
    assert view.stock("book") == 3
    view.apply(ev("b", X, INV, 9, qty=4))
    view.apply(ev("b", X, INV, 10, qty=4))  # compensated twice: released once
    view.apply(ev("b", X, P, 11, qty=4))
    view.apply(ev("b", R, INV, 12, qty=4))
    assert view.stock("book") == 7
    view.apply(ev("c", C, item="pen", qty=5))
    view.apply(ev("c", X, INV, 1, item="pen", qty=5))  # never reserved: nothing to give back
    assert view.stock("pen") == 1000
    assert view.catalog_view() == {"book": {"price_cents": 500, "stock": 7},
                                   "pen": {"price_cents": 120, "stock": 1000}}
    assert view.stock("unknown") == 0


# --- waiting for the end ----------------------------------------------------------------------

async def test_wait_terminal_resolves_when_the_order_ends_and_times_out_otherwise():
    view = view_of([ev("o", C), ev("o", A, V, 1)])
    started = time.monotonic()
    assert await view.wait_terminal("o", 0.2) is False
    assert 0.15 <= time.monotonic() - started < 2 and view.waiting() == 0

    async def finish() -> None:
        await asyncio.sleep(0.1)
        view.apply(ev("o", F, P, 5, error="declined"))

    task = asyncio.create_task(finish())
    started = time.monotonic()
    waits = await asyncio.gather(view.wait_terminal("o", 10), view.wait_terminal("o", 10))
    assert waits == [True, True] and time.monotonic() - started < 2
    await task
    assert view.waiting() == 0
    assert await view.wait_terminal("o", 0.01) is True  # already terminal: at once

    # An order not seen yet can appear and end while someone waits for it.
    async def appear() -> None:
        await asyncio.sleep(0.05)
        for event in approved("new"):
            view.apply(event)

    task = asyncio.create_task(appear())
    assert await view.wait_terminal("new", 10) is True
    assert view.order("new")["status"] == "approved"
    await task
    # A duplicate saga ending does not end the order.
    view.apply(ev("o2", C, saga="first"))
    view.apply(ev("o2", C, saga="second"))
    view.apply(ev("o2", R, saga="second", error="duplicate"))
    assert await view.wait_terminal("o2", 0.1) is False and view.waiting() == 0


# --- submission -------------------------------------------------------------------------------

def test_parse_order_request_accepts_a_valid_body():
    assert parse_order_request({"user": "u", "item": "book", "quantity": 2}) == {
        "user": "u", "item": "book", "quantity": 2, "attributes": {}, "price_cents": None}
    full = parse_order_request({"user": "u", "item": "x", "quantity": 100,
                                "attributes": {"gift": "yes"}, "price_cents": 0})
    assert full["attributes"] == {"gift": "yes"} and full["price_cents"] == 0


@pytest.mark.parametrize(("body", "reason", "words"), [
    ([1, 2], "wrong_shape", "JSON object"),
    (None, "wrong_shape", "null"),
    ({"item": "book", "quantity": 1}, "missing_field", "user"),
    ({"user": "u", "quantity": 1}, "missing_field", "item"),
    ({"user": "u", "item": "book"}, "missing_field", "quantity"),
    ({"user": " ", "item": "book", "quantity": 1}, "invalid_field", "empty"),
    ({"user": 7, "item": "book", "quantity": 1}, "invalid_field", "user"),
    ({"user": "u" * 129, "item": "book", "quantity": 1}, "invalid_field", "128"),
    ({"user": "u", "item": "book", "quantity": "2"}, "invalid_field", "quantity"),
    ({"user": "u", "item": "book", "quantity": 2.5}, "invalid_field", "quantity"),
    ({"user": "u", "item": "book", "quantity": True}, "invalid_field", "bool"),
    ({"user": "u", "item": "book", "quantity": 0}, "invalid_field", "between 1 and 100"),
    ({"user": "u", "item": "book", "quantity": 101}, "invalid_field", "between 1 and 100"),
    ({"user": "u", "item": "book", "quantity": 1, "attributes": {"a": 1}}, "invalid_field", "attributes.a"),
    ({"user": "u", "item": "book", "quantity": 1, "attributes": ["a"]}, "invalid_field", "attributes"),
    ({"user": "u", "item": "book", "quantity": 1, "attributes": {str(i): "" for i in range(65)}},
     "invalid_field", "64"),
    ({"user": "u", "item": "book", "quantity": 1, "price_cents": -1}, "invalid_field", "price_cents"),
    ({"user": "u", "item": "book", "quantity": 1, "price_cents": "5"}, "invalid_field", "price_cents"),
    ({"user": "u", "item": "book", "quantity": 1, "colour": "red"}, "unknown_field", "colour"),
])
def test_parse_order_request_rejects_with_a_clear_message(body, reason, words):
    with pytest.raises(ContractError) as info:
        parse_order_request(body)
    assert info.value.reason == reason
    assert words in str(info.value)


def test_new_order_command_prices_from_the_catalog_and_round_trips():
    command = new_order_command("u", "book", 3, CATALOG, attributes={"k": "v"})
    assert command.type is CommandType.ORDER_CREATE and command.step is Step.VALIDATION
    assert command.snapshot.price_cents == 1500 and command.snapshot.attributes == {"k": "v"}
    assert command.key == command.snapshot.order_id.encode()
    assert len({command.command_id, command.saga_id, command.snapshot.order_id}) == 3
    assert Command.decode(command.encode()) == command
    assert new_order_command("u", "ghost", 3, CATALOG).snapshot.price_cents == 0
    given = new_order_command("u", "book", 1, CATALOG, price_cents=7, order_id="o-1")
    assert (given.snapshot.price_cents, given.snapshot.order_id) == (7, "o-1")
    assert new_order_command("u", "book", 1, CATALOG).saga_id != command.saga_id


def test_reject_command_and_cancel_body():
    snap = Snapshot(order_id="o", user="u", item="book", quantity=1)
    command = reject_command("o", "s", snap, "customer asked", "api", step=Step.PAYMENT)
    assert command.type is CommandType.ORDER_REJECT and command.saga_id == "s"
    assert command.metadata == {"reason": "customer asked", "source": "api"}
    assert command.step is Step.PAYMENT and Command.decode(command.encode()) == command
    with pytest.raises(ContractError):
        reject_command("other", "s", snap, "r", "api")
    assert parse_cancel_request({"reason": "changed my mind"}) == "changed my mind"
    for body in ({}, {"reason": ""}, {"reason": 5}, {"reason": "x", "extra": 1}, ["x"]):
        with pytest.raises(ContractError):
            parse_cancel_request(body)
