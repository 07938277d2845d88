"""How the process's logs render the Kafka client's own records."""

from __future__ import annotations

import logging

import orjson
import pytest
from aiokafka.errors import NotLeaderForPartitionError, UnsupportedVersionError

from tests.support.logsetup import configured_logs


@pytest.fixture
def stderr(capsys):
    client = logging.getLogger("aiokafka")
    level = client.level  # the short CLI commands silence the client in-process
    client.setLevel(logging.NOTSET)
    try:
        with configured_logs("info"):
            yield capsys
    finally:
        client.setLevel(level)


def _lines(capsys) -> list[dict]:
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_an_error_the_client_retries_itself_is_a_warning(stderr):
    logging.getLogger("aiokafka.consumer.fetcher").error(
        "Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    [line] = _lines(stderr)
    assert line["level"] == "warning", line
    assert "NotLeaderForPartitionError" in line["event"]


def test_an_error_the_client_does_not_retry_stays_an_error(stderr):
    logging.getLogger("aiokafka.consumer.fetcher").error(
        "Failed fetch offsets from %s: %s", 1, UnsupportedVersionError())
    logging.getLogger("elsewhere").error("retriable elsewhere: %s", NotLeaderForPartitionError())
    assert [line["level"] for line in _lines(stderr)] == ["error", "error"]
