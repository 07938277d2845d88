"""Which event loop runs the runtime: uvloop when installed (``KAFKA_SAGA_EVENT_LOOP=auto``),
or asyncio's own (``asyncio``); ``uvloop`` insists on it. Every role works on both loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..config import ConfigError

T = TypeVar("T")
CHOICES = ("auto", "asyncio", "uvloop")


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


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
