"""Traces: the W3C trace context in Kafka record headers, and OpenTelemetry spans on demand.

The context always travels, whether or not anything exports it: every record the platform
writes carries the context current where it is written (:func:`inject`, called by the
producer as ``traceparent``/``tracestate`` headers), and the consume loop makes each
record's context current while it is handled (:func:`consuming`). So one order is one trace
across processes: the context travels in the records, never in memory.

Spans are recorded only when :func:`configure` found an exporter (the standard
``OTEL_TRACES_EXPORTER=console|otlp``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``...) or
an SDK tracer provider was set before (a test's in-memory exporter). Off, the default, the
loop only moves a record's header bytes along (checked, never parsed into objects) in a
context variable of its own: no spans, no ids drawn per record.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..config import ConfigError

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
EXPORTERS = ("none", "console", "otlp")
Headers = list[tuple[str, bytes]]

tracer = trace.get_tracer("kafka_saga")  # a proxy: follows the provider configured later
_propagator = TraceContextTextMapPropagator()
_on = False
_provider: Any = None
_NOTHING: AbstractContextManager[Any] = nullcontext()
# off: the current (traceparent, tracestate) header values, as read
_carried: ContextVar[tuple[bytes, bytes | None] | None] = ContextVar("kafka_saga_trace", default=None)
_TRACEPARENT = re.compile(rb"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def on() -> bool:
    """Whether spans are recorded (an exporter or an SDK provider is set up)."""
    return _on


def configure(default_service: str = "kafka-saga") -> str:
    """Set up span export from the ``OTEL_*`` variables; returns the exporter ("none": off).

    A tracer provider from the SDK set up before (by a test, or by a host process) is used
    as it is. An unknown exporter, or ``otlp`` without the ``otlp`` extra installed, is a
    :class:`~kafka_saga.config.ConfigError`."""
    global _on, _provider
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        _on, _provider = True, None
        return "preset"
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter not in EXPORTERS:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: expected one of {', '.join(EXPORTERS)}")
    if exporter == "none":
        _on = False
        return exporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":  # one JSON object per line, on stdout (the logs are on stderr)
        span_exporter = ConsoleSpanExporter(out=sys.stdout,
                                            formatter=lambda span: span.to_json(indent=None) + "\n")
    else:
        span_exporter = _otlp_exporter()
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or default_service
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _on, _provider = True, provider
    return exporter


def _otlp_exporter() -> Any:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                              os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError("OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                          "pip install 'kafka-saga[otlp]'") from None
    return OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables


def shutdown() -> None:
    """Export what is still buffered (at the end of a run)."""
    global _on
    if _provider is not None:
        _provider.shutdown()
        _on = False


# --- the context in record headers ---------------------------------------------------------
def parent_of(headers: Any) -> otel_context.Context | None:
    """The trace context a record's headers carry; None without one (or a malformed one)."""
    values = _header_values(headers)
    if values is None:
        return None
    carrier = {TRACEPARENT: values[0].decode()}
    if values[1]:
        carrier[TRACESTATE] = values[1].decode("latin-1")
    found = _propagator.extract(carrier)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def _header_values(headers: Any) -> tuple[bytes, bytes | None] | None:
    """A record's (traceparent, tracestate) values when its traceparent is well-formed."""
    if not headers:
        return None
    parent = state = None
    for key, value in headers:
        if key == TRACEPARENT:
            parent = value
        elif key == TRACESTATE:
            state = value
    if parent is None or not isinstance(parent, bytes) or len(parent) != 55 \
            or _TRACEPARENT.fullmatch(parent) is None:
        return None
    return parent, state


def traceparent(span_context: SpanContext | None = None) -> str:
    """The ``traceparent`` of ``span_context`` (default: the current one); "" when none."""
    if span_context is None and not _on:
        carried = _carried.get()
        return carried[0].decode() if carried is not None else ""
    ctx = span_context or trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def trace_id_of(parent: str) -> str | None:
    """The trace id in a ``traceparent`` ("" or malformed: None)."""
    parts = parent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]


def inject(headers: Headers | None) -> Headers | None:
    """``headers`` with the current trace context added (unless they carry one already)."""
    if _on:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return headers
        values: tuple[bytes, bytes | None] = (
            traceparent(ctx).encode(), ctx.trace_state.to_header().encode() if ctx.trace_state else None)
    else:
        carried = _carried.get()
        if carried is None:
            return headers
        values = carried
    if headers:
        for key, _ in headers:
            if key == TRACEPARENT:
                return headers
    out = list(headers) if headers else []
    out.append((TRACEPARENT, values[0]))
    if values[1]:
        out.append((TRACESTATE, values[1]))
    return out


