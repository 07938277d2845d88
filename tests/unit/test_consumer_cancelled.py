"""A consume loop that the Kafka client ends with a cancellation nobody asked for is a crash.

aiokafka re-raises a cancelled background task of its own (its group coordination) from
``getmany``. A task group takes a child that ends cancelled for a quiet end, so without this
the role would return as if asked to stop, and the supervisor could only say that it
returned. The loop against a real broker is covered in tests/integration."""

from __future__ import annotations

import asyncio

import pytest

from kafka_saga.bus.client import Bus
from kafka_saga.bus.handling import Subscription
from kafka_saga.bus.loop import ConsumerCancelled, _Runner, consume
from kafka_saga.config import Settings
from kafka_saga.runtime.supervisor import crash_reason

SUB = Subscription("test", ("orders.events",), "test-group", bytes, lambda *_: None)


async def test_a_cancellation_from_inside_the_client_is_a_crash_with_its_reason(monkeypatch):
    async def cancelled_from_inside(_self, _stop):
        raise asyncio.CancelledError  # as aiokafka's check_errors() on a cancelled task

    monkeypatch.setattr(_Runner, "run", cancelled_from_inside)
    with pytest.raises(ConsumerCancelled, match="cancelled the consume loop from inside"):
        await consume(Bus(Settings()), SUB, asyncio.Event())


async def test_a_cancellation_asked_for_stays_a_cancellation(monkeypatch):
    started = asyncio.Event()

    async def waits(_self, _stop):
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(_Runner, "run", waits)
    task = asyncio.create_task(consume(Bus(Settings()), SUB, asyncio.Event()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


def test_the_supervisor_names_the_errors_inside_the_roles_task_groups():
    inner = ConsumerCancelled("aggregator worker 0: the Kafka client cancelled the consume loop")
    nested = ExceptionGroup("unhandled errors in a TaskGroup", [
        ExceptionGroup("unhandled errors in a TaskGroup", [inner, TimeoutError("changelog")])])
    assert crash_reason(nested) == (
        "ConsumerCancelled: aggregator worker 0: the Kafka client cancelled the consume loop; "
        "TimeoutError: changelog")
    assert crash_reason(RuntimeError("plain")) == "RuntimeError: plain"
