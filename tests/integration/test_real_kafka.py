"""The saga end to end on real Apache Kafka (testcontainers), with the idempotent producer.

Everything else in the suite runs on the embedded Tansu broker, which has no idempotent
producer; this test starts a single-node Kafka in KRaft mode in a container and runs the
roles in-process against it with ``KAFKA_ENABLE_IDEMPOTENCE=true`` (``idempotent_producer``):
one order approved, one declined at Payment, both seen on ``orders.events`` and on the query
API. Skipped, quickly and with the reason, when no Docker engine answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from kafka_saga.bus.client import Bus
from kafka_saga.bus.follow import read_topic
from kafka_saga.config import Settings
from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import Command, CommandType, Event, Snapshot, new_id

from ..support.platform import RunningPlatform, eventually

DOCKER_CHECK_TIMEOUT_S = 4.0
CONTAINER_START_TIMEOUT_S = 180

APPROVED = ["OrderCreated:Validation", "OrderApproved:Validation", "OrderApproved:Payment",
            "OrderApproved:Inventory", "OrderApproved:Finalize"]
DECLINED = ["OrderCreated:Validation", "OrderApproved:Validation", "OrderRejected:Payment"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a first run may pull the image


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker"):
        try:
            probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                   capture_output=True, text=True, timeout=DOCKER_CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`docker info` did not answer within {DOCKER_CHECK_TIMEOUT_S:g}s"
        if probe.returncode != 0:
            detail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`docker info` exited {probe.returncode}: {detail}"
        return None
    if os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock"):
        return None  # no CLI to ask; starting the container tells
    return "no docker CLI, no DOCKER_HOST and no /var/run/docker.sock"


def _kafka_container_class() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers before the community package
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    """A single-node Kafka (KRaft) in a container; its bootstrap address for host clients."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(f"needs a Docker engine to run Apache Kafka in a container: {reason}")
    try:
        kafka_container = _kafka_container_class()
    except ImportError as exc:
        pytest.skip(f"testcontainers' Kafka module is not installed: {exc}")
    container = None
    try:
        container = kafka_container().with_kraft()  # connects to the engine already
        container.start(timeout=CONTAINER_START_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any start failure means "no Kafka here"
        if container is not None:
            with contextlib.suppress(Exception):  # a half-started container, if any
                container.stop()
        pytest.skip(f"could not start the Kafka container: {type(exc).__name__}: {exc}")
    try:
        yield container.get_bootstrap_server()
    finally:
        container.stop()


@pytest.fixture
def real_settings(kafka_bootstrap: str) -> Settings:
    return replace(
        Settings.from_env({}),
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"rk{uuid.uuid4().hex[:10]}.",
        partitions=3,
        idempotent_producer=True,
        query_port=0,
        send_retry_max_s=30.0,
        payment_failure_rate=0.0,
        payment_backoff_s=0.02,
        shutdown_timeout_s=10.0,
    )


def _order(user: str, item: str, quantity: int, **attributes: str) -> Command:
    price = (Catalog().unit_price(item) or 0) * quantity
    snapshot = Snapshot(order_id="o-" + new_id()[:12], user=user, item=item, quantity=quantity,
                        price_cents=price, attributes=attributes)
    return Command(new_id(), new_id(), CommandType.ORDER_CREATE, snapshot)


async def _events_by_order(bus: Bus) -> dict[str, list[Event]]:
    found: dict[str, list[Event]] = defaultdict(list)

    def apply(record: Any) -> None:
        event = Event.decode(record.value)
        found[event.snapshot.order_id].append(event)

    await read_topic(bus, bus.topics.events, apply, 30)
    return found


def _trail(events: list[Event]) -> list[str]:
    return [f"{e.type.value}:{e.step.value}" for e in events]


def _assert_idempotent(bus: Bus) -> None:
    """After a delivery: the producer is idempotent and Kafka gave it a producer id.

    aiokafka keeps the state private (``_txn_manager``); when a version moves it, only the
    setting itself is checked.
    """
    assert bus.settings.idempotent_producer
    kafka = bus.producer.kafka
    if not hasattr(kafka, "_txn_manager"):
        return
    manager = kafka._txn_manager
    assert manager is not None, "the producer was created without idempotence"
    if hasattr(manager, "producer_id"):
        assert manager.producer_id >= 0, "no producer id from InitProducerId"


async def test_saga_end_to_end_on_apache_kafka_with_idempotent_producer(real_settings):
    assert real_settings.idempotent_producer
    bus = Bus(real_settings)
    await bus.ensure_topics()
    await bus.start()
    platform = RunningPlatform(real_settings)
    try:
        await platform.start("orchestrator", "inventory", "tracker", "aggregator", "query")
        assert platform.platform is not None and platform.platform.bus is not None

        approved = _order("client21", "latte", 2)
        declined = _order("client22", "mocha", 1, payment="decline")
        for command in (approved, declined):
            await bus.producer.send(bus.topics.commands, command.encode(), command.key)
        await bus.producer.flush()

        def finished(events: list[Event]) -> bool:
            last = _trail(events)[-1:]
            return last == ["OrderApproved:Finalize"] or (
                bool(events) and events[-1].type.value in ("OrderRejected", "OrderFailed"))

        async def both_terminal() -> dict[str, list[Event]] | None:
            found = await _events_by_order(bus)
            done = all(finished(found.get(c.snapshot.order_id, [])) for c in (approved, declined))
            return found if done else None

        found = await eventually(both_terminal, timeout=90, interval=0.5,
                                 what="both sagas finished on Kafka")
        assert _trail(found[approved.snapshot.order_id]) == APPROVED
        assert _trail(found[declined.snapshot.order_id]) == DECLINED
        # both producers (ours, and the roles' one that wrote the events) were idempotent
        _assert_idempotent(bus)
        _assert_idempotent(platform.platform.bus)
        # exactly once each on the log: no duplicate from a producer retry
        for command in (approved, declined):
            assert all(e.saga_id == command.saga_id for e in found[command.snapshot.order_id])

        async def query_view(command: Command, status: str) -> dict | None:
            code, view = await platform.get(f"/orders/{command.snapshot.order_id}?wait=2")
            return view if code == 200 and view["status"] == status else None

        view = await eventually(lambda: query_view(approved, "approved"), timeout=60,
                                what="approved order on the query API")
        assert view["user"] == "client21" and view["quantity"] == 2
        await eventually(lambda: query_view(declined, "rejected"), timeout=60,
                         what="declined order on the query API")

        async def aggregate(user: str, field: str) -> dict | None:
            code, body = await platform.get(f"/aggregates/{user}")
            return body if code == 200 and body.get(field) == 1 else None

        await eventually(lambda: aggregate("client21", "approved"), timeout=60,
                         what="client21's aggregate")
        await eventually(lambda: aggregate("client22", "rejected"), timeout=60,
                         what="client22's aggregate")
    finally:
        await platform.stop()
        await bus.stop()
