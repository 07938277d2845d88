"""The generated fast decoders agree with the full field-by-field check, on any input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafka_saga.core.contracts import (
    Command,
    CommandType,
    Contract,
    ContractError,
    Event,
    EventType,
    InventoryRequest,
    Snapshot,
    Step,
    UserAggregate,
)
from kafka_saga.core.decoders import fast_decoder, is_canonical_time
from kafka_saga.core.fields import decode_fields

TS = "2026-03-01T12:00:00.000000Z"
SNAP = Snapshot("o-1", "bob", "latte", 2, 5, 400, True, {"k": "v"})
SAMPLES: list[Contract] = [
    SNAP,
    Command("c-1", "s-1", CommandType.ORDER_REJECT, SNAP, Step.PAYMENT, TS, {"reason": "x"}),
    Event("e-1", "s-1", EventType.ORDER_APPROVED, SNAP, Step.INVENTORY, TS, "c-1", 2, "", "k", {}),
    UserAggregate("bob", 3, 4, 1, 1, 0, 1, 800, "approved", TS, {"revision": "3"}),
    InventoryRequest("r-1", "s-1", "o-1", "latte", 2, "reserve", TS),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    | st.sampled_from(["", "OrderCreated", "Payment", "reserve", "approved", TS,
                       "2026-03-01T12:00:00Z", "2026-13-01T12:00:00.000000Z", "x" * 129]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def slow(cls: type[Contract], data: dict[str, Any]) -> Contract:
    """The reference path: field by field, then the enums."""
    values = decode_fields(cls.FIELDS, data, cls.__name__)
    for name, enum in cls.ENUMS.items():
        values[name] = enum(values[name])
    for field in cls.FIELDS:  # nested contracts through the same reference path
        if field.kind == "object":
            values[field.name] = slow(field.model, data[field.name])
    return cls(**values)


def assert_agree(cls: type[Contract], data: dict[str, Any]) -> None:
    fast = fast_decoder(cls)(data)
    try:
        expected = slow(cls, data)
    except ContractError:
        assert fast is None, f"fast path accepted what the full check refuses: {data!r}"
        return
    if fast is not None:
        assert fast == expected
        assert orjson.dumps(fast) == orjson.dumps(expected)


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_fast_decoder_accepts_what_we_write(obj: Contract) -> None:
    data = orjson.loads(obj.encode())
    decoded = fast_decoder(type(obj))(data)
    assert decoded == obj
    assert type(obj).decode(obj.encode()) == obj


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_decoder_agrees_with_full_check_under_mutation(obj: Contract, data: st.DataObject) -> None:
    message = orjson.loads(obj.encode())
    names = [f.name for f in type(obj).FIELDS]
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(names))
        if data.draw(st.booleans()):
            message.pop(name, None)
        else:
            message[name] = data.draw(json_values)
    if "snapshot" in message and isinstance(message["snapshot"], dict) and data.draw(st.booleans()):
        field = data.draw(st.sampled_from([f.name for f in Snapshot.FIELDS]))
        message["snapshot"][field] = data.draw(json_values)
    assert_agree(type(obj), message)


def test_values_to_normalise_take_the_full_path() -> None:
    data = orjson.loads(SAMPLES[2].encode())
    data["occurred_at"] = "2026-03-01T13:00:00+01:00"  # valid, but not canonical
    assert fast_decoder(Event)(data) is None
    assert Event.from_dict(data).occurred_at == TS


def test_errors_stay_precise() -> None:
    data = orjson.loads(SAMPLES[2].encode())
    data["snapshot"]["quantity"] = -1
    with pytest.raises(ContractError, match=r"Event\.snapshot\.quantity: -1 is below 0"):
        Event.from_dict(data)


@pytest.mark.parametrize("value, ok", [
    (TS, True), ("1000-01-01T00:00:00.000000Z", True), ("9998-12-31T23:59:59.999999Z", True),
    ("0999-12-31T23:59:59.999999Z", False), ("9999-01-01T00:00:00.000000Z", False),
    ("2026-02-30T00:00:00.000000Z", False), ("2026-03-01T12:00:00Z", False),
    ("2026-03-01T12:00:00.000000+00:00", False), ("2026-03-01 12:00:00.000000Z", False),
])
def test_is_canonical_time(value: str, ok: bool) -> None:
    assert is_canonical_time(value) is ok


def test_decode_shared_decodes_equal_bytes_once_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka_saga.core.contracts as contracts

    monkeypatch.setattr(contracts, "SHARED_DECODE_MAX", 3)
    monkeypatch.setitem(contracts._SHARED, Event, {})
    raw = SAMPLES[2].encode()
    first = Event.decode_shared(raw)
    assert first == SAMPLES[2]
    assert Event.decode_shared(bytes(bytearray(raw))) is first  # equal bytes, another object
    for kind in ("OrderRejected", "OrderFailed", "OrderCompensated"):
        Event.decode_shared(raw.replace(b"OrderApproved", kind.encode()))
    assert len(contracts._SHARED[Event]) == 3
    assert Event.decode_shared(raw) is not first  # the oldest went first
    with pytest.raises(ContractError):
        Event.decode_shared(b"{}")
    with pytest.raises(ContractError):
        Event.decode_shared(b"{}")  # refusals are not remembered as successes
