"""Participant answers that running sagas wait for, read from ``orders.replies``.

A saga asks (e.g. an inventory reservation) and waits for the answer addressed to it. The
deadline must measure the participant, not this process: it counts from when the request
became readable (acknowledged; under exactly-once, committed), and when it passes, the wait
goes on until this process has read ``orders.replies`` up to where that partition ended at
the deadline. An answer that was already there, unread because the process was busy (or,
under exactly-once, behind a transaction still open), is taken; only a participant that
really did not answer in time times out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import logs
from ..bus.client import Bus
from ..bus.transactions import TRANSACTION_TIMEOUT_MS
from ..core.contracts import Command, CommandType

log = logs.get("orchestrator")
Answer = tuple[bool, str]  # (approved, reason)


class Answers:
    """The sagas waiting for an answer, and how far each replies partition has been read."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.waiters: dict[str, asyncio.Future[Answer]] = {}
        self.read: dict[int, int] = {}  # orders.replies partition -> next offset to read
        self._ends: tuple[float, asyncio.Future[dict[int, int]]] | None = None

    def seen(self, record: Any) -> None:
        """A record of ``orders.replies`` was read (whatever it holds)."""
        self.read[record.partition] = record.offset + 1

    def deliver(self, command: Command) -> None:
        """A participant's answer: wake the saga waiting for it (if any still waits)."""
        waiter = self.waiters.get(command.saga_id)
        if waiter is not None and not waiter.done():
            waiter.set_result((command.type is CommandType.INVENTORY_RESERVED,
                               command.metadata.get("reason", "")))

    def assigned(self, partition: int, committed: int) -> None:
        self.read[partition] = committed

    def revoked(self, partition: int) -> None:
        self.read.pop(partition, None)

    def expect(self, saga_id: str) -> asyncio.Future[Answer]:
        waiter = self.waiters[saga_id] = asyncio.get_running_loop().create_future()
        return waiter

    def done(self, saga_id: str) -> None:
        self.waiters.pop(saga_id, None)

    async def wait(self, waiter: asyncio.Future[Answer], partition: int, timeout: float) -> Answer:
        """The answer, or TimeoutError once ``timeout`` has passed since the request was
        acknowledged *and* replies partition ``partition`` was read up to its end as of then."""
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if partition < 0:
                raise
        expired = time.monotonic()
        try:
            end = (await self._ends_after(expired)).get(partition, 0)
        except Exception as exc:  # noqa: BLE001 - no end known: the deadline stands
            log.warning("replies end unknown at a deadline", error=repr(exc)[:200])
            raise TimeoutError from None
        # Reading may lag behind for two reasons: the process is busy (a deadline's worth of
        # patience), or, under exactly-once, a transaction still open on orders.replies holds
        # committed readers back until its coordinator ends it (at most the transaction
        # time-out), e.g. while a broker's transactions move to another broker.
        patience = timeout + (TRANSACTION_TIMEOUT_MS / 1000 if self.bus.exactly_once else 0.0)
        while not waiter.done() and self.read.get(partition, 0) < end:
            if time.monotonic() - expired > patience:  # the reading itself is stuck: give up
                break
            await asyncio.wait([waiter], timeout=0.05)
        if waiter.done():
            return waiter.result()
        raise TimeoutError

    async def _ends_after(self, after: float) -> dict[int, int]:
        """The exact ends of ``orders.replies`` read at or after ``after`` (monotonic): one
        read serves every deadline that expired before it started."""
        current = self._ends
        if current is None or current[0] < after or (
                current[1].done() and current[1].exception() is not None):
            async def read() -> dict[int, int]:
                ends = await self.bus.end_offsets(self.bus.topics.replies)
                return {tp.partition: offset for tp, offset in ends.items()}

            current = self._ends = (time.monotonic(), asyncio.ensure_future(read()))
        return await asyncio.shield(current[1])
