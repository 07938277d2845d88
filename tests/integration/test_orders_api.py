"""Order submission and the orders/sagas/catalog read side, over a real socket and broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kafka_saga.bus.follow import read_topic
from kafka_saga.core.contracts import (
    Command,
    CommandType,
    Event,
    EventType,
    Snapshot,
    Step,
    reply_partition,
)

from ..support.http import assert_error, call
from ..support.orders import order_events, produce, produce_events
from ..support.platform import eventually

TIMEOUT = 60.0
ORDER_FIELDS = {"order_id", "saga_id", "user", "item", "quantity", "price_cents", "status", "step",
                "reason", "retry_count", "created_at", "updated_at", "trace_id", "history"}


async def commands_on_topic(bus) -> list[tuple[bytes, Command]]:
    """Every record on the commands topic (to its end as of now), decoded."""
    found: list[tuple[bytes, Command]] = []
    await read_topic(bus, bus.topics.commands,
                     lambda r: found.append((r.key, Command.decode(r.value))), timeout=TIMEOUT)
    return found


async def rejects_on_replies(bus) -> list[tuple[bytes, int, Command]]:
    """Every record on the replies topic (to its end as of now): key, partition, command."""
    found: list[tuple[bytes, int, Command]] = []
    await read_topic(bus, bus.topics.replies,
                     lambda r: found.append((r.key, r.partition, Command.decode(r.value))),
                     timeout=TIMEOUT)
    return found


async def partition_of(bus, saga_id: str) -> int:
    """The partition owning the saga: the one its events name (reply-partition header)."""
    found: set[int | None] = set()
    await read_topic(bus, bus.topics.events,
                     lambda r: found.add(reply_partition(r.headers))
                     if Event.decode(r.value).saga_id == saga_id else None,
                     timeout=TIMEOUT)
    [partition] = found
    return partition


async def produce_async(settings, topic: str, events: list[Event]) -> None:
    """The events as the orchestrator writes them (naming their saga's partition)."""
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, topic, events,
                            settings.partitions)


async def order_seen(platform, order_id: str, status: str | None = None, events: int | None = None):
    reply = await call(platform, f"/orders/{order_id}")
    if reply.status != 200:
        return None
    if status is not None and reply.body["status"] != status:
        return None
    if events is not None and len(reply.body["history"]) != events:
        return None
    return reply.body


def saga(order_id: str, item: str, quantity: int, steps: list[tuple[EventType, Step]],
         start: int = 0) -> list[Event]:
    snap = Snapshot(order_id=order_id, user="stocker", item=item, quantity=quantity)
    saga_id = f"saga-{order_id}"
    return [Event.new(kind, snap, step, saga_id, occurred_at=f"2026-01-01T00:00:{start + i:02d}Z")
            for i, (kind, step) in enumerate(steps)]


# --- POST /orders ----------------------------------------------------------------------------

async def test_post_order_is_accepted_and_its_command_is_on_the_commands_topic(platform, bus):
    await platform.start("query")
    reply = await call(platform, "/orders", "POST", json={
        "user": "alice", "item": "espresso", "quantity": 2, "attributes": {"note": "no sugar"}})
    assert reply.status == 202, reply.text
    assert set(reply.body) == {"order_id", "saga_id", "command_id"}
    order_id = reply.body["order_id"]
    assert reply.headers["Location"] == f"/orders/{order_id}"

    priced = await call(platform, "/orders", "POST", json={
        "user": "bob", "item": "not-in-catalog", "quantity": 1, "price_cents": 0})
    assert priced.status == 202, priced.text

    found = await commands_on_topic(bus)
    assert len(found) == 2
    by_order = {c.snapshot.order_id: (key, c) for key, c in found}
    key, command = by_order[order_id]
    assert key == order_id.encode()
    assert command.type is CommandType.ORDER_CREATE and command.step is Step.VALIDATION
    assert (command.saga_id, command.command_id) == (reply.body["saga_id"], reply.body["command_id"])
    snap = command.snapshot
    assert (snap.user, snap.item, snap.quantity, snap.price_cents) == ("alice", "espresso", 2, 500)
    assert snap.attributes == {"note": "no sugar"} and command.issued_at.endswith("Z")
    other = by_order[priced.body["order_id"]][1]
    assert (other.snapshot.item, other.snapshot.price_cents) == ("not-in-catalog", 0)

    # No orchestrator runs here: nothing has happened to the order yet.
    assert_error(await call(platform, f"/orders/{order_id}"), 404, order_id)
    assert_error(await call(platform, "/orders", "PUT"), 405)


