"""The watchdog: a consumer frozen while records wait is reported stalled and restarted; an idle
or slow-but-progressing one never is. The stall rule and the bookkeeping as unit tests too."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, ClassVar

import aiohttp
import pytest
from structlog.testing import capture_logs

from kafka_saga.bus.client import Bus
from kafka_saga.bus.loop import Subscription, consume_workers
from kafka_saga.bus.ports import free_port
from kafka_saga.config import RoleOptions, Settings
from kafka_saga.observation.metrics import Metrics
from kafka_saga.observation.progress import Progress, is_stalled
from kafka_saga.roles.base import Role, RoleContext
from kafka_saga.runtime.supervisor import Supervisor
from kafka_saga.runtime.watchdog import Watchdog

from ..support.orders import produce
from ..support.platform import eventually

pytestmark = pytest.mark.chaos
THRESHOLD_S = 3.0
INTERVAL_S = 0.5
FREEZE = b"freeze"


# --- the rule and the bookkeeping, without a broker --------------------------------------

def test_stall_rule():
    assert is_stalled({"t:0": 3}, False, last_progress=0.0, now=3.1, threshold_s=3.0)
    assert is_stalled({}, True, last_progress=0.0, now=3.1, threshold_s=3.0)  # batch in flight
    assert not is_stalled({"t:0": 3}, True, last_progress=0.0, now=2.9, threshold_s=3.0)
    assert not is_stalled({}, False, last_progress=0.0, now=999.0, threshold_s=3.0)  # idle
    assert not is_stalled({"t:0": 0, "t:1": 0}, False, last_progress=0.0, now=999.0,
                          threshold_s=3.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_reports_once_restarts_and_clears_on_progress():
    clock, metrics, reported = FakeClock(), Metrics(), []
    watchdog = Watchdog(3.0, 0.5, reported.append, metrics, clock)
    frozen = Progress("stage", "group-a", 0, clock)
    idle = Progress("stage", "group-a", 1, clock)
    frozen.role = idle.role = "r"
    watchdog.register(frozen)
    watchdog.register(idle)
    idle.observe({"t:1": 0})
    frozen.begin({"t:0": 5})
    clock.now += 2.0
    frozen.tick()  # a slow handler got through one record: the clock starts again
    clock.now += 2.5
    assert watchdog.check() == []
    clock.now += 1.0
    [stall] = watchdog.check()
    assert reported == [stall] and stall.role == "r" and stall.partitions == {"t:0": 5}
    assert stall.consumers[0]["worker"] == 0 and stall.consumers[0]["group"] == "group-a"
    assert metrics.snapshot()["stalled"] == ["r"] and metrics.snapshot()["stalls"] == 1
    clock.now += 10
    assert watchdog.check() == []  # reported once while its restart is pending
    assert watchdog.health("r")["stall"]["partitions"] == {"t:0": 5}

    watchdog.restarted("r")  # the supervisor started a new instance
    clock.now += 0.1
    fresh = Progress("stage", "group-a", 0, clock)
    fresh.role = "r"
    watchdog.register(fresh)
    watchdog.check()
    assert "r" in watchdog.stalled  # still flagged: the new instance did nothing yet
    fresh.observe({"t:0": 0})
    watchdog.check()
    assert watchdog.stalled == {} and metrics.snapshot()["stalled"] == []
    assert watchdog.health("r") == {"stalls": 1}


def test_idle_and_progressing_loops_are_never_stalled():
    clock = FakeClock()
    watchdog = Watchdog(3.0, 0.5, clock=clock)
    idle, slow = Progress("a", "g", 0, clock), Progress("b", "g", 0, clock)
    for progress in (idle, slow):
        watchdog.register(progress)
    idle.observe({})
    slow.begin({"t:0": 100})
    for _ in range(100):  # 200 s of a handler taking 2 s per record
        clock.now += 2.0
        slow.tick()
        assert watchdog.check() == []
    slow.settle("t:0", 0)
    slow.end()
    clock.now += 3600
    assert watchdog.check() == []


# --- the supervisor's restart path, without a broker --------------------------------------

class Stubborn(Role):
    """A consumer-like role frozen with work waiting, that swallows cancellation once."""

    name = "stubborn"
    starts = 0
    release: ClassVar[asyncio.Event | None] = None

    async def run(self, stop: asyncio.Event) -> None:
        type(self).starts += 1
        progress = Progress("stubborn", "g", 0)
        progress.attach()
        if type(self).starts == 1:
            progress.begin({"t:0": 1})
            release = type(self).release
            assert release is not None
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # frozen code that ignores cancellation
            return
        progress.observe({"t:0": 0})
        await stop.wait()


async def test_supervisor_abandons_a_role_that_ignores_cancellation_and_restarts_it():
    Stubborn.starts, Stubborn.release = 0, asyncio.Event()
    settings = Settings.from_env({})
    bus = Bus(replace(settings, bootstrap_servers="127.0.0.1:1"))
    supervisor = Supervisor(lambda _n: RoleContext(bus, settings, RoleOptions(), {}), ["stubborn"],
                            roles={"stubborn": Stubborn}, first_backoff_s=0.05,
                            stall_threshold_s=0.3, watchdog_interval_s=0.05,
                            stall_cancel_timeout_s=0.1)
    with capture_logs() as entries:
        task = asyncio.create_task(supervisor.run())
        await eventually(lambda: supervisor.restarts["stubborn"] == 1, timeout=10, what="restart")
    try:
        assert len(supervisor._abandoned) == 1  # noqa: SLF001
        abandoned = [e for e in entries if e["event"].startswith("role ignores cancellation")]
        # the log line says where the role is stuck: its await chain down to the frozen wait
        chain = abandoned[0]["stuck_at"]["role:stubborn:run"]
        assert chain[0].startswith("test_watchdog.py:") and chain[0].endswith(" run"), chain
        assert any(frame.endswith(" wait") for frame in chain[1:]), chain
        await eventually(lambda: supervisor.health()["healthy"], timeout=10, what="healthy again")
        assert Stubborn.starts == 2 and supervisor.watchdog.stalls == {"stubborn": 1}
        assert bus.metrics.snapshot()["role_restarts"] == 1
    finally:
        Stubborn.release.set()
        supervisor.request_stop()
        assert await asyncio.wait_for(task, 10) == 0


# --- on the real broker --------------------------------------------------------------------

def _raw(value: bytes | None) -> bytes | None:
    return value


class Consuming(Role):
    """A test role on the shared consume loop (``orders.events`` of the test's prefix)."""

    name = "consuming"
    seen: ClassVar[set[bytes]] = set()
    delay_s = 0.0

    async def handle(self, value: Any, record: Any) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        type(self).seen.add(value)

    async def run(self, stop: asyncio.Event) -> None:
        topics = self.ctx.bus.topics
        sub = Subscription(self.name, (topics.events,), topics.group(self.name), _raw, self.handle)
        await consume_workers(self.ctx.bus, sub, stop, 1)


class Freezer(Consuming):
    """Freezes on the record ``freeze`` (awaits an event that never fires), the first time only."""

    name = "freezer"
    seen: ClassVar[set[bytes]] = set()
    froze: ClassVar[dict[str, Any]] = {}

    async def handle(self, value: Any, record: Any) -> None:
        if value == FREEZE and not self.froze:
            self.froze.update(at=time.monotonic(), partition=f"{record.topic}:{record.partition}")
            await asyncio.Event().wait()
        await super().handle(value, record)


class Sloth(Consuming):
    name = "sloth"
    seen: ClassVar[set[bytes]] = set()
    delay_s = 0.4  # a batch takes 4 s, more than the threshold: progress per record counts


def _supervise(bus: Bus, settings: Settings, role: type[Role], port: int | None = None
               ) -> Supervisor:
    options = RoleOptions(metrics_port=port)
    return Supervisor(lambda _n: RoleContext(bus, settings, options, {}), [role.name],
                      roles={role.name: role}, first_backoff_s=0.5)


async def _healthz(port: int) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/healthz") as reply:
        return reply.status, await reply.json()


async def _produce(settings: Settings, bus: Bus, values: list[bytes]) -> None:
    records = [(f"k{i}".encode(), v) for i, v in enumerate(values)]
    await asyncio.to_thread(produce, settings.bootstrap_servers, bus.topics.events, records)


async def test_frozen_handler_is_reported_stalled_and_the_role_restarted(settings, bus):
    settings = replace(settings, stall_threshold_s=THRESHOLD_S, watchdog_interval_s=INTERVAL_S)
    Freezer.seen.clear()
    Freezer.froze.clear()
    port = free_port()
    supervisor = _supervise(bus, settings, Freezer, port)
    values = [f"r{i}".encode() for i in range(30)] + [FREEZE]
    with capture_logs() as entries:
        task = asyncio.create_task(supervisor.run())
        try:
            await _produce(settings, bus, values)
            await eventually(lambda: Freezer.froze, timeout=60, what="the handler to freeze")
            health = await eventually(
                lambda: (h := supervisor.health())["roles"]["freezer"]["state"] == "stalled" and h,
                timeout=THRESHOLD_S + 10, interval=0.05, what="stalled in health")
            detected_after = time.monotonic() - Freezer.froze["at"]
            assert THRESHOLD_S - 0.1 <= detected_after <= THRESHOLD_S + 2 * INTERVAL_S + 1.0
            assert health["healthy"] is False
            role = health["roles"]["freezer"]
            assert role["healthy"] is False and role["stalls"] == 1
            assert role["stall"]["partitions"][Freezer.froze["partition"]] >= 1
            snapshot = bus.metrics.snapshot()
            assert snapshot["stalled"] == ["freezer"] and snapshot["stalls"] == 1
            assert b'kafka_saga_stalled{role="freezer"} 1.0' in bus.metrics.prometheus()
            status, body = await _healthz(port)  # the role's metrics server
            assert status == 503 and body["state"] == "stalled" and body["status"] == "unhealthy"

            # restarted through the usual path; the frozen record is re-delivered, once
            await eventually(lambda: Freezer.seen == set(values), timeout=60,
                             what="every record after the restart")
            assert supervisor.restarts["freezer"] == 1
            await eventually(lambda: supervisor.health()["healthy"], timeout=10,
                             what="healthy again")
            assert supervisor.health()["roles"]["freezer"]["state"] == "running"
            status, body = await _healthz(port)
            assert status == 200 and body["state"] == "running" and body["stalls"] == 1
            assert bus.metrics.snapshot()["stalled"] == []
            assert b'kafka_saga_stalled{role="freezer"} 0.0' in bus.metrics.prometheus()
        finally:
            supervisor.request_stop()
            assert await asyncio.wait_for(task, 30) == 0
    stalled = [e for e in entries if e["event"].startswith("consumer stalled")]
    assert len(stalled) == 1, stalled
    line = stalled[0]
    assert line["log_level"] == "error" and line["role"] == "freezer" and line["worker"] == 0
    assert line["group"] == bus.topics.group("freezer")
    assert line["partitions"][Freezer.froze["partition"]] >= 1
    assert any(e["event"] == "role stalled" and e["role"] == "freezer" for e in entries)


async def test_idle_and_slow_consumers_are_never_stalled(settings, bus):
    threshold = 1.5
    settings = replace(settings, stall_threshold_s=threshold, watchdog_interval_s=0.2)
    Sloth.seen.clear()
    supervisor = _supervise(bus, settings, Sloth)
    task = asyncio.create_task(supervisor.run())
    states: list[str] = []

    async def watch(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            states.append(supervisor.health()["roles"]["sloth"]["state"])
            await asyncio.sleep(0.1)

    try:
        await eventually(lambda: supervisor.watchdog.loops.get("sloth"), timeout=30,
                         what="the consumer to report to the watchdog")
        await watch(2 * threshold)  # idle: nothing on the topic
        values = [f"s{i}".encode() for i in range(10)]
        await _produce(settings, bus, values)
        started = time.monotonic()
        await eventually(lambda: Sloth.seen == set(values), timeout=60, what="the slow batch")
        assert time.monotonic() - started > threshold  # it was slow indeed
        await watch(2 * threshold)  # idle again, caught up
    finally:
        supervisor.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert set(states) == {"running"}
    assert supervisor.watchdog.stalls == {} and supervisor.restarts["sloth"] == 0
    assert bus.metrics.snapshot()["stalls"] == 0
