"""Pure pieces of the Apache Kafka engine: replication defaults, Java versions, node layout."""

from __future__ import annotations

import pytest

from kafka_saga.bus.kafka_engine import KafkaCluster
from kafka_saga.bus.kafka_jars import LaunchError, java_major
from kafka_saga.bus.topics import replication_for


@pytest.mark.parametrize(("brokers", "expected"), [
    (1, (1, {})),
    (2, (2, {"min.insync.replicas": "2"})),
    (3, (3, {"min.insync.replicas": "2"})),
    (5, (3, {"min.insync.replicas": "2"})),
])
def test_replication_follows_the_cluster_size(brokers, expected):
    assert replication_for(brokers) == expected


def test_replication_settings_win_over_the_cluster_size():
    assert replication_for(3, replication=1) == (1, {})
    assert replication_for(3, replication=3, min_insync=3) == (3, {"min.insync.replicas": "3"})
    assert replication_for(1, min_insync=1) == (1, {"min.insync.replicas": "1"})


@pytest.mark.parametrize(("text", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_292"', 8),
    ('openjdk version "11" 2018-09-25', 11),
    ('openjdk version "25-ea"', 25),
    ("no version here", None),
])
def test_java_major_version(text, major):
    assert java_major(text) == major


def test_node_layout_ports_and_files(tmp_path):
    cluster = KafkaCluster(tmp_path / "d", nodes=3, port=20000)
    assert cluster.bootstrap == "127.0.0.1:20000,127.0.0.1:20001,127.0.0.1:20002"
    assert [n.controller_port for n in cluster.nodes] == [20003, 20004, 20005]
    assert cluster.node(2).pid_file == (tmp_path / "d" / "node-2.pid").resolve()
    assert not cluster.alive()


def test_zero_nodes_is_refused(tmp_path):
    with pytest.raises(LaunchError, match="at least 1"):
        KafkaCluster(tmp_path, nodes=0)
