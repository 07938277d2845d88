"""Bad input on every topic, from an independent client (kafka-python), with good records around.

Expected: every malformed record of ``orders.commands``/``orders.events``/``orders.aggregates``
lands in ``orders.dlq`` exactly once, with its reason and origin; contract-valid but odd
records (duplicates, out-of-order events, unknown sagas, tombstones) change nothing harmful;
garbage written to ``orders.dlq`` itself is counted and never re-published; nothing restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from datetime import datetime
from types import SimpleNamespace

import pytest

from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.producer import DLQ_VALUE_MAX
from kafka_saga.core.contracts import (
    DLQ_HEADERS,
    Command,
    CommandType,
    Event,
    EventType,
    Snapshot,
    Step,
    UserAggregate,
    headers_dict,
    new_id,
)
from kafka_saga.core.fold import AggregateFold
from kafka_saga.replay import compare, fetch_live, replay_events

from ..support import corpus
from ..support.orders import order_events
from ..support.platform import eventually

pytestmark = pytest.mark.chaos
ROLES = ("orchestrator", "inventory", "tracker", "aggregator", "dlq", "query")
ROUNDS = 4
APPROVED_TRAIL = ["OrderCreated:Validation", "OrderApproved:Validation", "OrderApproved:Payment",
                  "OrderApproved:Inventory", "OrderApproved:Finalize"]
REASON_CODES = {"invalid_json", "bad_utf8", "wrong_shape", "oversize", "null_value",
                "missing_field", "unknown_value"}


def test_the_corpus_is_malformed_and_large_enough():
    """No broker: every record is refused by its contract, >= 50 per topic, labels unique."""
    for contract, records in ((Command, corpus.malformed_commands()),
                              (Event, corpus.malformed_events()),
                              (UserAggregate, corpus.malformed_aggregates())):
        assert len(records) >= 50
        assert len({label for *_, label in records}) == len(records)
        assert any(key is None for key, _, _ in records)
        assert any(value is not None and len(value) >= corpus.ONE_MB for _, value, _ in records)
        for _key, value, label in records:
            reason = corpus.expected_reason(contract, value)
            if label.split(":")[0] in REASON_CODES:
                assert reason == label.split(":")[0], (contract.__name__, label, reason)
    garbage = corpus.dlq_garbage()
    assert len(garbage) >= 50 and len({label for *_, label in garbage}) == len(garbage)


# --- helpers --------------------------------------------------------------------------------

def _chunks(items: list, n: int) -> list[list]:
    size = -(-len(items) // n)
    return [items[i * size:(i + 1) * size] for i in range(n)]


def _interleave(good: list, bad: list) -> list:
    out, step = [], max(1, len(bad) // max(1, len(good)))
    for i, record in enumerate(good):
        out += [record, *bad[i * step:(i + 1) * step]]
    return out + bad[len(good) * step:]


async def _read(bus, topic: str) -> list:
    records: list = []
    await read_topic(bus, topic, records.append, 30)
    return records


async def _events(bus) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for record in await _read(bus, bus.topics.events):
        try:
            event = Event.decode(record.value)
        except ValueError:
            continue
        if all(e.event_id != event.event_id for e in out[event.saga_id]):  # producer-race copies
            out[event.saga_id].append(event)
    return out


def _trail(events: list[Event]) -> list[str]:
    return [f"{e.type.value}:{e.step.value}" for e in events]


async def _terminal(bus, commands: list[Command], timeout: float = 60) -> dict[str, list[Event]]:
    async def check():
        found = await _events(bus)
        done = all(any(e.type.value in ("OrderRejected", "OrderFailed") or
                       (e.type.value == "OrderApproved" and e.step.value == "Finalize")
                       for e in found.get(c.saga_id, [])) for c in commands)
        return found if done else None

    return await eventually(check, timeout=timeout, interval=0.3, what="good orders terminal")


def _letters_by_origin(letters: list) -> dict[tuple[str, int, int], list]:
    out: dict[tuple[str, int, int], list] = defaultdict(list)
    for record in letters:
        h = headers_dict(record.headers)
        if h.get("reason") and h.get("origin-topic"):
            out[(h["origin-topic"], int(h["origin-partition"]), int(h["origin-offset"]))].append(record)
    return out


# --- the scenario ---------------------------------------------------------------------------

async def test_malformed_records_on_every_topic_are_dead_lettered_once(platform, settings, bus):
    clock = time.monotonic()
    topics = bus.topics
    owner = {topics.commands: ("orchestrator", Command), topics.events: ("aggregator", Event),
             topics.aggregates: ("dlq", UserAggregate)}
    bad = {topics.commands: corpus.malformed_commands(), topics.events: corpus.malformed_events(),
           topics.aggregates: corpus.malformed_aggregates()}
    garbage = corpus.dlq_garbage()
    await platform.start(*ROLES)
    client = await asyncio.to_thread(corpus.producer, settings.bootstrap_servers)
    try:
        # a probe first: once it is terminal the orchestrator owns its partitions and has restored
        probe = corpus.good_order("chaos-good-0")
        await asyncio.to_thread(corpus.send_all, client, topics.commands,
                                [(probe.key, probe.encode(), "good:probe")])
        await _terminal(bus, [probe])
        started = time.monotonic() - clock

        goods = [corpus.good_order(f"chaos-good-{i % 3}", quantity=1 + i % 3) for i in range(12)]
        first = goods[0]
        ghost = Command(new_id(), new_id(), CommandType.ORDER_REJECT, first.snapshot,
                        metadata={"reason": "chaos"})
        approve = Command(new_id(), first.saga_id, CommandType.ORDER_APPROVE, first.snapshot)
        odd_commands = [(first.key, first.encode(), "odd:duplicate-create"),
                        (approve.key, approve.encode(), "odd:approve-from-non-participant"),
                        (ghost.key, ghost.encode(), "odd:reject-unknown-saga")]
        hand_built = [order_events(f"chaos-ev-{i}", f"chaos-ev-{i % 4}", outcome, quantity=1 + i % 2,
                                   price=250 * (1 + i % 2), start=i * 100)
                      for i, outcome in enumerate(["approved", "rejected", "failed", "pending"] * 3)]
        good_events = [e for events in hand_built for e in events]
        odd = corpus.odd_events("chaos-odd")
        duplicates = [e for events in hand_built[:4] for e in events]
        tables = [corpus.good_aggregate(f"chaos-table-{i}", i) for i in range(8)]
        tombstoned = {"chaos-table-1", "chaos-table-6"}

        def rec(items, label):
            return [(x.key if hasattr(x, "key") else x.user.encode(), x.encode(), label) for x in items]

        plan: dict[str, list[list]] = {t: [] for t in (*bad, topics.dlq)}
        for r, chunk in enumerate(_chunks(bad[topics.commands], ROUNDS)):
            extra = odd_commands if r == 1 else []
            plan[topics.commands].append(_interleave(rec(_chunks(goods, ROUNDS)[r], "good") + extra, chunk))
        for r, chunk in enumerate(_chunks(bad[topics.events], ROUNDS)):
            extra = rec(odd, "odd:events") if r == 1 else rec(duplicates, "odd:dup") if r == 2 else []
            plan[topics.events].append(_interleave(rec(_chunks(good_events, ROUNDS)[r], "good") + extra, chunk))
        for r, chunk in enumerate(_chunks(bad[topics.aggregates], ROUNDS)):
            extra = [(u.encode(), None, "odd:tombstone") for u in sorted(tombstoned)] if r == 3 else []
            plan[topics.aggregates].append(_interleave(rec(_chunks(tables, ROUNDS)[r], "good"), chunk) + extra)
        plan[topics.dlq] = _chunks(garbage, ROUNDS)

        position: dict[tuple[str, int, int], tuple] = {}
        for r in range(ROUNDS):
            for topic, rounds in plan.items():
                headers = corpus.GARBAGE_HEADERS if topic == topics.dlq else corpus.ORIGINAL_HEADERS
                placed = await asyncio.to_thread(corpus.send_all, client, topic, rounds[r], headers)
                for (key, value, label), (part, off) in zip(rounds[r], placed, strict=True):
                    position[(topic, part, off)] = (key, value, label)
        produced = time.monotonic() - clock
    finally:
        await asyncio.to_thread(client.close, 5)

    expected = {pos: record for pos, record in position.items()
                if pos[0] in owner and not record[2].startswith(("good", "odd"))}
    assert len(expected) == sum(len(records) for records in bad.values())

    # 1) the good orders all end (approved), around the garbage
    found = await _terminal(bus, [probe, *goods])
    for command in (probe, *goods):
        assert _trail(found[command.saga_id]) == APPROVED_TRAIL, command.snapshot.order_id
    # the odd commands were ignored: no saga started, no extra event
    assert ghost.saga_id not in found

    # 2) every malformed record is in the DLQ, once, with its reason and origin
    async def dead_lettered():
        by_origin = _letters_by_origin(await _read(bus, topics.dlq))
        metrics = platform.platform.bus.metrics.snapshot()
        return by_origin if (len(by_origin) >= len(expected) and
                             metrics["dlq_garbage"] >= len(garbage) and
                             metrics["dlq_read"] >= len(expected)) else None

    await eventually(dead_lettered, timeout=60, interval=0.5, what="every malformed record dead-lettered")
    await asyncio.sleep(1.5)  # a quiet spell: anything re-published late would show now
    letters = await _read(bus, topics.dlq)
    by_origin = _letters_by_origin(letters)
    settled = time.monotonic() - clock

    rows, lost_any = [], []
    copies = sum(len(same) - 1 for same in by_origin.values())
    for topic in owner:
        mine = {pos: r for pos, r in expected.items() if pos[0] == topic}
        lost = [r[2] for pos, r in mine.items() if pos not in by_origin]
        twice = [r[2] for pos, r in mine.items() if len(by_origin.get(pos, [])) > 1]
        sent = sum(1 for pos in position if pos[0] == topic)
        rows.append((topic.removeprefix(settings.topic_prefix), sent, len(mine),
                     sum(1 for pos in by_origin if pos[0] == topic), len(lost), len(twice)))
        lost_any += [f"{topic}: lost {label}" for label in lost]
    foreign = [pos for pos in by_origin if pos not in expected]
    # the records on the DLQ as a reader sees them (not its end offsets: under exactly-once
    # each transaction's commit marker takes an offset too)
    dlq_end = len(letters)
    rows.append(("orders.dlq (garbage)", len(garbage), len(garbage),
                 dlq_end - len(garbage) - len(expected) - copies, 0, 0))
    print(f"\n{'topic':<24}{'sent':>6}{'malformed':>11}{'dead-lettered':>15}{'lost':>6}{'twice':>7}")
    for row in rows:
        print(f"{row[0]:<24}{row[1]:>6}{row[2]:>11}{row[3]:>15}{row[4]:>6}{row[5]:>7}")
    print(f"(last row: dead-lettered = garbage re-published; twice = the same publication "
          f"delivered twice, {copies} in all; up {started:.1f}s, produced {produced:.1f}s, "
          f"settled {settled:.1f}s)")
    assert not lost_any, lost_any
    assert not foreign, [(pos, headers_dict(by_origin[pos][0].headers)) for pos in foreign]
    # The DLQ grew by the dead letters and nothing else (no garbage re-published). Each record
    # was dead-lettered once (send_to_dlq ran once per record, see the `dlq` metric below); a
    # second copy may only be the same publication delivered twice by the producer race that
    # test_a_dead_letter_is_published_once_while_another_role_flushes pins down.
    assert dlq_end == len(garbage) + len(expected) + copies
    for pos, same in by_origin.items():
        assert len({tuple(letter.headers) for letter in same}) == 1, (expected[pos][2], [
            headers_dict(letter.headers) for letter in same])

    for pos, (key, value, label) in expected.items():
        letter = by_origin[pos][0]
        h = headers_dict(letter.headers)
        role, contract = owner[pos[0]]
        assert set(DLQ_HEADERS) <= set(h), (label, h)
        names = Counter(k for k, _ in letter.headers)
        assert all(names[n] == 1 for n in DLQ_HEADERS), (label, names)  # ours once, never spoofed
        assert h["reason"] == corpus.expected_reason(contract, value), (label, h["reason"])
        assert h["role"] == role and h["retry-count"] == "0" and h["error"], (label, h)
        assert datetime.fromisoformat(h["published"]).tzinfo is not None, label
        if value is not None and len(value) > DLQ_VALUE_MAX:  # cut, with its full size given
            assert letter.key == key and letter.value == value[:DLQ_VALUE_MAX], label
            assert h["value-truncated"] == str(len(value)), label
        else:
            assert letter.key == key and letter.value == value, label  # original bytes kept
        for name, raw in corpus.ORIGINAL_HEADERS.get(label.removesuffix("+null-key"), []):
            assert h[name] == raw.decode() or name in DLQ_HEADERS, (label, h)  # kept, not spoofed

    # 3) nothing restarted, and the process says it is healthy
    assert platform.platform.supervisor.restarts == dict.fromkeys(ROLES, 0)
    code, health = await platform.get("/healthz")
    assert code == 200 and health["status"] == "ok"
    assert all(r["state"] == "running" and r["restarts"] == 0 for r in health["roles"].values()), health

    # 4) the garbage on orders.dlq is counted and shown, the letters are counted by reason
    reasons = Counter(headers_dict(r.headers)["reason"] for same in by_origin.values() for r in same)
    model = platform.platform.shared["read_model"]

    async def views():  # the read model follows orders.dlq/orders.events on its own
        _, view = await platform.get("/dlq", params={"limit": "1"})
        _, metrics = await platform.get("/metrics")
        caught_up = (view["garbage"] >= len(garbage) and metrics["dlq_read"] >= len(letters) -
                     len(garbage) and sum(view["by_reason"].values()) >= len(letters) - len(garbage)
                     and model.malformed_events >= len(bad[topics.events]))
        return (view, metrics) if caught_up else None

    view, metrics = await eventually(views, timeout=30, what="/dlq and /metrics caught up")
    assert view["garbage"] == len(garbage) and view["by_reason"] == dict(reasons)
    assert metrics["dlq_garbage"] == len(garbage)
    assert metrics["dlq"] == len(expected)  # dead-lettered once each, by the owning group
    assert metrics["dlq_read"] == len(expected) + copies
    assert metrics["role_restarts"] == 0 and metrics.get("skipped", len(bad[topics.events])) == len(
        bad[topics.events])  # the tracker skipped each bad event once (the aggregator dead-lettered it)
    assert model.malformed_events == len(bad[topics.events])
    assert model.malformed_aggregates == len(bad[topics.aggregates])

    # 5) the projections: live == replay; the hand-built and odd events fold as they should
    fold = AggregateFold()
    for event in [*good_events, *odd, *duplicates]:
        fold.apply(event)
    wanted = {u: a.to_dict() for u, a in fold.aggregates().items()}

    result = await replay_events(bus, timeout=30)
    replayed = {u: a.to_dict() for u, a in result.fold.aggregates().items()}
    shown = {t.user: t.to_dict() for t in tables if t.user not in tombstoned}

    async def projected():
        live = await fetch_live(platform.url)
        folded = {u: a for u, a in live.items() if not u.startswith("chaos-table-")}
        tabled = {u: a for u, a in live.items() if u.startswith("chaos-table-")}
        return live if not compare(replayed, folded) and not compare(shown, tabled) else None

    live = await eventually(projected, timeout=30, what="live aggregates == replay, tables shown")
    assert result.skipped == len(bad[topics.events])
    assert compare(wanted, {u: live[u] for u in wanted}) == []
    assert sum(live[f"chaos-good-{i}"]["approved"] for i in range(3)) == len(goods) + 1


async def test_an_event_for_an_unknown_saga_is_not_resumed_after_a_restart(platform, settings, bus):
    await platform.start("orchestrator", "inventory")
    client = await asyncio.to_thread(corpus.producer, settings.bootstrap_servers)
    try:
        probe = corpus.good_order("chaos-good-0")
        await asyncio.to_thread(corpus.send_all, client, bus.topics.commands,
                                [(probe.key, probe.encode(), "good:probe")])
        await _terminal(bus, [probe])  # assigned and restored: the ghost comes after
        snap = Snapshot(order_id=f"chaos-ghost-{new_id()[:8]}", user="chaos-odd", item="latte",
                        quantity=1, price_cents=400)
        ghost = Event.new(EventType.ORDER_APPROVED, snap, Step.VALIDATION, new_id())
        await asyncio.to_thread(corpus.send_all, client, bus.topics.events,
                                [(ghost.key, ghost.encode(), "odd:unknown-saga")])
        await asyncio.sleep(1.5)
        assert _trail((await _events(bus))[ghost.saga_id]) == ["OrderApproved:Validation"]
        await platform.stop()  # a restart (or a rebalance) re-reads orders.events
        await platform.start("orchestrator", "inventory")
        after = corpus.good_order("chaos-good-0")
        await asyncio.to_thread(corpus.send_all, client, bus.topics.commands,
                                [(after.key, after.encode(), "good:after")])
        await _terminal(bus, [after])
        await asyncio.sleep(2)
    finally:
        await asyncio.to_thread(client.close, 5)
    assert _trail((await _events(bus))[ghost.saga_id]) == ["OrderApproved:Validation"]


@pytest.mark.parametrize("which", ["commands", "events", "aggregates"])
async def test_a_one_mib_record_is_dead_lettered_without_a_crash(platform, settings, bus, which):
    role = {"commands": "orchestrator", "events": "aggregator", "aggregates": "dlq"}[which]
    topic = getattr(bus.topics, which)
    await platform.start(role)
    client = await asyncio.to_thread(corpus.producer, settings.bootstrap_servers)
    try:
        big = corpus.padded({"note": "chaos"}, corpus.BIG_RECORD)  # 1 MiB, or Kafka's limit
        await asyncio.to_thread(corpus.send_all, client, topic, [(b"chaos-big", big, "oversize:1MiB")])
    finally:
        await asyncio.to_thread(client.close, 5)
    supervisor = platform.platform.supervisor

    async def outcome():
        letters = await _read(bus, bus.topics.dlq)
        return (letters,) if letters or sum(supervisor.restarts.values()) else None

    (letters,) = await eventually(outcome, timeout=45, interval=0.5, what="a dead letter or a crash")
    assert supervisor.restarts[role] == 0, supervisor.restarts
    assert len(letters) == 1 and headers_dict(letters[0].headers)["reason"] == "oversize"


async def test_a_dead_letter_is_published_once_while_another_role_flushes(bus):
    producer = bus.producer

    async def dead_letters() -> None:  # big records: the second waits for the first batch to drain
        for offset in range(3):
            origin = SimpleNamespace(topic=bus.topics.commands, partition=0, offset=offset,
                                     key=b"chaos-big", value=b"x" * 300_000, headers=[])
            await producer.send_to_dlq(origin, "oversize", "too big", "orchestrator")
        await producer.flush()

    async def another_role() -> None:  # meanwhile another role of the process checkpoints
        await producer.send(bus.topics.events, b"{}", b"chaos-other")
        await producer.flush()

    await asyncio.gather(dead_letters(), another_role())
    letters = await _read(bus, bus.topics.dlq)
    assert sorted(headers_dict(r.headers)["origin-offset"] for r in letters) == ["0", "1", "2"]
