"""Misconfigurations an operator makes: each is one line on stderr naming what to change, at
start, and an exit code of its own (docs/cli.md#exit-codes). Real subprocesses, real broker."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from kafka_saga.bus.ports import free_port
from kafka_saga.config import BadBootstrap, PartitionsDisagree, PortTaken, UnreadableRoleList
from tests.support.burst import spawn_runtime
from tests.support.platform import eventually
from tests.support.processes import json_log_lines

from .test_cli import ROOT, cli, env_for, output

pytestmark = pytest.mark.broker


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, output(proc)
    assert lines[0].startswith("kafka-saga: configuration error: "), output(proc)
    return lines[0]


def test_a_taken_query_port_is_one_line_and_exit_5(settings, taken_port):
    proc = cli("run", "--roles", "query", prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60, QUERY_API_PORT=str(taken_port))
    assert proc.returncode == PortTaken.exit_code == 5, output(proc)
    line = one_line(proc)
    assert f"127.0.0.1:{taken_port} (QUERY_API_PORT): taken by another process" in line


def test_a_taken_metrics_port_from_the_role_list_names_the_role_list(settings, taken_port, tmp_path):
    roles = tmp_path / "roles.yaml"
    roles.write_text(f"roles:\n  aggregator: {{metrics_port: {taken_port}}}\n")
    proc = cli("run", "--config", str(roles), prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60)
    assert proc.returncode == 5, output(proc)
    assert "aggregator.metrics_port in the role list" in one_line(proc)


def test_two_settings_naming_one_port_are_port_taken(settings, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed
    proc = cli("run", "--roles", "query,tracker", prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60,
               QUERY_API_PORT=str(port), TRACKER_METRICS_PORT=str(port))
    assert proc.returncode == 5, output(proc)
    assert "QUERY_API_PORT names it too" in one_line(proc)


@pytest.mark.parametrize(("address", "says"), [
    ("127.0.0.1:abc", "'abc' in '127.0.0.1:abc' is not a port"),
    ("127.0.0.1", "'127.0.0.1' is not host:port"),
    ("127.0.0.1:70000", "is not a port (1-65535)"),
    ("no-such-host.invalid:9092", "no such host no-such-host.invalid"),
])
def test_a_bad_bootstrap_address_is_one_line_and_exit_6(settings, address, says):
    proc = cli("run", "--roles", "tracker", prefix=settings.topic_prefix, bootstrap=address,
               timeout=60, LOG_LEVEL="critical")
    assert proc.returncode == BadBootstrap.exit_code == 6, output(proc)
    line = one_line(proc)
    assert "KAFKA_BOOTSTRAP_SERVERS=" in line and says in line, output(proc)


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read role list"),
    ("roles: [unclosed", "cannot read role list"),
    ("roles:\n  nonsense: {}\n", "unknown role 'nonsense'"),
    ("roles:\n  aggregator: {workers: many}\n", "aggregator.workers must be a non-negative integer"),
    ("something: else\n", "expected a non-empty 'roles' mapping or list"),
])
def test_an_unreadable_role_list_is_one_line_and_exit_7(settings, tmp_path, content, says):
    roles = tmp_path / "roles.yaml"
    if content is not None:
        roles.write_text(content)
    proc = cli("run", "--config", str(roles), prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60)
    assert proc.returncode == UnreadableRoleList.exit_code == 7, output(proc)
    assert says in one_line(proc)


async def test_partition_counts_that_disagree_stop_the_process_with_exit_8(settings):
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(settings.topic_prefix + "orders.commands", 3, 1),
                                   NewTopic(settings.topic_prefix + "orders.replies", 2, 1)])
    finally:
        await admin.close()
    proc = cli("run", "--roles", "orchestrator", prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=120)
    assert proc.returncode == PartitionsDisagree.exit_code == 8, output(proc)
    line = proc.stderr.strip().splitlines()[-1]  # after the runtime's own log lines
    assert line.startswith("kafka-saga: configuration error: "), output(proc)
    assert "orders.commands has 3 partitions" in line and "orders.replies has 2 partitions" in line
    assert "--partitions 3" in line
    assert "role crashed" not in proc.stderr  # stopped at once, never restarted


@pytest.mark.parametrize(("exporter", "words"), [
    ("zipkin", "OTEL_TRACES_EXPORTER='zipkin': expected one of none, console, otlp"),
    ("otlp", "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'kafka-saga[otlp]'"),
])
def test_a_trace_exporter_that_cannot_be_used_is_one_line_and_exit_2(settings, exporter, words):
    # the OTLP exporter hidden from this run, as where the otlp extra is not installed
    hide = "import sys; sys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None; "
    argv = [sys.executable, "-c", hide + "from kafka_saga.cli import main; sys.exit(main())",
            "run", "--roles", "inventory", "--bootstrap-servers", settings.bootstrap_servers]
    proc = subprocess.run(argv, env=env_for(settings.topic_prefix, OTEL_TRACES_EXPORTER=exporter),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, output(proc)
    assert words in one_line(proc)


async def test_the_console_exporter_writes_spans_and_the_logs_name_them(settings, tmp_path):
    """OTEL_TRACES_EXPORTER=console: spans as JSON lines on stdout at the latest at SIGTERM;
    the log lines written inside a span carry its trace_id and span_id."""
    port = free_port()
    log = tmp_path / "run.log"
    proc = spawn_runtime(settings, str(log), "query", QUERY_API_PORT=str(port), LOG_LEVEL="info",
                         OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="console-test")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _ready(session, port), 60, what="query API ready")
            body = {"user": "ann", "item": "latte", "quantity": 1}
            async with session.post(f"http://127.0.0.1:{port}/orders", json=body,
                                    headers={"traceparent": parent}) as answer:
                assert answer.status == 202
                order_id = (await answer.json())["order_id"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    lines = json_log_lines(str(log))
    spans = {line["name"]: line for line in lines if "context" in line and "name" in line}
    post = spans["POST /orders"]
    assert post["context"]["trace_id"] == "0x4bf92f3577b34da6a3ce929d0e0e4736"
    assert post["parent_id"] == "0x00f067aa0ba902b7"
    assert post["attributes"]["order_id"] == order_id
    assert post["resource"]["attributes"]["service.name"] == "console-test"
    submitted = [line for line in lines if line.get("event") == "order submitted"]
    assert submitted and submitted[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert submitted[0]["span_id"] == post["context"]["span_id"].removeprefix("0x")


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False
