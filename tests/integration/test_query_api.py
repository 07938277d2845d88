"""The query role's HTTP API over a real socket, fed from the real broker (no mocks)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from urllib.parse import quote

from kafka import KafkaConsumer, TopicPartition

from kafka_saga.core.contracts import DLQ_HEADERS, UserAggregate

from ..support.http import Reply, assert_json_error, call
from ..support.orders import produce
from ..support.platform import eventually

TIMEOUT = 60.0
CONTRACT_FIELDS = {f.name for f in UserAggregate.FIELDS}


def aggregate(user: str, n: int = 1) -> UserAggregate:
    return UserAggregate(user=user, orders=n, total_items=2 * n, approved=n, spent_cents=350 * n,
                         status="approved", last_updated="2026-01-01T00:00:00.000Z",
                         metadata={"source": "test"})


async def produce_aggregates(settings, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    await asyncio.to_thread(produce, settings.bootstrap_servers, topic, records)


async def served_total(platform, total: int) -> dict | None:
    reply = await call(platform, "/aggregates?limit=1000")
    return reply.body if reply.status == 200 and reply.body["total"] == total else None


def read_all(bootstrap: str, topic: str, count: int, timeout: float = TIMEOUT) -> list[Any]:
    """Read ``topic`` from the beginning with kafka-python until ``count`` records arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout
        parts = None
        while not parts:
            parts = consumer.partitions_for_topic(topic)
            assert time.monotonic() < deadline, f"no metadata for {topic}"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


# --- /aggregates ---------------------------------------------------------------------------

async def test_aggregates_are_sorted_and_cursor_pagination_walks_every_page(platform, settings, bus):
    await platform.start("query")
    users = [f"user{i:03d}" for i in range(23)]
    shuffled = users[:]
    random.Random(4).shuffle(shuffled)
    await produce_aggregates(settings, bus.topics.aggregates,
                             [(u.encode(), aggregate(u).encode()) for u in shuffled])
    everything = await eventually(lambda: served_total(platform, 23), TIMEOUT, what="23 aggregates")
    assert [a["user"] for a in everything["aggregates"]] == users
    assert everything["count"] == 23 and everything["next_after"] is None

    default = await call(platform, "/aggregates")
    assert default.status == 200 and default.body["count"] == 23 and default.body["next_after"] is None

    seen: list[str] = []
    pages = 0
    after: str | None = None
    while True:
        path = "/aggregates?limit=5" + (f"&after={quote(after)}" if after is not None else "")
        page = await call(platform, path)
        assert page.status == 200, page.text
        pages += 1
        body = page.body
        assert body["total"] == 23 and body["count"] == len(body["aggregates"]) <= 5
        names = [a["user"] for a in body["aggregates"]]
        seen += names
        if body["next_after"] is None:
            break
        assert body["next_after"] == names[-1]
        after = body["next_after"]
        assert pages < 10, "pagination does not terminate"
    assert pages == 5 and seen == users
    assert len(body["aggregates"]) == 3

    # An exact multiple: the page holding the last user says there is nothing after it.
    exact = await call(platform, "/aggregates?limit=23")
    assert exact.body["count"] == 23 and exact.body["next_after"] is None
    # A cursor between users, and one past the end.
    mid = await call(platform, "/aggregates?limit=2&after=user010x")
    assert [a["user"] for a in mid.body["aggregates"]] == ["user011", "user012"]
    past = await call(platform, "/aggregates?after=zzz")
    assert past.status == 200 and past.body["aggregates"] == [] and past.body["next_after"] is None


async def test_aggregate_by_user_has_every_contract_field_and_unknown_is_404(platform, settings, bus):
    await platform.start("query")
    odd = "zoë smith"
    first, latest = aggregate("client01", 1), aggregate("client01", 4)
    await produce_aggregates(settings, bus.topics.aggregates, [
        (b"client01", first.encode()), (b"client01", latest.encode()),
        (odd.encode(), aggregate(odd, 2).encode()), (b"a/b", aggregate("a/b", 3).encode()),
        (b"gone", aggregate("gone").encode()),
    ])
    async def settled() -> bool:
        body = await served_total(platform, 4)
        return bool(body) and any(a == latest.to_dict() for a in body["aggregates"])

    await eventually(settled, TIMEOUT, what="4 aggregates, client01 at its latest snapshot")

    reply = await call(platform, "/aggregates/client01")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    assert set(reply.body) == CONTRACT_FIELDS
    assert reply.body == latest.to_dict()  # compacted topic: the latest snapshot wins
    assert UserAggregate.from_dict(reply.body) == latest

    for user, orders in ((odd, 2), ("a/b", 3)):  # percent-encoded path segments
        special = await call(platform, "/aggregates/" + quote(user, safe=""))
        assert special.status == 200 and special.body["user"] == user
        assert special.body["orders"] == orders

    assert_json_error(await call(platform, "/aggregates/nobody"), 404)
    assert_json_error(await call(platform, "/aggregates/" + quote("no such user ' \"")), 404)

    # A tombstone removes the user.
    await produce_aggregates(settings, bus.topics.aggregates, [(b"gone", None)])
    await eventually(lambda: served_total(platform, 3), TIMEOUT, what="tombstone applied")
    assert_json_error(await call(platform, "/aggregates/gone"), 404)


