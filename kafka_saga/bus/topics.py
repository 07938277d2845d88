"""Topic names and idempotent topic creation."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from ..core import topology

TOPIC_ALREADY_EXISTS = 36


def user_partition(user: str, partitions: int) -> int:
    """The partition of ``orders.events`` holding ``user``'s events: murmur2 of the user,
    as the Java client and aiokafka place a keyed record, chosen explicitly by the
    orchestrator (the only writer) so no producer setting can move a user."""
    return (murmur2(user.encode()) & 0x7FFFFFFF) % max(1, partitions)


@dataclass(frozen=True)
class Topics:
    """The platform's topics (declared in :mod:`kafka_saga.core.topology`), with an optional
    prefix (used to isolate tests)."""

    prefix: str = ""

    def name(self, topic: str) -> str:
        """The prefixed name of a topic of the topology."""
        return f"{self.prefix}{topic}"

    @property
    def commands(self) -> str:
        return self.name(topology.COMMANDS)

    @property
    def events(self) -> str:
        return self.name(topology.EVENTS)

    @property
    def aggregates(self) -> str:
        return self.name(topology.AGGREGATES)

    @property
    def dlq(self) -> str:
        return self.name(topology.DLQ)

    @property
    def inventory(self) -> str:
        """Stock reservations, keyed by item: one owner per item (no oversell across processes)."""
        return self.name(topology.INVENTORY)

    @property
    def replies(self) -> str:
        """Messages addressed to a saga already running: participant answers and rejects.

        Same partition count as ``orders.commands``; each record is written to the partition
        of its saga's command, so it reaches the orchestrator owning that saga, is read by
        the same consumer group (co-partitioned) and is never paused behind new orders.
        """
        return self.name(topology.REPLIES)

    def all(self) -> dict[str, dict[str, str]]:
        """Every topic with its configuration."""
        return {self.name(spec.name): dict(spec.config) for spec in topology.TOPICS}

    def group(self, role: str) -> str:
        """Consumer group id of a role."""
        return f"{self.prefix}kafka-saga.{role}"


def replication_for(brokers: int, replication: int = 0, min_insync: int = 0) -> tuple[int, dict[str, str]]:
    """Replication factor and topic configuration for a cluster of ``brokers``.

    0 means "chosen from the cluster": 3 replicas (fewer on a smaller cluster) and
    ``min.insync.replicas`` 2 (1 on a single broker), so that with acks=all a write
    survives the loss of one broker and a cluster keeps taking writes with one broker down.
    """
    factor = replication or max(1, min(3, brokers))
    insync = min_insync or min(2, factor)
    return factor, ({"min.insync.replicas": str(insync)} if factor > 1 or min_insync else {})


async def ensure_topics(
    admin: AIOKafkaAdminClient, topics: Topics, partitions: int, replication: int = 0,
    min_insync: int = 0,
) -> dict[str, str]:
    """Create missing topics; return ``{topic: "created" | "exists"}``. Idempotent."""
    existing = set(await admin.list_topics())
    wanted = topics.all()
    brokers = len(admin._client.cluster.brokers())  # noqa: SLF001 - metadata fetched by list_topics
    factor, replicated = replication_for(brokers, replication, min_insync)
    new = [
        NewTopic(name, partitions, factor, topic_configs={**replicated, **config})
        for name, config in wanted.items()
        if name not in existing
    ]
    result = {name: "exists" for name in wanted if name in existing}
    if new:
        response = await admin.create_topics(new)
        for name, code, message in response.topic_errors:
            if code == 0:
                result[name] = "created"
            elif code == TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise RuntimeError(f"cannot create topic {name}: error {code} {message}")
    return result
