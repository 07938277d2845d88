"""A real Prometheus (Debian's ``prometheus`` package, installed by ``.ci/run``) for the tests.

Without the binaries the tests are skipped with the reason; with
``KAFKA_SAGA_REQUIRE_PROMETHEUS=1`` (set by CI) they fail instead, so CI never skips them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kafka_saga.bus.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"


def binary(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``, else skip (fail in CI)."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("KAFKA_SAGA_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(message + " (KAFKA_SAGA_REQUIRE_PROMETHEUS=1)", pytrace=False)
        pytest.skip(message)
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True,
                          timeout=120, cwd=DEPLOY)


class Prometheus:
    """A Prometheus process scraping ``targets`` every second with the project's rules."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(DEPLOY / "rules.yml")]
        job = config["scrape_configs"][0]
        job["static_configs"] = [{"targets": targets, "labels": {"process": "test"}}]
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.config}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
                try:
                    async with session.get(self.url + "/-/ready") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus not ready: {self.log.read_text()[-2000:]}")

    async def api(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as session, \
                session.get(self.url + "/api/v1/" + path, params=params) as resp:
            body = await resp.json()
            assert body["status"] == "success", body
            return body["data"]

    async def value(self, query: str) -> float | None:
        """The single value of an instant ``query`` now (None when it has no result)."""
        result = (await self.api("query", query=query))["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

