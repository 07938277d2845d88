"""Submitting orders: the CLI (submit, cancel) and the demo generator, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys

from kafka_saga.core.catalog import Catalog
from kafka_saga.roles.demo import demo_order

from ..support.platform import eventually
from .test_saga import events_by_order, is_terminal, trail

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix,
           "LOG_LEVEL": "error"}
    return subprocess.run([sys.executable, "-m", "kafka_saga", *args, "--bootstrap-servers",
                           settings.bootstrap_servers], env=env, capture_output=True, text=True,
                          timeout=120)


async def test_submit_then_cancel_from_the_cli(platform, settings, bus):
    await platform.start("orchestrator", "inventory")
    proc = await asyncio.to_thread(cli, settings, "submit", "--user", "client07", "--item",
                                   "cappuccino", "--quantity", "2", "--attr", "note=cli")
    assert proc.returncode == 0, proc.stderr
    ids = json.loads(proc.stdout)
    assert set(ids) == {"order_id", "saga_id", "command_id"}

    async def terminal():
        events = (await events_by_order(bus)).get(ids["order_id"], [])
        return events if is_terminal(events) else None

    events = await eventually(terminal, timeout=60, what="submitted order approved")
    assert trail(events)[-1] == "OrderApproved:Finalize"
    assert events[0].snapshot.price_cents == 2 * Catalog().unit_price("cappuccino")
    assert events[0].snapshot.attributes == {"note": "cli"}
    assert events[0].saga_id == ids["saga_id"]

    proc = await asyncio.to_thread(cli, settings, "cancel", ids["order_id"], "--reason", "changed_mind")
    assert proc.returncode == 0, proc.stderr

    async def rejected():
        events = (await events_by_order(bus))[ids["order_id"]]
        return events if events[-1].type.value == "OrderRejected" else None

    events = await eventually(rejected, timeout=60, what="cancelled order rejected")
    assert events[-1].error_message == "changed_mind"


async def test_submit_rejects_bad_input_and_cancel_unknown_order(settings, bus):
    proc = await asyncio.to_thread(cli, settings, "submit", "--user", "u", "--item", "latte",
                                   "--quantity", "0")
    assert proc.returncode == 2 and "quantity" in proc.stderr
    proc = await asyncio.to_thread(cli, settings, "submit", "--user", "u", "--item", "latte",
                                   "--attr", "novalue")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr
    proc = await asyncio.to_thread(cli, settings, "cancel", "no-such-order")
    assert proc.returncode == 1 and "no saga found" in proc.stderr


def test_demo_orders_are_deterministic_and_cover_the_saga_paths():
    catalog = Catalog()
    first = [demo_order(i, catalog, random.Random(7)) for i in range(3)]
    again = [demo_order(i, catalog, random.Random(7)) for i in range(3)]
    assert [c.snapshot.item for c in first] == [c.snapshot.item for c in again]
    rng = random.Random(1)
    orders = [demo_order(i, catalog, rng) for i in range(2000)]
    assert {o.snapshot.user for o in orders} == {f"client{i:02d}" for i in range(1, 11)}
    attrs = [o.snapshot.attributes for o in orders]
    assert any(a.get("payment") == "decline" for a in attrs)
    assert any("payment_errors" in a for a in attrs)
    assert any(not o.snapshot.inventory_available for o in orders)
    assert any(o.snapshot.price_cents != catalog.price(o.snapshot.item, o.snapshot.quantity)
               for o in orders)
    assert [o.snapshot.sequence for o in orders[:3]] == [0, 1, 2]


async def test_demo_generator_feeds_the_saga(platform, settings, bus):
    from dataclasses import replace

    from kafka_saga.config import RoleOptions

    platform.settings = replace(settings, roles={**settings.roles, "demo": RoleOptions(
        extra={"rate": 50, "count": 20})})
    await platform.start("demo", "orchestrator", "inventory")

    async def all_terminal():
        found = await events_by_order(bus)
        done = [o for o, events in found.items() if is_terminal(events)]
        return len(done) >= 20

    await eventually(all_terminal, timeout=90, interval=0.5, what="20 demo orders terminal")
    assert platform.platform.supervisor.health()["roles"]["demo"]["sent"] == 20
