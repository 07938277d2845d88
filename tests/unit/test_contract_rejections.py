"""Pure unit tests of the wire contracts: what the decoders refuse, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from kafka_saga.core.contracts import (
    MAX_MESSAGE_BYTES,
    MAX_MONEY,
    WIRE_MAX_QUANTITY,
    Command,
    Contract,
    Event,
    Snapshot,
    UserAggregate,
)
from tests.support.contract_samples import (
    SNAP,
    TS,
    command_dict,
    event_dict,
    reject,
    snap_with,
    without,
)


@pytest.mark.parametrize("cls", [Snapshot, Command, Event, UserAggregate])
def test_null_value(cls: type[Contract]) -> None:
    reject(cls, None, "null_value")


@pytest.mark.parametrize(("raw", "reason"), [
    *((raw, "invalid_json") for raw in (b"{", b"", b"{'a': 1}", b'{"a": NaN}', b'{"a": 1e400}',
                                        b'{"a": 1,}', b'{"a": 1} {}')),
    *((raw, "bad_utf8") for raw in (b"\xff\xfe{}", b'{"event_id": "\xc3\x28"}')),
    *((raw, "wrong_shape") for raw in (b"[1, 2]", b"[]", b"42", b"1.5", b'"text"', b"null",
                                       b"true")),
])
@pytest.mark.parametrize("cls", [Command, Event, UserAggregate])
def test_undecodable(cls: type[Contract], raw: bytes, reason: str) -> None:
    reject(cls, raw, reason)


def test_oversize_boundary() -> None:
    raw = orjson.dumps(event_dict(pad=""))
    pad = MAX_MESSAGE_BYTES - len(raw)
    exact = orjson.dumps(event_dict(pad="x" * pad))
    assert len(exact) == MAX_MESSAGE_BYTES
    assert Event.decode(exact).event_id == "e-1"
    reject(Event, orjson.dumps(event_dict(pad="x" * (pad + 1))), "oversize")
    # size is checked before parsing
    reject(Event, b"\xff" * (MAX_MESSAGE_BYTES + 1), "oversize")


Mut = Callable[[], dict[str, Any]]
EVENT_CASES: list[tuple[str, Mut, str]] = [
    ("missing event_id", lambda: without(event_dict(), "event_id"), "missing_field"),
    ("missing type", lambda: without(event_dict(), "type"), "missing_field"),
    ("missing step", lambda: without(event_dict(), "step"), "missing_field"),
    ("missing occurred_at", lambda: without(event_dict(), "occurred_at"), "missing_field"),
    ("missing snapshot", lambda: without(event_dict(), "snapshot"), "missing_field"),
    ("snapshot missing order_id", lambda: event_dict(snapshot=without(SNAP, "order_id")), "missing_field"),
    ("snapshot missing quantity", lambda: event_dict(snapshot=without(SNAP, "quantity")), "missing_field"),
    ("snapshot missing user", lambda: event_dict(snapshot=without(SNAP, "user")), "missing_field"),
    ("str for int", lambda: event_dict(snapshot=snap_with(quantity="2")), "invalid_field"),
    ("bool for int", lambda: event_dict(snapshot=snap_with(quantity=True)), "invalid_field"),
    ("float for int", lambda: event_dict(snapshot=snap_with(quantity=2.0)), "invalid_field"),
    ("int for str", lambda: event_dict(event_id=5), "invalid_field"),
    ("null required str", lambda: event_dict(saga_id=None), "invalid_field"),
    ("empty order_id", lambda: event_dict(snapshot=snap_with(order_id="")), "invalid_field"),
    ("empty event_id", lambda: event_dict(event_id=""), "invalid_field"),
    ("int for bool", lambda: event_dict(snapshot=snap_with(inventory_available=1)), "invalid_field"),
    ("list for map", lambda: event_dict(metadata=["a"]), "invalid_field"),
    ("str for map", lambda: event_dict(metadata="a=b"), "invalid_field"),
    ("int map value", lambda: event_dict(metadata={"a": 1}), "invalid_field"),
    ("null map value", lambda: event_dict(metadata={"a": None}), "invalid_field"),
    ("nested map value", lambda: event_dict(snapshot=snap_with(attributes={"a": {}})), "invalid_field"),
    ("map too many entries", lambda: event_dict(metadata={str(i): "" for i in range(65)}), "invalid_field"),
    ("map key too long", lambda: event_dict(metadata={"k" * 257: "v"}), "invalid_field"),
    ("map value too long", lambda: event_dict(metadata={"k": "v" * 1025}), "invalid_field"),
    ("str for snapshot", lambda: event_dict(snapshot="o-1"), "invalid_field"),
    ("list for snapshot", lambda: event_dict(snapshot=[SNAP]), "invalid_field"),
    ("null snapshot", lambda: event_dict(snapshot=None), "invalid_field"),
    ("unknown type", lambda: event_dict(type="OrderShipped"), "unknown_value"),
    ("command type on event", lambda: event_dict(type="OrderCreate"), "unknown_value"),
    ("lowercase type", lambda: event_dict(type="ordercreated"), "unknown_value"),
    ("int type", lambda: event_dict(type=1), "unknown_value"),
    ("null type", lambda: event_dict(type=None), "unknown_value"),
    ("unknown step", lambda: event_dict(step="Shipping"), "unknown_value"),
    ("negative quantity", lambda: event_dict(snapshot=snap_with(quantity=-1)), "invalid_field"),
    ("negative price", lambda: event_dict(snapshot=snap_with(price_cents=-1)), "invalid_field"),
    ("negative sequence", lambda: event_dict(snapshot=snap_with(sequence=-1)), "invalid_field"),
    ("negative retry", lambda: event_dict(retry_count=-1), "invalid_field"),
    ("quantity above max", lambda: event_dict(snapshot=snap_with(quantity=WIRE_MAX_QUANTITY + 1)), "invalid_field"),
    ("price above max", lambda: event_dict(snapshot=snap_with(price_cents=MAX_MONEY + 1)), "invalid_field"),
    ("sequence above max", lambda: event_dict(snapshot=snap_with(sequence=2**62 + 1)), "invalid_field"),
    ("int64 price", lambda: event_dict(snapshot=snap_with(price_cents=2**63 - 1)), "invalid_field"),
    ("retry above max", lambda: event_dict(retry_count=10_001), "invalid_field"),
    ("schema_version 2", lambda: event_dict(schema_version=2), "invalid_field"),
    ("schema_version 0", lambda: event_dict(schema_version=0), "invalid_field"),
    ("naive timestamp", lambda: event_dict(occurred_at="2026-01-01T00:00:00"), "invalid_field"),
    ("date only", lambda: event_dict(occurred_at="2026-01-01"), "invalid_field"),
    ("not a timestamp", lambda: event_dict(occurred_at="yesterday"), "invalid_field"),
    ("empty timestamp", lambda: event_dict(occurred_at=""), "invalid_field"),
    ("int timestamp", lambda: event_dict(occurred_at=1767225600), "invalid_field"),
    ("null timestamp", lambda: event_dict(occurred_at=None), "invalid_field"),
    ("timestamp too long", lambda: event_dict(occurred_at=TS + " " * 40), "invalid_field"),
    ("event_id too long", lambda: event_dict(event_id="e" * 129), "invalid_field"),
    ("item too long", lambda: event_dict(snapshot=snap_with(item="i" * 129)), "invalid_field"),
    ("error too long", lambda: event_dict(error_message="x" * 4097), "invalid_field"),
    ("correlation too long", lambda: event_dict(correlation_key="x" * 257), "invalid_field"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in EVENT_CASES],
                         ids=[c[0] for c in EVENT_CASES])
def test_event_rejections(make: Mut, reason: str) -> None:
    reject(Event, orjson.dumps(make()), reason)


def test_error_path_names_nested_field() -> None:
    err = reject(Event, orjson.dumps(event_dict(snapshot=without(SNAP, "item"))), "missing_field")
    assert "Event.snapshot.item" in str(err)
    err = reject(Command, orjson.dumps(command_dict(snapshot=snap_with(quantity=-5))), "invalid_field")
    assert "Command.snapshot.quantity" in str(err)
    err = reject(Event, orjson.dumps(event_dict(metadata={"trace": 3})), "invalid_field")
    assert "Event.metadata.trace" in str(err)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: without(command_dict(), "command_id"), "missing_field"),
    (lambda: without(command_dict(), "issued_at"), "missing_field"),
    (lambda: command_dict(snapshot={}), "missing_field"),
    (lambda: command_dict(type="OrderCreated"), "unknown_value"),
    (lambda: command_dict(step="Finalise"), "unknown_value"),
    (lambda: command_dict(issued_at="2026-13-01T00:00:00Z"), "invalid_field"),
    (lambda: command_dict(snapshot=snap_with(price_cents="10")), "invalid_field"),
])
def test_command_rejections(make: Mut, reason: str) -> None:
    reject(Command, orjson.dumps(make()), reason)


@pytest.mark.parametrize(("data", "reason"), [
    ({}, "missing_field"),
    ({"user": 7}, "invalid_field"),
    ({"user": "u" * 129}, "invalid_field"),
    ({"user": "u", "orders": -1}, "invalid_field"),
    ({"user": "u", "spent_cents": 2**62 + 1}, "invalid_field"),
    ({"user": "u", "approved": "3"}, "invalid_field"),
    ({"user": "u", "status": "shipped"}, "unknown_value"),
    ({"user": "u", "status": "Approved"}, "unknown_value"),
    ({"user": "u", "last_updated": "x" * 65}, "invalid_field"),
    ({"user": "u", "metadata": [["revision", "1"]]}, "invalid_field"),
])
def test_aggregate_rejections(data: dict[str, Any], reason: str) -> None:
    reject(UserAggregate, orjson.dumps(data), reason)


def test_snapshot_rejections() -> None:
    reject(Snapshot, orjson.dumps(without(SNAP, "item")), "missing_field")
    reject(Snapshot, orjson.dumps(snap_with(quantity=WIRE_MAX_QUANTITY + 1)), "invalid_field")
    assert Snapshot.decode(orjson.dumps(snap_with(quantity=WIRE_MAX_QUANTITY, price_cents=MAX_MONEY)))


def test_huge_integer_beyond_64_bits_is_rejected() -> None:
    raw = orjson.dumps(event_dict()).replace(b'"quantity":2', b'"quantity":18446744073709551616')
    reject(Event, raw, "invalid_field")


# --- timestamps ----------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "canonical"), [
    ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00.000000Z"),
    ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
    ("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z"),
    ("2025-12-31T19:00:00.5-05:00", "2026-01-01T00:00:00.500000Z"),
    ("2026-06-15T12:34:56.123456+00:00", "2026-06-15T12:34:56.123456Z"),
    ("2026-01-01T05:30:00+05:30", "2026-01-01T00:00:00.000000Z"),
    ("2026-01-01 00:00:00+00:00", "2026-01-01T00:00:00.000000Z"),
])
def test_timestamps_normalised_to_utc(given: str, canonical: str) -> None:
    ev = Event.decode(orjson.dumps(event_dict(occurred_at=given)))
    cmd = Command.decode(orjson.dumps(command_dict(issued_at=given)))
    assert ev.occurred_at == cmd.issued_at == canonical
    assert Event.decode(ev.encode()).occurred_at == canonical


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_out_of_range_timestamp_is_a_contract_error(ts: str) -> None:
    reject(Event, orjson.dumps(event_dict(occurred_at=ts)), "invalid_field")


def test_year_below_1000_is_rejected_so_canonical_times_sort_as_strings() -> None:
    reject(Event, orjson.dumps(event_dict(occurred_at="0999-01-01T00:00:00Z")), "invalid_field")


# --- JSON schema ---------------------------------------------------------------------------


# JSON Schema cannot express these (format is not asserted, 2.0 is an integer, no map bounds)
SCHEMA_BLIND = {"float for int", "map too many entries", "map key too long", "map value too long",
                "naive timestamp", "date only", "not a timestamp", "empty timestamp",
                "timestamp too long"}


def test_schema_rejects_what_decoder_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(Event.json_schema())
    assert validator.is_valid(event_dict())
    accepted = [name for name, make, _ in EVENT_CASES
                if name not in SCHEMA_BLIND and validator.is_valid(make())]
    assert accepted == []
