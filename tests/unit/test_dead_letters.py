"""Pure unit tests of dead-letter reading and re-injection (kafka_saga.core.dead_letters)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from kafka_saga.core.contracts import DLQ_HEADERS, REINJECTED_HEADER, dlq_headers, headers_dict
from kafka_saga.core.dead_letters import DeadLetter, read_dead_letter, reinjection_headers

Headers = list[tuple[str, bytes]]


@dataclass
class FakeRecord:
    """The attributes of an aiokafka ConsumerRecord that the DLQ code reads."""

    value: bytes | None = b'{"bad": json'
    key: bytes | None = b"o-1"
    headers: Headers | None = field(default_factory=list)
    topic: str = "orders.dlq"
    partition: int = 2
    offset: int = 17
    timestamp: int | None = 1_767_225_600_000


ORIGINAL: Headers = [("traceparent", b"00-abc-def-01"), ("tenant", b"acme")]


def dlq_record(*, original: Headers = ORIGINAL, retry_count: int = 1, **kw: object) -> FakeRecord:
    headers = dlq_headers(reason="invalid_json", error="Event: unexpected end of data",
                          topic="orders.events", partition=4, offset=1234, role="aggregator",
                          retry_count=retry_count, original=original)
    return FakeRecord(headers=headers, **kw)  # type: ignore[arg-type]


# --- read_dead_letter ----------------------------------------------------------------------

def test_full_dead_letter() -> None:
    letter = read_dead_letter(dlq_record(retry_count=3))
    assert isinstance(letter, DeadLetter) and letter.is_dead_letter
    assert (letter.partition, letter.offset, letter.timestamp_ms) == (2, 17, 1_767_225_600_000)
    assert letter.key == "o-1"
    assert letter.value_preview == '{"bad": json' and letter.value_size == 12
    assert letter.reason == "invalid_json"
    assert letter.error == "Event: unexpected end of data"
    assert (letter.origin_topic, letter.origin_partition, letter.origin_offset) == \
        ("orders.events", 4, 1234)
    assert letter.role == "aggregator" and letter.retry_count == 3 and letter.reinjected == 0
    assert letter.published.endswith("Z") and len(letter.published) == 27
    assert letter.headers["traceparent"] == "00-abc-def-01" and letter.headers["tenant"] == "acme"
    assert set(DLQ_HEADERS) <= set(letter.headers)


def test_to_dict_has_every_field() -> None:
    letter = read_dead_letter(dlq_record())
    d = letter.to_dict()
    assert list(d) == [
        "partition", "offset", "timestamp_ms", "key", "value_preview", "value_size", "reason",
        "error", "origin_topic", "origin_partition", "origin_offset", "role", "published",
        "retry_count", "reinjected", "headers",
    ]
    assert d["origin_offset"] == 1234 and d["headers"] is letter.headers
    assert "is_dead_letter" not in d


@pytest.mark.parametrize("headers", [None, [], [("x-custom", b"1")]])
def test_garbage_without_dlq_headers(headers: Headers | None) -> None:
    letter = read_dead_letter(FakeRecord(value=b"hello", key=None, headers=headers, timestamp=None))
    assert not letter.is_dead_letter
    assert letter.key is None and letter.timestamp_ms == 0
    assert letter.value_preview == "hello" and letter.value_size == 5
    assert (letter.reason, letter.error, letter.origin_topic, letter.role, letter.published) == \
        ("", "", "", "", "")
    assert letter.origin_partition is None and letter.origin_offset is None
    assert letter.retry_count == 0 and letter.reinjected == 0
    assert letter.headers == headers_dict(headers)


def test_reason_without_origin_is_not_a_dead_letter() -> None:
    assert not read_dead_letter(FakeRecord(headers=[("reason", b"x")])).is_dead_letter
    assert not read_dead_letter(FakeRecord(headers=[("origin-topic", b"t")])).is_dead_letter
    assert read_dead_letter(FakeRecord(headers=[("reason", b"x"),
                                                ("origin-topic", b"t")])).is_dead_letter


def test_unparsable_numeric_headers() -> None:
    headers = [("reason", b"oversize"), ("origin-topic", b"t"), ("origin-partition", b"two"),
               ("origin-offset", b""), ("retry-count", b"many"), (REINJECTED_HEADER, b"1.5")]
    letter = read_dead_letter(FakeRecord(headers=headers))
    assert letter.is_dead_letter
    assert letter.origin_partition is None and letter.origin_offset is None
    assert letter.retry_count == 0 and letter.reinjected == 0


def test_tombstone_value() -> None:
    letter = read_dead_letter(FakeRecord(value=None))
    assert letter.value_preview == "" and letter.value_size == 0


def test_non_utf8_value_preview_is_base64() -> None:
    value = b"\xff\xfe\x00binary\x80"
    letter = read_dead_letter(FakeRecord(value=value))
    assert letter.value_preview.startswith("base64:")
    assert base64.b64decode(letter.value_preview.removeprefix("base64:")) == value
    assert letter.value_size == len(value)


def test_long_non_utf8_value_preview_is_first_512_bytes() -> None:
    value = b"\xff" * 2000
    letter = read_dead_letter(FakeRecord(value=value))
    assert base64.b64decode(letter.value_preview.removeprefix("base64:")) == value[:512]
    assert letter.value_size == 2000


@pytest.mark.parametrize(("size", "ellipsis"), [(0, False), (511, False), (512, False),
                                                (513, True), (10_000, True)])
def test_text_preview_truncation(size: int, ellipsis: bool) -> None:
    value = b"a" * size
    letter = read_dead_letter(FakeRecord(value=value))
    assert letter.value_preview == "a" * min(size, 512) + ("…" if ellipsis else "")
    assert letter.value_size == size


def test_multibyte_text_preview() -> None:
    letter = read_dead_letter(FakeRecord(value="café ✓".encode()))
    assert letter.value_preview == "café ✓"
    assert letter.value_size == len("café ✓".encode())


def test_valid_utf8_cut_mid_character_stays_text() -> None:
    value = ("a" + "é" * 600).encode()  # byte 512 is inside a 2-byte character
    letter = read_dead_letter(FakeRecord(value=value))
    assert letter.value_preview.startswith("aé")
    assert letter.value_preview.endswith("…")


def test_undecodable_key_and_header_are_replaced() -> None:
    letter = read_dead_letter(FakeRecord(key=b"o-\xff", headers=[("h", b"\xfe"), ("n", None)]))  # type: ignore[list-item]
    assert letter.key == "o-\ufffd"
    assert letter.headers == {"h": "\ufffd", "n": ""}


def test_reinjected_count_is_read() -> None:
    letter = read_dead_letter(dlq_record(original=[(REINJECTED_HEADER, b"4")]))
    assert letter.reinjected == 4


# --- reinjection_headers -------------------------------------------------------------------

def test_reinjection_drops_dlq_headers_and_marks_first_reinjection() -> None:
    headers = reinjection_headers(dlq_record())
    assert headers == [*ORIGINAL, (REINJECTED_HEADER, b"1")]
    assert not set(DLQ_HEADERS) & {k for k, _ in headers}


def test_reinjection_increments_existing_count() -> None:
    record = dlq_record(original=[("tenant", b"acme"), (REINJECTED_HEADER, b"2")])
    assert reinjection_headers(record) == [("tenant", b"acme"), (REINJECTED_HEADER, b"3")]


def test_repeated_dead_lettering_counts_up() -> None:
    original: Headers = [("tenant", b"acme")]
    for expected in range(1, 5):
        record = dlq_record(original=original)
        assert read_dead_letter(record).reinjected == expected - 1
        original = reinjection_headers(record)
        assert original[-1] == (REINJECTED_HEADER, str(expected).encode())
        assert [k for k, _ in original].count(REINJECTED_HEADER) == 1
    assert original[0] == ("tenant", b"acme")


@pytest.mark.parametrize("headers", [None, [], [(REINJECTED_HEADER, b"junk")]])
def test_reinjection_without_usable_count(headers: Headers | None) -> None:
    assert reinjection_headers(FakeRecord(headers=headers)) == [(REINJECTED_HEADER, b"1")]


def test_reinjection_keeps_order_and_duplicates_of_other_headers() -> None:
    headers = [("a", b"1"), ("reason", b"x"), ("a", b"2"), ("published", b"t"), ("b", b"\xff")]
    assert reinjection_headers(FakeRecord(headers=headers)) == \
        [("a", b"1"), ("a", b"2"), ("b", b"\xff"), (REINJECTED_HEADER, b"1")]


# --- dlq_headers / headers_dict (kafka_saga.core.contracts) --------------------------------

def test_dlq_headers() -> None:
    headers = dlq_headers(reason="invalid_json", error="E" * 5000, topic="orders.events",
                          partition=3, offset=42, role="aggregator", retry_count=2,
                          original=[("trace", b"\xffid"), ("reason", b"old"), ("role", b"x")])
    assert [k for k, _ in headers] == [*DLQ_HEADERS, "trace"]
    assert all(isinstance(v, bytes) for _, v in headers)
    d = headers_dict(headers)
    assert d["reason"] == "invalid_json" and d["error"] == "E" * 2000
    assert (d["origin-topic"], d["origin-partition"], d["origin-offset"]) == \
        ("orders.events", "3", "42")
    assert (d["role"], d["retry-count"]) == ("aggregator", "2")
    assert d["trace"] == "\ufffdid"
    assert len(d["published"]) == 27 and d["published"].endswith("Z")
    assert dlq_headers(reason="r", error="e", topic="t", partition=0, offset=0,
                       role="x")[-1] == ("retry-count", b"0")


def test_headers_dict() -> None:
    assert headers_dict(None) == {} and headers_dict([]) == {}
    assert headers_dict([("a", b"1"), ("b", None), ("a", b"2")]) == {"a": "2", "b": ""}
    assert headers_dict((("k", b"caf\xc3\xa9"),)) == {"k": "café"}
