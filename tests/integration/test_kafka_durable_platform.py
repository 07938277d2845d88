"""`KAFKA_SAGA_ENGINE=kafka kafka-saga run`: the platform on its own durable Kafka node.

Orders go through the real runtime (every role but demo) on the single Apache Kafka node it
starts from its jars; SIGTERM stops the runtime and its node; a second runtime on the same
data directory serves the same orders and aggregates, and carries on from there: new orders
finish, the aggregates grow by exactly them, and the inventory remembers the stock sold
before the restart. Skipped (failed with ``KAFKA_SAGA_REQUIRE_KAFKA=1``) without Java or jars.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kafka_saga.bus.kafka_jars import LaunchError, java_binary, libs_dir
from kafka_saga.bus.ports import free_port_block as port_block
from kafka_saga.config import Settings
from kafka_saga.core.catalog import Catalog

from ..support.engines import kafka_unavailable
from ..support.platform import eventually
from ..support.processes import json_log_lines, pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CLI = str(Path(sys.executable).parent / "kafka-saga")
ROLES = "aggregator,tracker,inventory,orchestrator,dlq,query"  # all but demo
START_S = 300.0  # a JVM and five roles on a shared, busy machine
TERMINAL = ("approved", "rejected", "failed")
PRICES = {name: item.price_cents for name, item in Catalog().items.items()}
COUNTED = ("orders", "total_items", "approved", "rejected", "failed", "pending", "spent_cents")

# (user, item, quantity, attributes, expected status); limited-edition has a stock of 5
BEFORE = [
    ("alice", "espresso", 2, {}, "approved"),
    ("alice", "latte", 1, {}, "approved"),
    ("alice", "cappuccino", 1, {"payment": "decline"}, "rejected"),
    ("alice", "americano", 1, {"payment_errors": "9"}, "failed"),
    ("bob", "limited-edition", 3, {}, "approved"),
    ("bob", "croissant", 2, {"inventory": "unavailable"}, "rejected"),
    ("bob", "mocha", 4, {"payment_errors": "1"}, "approved"),
    ("carol", "flat-white", 1, {}, "approved"),
]
AFTER = [  # one at a time, in this order: the stock left after the restart is 2
    ("alice", "espresso", 1, {}, "approved"),
    ("alice", "macchiato", 2, {"payment": "decline"}, "rejected"),
    ("bob", "limited-edition", 3, {}, "rejected"),
    ("bob", "limited-edition", 2, {}, "approved"),
]


@pytest.fixture(scope="module")
def kafka() -> None:
    """Java and the jars, checked once: skipped (or failed) without them."""
    try:
        settings = Settings.from_env()
        java_binary(settings.java_home)
        libs_dir(settings.kafka_home, settings.kafka_cache)
    except LaunchError as exc:
        kafka_unavailable(str(exc))


class Runtime:
    """One `kafka-saga run` process on its own Kafka node; its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.url = f"http://127.0.0.1:{env['QUERY_API_PORT']}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([CLI, "run", "--roles", ROLES], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self, name: str) -> list[dict]:
        return [line for line in json_log_lines(str(self.log)) if line.get("event") == name]

    def running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.output()[-4000:]}")

    async def get(self, path: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ready(self) -> dict:
        async def check() -> dict | None:
            self.running()
            try:
                status, body = await self.get("/readyz")
            except aiohttp.ClientError:
                return None
            return body if status == 200 else None

        await eventually(check, timeout=START_S, interval=0.5, what="GET /readyz 200")
        [node] = self.events("using a local Apache Kafka node (durable)")
        return node

    async def submit(self, user: str, item: str, quantity: int, attributes: dict[str, str]) -> str:
        body = {"user": user, "item": item, "quantity": quantity, "attributes": attributes}
        async with aiohttp.ClientSession() as session, \
                session.post(self.url + "/orders", json=body) as resp:
            reply = await resp.json(content_type=None)
            assert resp.status == 202, (resp.status, reply)
        return reply["order_id"]

    async def order(self, order_id: str) -> dict | None:
        self.running()
        status, body = await self.get(f"/orders/{order_id}?wait=5")
        return body if status == 200 else None

    async def terminal(self, order_id: str) -> dict:
        async def check() -> dict | None:
            body = await self.order(order_id)
            return body if body and body["status"] in TERMINAL else None

        return await eventually(check, timeout=120, interval=0.2, what=f"order {order_id} terminal")

    async def aggregate(self, user: str) -> dict | None:
        self.running()
        status, body = await self.get(f"/aggregates/{user}")
        return body if status == 200 else None

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 120)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def runtimes(kafka, tmp_path):
    keep = ("KAFKA_SAGA_KAFKA_HOME", "KAFKA_SAGA_KAFKA_CACHE")
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_") or k in keep}
    env = {**base, "KAFKA_SAGA_ENGINE": "kafka", "KAFKA_SAGA_KAFKA_DATA_DIR": str(tmp_path / "kafka"),
           "KAFKA_SAGA_EMBEDDED_PORT": str(port_block(2)), "QUERY_API_PORT": str(port_block(1)),
           "KAFKA_SAGA_PARTITIONS": "3", "PAYMENT_FAILURE_RATE": "0", "PAYMENT_BACKOFF_S": "0.02",
           "LOG_FORMAT": "json", "LOG_LEVEL": "info"}
    started: list[Runtime] = []

    def start() -> Runtime:
        runtime = Runtime(env, tmp_path / f"run-{len(started)}.log")
        started.append(runtime)
        return runtime

    yield start, env
    for runtime in started:
        runtime.kill()


