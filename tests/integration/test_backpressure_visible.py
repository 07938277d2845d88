"""Backpressure seen from outside: /metrics, /healthz and the Prometheus text during a burst.

The whole platform runs in-process with a small bound (``max_in_flight=20``) on the real
broker; a foreign client (kafka-python) writes a burst of orders at once, and while it drains
the three views are sampled over a real socket every ~50 ms. The bound must hold in every
sample, the pausing and the lag must show, the process must stay healthy, and at the end
every order is approved and nothing is left paused or in flight.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson

from kafka_saga.bus.follow import TopicFollower, read_topic

from ..support.burst import burst_orders, write_with_foreign_client
from ..support.platform import RunningPlatform, eventually

LIMIT = 20
ORDERS = 2000
ROLES = ("orchestrator", "inventory", "tracker", "aggregator", "dlq", "query")
# at a bound of 20 sagas in flight; under exactly-once (Apache Kafka) each saga hop waits for
# a transaction commit (about 0.3 s a saga), so 2,000 orders take about a minute there
DRAIN_TIMEOUT_S = 150.0
SAMPLE_EVERY_S = 0.05
PROM_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


def prometheus_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in an exposition text: (labels, value)."""
    out = []
    for match in PROM_SAMPLE.finditer(text):
        if match["name"] == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            out.append((labels, float(match["value"])))
    return out


@dataclass
class Ends:
    """Each order's terminal events on ``orders.events`` (an order ends exactly once)."""

    status: dict[str, list[str]] = field(default_factory=dict)
    steps: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def apply(self, record: Any) -> str | None:
        """Fold one event; the order's id when the event ends it."""
        data = orjson.loads(record.value)
        kind, step, order_id = data["type"], data["step"], data["snapshot"]["order_id"]
        self.steps[(order_id, kind, step)] += 1
        if kind == "OrderApproved" and step == "Finalize":
            self.status.setdefault(order_id, []).append("approved")
        elif kind in ("OrderRejected", "OrderFailed"):
            self.status.setdefault(order_id, []).append(kind[5:].lower())
        else:
            return None
        return order_id

    def outcomes(self, ids: set[str]) -> Counter[str]:
        return Counter("+".join(self.status.get(o, ["pending"])) for o in ids)


@dataclass
class Samples:
    """Everything seen by the sampler while the burst drained."""

    count: int = 0
    max_in_flight: int = 0  # max of /metrics backpressure.orchestrator.in_flight
    max_health_in_flight: int = 0  # max of /healthz ... backpressure.in_flight
    max_prom_in_flight: float = 0.0
    max_peak: int = 0  # /healthz backpressure.peak
    limits: set[int] = field(default_factory=set)
    paused_seen: list[list[str]] = field(default_factory=list)
    health_paused_seen: int = 0
    max_orchestrator_lag: int = 0
    prom_limit_line: bool = False
    prom_paused_one: int = 0
    prom_lag_positive: int = 0
    health_problems: list[Any] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)  # a view without the orchestrator's entry
    over_limit: list[Any] = field(default_factory=list)


