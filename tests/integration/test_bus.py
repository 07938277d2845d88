"""The bus on the real broker: a record there and back, DLQ routing, the circuit breaker."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import replace

from aiokafka.structs import OffsetAndMetadata

from kafka_saga.bus.client import Bus
from kafka_saga.bus.embedded import EmbeddedBroker, broker_binary, wait_until_ready
from kafka_saga.bus.follow import TopicFollower, read_topic
from kafka_saga.bus.loop import Subscription, consume
from kafka_saga.bus.ports import free_port
from kafka_saga.core.contracts import DLQ_HEADERS, Event, EventType, Snapshot, Step, headers_dict

from ..support.orders import produce, produce_events
from ..support.platform import eventually
from ..support.proxy import TcpProxy

DLQ_HEADER_NAMES = set(DLQ_HEADERS)


def _event(order_id: str, user: str = "client01") -> Event:
    return Event.new(EventType.ORDER_CREATED, Snapshot(order_id, user, "latte", 1, price_cents=400),
                     Step.VALIDATION, "saga-" + order_id)


async def test_record_through_the_bus_and_back(bus):
    sent = _event("o-1")
    await bus.producer.send_and_wait(bus.topics.events, sent.encode(), sent.key, [("trace", b"t1")])
    received: list[tuple[Event, dict]] = []
    stop = asyncio.Event()

    async def handle(event: Event, record) -> None:
        received.append((event, headers_dict(record.headers)))
        stop.set()

    sub = Subscription("test", (bus.topics.events,), bus.topics.group("test"), Event.decode, handle)
    await asyncio.wait_for(consume(bus, sub, stop), 60)
    assert received[0][0] == sent
    assert received[0][1] == {"trace": "t1"}
    assert bus.metrics.snapshot()["produced"] >= 1


async def test_a_place_the_broker_forgot_is_read_again_from_its_start(bus):
    """The group's committed offsets are beyond the partitions' ends, as after a memory-only
    broker restarted or a log was truncated. Kafka answers such a fetch with
    OFFSET_OUT_OF_RANGE, some brokers with nothing at all; either way the loop reads the
    partitions again from their start and nothing written there is missed."""
    topic = bus.topics.events
    sent = [_event(f"o-{i}", user=f"client{i:02d}") for i in range(6)]
    for event in sent:
        await bus.producer.send_and_wait(topic, event.encode(), event.key)
    group = bus.topics.group("forgotten")
    await _commit_beyond_the_end(bus, topic, group, 1_000)
    received: list[Event] = []
    stop = asyncio.Event()

    async def handle(event: Event, _record) -> None:
        received.append(event)
        if len(received) == len(sent):
            stop.set()

    sub = Subscription("forgotten", (topic,), group, Event.decode, handle)
    await asyncio.wait_for(consume(bus, sub, stop), 60)
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in sent)


async def test_a_follower_whose_place_is_beyond_the_end_reads_from_the_start(bus):
    topic = bus.topics.events
    sent = [_event(f"o-{i}", user=f"client{i:02d}") for i in range(6)]
    for event in sent:
        await bus.producer.send_and_wait(topic, event.encode(), event.key)
    received: list = []
    partitions = await bus.partitions(topic)
    follower = TopicFollower(bus, topic, received.append, name="forgotten",
                             start={tp.partition: 1_000 for tp in partitions})
    stop = asyncio.Event()
    task = asyncio.create_task(follower.run(stop))
    try:
        await eventually(lambda: len(received) >= len(sent), timeout=60, what="records read again")
    finally:
        stop.set()
        await task
    assert sorted(Event.decode(r.value).event_id for r in received) == sorted(e.event_id for e in sent)


async def _commit_beyond_the_end(bus, topic: str, group: str, offset: int) -> None:
    consumer = await bus.started_consumer(group_id=group)
    try:
        partitions = await bus.partitions(topic)
        consumer.assign(partitions)
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp in partitions})
    finally:
        await consumer.stop()


async def _dead_letters(bus) -> list:
    records: list = []
    await read_topic(bus, bus.topics.dlq, records.append, 30)
    return records


async def test_malformed_records_go_to_the_dlq_and_the_role_keeps_going(platform, settings, bus):
    await platform.start("aggregator", "dlq")
    bad = [(b"k1", b"{not json"), (b"k2", b"\xff\xfe\x00"), (b"k3", b'{"event_id": 1}'),
           (b"k4", None), (None, b"[1]"), (b"k5", b"[]")]
    await asyncio.to_thread(produce, settings.bootstrap_servers, bus.topics.events, bad,
                            [("origin-trace", b"x")])
    await asyncio.to_thread(produce, settings.bootstrap_servers, bus.topics.events,
                            [(b"u", b'{"type": "Nope"}')])
    good = _event("o-good", "client42")
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, [good])

    letters = await eventually(lambda: _when(bus, 7), timeout=60, what="seven dead letters")
    by_key = {r.key: headers_dict(r.headers) for r in letters}
    for record in letters:
        headers = headers_dict(record.headers)
        assert DLQ_HEADER_NAMES <= set(headers)
        assert headers["origin-topic"] == bus.topics.events
        assert int(headers["origin-offset"]) >= 0
    assert by_key[b"k1"]["reason"] == "invalid_json"
    assert by_key[b"k2"]["reason"] == "bad_utf8"
    assert by_key[b"k3"]["reason"] in ("missing_field", "invalid_field")
    assert by_key[b"k4"]["reason"] == "null_value"
    assert by_key[None]["reason"] == "wrong_shape"
    assert by_key[b"k5"]["reason"] == "wrong_shape"
    assert by_key[b"u"]["role"] == "aggregator" and by_key[b"u"]["reason"] == "missing_field"
    assert by_key[b"k1"]["origin-trace"] == "x"  # the original headers are kept
    # the original bytes are kept as the value
    assert {r.value for r in letters} >= {b"{not json", b"\xff\xfe\x00"}
    # the good record after the garbage was still processed
    await eventually(lambda: _aggregate_count(bus), timeout=60, what="aggregate of the good event")
    # the dlq role read them all and counted them by reason; nothing crashed
    metrics = platform.platform.bus.metrics.snapshot()
    await eventually(lambda: platform.platform.bus.metrics.snapshot()["dlq_read"] >= 7, timeout=30,
                     what="dlq role read the letters")
    assert metrics["role_restarts"] == 0


async def _when(bus, count: int):
    letters = await _dead_letters(bus)
    return letters if len(letters) >= count else None


async def _aggregate_count(bus) -> int:
    records: list = []
    await read_topic(bus, bus.topics.aggregates, records.append, 30)
    return len(records)


async def test_garbage_on_the_dlq_is_counted_never_republished(platform, settings, bus):
    await platform.start("dlq")
    await asyncio.to_thread(produce, settings.bootstrap_servers, bus.topics.dlq,
                            [(b"x", b"garbage"), (None, b"\xff")])
    metrics = platform.platform.bus.metrics
    await eventually(lambda: metrics.snapshot()["dlq_garbage"] >= 2, timeout=60, what="garbage counted")
    await asyncio.sleep(1)
    assert len(await _dead_letters(bus)) == 2  # nothing was added


async def test_breaker_opens_while_the_broker_is_unreachable_and_closes_after(settings):
    """A broker reachable only through a proxy that the test cuts and restores."""
    real_port, proxy_port = free_port(), free_port()
    url = f"tcp://127.0.0.1:{real_port}"
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url,
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = TcpProxy(proxy_port, real_port)
    await proxy.start()
    try:
        await wait_until_ready(f"127.0.0.1:{proxy_port}")
        flaky = replace(settings, bootstrap_servers=f"127.0.0.1:{proxy_port}", breaker_fail_max=2,
                        breaker_reset_s=1.0, request_timeout_ms=1500, send_retry_max_s=60.0)
        bus = Bus(flaky)
        await bus.ensure_topics()
        await bus.start()
        try:
            await bus.producer.send_and_wait(bus.topics.events, b"{}", b"before")
            assert bus.producer.breaker_state == "closed"
            await proxy.cut()
            for i in range(20):
                await bus.producer.send(bus.topics.events, b"{}", f"during-{i}".encode())
            flush = asyncio.create_task(bus.producer.flush())
            await eventually(lambda: bus.producer.breaker_state == "open", timeout=30,
                             what="breaker open")
            assert bus.metrics.snapshot()["breaker_open"] is True
            assert not flush.done()  # records are held, not dropped
            await proxy.restore()
            await asyncio.wait_for(flush, 60)
            assert bus.producer.breaker_state == "closed"
            ends = await bus.end_offsets(bus.topics.events)
            assert sum(ends.values()) >= 21  # nothing lost (at-least-once: maybe more)
        finally:
            await bus.stop()
    finally:
        await proxy.cut()
        process.kill()
        process.wait()


def test_embedded_broker_class_reports_its_bootstrap():
    broker = EmbeddedBroker(port=12345)
    assert broker.bootstrap == "127.0.0.1:12345"
    assert not broker.alive()
