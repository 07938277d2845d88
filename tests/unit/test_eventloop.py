"""Choosing the runtime's event loop."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from kafka_saga.config import ConfigError, Settings
from kafka_saga.runtime import eventloop

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_choice_runs_on_asyncio_loop() -> None:
    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(loop_module(), "asyncio").startswith("asyncio")


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed")
def test_auto_and_uvloop_choices_run_on_uvloop_when_installed() -> None:
    assert eventloop.run(loop_module(), "auto").startswith("uvloop")
    assert eventloop.run(loop_module(), "uvloop").startswith("uvloop")


def test_unknown_choice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SAGA_EVENT_LOOP"):
        eventloop.loop_factory("trio")
    with pytest.raises(ConfigError, match="KAFKA_SAGA_EVENT_LOOP"):
        Settings.from_env({"KAFKA_SAGA_EVENT_LOOP": "trio"})
    assert Settings.from_env({"KAFKA_SAGA_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"


def test_the_collector_threshold_is_tuned_only_when_asked():
    import gc

    from kafka_saga.config import ConfigError, Settings
    from kafka_saga.runtime.eventloop import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert Settings.from_env({}).gc_threshold == 20_000
        assert Settings.from_env({"KAFKA_SAGA_GC_THRESHOLD": "0"}).gc_threshold == 0
        try:
            Settings.from_env({"KAFKA_SAGA_GC_THRESHOLD": "-1"})
        except ConfigError as exc:
            assert "KAFKA_SAGA_GC_THRESHOLD" in str(exc)
        else:
            raise AssertionError("a negative threshold was accepted")
    finally:
        gc.set_threshold(*before)
