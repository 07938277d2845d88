"""Commands partitioned by librdkafka (confluent-kafka's default), a crash and a rebalance.

Most non-Java clients put a keyed record on ``crc32(key) % n`` (librdkafka's default
``consistent_random``), not on the murmur2 partition aiokafka and Java choose, and may key
commands by something else than the order id, or not at all. Two orchestrator processes
share the commands; one is SIGKILLed mid-run and restarted, then a third joins (a
rebalance). Every order must reach exactly one terminal state and no saga step (payment
above all) may be written twice: a saga belongs to the partition of its command, whatever
put the command there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from dataclasses import replace

import pytest

from kafka_saga.bus.client import Bus
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.submission import new_order_command

from ..support.burst import ITEMS, TERMINAL, Watch, spawn_runtime
from ..support.foreign import KEYS, murmur2_partition, owned_partitions, write_with_librdkafka
from ..support.platform import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(240)]
ORDERS = int(os.environ.get("FOREIGN_ORDERS", "900"))
RATE = float(os.environ.get("FOREIGN_RATE", "60"))  # orders a second: a steady flow, ~15 s
PARTITIONS = 6
PAYMENT_DELAY_MS = "300"  # sagas are in flight when the kill comes


def _orders(count: int) -> list:
    catalog = Catalog()
    return [new_order_command(f"fuser{i % 50:02d}", ITEMS[i % len(ITEMS)], 1, catalog,
                              attributes={"payment_delay_ms": PAYMENT_DELAY_MS})
            for i in range(count)]


def _terminals(watch: Watch, order_id: str) -> int:
    return sum(n for (o, kind, step), n in watch.outcomes.transitions.items()
               if o == order_id and (kind in TERMINAL or (kind, step) == ("OrderApproved", "Finalize")))


async def _settled(watch: Watch, quiet_s: float = 4.0, timeout: float = 60) -> None:
    """Until orders.events has had no new record for ``quiet_s`` (a saga run twice shows)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = watch.follower.records
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("keying", list(KEYS))
async def test_foreign_partitioner_crash_and_rebalance_run_each_saga_once(settings, tmp_path, keying):
    settings = replace(settings, partitions=PARTITIONS)
    bus = Bus(settings)
    await bus.ensure_topics()
    await bus.start()
    watch = Watch(bus)
    watch.start()
    logs = iter(str(tmp_path / f"orchestrator-{n}.log") for n in range(10))
    env = {"LOG_LEVEL": "info", "PAYMENT_BACKOFF_S": "0.02"}  # info: assignments are logged
    procs, paths = [], []

    def spawn() -> None:
        paths.append(next(logs))
        procs.append(spawn_runtime(settings, paths[-1], roles="orchestrator,inventory", **env))

    def split() -> bool:  # every live process holds commands partitions, all of them held once
        owned = [owned_partitions(p, bus.topics.commands)
                 for p, proc in zip(paths, procs, strict=True) if proc.poll() is None]
        return all(owned) and sorted(p for o in owned for p in o) == list(range(PARTITIONS))

    try:
        spawn()
        spawn()
        await eventually(split, timeout=90, interval=0.5, what="two orchestrators sharing the partitions")
        commands = _orders(ORDERS)
        ids = [c.snapshot.order_id for c in commands]
        written = [0]
        writer = asyncio.ensure_future(asyncio.to_thread(
            write_with_librdkafka, bus.bootstrap, bus.topics.commands, commands, KEYS[keying],
            rate=RATE, written=written))

        def done() -> int:
            return sum(1 for o in ids if o in watch.outcomes.at)

        await eventually(lambda: written[0] >= ORDERS // 4 and done(), timeout=60, interval=0.05,
                         what="a quarter written")
        killed_at = done()
        procs[0].send_signal(signal.SIGKILL)
        await asyncio.to_thread(procs[0].wait, 10)
        spawn()  # the killed one, restarted
        await eventually(lambda: written[0] >= ORDERS * 11 // 20, timeout=60, interval=0.05,
                         what="over half written")
        spawn()  # a third process joins: a rebalance mid-run
        await eventually(lambda: owned_partitions(paths[-1], bus.topics.commands), timeout=60,
                         interval=0.1, what="the third process holding partitions")
        joined_at = done()
        landed = await writer
        moved = sum(1 for c, p in zip(commands, landed, strict=True)
                    if p != murmur2_partition(c.key, PARTITIONS))
        await eventually(lambda: done() == ORDERS, timeout=120, interval=0.5, what="every order ended")
        await _settled(watch)

        terminals = Counter(_terminals(watch, o) for o in ids)
        payments = sum(1 for o in ids if watch.outcomes.transitions[(o, "OrderApproved", "Payment")] > 1)
        doubled = watch.outcomes.doubled()
        print(f"\nforeign partitioner ({keying}): {ORDERS} orders, {moved} off their murmur2 "
              f"partition, SIGKILL after {killed_at} ended, third process in after {joined_at}; terminal states per order "
              f"{dict(terminals)}, payments written twice {payments}, steps written twice {doubled}")
        assert moved > ORDERS // 2  # most commands are not where murmur2 of the order id puts them
        assert killed_at < ORDERS and joined_at < ORDERS  # both happened mid-run
        assert terminals == {1: ORDERS}, dict(terminals)
        assert payments == 0 and doubled == 0
        assert watch.outcomes.count(ids) == {"approved": ORDERS}
    finally:
        await watch.close()
        await bus.stop()
        for proc in procs:
            proc.kill()
            proc.wait()
