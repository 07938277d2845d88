"""Shared fixtures: one real broker per test session, isolated topics per test.

``KAFKA_SAGA_TEST_ENGINE`` chooses the broker: ``tansu`` (default, the embedded memory
broker) or ``kafka`` (a single Apache Kafka node from its jars, see ``tests/support/engines.py``).
Tests that talk to the session's broker are marked ``broker`` automatically, so that
``-m broker`` runs exactly those once more on the other engine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio

from kafka_saga import logs
from kafka_saga.bus.client import Bus
from kafka_saga.config import Settings

from .support.engines import TEST_ENGINE, SessionBroker, start_session_broker
from .support.platform import RunningPlatform

logs.configure(os.environ.get("LOG_LEVEL", "warning"), "json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


def pytest_report_header(config: pytest.Config) -> str:
    return f"kafka_saga test engine: {TEST_ENGINE} (KAFKA_SAGA_TEST_ENGINE)"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> SessionBroker:
    """The session's real broker on free ports: Tansu, or Apache Kafka (see the module doc)."""
    started = start_session_broker(tmp_path_factory.mktemp("kafka"))
    yield started
    started.stop()


@pytest.fixture
def settings(broker: SessionBroker) -> Settings:
    """Settings for one test: its own topic prefix, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    # the guarantee the suite is run at (KAFKA_SAGA_PROCESSING), nothing else of the environment
    chosen = {k: v for k, v in os.environ.items() if k == "KAFKA_SAGA_PROCESSING"}
    return replace(
        Settings.from_env(chosen),
        bootstrap_servers=broker.bootstrap,
        topic_prefix=prefix,
        partitions=3,
        query_port=0,
        send_retry_max_s=20.0,
        payment_failure_rate=0.0,
        payment_backoff_s=0.02,
        shutdown_timeout_s=10.0,
    )


@pytest_asyncio.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    """A started bus with the test's topics created."""
    instance = Bus(settings)
    await instance.ensure_topics()
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


@pytest_asyncio.fixture
async def platform(settings: Settings) -> AsyncIterator[RunningPlatform]:
    """A helper that runs roles in-process (``await platform.start("aggregator", ...)``)."""
    running = RunningPlatform(settings)
    try:
        yield running
    finally:
        await running.stop()
