"""structlog set-up: one JSON object per line, or console rendering on a TTY."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog
from opentelemetry import trace

_SECRET_KEYS = ("password", "token", "secret", "authorization")


def _secret(key: object) -> bool:
    return isinstance(key, str) and any(s in key.lower() for s in _SECRET_KEYS)


def _scrub(value: object, depth: int = 0) -> object:
    """Mask secret-named keys at any depth (dicts, lists)."""
    if depth > 6:
        return value
    if isinstance(value, dict):
        return {k: "***" if _secret(k) else _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _redact(_logger: object, _name: str, event: structlog.typing.EventDict
            ) -> structlog.typing.EventDict:
    for key in list(event):
        event[key] = "***" if _secret(key) else _scrub(event[key])
    return event


def _dumps(obj: object, default: object = None) -> str:
    # dataclasses are rendered with repr() (which hides fields declared repr=False, such as
    # passwords and tokens), never field by field
    return orjson.dumps(obj, default=repr, option=orjson.OPT_PASSTHROUGH_DATACLASS).decode()


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced after set-up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _RetriedByTheClient(logging.Filter):
    """aiokafka logs some errors it retries on its own (a partition leader that moved, a topic
    whose leader is not elected yet) at ERROR; they are warnings for whoever reads our logs.
    Known by the error in the record's arguments (aiokafka's errors say ``retriable``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka") and any(
                isinstance(arg, Exception) and getattr(arg, "retriable", False) is True
                for arg in (record.args if isinstance(record.args, tuple) else ())):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_level = logging.INFO


def enabled(level: int) -> bool:
    """Whether records at ``level`` are written: a hot path asks before building a debug
    line (even a filtered call binds a logger first)."""
    return level >= _level


def _trace_ids(_logger: object, _name: str, event: structlog.typing.EventDict
               ) -> structlog.typing.EventDict:
    """The current span's ids, when it is recorded (tracing on)."""
    span = trace.get_current_span()
    if span.is_recording():
        ids = span.get_span_context()
        event.setdefault("trace_id", f"{ids.trace_id:032x}")
        event.setdefault("span_id", f"{ids.span_id:016x}")
    return event


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and route stdlib logging, e.g. aiokafka's, through it)."""
    global _level
    numeric = _level = getattr(logging, level.upper(), logging.INFO)
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer = (
        structlog.dev.ConsoleRenderer(colors=True)
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.addFilter(_RetriedByTheClient())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


def get(name: str | None = None, **context: object) -> structlog.typing.FilteringBoundLogger:
    logger = structlog.get_logger(name) if name else structlog.get_logger()
    return logger.bind(**context) if context else logger
