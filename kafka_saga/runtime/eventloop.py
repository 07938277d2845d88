"""How the runtime process runs: which event loop, and how often the cyclic collector runs.

Event loop: uvloop when installed (``KAFKA_SAGA_EVENT_LOOP=auto``), or asyncio's own
(``asyncio``); ``uvloop`` insists on it. Every role works on both loops.

Collector: a runtime keeps a large, slowly changing heap (finished sagas, windows, ledgers)
while it allocates a few hundred short-lived objects per order. With Python's default
threshold (700) a full collection ran about once every 800 orders and its cost grew with the
heap: 0.28 -> 0.52 ms of an order's ~1.8 ms over 60,000 orders. ``KAFKA_SAGA_GC_THRESHOLD``
(default 20,000 allocations before a young collection; 0 keeps Python's default) brought it
to ~0.05 ms an order, flat.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..config import EVENT_LOOPS, ConfigError

T = TypeVar("T")
CHOICES = EVENT_LOOPS


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``choice`` (None: asyncio's default loop)."""
    if choice not in CHOICES:
        raise ConfigError(f"KAFKA_SAGA_EVENT_LOOP={choice!r}: use {', '.join(CHOICES)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("KAFKA_SAGA_EVENT_LOOP=uvloop but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def tune_gc(threshold: int) -> None:
    """Young-generation threshold of the cyclic collector (0: leave Python's default)."""
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
