"""What every role receives, and the shape of a role."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..bus.client import Bus
from ..bus.loop import Subscription, consume_workers
from ..config import RoleOptions, Settings
from ..core import topology


@dataclass
class RoleContext:
    """The shared pieces of one process, handed to each role."""

    bus: Bus
    settings: Settings
    options: RoleOptions
    shared: dict[str, Any] = field(default_factory=dict)  # in-process views shared by roles

    @property
    def metrics(self):  # noqa: ANN201 - Metrics, kept short
        return self.bus.metrics


class Role:
    """A long-running role: ``run`` returns when ``stop`` is set, after committing its work.

    A role is bound to its entry of the topology (:mod:`kafka_saga.core.topology`) by
    ``name``. Most roles only describe their :meth:`subscriptions`; the default :meth:`run`
    gives each ``options.workers`` competing members on the shared consume loop.
    """

    name: ClassVar[str] = ""

    def __init__(self, ctx: RoleContext) -> None:
        self.ctx = ctx

    @property
    def spec(self) -> topology.RoleSpec:
        return topology.role(self.name)

    def subscriptions(self) -> list[Subscription]:
        return []

    def subscription(self, group: str, decode: Any, handle: Any, *, label: str | None = None,
                     **options: Any) -> Subscription:
        """The subscription of this role's consumer group ``group``, as the topology declares
        it (topics, group id, the changelog of its state store); ``label`` names it in metrics and dead letters (default: the
        group's name)."""
        declared = next((g for g in self.spec.groups if g.name == group), None)
        if declared is None:
            raise KeyError(f"role {self.name} declares no consumer group {group!r}")
        topics = self.ctx.bus.topics
        changelog = topics.name(declared.changelog) if declared.changelog else None
        return Subscription(label or group, tuple(topics.name(t) for t in declared.consumes),
                            topics.group(group), decode, handle, changelog=changelog,
                            dead_letter=declared.dead_letters,
                            produces=bool(self.spec.produces), **options)

    async def run(self, stop: asyncio.Event) -> None:
        subs = self.subscriptions()
        if not subs:  # pragma: no cover - a role without subscriptions overrides run
            raise NotImplementedError(f"role {self.name} has neither subscriptions nor run()")
        async with asyncio.TaskGroup() as group:
            for sub in subs:
                group.create_task(consume_workers(self.ctx.bus, sub, stop, self.ctx.options.workers))

    def health(self) -> dict[str, Any]:
        """Extra fields for ``/healthz``; roles override when they have something to say."""
        return {}
