"""Logging set-ups a test needs for a while, then puts back exactly as they were."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import structlog

from kafka_saga import logs


@contextlib.contextmanager
def configured_logs(level: str = "debug") -> Iterator[None]:
    """Log from ``level`` up (JSON) for the block, then restore the previous set-up."""
    root = logging.getLogger()
    saved = structlog.get_config(), root.handlers[:], root.level
    logs.configure(level, "json")
    try:
        yield
    finally:
        structlog.configure(**saved[0])
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])
