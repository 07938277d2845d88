"""Admission at the edge (KAFKA_SAGA_MAX_BACKLOG): POST /orders over a real socket and broker."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import jsonschema
from aiohttp import web
from structlog.testing import capture_logs

from kafka_saga.api import admission
from kafka_saga.bus.client import Bus
from kafka_saga.bus.embedded import EmbeddedBroker
from kafka_saga.core.contracts import Command, CommandType, Snapshot, new_id

from ..support.platform import RunningPlatform, eventually

ORDER = {"user": "alice", "item": "espresso", "quantity": 1}


async def post_order(platform: RunningPlatform, body: dict[str, Any] = ORDER
                     ) -> tuple[int, Any, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            platform.url + "/orders", json=body) as resp:
        assert resp.content_type == "application/json", await resp.text()
        return resp.status, resp.headers, await resp.json()


async def write_commands(bus: Bus, count: int) -> None:
    """``count`` OrderCreate commands on orders.commands, as a client would send them."""
    for _ in range(count):
        snap = Snapshot(order_id="o-" + new_id()[:12], user="client01", item="espresso",
                        quantity=1, price_cents=500)
        command = Command(new_id(), new_id(), CommandType.ORDER_CREATE, snap)
        await bus.producer.send(bus.topics.commands, command.encode(), command.key)
    await bus.producer.flush()


async def commands_end(bus: Bus) -> int:
    return sum((await bus.end_offsets(bus.topics.commands)).values())


def monitor(platform: RunningPlatform) -> admission.Backlog | None:
    app = platform.platform.supervisor.current["query"].server.app
    return app.get(admission.BACKLOG)


async def test_without_a_limit_orders_are_accepted_whatever_the_backlog(platform, bus, settings):
    assert settings.max_backlog == 0  # KAFKA_SAGA_MAX_BACKLOG unset
    await write_commands(bus, 300)
    probe = admission.Backlog(bus, 1)
    try:
        assert await probe.measure() == (300, 0)  # no orchestrator, nothing committed: all wait
    finally:
        await probe.close()
    await platform.start("query")
    assert monitor(platform) is None  # nothing measures when the setting is 0
    for _ in range(3):
        status, _, body = await post_order(platform)
        assert status == 202, body
    assert await commands_end(bus) == 303


async def test_above_the_limit_orders_get_503_until_the_backlog_drains(bus, settings):
    limited = replace(settings, max_backlog=50)
    await write_commands(bus, 80)  # no orchestrator runs: every command waits
    query, orchestrator = RunningPlatform(limited), RunningPlatform(limited)
    try:
        await query.start("query")
        backlog = monitor(query)
        assert backlog is not None
        await eventually(lambda: backlog.value is not None, what="a backlog measurement")

        before = await commands_end(bus)
        status, headers, body = await post_order(query)
        assert status == 503, body
        assert await commands_end(bus) == before  # refused: nothing was written
        retry = headers["Retry-After"]
        assert retry.isdigit() and 1 <= int(retry) <= 60
        assert body["reason"] == "backlog" and body["status"] == 503
        assert body["backlog"] >= 80 and body["max_backlog"] == 50
        assert body["retry_after_s"] == int(retry)
        assert "waiting" in body["error"] and "retry" in body["error"]

        async with aiohttp.ClientSession() as session, session.get(query.url + "/openapi.json") as resp:
            doc = await resp.json()
        response = doc["paths"]["/orders"]["post"]["responses"]["503"]
        assert response["headers"]["Retry-After"]["schema"]["type"] == "integer"
        validator = jsonschema.Draft202012Validator(
            {**response["content"]["application/json"]["schema"], "components": doc["components"]})
        validator.validate(body)  # exactly one branch of oneOf: Overloaded
        validator.validate({"error": "the broker could not take the command; retry later",
                            "status": 503, "order_id": "o-1", "command_id": "c-1"})  # Error
        assert not validator.is_valid({"error": "x", "status": 503, "reason": "backlog"})

        status, _, body = await post_order(query, {**ORDER, "quantity": 0})
        assert status == 400, body  # an invalid request is still told so

        await orchestrator.start("orchestrator", "inventory")
        await eventually(lambda: (backlog.rate or 0) > 0, timeout=60, what="a drain rate")
        await eventually(lambda: backlog.value is not None and backlog.value <= 50, timeout=60,
                         what="the backlog drained")
        status, headers, body = await post_order(query)
        assert status == 202, body
        assert "Retry-After" not in headers
        assert await commands_end(bus) == before + 1
    finally:
        await orchestrator.stop()
        await query.stop()


async def test_an_unreachable_broker_keeps_the_last_value_then_admits(settings):
    broker = EmbeddedBroker()
    await broker.start()
    own = replace(settings, bootstrap_servers=broker.bootstrap)
    bus = Bus(own)
    try:
        await bus.ensure_topics()
        await bus.start()
        await write_commands(bus, 60)
        backlog = admission.Backlog(bus, 50, interval_s=0.2, stale_s=6.0)
        app = web.Application()
        app.cleanup_ctx.append(backlog.running)
        runner = web.AppRunner(app)
        await runner.setup()  # starts the measuring task
        try:
            await eventually(lambda: backlog.value == 60, what="the backlog measured")
            assert backlog.refusal() is not None and backlog.refusal().status == 503
            with capture_logs() as entries:
                await bus.stop()
                assert broker.process is not None
                broker.process.kill()  # a crash (stop() would block this loop for seconds)
                await asyncio.to_thread(broker.process.wait)
                await eventually(lambda: any(e["event"].startswith("backlog not measurable")
                                             for e in entries), what="the warning")
                assert backlog.value == 60  # the last known value is kept for a while
                await eventually(lambda: backlog.value is None, timeout=10, what="unknown")
            assert backlog.refusal() is None  # unknown admits
            warnings = [e for e in entries if e["event"].startswith("backlog not measurable")]
            assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"
        finally:
            await runner.cleanup()
    finally:
        await bus.stop()
        broker.stop()
