"""The query benchmark (used by scripts/bench.py): GET /aggregates/{user} of the query role
next to a bare aiohttp handler returning the same kind of bytes, both served by this process,
the load from another process (scripts/bench_http.py: wrk when installed)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from typing import Any

from aiohttp import web
from bench_saga import ROOT, start_platform, stop_platform

from kafka_saga.bus.ports import free_port
from kafka_saga.core.contracts import Event, EventType, Snapshot, Step, new_id
from kafka_saga.observation.http import HttpServer


async def query_api(settings: Any, users: int = 100, seconds: float = 5.0) -> dict[str, Any]:
    """GET /aggregates/{user} next to the same endpoint written bare in aiohttp (a path
    parameter, the same stored bytes, no middleware, one route), same process, same load."""
    platform, task = await start_platform(settings, ["aggregator", "query"])
    bus = platform.bus
    assert bus is not None
    events = [Event.new(EventType.ORDER_CREATED, Snapshot(new_id(), f"client{i:02d}", "latte", 1, price_cents=400),
                        Step.VALIDATION, new_id()) for i in range(users)]
    for event in events:
        await bus.producer.send(bus.topics.events, event.encode(), event.key)
    await bus.producer.flush()
    model = platform.shared["read_model"]
    while len(model.aggregates) < users:  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
    bodies = dict(model.aggregates.bodies)  # type: ignore[attr-defined]  # the same bytes

    async def bare(request: web.Request) -> web.Response:
        # the same endpoint written bare: a path parameter, the stored bytes, no middleware
        return web.Response(body=bodies[request.match_info["user"]], content_type="application/json")

    app = web.Application()
    app.router.add_get("/bare/{user}", bare)
    server = HttpServer(app, "127.0.0.1", free_port(), "bare")
    await server.start()
    query_url = f"{platform.shared['query_url']}/aggregates/client01"
    bare_url = f"http://127.0.0.1:{server.port}/bare/client01"

    async def load(urls: list[str], each_s: float) -> list[dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "scripts" / "bench_http.py"), *urls, "--seconds", str(each_s),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    await load([query_url, bare_url], 1)  # warm-up, discarded: the first seconds after start are slower
    # query, bare, bare, query: whatever drifts during the run weighs on both alike
    runs = await load([query_url, bare_url, bare_url, query_url], seconds / 2)
    query, baseline = (_merge([r for r in runs if r["url"] == url]) for url in (query_url, bare_url))
    await server.stop()
    await stop_platform(platform, task)
    return {"query": query, "bare": baseline, "ratio": query["rps"] / baseline["rps"]}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Two load runs of one URL as one: summed requests, mean rate, the worse percentiles."""
    return {**runs[0], "requests": sum(r["requests"] for r in runs),
            "rps": statistics.fmean(r["rps"] for r in runs), "p50_ms": max(r["p50_ms"] for r in runs),
            "p99_ms": max(r["p99_ms"] for r in runs), "errors": sum(r["errors"] for r in runs)}
