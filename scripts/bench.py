"""Benchmarks against the embedded broker (or --bootstrap-servers), printed and saved as JSON.

Scenarios (each the median of --repeat runs, with min and max):
  raw         bare aiokafka: produce N records of the same size, then consume them (baseline)
  aggregator  the aggregator role alone: N order events folded and published as snapshots
  saga        orders end to end through orchestrator + aggregator (orders/s, latency)

    python scripts/bench.py [--quick] [--scenarios raw,aggregator,saga] [--bootstrap-servers H:P]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka_saga import logs  # noqa: E402
from kafka_saga.bus.client import Bus  # noqa: E402
from kafka_saga.bus.embedded import EmbeddedBroker  # noqa: E402
from kafka_saga.config import Settings  # noqa: E402
from kafka_saga.core.catalog import Catalog  # noqa: E402
from kafka_saga.core.submission import new_order_command  # noqa: E402
from kafka_saga.runtime.platform import Platform  # noqa: E402
from tests.support.orders import random_orders  # noqa: E402


def settings_for(bootstrap: str, partitions: int) -> Settings:
    return replace(Settings.from_env({}), bootstrap_servers=bootstrap, partitions=partitions,
                   topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", query_port=0,
                   payment_failure_rate=0.0, log_level="warning")


async def raw(bootstrap: str, count: int, size: int, partitions: int) -> dict:
    """Bare aiokafka: produce ``count`` records, then consume them with one group member."""
    settings = settings_for(bootstrap, partitions)
    bus = Bus(settings, bootstrap)
    await bus.ensure_topics()
    topic = bus.topics.events
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    value = b"x" * size
    started = time.perf_counter()
    futures = [await producer.send(topic, value, key=str(i).encode()) for i in range(count)]
    await asyncio.gather(*futures)
    produce_s = time.perf_counter() - started
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="raw",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    seen, first = 0, None
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500)
        if batch and first is None:
            first = time.perf_counter()
        seen += sum(len(r) for r in batch.values())
        if batch:
            await consumer.commit()
    consume_s = time.perf_counter() - (first or time.perf_counter())
    await consumer.stop()
    return {"records": count, "produce_per_s": count / produce_s, "consume_per_s": count / consume_s,
            "records_per_s": 2 * count / (produce_s + consume_s)}


async def aggregator(bootstrap: str, orders: int, partitions: int) -> dict:
    """Events already on orders.events; time from the first record folded to the last."""
    settings = settings_for(bootstrap, partitions)
    bus = Bus(settings, bootstrap)
    await bus.ensure_topics()
    events = list(itertools.chain.from_iterable(random_orders(orders, users=200, seed=3)))
    async with bus:
        for event in events:
            await bus.producer.send(bus.topics.events, event.encode(), event.key)
        await bus.producer.flush()
    platform = Platform(settings, ["aggregator"])
    task = asyncio.create_task(platform.run())
    first = None
    while True:
        await asyncio.sleep(0.05)
        if platform.bus is None:
            continue
        by_role = platform.bus.metrics.snapshot()["consumed_by_role"]
        if first is None and by_role.get("aggregator.rekey", 0) > 0:
            first = time.perf_counter()
        if by_role.get("aggregator", 0) >= len(events):
            break
    elapsed = time.perf_counter() - (first or time.perf_counter())
    published = platform.bus.metrics.snapshot()["produced_by_topic"].get(bus.topics.aggregates, 0)
    platform.request_stop()
    await task
    return {"events": len(events), "events_per_s": len(events) / elapsed, "seconds": elapsed,
            "snapshots_published": published}


async def saga(bootstrap: str, orders: int, partitions: int) -> dict:
    """Orders submitted at once; orders/s from the first event to the last terminal one."""
    settings = settings_for(bootstrap, partitions)
    platform = Platform(settings, ["orchestrator", "aggregator"])
    task = asyncio.create_task(platform.run())
    while platform.bus is None or platform.supervisor is None:
        await asyncio.sleep(0.05)
    await asyncio.sleep(4.0)  # group joins
    catalog = Catalog()
    bus = platform.bus
    started = time.perf_counter()
    for i in range(orders):
        command = new_order_command(f"client{i % 50:02d}", "espresso", 1, catalog)
        await bus.producer.send(bus.topics.commands, command.encode(), command.key)
    await bus.producer.flush()
    orchestrator = platform.supervisor.current["orchestrator"]
    while sum(1 for s in orchestrator.sagas.values() if s.terminal) < orders:  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    latency = bus.metrics.snapshot()["latency"]
    platform.request_stop()
    await task
    return {"orders": orders, "orders_per_s": orders / elapsed, "seconds": elapsed,
            "record_latency": latency}


def summarise(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": runs}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--scenarios", default="raw,aggregator,saga")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--output", default="bench-report.json")
    args = parser.parse_args()
    logs.configure("warning", "json")
    repeat = args.repeat or (1 if args.quick else 3)
    scale = 0.2 if args.quick else 1.0
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        broker = EmbeddedBroker()
        bootstrap = await broker.start()
    report: dict = {"bootstrap": bootstrap, "embedded": broker is not None, "repeat": repeat}
    try:
        wanted = args.scenarios.split(",")
        if "raw" in wanted:
            runs = [await raw(bootstrap, int(30000 * scale), 400, args.partitions) for _ in range(repeat)]
            report["raw"] = summarise(runs, "records_per_s")
        if "aggregator" in wanted:
            runs = [await aggregator(bootstrap, int(6000 * scale), args.partitions) for _ in range(repeat)]
            report["aggregator"] = summarise(runs, "events_per_s")
        if "saga" in wanted:
            runs = [await saga(bootstrap, int(2000 * scale), args.partitions) for _ in range(repeat)]
            report["saga"] = summarise(runs, "orders_per_s")
    finally:
        if broker:
            broker.stop()
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"{'scenario':<12} {'median':>12} {'min':>12} {'max':>12}  unit")
    for name, unit in (("raw", "records/s"), ("aggregator", "events/s"), ("saga", "orders/s")):
        if name in report:
            r = report[name]
            print(f"{name:<12} {r['median']:>12.0f} {r['min']:>12.0f} {r['max']:>12.0f}  {unit}")
    print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
