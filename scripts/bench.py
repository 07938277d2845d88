"""Benchmarks against the embedded broker (or --bootstrap-servers), printed and saved as JSON.

Scenarios (each the median of --repeat runs, with min and max), with the baselines that run
in the same invocation (a shared machine is noisy: read the ratios, not only the numbers).
Whatever is measured runs in a process of its own; load generators and watchers run in the
bench process (or, for HTTP load, another one):
  raw         bare aiokafka in the bench process: produce N records of a saga's average size,
              then consume them
  aggregator  the aggregator role alone in a runtime process, folding events already written;
              then the peer: a Faust agent + table doing the same fold on the same events, in
              a process of its own (skipped with the reason without faust-streaming: .[bench])
  saga        orders end to end through one runtime process running every role, submitted
              and watched from the bench process; then the latency submission -> terminal at
              half and at the full measured maximum
  scale       the same with --processes N runtime processes (default 2), against one
  tracing     the saga scenario with tracing off (the default), on with a no-op exporter, on
              with the SDK's in-memory exporter and on with 10% of the traces sampled (no-op
              exporter), alternating runs: orders/s and CPU/order
  query       GET /aggregates/{user} of the query role next to a bare aiohttp handler, both in
              the bench process, under load from another process (wrk when installed)
  replay      rebuilding the projections from orders.events (worker processes, one per core),
              next to raw consumption of the same topic in the bench process
  recovery    crash recovery: N orders of history through a runtime process, SIGKILL,
              restart; seconds until a new order ends (--recovery N[,N...]; default 100,000,
              --quick 10,000)
  burst       the steady maximum of a runtime process (closed loop), then 100k orders written
              at once by another client (--quick: 20k): outcomes, DLQ, drain time, burst/steady,
              peak RSS (--burst-kill: SIGKILL of the runtime a third of the way through)
  memory      (only with --memory N) peak RSS of a runtime while N orders go through it

    python scripts/bench.py [--quick] [--engine tansu|kafka] [--scenarios raw,saga,...]
                            [--processes N] [--memory N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_burst  # noqa: E402  (scripts/ is on sys.path when run as a script)
import bench_query  # noqa: E402
import bench_saga  # noqa: E402

from kafka_saga import logs  # noqa: E402
from kafka_saga.bus.client import Bus  # noqa: E402
from kafka_saga.bus.embedded import EmbeddedBroker  # noqa: E402
from kafka_saga.bus.kafka_engine import KafkaCluster  # noqa: E402
from kafka_saga.bus.ports import free_port_block  # noqa: E402
from kafka_saga.config import Settings  # noqa: E402
from tests.support.orders import random_orders  # noqa: E402


def settings_for(bootstrap: str, partitions: int) -> Settings:
    return replace(Settings.from_env(dict(os.environ)), bootstrap_servers=bootstrap, partitions=partitions,
                   topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", query_port=0,
                   payment_failure_rate=0.0, log_level="warning")


async def raw(bootstrap: str, count: int, size: int, partitions: int) -> dict:
    """Bare aiokafka: produce ``count`` records, then consume them with one group member."""
    settings = settings_for(bootstrap, partitions)
    bus = Bus(settings)
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
            "records_per_s": count / (produce_s + consume_s)}  # each record produced and consumed


async def aggregator(bootstrap: str, orders: int, partitions: int) -> dict:
    """The aggregator role alone in a runtime process, then the Faust peer in a process of its
    own, folding the same events (already on orders.events, each user on one partition).

    The aggregator's rate is sampled from its /metrics every 0.2 s (events consumed between
    the first sample after it started folding and the last before it finished); the peer
    times itself from its first event folded to the last."""
    settings = settings_for(bootstrap, partitions)
    bus = Bus(settings)
    await bus.ensure_topics()
    events = list(itertools.chain.from_iterable(random_orders(orders, users=200, seed=3)))
    async with bus:
        for event in events:
            await bus.producer.send(bus.topics.events, event.encode(), event.key)
        await bus.producer.flush()
    port = free_port_block(1)
    proc = bench_saga.spawn_runtime(settings, ["aggregator"], AGGREGATOR_METRICS_PORT=str(port))
    samples: list[tuple[float, int]] = []
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 300
            while not samples or samples[-1][1] < len(events):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the aggregator folded {samples[-1][1] if samples else 0} "
                                       f"of {len(events)} events")
                await asyncio.sleep(0.2)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        consumed = (await resp.json())["consumed_by_role"].get("aggregator", 0)
                except aiohttp.ClientError:
                    continue  # not serving yet
                samples.append((time.perf_counter(), consumed))
    finally:
        proc.terminate()
        proc.wait()
    inside = [s for s in samples if 0 < s[1] < len(events)] or samples[-2:]
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    result = {"events": len(events), "events_per_s": (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0,
              "layout": "aggregator alone in a runtime process; events written before it starts"}
    result["faust"] = await faust_peer(bus, len(events), partitions)
    if "events_per_s" in result["faust"]:
        result["ratio_to_faust"] = result["events_per_s"] / result["faust"]["events_per_s"]
    return result


async def faust_peer(bus: Bus, events: int, partitions: int) -> dict:
    """The same fold by a Faust agent + table (scripts/bench_faust.py) in a process of its
    own; skipped with the reason when faust-streaming is not installed (``.[bench]``)."""
    try:
        import faust  # noqa: F401
    except ImportError:
        return {"skipped": "faust-streaming is not installed (pip install -e '.[bench]')"}
    output = Path(tempfile.mkdtemp(prefix="bench-faust-")) / "result.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "bench_faust.py"), bus.bootstrap, bus.topics.events,
        str(partitions), str(events), str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 600)
    except TimeoutError:
        proc.kill()
        return {"skipped": "the Faust worker did not fold every event within 600 s"}
    if not output.exists():
        return {"skipped": f"the Faust worker failed: {err.decode()[-300:]}"}
    return json.loads(output.read_text())


def print_table(report: dict) -> None:
    """The figures next to their baselines and targets."""
    rows: list[tuple[str, str, str]] = []
    raw_rps = report.get("raw", {}).get("median")
    if raw_rps:
        rows.append(("raw pipe (records/s)", f"{raw_rps:,.0f}", "baseline"))
    if "aggregator" in report:
        agg = report["aggregator"]
        rows.append(("aggregator, one runtime process (events/s)", f"{agg['median']:,.0f}", "-"))
        peer = agg["runs"][0]["faust"]
        if "skipped" in peer:
            rows.append(("Faust agent + table, same fold (events/s)", "skipped", peer["skipped"]))
        else:
            faust_rates = [r["faust"]["events_per_s"] for r in agg["runs"]]
            ratios = [r["ratio_to_faust"] for r in agg["runs"]]
            rows.append(("Faust agent + table, same fold (events/s)",
                         f"{statistics.median(faust_rates):,.0f}", "baseline"))
            rows.append(("aggregator / Faust", f"{statistics.median(ratios):.1f}", ">= 5"))
    if "saga" in report:
        saga = report["saga"]
        first = saga["runs"][0]
        target = f">= {raw_rps / 25:,.0f} (raw/25)" if raw_rps else "raw/25"
        rows.append((f"saga, {first['processes']} runtime process(es) (orders/s)",
                     f"{saga['median']:,.0f}", target))
        if raw_rps:
            rows.append(("saga orders/s x 25 / raw", f"{saga['median'] * 25 / raw_rps:.2f}", ">= 1.0"))
        for key, label in (("latency", "half"), ("latency_full", "full")):
            lat = first.get(key)
            if lat:
                rows.append((f"latency at {label} rate, {lat.get('achieved_per_s', lat['rate_per_s'])}/s"
                             " p50/p95/p99 (ms)",
                             f"{lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']}",
                             "p99 < 250" if label == "half" else "-"))
        timeouts = sum(sum(r.get("step_timeouts", {}).values()) for r in saga["runs"])
        rows.append(("step deadlines fired (all saga runs)", f"{timeouts}", "0"))
        rows.append(("records per order produced/consumed",
                     f"{first['produced_per_order']:.1f}/{first['consumed_per_order']:.1f}", "-"))
        for topic, count in first["produced_per_order_by_topic"].items():
            rows.append((f"  of which {topic}", f"{count:.2f}", "-"))
        rows.append(("CPU of the runtime process per order (ms)", f"{first['cpu_ms_per_order']:.2f}", "-"))
    if "scale" in report:
        scale = report["scale"]
        rows.append((f"saga, {scale['processes']} runtime processes (orders/s)",
                     f"{scale['median']:,.0f}", "baseline: one process"))
        rows.append((f"{scale['processes']} processes / one", f"{scale['ratio']:.2f}", ">= 1.8"))
    if "query" in report:
        q = report["query"]["runs"][0]
        rows.append(("query GET /aggregates/{user} (req/s, p99 ms)",
                     f"{q['query']['rps']:,.0f}, {q['query']['p99_ms']}", "p99 < 5"))
        rows.append(("bare aiohttp handler (req/s, p99 ms)",
                     f"{q['bare']['rps']:,.0f}, {q['bare']['p99_ms']}", "baseline"))
        rows.append(("query / bare", f"{report['query']['median']:.2f}", ">= 0.80"))
    if "replay" in report:
        runs = report["replay"]["runs"]
        r = runs[0]
        rows.append(("raw consumption of orders.events (events/s)", f"{r['raw_consume_per_s']:,.0f}",
                     "baseline"))
        rows.append((f"replay, {r['workers']} worker processes (events/s)",
                     f"{report['replay']['median']:,.0f}", "-"))
        rows.append(("replay / raw", f"{statistics.median(x['ratio'] for x in runs):.2f}", ">= 0.7"))
        rows.append(("replay in one process (events/s), / raw",
                     f"{statistics.median(x['one_process_per_s'] for x in runs):,.0f}, "
                     f"{statistics.median(x['one_process_ratio'] for x in runs):.2f}", "-"))
    for rec in report.get("recovery", []):
        rows.append((f"first order after a restart, {rec['history']:,} orders of history (s)",
                     f"{rec['first_order_after_restart_s']:.1f}", "< 5, equal for any history"))
        rows.append((f"peak RSS over {rec['history']:,} orders of history (MB)",
                     f"{rec['peak_rss_mb']:.0f}", "< 300 at 1,000,000"))
    if "burst" in report:
        b = report["burst"]
        rows.append(("steady maximum before / after the burst (orders/s)",
                     f"{b['steady']['orders_per_s']:,.0f} / {b['steady_after']['orders_per_s']:,.0f}",
                     "baseline"))
        rows.append((f"burst of {b['orders']:,} (orders/s, / steady before, / after)",
                     f"{b['orders_per_s']:,.0f}, {b['ratio']:.2f}, {b['ratio_to_after']:.2f}", ">= 0.90"))
        rows.append(("burst outcomes; dead letters", f"{b['outcomes']}; {sum(b['dlq'].values())}",
                     "all approved; 0"))
        rows.append(("burst drain (s), peak RSS (MB)", f"{b['drain_s']:.1f}, {b['peak_rss_mb']:.0f}", "-"))
        rows.append(("runtime CPU per order, steady before / burst / after (ms)",
                     f"{b['steady']['cpu_ms_per_order']:.2f} / {b['cpu_ms_per_order']:.2f} / "
                     f"{b['steady_after']['cpu_ms_per_order']:.2f}", "-"))
    if "processing" in report:
        p = report["processing"]
        if p.get("skipped"):
            rows.append(("exactly-once vs at-least-once", "skipped", p["skipped"]))
        else:
            rows.append(("saga at-least-once / exactly-once (orders/s)",
                         f"{p['at_least_once']['median']:,.0f} / {p['exactly_once']['median']:,.0f}",
                         "baseline"))
            rows.append(("exactly-once / at-least-once", f"{p['ratio']:.2f}", "-"))
            rows.append(("latency p50/p99 at half rate, at-least-once / exactly-once (ms)",
                         f"{p['latency']['at_least_once']} / {p['latency']['exactly_once']}", "-"))
    if "tracing" in report:
        t = report["tracing"]
        rows.append(("saga, tracing off / no-op exporter / in-memory (orders/s)",
                     f"{t['off']['median']:,.0f} / {t['noop_exporter']['median']:,.0f} / "
                     f"{t['memory_exporter']['median']:,.0f}", "baseline: off"))
        rows.append(("tracing on / off, no-op exporter; in-memory; 10% sampled",
                     f"{t['ratio_noop']:.2f}; {t['ratio_memory']:.2f}; {t['ratio_sampled']:.2f}", "-"))
        rows.append(("runtime CPU per order, off / no-op / in-memory (ms)",
                     f"{t['off']['cpu_ms_per_order']:.2f} / {t['noop_exporter']['cpu_ms_per_order']:.2f} / "
                     f"{t['memory_exporter']['cpu_ms_per_order']:.2f}", "-"))
    if "memory" in report:
        mem = report["memory"]
        rows.append((f"peak RSS after {mem['orders']:,} orders (MB)", f"{mem['peak_rss_mb']:.0f}", "< 300"))
    width = max(len(r[0]) for r in rows) if rows else 10
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>20}  {target}")


def summarise(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": runs}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--scenarios", default="raw,aggregator,saga,scale,tracing,query,replay,recovery,burst")
    parser.add_argument("--burst", type=int, default=0, metavar="ORDERS",
                        help="burst size (default 100,000; --quick 20,000)")
    parser.add_argument("--burst-kill", action="store_true", help="SIGKILL the runtime mid-burst")
    parser.add_argument("--processes", type=int, default=2,
                        help="scale: N runtime processes, against one (default 2)")
    parser.add_argument("--memory", type=int, default=0, metavar="ORDERS",
                        help="also measure peak RSS while ORDERS orders go through a runtime")
    parser.add_argument("--recovery", default="", metavar="N[,N...]",
                        help="recovery: orders of history before each crash")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--engine", choices=("tansu", "kafka"), default="tansu",
                        help="the broker started for the run (ignored with --bootstrap-servers)")
    parser.add_argument("--output", default="bench-report.json")
    args = parser.parse_args()
    logs.configure("warning", "json")
    repeat = args.repeat or (1 if args.quick else 3)
    scale = 0.2 if args.quick else 1.0
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap and args.engine == "kafka":  # one Apache Kafka node from its jars
        broker = KafkaCluster.for_settings(Settings.from_env(), tempfile.mkdtemp(prefix="bench-kafka-"),
                                           port=free_port_block(2))
        bootstrap = await broker.start()
    elif not bootstrap:
        broker = EmbeddedBroker()
        bootstrap = await broker.start()
    report: dict = {"bootstrap": bootstrap, "embedded": broker is not None, "repeat": repeat,
                    "engine": args.engine if broker is not None else "given",
                    "event_loop": type(asyncio.get_running_loop()).__module__}
    try:
        wanted = args.scenarios.split(",")
        if "raw" in wanted:
            runs = [await raw(bootstrap, int(30000 * scale), 400, args.partitions) for _ in range(repeat)]
            report["raw"] = summarise(runs, "records_per_s")
        if "aggregator" in wanted:
            runs = [await aggregator(bootstrap, int(10000 * scale), args.partitions) for _ in range(repeat)]
            report["aggregator"] = summarise(runs, "events_per_s")
        if "saga" in wanted:
            runs = [await bench_saga.saga_throughput(settings_for(bootstrap, args.partitions),
                                                     int(3000 * scale))
                    for _ in range(repeat)]
            report["saga"] = summarise(runs, "orders_per_s")
        if "scale" in wanted:  # N runtime processes against one, same run
            count = max(2, args.processes)
            one = report.get("saga") or summarise(
                [await bench_saga.saga_throughput(settings_for(bootstrap, args.partitions),
                                                  int(3000 * scale)) for _ in range(repeat)],
                "orders_per_s")
            runs = [await bench_saga.saga_throughput(settings_for(bootstrap, args.partitions),
                                                     int(3000 * scale), count)
                    for _ in range(repeat)]
            report["scale"] = {**summarise(runs, "orders_per_s"), "processes": count,
                               "ratio": statistics.median(r["orders_per_s"] for r in runs) / one["median"]}
        if "processing" in wanted:  # the exactly-once checkpoint's cost, same broker, same run
            report["processing"] = await bench_saga.processing(
                settings_for(bootstrap, args.partitions), int(3000 * scale), repeat)
        if "tracing" in wanted:  # the cost of spans, same broker, same run
            report["tracing"] = await bench_saga.tracing(
                settings_for(bootstrap, args.partitions), int(3000 * scale), repeat)
        if "query" in wanted:
            runs = [await bench_query.query_api(settings_for(bootstrap, args.partitions),
                                               seconds=5 * max(scale, 0.4)) for _ in range(repeat)]
            report["query"] = summarise(runs, "ratio")
        if "replay" in wanted:
            runs = [await bench_saga.replay(settings_for(bootstrap, args.partitions), int(60000 * scale))
                    for _ in range(repeat)]
            report["replay"] = summarise(runs, "replay_per_s")
        if "recovery" in wanted:
            histories = [int(n) for n in (args.recovery or ("10000" if args.quick else "100000")).split(",")]
            report["recovery"] = [await bench_saga.recovery(settings_for(bootstrap, args.partitions), n)
                                  for n in histories]
        if "burst" in wanted:
            report["burst"] = await bench_burst.burst_scenario(
                settings_for(bootstrap, args.partitions), args.burst or int(100000 * scale),
                kill=args.burst_kill)
        if args.memory:
            report["memory"] = await bench_saga.memory(settings_for(bootstrap, args.partitions), args.memory)
    finally:
        if broker:
            broker.stop()
    Path(args.output).write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    from kafka_saga.runtime import eventloop

    eventloop.tune_gc(Settings.from_env().gc_threshold)  # as `kafka-saga run` does
    sys.exit(eventloop.run(main(), os.environ.get("KAFKA_SAGA_EVENT_LOOP", "auto")))
