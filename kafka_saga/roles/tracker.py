"""tracker: validates the order event stream and asks for rejections (choreography).

Consumes ``orders.events`` (group ``kafka-saga.tracker``), applies
:class:`~kafka_saga.core.rules.TrackerRules` per owned partition (a user's events are all on
one partition, so the per-user rules are partition-local), and for each broken rule
publishes an ``OrderReject`` command on ``orders.replies`` at the saga's partition, named by
the event's ``reply-partition`` header (the partition of the saga's command, the one owning
the saga, whatever partitioner the client used), with a deterministic ``command_id``
``tracker:{rule}:{saga_id}``. It never talks to the orchestrator directly: the orchestrator
reads the command like any other.

The rules of each partition are a state store of the shared loop, restored from
``orders.tracker.changelog`` when the partition is assigned (docs/state-stores.md). A crash
before the commit re-delivers the batch, whose rejects are published again (same command
ids: at-least-once) or not at all if the restored store already saw them fire.

Options (YAML role list ``tracker: {...}``, else the settings):

* ``velocity_limit`` (else ``Settings.tracker_velocity_limit``, ``TRACKER_VELOCITY_LIMIT``): max orders per user per 60 s of event
  time (0, the default, disables the rule). A user's orders are all on one partition, so
  the count is complete in whichever process owns it.
* ``max_sagas`` (role list only): sagas remembered per partition (default: the state
  window, ``Settings.state_window``, ``KAFKA_SAGA_STATE_WINDOW``).
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from .. import logs
from ..bus.handling import Emit, PartitionStates
from ..bus.loop import Subscription
from ..config import non_negative_int
from ..core.catalog import Catalog
from ..core.contracts import Event, reply_partition
from ..core.rules import TrackerRules, VelocityWindow, reject_command
from ..observation import tracing
from .base import Role

log = logs.get("tracker")


def _option(extra: dict[str, Any], key: str, default: int) -> int:
    """A non-negative integer option of the role list, else ``default``."""
    raw = extra.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    return non_negative_int(f"tracker.{key}", raw)


class TrackerRole(Role):
    name = "tracker"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        self.catalog = Catalog.load(ctx.settings.catalog_path)
        self.velocity_limit = _option(extra, "velocity_limit", ctx.settings.tracker_velocity_limit)
        self.max_sagas = _option(extra, "max_sagas", ctx.settings.state_window)
        self.window = VelocityWindow(self.velocity_limit) if self.velocity_limit > 0 else None
        self.rules: PartitionStates[TrackerRules] = PartitionStates(self._rules, self._forget)
        self.rejected = 0  # commands published by this instance

    def _rules(self, tp: TopicPartition) -> TrackerRules:
        self._forget(tp)  # re-read from the beginning: start from empty state
        return TrackerRules(self.catalog, partition=tp.partition, window=self.window,
                            max_sagas=self.max_sagas)

    def _forget(self, tp: TopicPartition, _rules: TrackerRules | None = None) -> None:
        if self.window is not None:
            self.window.forget(tp.partition)

    # --- the loop's callbacks ---
    def handle(self, event: Event, record: Any, rules: TrackerRules) -> list[Emit]:
        """Each broken rule becomes a reject on the saga's partition of ``orders.replies``
        (the event's reply-partition header), never behind new orders, never by a key hash a
        client's partitioner may disagree with (by key only for an event without the header,
        not written by the orchestrator)."""
        out = []
        broken = rules.observe(event)
        if broken:  # on the event's span, "tracker rules" (tracing on)
            tracing.describe(rules_broken=",".join(v.rule for v in broken))
        for violation in broken:
            command = reject_command(violation)
            partition = reply_partition(record.headers)
            out.append(Emit(self.ctx.bus.topics.replies, command.encode(), command.key,
                            partition=partition))
            self.rejected += 1
            log.warning("rule broken, order reject requested", order_id=violation.order_id,
                        saga_id=violation.saga_id, rule=violation.rule, reason=violation.reason,
                        detail=violation.detail, event_type=violation.event.type.value,
                        command_id=command.command_id, partition=partition,
                        offset=record.offset)
        return out

    def subscriptions(self) -> list[Subscription]:
        # not dead-lettering (declared): the aggregator owns orders.events
        return [self.subscription("tracker", Event.decode_shared, self.handle, state=self.rules,
                                  span_name="tracker rules")]

    def health(self) -> dict[str, Any]:
        rules = list(self.rules.values())
        return {
            "partitions": self.rules.partitions(),
            "sagas": sum(len(r) for r in rules),
            "fired": sum(r.fired_total for r in rules),
            "rejects_published": self.rejected,
            "velocity_limit": self.velocity_limit,
        }
