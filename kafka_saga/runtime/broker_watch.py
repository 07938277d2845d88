"""Notices a broker that lost its data, or an embedded broker that died, and says so.

A memory-only broker (the embedded Tansu) forgets every topic and offset when it restarts.
Rather than let the roles wait on topics that no longer exist, the watch checks that our
topics are still there; when they are gone it logs one clear error, counts it
(``broker_resets``) and creates them again so the platform carries on with what comes
next — what was written before is gone. An embedded broker that exits stops the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .. import logs
from ..bus.client import Bus
from ..bus.embedded import EmbeddedBroker
from ..bus.kafka_engine import KafkaCluster
from ..bus.loop import wait_unless_stopped

log = logs.get("broker-watch")
EXIT_BROKER_DIED = 4


class BrokerWatch:
    def __init__(self, bus: Bus, embedded: EmbeddedBroker | KafkaCluster | None, on_fatal: Callable[[int], None],
                 interval_s: float = 5.0) -> None:
        self.bus = bus
        self.embedded = embedded
        self.on_fatal = on_fatal
        self.interval_s = interval_s

    async def check(self) -> str:
        """One check: ``ok``, ``unreachable``, ``recreated`` or ``died``."""
        if self.embedded is not None and not self.embedded.alive():
            log.critical(f"the {self.embedded.kind} this process started has exited; stopping",
                         bootstrap=self.bus.bootstrap)
            self.on_fatal(EXIT_BROKER_DIED)
            return "died"
        try:
            existing = set(await asyncio.wait_for(self.bus.list_topics(), 10))
        except Exception as exc:  # noqa: BLE001 - an outage: the breaker and the loops handle it
            log.warning("broker check failed", bootstrap=self.bus.bootstrap, error=str(exc)[:200])
            return "unreachable"
        missing = sorted(set(self.bus.topics.all()) - existing)
        if not missing:
            return "ok"
        self.bus.metrics.broker_resets.inc()
        log.error("the broker lost our topics: it restarted without its data (a memory-only "
                  "broker?); what was written before is gone; creating the topics again",
                  bootstrap=self.bus.bootstrap, missing=missing)
        await self.bus.ensure_topics()
        return "recreated"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await wait_unless_stopped(stop, self.interval_s):
                return
            if await self.check() == "died":
                return
