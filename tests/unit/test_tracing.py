"""The trace context in record headers, and the spans around a record's handling
(kafka_saga.observation.tracing): off (the default) and on (an SDK tracer, in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from kafka_saga.config import ConfigError
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import EventType, Step, dlq_headers
from kafka_saga.core.dead_letters import reinjection_headers
from kafka_saga.core.finished import pack, unpack
from kafka_saga.core.saga import Saga
from kafka_saga.core.submission import new_order_command
from kafka_saga.observation import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def record(headers: list[tuple[str, bytes]] | None, topic: str = "orders.commands") -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=7, headers=headers)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (the module's tracer only: no global provider is set)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_on", True)
    yield exporter
    provider.shutdown()


# --- off: the context travels, nothing is recorded --------------------------------------------
def test_off_a_record_s_context_goes_on_what_its_handling_writes() -> None:
    assert not tracing.on()
    entered = tracing.consuming("orchestrator", "g", record([("traceparent", PARENT.encode())]))
    try:
        out = tracing.inject([("reply-partition", b"2")])
    finally:
        tracing.consumed(entered)
    assert out == [("reply-partition", b"2"), ("traceparent", PARENT.encode())]
    assert tracing.inject(None) is None  # and once it is handled, nothing is current


def test_a_tracestate_travels_with_its_traceparent() -> None:
    headers = [("traceparent", PARENT.encode()), ("tracestate", b"vendor=abc")]
    entered = tracing.consuming("tracker", "g", record(headers))
    try:
        out = tracing.inject([])
    finally:
        tracing.consumed(entered)
    assert out == headers


@pytest.mark.parametrize("headers", [None, [], [("other", b"x")], [("traceparent", b"garbage")],
                                     [("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")]])
def test_no_or_a_malformed_context_is_no_context_not_an_error(headers) -> None:
    assert tracing.parent_of(headers) is None
    assert tracing.consuming("aggregator", "g", record(headers)) is None


def test_headers_that_carry_a_context_keep_theirs() -> None:
    own = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]
    token = tracing.attach_traceparent(PARENT)
    try:
        assert tracing.inject(own) == own
    finally:
        tracing.detach(token)


def test_a_new_trace_has_random_ids_even_when_nothing_exports() -> None:
    first = tracing.attach_new()
    try:
        one = tracing.traceparent()
        assert tracing.attach_new() is None  # one is current: kept
    finally:
        tracing.detach(first)
    second = tracing.attach_new()
    try:
        other = tracing.traceparent()
    finally:
        tracing.detach(second)
    assert tracing.trace_id_of(one) and tracing.trace_id_of(other)
    assert tracing.trace_id_of(one) != tracing.trace_id_of(other)
    assert tracing.traceparent() == ""  # none current again


def test_trace_id_of() -> None:
    assert tracing.trace_id_of(PARENT) == TRACE
    for bad in ("", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-abc-def-01"):
        assert tracing.trace_id_of(bad) is None


def test_off_spans_are_nothing() -> None:
    with tracing.span("saga step Payment") as span:
        assert span is None
    tracing.describe(order_id="o1")  # no effect, no error
    tracing.failed("boom")


# --- on: spans with the right parents ---------------------------------------------------------
def test_on_a_record_is_handled_in_a_consumer_span_child_of_its_context(exported) -> None:
    entered = tracing.consuming("orchestrator", "orchestrator", record([("traceparent", PARENT.encode())]))
    with tracing.span("saga step Payment", {"step": "Payment"}):
        written = tracing.inject(None)
    tracing.consumed(entered)
    step, consumer = exported.get_finished_spans()
    assert consumer.name == "orchestrator process orders.commands"
    assert consumer.kind is trace.SpanKind.CONSUMER
    assert f"{consumer.context.trace_id:032x}" == TRACE
    assert f"{consumer.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert consumer.attributes["messaging.kafka.offset"] == 7
    assert step.parent.span_id == consumer.context.span_id
    # what the step writes names the step as its parent
    assert written == [("traceparent", f"00-{TRACE}-{step.context.span_id:016x}-01".encode())]


def test_on_a_record_without_context_starts_a_new_trace(exported) -> None:
    tracing.consumed(tracing.consuming("tracker", "tracker", record(None)))
    (span,) = exported.get_finished_spans()
    assert span.parent is None and span.context.trace_id != int(TRACE, 16)


def test_on_a_rejected_record_s_span_is_an_error(exported) -> None:
    tracing.consumed(tracing.consuming("aggregator", "a", record(None)), rejected="decode_error")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["kafka_saga.dead_letter_reason"] == "decode_error"


def test_on_an_exception_in_a_span_is_recorded(exported) -> None:
    with pytest.raises(TimeoutError), tracing.span("payment attempt"):
        raise TimeoutError("no answer")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_on_the_request_span_continues_the_caller_s_trace(exported) -> None:
    with tracing.server_span("POST /orders", {"Traceparent": PARENT}, {"http.route": "/orders"}):
        written = tracing.inject(None)
    (span,) = exported.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE and span.kind is trace.SpanKind.SERVER
    assert written is not None and written[0][1].decode().split("-")[2] == f"{span.context.span_id:016x}"


def test_off_the_request_continues_the_caller_s_trace_or_starts_one() -> None:
    with tracing.server_span("POST /orders", {"traceparent": PARENT}, {}):
        assert tracing.traceparent() == PARENT
    with tracing.server_span("POST /orders", {"traceparent": "bad"}, {}):
        started = tracing.traceparent()
    assert tracing.trace_id_of(started) not in (None, TRACE)


# --- configuration ------------------------------------------------------------------------------
def test_an_unknown_exporter_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing.configure()


def test_export_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure() == "none" and not tracing.on()


# --- a saga keeps its trace -------------------------------------------------------------------
def test_a_saga_keeps_the_trace_of_its_created_event_through_its_stored_record() -> None:
    command = new_order_command("ann", "latte", 1, Catalog.load(None))
    saga = Saga(command.saga_id, command.snapshot, command.command_id)
    saga.apply(saga.event(EventType.ORDER_CREATED, Step.VALIDATION, metadata={"traceparent": PARENT}))
    assert saga.trace == PARENT
    restored = unpack(saga.saga_id, pack(saga, 0, full=True))
    assert restored is not None and restored.trace == PARENT
    old_record = pack(saga, 0, full=True).replace(b',"' + PARENT.encode() + b'"]', b"]")
    assert unpack(saga.saga_id, old_record).trace == ""  # written before sagas had one


def test_a_dead_letter_keeps_its_trace_and_a_reinjected_one_continues_it() -> None:
    original = [("reply-partition", b"1"), ("traceparent", PARENT.encode())]
    letter = dlq_headers(reason="decode_error", error="bad", topic="orders.commands", partition=1,
                         offset=9, role="orchestrator", retry_count=0, original=original)
    assert ("traceparent", PARENT.encode()) in letter
    again = reinjection_headers(SimpleNamespace(headers=letter))
    assert tracing.parent_of(again) is not None
    entered = tracing.consuming("orchestrator", "g", record(again))
    try:
        assert tracing.traceparent() == PARENT
    finally:
        tracing.consumed(entered)


def test_on_a_trace_not_sampled_is_carried_and_not_recorded(exported) -> None:
    unsampled = PARENT[:-2] + "00"
    entered = tracing.consuming("orchestrator", "g", record([("traceparent", unsampled.encode())]))
    try:
        with tracing.span("saga step Payment") as span:
            assert span is None
            assert tracing.inject(None) == [("traceparent", unsampled.encode())]
    finally:
        tracing.consumed(entered)
    assert exported.get_finished_spans() == ()