async def test_invalid_limits_are_400_json_errors(platform):
    await platform.start("query")
    for path in ("/aggregates?limit=0", "/aggregates?limit=abc", "/aggregates?limit=100000",
                 "/aggregates?limit=-1", "/aggregates?limit=1.5", "/dlq?limit=0", "/dlq?limit=abc",
                 "/dlq?limit=100000", "/aggregates?limit=", "/aggregates?limit=5&limit=6"):
        reply = await call(platform, path)
        assert_json_error(reply, 400)
        assert "limit" in reply.body["error"], (path, reply.body)
    assert "is empty" in (await call(platform, "/aggregates?limit=")).body["error"]
    assert "given 2 times" in (await call(platform, "/aggregates?limit=5&limit=6")).body["error"]
    assert (await call(platform, "/aggregates?limit=1000")).status == 200
    assert (await call(platform, "/aggregates")).status == 200  # absent: the default


# --- /metrics, /healthz, /readyz, routing ------------------------------------------------

async def test_metrics_as_json_and_as_prometheus_text(platform):
    await platform.start("aggregator", "query")
    reply = await call(platform, "/metrics")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    assert {"produced", "consumed", "dlq", "breaker_open", "latency"} <= set(reply.body)
    assert isinstance(reply.body["produced"], int) and isinstance(reply.body["consumed"], int)
    assert isinstance(reply.body["dlq"], int) and reply.body["breaker_open"] is False
    assert {"count", "p50_ms", "p99_ms", "max_ms"} <= set(reply.body["latency"])

    for kwargs in ({"headers": {"Accept": "text/plain"}}, {"params": {"format": "prometheus"}}):
        text = await call(platform, "/metrics", **kwargs)
        assert text.status == 200
        assert text.content_type.startswith("text/plain"), text.content_type
        assert text.body is None
        assert "kafka_saga_" in text.text
        assert "# TYPE kafka_saga_breaker_state gauge" in text.text
        assert "kafka_saga_dlq_garbage_total" in text.text


async def test_healthz_lists_roles_and_readyz_is_ready_once_caught_up(platform, settings, bus):
    await produce_aggregates(settings, bus.topics.aggregates,
                             [(f"u{i}".encode(), aggregate(f"u{i}").encode()) for i in range(5)])
    await platform.start("aggregator", "query")

    health = await call(platform, "/healthz")
    assert health.status == 200 and health.body["status"] == "ok"
    assert set(health.body["roles"]) == {"aggregator", "query"}
    for role in health.body["roles"].values():
        assert role["state"] == "running" and role["restarts"] == 0

    async def ready() -> Reply | None:
        reply = await call(platform, "/readyz")
        assert reply.status in (200, 503) and reply.content_type.startswith("application/json")
        return reply if reply.status == 200 else None

    reply = await eventually(ready, TIMEOUT, what="/readyz 200")
    assert reply.body["ready"] is True
    assert reply.body["read"] == reply.body["target"] == 5 and reply.body["users"] == 5


async def test_unknown_path_is_404_and_wrong_method_is_405_json(platform):
    await platform.start("query")
    for path in ("/nope", "/aggregates/a/b", "/dlq/x", "/index.html"):
        assert_json_error(await call(platform, path), 404)
    for method, path in (("POST", "/aggregates"), ("DELETE", "/aggregates/u1"), ("PUT", "/dlq"),
                         ("POST", "/metrics"), ("POST", "/healthz"), ("PATCH", "/readyz")):
        reply = await call(platform, path, method=method, data=b"{}")
        assert_json_error(reply, 405)


# --- dead letters ----------------------------------------------------------------------------

