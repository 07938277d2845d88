"""Contract samples and raw-record builders shared by the contract tests."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_saga.core.contracts import (
    Command,
    CommandType,
    Contract,
    ContractError,
    Event,
    EventType,
    Snapshot,
    Step,
    UserAggregate,
)

SNAP = {"order_id": "o-1", "user": "alice", "item": "book", "quantity": 2}
TS = "2026-01-01T00:00:00.000000Z"


def event_dict(**over: Any) -> dict[str, Any]:
    base = {"event_id": "e-1", "saga_id": "s-1", "type": "OrderCreated",
            "snapshot": dict(SNAP), "step": "Validation", "occurred_at": TS}
    return {**base, **over}


def command_dict(**over: Any) -> dict[str, Any]:
    base = {"command_id": "c-1", "saga_id": "s-1", "type": "OrderCreate",
            "snapshot": dict(SNAP), "issued_at": TS}
    return {**base, **over}


def snap_with(**over: Any) -> dict[str, Any]:
    return {**SNAP, **over}


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def reject(cls: type[Contract], raw: bytes | None, reason: str) -> ContractError:
    with pytest.raises(ContractError) as info:
        cls.decode(raw)
    assert info.value.reason == reason, str(info.value)
    assert str(info.value).startswith(cls.__name__), str(info.value)
    return info.value


FULL_SNAPSHOT = Snapshot(order_id="o-9", user="bob", item="lamp", quantity=3, sequence=7,
                         price_cents=1999, inventory_available=False,
                         attributes={"colour": "red", "size": "L"})
FULL_COMMAND = Command(command_id="c-9", saga_id="s-9", type=CommandType.ORDER_APPROVE,
                       snapshot=FULL_SNAPSHOT, step=Step.PAYMENT, issued_at=TS,
                       metadata={"trace": "t1"}, schema_version=1)
FULL_EVENT = Event(event_id="e-9", saga_id="s-9", type=EventType.ORDER_REJECTED,
                   snapshot=FULL_SNAPSHOT, step=Step.INVENTORY, occurred_at=TS, command_id="c-9",
                   retry_count=3, error_message="out of stock", correlation_key="k",
                   metadata={"a": "b"}, schema_version=1)
FULL_AGG = UserAggregate(user="bob", orders=5, total_items=9, approved=2, rejected=1, failed=1,
                         pending=1, spent_cents=4200, status="approved", last_updated=TS,
                         metadata={"revision": "8"})
SAMPLES = [FULL_SNAPSHOT, FULL_COMMAND, FULL_EVENT, FULL_AGG]

