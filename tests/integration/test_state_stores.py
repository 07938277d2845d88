"""Changelog-backed state stores on the real broker (kafka_saga.bus.stores), with a plain
counting store: a restart restores from the changelog, reading about the live state and not
the history, and a member joining while another restores neither hangs the group nor makes
anyone restore from zero again and again."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from aiokafka import TopicPartition

from kafka_saga.bus.handling import PartitionStates, Subscription
from kafka_saga.bus.loop import consume
from kafka_saga.core import topology
from kafka_saga.core.store import Journal

from ..support.platform import eventually

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


class Counts:
    """A store: records seen per key."""

    def __init__(self) -> None:
        self.journal = Journal()
        self.counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        self.counts[key] += 1
        self.journal.put(key, str(self.counts[key]).encode())

    def load(self, key: str, value: bytes) -> None:
        self.counts[key] = int(value)

    def entries(self) -> Iterator[tuple[str, bytes]]:
        for key, count in self.counts.items():
            yield key, str(count).encode()


class Member:
    """One consumer of the counting group, in this process."""

    def __init__(self, bus, on_open=None) -> None:
        self.opened: Counter[int] = Counter()
        self.on_open = on_open

        def create(tp: TopicPartition) -> Counts:
            self.opened[tp.partition] += 1
            if self.on_open is not None:
                self.on_open()
            return Counts()

        self.states: PartitionStates[Counts] = PartitionStates(create)
        self.handled = 0

        def handle(_value, record, counts: Counts) -> None:
            counts.add(record.key.decode())
            self.handled += 1

        self.sub = Subscription("counting", (bus.topics.inventory,), bus.topics.group("counting"),
                                lambda v: v, handle, state=self.states,
                                changelog=bus.topics.name(topology.INVENTORY_STATE))
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(consume(bus, self.sub, self.stop))

    def totals(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for state in self.states.values():
            out.update(state.counts)
        return out

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


async def write(bus, keys: int, rounds: int) -> Counter[str]:
    sent: Counter[str] = Counter()
    for _ in range(rounds):
        for k in range(keys):
            key = f"k{k:05d}"
            await bus.producer.send(bus.topics.inventory, b"x", key.encode())
            sent[key] += 1
    await bus.producer.flush()
    return sent


async def changelog_size(bus) -> int:
    return sum((await bus.end_offsets(bus.topics.name(topology.INVENTORY_STATE))).values())


def restore_records(bus) -> float:
    return bus.metrics.restore_records.labels(role="counting")._value.get()


async def test_a_restart_restores_the_live_state_from_the_changelog(bus, monkeypatch):
    # a checkpoint every 100 ms: many, each writing the keys it changed
    monkeypatch.setattr(bus, "settings", replace(bus.settings, commit_interval_ms=100))
    first = Member(bus)
    expected: Counter[str] = Counter()
    for _ in range(40):  # 12,000 records, 300 live entries, many checkpoints
        expected.update(await write(bus, keys=300, rounds=1))
        await eventually(lambda: first.handled == sum(expected.values()), timeout=60,
                         interval=0.05, what="the round counted")
    await first.close()
    assert first.totals() == expected
    written = await changelog_size(bus)

    expected.update(await write(bus, keys=300, rounds=1))
    before = restore_records(bus)
    second = Member(bus)
    await eventually(lambda: second.handled == 300, timeout=120, what="the new records counted")
    await second.close()
    read = restore_records(bus) - before
    print(f"\nchangelog: {written} records written for 300 live entries; the restore read "
          f"{read:.0f} of them; the restart handled {second.handled} records")
    assert second.totals() == expected  # exact: restored from the changelog, then the new records
    assert second.handled == 300  # the history was not read again
    assert written > 4_000  # every checkpoint wrote the keys it changed: far more than live
    assert read <= 3 * 300 + 3 * 1_000  # from the restore points: about the live state
    assert sum(second.opened.values()) == len(second.states)


async def test_a_member_joining_mid_restore_neither_hangs_nor_restarts_it(bus):
    expected = await write(bus, keys=20_000, rounds=2)
    seed = Member(bus)
    await eventually(lambda: seed.handled == 40_000, timeout=180, what="the store built")
    await seed.close()

    every = {tp.partition for tp in await bus.partitions(bus.topics.inventory)}
    restoring = asyncio.Event()
    first = Member(bus, on_open=restoring.set)  # its stores open before the changelog is read
    await asyncio.wait_for(restoring.wait(), 60)
    second = Member(bus)  # a second member joins while the first restores

    def split() -> bool:
        owned = [set(m.states.partitions()) for m in (first, second)]
        return all(owned) and owned[0] | owned[1] == every and not owned[0] & owned[1]

    await eventually(split, timeout=120, interval=0.2, what="the partitions split between both")
    late = await write(bus, keys=20_000, rounds=1)
    expected.update(late)
    # a partition handed over mid-restore is read again from its committed offset, so the
    # handled count can reach 20,000 with records still to count: wait for the totals
    await eventually(lambda: first.totals() + second.totals() == expected, timeout=120,
                     interval=0.2, what="the new records counted")
    # both stop at once: closed one after the other, the second would take over the first's
    # partitions (a rebalance) before it stops, and hold their stores twice
    first.stop.set()
    second.stop.set()
    await asyncio.gather(first.close(), second.close())
    totals = first.totals() + second.totals()
    print(f"\nmid-restore join: stores opened by the first member {dict(first.opened)}, by the "
          f"second {dict(second.opened)}")
    assert totals == expected
    # nobody restored a partition more than once, and the first member's partitions that
    # stayed with it were kept, not restored again from zero
    assert max(first.opened.values()) == 1 and max(second.opened.values()) == 1
