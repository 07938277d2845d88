"""The in-flight bound of the shared loop, pure (kafka_saga.bus.inflight)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from kafka_saga.bus.inflight import InFlight

COMMANDS = [TopicPartition("orders.commands", p) for p in range(3)]
REPLY = TopicPartition("orders.replies", 0)


def test_the_process_bound_is_shared_by_the_owned_partitions():
    gate = InFlight(10, topics=("orders.commands",))
    gate.own(COMMANDS + [REPLY])
    assert gate.share == 4  # ceil(10 / 3): replies are not governed, so not counted
    assert not gate.governs(REPLY) and gate.governs(COMMANDS[0])
    for _ in range(4):
        assert not gate.full(COMMANDS[0])
        gate.begin(COMMANDS[0])
    assert gate.full(COMMANDS[0]) and not gate.full(COMMANDS[1])  # one busy partition only
    for _ in range(4):
        gate.begin(COMMANDS[1])
    gate.begin(COMMANDS[2])
    gate.begin(COMMANDS[2])
    assert gate.total == 10 and gate.full(COMMANDS[2])  # 3 x 4 > 10: the process bound holds
    assert not gate.has_room(COMMANDS[2])
    gate.end(COMMANDS[1])
    assert not gate.full(COMMANDS[2]) and gate.has_room(COMMANDS[2])
    gate.disown(COMMANDS[1:])
    assert gate.share == 10 and not gate.full(COMMANDS[0])  # a lone partition gets it all


def test_resume_only_at_the_low_water_mark_and_every_end_is_progress():
    ticks = []
    gate = InFlight(8, topics=("orders.commands",))
    gate.own(COMMANDS[:1], on_progress=lambda: ticks.append(1))
    for _ in range(8):
        gate.begin(COMMANDS[0])
    assert gate.full(COMMANDS[0]) and not gate.has_room(COMMANDS[0])
    for _ in range(3):
        gate.end(COMMANDS[0])
    assert not gate.full(COMMANDS[0]) and not gate.has_room(COMMANDS[0])  # 5 > 4: stays paused
    gate.end(COMMANDS[0])
    assert gate.has_room(COMMANDS[0]) and gate.total == 4 and gate.peak == 8
    assert len(ticks) == 4


def test_ends_never_go_below_zero_and_describe_names_paused_partitions():
    gate = InFlight(2)
    gate.end(COMMANDS[0])
    assert gate.total == 0 and gate.counts == {}
    gate.own(COMMANDS[:2])
    gate.paused.add(COMMANDS[1])
    assert gate.describe() == {"in_flight": 0, "limit": 2, "share": 1, "peak": 0,
                               "paused": ["orders.commands:1"]}
    gate.disown(COMMANDS[1:2])
    assert gate.describe()["paused"] == []


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(0)