def attach_new() -> object | None:
    """Start a trace here when none is current (random ids, even when nothing exports): a
    token for :func:`detach`, or None when a trace was already current."""
    if traceparent():
        return None
    generator = random.getrandbits
    trace_id, span_id = generator(128) or 1, generator(64) or 1
    if not _on:  # the header itself: no objects (once per order)
        return _carried.set((f"00-{trace_id:032x}-{span_id:016x}-01".encode(), None))
    ids = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ids)))


def attach_traceparent(parent: str) -> object | None:
    """Make a stored ``traceparent`` current (a resumed saga's); a token, or None."""
    values = _header_values(((TRACEPARENT, parent.encode()),)) if parent else None
    if values is None:
        return None
    if not _on:
        return _carried.set(values)
    found = parent_of(((TRACEPARENT, values[0]),))
    return otel_context.attach(found) if found is not None else None


def detach(token: object | None) -> None:
    if token is None:
        return
    if isinstance(token, Token) and token.var is _carried:
        _carried.reset(token)
    else:
        otel_context.detach(token)  # type: ignore[arg-type]


# --- spans --------------------------------------------------------------------------------
def consuming(role: str, group: str, record: Any, name: str | None = None) -> tuple[Any, object] | None:
    """Make ``record``'s trace context current while it is handled; with tracing on, inside
    a consumer span (``name``, default "<role> process <topic>"; a record without a context
    starts a new trace). For :func:`consumed`."""
    if not _on:
        values = _header_values(record.headers)
        return (None, _carried.set(values)) if values is not None else None
    parent = parent_of(record.headers)
    if parent is not None and not trace.get_current_span(parent).get_span_context().trace_flags.sampled:
        return None, otel_context.attach(parent)  # a trace not sampled: carried, not recorded
    span = tracer.start_span(name or f"{role} process {record.topic}", context=parent, kind=SpanKind.CONSUMER,
                             attributes={"messaging.system": "kafka",
                                         "messaging.operation.type": "process",
                                         "messaging.destination.name": record.topic,
                                         "messaging.destination.partition.id": str(record.partition),
                                         "messaging.kafka.offset": record.offset,
                                         "messaging.consumer.group.name": group,
                                         "kafka_saga.role": role})
    return span, otel_context.attach(trace.set_span_in_context(span))


def consumed(entered: tuple[Any, object] | None, rejected: str | None = None) -> None:
    """Leave what :func:`consuming` entered; ``rejected``: the reason the record was refused."""
    if entered is None:
        return
    span, token = entered
    detach(token)
    if span is not None:
        if rejected is not None:
            span.set_attribute("kafka_saga.dead_letter_reason", rejected)
            span.set_status(Status(StatusCode.ERROR, rejected))
        span.end()


def span(name: str, attributes: dict[str, Any] | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Any]:
    """A span around a block, current inside it (exceptions recorded); nothing when off, or
    inside a trace that is not sampled (parent-based sampling: its spans would not be)."""
    if not _on:
        return _NOTHING
    current = trace.get_current_span().get_span_context()
    if current.is_valid and not current.trace_flags.sampled:
        return _NOTHING
    return tracer.start_as_current_span(name, attributes=attributes, kind=kind)


def describe(**attributes: Any) -> None:
    """Add attributes to the current span (when tracing is on)."""
    if _on:
        trace.get_current_span().set_attributes(
            {k: v for k, v in attributes.items() if v is not None and v != ""})


def failed(reason: str, **attributes: Any) -> None:
    """Mark the current span failed with ``reason`` (when tracing is on)."""
    if _on:
        current = trace.get_current_span()
        current.set_attributes({"error.type": reason, **attributes})
        current.set_status(Status(StatusCode.ERROR, reason))


@contextmanager
def server_span(name: str, headers: Any, attributes: dict[str, Any]) -> Iterator[None]:
    """An incoming request's span, child of its ``traceparent`` (or a new trace; random ids
    even when tracing is off, so what the request writes carries one)."""
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in (TRACEPARENT, TRACESTATE)}
    parent = _propagator.extract(carrier) if carrier else None
    if parent is not None and not trace.get_current_span(parent).get_span_context().is_valid:
        parent = None
    if _on:
        with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER,
                                          attributes=attributes):
            yield
        return
    values = _header_values([(k, v.encode()) for k, v in carrier.items()]) if carrier else None
    token = _carried.set(values) if values is not None else attach_new()
    try:
        yield
    finally:
        detach(token)
