"""``kafka-saga`` with the OpenTelemetry SDK's in-memory span exporter set up first; at
exit, the finished spans go to ``$KAFKA_SAGA_TEST_SPANS`` as a JSON list (for the tests).

    python -m tests.support.traced_runtime run --roles orchestrator,inventory
"""

from __future__ import annotations

import json
import os
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def main() -> int:
    target = os.environ["KAFKA_SAGA_TEST_SPANS"]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(
        {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", "kafka-saga")}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    from kafka_saga.cli import main as cli

    try:
        return cli(sys.argv[1:])
    finally:
        spans = [json.loads(span.to_json(indent=None)) for span in exporter.get_finished_spans()]
        with open(target + ".part", "w") as out:
            json.dump(spans, out)
        os.replace(target + ".part", target)


if __name__ == "__main__":
    sys.exit(main())
