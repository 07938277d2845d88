"""Fencing a paused instance: no side effect until it knows it still owns its partitions.

A process frozen longer than its session (SIGSTOP, a stalled VM, a long GC) loses its
partitions to another member; thawed, it would carry on with the work it had in hand (a
payment, an event) before its consumer notices. On Apache Kafka a transactional producer is
fenced by the broker; this fence holds on any broker:

* a ticker notes the event loop's time every ``tick_s``; a gap longer than ``threshold_s``
  (a third of the session time-out: shorter than any pause that can cost the membership)
  means the process was paused, and the fence turns **suspect**;
* while suspect, :meth:`Fence.owned` — called before every side effect — waits; the fence
  asks the group coordinator, with a heartbeat of each registered consumer's own generation
  and member id, whether the membership still holds;
* all confirmed: the fence clears and the work goes on. Any refused (unknown member, old
  generation, a rebalance under way): the fence is **fenced**; every waiting and later side
  effect raises :class:`Fenced` (retriable: a saga step is dropped, a consume loop restarts)
  until a new assignment (:meth:`Fence.assigned`) says what this instance owns now.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.protocol.group import HeartbeatRequest

from .. import logs

log = logs.get("fence")
OK, SUSPECT, FENCED = "ok", "suspect", "fenced"


class Fenced(RuntimeError):
    """This instance may have lost its partitions: the side effect was not made."""


async def still_member(consumer: Any) -> bool:
    """Whether the group coordinator still knows ``consumer`` in its current generation."""
    coordinator = consumer._coordinator  # noqa: SLF001 - aiokafka keeps membership there
    if coordinator is None or coordinator.generation < 0 or not coordinator.member_id:
        return False
    request = HeartbeatRequest(coordinator.group_id, coordinator.generation, coordinator.member_id)
    try:
        response = await coordinator._send_req(request)  # noqa: SLF001
    except Exception:  # noqa: BLE001 - no answer is no confirmation
        return False
    return bool(response.error_code == 0)


class Fence:
    """One process's fence for one role's side effects (see the module docstring)."""

    def __init__(self, threshold_s: float, tick_s: float = 0.1, refused: Any = None) -> None:
        self.threshold_s = threshold_s
        self.refused = refused  # a counter to increment per refused side effect, if any
        self.tick_s = tick_s
        self.state = OK
        self.last = time.monotonic()
        self.consumers: set[Any] = set()
        self.pauses = 0  # suspicions, in all
        self.fenced = 0  # side effects refused, in all
        self._settled = asyncio.Event()
        self._settled.set()
        self._confirming: asyncio.Task[None] | None = None

    def register(self, consumer: Any) -> None:
        self.consumers.add(consumer)

    def unregister(self, consumer: Any) -> None:
        self.consumers.discard(consumer)

    async def owned(self) -> None:
        """Return when side effects may go on; raise :class:`Fenced` when they must not."""
        self._look()
        if self.state == SUSPECT:
            await self._settled.wait()
        if self.state == FENCED:
            self.fenced += 1
            if self.refused is not None:
                self.refused.inc()
            raise Fenced("this instance may have lost its partitions (it was paused); "
                         "waiting for the group to say what it owns")

    def assigned(self) -> None:
        """A completed assignment: what this instance owns is known again."""
        if self.state != OK:
            log.info("fence cleared by a new assignment", was=self.state)
        self.state = OK
        self.last = time.monotonic()
        self._settled.set()

    async def run(self, stop: asyncio.Event) -> None:
        """The ticker (one per role)."""
        while not stop.is_set():
            self._look()
            await asyncio.sleep(self.tick_s)

    def _look(self) -> None:
        now = time.monotonic()
        gap = now - self.last
        self.last = now
        if gap > self.threshold_s and self.state == OK:
            self.state = SUSPECT
            self.pauses += 1
            self._settled.clear()
            log.warning("this process was paused: side effects held until the group confirms "
                        "its membership", paused_s=round(gap, 2))
            self._confirming = asyncio.ensure_future(self._confirm())

    async def _confirm(self) -> None:
        consumers = list(self.consumers)
        results = await asyncio.gather(*(still_member(c) for c in consumers))
        if self.state != SUSPECT:  # an assignment settled it meanwhile
            return
        if all(results):
            self.state = OK
            log.info("membership confirmed after the pause: side effects resume",
                     consumers=len(consumers))
        else:
            self.state = FENCED
            log.warning("membership lost during the pause: side effects refused until the "
                        "next assignment", consumers=len(consumers), refused=results.count(False))
        self._settled.set()
