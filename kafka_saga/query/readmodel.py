"""The read side (CQRS): projections the query API serves, fed by topic followers."""

from __future__ import annotations

import asyncio
import bisect
from collections import deque
from typing import Any

from .. import logs
from ..bus.client import Bus
from ..bus.follow import TopicFollower
from ..core.catalog import Catalog
from ..core.contracts import ContractError, Event, UserAggregate, reply_partition
from ..core.dead_letters import DeadLetter, read_dead_letter
from .orders import ORDERS_MAX, OrdersView

log = logs.get("query")


class AggregateView:
    """``user -> UserAggregate`` from compacted ``orders.aggregates`` (latest wins)."""

    def __init__(self) -> None:
        self.by_user: dict[str, UserAggregate] = {}
        self.bodies: dict[str, bytes] = {}  # each aggregate's JSON, encoded once per update
        self._sorted: list[str] = []

    def put(self, aggregate: UserAggregate) -> None:
        if aggregate.user not in self.by_user:
            bisect.insort(self._sorted, aggregate.user)
        self.by_user[aggregate.user] = aggregate
        self.bodies[aggregate.user] = aggregate.encode()

    def delete(self, user: str) -> None:
        if self.by_user.pop(user, None) is not None:
            self.bodies.pop(user, None)
            self._sorted.remove(user)

    def page(self, limit: int, after: str | None) -> tuple[list[UserAggregate], str | None]:
        start = bisect.bisect_right(self._sorted, after) if after is not None else 0
        users = self._sorted[start:start + limit]
        more = start + limit < len(self._sorted)
        return [self.by_user[u] for u in users], (users[-1] if more and users else None)

    def __len__(self) -> int:
        return len(self.by_user)


class DeadLetterView:
    """The most recent dead letters, and counts by reason."""

    def __init__(self, size: int) -> None:
        self.recent: deque[DeadLetter] = deque(maxlen=size)
        self.by_reason: dict[str, int] = {}
        self.garbage = 0

    def add(self, letter: DeadLetter) -> None:
        if not letter.is_dead_letter:
            self.garbage += 1
            return
        self.by_reason[letter.reason] = self.by_reason.get(letter.reason, 0) + 1
        self.recent.append(letter)


class ReadModel:
    """Follows ``orders.aggregates``, ``orders.dlq`` and ``orders.events`` into in-memory views."""

    def __init__(self, bus: Bus, dlq_recent: int = 200, catalog: Catalog | None = None,
                 orders_max: int = ORDERS_MAX) -> None:
        self.bus = bus
        self.aggregates = AggregateView()
        self.dead_letters = DeadLetterView(dlq_recent)
        self.orders = OrdersView(catalog, max_sagas=orders_max)
        self.malformed_events = 0  # undecodable records on orders.events (the aggregator DLQs them)
        self.malformed_aggregates = 0
        self.aggregate_follower = TopicFollower(bus, bus.topics.aggregates, self._on_aggregate,
                                                "query aggregates")
        self.dlq_follower = TopicFollower(bus, bus.topics.dlq, self._on_dead_letter, "query dlq")
        self.events_follower = TopicFollower(bus, bus.topics.events, self._on_event, "query events")

    @property
    def ready(self) -> bool:
        return self.aggregate_follower.caught_up.is_set()

    @property
    def events_caught_up(self) -> bool:
        return self.events_follower.caught_up.is_set()

    def events_progress(self) -> dict[str, Any]:
        """How far the orders view is: records read of the start-up target, counts."""
        done, target = self.events_follower.progress()
        return {"caught_up": self.events_caught_up, "read": done, "target": target,
                "orders": len(self.orders), "sagas": self.orders.total(),
                "evicted": self.orders.evicted, "malformed": self.malformed_events}

    async def _on_aggregate(self, record: Any) -> None:
        if record.value is None:  # tombstone: the user was deleted
            if record.key is not None:
                self.aggregates.delete(record.key.decode("utf-8", "replace"))
            return
        try:
            aggregate = UserAggregate.decode(record.value)
        except ContractError as exc:
            # Skipped here; the dlq role's audit (a consumer group, so exactly one copy)
            # dead-letters it. Every query instance reads every record: it must not.
            self.malformed_aggregates += 1
            log.warning("malformed aggregate skipped", reason=exc.reason, partition=record.partition,
                        offset=record.offset)
            return
        self.aggregates.put(aggregate)

    def _on_dead_letter(self, record: Any) -> None:
        self.dead_letters.add(read_dead_letter(record))

    def _on_event(self, record: Any) -> None:
        """Feed the orders view; malformed events are only counted (the aggregator DLQs them)."""
        try:
            event = Event.decode_shared(record.value)
        except ContractError:
            self.malformed_events += 1
            return
        # the saga's partition (its event's reply-partition header): where rejects go
        partition = reply_partition(record.headers)
        self.orders.apply(event, -1 if partition is None else partition)

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.aggregate_follower.run(stop))
            group.create_task(self.dlq_follower.run(stop))
            group.create_task(self.events_follower.run(stop))