async def test_invalid_order_requests_are_400_json_and_publish_nothing(platform, bus):
    await platform.start("query")
    good = {"user": "alice", "item": "espresso", "quantity": 1}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data": b"{not json"}, "JSON"),
        ({"data": b""}, "empty"),
        ({"json": [good]}, "JSON object"),
        ({"json": "just a string"}, "JSON object"),
        ({"json": {"item": "espresso", "quantity": 1}}, "user"),
        ({"json": {**good, "user": ""}}, "user"),
        ({"json": {**good, "quantity": "2"}}, "quantity"),
        ({"json": {**good, "quantity": 0}}, "quantity"),
        ({"json": {**good, "quantity": 101}}, "quantity"),
        ({"json": {**good, "quantity": True}}, "quantity"),
        ({"json": {**good, "quantity": 1.5}}, "quantity"),
        ({"json": {**good, "attributes": {"size": 3}}}, "attributes"),
        ({"json": {**good, "price_cents": -1}}, "price_cents"),
        ({"json": {**good, "order_id": "mine"}}, "order_id"),
    ]
    for kwargs, word in cases:
        reply = await call(platform, "/orders", "POST", **kwargs)
        assert_error(reply, 400, word)
    unknown = await call(platform, "/orders", "POST", json={**good, "colour": "red"})
    assert unknown.body["reason"] == "unknown_field"
    too_big = await call(platform, "/orders", "POST", data=b'{"user": "' + b"x" * 70_000 + b'"}')
    assert_error(too_big, 413)
    assert await commands_on_topic(bus) == []


async def test_post_order_is_503_json_while_the_broker_is_unavailable(platform, bus):
    await platform.start("query")
    breaker = platform.platform.bus.producer.breaker  # the producer owns the breaker state
    breaker.open()
    try:
        reply = await call(platform, "/orders", "POST",
                           json={"user": "alice", "item": "espresso", "quantity": 1})
        assert_error(reply, 503, "broker")
    finally:
        breaker.close()
    assert (await call(platform, "/orders", "POST",
                       json={"user": "alice", "item": "espresso", "quantity": 1})).status == 202
    assert len(await commands_on_topic(bus)) == 1


# --- GET /orders/{id} ------------------------------------------------------------------------