async def run_orders(runtime: Runtime, orders: list[tuple], one_by_one: bool) -> dict[str, dict]:
    """Submit ``orders`` (all at once, or each after the previous ended); their final views."""
    ids: list[str] = []
    for user, item, quantity, attributes, _ in orders:
        ids.append(await runtime.submit(user, item, quantity, attributes))
        if one_by_one:
            await runtime.terminal(ids[-1])
    views = {order_id: await runtime.terminal(order_id) for order_id in ids}
    got = [(views[i]["user"], views[i]["item"], views[i]["quantity"], views[i]["status"]) for i in ids]
    assert got == [(u, item, q, status) for u, item, q, _, status in orders], got
    return views


async def settled(runtime: Runtime, orders: dict[str, int], what: str) -> dict[str, dict]:
    """Every user's aggregate, once it counts ``orders[user]`` orders with none pending."""
    async def check() -> dict[str, dict] | None:
        found = {user: await runtime.aggregate(user) for user in orders}
        if all(a and a["orders"] == orders[u] and not a["pending"] for u, a in found.items()):
            return found
        return None

    return await eventually(check, timeout=60, interval=0.3, what=what)


def counted(orders: list[tuple], user: str) -> dict[str, int]:
    """What ``orders`` add to ``user``'s aggregate."""
    mine = [o for o in orders if o[0] == user]
    out = {key: 0 for key in COUNTED}
    out["orders"] = len(mine)
    out["total_items"] = sum(q for _, _, q, _, _ in mine)
    for _, item, quantity, _, status in mine:
        out[status] += 1
        if status == "approved":
            out["spent_cents"] += PRICES[item] * quantity
    return out


async def test_orders_and_aggregates_survive_a_restart_and_new_orders_carry_on(runtimes, tmp_path):
    start, env = runtimes
    users = {"alice", "bob", "carol"}

    first = start()
    node = await first.ready()
    assert node["bootstrap"] == f"127.0.0.1:{env['KAFKA_SAGA_EMBEDDED_PORT']}"
    assert Path(node["data_dir"]) == tmp_path / "kafka"
    kafka_pid = int((tmp_path / "kafka" / "node-1.pid").read_text())
    assert pid_alive(kafka_pid)

    before = await run_orders(first, BEFORE, one_by_one=False)
    aggregates = await settled(first, {u: counted(BEFORE, u)["orders"] for u in users},
                               "aggregates of the first orders")
    for user, agg in aggregates.items():
        assert {k: agg[k] for k in COUNTED} == counted(BEFORE, user), agg

    assert await first.stop() == 0, first.output()[-4000:]
    await eventually(lambda: not pid_alive(kafka_pid), timeout=10, what="the Kafka node stopped")
    assert not (tmp_path / "kafka" / "node-1.pid").exists()
    assert "Traceback" not in first.output()

    second = start()
    await second.ready()
    again = {order_id: await eventually(lambda oid=order_id: second.order(oid), timeout=60,
                                        what=f"order {order_id} served again")
             for order_id in before}
    assert again == before
    assert {o["status"] for o in again.values()} == set(TERMINAL)
    restored = await settled(second, {u: aggregates[u]["orders"] for u in users},
                             "aggregates served again")
    assert restored == aggregates

    after = await run_orders(second, AFTER, one_by_one=True)
    sold_out = list(after.values())[2]  # 3 of the 2 limited editions left before the restart
    assert (sold_out["status"], sold_out["step"]) == ("rejected", "Inventory"), sold_out
    grown = await settled(second, {u: aggregates[u]["orders"] + counted(AFTER, u)["orders"]
                                   for u in users}, "aggregates with the new orders")
    for user, agg in grown.items():
        assert {k: agg[k] - aggregates[user][k] for k in COUNTED} == counted(AFTER, user), agg
    assert grown["carol"] == aggregates["carol"]

    assert await second.stop() == 0, second.output()[-4000:]
    assert "Traceback" not in second.output()
