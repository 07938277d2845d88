"""What every role receives, and the shape of a role."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..bus.client import Bus
from ..config import RoleOptions, Settings


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
    """A long-running role: ``run`` returns when ``stop`` is set, after committing its work."""

    name: ClassVar[str] = ""

    def __init__(self, ctx: RoleContext) -> None:
        self.ctx = ctx

    async def run(self, stop: asyncio.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """Extra fields for ``/healthz``; roles override when they have something to say."""
        return {}