async def test_dlq_endpoint_lists_malformed_events_with_reason_and_origin(platform, settings, bus):
    await platform.start("aggregator", "query")
    await produce_aggregates(settings, bus.topics.events, [
        (b"bad-1", b"not json {"), (b"bad-2", b"[1, 2, 3]"), (b"bad-3", b'{"event_id": "x"}'),
        (b"bad-4", b"also not json"),
    ])

    async def four() -> dict | None:
        reply = await call(platform, "/dlq")
        return reply.body if reply.status == 200 and reply.body["count"] >= 4 else None

    body = await eventually(four, TIMEOUT, what="4 dead letters on /dlq")
    assert body["count"] == 4 and body["garbage"] == 0
    assert body["by_reason"] == {"invalid_json": 2, "wrong_shape": 1, "missing_field": 1}
    letters = {d["key"]: d for d in body["dead_letters"]}
    assert set(letters) == {"bad-1", "bad-2", "bad-3", "bad-4"}
    for letter in letters.values():
        assert letter["origin_topic"] == bus.topics.events
        assert isinstance(letter["origin_partition"], int) and 0 <= letter["origin_partition"] < 3
        assert isinstance(letter["origin_offset"], int) and letter["origin_offset"] >= 0
        assert letter["role"].startswith("aggregator") and letter["error"] and letter["published"]
    assert letters["bad-1"]["reason"] == "invalid_json" and letters["bad-1"]["value_preview"] == "not json {"
    assert letters["bad-2"]["reason"] == "wrong_shape"
    assert letters["bad-3"]["reason"] == "missing_field"

    only = await call(platform, "/dlq?reason=invalid_json")
    assert only.body["count"] == 2
    assert {d["key"] for d in only.body["dead_letters"]} == {"bad-1", "bad-4"}
    none = await call(platform, "/dlq?reason=no_such_reason")
    assert none.status == 200 and none.body["count"] == 0 and none.body["dead_letters"] == []
    limited = await call(platform, "/dlq?limit=1")
    assert limited.body["count"] == 1 and len(limited.body["dead_letters"]) == 1
    both = await call(platform, "/dlq?reason=invalid_json&limit=1")
    assert both.body["count"] == 1 and both.body["dead_letters"][0]["reason"] == "invalid_json"

    # Garbage written to the DLQ by hand (no DLQ headers) is counted, never listed.
    await produce_aggregates(settings, bus.topics.dlq, [(b"junk", b"garbage")])

    async def garbage_counted() -> dict | None:
        reply = await call(platform, "/dlq")
        return reply.body if reply.body["garbage"] == 1 else None

    after = await eventually(garbage_counted, TIMEOUT, what="garbage counted")
    assert after["count"] == 4 and "junk" not in {d["key"] for d in after["dead_letters"]}


async def test_malformed_aggregate_is_dead_lettered_with_headers_and_valid_ones_are_served(
        platform, settings, bus):
    await platform.start("dlq", "query")
    await produce_aggregates(settings, bus.topics.aggregates, [
        (b"alice", aggregate("alice", 1).encode()),
        (b"broken", b"{definitely not json"),
        (b"typed", b'{"user": "typed", "orders": "many"}'),
        (b"bob", aggregate("bob", 2).encode()),
    ])
    body = await eventually(lambda: served_total(platform, 2), TIMEOUT, what="alice and bob served")
    assert [a["user"] for a in body["aggregates"]] == ["alice", "bob"]
    assert_json_error(await call(platform, "/aggregates/broken"), 404)
    assert_json_error(await call(platform, "/aggregates/typed"), 404)

    # The origin offsets of the bad records, as an independent client sees them.
    originals = await asyncio.to_thread(read_all, settings.bootstrap_servers, bus.topics.aggregates, 4)
    origin = {r.key: r for r in originals}
    assert set(origin) == {b"alice", b"broken", b"typed", b"bob"}

    records = await asyncio.to_thread(read_all, settings.bootstrap_servers, bus.topics.dlq, 2)
    assert len(records) == 2, records
    by_key = {r.key: r for r in records}
    assert set(by_key) == {b"broken", b"typed"}
    for key, record in by_key.items():
        headers = dict((k, v.decode()) for k, v in record.headers)
        assert set(DLQ_HEADERS) <= set(headers), headers
        assert list(headers)[:len(DLQ_HEADERS)] == list(DLQ_HEADERS)
        assert headers["origin-topic"] == bus.topics.aggregates
        assert int(headers["origin-partition"]) == origin[key].partition
        assert int(headers["origin-offset"]) == origin[key].offset
        assert headers["role"] == "dlq" and headers["retry-count"] == "0"
        assert headers["published"].endswith("Z") and headers["error"]
        assert record.value == origin[key].value  # original bytes kept
    assert dict(by_key[b"broken"].headers)["reason"] == b"invalid_json"
    assert dict(by_key[b"typed"].headers)["reason"] == b"invalid_field"

    # The query's own DLQ view and metrics see them too; the API stays healthy.
    async def listed() -> dict | None:
        reply = await call(platform, "/dlq")
        return reply.body if reply.body["count"] == 2 else None

    view = await eventually(listed, TIMEOUT, what="/dlq shows both")
    assert {d["role"] for d in view["dead_letters"]} == {"dlq"}
    metrics = await call(platform, "/metrics")
    assert metrics.body["dlq"] == 2
    assert (await call(platform, "/aggregates/bob")).body["orders"] == 2


async def test_restarting_the_query_role_does_not_dead_letter_a_record_twice(platform, settings, bus):
    await platform.start("dlq", "query")
    await produce_aggregates(settings, bus.topics.aggregates,
                             [(b"broken", b"{nope"), (b"ok", aggregate("ok").encode())])
    await asyncio.to_thread(read_all, settings.bootstrap_servers, bus.topics.dlq, 1)
    await platform.stop()
    await platform.start("dlq", "query")
    await eventually(lambda: served_total(platform, 1), TIMEOUT, what="query serving again")
    await asyncio.sleep(3.0)  # room for a second dead letter to be produced
    records = await asyncio.to_thread(read_all, settings.bootstrap_servers, bus.topics.dlq, 2, 5.0)
    origins = [dict(r.headers)["origin-offset"] for r in records]
    assert len(records) == 1, f"the same record dead-lettered {len(records)} times: {origins}"
