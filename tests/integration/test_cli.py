"""The ``kafka-saga`` command line, run as real subprocesses against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

import kafka_saga
from kafka_saga.bus.follow import read_topic
from kafka_saga.core.contracts import REINJECTED_HEADER, dlq_headers, headers_dict
from kafka_saga.core.dead_letters import read_dead_letter

from ..support.orders import produce
from ..support.platform import eventually

TIMEOUT = 60.0
ROOT = os.path.dirname(os.path.dirname(kafka_saga.__file__))
TOPIC_NAMES = ("orders.commands", "orders.events", "orders.aggregates", "orders.dlq")


def env_for(prefix: str = "", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "QUERY_API_"))}
    return {**env, "PYTHONPATH": ROOT, "KAFKA_SAGA_TOPIC_PREFIX": prefix, "LOG_LEVEL": "warning",
            "COLUMNS": "300", **extra}


def cli(*args: str, prefix: str = "", bootstrap: str | None = None, timeout: float = 120,
        **env: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kafka_saga", *args]
    if bootstrap:
        argv += ["--bootstrap-servers", bootstrap]
    proc = subprocess.run(argv, env=env_for(prefix, **env), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


async def acli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, **kwargs)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


async def records_of(bus, topic: str) -> list[Any]:
    records: list[Any] = []
    await read_topic(bus, topic, records.append, TIMEOUT)
    return records


# --- topics ----------------------------------------------------------------------------------

def test_topics_create_is_idempotent_and_list_shows_the_prefixed_topics(settings):
    prefix, bootstrap = settings.topic_prefix, settings.bootstrap_servers
    first = cli("topics", "create", prefix=prefix, bootstrap=bootstrap)
    assert first.returncode == 0, output(first)
    states = dict(line.split("\t") for line in first.stdout.splitlines())
    for name in TOPIC_NAMES:
        assert states[prefix + name] == "created", output(first)
    assert set(states.values()) == {"created"}

    second = cli("topics", "create", prefix=prefix, bootstrap=bootstrap)
    assert second.returncode == 0, output(second)
    again = dict(line.split("\t") for line in second.stdout.splitlines())
    assert set(again) == set(states) and set(again.values()) == {"exists"}, output(second)

    listed = cli("topics", "list", prefix=prefix, bootstrap=bootstrap)
    assert listed.returncode == 0, output(listed)
    names = listed.stdout.split()
    for name in TOPIC_NAMES:
        assert prefix + name in names, output(listed)
    assert names == sorted(names)


# --- dlq -------------------------------------------------------------------------------------

async def test_dlq_list_and_replay_one_record_into_its_origin(platform, settings, bus):
    prefix, bootstrap = settings.topic_prefix, settings.bootstrap_servers
    await platform.start("aggregator")
    key, value = b"order-bad-1", b"{this is not json"
    await asyncio.to_thread(produce, bootstrap, bus.topics.events, [(key, value)],
                            [("trace-id", b"t-123")])

    async def dead_letters(n: int) -> list[Any] | None:
        found = [r for r in await records_of(bus, bus.topics.dlq) if r.key == key]
        return found if len(found) >= n else None

    [record] = await eventually(lambda: dead_letters(1), TIMEOUT, what="the dead letter")
    letter = read_dead_letter(record)
    assert letter.reason == "invalid_json" and letter.origin_topic == bus.topics.events
    assert letter.headers["trace-id"] == "t-123"  # original headers kept behind the DLQ ones
    where = f"{letter.partition}:{letter.offset}"
    origin = f"{letter.origin_topic}:{letter.origin_partition}:{letter.origin_offset}"

    listed = await acli("dlq", "list", "--timeout", "30", prefix=prefix, bootstrap=bootstrap)
    assert listed.returncode == 0, output(listed)
    assert f"{bus.topics.dlq}: 1 record(s)" in listed.stdout, output(listed)
    for text in (where, "invalid_json", origin, "aggregator", "order-bad-1"):
        assert text in listed.stdout, (text, output(listed))
    filtered = await acli("dlq", "list", "--reason", "wrong_shape", prefix=prefix, bootstrap=bootstrap)
    assert filtered.returncode == 0 and "0 record(s)" in filtered.stdout, output(filtered)

    missing = await acli("dlq", "replay", prefix=prefix, bootstrap=bootstrap)
    assert missing.returncode == 2, output(missing)
    assert "--offset" in missing.stderr and "--all" in missing.stderr
    bad_offset = await acli("dlq", "replay", "--offset", "x:y", prefix=prefix, bootstrap=bootstrap)
    assert bad_offset.returncode == 2 and "configuration error" in bad_offset.stderr, output(bad_offset)
    nowhere = await acli("dlq", "replay", "--offset", "2:999", prefix=prefix, bootstrap=bootstrap)
    assert nowhere.returncode == 1 and "no dlq record at 2:999" in nowhere.stderr, output(nowhere)

    replay = await acli("dlq", "replay", "--offset", where, prefix=prefix, bootstrap=bootstrap)
    assert replay.returncode == 0, output(replay)
    assert f"re-injected {where} -> {bus.topics.events} (reason invalid_json)" in replay.stdout
    assert "1 record(s) re-injected" in replay.stdout

    # The origin topic now holds the original and an identical copy marked as re-injected.
    events = [r for r in await records_of(bus, bus.topics.events) if r.key == key]
    assert len(events) == 2, events
    copy = next(r for r in events if REINJECTED_HEADER in headers_dict(r.headers))
    headers = headers_dict(copy.headers)
    assert headers[REINJECTED_HEADER] == "1" and headers["trace-id"] == "t-123"
    assert copy.value == value and copy.key == key
    assert not {"reason", "error", "origin-topic", "origin-offset", "role"} & set(headers)

    # Still malformed: the running aggregator dead-letters it again, marked as re-injected once.
    letters = await eventually(lambda: dead_letters(2), TIMEOUT, what="the re-injected copy dead-lettered")
    assert sorted(read_dead_letter(r).reinjected for r in letters) == [0, 1]


async def test_dlq_replay_all_with_an_unmatched_reason_reinjects_nothing(platform, settings, bus):
    prefix, bootstrap = settings.topic_prefix, settings.bootstrap_servers
    await platform.start("aggregator")
    await asyncio.to_thread(produce, bootstrap, bus.topics.events, [(b"k1", b"[1]"), (b"k2", b"nope")])

    async def two() -> list[Any] | None:
        found = await records_of(bus, bus.topics.dlq)
        return found if len(found) >= 2 else None

    await eventually(two, TIMEOUT, what="two dead letters")
    before = len(await records_of(bus, bus.topics.events))
    proc = await acli("dlq", "replay", "--all", "--reason", "no_such_reason", prefix=prefix,
                      bootstrap=bootstrap)
    assert proc.returncode == 0, output(proc)
    assert "0 record(s) re-injected" in proc.stdout and "re-injected 0:" not in proc.stdout
    assert len(await records_of(bus, bus.topics.events)) == before

    # --limit bounds the rows, the title still counts every matching record.
    listed = await acli("dlq", "list", "--limit", "1", prefix=prefix, bootstrap=bootstrap)
    assert listed.returncode == 0 and "2 record(s)" in listed.stdout, output(listed)
    assert listed.stdout.count("aggregator") == 1, output(listed)

    # --offset and --all exclude each other (argparse usage error).
    both = await acli("dlq", "replay", "--all", "--offset", "0:0", prefix=prefix, bootstrap=bootstrap)
    assert both.returncode == 2 and "not allowed with" in both.stderr, output(both)


# --- errors and help -------------------------------------------------------------------------

@pytest.mark.parametrize("log_level", ["error", "warning"])
def test_unreachable_broker_exits_1_with_one_clear_line(log_level):
    proc = cli("dlq", "list", "--timeout", "3", bootstrap="127.0.0.1:1", timeout=60,
               LOG_LEVEL=log_level)
    assert proc.returncode == 1, output(proc)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("kafka-saga: ") and "127.0.0.1:1" in lines[-1], output(proc)
    assert "unreachable" in lines[-1] or "did not finish" in lines[-1], output(proc)
    if log_level == "error":  # nothing but the one message
        assert len(lines) == 1, output(proc)


@pytest.mark.parametrize("argv", [
    [], ["run"], ["broker"], ["topics"], ["dlq"], ["replay"],
])
def test_help_of_every_subcommand_exits_0(argv):
    proc = cli(*argv, "--help", timeout=60)
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.startswith("usage: kafka-saga") and proc.stderr == ""
    if argv:
        assert f"kafka-saga {argv[0]}" in proc.stdout


def test_run_with_an_unknown_role_is_a_configuration_error(settings):
    proc = cli("run", "--roles", "nonsense", prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60)
    assert proc.returncode == 2, output(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, output(proc)
    assert lines[0].startswith("kafka-saga: configuration error:")
    assert "nonsense" in lines[0] and "aggregator" in lines[0]


def test_run_with_an_empty_role_list_is_a_configuration_error(settings):
    proc = cli("run", "--roles", "", prefix=settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60)
    assert proc.returncode == 2, output(proc)
    assert "configuration error: --roles is empty" in proc.stderr


def put_dead_letters(settings, count: int) -> None:
    """Dead letters written straight to the DLQ topic, as a role would write them."""
    topic = settings.topic_prefix + "orders.dlq"
    for i in range(count):
        headers = dlq_headers(reason="invalid_json", error="bad", topic=settings.topic_prefix +
                              "orders.events", partition=0, offset=i, role="aggregator")
        produce(settings.bootstrap_servers, topic, [(f"k{i}".encode(), b"{")], headers)


def test_dlq_list_limit_0_prints_no_record(settings):
    prefix, bootstrap = settings.topic_prefix, settings.bootstrap_servers
    assert cli("topics", "create", prefix=prefix, bootstrap=bootstrap).returncode == 0
    put_dead_letters(settings, 2)
    proc = cli("dlq", "list", "--limit", "0", prefix=prefix, bootstrap=bootstrap)
    assert proc.returncode == 2 or "invalid_json" not in proc.stdout, output(proc)


def test_dlq_list_of_a_missing_topic_does_not_blame_the_broker(settings):
    proc = cli("dlq", "list", "--timeout", "5", prefix="absent" + settings.topic_prefix,
               bootstrap=settings.bootstrap_servers, timeout=60, LOG_LEVEL="error")
    assert proc.returncode == 1, output(proc)
    assert "does not exist" in proc.stderr and "unreachable" not in proc.stderr, output(proc)


def test_bad_subcommand_arguments_are_usage_errors():
    for argv in (["dlq", "purge"], ["topics", "delete"], ["nope"], []):
        proc = cli(*argv, timeout=60)
        assert proc.returncode == 2, output(proc)
        assert "usage: kafka-saga" in proc.stderr
