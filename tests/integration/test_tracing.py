"""One order, one trace, across processes: two runtimes (orchestrator, inventory and the
query API in one; aggregator and tracker in the other) run with the OpenTelemetry SDK's
in-memory exporter (tests/support/traced_runtime.py) and write their spans out at SIGTERM.

The trace context travels only in the records' headers: the tree is checked across both
processes' spans, for a caller's traceparent given to POST /orders, a payment retry, a
compensation, a dead letter, and an OrderCreate written without any trace header.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.ports import free_port
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import headers_dict
from kafka_saga.core.dead_letters import read_dead_letter
from kafka_saga.core.submission import new_order_command
from tests.support.burst import spawn_runtime
from tests.support.spans import Spans, service

HARNESS = ("-m", "tests.support.traced_runtime")  # a module: a script would shadow the stdlib
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Runtimes:
    """The two traced runtime processes."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], url: str, spans: list[Path],
                 logs: list[Path]) -> None:
        self.procs, self.url, self.span_files, self.logs = procs, url, spans, logs

    def stop(self, prefix: str) -> Spans:
        """SIGTERM both; each writes its spans on the way out."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path, log in zip(self.span_files, self.logs, strict=True):
            assert path.exists(), log.read_text()[-3000:]
        return Spans([s for path in self.span_files for s in json.loads(path.read_text())], prefix)


@pytest.fixture
def two_runtimes(settings, tmp_path) -> Iterator[Runtimes]:
    port = free_port()
    spans = [tmp_path / "a.spans.json", tmp_path / "b.spans.json"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    common = {"PAYMENT_MAX_RETRIES": "1", "PAYMENT_BACKOFF_S": "0.01"}
    procs = [
        spawn_runtime(settings, str(logs[0]), "orchestrator,inventory,query", HARNESS,
                      QUERY_API_PORT=str(port), OTEL_SERVICE_NAME="saga-a",
                      KAFKA_SAGA_TEST_SPANS=str(spans[0]), **common),
        spawn_runtime(settings, str(logs[1]), "aggregator,tracker", HARNESS,
                      OTEL_SERVICE_NAME="saga-b", KAFKA_SAGA_TEST_SPANS=str(spans[1]), **common),
    ]
    runtimes = Runtimes(procs, f"http://127.0.0.1:{port}", spans, logs)
    try:
        yield runtimes
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _ready(session: aiohttp.ClientSession, url: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/readyz") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError(logs[0].read_text()[-3000:])


async def _order(session: aiohttp.ClientSession, url: str, attributes: dict[str, str],
                 traceparent: str | None = None) -> str:
    headers = {"traceparent": traceparent} if traceparent else {}
    body = {"user": "tracy", "item": "latte", "quantity": 1, "attributes": attributes}
    async with session.post(url + "/orders", json=body, headers=headers) as answer:
        assert answer.status == 202, await answer.text()
        return (await answer.json())["order_id"]


async def _ended(session: aiohttp.ClientSession, url: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        async with session.get(f"{url}/orders/{order_id}") as answer:
            if answer.status == 200:
                order = await answer.json()
                if order["status"] != "pending":
                    return order
        await asyncio.sleep(0.2)
    raise AssertionError(f"order {order_id} did not end")


async def test_one_order_is_one_trace_across_two_processes(two_runtimes: Runtimes, bus, settings) -> None:
    url = two_runtimes.url
    async with aiohttp.ClientSession() as session:
        await _ready(session, url, two_runtimes.logs)
        caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        retried = await _order(session, url, {"payment_errors": "1"}, caller)
        compensated = await _order(session, url, {"inventory": "unavailable"})
        dead = await _order(session, url, {"payment_errors": "9"})
        bare = new_order_command("tracy", "latte", 1, Catalog.load(None))  # no trace header
        await bus.producer.send(bus.topics.commands, bare.encode(), bare.key)
        await bus.producer.flush()
        orders = {name: await _ended(session, url, order_id) for name, order_id in (
            ("retried", retried), ("compensated", compensated), ("dead", dead),
            ("bare", bare.snapshot.order_id))}
    assert [orders[n]["status"] for n in orders] == ["approved", "rejected", "failed", "approved"]
    assert orders["retried"]["trace_id"] == CALLER_TRACE  # the caller's trace, end to end
    letters: list[Any] = []
    await read_topic(bus, bus.topics.dlq, letters.append, 60)
    await asyncio.sleep(2)  # the tracker and the aggregator read the last events
    spans = two_runtimes.stop(settings.topic_prefix)

    # --- the caller's order: every hop, both processes, the right parents ---
    trace_id = CALLER_TRACE
    post = spans.one(trace_id, "POST /orders")
    assert post["parent_id"] == "0x" + CALLER_SPAN and post["kind"] == "SpanKind.SERVER"
    assert post["attributes"]["order_id"] == retried
    sent = spans.one(trace_id, "send orders.commands")  # the OrderCreate command
    assert spans.parent(sent) is post and sent["kind"] == "SpanKind.PRODUCER"
    created = spans.one(trace_id, "orchestrator process orders.commands")
    assert spans.parent(created) is sent
    for step in ("Validation", "Payment", "Inventory", "Finalize"):
        span = spans.one(trace_id, f"saga step {step}")
        assert spans.parent(span) is created, spans.chain(span)
        assert span["attributes"]["order_id"] == retried and span["attributes"]["step"] == step
        assert span["attributes"]["user"] == "tracy" and "saga_id" in span["attributes"]
    attempts = spans.named(trace_id, "payment attempt")
    assert [a["attributes"]["retry_count"] for a in attempts] == [0, 1]
    assert attempts[0]["status"]["status_code"] == "ERROR"  # the first try failed: recorded
    assert attempts[1]["status"]["status_code"] == "UNSET"
    assert all(spans.parent(a)["name"] == "saga step Payment" for a in attempts)
    request = spans.one(trace_id, "inventory request")
    assert spans.parent(request)["name"] == "saga step Inventory"
    participant = spans.one(trace_id, "inventory process orders.inventory")
    assert spans.parent(participant) is request  # across the topic
    answer = spans.one(trace_id, "orchestrator process orders.replies")
    assert spans.parent(answer) is participant
    folds = spans.named(trace_id, "aggregator fold")
    rules = spans.named(trace_id, "tracker rules")
    assert len(folds) >= 5 and len(rules) >= 5  # created, 4 approvals (at least)
    for span in folds + rules:  # each event's span in the other process: child of its writer
        assert service(span) == "saga-b" and span["kind"] == "SpanKind.CONSUMER"
        assert service(spans.parent(span)) == "saga-a"
        assert spans.parent(span)["name"].startswith("saga step") or \
            spans.parent(span)["name"] == "orchestrator process orders.commands"
        assert span["attributes"]["order_id"] == retried
    assert {service(s) for s in spans.of_trace(trace_id)} == {"saga-a", "saga-b"}
    ARTIFACTS.mkdir(exist_ok=True)  # the tree, for whoever reads the run
    (ARTIFACTS / "trace-one-order.txt").write_text(spans.tree(trace_id) + "\n")
    assert all(s["context"]["trace_id"] == "0x" + trace_id for s in spans.of_trace(trace_id))

    # --- a compensation is its own span, in its order's trace ---
    trace_id = orders["compensated"]["trace_id"]
    assert trace_id and trace_id != CALLER_TRACE
    compensation = spans.one(trace_id, "saga compensate Payment")
    assert compensation["attributes"]["outcome"] == "rejected"
    assert spans.parent(compensation)["name"] == "saga step Inventory"

    # --- a dead letter: the error recorded, the DLQ record keeps the trace ---
    trace_id = orders["dead"]["trace_id"]
    payment = spans.one(trace_id, "saga step Payment")
    assert payment["status"]["status_code"] == "ERROR"
    assert len(spans.named(trace_id, "payment attempt")) == 2
    letter = [r for r in letters if read_dead_letter(r).reason == "payment_retries_exhausted"]
    assert len(letter) == 1
    assert headers_dict(letter[0].headers)["traceparent"].split("-")[1] == trace_id

    # --- no trace header: a new trace starts, the order still gets one ---
    trace_id = orders["bare"]["trace_id"]
    assert trace_id and trace_id not in (CALLER_TRACE, orders["compensated"]["trace_id"])
    root = spans.one(trace_id, "orchestrator process orders.commands")
    assert root["parent_id"] is None
    assert spans.one(trace_id, "saga step Finalize")["attributes"]["order_id"] == bare.snapshot.order_id


async def test_a_saga_resumed_by_another_process_continues_its_trace(settings, tmp_path) -> None:
    """The orchestrator is stopped while a saga waits for the inventory (no participant runs);
    the next one resumes it from its state store and carries on in the same trace."""
    port = free_port()
    files = {name: tmp_path / f"{name}.spans.json" for name in ("query", "first", "second")}
    logs = {name: tmp_path / f"{name}.log" for name in files}
    common = {"INVENTORY_TIMEOUT_S": "120"}

    def start(name: str, roles: str, **env: str) -> subprocess.Popen[bytes]:
        return spawn_runtime(settings, str(logs[name]), roles, HARNESS, OTEL_SERVICE_NAME=name,
                             KAFKA_SAGA_TEST_SPANS=str(files[name]), **common, **env)

    procs = {"query": start("query", "query", QUERY_API_PORT=str(port)),
             "first": start("first", "orchestrator")}
    url = f"http://127.0.0.1:{port}"
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    try:
        async with aiohttp.ClientSession() as session:
            await _ready(session, url, [logs["query"]])
            order_id = await _order(session, url, {}, caller)
            deadline = time.monotonic() + 90
            while True:  # Payment done: the saga now waits for the inventory's answer
                async with session.get(f"{url}/orders/{order_id}") as answer:
                    order = await answer.json() if answer.status == 200 else {}
                if any(h["step"] == "Payment" for h in order.get("history", ())):
                    break
                assert time.monotonic() < deadline, logs["first"].read_text()[-3000:]
                await asyncio.sleep(0.2)
            _stop(procs.pop("first"))
            procs["second"] = start("second", "orchestrator,inventory")
            order = await _ended(session, url, order_id)
        assert order["status"] == "approved" and order["trace_id"] == CALLER_TRACE
    finally:
        for proc in procs.values():
            _stop(proc)
    spans = Spans([s for path in files.values() for s in json.loads(path.read_text())],
                  settings.topic_prefix)
    created = spans.one(CALLER_TRACE, "orchestrator process orders.commands")
    assert service(created) == "first"
    resumed = [s for s in spans.named(CALLER_TRACE, "saga step Inventory") if service(s) == "second"]
    assert resumed, spans.tree(CALLER_TRACE)
    assert spans.parent(resumed[0]) is created  # the trace its OrderCreated named
    finalize = spans.one(CALLER_TRACE, "saga step Finalize")
    assert service(finalize) == "second" and spans.parent(finalize) is created


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def test_otlp_export_reaches_a_collector(settings, tmp_path) -> None:
    """OTEL_TRACES_EXPORTER=otlp (the otlp extra): the spans reach an OTLP/HTTP receiver (a
    real server on a socket, decoding the protobuf requests), at the latest at SIGTERM."""
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                                        reason="the otlp extra is not installed")
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        message = trace_service.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=trace_service.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    collector = web.TCPSite(runner, "127.0.0.1", 0)
    await collector.start()
    collector_port = runner.addresses[0][1]
    port = free_port()
    log = tmp_path / "run.log"
    proc = spawn_runtime(settings, str(log), "query", QUERY_API_PORT=str(port),
                         OTEL_TRACES_EXPORTER="otlp", OTEL_SERVICE_NAME="otlp-test",
                         OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _ready(session, url, [log])
            order_id = await _order(session, url, {}, f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
        await asyncio.to_thread(_stop, proc)
        assert proc.returncode == 0, log.read_text()[-3000:]
    finally:
        _stop(proc)
        await runner.cleanup()
    spans = [(resource, span) for message in received for resource in message.resource_spans
             for scope in resource.scope_spans for span in scope.spans]
    post = [(r, s) for r, s in spans if s.name == "POST /orders"]
    assert len(post) == 1, [s.name for _, s in spans]
    resource, span = post[0]
    assert span.trace_id.hex() == CALLER_TRACE and span.parent_span_id.hex() == CALLER_SPAN
    assert {a.key: a.value.string_value for a in span.attributes}["order_id"] == order_id
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "otlp-test"