async def test_order_view_follows_the_saga_events(platform, settings, bus):
    await platform.start("query")
    streams = {outcome: order_events(f"o-{outcome}", "client01", outcome, quantity=3, price=900)
               for outcome in ("approved", "rejected", "failed", "pending")}
    late = order_events("o-late", "client02", "approved", late_reject=True)
    # a second saga of the same order (submitted twice by its user: on the same partition, after
    # the first; an order id reused by another user is on that user's partition, see
    # docs/architecture.md)
    duplicate = order_events("o-approved", "client01", "rejected")
    everything = [e for events in streams.values() for e in events] + late
    await produce_async(settings, bus.topics.events, everything + everything[:4] + duplicate[1:])
    await asyncio.to_thread(produce, settings.bootstrap_servers, bus.topics.events,
                            [(b"junk", b"not an event")])  # malformed: counted, never served

    approved = await eventually(lambda: order_seen(platform, "o-approved", "approved"), TIMEOUT,
                                what="approved order served")
    assert set(approved) == ORDER_FIELDS
    assert approved["trace_id"] is None  # events written here name no trace
    first = streams["approved"][0]
    assert (approved["saga_id"], approved["user"], approved["item"], approved["quantity"],
            approved["price_cents"], approved["step"], approved["reason"]) == (
        first.saga_id, "client01", "espresso", 3, 900, "Finalize", "")
    assert approved["created_at"] == first.occurred_at
    assert approved["updated_at"] == streams["approved"][-1].occurred_at
    assert [(h["type"], h["step"]) for h in approved["history"]] == [
        (e.type.value, e.step.value) for e in streams["approved"]]  # duplicates not repeated

    rejected = await eventually(lambda: order_seen(platform, "o-rejected", "rejected"), TIMEOUT)
    assert (rejected["step"], rejected["reason"], len(rejected["history"])) == ("Validation", "quantity", 2)
    failed = await eventually(lambda: order_seen(platform, "o-failed", "failed", 4), TIMEOUT)
    assert (failed["step"], failed["retry_count"]) == ("Payment", 3)
    assert failed["history"][-1]["type"] == "OrderCompensated"
    pending = await eventually(lambda: order_seen(platform, "o-pending", "pending"), TIMEOUT)
    assert pending["step"] == "Validation" and len(pending["history"]) == 1
    late_view = await eventually(lambda: order_seen(platform, "o-late", "rejected"), TIMEOUT)
    assert (late_view["step"], late_view["reason"]) == ("Finalize", "price_mismatch")

    async def ready() -> dict | None:
        reply = await call(platform, "/readyz")
        events = reply.body["events"]
        return events if events["caught_up"] and events["malformed"] == 1 else None

    events = await eventually(ready, TIMEOUT, what="/readyz reports the events follower")
    assert events["orders"] == 5 and events["sagas"] == 6
    assert_error(await call(platform, "/orders/nobody"), 404, "nobody")


async def test_wait_returns_as_soon_as_the_order_ends(platform, settings, bus):
    await platform.start("query")
    events = order_events("o-wait", "client01", "approved")
    await produce_async(settings, bus.topics.events, events[:3])
    await eventually(lambda: order_seen(platform, "o-wait", "pending", 3), TIMEOUT)

    async def finish_later() -> None:
        await asyncio.sleep(1.0)
        await produce_async(settings, bus.topics.events, events[3:])

    task = asyncio.create_task(finish_later())
    started = time.monotonic()
    reply = await call(platform, "/orders/o-wait?wait=25")
    elapsed = time.monotonic() - started
    await task
    assert reply.status == 200 and reply.body["status"] == "approved", reply.text
    assert 0.9 <= elapsed < 15, elapsed
    started = time.monotonic()
    assert (await call(platform, "/orders/o-wait?wait=25")).status == 200  # already terminal
    assert time.monotonic() - started < 2

    # Time runs out: the current view (200), or 404 when the order is still unknown.
    await produce_async(settings, bus.topics.events, order_events("o-slow", "client01", "pending"))
    await eventually(lambda: order_seen(platform, "o-slow"), TIMEOUT)
    started = time.monotonic()
    slow = await call(platform, "/orders/o-slow?wait=1")
    assert slow.status == 200 and slow.body["status"] == "pending"
    assert time.monotonic() - started >= 0.9
    started = time.monotonic()
    assert_error(await call(platform, "/orders/ghost?wait=0.5"), 404, "ghost")
    assert time.monotonic() - started >= 0.4

    for raw in ("0", "abc", "999", "-1", "nan", "inf", "31"):
        assert_error(await call(platform, f"/orders/o-wait?wait={raw}"), 400, "wait")
    assert_error(await call(platform, "/orders/o-wait?wait="), 400, "wait")  # empty: say so


# --- GET /sagas and GET /catalog -------------------------------------------------------------

