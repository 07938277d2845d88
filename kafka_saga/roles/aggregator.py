"""aggregator: per-user aggregates from ``orders.events``, published to compacted ``orders.aggregates``.

``orders.events`` is partitioned by user (the orchestrator writes each event to its user's
partition), so every user lives in exactly one partition: the fold of each owned partition
(:class:`~kafka_saga.core.fold.AggregateFold`) is complete for its users, and competing
workers (``AGGREGATOR_WORKERS``) never write the same user's snapshot concurrently. One
snapshot per changed user and batch.

The fold of each partition is a state store of the shared loop, restored from
``orders.aggregator.changelog`` when the partition is assigned (docs/state-stores.md), so a
restart or a rebalance never loses state; replay folds each partition the same way with the
same window, so it equals the live view.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from .. import logs
from ..bus.handling import Emit, PartitionStates
from ..bus.loop import Subscription
from ..core.contracts import Event
from ..core.fold import AggregateFold
from .base import Role

log = logs.get("aggregator")


class AggregatorRole(Role):
    name = "aggregator"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.folds: PartitionStates[AggregateFold] = PartitionStates(
            lambda _tp: AggregateFold(window=ctx.settings.state_window), self._drop_dirty)
        self.dirty: dict[str, AggregateFold] = {}

    def fold(self, event: Event, _record: Any, fold: AggregateFold) -> None:
        user = fold.apply(event)
        if user is not None:
            self.dirty[user] = fold

    def publish(self) -> list[Emit]:
        """One snapshot per user the batch changed."""
        if not self.dirty:
            return []
        dirty, self.dirty = self.dirty, {}
        topic = self.ctx.bus.topics.aggregates
        partitions = {id(fold): partition for partition, fold in self.folds.items()}
        out = []
        for user, fold in dirty.items():
            aggregate = fold.aggregate(user)
            if aggregate is not None:
                out.append(Emit(topic, aggregate.encode(), user.encode(),
                                source=partitions.get(id(fold))))
        return out

    def _drop_dirty(self, _tp: TopicPartition, fold: AggregateFold) -> None:
        self.dirty = {u: f for u, f in self.dirty.items() if f is not fold}

    def subscriptions(self) -> list[Subscription]:
        return [self.subscription("aggregator", Event.decode_shared, self.fold, state=self.folds,
                                  span_name="aggregator fold",  # each event's span (tracing on)
                                  on_batch_end=self.publish)]

    def health(self) -> dict[str, Any]:
        return {"partitions": self.folds.partitions(),
                "users": sum(len(f) for f in self.folds.values())}
