"""scripts/start.sh and scripts/stop.sh: one process per role on a broker process, then all stopped.

The scripts run for real: start.sh starts the embedded broker as its own process, creates the
topics and starts each role with ``run --roles <role>`` (START_NO_DEMO=1: no demo), with logs/
and pids/ in a temporary KAFKA_SAGA_RUN_DIR and every port chosen free; an order submitted
with the CLI must come out approved on the query API; stop.sh must end every process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kafka_saga.bus.ports import free_port

from ..support.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "start.sh"
STOP = ROOT / "scripts" / "stop.sh"
ROLES = ("tracker", "aggregator", "inventory", "orchestrator", "dlq", "query")
METRICS_VARS = ("AGGREGATOR_METRICS_PORT", "TRACKER_METRICS_PORT", "DLQ_METRICS_PORT",
                "ORCHESTRATOR_METRICS_PORT", "INVENTORY_METRICS_PORT")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(child) for child in fh.read().split()]
    except OSError:
        return []


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _logs(run_dir: Path) -> str:
    parts = []
    for path in sorted((run_dir / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        parts.append(f"--- {path.name} ---\n" + "\n".join(lines))
    return "\n".join(parts)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_start_runs_every_role_as_its_own_process_and_stop_ends_them(tmp_path):
    began = time.monotonic()
    run_dir = tmp_path / "run"
    broker_port, query_port, *metrics_ports = _free_ports(2 + len(METRICS_VARS))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "START_", "DEMO_", "QUERY_API_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "KAFKA_SAGA_RUN_DIR": str(run_dir),
        "KAFKA_SAGA_EMBEDDED_PORT": str(broker_port),
        "KAFKA_SAGA_PARTITIONS": "3",
        "QUERY_API_PORT": str(query_port),
        "START_NO_DEMO": "1",
        "PAYMENT_FAILURE_RATE": "0",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        **dict(zip(METRICS_VARS, map(str, metrics_ports), strict=True)),
    })
    bootstrap = f"127.0.0.1:{broker_port}"
    pids: dict[str, int] = {}
    children: list[int] = []
    try:
        started = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True,
                                 timeout=60, cwd=tmp_path)
        assert started.returncode == 0, (
            f"start.sh exited {started.returncode}\n{started.stdout}\n{started.stderr}\n{_logs(run_dir)}")
        startup_s = time.monotonic() - began

        # one pid file per process, each process alive and running what its name says
        pid_dir = run_dir / "pids"
        assert sorted(p.name for p in pid_dir.iterdir()) == sorted(
            f"{name}.pid" for name in (*ROLES, "broker"))
        pids = {p.stem: int(p.read_text().strip()) for p in pid_dir.iterdir()}
        assert len(set(pids.values())) == len(pids)
        for name, pid in pids.items():
            assert pid_alive(pid), f"{name} (pid {pid}) is not running\n{_logs(run_dir)}"
        if sys.platform.startswith("linux"):
            assert f"kafka_saga broker --port {broker_port}" in _cmdline(pids["broker"])
            for role in ROLES:
                assert f"kafka_saga run --roles {role}" in _cmdline(pids[role])
        children = _children(pids["broker"])  # the Tansu process itself
        # every role used the script's broker; none started an embedded one of its own
        for role in ROLES:
            text = (run_dir / "logs" / f"{role}.log").read_text()
            assert "using external Kafka broker" in text and bootstrap in text, role
            assert "using embedded Tansu broker" not in text, role

        # an order submitted with the CLI goes through the saga; the query API shows it approved
        submitted = subprocess.run(
            [sys.executable, "-m", "kafka_saga", "submit", "--user", "client07", "--item", "latte",
             "--quantity", "2", "--bootstrap-servers", bootstrap],
            env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        order_id = json.loads(submitted.stdout.strip().splitlines()[-1])["order_id"]
        deadline = time.monotonic() + 45
        view: dict = {}
        while time.monotonic() < deadline:
            status, body = _get(f"http://127.0.0.1:{query_port}/orders/{order_id}?wait=5")
            if status == 200:
                view = json.loads(body)
                if view["status"] in ("approved", "rejected", "failed"):
                    break
            else:
                assert status == 404, (status, body)
                time.sleep(0.2)
        assert view.get("status") == "approved", f"{view}\n{_logs(run_dir)}"
        assert view["user"] == "client07" and view["item"] == "latte" and view["quantity"] == 2

        # every metrics server answers, each in its own role's process
        for port in metrics_ports:
            status, body = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and body, port
    finally:
        stopped = subprocess.run(["bash", str(STOP)], env=env, capture_output=True, text=True,
                                 timeout=60, cwd=tmp_path)
        # safety net should stop.sh fail: only our own recorded PIDs, only if still kafka_saga
        leftover = _wait_gone([*pids.values(), *children], 5)
        for pid in leftover:
            if "kafka_saga" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)

    assert stopped.returncode == 0, f"{stopped.stdout}\n{stopped.stderr}"
    assert leftover == [], f"still running after stop.sh: {leftover}\n{stopped.stdout}"
    assert list((run_dir / "pids").glob("*.pid")) == []
    for name, pid in pids.items():
        assert f"{name}: stopped pid {pid}" in stopped.stdout, stopped.stdout
    # the broker went last, after every role
    lines = stopped.stdout.splitlines()
    assert max(i for i, line in enumerate(lines) if line.startswith("stop.sh: broker")) == len(lines) - 2
    # a second stop has nothing to do
    again = subprocess.run(["bash", str(STOP)], env=env, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    total_s = time.monotonic() - began
    print(f"\nstart.sh ready in {startup_s:.1f}s; whole scenario {total_s:.1f}s")
    assert total_s < 90