async def test_sagas_are_listed_sorted_filtered_and_paginated(platform, settings, bus):
    await platform.start("query")
    outcomes = ["approved"] * 5 + ["rejected"] * 3 + ["failed"] * 2 + ["pending"] * 4
    streams = [order_events(f"o{i:02d}", f"c{i % 3}", o, start=i * 100) for i, o in enumerate(outcomes)]
    await produce_async(settings, bus.topics.events, [e for s in streams for e in s])

    async def all_listed() -> dict | None:
        reply = await call(platform, "/sagas?limit=1000")
        body = reply.body
        done = body["total"] == 14 and sum(s["status"] != "pending" for s in body["sagas"]) == 10
        return body if done else None

    body = await eventually(all_listed, TIMEOUT, what="14 sagas listed")
    assert [s["saga_id"] for s in body["sagas"]] == sorted(s[0].saga_id for s in streams)
    assert body["count"] == 14 and body["next_after"] is None

    expected = sorted(s[0].saga_id for s, o in zip(streams, outcomes, strict=True) if o == "approved")
    seen: list[str] = []
    after = ""
    for _ in range(10):
        page = await call(platform, f"/sagas?status=approved&limit=2&after={after}")
        assert page.status == 200 and page.body["total"] == 5 and page.body["count"] <= 2
        assert {s["status"] for s in page.body["sagas"]} == {"approved"}
        seen += [s["saga_id"] for s in page.body["sagas"]]
        after = page.body["next_after"]
        if after is None:
            break
    assert seen == expected
    assert (await call(platform, "/sagas?status=failed")).body["total"] == 2
    pending = await call(platform, "/sagas?status=pending")
    assert pending.body["count"] == 4 and pending.body["sagas"][0]["duplicate"] is False
    assert (await call(platform, "/sagas?status=")).status == 400  # empty: say so
    assert (await call(platform, "/sagas")).body["total"] == 14  # absent: no filter

    assert_error(await call(platform, "/sagas?status=done"), 400, "status")
    for bad in ("limit=0", "limit=abc", "limit=5000"):
        assert_error(await call(platform, f"/sagas?{bad}"), 400, "limit")


async def test_catalog_stock_follows_inventory_approvals_and_compensations(platform, settings, bus):
    await platform.start("query")
    catalog = await call(platform, "/catalog")
    assert catalog.status == 200
    assert catalog.body["limited-edition"] == {"price_cents": 1500, "stock": 5}
    assert catalog.body["espresso"] == {"price_cents": 250, "stock": 100_000}

    reserve = saga("o-le", "limited-edition", 2, [
        (EventType.ORDER_CREATED, Step.VALIDATION), (EventType.ORDER_APPROVED, Step.VALIDATION),
        (EventType.ORDER_APPROVED, Step.PAYMENT), (EventType.ORDER_APPROVED, Step.INVENTORY)])
    await produce_async(settings, bus.topics.events, reserve + reserve[-1:])  # redelivered

    async def stock(value: int) -> bool:
        reply = await call(platform, "/catalog")
        return reply.body["limited-edition"]["stock"] == value

    await eventually(lambda: stock(3), TIMEOUT, what="stock 5 - 2")
    release = saga("o-le", "limited-edition", 2, [
        (EventType.ORDER_COMPENSATED, Step.INVENTORY), (EventType.ORDER_COMPENSATED, Step.PAYMENT),
        (EventType.ORDER_REJECTED, Step.FINALIZE)], start=10)
    await produce_async(settings, bus.topics.events, release)
    await eventually(lambda: stock(5), TIMEOUT, what="stock restored")
    await eventually(lambda: order_seen(platform, "o-le", "rejected"), TIMEOUT)
    assert (await call(platform, "/catalog")).body["limited-edition"]["stock"] == 5


# --- POST /orders/{id}/cancel ----------------------------------------------------------------

