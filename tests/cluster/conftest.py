"""One three-node Apache Kafka cluster for the whole cluster suite, whole again around each test.

Topics get replication factor 3 and min.insync.replicas 2 (``Bus.ensure_topics`` on a
cluster of three), and the producers are idempotent (Kafka grants producer ids). Where Java
or the jars are missing the suite is skipped (failed with ``KAFKA_SAGA_REQUIRE_KAFKA=1``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from kafka_saga.bus.kafka_engine import KafkaCluster

from ..support.cluster import PORT_CONFLICTS, report_conflicts, restore_cluster
from ..support.engines import start_kafka


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    for attempt in range(1, 4):
        try:
            started = start_kafka(tmp_path_factory.mktemp("cluster"), nodes=3)
            break
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            # free ports, checked, may be taken before the JVMs bind them (a busy machine)
            if attempt == 3 or not any(w in str(exc) for w in ("Address already in use", "is taken")):
                raise
            print(f"\nthree-node cluster, attempt {attempt}: {exc}; trying other ports")
    yield started
    started.stop()


@pytest_asyncio.fixture
async def cluster(kafka_cluster: KafkaCluster) -> AsyncIterator[KafkaCluster]:
    """The cluster with its three nodes up and every replica in sync, before and after the
    test (a node a test left down is started again here)."""
    await restore_cluster(kafka_cluster)
    yield kafka_cluster
    before = len(PORT_CONFLICTS)
    try:
        await restore_cluster(kafka_cluster)
    finally:
        report_conflicts(before, "restarting the nodes a test left down")
