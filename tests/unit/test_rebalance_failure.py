"""A rebalance step that fails is never carried on from.

The Kafka client logs and swallows what a rebalance listener raises. The shared loop keeps
the failure instead: a checkpoint that could not commit while partitions were being given
away leaves the state in memory ahead of what was committed, so nothing more is
checkpointed or handled, and the loop raises it for the supervisor to restart the role from
the last commit. The loop itself against a real broker is covered in tests/integration."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from kafka_saga.bus.client import Bus
from kafka_saga.bus.handling import Subscription
from kafka_saga.bus.loop import RebalanceFailed, _Runner
from kafka_saga.config import Settings

TP = TopicPartition("orders.commands", 1)


def _runner() -> tuple[_Runner, list[str]]:
    calls: list[str] = []

    async def revoked_hook(partitions: set[TopicPartition]) -> None:
        calls.append("on_revoked")

    async def assigned_hook(_consumer: object, committed: dict) -> None:
        raise TimeoutError("changelog not readable")

    sub = Subscription("test", (TP.topic,), "test-group", bytes, lambda *_: None,
                       on_revoked=revoked_hook, on_assigned=assigned_hook)
    runner = _Runner(Bus(Settings()), sub, 0)
    return runner, calls


async def test_a_checkpoint_failing_on_revocation_is_kept_and_raised_by_the_loop():
    runner, calls = _runner()
    attempts = 0

    async def failing_checkpoint() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("transaction coordinator moved")

    runner._checkpoint = failing_checkpoint  # type: ignore[method-assign]
    runner.committed[TP] = 5
    await runner.on_partitions_revoked({TP})  # returns: the client would swallow a raise
    assert attempts == 1
    assert calls == []  # nothing after the failed checkpoint: the role restarts instead
    await runner.on_partitions_revoked({TP})  # a later revocation checkpoints nothing
    assert attempts == 1
    with pytest.raises(RebalanceFailed, match="transaction coordinator moved"):
        runner._raise_rebalance_failure()


async def test_a_restore_failing_on_assignment_is_kept_and_raised_by_the_loop():
    runner, _calls = _runner()

    class Consumer:
        async def committed(self, _tp: TopicPartition) -> int:
            return 0

    runner.consumer = Consumer()  # type: ignore[assignment]
    await runner.on_partitions_assigned({TP})
    with pytest.raises(RebalanceFailed, match="changelog not readable"):
        runner._raise_rebalance_failure()


async def test_without_a_failure_the_loop_goes_on():
    runner, calls = _runner()
    checkpoints = 0

    async def checkpoint() -> None:
        nonlocal checkpoints
        checkpoints += 1

    runner._checkpoint = checkpoint  # type: ignore[method-assign]
    await runner.on_partitions_revoked({TP})
    assert (checkpoints, calls) == (1, ["on_revoked"])
    runner._raise_rebalance_failure()  # nothing kept: no raise
