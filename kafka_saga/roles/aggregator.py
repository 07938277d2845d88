"""aggregator: per-user aggregates from ``orders.events``, published to compacted ``orders.aggregates``.

Two stages, both on the shared consume loop:

1. **re-key** — ``orders.events`` (keyed by order) -> ``orders.events.by-user`` (keyed by
   user), bytes unchanged. Every user then lives in exactly one partition, so competing
   workers (``AGGREGATOR_WORKERS``) never write the same user's snapshot concurrently.
2. **fold** — ``orders.events.by-user`` -> :class:`~kafka_saga.core.fold.AggregateFold`
   per owned partition -> one snapshot per changed user and batch.

The fold's state is rebuilt from its input log when a partition is assigned (records
below the committed offset are folded silently, then the live tail is published), so a
restart or a rebalance never loses state and a replay equals the live view.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import logs
from ..bus.loop import Subscription, consume_workers
from ..core.contracts import Event
from ..core.fold import AggregateFold
from .base import Role

log = logs.get("aggregator")


class AggregatorRole(Role):
    name = "aggregator"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.folds: dict[int, AggregateFold] = {}
        self.dirty: dict[str, AggregateFold] = {}

    # --- stage 1: re-key ---
    async def rekey(self, event: Event, record: Any) -> None:
        await self.ctx.bus.producer.send(
            self.ctx.bus.topics.events_by_user, record.value, event.snapshot.user.encode(),
            list(record.headers or ()))

    # --- stage 2: fold ---
    async def fold(self, event: Event, record: Any) -> None:
        fold = self.folds.get(record.partition)
        if fold is None:  # not (or no longer) ours
            return
        user = fold.apply(event)
        if user is not None:
            self.dirty[user] = fold

    async def restore(self, event: Event, record: Any) -> None:
        fold = self.folds.get(record.partition)
        if fold is not None:
            fold.apply(event)

    async def publish(self) -> None:
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, {}
        producer, topic = self.ctx.bus.producer, self.ctx.bus.topics.aggregates
        for user, fold in dirty.items():
            aggregate = fold.aggregate(user)
            if aggregate is not None:
                await producer.send(topic, aggregate.encode(), user.encode())

    async def assigned(self, consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        for tp in committed:
            self.folds[tp.partition] = AggregateFold()

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            fold = self.folds.pop(tp.partition, None)
            self.dirty = {u: f for u, f in self.dirty.items() if f is not fold}

    def subscriptions(self) -> list[Subscription]:
        topics = self.ctx.bus.topics
        return [
            Subscription("aggregator.rekey", (topics.events,), topics.group("aggregator.rekey"),
                         Event.decode_shared, self.rekey),
            Subscription("aggregator", (topics.events_by_user,), topics.group("aggregator"),
                         Event.decode_shared, self.fold, on_batch_end=self.publish,
                         on_assigned=self.assigned, on_revoked=self.revoked, restore=self.restore),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        workers = self.ctx.options.workers
        async with asyncio.TaskGroup() as group:
            for sub in self.subscriptions():
                group.create_task(consume_workers(self.ctx.bus, sub, stop, workers))

    def health(self) -> dict[str, Any]:
        return {"partitions": sorted(self.folds), "users": sum(len(f) for f in self.folds.values())}
