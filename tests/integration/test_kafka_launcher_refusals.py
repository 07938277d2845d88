"""`kafka-saga broker --engine kafka` refusing what a user gets wrong: one line, non-zero exit.

A port taken, a data directory of another cluster or node count, Java missing or too old, jars
Maven cannot resolve, a Kafka home without ``libs/``. Skipped (failed with
``KAFKA_SAGA_REQUIRE_KAFKA=1``) without Java or jars.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kafka_saga.bus.kafka_engine import KafkaCluster
from kafka_saga.bus.kafka_jars import KAFKA_VERSION
from kafka_saga.bus.ports import free_port_block as port_block
from kafka_saga.config import Settings

from ..support.launcher import CLI, ERROR_S, NO_TRACE, cli_env, java_and_jars

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def kafka() -> tuple[str, Path]:
    return java_and_jars()


@pytest.fixture(scope="module")
def three_node_dir(kafka, tmp_path_factory) -> Path:
    """A data directory formatted for a three-node cluster (never started)."""
    data = tmp_path_factory.mktemp("formatted") / "d"
    KafkaCluster.for_settings(Settings.from_env(), data, nodes=3, port=port_block(6)).prepare()
    assert (data / "node-3" / "data" / "meta.properties").exists()
    return data


def refused(data: Path, env: dict[str, str], *words: str, nodes: int = 1, port: int = 0) -> str:
    """Run the CLI expecting a refusal: non-zero exit, one stderr line naming the problem."""
    args = ["--nodes", str(nodes), "--port", str(port or port_block(2 * nodes)), "--data-dir", str(data)]
    out = subprocess.run([CLI, "broker", "--engine", "kafka", *args], capture_output=True, text=True,
                         env={**env, "LOG_LEVEL": "warning"}, timeout=ERROR_S, stdin=subprocess.DEVNULL)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0, (out.returncode, out.stderr)
    assert not any(trace in out.stderr + out.stdout for trace in NO_TRACE), out.stderr
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def tool_dir(path: Path, **links: str) -> Path:
    """A directory of symlinks ``name -> target`` (a PATH holding only those tools)."""
    path.mkdir()
    for name, target in links.items():
        (path / name).symlink_to(target)
    return path


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_a_taken_port_is_refused(kafka, tmp_path):
    port = port_block(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        line = refused(tmp_path / "d", cli_env(), f"port {port}", "taken", port=port)
    assert "node 1 client port" in line


def test_a_data_dir_of_another_cluster_is_refused(three_node_dir, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(three_node_dir, data)
    meta = json.loads((data / "cluster.json").read_text())
    original, meta["cluster_id"] = meta["cluster_id"], "AnotherClusterIdAAAAAA"
    (data / "cluster.json").write_text(json.dumps(meta))
    refused(data, cli_env(), "belongs to cluster", original, "AnotherClusterIdAAAAAA", nodes=3)


def test_a_three_node_data_dir_started_with_one_node_is_refused(three_node_dir, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(three_node_dir, data)
    refused(data, cli_env(), "3-node cluster", "--nodes 3", nodes=1)


def test_missing_java_is_refused(kafka, tmp_path):
    links = {"python": sys.executable}
    if shutil.which("mvn"):
        links["mvn"] = shutil.which("mvn")
    env = cli_env(PATH=str(tool_dir(tmp_path / "bin", **links)))
    env.pop("JAVA_HOME", None)
    refused(tmp_path / "d", env, "java not found", "JAVA_HOME")
    assert not (tmp_path / "d").exists()


def test_too_old_java_is_refused(kafka, tmp_path):
    home = tmp_path / "jdk8"
    script(home / "bin" / "java", """echo 'openjdk version "1.8.0_292"' >&2\n"""
           """echo 'OpenJDK Runtime Environment (build 1.8.0_292-b10)' >&2\n""")
    refused(tmp_path / "d", cli_env(JAVA_HOME=str(home)), "Java 8", "needs Java 11")


def test_jars_maven_cannot_resolve_are_refused(kafka, tmp_path):
    java, _ = kafka
    tools = tool_dir(tmp_path / "bin", python=sys.executable, java=java)
    script(tools / "mvn", "echo '[INFO] Scanning for projects...'\n"
           "echo '[ERROR] Failed to execute goal on project kafka-jars: Could not resolve "
           "dependencies for project kafka-saga:kafka-jars:pom:1: "
           "org.apache.kafka:kafka_2.13:jar:3.9.1 was not found'\nexit 1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    env = cli_env(PATH=str(tools), KAFKA_SAGA_KAFKA_CACHE=str(cache))
    env.pop("KAFKA_SAGA_KAFKA_HOME", None)
    env.pop("JAVA_HOME", None)
    refused(tmp_path / "d", env, f"Maven could not resolve org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
            "Could not resolve dependencies")
    assert not (cache / "libs" / ".complete").exists()


def test_a_kafka_home_without_libs_is_refused(kafka, tmp_path):
    home = tmp_path / "kafka_2.13-3.9.1"
    (home / "bin").mkdir(parents=True)
    refused(tmp_path / "d", cli_env(KAFKA_SAGA_KAFKA_HOME=str(home)),
            f"KAFKA_SAGA_KAFKA_HOME={home}", "libs")
