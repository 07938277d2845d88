"""Admission at the edge: POST /orders answers 503 while too many commands wait.

The backlog is what the orchestrator's consumer group has not committed on
``orders.commands``: the exact end minus the committed offset, summed over the partitions
(nothing committed: the whole partition waits). With ``KAFKA_SAGA_MAX_BACKLOG`` > 0 a task
running with the query app measures it every :data:`INTERVAL_S`; otherwise nothing runs.
A value older than :data:`STALE_S` is unknown, and an unknown backlog admits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient

from .. import logs
from ..bus.client import Bus
from ..config import Settings
from ..observation.http import json_error

log = logs.get("query")
INTERVAL_S = 1.0  # between two measurements
STALE_S = 10.0  # a measurement older than this is unknown
MEASURE_TIMEOUT_S = 5.0
RATE_WINDOW = 5  # the drain rate is averaged over this many intervals
RETRY_UNKNOWN_S, RETRY_MIN_S, RETRY_MAX_S = 5, 1, 60


class Backlog:
    """Commands waiting for the orchestrator, and the rate at which they are committed."""

    def __init__(self, bus: Bus, limit: int, interval_s: float = INTERVAL_S,
                 stale_s: float = STALE_S) -> None:
        self.bus, self.limit, self.interval_s, self.stale_s = bus, limit, interval_s, stale_s
        self.group = bus.topics.group("orchestrator")
        self._value: int | None = None
        self._at = 0.0  # monotonic time of the last measurement
        self._samples: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW + 1)  # (time, committed)
        self._admin: AIOKafkaAdminClient | None = None
        self._failing = False

    @property
    def value(self) -> int | None:
        """The last measured backlog; None if never measured or older than ``stale_s``."""
        if self._value is None or time.monotonic() - self._at > self.stale_s:
            return None
        return self._value

    @property
    def rate(self) -> float | None:
        """Commands committed per second over the recent measurements; None if unknown."""
        if self.value is None or len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return max(0.0, (c1 - c0) / (t1 - t0)) if t1 > t0 else None

    def retry_after(self, backlog: int) -> int:
        """Seconds until the excess should have drained: 1..60, 5 if the rate is unknown."""
        rate = self.rate
        if rate is None:
            return RETRY_UNKNOWN_S
        if rate <= 0:  # nothing drained lately: the longest advice
            return RETRY_MAX_S
        return int(min(RETRY_MAX_S, max(RETRY_MIN_S, math.ceil((backlog - self.limit) / rate))))

    def refusal(self) -> web.Response | None:
        """The 503 answer while the known backlog is above the limit; None admits."""
        backlog = self.value
        if backlog is None or backlog <= self.limit:
            return None
        retry = self.retry_after(backlog)
        return json_error(
            503, f"too many orders are waiting to be processed ({backlog} commands, limit "
            f"{self.limit}); nothing was submitted, retry after {retry}s",
            headers={"Retry-After": str(retry)}, reason="backlog", backlog=backlog,
            max_backlog=self.limit, retry_after_s=retry)

    async def measure(self) -> tuple[int, int]:
        """``(backlog, committed total)`` now; never joins the group nor commits."""
        ends = await self.bus.end_offsets(self.bus.topics.commands)
        if self._admin is None:
            self._admin = self.bus.admin()
            await self._admin.start()
        # The partitions are always named: some brokers cannot answer "all of the group".
        offsets = await self._admin.list_consumer_group_offsets(self.group, partitions=list(ends))
        committed = {tp: max(0, offsets[tp].offset) if tp in offsets else 0 for tp in ends}
        return sum(max(0, end - committed[tp]) for tp, end in ends.items()), sum(committed.values())

    def _record(self, backlog: int, committed: int) -> None:
        now = time.monotonic()
        if self._failing:
            self._failing = False
            log.info("backlog measurable again", backlog=backlog)
        if now - self._at > self.stale_s:
            self._samples.clear()  # a rate across an outage says nothing about now
        self._samples.append((now, committed))
        self._value, self._at = backlog, now

    async def run(self, stop: asyncio.Event) -> None:
        """Measure every ``interval_s`` until ``stop``; a failure keeps the last value."""
        while not stop.is_set():
            started = time.monotonic()
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancellation
                async with asyncio.timeout(MEASURE_TIMEOUT_S):
                    measured = await self.measure()
            except Exception as exc:  # noqa: BLE001 - broker unreachable, timeouts, protocol errors
                await self.close()
                if not self._failing:
                    self._failing = True
                    log.warning("backlog not measurable; keeping the last value",
                                unknown_after_s=self.stale_s, error=repr(exc)[:300])
            else:
                self._record(*measured)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.interval_s - (time.monotonic() - started))):
                    await stop.wait()

    async def close(self) -> None:
        """Release the admin client (a later measurement opens a new one)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def running(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the measuring task lives as long as the app."""
        log.info("admission limit on", max_backlog=self.limit, group=self.group)
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name="admission-backlog")
        yield
        stop.set()
        task.cancel()
        await asyncio.wait({task}, timeout=MEASURE_TIMEOUT_S)  # never hold up the shutdown
        await self.close()


BACKLOG = web.AppKey("backlog", Backlog)


def install(app: web.Application, bus: Bus | None, settings: Settings | None) -> None:
    """Attach a :class:`Backlog` running with ``app``, only when ``max_backlog`` > 0."""
    if bus is not None and settings is not None and settings.max_backlog > 0:
        app[BACKLOG] = backlog = Backlog(bus, settings.max_backlog)
        app.cleanup_ctx.append(backlog.running)


def refusal(request: web.Request) -> web.Response | None:
    """The 503 for a new order while the backlog is above the limit; None admits."""
    backlog = request.app.get(BACKLOG)
    return None if backlog is None else backlog.refusal()
