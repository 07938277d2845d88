"""Commands written by a librdkafka client (confluent-kafka) with its DEFAULT partitioner.

librdkafka's default, ``consistent_random``, puts a keyed record on ``crc32(key) % n`` and an
unkeyed one on a random partition: not the murmur2 of aiokafka and the Java client. The
platform must not care: a saga belongs to the partition its command is on, whatever put it
there. Also: which orchestrator process owns which commands partition, read from its logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Producer

from kafka_saga.core.contracts import Command

from .processes import json_log_lines

KeyOf = Callable[[int, Command], bytes | None]
KEYS: dict[str, KeyOf] = {  # how the client keys its commands
    "order_id": lambda _i, c: c.snapshot.order_id.encode(),
    "other_key": lambda i, _c: f"tenant-{i % 37}".encode(),
    "no_key": lambda _i, _c: None,
}


def write_with_librdkafka(bootstrap: str, topic: str, commands: list[Command],
                          key_of: KeyOf = KEYS["order_id"], partition: int | None = None,
                          rate: float | None = None, written: list[int] | None = None) -> list[int]:
    """Write every command with confluent-kafka (no ``partitioner`` setting: librdkafka's
    default; or to ``partition`` when given), at most ``rate`` a second when given (counting
    in ``written[0]``); the partition each one landed on, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    landed: list[int] = [-1] * len(commands)
    errors: list[str] = []

    def delivered(index: int) -> Callable[..., None]:
        def report(error: object, message: object) -> None:
            if error is not None:
                errors.append(str(error))
            else:
                landed[index] = message.partition()  # type: ignore[attr-defined]
        return report

    started = time.monotonic()
    for index, command in enumerate(commands):
        if rate:
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        options = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, value=command.encode(), key=key_of(index, command),
                                 on_delivery=delivered(index), **options)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
        if written is not None:
            written[0] = index + 1
    left = producer.flush(60)
    if left or errors:
        raise RuntimeError(f"confluent-kafka: {left} not delivered, errors {errors[:3]}")
    return landed


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Where aiokafka's (Java's) default partitioner would put ``key``."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


def owned_partitions(log_path: str, topic: str) -> set[int]:
    """The partitions of ``topic`` the orchestrator role of a process holds, per its JSON log
    (needs ``LOG_LEVEL=info``): the last assignment, unless revoked since."""
    owned: set[int] = set()
    for line in json_log_lines(log_path):
        if line.get("role") != "orchestrator" or line.get("event") not in (
                "partitions assigned", "partitions revoked"):
            continue
        mine = {int(name.rsplit(":", 1)[1]) for name in line.get("partitions", [])
                if name.rsplit(":", 1)[0] == topic}
        owned = owned | mine if line["event"] == "partitions assigned" else owned - mine
    return owned
