"""The brokers the test suite runs on: the embedded Tansu, and Apache Kafka from its jars.

Where Java or the jars cannot be had, tests that need Apache Kafka are skipped with that
reason; with ``KAFKA_SAGA_REQUIRE_KAFKA=1`` (set by CI) they fail instead, so CI never
passes without having run Kafka.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kafka_saga.bus.embedded import EmbeddedBroker
from kafka_saga.bus.kafka_engine import KafkaCluster
from kafka_saga.bus.kafka_jars import LaunchError
from kafka_saga.bus.ports import free_port_block
from kafka_saga.config import Settings

TEST_ENGINE = (os.environ.get("KAFKA_SAGA_TEST_ENGINE") or "tansu").strip().lower()
SessionBroker = EmbeddedBroker | KafkaCluster


def kafka_unavailable(reason: str) -> None:
    """Skip (or, in CI, fail) a test that needs Apache Kafka."""
    message = f"Apache Kafka unavailable: {reason}"
    if os.environ.get("KAFKA_SAGA_REQUIRE_KAFKA") == "1":
        pytest.fail(message + " (KAFKA_SAGA_REQUIRE_KAFKA=1)", pytrace=False)
    pytest.skip(message)


def start_kafka(data_dir: Path, nodes: int = 1) -> KafkaCluster:
    """A fresh Apache Kafka of ``nodes`` nodes on free ports, started (or a skip/fail)."""
    cluster = KafkaCluster.for_settings(Settings.from_env(), data_dir, nodes=nodes,
                                        port=free_port_block(2 * nodes), heap="512m")
    try:
        asyncio.run(cluster.start())
    except LaunchError as exc:
        kafka_unavailable(str(exc))
    return cluster


def start_session_broker(data_dir: Path) -> SessionBroker:
    if TEST_ENGINE == "kafka":
        return start_kafka(data_dir)
    if TEST_ENGINE != "tansu":
        raise pytest.UsageError(f"KAFKA_SAGA_TEST_ENGINE={TEST_ENGINE!r}: use tansu or kafka")
    embedded = EmbeddedBroker(log_path=os.environ.get("TANSU_LOG_FILE"),
                              log_level=Settings.from_env().tansu_log)
    asyncio.run(embedded.start())
    return embedded
