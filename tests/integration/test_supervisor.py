"""Supervisor: restart with backoff, crash loop exits non-zero, ordered stop. Real asyncio, no broker."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kafka_saga.bus.client import Bus
from kafka_saga.config import PartitionsDisagree, RoleOptions, Settings
from kafka_saga.roles.base import Role, RoleContext
from kafka_saga.runtime.supervisor import CRASH_LOOP_EXIT, Supervisor

EVENTS: list[str] = []


class Flaky(Role):
    """Crashes twice, then runs until asked to stop."""

    name = "aggregator"
    attempts = 0

    async def run(self, stop: asyncio.Event) -> None:
        type(self).attempts += 1
        EVENTS.append(f"start {self.name} {type(self).attempts}")
        if type(self).attempts <= 2:
            raise RuntimeError("boom")
        await stop.wait()
        EVENTS.append(f"stop {self.name}")


class AlwaysCrashes(Role):
    name = "dlq"

    async def run(self, stop: asyncio.Event) -> None:
        raise ValueError("always")


class Steady(Role):
    name = "query"

    async def run(self, stop: asyncio.Event) -> None:
        EVENTS.append("start query")
        await stop.wait()
        EVENTS.append("stop query")


def _contexts(settings: Settings):
    bus = Bus(replace(settings, bootstrap_servers="127.0.0.1:1"))
    return lambda name: RoleContext(bus, settings, RoleOptions(), {})


async def test_crashing_role_is_restarted_and_stop_runs_in_reverse_order():
    EVENTS.clear()
    Flaky.attempts = 0
    settings = Settings.from_env({})
    supervisor = Supervisor(_contexts(settings), ["query", "aggregator"], first_backoff_s=0.05,
                            roles={"aggregator": Flaky, "query": Steady})
    task = asyncio.create_task(supervisor.run())
    for _ in range(100):
        if Flaky.attempts >= 3:
            break
        await asyncio.sleep(0.05)
    assert Flaky.attempts == 3
    assert supervisor.restarts["aggregator"] == 2
    assert supervisor.health()["roles"]["aggregator"]["state"] == "running"
    supervisor.request_stop()
    assert await asyncio.wait_for(task, 5) == 0
    # started in the fixed order (aggregator before query), stopped in reverse
    assert EVENTS.index("start query") > EVENTS.index("start aggregator 1")
    assert EVENTS.index("stop query") < EVENTS.index("stop aggregator")


async def test_crash_loop_stops_the_process_with_non_zero_exit():
    settings = Settings.from_env({})
    supervisor = Supervisor(_contexts(settings), ["dlq", "query"], restart_max=3,
                            restart_window_s=30, first_backoff_s=0.01,
                            roles={"dlq": AlwaysCrashes, "query": Steady})
    code = await asyncio.wait_for(supervisor.run(), 10)
    assert code == CRASH_LOOP_EXIT
    assert supervisor.restarts["dlq"] == 3
    assert supervisor.health()["roles"]["query"]["state"] == "stopped"


class Misconfigured(Role):
    name = "orchestrator"
    attempts = 0

    async def run(self, stop: asyncio.Event) -> None:
        type(self).attempts += 1
        raise PartitionsDisagree("orders.replies has 4 partitions, orders.commands has 3")


async def test_a_misconfigured_role_stops_the_process_at_once_with_its_kinds_exit_code():
    Misconfigured.attempts = 0
    settings = Settings.from_env({})
    supervisor = Supervisor(_contexts(settings), ["orchestrator", "query"], first_backoff_s=0.01,
                            roles={"orchestrator": Misconfigured, "query": Steady})
    code = await asyncio.wait_for(supervisor.run(), 10)
    assert code == PartitionsDisagree.exit_code == 8
    assert str(supervisor.config_error) == "orders.replies has 4 partitions, orders.commands has 3"
    assert Misconfigured.attempts == 1 and supervisor.restarts["orchestrator"] == 0
