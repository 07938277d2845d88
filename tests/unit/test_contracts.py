"""Pure unit tests of the wire contracts (kafka_saga.core.fields / contracts)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from kafka_saga.core.contracts import (
    CONTRACTS,
    WIRE_MAX_QUANTITY,
    Command,
    CommandType,
    Contract,
    Event,
    EventType,
    InventoryRequest,
    Snapshot,
    Step,
    UserAggregate,
)
from kafka_saga.core.fields import canonical_time, now_rfc3339
from tests.support.contract_samples import (
    FULL_COMMAND,
    FULL_EVENT,
    FULL_SNAPSHOT,
    SAMPLES,
    SNAP,
    TS,
    command_dict,
    event_dict,
    snap_with,
)

# --- round trips and defaults ------------------------------------------------------------

@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip(obj: Contract) -> None:
    raw = obj.encode()
    back = type(obj).decode(raw)
    assert back == obj
    assert back.encode() == raw
    assert obj.to_dict() == orjson.loads(raw)


def test_enums_decode_to_enum_members() -> None:
    cmd = Command.decode(FULL_COMMAND.encode())
    ev = Event.decode(FULL_EVENT.encode())
    assert cmd.type is CommandType.ORDER_APPROVE and cmd.step is Step.PAYMENT
    assert ev.type is EventType.ORDER_REJECTED and ev.step is Step.INVENTORY
    assert isinstance(ev.snapshot, Snapshot)
    assert cmd.key == b"o-9"  # a command by order (clients may key it any way)
    assert ev.key == ev.snapshot.user.encode()  # an event by user (one partition per user)


def test_defaults_are_filled() -> None:
    snap = Snapshot.decode(orjson.dumps(SNAP))
    assert (snap.sequence, snap.price_cents, snap.inventory_available, snap.attributes) == (0, 0, True, {})
    cmd = Command.decode(orjson.dumps(command_dict()))
    assert (cmd.step, cmd.metadata, cmd.schema_version) == (Step.VALIDATION, {}, 1)
    ev = Event.decode(orjson.dumps(event_dict()))
    assert (ev.command_id, ev.retry_count, ev.error_message, ev.correlation_key) == ("", 0, "", "")
    assert (ev.metadata, ev.schema_version) == ({}, 1)
    agg = UserAggregate.decode(b'{"user": "u"}')
    assert agg == UserAggregate(user="u")
    assert agg.status == "" and agg.last_updated == "" and agg.metadata == {}


def test_default_maps_are_not_shared() -> None:
    a = Event.decode(orjson.dumps(event_dict()))
    b = Event.decode(orjson.dumps(event_dict()))
    a.metadata["x"] = "1"
    assert b.metadata == {}
    assert a.snapshot.attributes is not b.snapshot.attributes


def test_null_optional_field_takes_default() -> None:
    ev = Event.decode(orjson.dumps(event_dict(metadata=None, retry_count=None, command_id=None)))
    assert (ev.metadata, ev.retry_count, ev.command_id) == ({}, 0, "")


def test_unknown_fields_are_ignored() -> None:
    data = event_dict(future_field={"x": [1, 2]}, snapshot=snap_with(colour=None, n=1.5))
    ev = Event.decode(orjson.dumps(data))
    assert ev == Event.decode(orjson.dumps(event_dict()))
    assert "future_field" not in ev.to_dict()


def test_event_new_fills_id_and_time() -> None:
    snap = Snapshot.decode(orjson.dumps(SNAP))
    ev = Event.new(EventType.ORDER_CREATED, snap, Step.VALIDATION, "s-1", retry_count=2)
    assert len(ev.event_id) == 32 and ev.retry_count == 2
    assert Event.decode(ev.encode()) == ev  # the generated time is already canonical
    fixed = Event.new(EventType.ORDER_FAILED, snap, Step.PAYMENT, "s", event_id="x", occurred_at=TS)
    assert (fixed.event_id, fixed.occurred_at) == ("x", TS)


def test_canonical_time() -> None:
    tz = timezone(timedelta(hours=-2))
    assert canonical_time(datetime(2026, 3, 1, 22, 5, 6, 7, tzinfo=tz)) == "2026-03-02T00:05:06.000007Z"
    now = now_rfc3339()
    assert len(now) == 27 and now.endswith("Z") and now[10] == "T"
    assert Event.decode(orjson.dumps(event_dict(occurred_at=now))).occurred_at == now


def test_contracts_registry() -> None:
    assert CONTRACTS == {"Snapshot": Snapshot, "Command": Command, "Event": Event,
                         "UserAggregate": UserAggregate, "InventoryRequest": InventoryRequest}


# --- rejections ----------------------------------------------------------------------------


REQUIRED = {
    Snapshot: ["order_id", "user", "item", "quantity"],
    Command: ["command_id", "saga_id", "type", "snapshot", "issued_at"],
    Event: ["event_id", "saga_id", "type", "snapshot", "step", "occurred_at"],
    UserAggregate: ["user"],
}


@pytest.mark.parametrize("cls", list(REQUIRED), ids=lambda c: c.__name__)
def test_json_schema_shape(cls: type[Contract]) -> None:
    schema = cls.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == cls.__name__ and schema["type"] == "object"
    assert list(schema["properties"]) == [f.name for f in cls.FIELDS]
    assert schema["required"] == REQUIRED[cls]
    assert schema["required"] == [f.name for f in cls.FIELDS if f.required]
    for f in cls.FIELDS:
        prop = schema["properties"][f.name]
        assert ("default" in prop) == (not f.required and not callable(f.default))
    # enum members and defaults serialise as plain JSON strings
    assert json.loads(json.dumps(schema)) == orjson.loads(orjson.dumps(schema))


def test_json_schema_details() -> None:
    ev = Event.json_schema()["properties"]
    assert ev["type"]["enum"] == [t.value for t in EventType]
    assert ev["step"]["enum"] == ["Validation", "Payment", "Inventory", "Finalize"]
    assert ev["occurred_at"] == {"type": "string", "format": "date-time"}
    assert ev["metadata"]["additionalProperties"] == {"type": "string"}
    snap = ev["snapshot"]
    assert "$schema" not in snap and snap["required"] == REQUIRED[Snapshot]
    assert snap["properties"]["quantity"] == {"type": "integer", "minimum": 0, "maximum": WIRE_MAX_QUANTITY}
    assert snap["properties"]["order_id"]["minLength"] == 1
    assert snap["properties"]["inventory_available"] == {"type": "boolean", "default": True}
    cmd = Command.json_schema()["properties"]
    assert cmd["type"]["enum"] == ["OrderCreate", "OrderApprove", "OrderReject",
                                   "InventoryReserved", "InventoryRefused"]
    assert cmd["step"]["default"] == "Validation"
    agg = UserAggregate.json_schema()["properties"]
    assert agg["status"]["enum"] == ["", "pending", "approved", "rejected", "failed"]


def test_command_built_with_defaults_round_trips() -> None:
    cmd = Command(command_id="c", saga_id="s", type=CommandType.ORDER_CREATE,
                  snapshot=FULL_SNAPSHOT)
    assert Command.decode(cmd.encode()).command_id == "c"


# Command.issued_at is stamped with "now" by the constructor, yet required on the wire.
STAMPED = {Command: {"issued_at"}}


@pytest.mark.parametrize("cls", [Snapshot, Event, UserAggregate, Command], ids=lambda c: c.__name__)
def test_dataclass_defaults_match_contract(cls: type[Contract]) -> None:
    has_default = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.default is not dataclasses.MISSING
                   or f.default_factory is not dataclasses.MISSING}
    assert has_default - STAMPED.get(cls, set()) == {f.name for f in cls.FIELDS if not f.required}


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_encoded_messages_conform_to_schema(obj: Contract) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = type(obj).json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(orjson.loads(obj.encode()))) == []
    minimal = type(obj).decode(orjson.dumps({k: v for k, v in obj.to_dict().items()
                                             if k in REQUIRED[type(obj)]}))
    assert validator.is_valid(orjson.loads(minimal.encode()))
