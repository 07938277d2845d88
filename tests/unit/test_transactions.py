"""The exactly-once checkpoint's own logic (kafka_saga.bus.transactions), with a stand-in for
the transactional Kafka producer: the gate that holds sends during a commit, what a given-up
partition refuses, how a failed delivery or a fenced commit surfaces, and the routing of a
task's sends into its partition's transaction. The real broker runs the same code in
tests/integration/test_exactly_once.py."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, ProducerFenced

from kafka_saga.bus.client import Bus
from kafka_saga.bus.fence import Fenced
from kafka_saga.bus.producer import scope
from kafka_saga.bus.transactions import PartitionTransaction, TransactionFailed, Transactions, bind
from kafka_saga.config import Settings

TP = TopicPartition("orders.commands", 2)


class FakeTransactionalProducer:
    """Records what a transactional producer was asked to do; deliveries resolve on demand."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.fail_commit: BaseException | None = None

    async def start(self) -> None:
        self.calls.append("start")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send(self, topic: str, value: bytes | None, **_: Any) -> asyncio.Future[Any]:
        self.calls.append(("send", topic, value))
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None:
        self.calls.append(("offsets", {tp.partition: m.offset for tp, m in offsets.items()}, group_id))

    async def commit_transaction(self) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")

    async def stop(self) -> None:
        self.calls.append("stop")

    def ack_all(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(type("Meta", (), {"offset": 7})())


def _bus(exactly_once: bool = True) -> Bus:
    bus = Bus(replace(Settings.from_env({}), bootstrap_servers="127.0.0.1:1"))
    bus.processing = "exactly_once" if exactly_once else "at_least_once"
    return bus


async def _opened(bus: Bus, tps: list[TopicPartition]) -> tuple[Transactions, dict]:
    txns = Transactions(bus, "kafka-saga.orchestrator", "orchestrator", logs())
    fakes = {}
    for tp in tps:
        fakes[tp] = FakeTransactionalProducer()
        txn = PartitionTransaction(bus, tp, txns.transactional_id(tp), kafka=fakes[tp])
        await txn.start()
        txns.by_tp[tp] = txn
        bus.transactions[tp] = txn
    return txns, fakes


def logs() -> Any:
    from kafka_saga import logs as kafka_saga_logs
    return kafka_saga_logs.get("test")


async def test_sends_wait_while_a_checkpoint_commits_and_join_the_next_transaction():
    txns, fakes = await _opened(_bus(), [TP])
    fake = fakes[TP]
    txn = txns.by_tp[TP]
    await txn.send("orders.events", b"before")
    txns.hold()
    late = asyncio.ensure_future(txn.send("orders.events", b"during"))
    await asyncio.sleep(0.01)
    assert not late.done()  # held: it must not slip into the transaction being committed
    committing = asyncio.ensure_future(txns.commit({TP: 42}))
    await asyncio.sleep(0.01)
    fake.ack_all()
    await committing
    await late
    fake.ack_all()
    assert fake.calls == ["start", "begin", ("send", "orders.events", b"before"),
                          ("offsets", {2: 42}, "kafka-saga.orchestrator"), "commit", "begin",
                          ("send", "orders.events", b"during")]
    assert txn.dirty  # "during" belongs to the new transaction
    assert txns.transactional_id(TP) == "kafka-saga.orchestrator.orders.commands-2"
    produced = txns.bus.metrics.produced.labels(topic="orders.events")._value.get()
    assert produced == 1  # "before", counted once committed; "during" not yet


async def test_nothing_to_commit_costs_no_round_trip():
    txns, fakes = await _opened(_bus(), [TP])
    txns.hold()
    await txns.commit({})
    assert fakes[TP].calls == ["start", "begin"]
    assert txns.by_tp[TP].open.is_set()


async def test_a_partition_given_up_refuses_sends_even_those_already_waiting():
    bus = _bus()
    txns, fakes = await _opened(bus, [TP])
    txn = txns.by_tp[TP]
    txns.hold()
    waiting = asyncio.ensure_future(txn.send("orders.events", b"cut off"))
    await asyncio.sleep(0.01)
    await txns.close([TP])
    with pytest.raises(Fenced):
        await waiting
    with pytest.raises(Fenced):
        await txn.send("orders.events", b"after")
    assert ("send", "orders.events", b"cut off") not in fakes[TP].calls
    assert fakes[TP].calls[-2:] == ["abort", "stop"] and TP not in bus.transactions


async def test_a_failed_delivery_fails_the_flush_and_the_checkpoint():
    bus = _bus()
    txns, fakes = await _opened(bus, [TP])
    await txns.by_tp[TP].send("orders.events", b"lost")
    fakes[TP].futures[0].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaTimeoutError):
        await txns.by_tp[TP].flush()
    with pytest.raises(TransactionFailed, match="aborted"):
        await txns.commit({TP: 5})
    assert "commit" not in fakes[TP].calls
    sample = bus.metrics.transactions.labels(role="orchestrator", outcome="aborted")._value.get()
    assert sample == 1


async def test_a_fenced_commit_is_counted_as_fenced_and_raised():
    bus = _bus()
    txns, fakes = await _opened(bus, [TP])
    fakes[TP].fail_commit = ProducerFenced()
    with pytest.raises(TransactionFailed, match="fenced"):
        await txns.commit({TP: 9})
    assert bus.metrics.transactions.labels(role="orchestrator", outcome="fenced")._value.get() == 1


async def test_a_task_bound_to_its_partition_sends_into_that_transaction():
    bus = _bus()
    txns, fakes = await _opened(bus, [TP])
    other = TopicPartition("orders.commands", 5)  # not held here

    async def saga(tp: TopicPartition, value: bytes) -> None:
        bind(bus, tp)
        await bus.producer.send("orders.events", value)

    try:
        await asyncio.ensure_future(saga(TP, b"mine"))
        assert ("send", "orders.events", b"mine") in fakes[TP].calls
        with pytest.raises(Fenced):
            await asyncio.ensure_future(saga(other, b"lost"))
        assert scope.get() is None  # the binding stayed in those tasks
    finally:
        await bus.producer.kafka.stop()  # created, never started: nothing went to it


async def test_bind_does_nothing_at_least_once():
    bus = _bus(exactly_once=False)

    async def task() -> Any:
        bind(bus, TP)
        return scope.get()

    assert await asyncio.ensure_future(task()) is None


async def test_a_record_is_visible_once_its_own_transaction_commits():
    """``send_and_wait`` (the inventory request a deadline counts from) waits for this."""
    txns, fakes = await _opened(_bus(), [TP])
    txn = txns.by_tp[TP]
    first = await txn.send("orders.inventory", b"request")
    fakes[TP].ack_all()
    assert first.offset == 7 and not first.committed.done()  # acknowledged, not yet readable
    await txns.commit({TP: 3})
    assert first.committed.done() and first.committed.exception() is None
    second = await txn.send("orders.inventory", b"next")  # the next transaction's
    assert second.committed is not first.committed and not second.committed.done()
    await txns.close([TP])
    with pytest.raises(Fenced):
        await second.committed  # given up: it will never commit here
