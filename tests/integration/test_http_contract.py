"""The HTTP contract, exact: requests generated from the live server's own /openapi.json
(property-based: schemathesis's examples, coverage, fuzzing and stateful phases) run against
the live server, and every answer's status, content type, headers and body must be what the
document says; schema-valid requests must be accepted and schema-violating ones refused with a
documented 4xx. Admin routes run with the token.

The server is a real runtime process (every role but the demo) on the session's broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kafka_saga.bus.ports import free_port
from kafka_saga.config import Settings

from ..support.burst import spawn_runtime

pytestmark = pytest.mark.slow
TOKEN = "contract-test-token"
EXAMPLES = int(os.environ.get("KAFKA_SAGA_CONTRACT_EXAMPLES", "60"))  # fuzzed per operation
# Every check but one. POST /orders answers 202 before the saga's first event reaches the read
# model (CQRS: eventually consistent), so an order may still be unknown to a cancel sent at
# once (404, documented): the stateful "a created resource is found at once" cannot hold.
NOT_CHECKED = "ensure_resource_availability"


@pytest.fixture(scope="module")
def live_server(broker, tmp_path_factory) -> Iterator[str]:
    prefix = f"contract{free_port()}."
    run_settings = replace(Settings.from_env({}), bootstrap_servers=broker.bootstrap,
                           topic_prefix=prefix, partitions=3)
    port = free_port()
    log = tmp_path_factory.mktemp("contract") / "run.log"
    proc = spawn_runtime(run_settings, str(log), QUERY_API_PORT=str(port),
                         KAFKA_SAGA_ADMIN_TOKEN=TOKEN,
                         QUERY_WAIT_MAX_S="0.5")  # ?wait= up to this (the document says so)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_server_does_what_its_openapi_document_says(live_server: str) -> None:
    run = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", live_server + "/openapi.json",
         "--url", live_server, "--header", f"Authorization: Bearer {TOKEN}",
         "--checks", "all", "--exclude-checks", NOT_CHECKED,
         "--max-examples", str(EXAMPLES), "--seed", "20261204", "--request-timeout", "30",
         "--no-color"],
        capture_output=True, text=True, timeout=600)
    summary = re.search(r"(\d+) generated", run.stdout)
    generated = int(summary.group(1)) if summary else 0
    print(f"\nHTTP contract: {generated} requests generated from the document and sent to the "
          "live server")
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-3000:]
    assert re.search(r"Tested: 14\b", run.stdout), run.stdout[-3000:]
    assert generated >= 500, run.stdout[-3000:]
