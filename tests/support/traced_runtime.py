"""``kafka-saga`` with an OpenTelemetry SDK tracer provider set up first: the in-memory
span exporter (``KAFKA_SAGA_TRACE_EXPORTER=memory``, the default) or one that drops every
span (``noop``: the cost of making spans, for the benchmark). At exit, the spans kept go to
``$KAFKA_SAGA_TEST_SPANS`` as a JSON list, when it is set.

    python -m tests.support.traced_runtime run --roles orchestrator,inventory
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class DroppingExporter(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def main() -> int:
    target = os.environ.get("KAFKA_SAGA_TEST_SPANS")
    provider = TracerProvider(resource=Resource.create(
        {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "kafka-saga")}))
    exporter: SpanExporter
    if os.environ.get("KAFKA_SAGA_TRACE_EXPORTER", "memory") == "noop":
        exporter = DroppingExporter()  # batched, as a real exporter is (OTEL_TRACES_EXPORTER)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        exporter = InMemorySpanExporter()  # each span kept as it ends
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    from kafka_saga.cli import main as cli

    try:
        return cli(sys.argv[1:])
    finally:
        if target and isinstance(exporter, InMemorySpanExporter):
            _write(exporter, target)


def _write(exporter: InMemorySpanExporter, target: str) -> None:
    spans = [json.loads(span.to_json(indent=None)) for span in exporter.get_finished_spans()]
    with open(target + ".part", "w") as out:
        json.dump(spans, out)
    os.replace(target + ".part", target)


if __name__ == "__main__":
    sys.exit(main())