async def sample_once(session: aiohttp.ClientSession, url: str, seen: Samples) -> None:
    async with session.get(url + "/metrics", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        metrics = await resp.json()
    async with session.get(url + "/healthz") as resp:
        status = resp.status
        health = await resp.json()
    async with session.get(url + "/metrics", params={"format": "prometheus"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        prom = await resp.text()
    seen.count += 1

    seen.max_orchestrator_lag = max(seen.max_orchestrator_lag, metrics["lag"].get("orchestrator", 0))
    bp = metrics.get("backpressure", {}).get("orchestrator")
    if bp is None:
        seen.missing.append(("/metrics", metrics.get("backpressure"), metrics.get("roles")))
    else:
        seen.limits.add(bp["limit"])
        seen.max_in_flight = max(seen.max_in_flight, bp["in_flight"])
        if bp["in_flight"] > bp["limit"]:
            seen.over_limit.append(("metrics", bp))
        if bp["paused"]:
            seen.paused_seen.append(bp["paused"])

    states = {name: (role["state"], role["restarts"]) for name, role in health["roles"].items()}
    if status != 200 or health["status"] != "ok" or {s for s, _ in states.values()} != {"running"} \
            or any(n for _, n in states.values()):
        seen.health_problems.append((status, health["status"], states))
    hbp = health["roles"].get("orchestrator", {}).get("backpressure")
    if hbp is None:
        seen.missing.append(("/healthz", health["roles"].get("orchestrator")))
    else:
        seen.max_health_in_flight = max(seen.max_health_in_flight, hbp["in_flight"])
        seen.max_peak = max(seen.max_peak, hbp["peak"])
        if hbp["in_flight"] > hbp["limit"] or hbp["peak"] > hbp["limit"]:
            seen.over_limit.append(("healthz", hbp))
        if hbp["paused"]:
            seen.health_paused_seen += 1

    seen.prom_limit_line |= 'kafka_saga_in_flight_limit{role="orchestrator"} 20.0' in prom
    for labels, value in prometheus_samples(prom, "kafka_saga_in_flight"):
        if labels.get("role") == "orchestrator":
            seen.max_prom_in_flight = max(seen.max_prom_in_flight, value)
            if value > LIMIT:
                seen.over_limit.append(("prometheus", value))
    if any(v == 1.0 and labels.get("role") == "orchestrator"
           for labels, v in prometheus_samples(prom, "kafka_saga_partition_paused")):
        seen.prom_paused_one += 1
    if any(v > 0 and labels.get("role") == "orchestrator"
           for labels, v in prometheus_samples(prom, "kafka_saga_consumer_lag")):
        seen.prom_lag_positive += 1


async def test_backpressure_is_visible_and_the_bound_holds_during_a_burst(settings, bus):
    running = RunningPlatform(replace(settings, max_in_flight=LIMIT))
    try:
        await running.start(*ROLES)
        url = running.url
        batch = burst_orders(ORDERS, tag="bp")
        ids = {c.snapshot.order_id for c in batch}
        seen = Samples()
        outcomes = Ends()
        done = asyncio.Event()

        async def sampler() -> None:
            async with aiohttp.ClientSession() as session:
                while not done.is_set():
                    await sample_once(session, url, seen)
                    await asyncio.sleep(SAMPLE_EVERY_S)

        async def watch() -> None:
            # follow orders.events until every order of the burst has ended
            stop, ended, waiting = asyncio.Event(), asyncio.Event(), set(ids)

            def apply(record: Any) -> None:
                order_id = outcomes.apply(record)
                if order_id in waiting:
                    waiting.discard(order_id)
                    if not waiting:
                        ended.set()

            follower = TopicFollower(bus, bus.topics.events, apply, "bp watch")
            task = asyncio.create_task(follower.run(stop))
            try:
                await ended.wait()
            finally:
                stop.set()
                await task

        # the orchestrator's consumer is up (its bound is published) before the burst starts
        async def published() -> bool:
            _, metrics = await running.get("/metrics")
            _, health = await running.get("/healthz")
            return ("orchestrator" in metrics["backpressure"]
                    and "backpressure" in health["roles"]["orchestrator"])

        await eventually(published, timeout=30, what="the orchestrator's backpressure published")

        started = time.perf_counter()
        sampling = asyncio.create_task(sampler())
        watching = asyncio.create_task(watch())
        write_s = await asyncio.to_thread(write_with_foreign_client, bus.bootstrap,
                                          bus.topics.commands, batch)
        try:
            await asyncio.wait_for(asyncio.shield(watching), DRAIN_TIMEOUT_S)
        except TimeoutError:
            ended = len(ids & outcomes.status.keys())
            raise AssertionError(f"only {ended}/{ORDERS} orders ended within {DRAIN_TIMEOUT_S}s; "
                                 f"samples: {seen}") from None
        finally:
            done.set()
            await sampling
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        drain_s = time.perf_counter() - started
        print(f"\n{ORDERS} orders at max_in_flight={LIMIT}: written in {write_s:.2f}s, drained in "
              f"{drain_s:.2f}s; {seen.count} samples, max in flight {seen.max_in_flight} "
              f"(healthz {seen.max_health_in_flight}, peak {seen.max_peak}), max orchestrator lag "
              f"{seen.max_orchestrator_lag}, paused in {len(seen.paused_seen)} samples")

        # Every expectation is checked and every violation reported together: one burst run
        # shows all that is wrong (the messages name the view and the values read from it).
        problems: list[str] = []

        def expect(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        # the bound: exact, in every view
        expect(seen.count >= 20, f"only {seen.count} samples while the burst drained")
        expect(seen.limits == {LIMIT}, f"/metrics limit read {seen.limits}, expected {LIMIT}")
        expect(seen.over_limit == [] and seen.max_peak <= LIMIT,
               f"in_flight above the bound {LIMIT}: {len(seen.over_limit)} readings over it; max "
               f"seen /metrics {seen.max_in_flight}, /healthz {seen.max_health_in_flight} (peak "
               f"{seen.max_peak}), Prometheus {seen.max_prom_in_flight}; first: {seen.over_limit[:3]}")
        # it did bite, and it shows
        expect(seen.max_in_flight > 0 and seen.max_health_in_flight > 0,
               f"in_flight never above 0 (/metrics {seen.max_in_flight}, "
               f"/healthz {seen.max_health_in_flight})")
        expect(bool(seen.paused_seen), "no /metrics sample showed a paused partition")
        expect(all(re.fullmatch(re.escape(bus.topics.commands) + r":\d+", p)
                   for ps in seen.paused_seen for p in ps),
               f"paused entries that are not {bus.topics.commands}:N: {seen.paused_seen[:3]}")
        expect(seen.health_paused_seen > 0, "no /healthz sample showed a paused partition")
        expect(seen.max_orchestrator_lag > 0, "/metrics lag.orchestrator never above 0")
        expect(seen.prom_limit_line,
               'no exposition carried kafka_saga_in_flight_limit{role="orchestrator"} 20.0')
        expect(seen.prom_paused_one > 0, "no exposition had a kafka_saga_partition_paused sample of 1")
        expect(seen.prom_lag_positive > 0, "no exposition had an orchestrator consumer lag above 0")
        # healthy all along: never 503, never stalled, never restarted, always reporting
        expect(seen.health_problems == [],
               f"/healthz not 200/ok/running/0 restarts in {len(seen.health_problems)} samples: "
               f"{seen.health_problems[:3]}")
        expect(seen.missing == [], f"the orchestrator missing from a view in "
               f"{len(seen.missing)} samples: {seen.missing[:3]}")

        # every order approved, exactly once, no saga step written twice (read from the start)
        final = Ends()
        await read_topic(bus, bus.topics.events, lambda record: final.apply(record) and None, 30)
        expect(final.outcomes(ids) == {"approved": ORDERS},
               f"outcomes on orders.events: {dict(final.outcomes(ids))}")
        doubled = [k for k, n in final.steps.items() if n > 1]
        expect(doubled == [], f"{len(doubled)} saga steps written twice: {doubled[:3]}")

        # and at the end: nothing paused, nothing in flight, in every view
        async def at_rest() -> dict[str, Any]:
            _, metrics = await running.get("/metrics")
            code, health = await running.get("/healthz")
            _, prom = await running.get("/metrics?format=prometheus")
            in_flight = [v for labels, v in prometheus_samples(prom, "kafka_saga_in_flight")
                         if labels.get("role") == "orchestrator"]
            paused = [labels for labels, v in prometheus_samples(prom, "kafka_saga_partition_paused")
                      if v]
            return {"/metrics": metrics["backpressure"].get("orchestrator"),
                    "/healthz": (code, health["roles"]["orchestrator"].get("backpressure")),
                    "prometheus": (in_flight, paused), "stalls": metrics["stalls"],
                    "dlq": metrics["dlq"], "restarts": health["roles"]["orchestrator"]["restarts"]}

        def resting(view: dict[str, Any]) -> bool:
            code, hbp = view["/healthz"]
            return (view["/metrics"] is not None and view["/metrics"]["in_flight"] == 0
                    and view["/metrics"]["paused"] == [] and code == 200 and hbp is not None
                    and hbp["in_flight"] == 0 and hbp["paused"] == []
                    and view["prometheus"] == ([0.0], []))

        deadline = time.monotonic() + 10
        view = await at_rest()
        while not resting(view) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            view = await at_rest()
        expect(resting(view), f"10 s after every order ended, not at rest "
               f"(in_flight 0, nothing paused, in every view): {view}")
        expect(view["stalls"] == 0 and view["dlq"] == 0 and view["restarts"] == 0,
               f"stalls {view['stalls']}, dead letters {view['dlq']}, restarts {view['restarts']}")

        assert not problems, "the platform misbehaved under backpressure:\n- " + "\n- ".join(problems)
    finally:
        await running.stop()