async def test_cancel_publishes_an_order_reject_for_the_orders_saga(platform, settings, bus):
    from dataclasses import replace

    platform.settings = replace(settings, admin_token="test-admin-token")
    admin = {"headers": {"Authorization": "Bearer test-admin-token"}}
    await platform.start("query")
    pending = order_events("o-cancel", "client01", "pending")
    pending.append(Event.new(EventType.ORDER_APPROVED, pending[0].snapshot, Step.VALIDATION,
                             pending[0].saga_id))
    rejected = order_events("o-rejected", "client01", "rejected")
    failed = order_events("o-failed", "client01", "failed")
    approved = order_events("o-approved", "client01", "approved")
    await produce_async(settings, bus.topics.events, pending + rejected + failed + approved)
    await eventually(lambda: order_seen(platform, "o-cancel", "pending", 2), TIMEOUT)
    for order_id, status in (("o-rejected", "rejected"), ("o-failed", "failed"),
                             ("o-approved", "approved")):
        await eventually(lambda o=order_id, s=status: order_seen(platform, o, s), TIMEOUT)

    reply = await call(platform, "/orders/o-cancel/cancel", "POST", **admin, json={"reason": "changed my mind"})
    assert reply.status == 202, reply.text
    assert reply.body["order_id"] == "o-cancel" and reply.body["saga_id"] == pending[0].saga_id
    assert reply.headers["Location"] == "/orders/o-cancel"
    late = await call(platform, "/orders/o-approved/cancel", "POST", **admin, json={"reason": "refund"})
    assert late.status == 202, late.text  # an approved saga can still be rejected

    for order_id, status in (("o-rejected", "rejected"), ("o-failed", "failed")):
        conflict = await call(platform, f"/orders/{order_id}/cancel", "POST", **admin, json={"reason": "x"})
        assert_error(conflict, 409, status)
    assert_error(await call(platform, "/orders/ghost/cancel", "POST", **admin, json={"reason": "x"}), 404)
    for kwargs in ({"data": b"nope"}, {"json": {}}, {"json": {"reason": ""}}, {"json": ["x"]},
                   {"json": {"reason": "x", "force": True}}):
        assert_error(await call(platform, "/orders/o-cancel/cancel", "POST", **admin, **kwargs), 400)

    # on orders.replies, at the partition owning each saga (that of its events), none by key
    assert await commands_on_topic(bus) == []
    found = await rejects_on_replies(bus)
    assert len(found) == 2
    key, partition, command = next((k, p, c) for k, p, c in found if c.snapshot.order_id == "o-cancel")
    assert key == b"o-cancel" and command.type is CommandType.ORDER_REJECT
    assert partition == await partition_of(bus, pending[0].saga_id)
    assert command.saga_id == pending[0].saga_id and command.command_id == reply.body["command_id"]
    assert command.metadata == {"reason": "changed my mind", "source": "api"}
    assert command.step is Step.PAYMENT  # where the saga is: Validation approved, Payment next
    assert command.snapshot.user == "client01"



async def test_evicted_orders_answer_410_with_their_status_and_can_still_be_cancelled(
        platform, settings, bus):
    from dataclasses import replace

    platform.settings = replace(settings, admin_token="test-admin-token", query_orders_max=2)
    admin = {"headers": {"Authorization": "Bearer test-admin-token"}}
    await platform.start("query")
    old, failed = order_events("o-old", "client01", "approved"), order_events("o-gone", "c", "failed")
    await produce_async(settings, bus.topics.events, old + failed)
    await eventually(lambda: order_seen(platform, "o-gone", "failed"), TIMEOUT)
    newer = [e for i in range(2) for e in order_events(f"o-new{i}", "client01", "approved")]
    await produce_async(settings, bus.topics.events, newer)
    for order_id in ("o-new0", "o-new1"):  # the two finished before them are evicted
        await eventually(lambda o=order_id: order_seen(platform, o, "approved"), TIMEOUT)

    gone = await call(platform, "/orders/o-old?wait=1")
    assert_error(gone, 410, "evicted", "QUERY_ORDERS_MAX")
    assert (gone.body["order_status"], gone.body["saga_id"], gone.body["evicted"]) == (
        "approved", old[0].saga_id, True)
    funnel = (await call(platform, "/orders")).body
    assert funnel["total"] == 4 and funnel["by_status"]["approved"] == 3
    assert [o["order_id"] for o in funnel["orders"]] in (["o-new1", "o-new0"], ["o-new0", "o-new1"])

    late = await call(platform, "/orders/o-old/cancel", "POST", **admin, json={"reason": "refund"})
    assert late.status == 202 and late.body["saga_id"] == old[0].saga_id, late.text
    assert_error(await call(platform, "/orders/o-gone/cancel", "POST", **admin, json={"reason": "x"}),
                 409, "failed")
    [(key, partition, command)] = await rejects_on_replies(bus)  # the trace kept its partition
    assert key == b"o-old" and command.type is CommandType.ORDER_REJECT
    assert partition == await partition_of(bus, old[0].saga_id)
    assert command.saga_id == old[0].saga_id and command.step is Step.FINALIZE
