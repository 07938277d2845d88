"""tracker: validates the order event stream and asks for rejections (choreography).

Consumes ``orders.events`` (group ``kafka-saga.tracker``), applies
:class:`~kafka_saga.core.rules.TrackerRules` per owned partition, and for each broken rule
publishes an ``OrderReject`` command on ``orders.replies`` at the partition of the event that
broke it (a saga's events are all on its command's partition, the one owning the saga,
whatever partitioner the client used), with a deterministic ``command_id``
``tracker:{rule}:{saga_id}``. It never talks to the
orchestrator directly: the orchestrator reads the command like any other.

State is event-sourced: when a partition is assigned the shared loop re-reads it from the
beginning and records below the committed offset go to :meth:`restore` (observe, publish
nothing); later records go to :meth:`handle` (observe, publish the violations). Revoked
partitions drop their state. A crash before the commit re-delivers the batch to a fresh
role, which publishes the same commands again (same command ids: at-least-once).

Options (YAML role list ``tracker: {...}``, else the environment):

* ``velocity_limit`` / ``TRACKER_VELOCITY_LIMIT``: max orders per user per 60 s of event
  time (0, the default, disables the rule). The window is shared by the partitions this
  process owns.
* ``max_sagas`` (role list only): sagas remembered per partition (default 20 000).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import logs
from ..bus.loop import Subscription, consume_workers
from ..config import ConfigError
from ..core.catalog import Catalog
from ..core.contracts import Event
from ..core.rules import (
    DEFAULT_MAX_SAGAS,
    TrackerRules,
    VelocityWindow,
    Violation,
    reject_command,
)
from .base import Role

log = logs.get("tracker")


def _option(extra: dict[str, Any], key: str, env: str | None, default: int) -> int:
    """A non-negative integer option: the role list first, then the environment."""
    raw: Any = extra.get(key)
    origin = f"tracker.{key}"
    if raw is None and env:
        raw, origin = os.environ.get(env), env
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value = int(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ConfigError(f"{origin}={raw!r} is not an integer") from None
    if type(value) is not int or value < 0:
        raise ConfigError(f"{origin}={raw!r} must be a non-negative integer")
    return value


class TrackerRole(Role):
    name = "tracker"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        self.catalog = Catalog.load(ctx.settings.catalog_path)
        self.velocity_limit = _option(extra, "velocity_limit", "TRACKER_VELOCITY_LIMIT", 0)
        self.max_sagas = _option(extra, "max_sagas", None, DEFAULT_MAX_SAGAS)
        self.window = VelocityWindow(self.velocity_limit) if self.velocity_limit > 0 else None
        self.rules: dict[int, TrackerRules] = {}
        self.rejected = 0  # commands published by this instance

    # --- the loop's callbacks ---
    async def handle(self, event: Event, record: Any) -> None:
        rules = self.rules.get(record.partition)
        if rules is None:  # not (or no longer) ours
            return
        for violation in rules.observe(event):
            await self.publish(violation, record)

    async def restore(self, event: Event, record: Any) -> None:
        rules = self.rules.get(record.partition)
        if rules is not None:
            rules.observe(event)  # rebuild only: these were handled before

    async def publish(self, violation: Violation, record: Any) -> None:
        """The reject goes to the saga's partition of ``orders.replies`` (that of the event: a
        saga's events are on its command's partition), never behind new orders, never by a
        key hash a client's partitioner may disagree with."""
        command = reject_command(violation)
        topics = self.ctx.bus.topics
        await self.ctx.bus.producer.send(topics.replies, command.encode(), command.key,
                                         partition=record.partition)
        self.rejected += 1
        log.warning("rule broken, order reject requested", order_id=violation.order_id,
                    saga_id=violation.saga_id, rule=violation.rule, reason=violation.reason,
                    detail=violation.detail, event_type=violation.event.type.value,
                    command_id=command.command_id, partition=record.partition,
                    offset=record.offset)

    async def assigned(self, consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        for tp in committed:  # re-read from the beginning: start from empty state
            if self.window is not None:
                self.window.forget(tp.partition)
            self.rules[tp.partition] = TrackerRules(
                self.catalog, partition=tp.partition, window=self.window, max_sagas=self.max_sagas)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.rules.pop(tp.partition, None)
            if self.window is not None:
                self.window.forget(tp.partition)

    def subscription(self) -> Subscription:
        topics = self.ctx.bus.topics
        return Subscription("tracker", (topics.events,), topics.group("tracker"), Event.decode_shared,
                            self.handle, on_assigned=self.assigned, on_revoked=self.revoked,
                            restore=self.restore,
                            # the aggregator's re-key stage owns dead-lettering orders.events:
                            # one DLQ copy per bad record, not one per consuming role
                            dead_letter=False)

    async def run(self, stop: asyncio.Event) -> None:
        await consume_workers(self.ctx.bus, self.subscription(), stop, self.ctx.options.workers)

    def health(self) -> dict[str, Any]:
        return {
            "partitions": sorted(self.rules),
            "sagas": sum(len(r) for r in self.rules.values()),
            "fired": sum(r.fired_total for r in self.rules.values()),
            "rejects_published": self.rejected,
            "velocity_limit": self.velocity_limit,
        }
