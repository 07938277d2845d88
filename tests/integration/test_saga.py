"""The order saga end to end on the real broker: one order per outcome."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime

from kafka_saga.bus.follow import read_topic
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Command, CommandType, Event, Snapshot, headers_dict, new_id

from ..support.platform import eventually

CATALOG = Catalog()
TERMINAL = {"OrderRejected", "OrderFailed"}


def order(user: str = "client01", item: str = "espresso", quantity: int = 2,
          price: int | None = None, **attributes: str) -> Command:
    unit = CATALOG.unit_price(item) or 0
    snap = Snapshot(order_id="o-" + new_id()[:12], user=user, item=item, quantity=quantity,
                    price_cents=unit * quantity if price is None else price, attributes=attributes)
    return Command(new_id(), new_id(), CommandType.ORDER_CREATE, snap)


async def submit(bus, *commands: Command) -> None:
    for command in commands:
        await bus.producer.send(bus.topics.commands, command.encode(), command.key)
    await bus.producer.flush()


async def events_by_order(bus) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)

    def apply(record) -> None:
        event = Event.decode(record.value)
        out[event.snapshot.order_id].append(event)

    await read_topic(bus, bus.topics.events, apply, 30)
    return out


def is_terminal(events: list[Event]) -> bool:
    return any(e.type.value in TERMINAL or (e.type.value == "OrderApproved" and e.step.value == "Finalize")
               for e in events)


async def wait_terminal(bus, *commands: Command, timeout: float = 60) -> dict[str, list[Event]]:
    ids = [c.snapshot.order_id for c in commands]

    async def check():
        found = await events_by_order(bus)
        return found if all(is_terminal(found.get(i, [])) for i in ids) else None

    return await eventually(check, timeout=timeout, interval=0.3, what=f"terminal events for {ids}")


def trail(events: list[Event]) -> list[str]:
    return [f"{e.type.value}:{e.step.value}" for e in events]


APPROVED_TRAIL = ["OrderCreated:Validation", "OrderApproved:Validation", "OrderApproved:Payment",
                  "OrderApproved:Inventory", "OrderApproved:Finalize"]


async def test_one_order_per_outcome(platform, bus):
    runtime = await platform.start("orchestrator", "inventory", "aggregator")
    approved = order()
    zero = order(quantity=0)
    unknown = order(item="unicorn")
    declined = order(payment="decline")
    flaky = order(payment_errors="2")
    broken = order(payment_errors="10")
    no_stock = order(inventory_available_override="x")
    no_stock.snapshot.inventory_available = False
    await submit(bus, approved, zero, unknown, declined, flaky, broken, no_stock)
    found = await wait_terminal(bus, approved, zero, unknown, declined, flaky, broken, no_stock)

    def of(cmd: Command) -> list[Event]:
        return found[cmd.snapshot.order_id]

    assert trail(of(approved)) == APPROVED_TRAIL
    assert trail(of(zero)) == ["OrderCreated:Validation", "OrderRejected:Validation"]
    assert "quantity" in of(zero)[-1].error_message
    assert trail(of(unknown)) == ["OrderCreated:Validation", "OrderRejected:Validation"]
    assert "unknown item" in of(unknown)[-1].error_message
    assert trail(of(declined)) == ["OrderCreated:Validation", "OrderApproved:Validation",
                                   "OrderRejected:Payment"]
    assert trail(of(flaky)) == APPROVED_TRAIL
    assert of(flaky)[2].retry_count == 2
    assert trail(of(broken)) == ["OrderCreated:Validation", "OrderApproved:Validation",
                                 "OrderFailed:Payment"]
    assert of(broken)[-1].retry_count == 3
    # rejected at Inventory only after the payment was refunded
    assert trail(of(no_stock)) == ["OrderCreated:Validation", "OrderApproved:Validation",
                                   "OrderApproved:Payment", "OrderCompensated:Payment",
                                   "OrderRejected:Inventory"]
    # the failed order's original command is in the DLQ with its reason and origin
    letters: list = []
    await read_topic(bus, bus.topics.dlq, letters.append, 30)
    dead = [headers_dict(r.headers) | {"key": r.key} for r in letters]
    exhausted = [d for d in dead if d["reason"] == "payment_retries_exhausted"]
    assert len(exhausted) == 1
    assert exhausted[0]["key"] == broken.key
    assert exhausted[0]["origin-topic"] == bus.topics.commands
    assert exhausted[0]["retry-count"] == "3"
    assert Command.decode(next(r.value for r in letters if r.key == broken.key)).saga_id == broken.saga_id
    # each step's time and each saga's outcome, as Prometheus and the dashboard see them
    metrics = runtime.bus.metrics
    snapshot = metrics.snapshot()
    assert snapshot["sagas"] == {"started": 7, "approved": 2, "rejected": 4, "failed": 1}
    assert snapshot["saga_latency"]["count"] == 7
    steps = {s.labels["step"] + ":" + s.labels["outcome"]: s.value for m in metrics.step_seconds.collect()
             for s in m.samples if s.name.endswith("_count")}
    assert steps == {"Validation:approved": 5, "Validation:rejected": 2, "Payment:approved": 3,
                     "Payment:rejected": 1, "Payment:failed": 1, "Payment:compensated": 1,
                     "Inventory:approved": 2, "Inventory:rejected": 1, "Finalize:approved": 2}
    assert snapshot["steps"]["Payment"]["count"] == 6
    # the flaky payment's two retries and their backoff are in its step's time: the slowest
    # Payment step (p99 of six) lasted at least as long as its own events say it took
    flaky_at = {f"{e.type.value}:{e.step.value}": datetime.fromisoformat(e.occurred_at.replace("Z", "+00:00"))
                for e in of(flaky)}
    took_ms = (flaky_at["OrderApproved:Payment"] - flaky_at["OrderApproved:Validation"]).total_seconds() * 1000
    assert snapshot["steps"]["Payment"]["p99_ms"] >= took_ms - 10, (snapshot["steps"], took_ms)
    text = metrics.prometheus().decode()
    assert 'kafka_saga_sagas_total{outcome="approved"} 2.0' in text
    assert 'kafka_saga_step_seconds_bucket{le="+Inf",outcome="approved",step="Payment"} 3.0' in text


async def test_same_command_twice_starts_one_saga(platform, bus):
    await platform.start("orchestrator", "inventory")
    command = order()
    await submit(bus, command, command)
    found = await wait_terminal(bus, command)
    await asyncio.sleep(1.5)
    found = await events_by_order(bus)
    assert trail(found[command.snapshot.order_id]) == APPROVED_TRAIL


async def test_reject_command_compensates_an_approved_saga_in_reverse_order(platform, bus):
    await platform.start("orchestrator", "inventory")
    command = order(item="latte", quantity=3)
    await submit(bus, command)
    await wait_terminal(bus, command)
    reject = Command(new_id(), command.saga_id, CommandType.ORDER_REJECT, command.snapshot,
                     metadata={"reason": "customer_cancelled", "source": "test"})
    await submit(bus, reject, reject)

    async def rejected():
        found = await events_by_order(bus)
        events = found[command.snapshot.order_id]
        return events if events[-1].type.value == "OrderRejected" else None

    events = await eventually(rejected, timeout=60, what="late rejection")
    assert trail(events)[-3:] == ["OrderCompensated:Inventory", "OrderCompensated:Payment",
                                  "OrderRejected:Finalize"]
    assert events[-1].error_message == "customer_cancelled"
    # a second reject of a rejected saga changes nothing
    await submit(bus, reject)
    await asyncio.sleep(1.5)
    assert len((await events_by_order(bus))[command.snapshot.order_id]) == len(events)


async def test_reject_stops_a_pending_saga(platform, bus, settings):
    await platform.start("orchestrator", "inventory")
    slow = order(payment_delay_ms="4000")
    await submit(bus, slow)

    async def started():  # the saga's first event is out: its payment attempt is in flight
        return (await events_by_order(bus)).get(slow.snapshot.order_id)

    await eventually(started, timeout=60, what="the saga started")
    reject = Command(new_id(), slow.saga_id, CommandType.ORDER_REJECT, slow.snapshot,
                     metadata={"reason": "customer_cancelled"})
    await submit(bus, reject)
    found = await wait_terminal(bus, slow)
    events = found[slow.snapshot.order_id]
    assert events[-1].type.value == "OrderRejected"
    assert sum(1 for e in events if e.type.value in ("OrderRejected", "OrderFailed")) == 1


async def test_tracker_rejects_a_wrong_price_and_a_duplicate_order(platform, bus):
    await platform.start("orchestrator", "inventory", "tracker")
    cheap = order(item="mocha", quantity=2, price=1)
    first = order(user="client03")
    duplicate = Command(new_id(), new_id(), CommandType.ORDER_CREATE, first.snapshot)
    await submit(bus, cheap, first)
    await wait_terminal(bus, first)
    await submit(bus, duplicate)

    async def settled():
        found = await events_by_order(bus)
        cheap_events = found.get(cheap.snapshot.order_id, [])
        dup = [e for e in found.get(first.snapshot.order_id, []) if e.saga_id == duplicate.saga_id]
        if cheap_events and cheap_events[-1].type.value == "OrderRejected" and dup and \
                dup[-1].type.value == "OrderRejected":
            return found
        return None

    found = await eventually(settled, timeout=60, what="tracker rejections")
    assert found[cheap.snapshot.order_id][-1].error_message == "price_mismatch"
    dup_events = [e for e in found[first.snapshot.order_id] if e.saga_id == duplicate.saga_id]
    assert dup_events[-1].error_message == "duplicate_order"
    kept = [e for e in found[first.snapshot.order_id] if e.saga_id == first.saga_id]
    assert trail(kept) == APPROVED_TRAIL  # the first saga owns the order and stays approved


async def test_a_price_mismatch_noticed_after_approval_moves_the_order_to_rejected(platform, bus):
    await platform.start("orchestrator", "inventory", "aggregator", "query")
    cheap = order(user="client09", item="latte", quantity=1, price=5)
    await submit(bus, cheap)
    await wait_terminal(bus, cheap)
    status, body = await platform.get("/aggregates/client09")
    for _ in range(100):
        if status == 200 and body["approved"] == 1:
            break
        await asyncio.sleep(0.2)
        status, body = await platform.get("/aggregates/client09")
    assert body["approved"] == 1 and body["spent_cents"] == 5
    # the tracker was not running: it starts late, reads the log and still catches it
    await platform.stop()
    await platform.start("orchestrator", "inventory", "tracker", "aggregator", "query")

    async def moved():
        code, agg = await platform.get("/aggregates/client09")
        return agg if code == 200 and agg["rejected"] == 1 else None

    agg = await eventually(moved, timeout=60, what="approved -> rejected in the aggregates")
    assert agg["approved"] == 0 and agg["spent_cents"] == 0 and agg["status"] == "rejected"
    events = (await events_by_order(bus))[cheap.snapshot.order_id]
    assert trail(events)[-3:] == ["OrderCompensated:Inventory", "OrderCompensated:Payment",
                                  "OrderRejected:Finalize"]
    code, view = await platform.get(f"/orders/{cheap.snapshot.order_id}")
    assert code == 200 and view["status"] == "rejected" and view["reason"] == "price_mismatch"


async def test_step_deadline_counts_as_a_transient_failure(platform, bus, settings):
    from dataclasses import replace

    platform.settings = replace(settings, payment_timeout_s=0.2, payment_max_retries=2)
    await platform.start("orchestrator", "inventory")
    slow = order(payment_delay_ms="1000")
    await submit(bus, slow)
    found = await wait_terminal(bus, slow)
    events = found[slow.snapshot.order_id]
    assert trail(events)[-1] == "OrderFailed:Payment"
    assert events[-1].retry_count == 2
    assert "no answer within" in events[-1].error_message


async def test_stock_survives_a_restart(platform, bus):
    await platform.start("orchestrator", "inventory")
    first = order(item="limited-edition", quantity=3)  # the catalog ships 5 of them
    await submit(bus, first)
    found = await wait_terminal(bus, first)
    assert trail(found[first.snapshot.order_id])[-1] == "OrderApproved:Finalize"
    await platform.stop()
    await platform.start("orchestrator", "inventory")
    second = order(item="limited-edition", quantity=3)
    third = order(item="limited-edition", quantity=2)
    await submit(bus, second)
    found = await wait_terminal(bus, second)
    events = found[second.snapshot.order_id]
    assert trail(events)[-2:] == ["OrderCompensated:Payment", "OrderRejected:Inventory"]
    assert "insufficient stock" in events[-1].error_message
    await submit(bus, third)  # exactly the 2 left
    found = await wait_terminal(bus, third)
    assert trail(found[third.snapshot.order_id])[-1] == "OrderApproved:Finalize"
