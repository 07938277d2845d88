"""A zombie orchestrator: frozen past its session while orders flow, then thawed.

Two orchestrator processes share the commands. One is frozen (SIGSTOP: a long pause, a
stalled VM) for longer than its session time-out while orders whose payment takes a while
keep coming, so it holds sagas in flight when it freezes. Its partitions move to the other
process, which restores their sagas and carries them on. Then it is thawed (SIGCONT) and
must not carry on with the sagas it had in hand: its fence holds every side effect until the
group says what it owns. Every order reaches exactly one terminal state, no saga transition
(a payment above all) is written twice. Runs on every engine (``-m broker``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from dataclasses import replace

import pytest

from kafka_saga.bus.client import Bus
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.submission import new_order_command

from ..support.burst import ITEMS, TERMINAL, Watch, spawn_runtime, write_with_foreign_client
from ..support.foreign import owned_partitions
from ..support.platform import eventually
from ..support.processes import json_log_lines

pytestmark = [pytest.mark.chaos, pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
ORDERS = int(os.environ.get("ZOMBIE_ORDERS", "1200"))
PARTITIONS = 6
FREEZE_S = 25.0  # over four session time-outs (6 s)


def _orders(count: int, tag: str) -> list:
    catalog = Catalog()
    return [new_order_command(f"{tag}user{i % 40:02d}", ITEMS[i % len(ITEMS)], 1, catalog,
                              attributes={"payment_delay_ms": "400"}) for i in range(count)]


def _terminals(watch: Watch, order_id: str) -> int:
    return sum(n for (o, kind, step), n in watch.outcomes.transitions.items()
               if o == order_id and (kind in TERMINAL or (kind, step) == ("OrderApproved", "Finalize")))


def _fence_events(path: str) -> list[str]:
    return [str(line["event"]) for line in json_log_lines(path)
            if str(line.get("event", "")).startswith(("membership", "this process was paused",
                                                      "fence cleared"))]


async def _write_steadily(bus: Bus, commands: list, per_second: float) -> None:
    step = 20
    for first in range(0, len(commands), step):
        await asyncio.to_thread(write_with_foreign_client, bus.bootstrap, bus.topics.commands,
                                commands[first:first + step])
        await asyncio.sleep(step / per_second)


async def test_a_thawed_zombie_runs_no_saga_step_twice(settings, tmp_path):
    settings = replace(settings, partitions=PARTITIONS)
    bus = Bus(settings)
    await bus.ensure_topics()
    await bus.start()
    watch = Watch(bus)
    watch.start()
    paths = [str(tmp_path / f"orchestrator-{n}.log") for n in range(2)]
    # a payment under way when the process freezes completes after the thaw (no time-out)
    env = {"LOG_LEVEL": "info", "KAFKA_SAGA_SESSION_TIMEOUT_MS": "6000", "PAYMENT_TIMEOUT_S": "60"}
    procs = [spawn_runtime(settings, path, roles="orchestrator,inventory", **env) for path in paths]
    zombie = procs[0]
    try:
        await eventually(lambda: all(owned_partitions(p, bus.topics.commands) for p in paths),
                         timeout=90, interval=0.5, what="two orchestrators sharing the partitions")
        commands = _orders(ORDERS, "z")
        ids = [c.snapshot.order_id for c in commands]
        writer = asyncio.ensure_future(_write_steadily(bus, commands, per_second=40))

        def done() -> int:
            return sum(1 for o in ids if o in watch.outcomes.at)

        await eventually(lambda: done() >= ORDERS // 10, timeout=60, interval=0.05,
                         what="a tenth of the orders ended")
        frozen_at = done()
        zombie.send_signal(signal.SIGSTOP)
        await eventually(lambda: owned_partitions(paths[1], bus.topics.commands) == set(range(PARTITIONS)),
                         timeout=FREEZE_S, interval=0.2, what="the other process holding every partition")
        await asyncio.sleep(max(0.0, FREEZE_S - 12))
        thawed_at = done()
        zombie.send_signal(signal.SIGCONT)
        await writer
        await eventually(lambda: done() == ORDERS, timeout=150, interval=0.5, what="every order ended")
        await asyncio.sleep(5)  # a zombie's late step would show by now

        terminals = Counter(_terminals(watch, o) for o in ids)
        payments = sum(1 for o in ids if watch.outcomes.transitions[(o, "OrderApproved", "Payment")] > 1)
        doubled = watch.outcomes.doubled()
        fence = _fence_events(paths[0])
        print(f"\nzombie: {ORDERS} orders, frozen after {frozen_at} ended, thawed after {thawed_at}; "
              f"terminal states per order {dict(terminals)}, payments written twice {payments}, "
              f"transitions written twice {doubled}; the zombie's fence: {fence}")
        assert frozen_at < thawed_at < ORDERS  # orders flowed while it was frozen, and after
        assert any(e.startswith("this process was paused") for e in fence), fence
        assert any(e.startswith("membership lost") for e in fence), fence
        assert terminals == {1: ORDERS}, dict(terminals)
        assert payments == 0 and doubled == 0
        assert watch.outcomes.count(ids) == {"approved": ORDERS}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
        await watch.close()
        await bus.stop()
