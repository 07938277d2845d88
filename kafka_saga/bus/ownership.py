"""Partition ownership for the shared consume loop: what a runner does when the group gives
it partitions or takes them away (its rebalance listener).

Before partitions go: the current batch is finished and checkpointed, their transactions
closed, their state stores parked (or closed), their backpressure forgotten, then the role
hears of it. When partitions come: their transactions open (fencing the last owners), their
stores restore from the changelogs, then the role hears of it.

The Kafka client logs and swallows what a rebalance listener raises, then carries on. A
checkpoint that failed while giving partitions away (or a state that could not be restored)
must not be carried on from: the failure is kept and raised by the loop
(:class:`RebalanceFailed`), so the role restarts from what was committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from ..observation.progress import Progress
from .handling import Subscription
from .inflight import InFlight
from .lost_places import LostPlaces
from .stores import StoreKeeper
from .transactions import Transactions


class RebalanceFailed(RuntimeError):
    """A rebalance listener step (checkpoint, state restore, transactions) failed; the role
    restarts from what was committed."""


def name(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(name(tp) for tp in tps)


class PartitionOwnership(ConsumerRebalanceListener):
    """The rebalance half of a consume-loop runner (see the module docstring)."""

    sub: Subscription
    log: Any
    consumer: AIOKafkaConsumer
    lock: asyncio.Lock
    committed: dict[TopicPartition, int]
    stores: StoreKeeper | None
    txns: Transactions | None
    gate: InFlight | None
    progress: Progress
    lost: LostPlaces
    failure: Exception | None

    async def _checkpoint(self) -> None:
        raise NotImplementedError

    def _paused_gauge(self, tp: TopicPartition, value: int) -> None:
        raise NotImplementedError

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._revoke(revoked)
        except Exception as exc:
            self._rebalance_failed("revoke", exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if not assigned:
            return
        try:
            async with self.lock:  # no batch is handled while a role restores its state
                await self._assigned(assigned)
                if self.sub.fence is not None:
                    self.sub.fence.assigned()
        except Exception as exc:
            self._rebalance_failed("assign", exc)

    def _rebalance_failed(self, step: str, exc: Exception) -> None:
        self.log.warning("rebalance step failed: the role restarts from the last commit",
                         step=step, error=f"{type(exc).__name__}: {exc}"[:300])
        if self.failure is None:
            self.failure = exc

    def _raise_rebalance_failure(self) -> None:
        if self.failure is not None:
            raise RebalanceFailed(f"{self.sub.role}: a rebalance step failed: "
                                  f"{type(self.failure).__name__}: {self.failure}") from self.failure

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            if revoked:
                if self.failure is not None:  # the state in memory may be ahead of the commit
                    return
                await self._checkpoint()
                if self.txns is not None:
                    await self.txns.close(revoked)
                for tp in revoked:
                    committed = self.committed.pop(tp, None)
                    # under exactly-once, a store that work outliving its handler (sagas)
                    # may change in memory after the last commit is restored from what was
                    # committed instead of being kept aside
                    if self.stores is not None and tp.topic == self.stores.state_topic:
                        if self.txns is None or self.gate is None:
                            self.stores.park(tp.partition, committed or 0)
                        else:
                            self.stores.states.close(tp)
                self.progress.forget(names(revoked))
                self.lost.forget(revoked)
                if self.gate is not None:
                    for tp in revoked & self.gate.paused:
                        self._paused_gauge(tp, 0)
                    self.gate.disown(revoked)
                if self.sub.state is not None and self.stores is None:
                    for tp in revoked:
                        self.sub.state.close(tp)
                if self.sub.on_revoked:
                    await self.sub.on_revoked(set(revoked))
                self.log.info("partitions revoked", partitions=names(revoked))

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        if self.txns is not None:  # fences the partitions' last owners before reading state
            await self.txns.open(assigned)
        if self.stores is not None:  # each store from its changelog, or kept as it was
            committed = await self.stores.restore(self.consumer, assigned)
        else:
            committed = {tp: await self.consumer.committed(tp) or 0 for tp in assigned}
            if self.sub.state is not None:
                for tp in assigned:
                    self.sub.state.open(tp)
        self.committed.update(committed)
        if self.gate is not None:
            self.gate.own(assigned, self.progress.tick)  # finished work is progress
        if self.sub.on_assigned:
            await self.sub.on_assigned(self.consumer, committed)
        self.progress.tick()
        self.log.info("partitions assigned", partitions=names(assigned))
