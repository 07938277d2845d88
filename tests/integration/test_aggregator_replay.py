"""Aggregator -> orders.aggregates -> query read model, and replay == live, on the real broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys

from kafka_saga import replay
from kafka_saga.core.fold import AggregateFold
from kafka_saga.replay import compare, fetch_live, replay_events

from ..support.orders import produce_events, random_orders
from ..support.platform import eventually


def expected_from(orders) -> dict[str, dict]:
    fold = AggregateFold()
    for events in orders:
        for event in events:
            fold.apply(event)
    return {u: a.to_dict() for u, a in fold.aggregates().items()}


async def live_aggregates(platform) -> dict[str, dict]:
    return await fetch_live(platform.url)


def same(live: dict, expected: dict) -> bool:
    return not compare(expected, live)


async def test_live_aggregates_equal_the_fold_and_the_replay(platform, settings, bus, monkeypatch):
    orders = random_orders(120, users=6, seed=11)
    await platform.start("aggregator", "query", workers={"aggregator": 2})
    events = list(itertools.chain.from_iterable(orders))
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, events)

    expected = expected_from(orders)
    live = await eventually(lambda: _when_equal(platform, expected), timeout=60,
                            what="live aggregates equal to the pure fold")
    assert sum(a["orders"] for a in live.values()) == 120
    assert any(a["rejected"] for a in live.values())

    # Duplicates (a redelivered suffix of every order) change nothing.
    duplicates = [e for events_ in orders for e in events_[-2:]]
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, duplicates)
    await asyncio.sleep(2.0)
    assert not compare(expected, await live_aggregates(platform))

    # Event sourcing: the replay of orders.events equals the live read model, in one process
    # and with the partitions shared among worker processes.
    result = await replay_events(bus, timeout=60, workers=1)
    assert result.events == len(events) + len(duplicates)
    replayed = {u: a.to_dict() for u, a in result.fold.aggregates().items()}
    assert compare(replayed, await live_aggregates(platform)) == []
    monkeypatch.setattr(replay, "PARALLEL_FROM", 1)
    shared = await replay_events(bus, timeout=60, workers=3)
    assert not shared.fold.folds and shared.fold.merged  # folded in the workers
    assert (shared.events, shared.skipped) == (result.events, result.skipped)
    assert {u: a.to_dict() for u, a in shared.fold.aggregates().items()} == replayed

    # The CLI agrees, and writes its file atomically.
    out = settings.topic_prefix + "replay.json"
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "kafka_saga", "replay", "--bootstrap-servers",
         settings.bootstrap_servers, "--output", out, "--compare", platform.url],
        env=_env(settings), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 difference(s)" in proc.stdout
    with open(out) as fh:
        document = json.load(fh)
    assert set(document) >= {"generated_at", "events", "aggregates"}
    assert document["events"] == result.events
    import os

    os.unlink(out)


async def _when_equal(platform, expected):
    live = await live_aggregates(platform)
    return live if same(live, expected) else None


async def test_replay_compare_reports_differences(platform, settings, bus, tmp_path):
    orders = random_orders(10, users=2, seed=3)
    await platform.start("aggregator", "query")
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events,
                            list(itertools.chain.from_iterable(orders)))
    expected = expected_from(orders)
    await eventually(lambda: _when_equal(platform, expected), timeout=60, what="aggregates")
    # One more order lands in the log but the live side is stopped: replay must differ.
    await platform.stop()
    extra = random_orders(1, users=1, seed=99)[0]
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, extra)
    await platform.start("query")
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "kafka_saga", "replay", "--output", str(tmp_path / "r.json"),
         "--compare", platform.url],
        env={**_env(settings), "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "difference(s)" in proc.stdout and "0 difference(s)" not in proc.stdout


async def test_replay_of_unreachable_broker_fails_clearly(tmp_path):
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "kafka_saga", "replay", "--bootstrap-servers", "127.0.0.1:1",
         "--output", str(tmp_path / "r.json"), "--timeout", "5"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "error", **_pythonpath()})
    assert proc.returncode == 1
    assert "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.json").exists()


async def test_aggregator_restores_state_after_restart(platform, settings, bus):
    first = random_orders(20, users=3, seed=5)
    await platform.start("aggregator", "query")
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events,
                            list(itertools.chain.from_iterable(first)))
    await eventually(lambda: _when_equal(platform, expected_from(first)), timeout=60, what="first")
    await platform.stop()
    # New events for the same users after a restart: counts continue from the restored state.
    second = random_orders(20, users=3, seed=6)
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events,
                            list(itertools.chain.from_iterable(second)))
    await platform.start("aggregator", "query")
    await eventually(lambda: _when_equal(platform, expected_from(first + second)), timeout=60,
                     what="aggregates after restart")


def _pythonpath() -> dict[str, str]:
    import os

    import kafka_saga

    root = os.path.dirname(os.path.dirname(kafka_saga.__file__))
    return {"PYTHONPATH": root}


def _env(settings) -> dict[str, str]:
    import os

    return {**os.environ, **_pythonpath(), "KAFKA_SAGA_TOPIC_PREFIX": settings.topic_prefix,
            "LOG_LEVEL": "warning"}
