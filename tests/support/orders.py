"""Building realistic order event streams for tests, and producing them with an independent client."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta

from kafka import KafkaProducer  # kafka-python: a second, independent Kafka client

from kafka_saga.core.contracts import REPLY_PARTITION, Event, EventType, Snapshot, Step, new_id
from kafka_saga.core.fields import canonical_time

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
APPROVAL_STEPS = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)


def order_events(order_id: str, user: str, outcome: str, quantity: int = 1, price: int = 350,
                 start: int = 0, late_reject: bool = False) -> list[Event]:
    """The events one saga writes for ``outcome`` in approved | rejected | failed | pending."""
    snap = Snapshot(order_id=order_id, user=user, item="espresso", quantity=quantity, price_cents=price)
    saga = new_id()
    clock = iter(range(start, start + 100))

    def event(kind: EventType, step: Step, **extra: object) -> Event:
        at = canonical_time(BASE_TIME + timedelta(milliseconds=next(clock)))
        return Event.new(kind, snap, step, saga, occurred_at=at, **extra)

    events = [event(EventType.ORDER_CREATED, Step.VALIDATION)]
    if outcome == "approved":
        events += [event(EventType.ORDER_APPROVED, step) for step in APPROVAL_STEPS]
        if late_reject:
            events.append(event(EventType.ORDER_REJECTED, Step.FINALIZE, error_message="price_mismatch"))
    elif outcome == "rejected":
        events.append(event(EventType.ORDER_REJECTED, Step.VALIDATION, error_message="quantity"))
    elif outcome == "failed":
        events.append(event(EventType.ORDER_APPROVED, Step.VALIDATION))
        events.append(event(EventType.ORDER_FAILED, Step.PAYMENT, retry_count=3))
        events.append(event(EventType.ORDER_COMPENSATED, Step.VALIDATION))
    return events


def random_orders(count: int, users: int = 5, seed: int = 7) -> list[list[Event]]:
    rng = random.Random(seed)
    outcomes = ("approved", "approved", "rejected", "failed", "pending")
    return [
        order_events(f"order-{seed}-{i}", f"client{rng.randrange(users):02d}", rng.choice(outcomes),
                     quantity=rng.randint(1, 5), price=rng.randint(1, 50) * 50, start=i * 100,
                     late_reject=rng.random() < 0.1)
        for i in range(count)
    ]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
            headers: list[tuple[str, bytes]] | None = None) -> None:
    """Produce ``(key, value)`` records with kafka-python, then flush."""
    _produce_rows(bootstrap, topic, [(key, value, headers or []) for key, value in records])


def _produce_rows(bootstrap: str, topic: str,
                  rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
    """Produce ``(key, value, headers)`` rows with kafka-python, then flush."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                             enable_idempotence=False)
    try:
        for key, value, headers in rows:
            producer.send(topic, key=key, value=value, headers=headers)
        producer.flush(30)
    finally:
        producer.close(5)


def saga_partition(saga_id: str, partitions: int) -> int:
    """A stable stand-in for the commands partition owning a saga (events written here)."""
    return zlib.crc32(saga_id.encode()) % partitions


def produce_events(bootstrap: str, topic: str, events: list[Event], saga_partitions: int = 0) -> None:
    """Write events as the orchestrator does: keyed by user (so on the user's partition,
    murmur2) and, with ``saga_partitions``, naming their saga's partition in the
    reply-partition header."""
    _produce_rows(bootstrap, topic, [
        (e.key, e.encode(),
         [(REPLY_PARTITION, str(saga_partition(e.saga_id, saga_partitions)).encode())]
         if saga_partitions else [])
        for e in events])
