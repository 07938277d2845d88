"""Wire contracts: snapshots, commands, events, user aggregates, DLQ headers.

All JSON (orjson). Commands and events are keyed by ``order_id``, aggregates by ``user``.
Decoding is strict: bad UTF-8, invalid JSON, the wrong shape, a missing field, a wrong
type, an unknown ``type``/``step`` or an oversize value raise :class:`ContractError`, which
the consume loop routes to the dead-letter queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar, Self

import orjson

from .decoders import fast_decoder
from .fields import ContractError, Field, decode_fields, json_schema, non_negative, now_rfc3339

MAX_MESSAGE_BYTES = 256 * 1024
SHARED_DECODE_MAX = 4096  # records remembered per contract by Contract.decode_shared (~1 KB each)
_SHARED: dict[type, dict[bytes, Any]] = {}
SCHEMA_VERSION = 1
MAX_MONEY = 10**12
# Two bounds on an order's quantity, on purpose (tests/unit/test_contracts.py, the OpenAPI):
# ORDER_MAX_QUANTITY is the business rule: the most one order may ask for; POST /orders and
# `kafka-saga submit` refuse more (400), and the saga's Validation step rejects a command that
# asks for more (a rejected saga, with its reason). WIRE_MAX_QUANTITY is the contract: the most
# a snapshot on the wire may carry and still decode; a record above it is malformed and goes to
# the DLQ. It is wider so that an order breaking the rule is still carried, and refused by
# Validation with a reason, rather than dead-lettered.
ORDER_MAX_QUANTITY = 100
WIRE_MAX_QUANTITY = 1_000_000
# An order's status: pending until its saga ends approved, rejected or failed.
PENDING, APPROVED, REJECTED, FAILED = "pending", "approved", "rejected", "failed"
STATUSES = (PENDING, APPROVED, REJECTED, FAILED)  # also the order of their codes where packed


class CommandType(StrEnum):
    ORDER_CREATE = "OrderCreate"
    ORDER_APPROVE = "OrderApprove"
    ORDER_REJECT = "OrderReject"
    # the inventory participant's answers to a reservation, on orders.replies
    INVENTORY_RESERVED = "InventoryReserved"
    INVENTORY_REFUSED = "InventoryRefused"


class EventType(StrEnum):
    ORDER_CREATED = "OrderCreated"
    ORDER_APPROVED = "OrderApproved"
    ORDER_REJECTED = "OrderRejected"
    ORDER_FAILED = "OrderFailed"
    ORDER_COMPENSATED = "OrderCompensated"


class Step(StrEnum):
    VALIDATION = "Validation"
    PAYMENT = "Payment"
    INVENTORY = "Inventory"
    FINALIZE = "Finalize"


def new_id() -> str:
    """128 random bits as 32 hex digits (the shape of a uuid4's hex, at a third of its cost)."""
    return os.urandom(16).hex()


def _empty_map() -> dict[str, str]:
    return {}


class Contract:
    """Base of every wire contract: strict ``decode``, ``encode`` and ``from_dict``."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    ENUMS: ClassVar[dict[str, Any]] = {}  # field name -> enum class its validated value becomes

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | None = None) -> Self:
        decoded = fast_decoder(cls)(data)  # valid, canonical input: one compiled function
        if decoded is not None:
            return decoded
        values = decode_fields(cls.FIELDS, data, path or cls.__name__)  # else: precise errors
        for name, enum in cls.ENUMS.items():
            values[name] = enum(values[name])
        return cls(**values)

    @classmethod
    def decode(cls, raw: bytes | None) -> Self:
        if raw is None:
            raise ContractError("null_value", f"{cls.__name__}: record has no value")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise ContractError(
                "oversize", f"{cls.__name__}: {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}"
            )
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            reason = "bad_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
            raise ContractError(reason, f"{cls.__name__}: {exc}") from None
        if type(data) is not dict:
            raise ContractError(
                "wrong_shape", f"{cls.__name__}: expected a JSON object, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    @classmethod
    def decode_shared(cls, raw: bytes | None) -> Self:
        """:meth:`decode`, remembering recent results: one process running several roles
        decodes each record once, however many of its consumers read it.

        The returned object may be shared with other readers: treat it as read-only.
        """
        cache = _SHARED.get(cls)
        if cache is None:
            cache = _SHARED[cls] = {}
        if raw is not None:
            hit = cache.get(raw)
            if hit is not None:
                return hit
        decoded = cls.decode(raw)  # errors are not remembered: they are rare and cheap to redo
        if len(cache) >= SHARED_DECODE_MAX:
            del cache[next(iter(cache))]  # oldest first (dicts keep insertion order)
        cache[raw] = decoded  # type: ignore[index]
        return decoded

    def encode(self) -> bytes:
        return orjson.dumps(self)

    def to_dict(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return json_schema(cls)


@dataclass(slots=True)
class Snapshot(Contract):
    """The order as the saga carries it (event-carried state transfer)."""

    order_id: str
    user: str
    item: str
    quantity: int
    sequence: int = 0
    price_cents: int = 0
    inventory_available: bool = True
    attributes: dict[str, str] = field(default_factory=_empty_map)

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("order_id", "str", min=1, max_len=128, description="Order identifier (Kafka key)"),
        Field("user", "str", max_len=128, description="Customer identifier"),
        Field("item", "str", max_len=128),
        Field("quantity", "int", min=0, max=WIRE_MAX_QUANTITY),
        Field("sequence", "int", default=0, min=0, max=2**62),
        Field("price_cents", "int", default=0, min=0, max=MAX_MONEY),
        Field("inventory_available", "bool", default=True),
        Field("attributes", "map", default=_empty_map),
    )


@dataclass(slots=True)
class Command(Contract):
    """An intent on ``orders.commands``."""

    command_id: str
    saga_id: str
    type: CommandType
    snapshot: Snapshot
    step: Step = Step.VALIDATION
    issued_at: str = field(default_factory=now_rfc3339)
    metadata: dict[str, str] = field(default_factory=_empty_map)
    schema_version: int = SCHEMA_VERSION

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("command_id", "str", min=1, max_len=128),
        Field("saga_id", "str", min=1, max_len=128),
        Field("type", "enum", choices=tuple(CommandType)),
        Field("snapshot", "object", model=Snapshot),
        Field("step", "enum", default=Step.VALIDATION, choices=tuple(Step)),
        Field("issued_at", "time"),
        Field("metadata", "map", default=_empty_map),
        Field("schema_version", "int", default=SCHEMA_VERSION, min=1, max=SCHEMA_VERSION),
    )

    ENUMS: ClassVar[dict[str, Any]] = {"type": CommandType, "step": Step}

    @property
    def key(self) -> bytes:
        return self.snapshot.order_id.encode()


@dataclass(slots=True)
class Event(Contract):
    """A fact on ``orders.events``."""

    event_id: str
    saga_id: str
    type: EventType
    snapshot: Snapshot
    step: Step
    occurred_at: str
    command_id: str = ""
    retry_count: int = 0
    error_message: str = ""
    correlation_key: str = ""
    metadata: dict[str, str] = field(default_factory=_empty_map)
    schema_version: int = SCHEMA_VERSION

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("event_id", "str", min=1, max_len=128),
        Field("saga_id", "str", min=1, max_len=128),
        Field("type", "enum", choices=tuple(EventType)),
        Field("snapshot", "object", model=Snapshot),
        Field("step", "enum", choices=tuple(Step)),
        Field("occurred_at", "time"),
        Field("command_id", "str", default="", max_len=128),
        Field("retry_count", "int", default=0, min=0, max=10_000),
        Field("error_message", "str", default="", max_len=4096),
        Field("correlation_key", "str", default="", max_len=256),
        Field("metadata", "map", default=_empty_map),
        Field("schema_version", "int", default=SCHEMA_VERSION, min=1, max=SCHEMA_VERSION),
    )

    ENUMS: ClassVar[dict[str, Any]] = {"type": EventType, "step": Step}

    @property
    def key(self) -> bytes:
        """The user: a user's events share a partition (per-user folds and rules are local)."""
        return self.snapshot.user.encode()

    @classmethod
    def new(cls, type_: EventType, snapshot: Snapshot, step: Step, saga_id: str, **extra: Any) -> Event:
        return cls(
            event_id=extra.pop("event_id", None) or new_id(),
            saga_id=saga_id,
            type=type_,
            snapshot=snapshot,
            step=step,
            occurred_at=extra.pop("occurred_at", None) or now_rfc3339(),
            **extra,
        )


@dataclass(slots=True)
class UserAggregate(Contract):
    """Per-user read model published on compacted ``orders.aggregates``."""

    user: str
    orders: int = 0
    total_items: int = 0
    approved: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0
    spent_cents: int = 0
    status: str = ""
    last_updated: str = ""
    metadata: dict[str, str] = field(default_factory=_empty_map)
    schema_version: int = SCHEMA_VERSION

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("user", "str", max_len=128),
        Field("orders", "int", default=0, min=0, max=2**62),
        Field("total_items", "int", default=0, min=0, max=2**62),
        Field("approved", "int", default=0, min=0, max=2**62),
        Field("rejected", "int", default=0, min=0, max=2**62),
        Field("failed", "int", default=0, min=0, max=2**62),
        Field("pending", "int", default=0, min=0, max=2**62),
        Field("spent_cents", "int", default=0, min=0, max=2**62),
        Field("status", "enum", default="", choices=("", *STATUSES)),
        Field("last_updated", "str", default="", max_len=64),
        Field("metadata", "map", default=_empty_map),
        Field("schema_version", "int", default=SCHEMA_VERSION, min=1, max=SCHEMA_VERSION),
    )

    def copy(self) -> UserAggregate:
        return replace(self, metadata=dict(self.metadata))


@dataclass(slots=True)
class InventoryRequest(Contract):
    """Reserve or release stock for one saga, on ``orders.inventory`` keyed by item."""

    request_id: str
    saga_id: str
    order_id: str
    item: str
    quantity: int
    action: str
    requested_at: str = field(default_factory=now_rfc3339)
    schema_version: int = SCHEMA_VERSION

    FIELDS: ClassVar[tuple[Field, ...]] = (
        Field("request_id", "str", min=1, max_len=128),
        Field("saga_id", "str", min=1, max_len=128),
        Field("order_id", "str", min=1, max_len=128),
        Field("item", "str", max_len=128),
        Field("quantity", "int", min=0, max=WIRE_MAX_QUANTITY),
        Field("action", "enum", choices=("reserve", "release")),
        Field("requested_at", "time"),
        Field("schema_version", "int", default=SCHEMA_VERSION, min=1, max=SCHEMA_VERSION),
    )

    @property
    def key(self) -> bytes:
        return self.item.encode()


# --- dead-letter records ---------------------------------------------------------------

DLQ_HEADERS = (
    "reason",
    "error",
    "origin-topic",
    "origin-partition",
    "origin-offset",
    "role",
    "published",
    "retry-count",
)
(DLQ_REASON, DLQ_ERROR, DLQ_ORIGIN_TOPIC, DLQ_ORIGIN_PARTITION, DLQ_ORIGIN_OFFSET, DLQ_ROLE,
 DLQ_PUBLISHED, DLQ_RETRY_COUNT) = DLQ_HEADERS
REINJECTED_HEADER = "dlq-reinjected"
TRUNCATED_HEADER = "value-truncated"  # a dead letter too large to keep whole: the original size


def dlq_headers(
    *,
    reason: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    role: str,
    retry_count: int = 0,
    original: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...] = (),
) -> list[tuple[str, bytes]]:
    """Headers of a DLQ record; the original record's own headers are kept behind them."""
    ours = dict(zip(DLQ_HEADERS, (reason, error[:2000], topic, str(partition), str(offset), role,
                                  now_rfc3339(), str(retry_count)), strict=True))
    headers = [(k, v.encode()) for k, v in ours.items()]
    headers.extend((k, v) for k, v in original if k not in ours)
    return headers


REPLY_PARTITION = "reply-partition"  # request header: the orders.replies partition to answer to


def reply_partition(headers: Any) -> int | None:
    """The partition a request asks its answer to go to (None: by key)."""
    return non_negative(headers_dict(headers).get(REPLY_PARTITION, ""))


def headers_dict(headers: Any) -> dict[str, str]:
    """Kafka headers as a ``str -> str`` dict (undecodable bytes replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out


CONTRACTS: dict[str, type[Contract]] = {
    "Snapshot": Snapshot,
    "Command": Command,
    "Event": Event,
    "UserAggregate": UserAggregate,
    "InventoryRequest": InventoryRequest,
}

__all__ = [
    "Command",
    "CommandType",
    "Contract",
    "ContractError",
    "Event",
    "EventType",
    "InventoryRequest",
    "Snapshot",
    "Step",
    "UserAggregate",
    "dlq_headers",
    "headers_dict",
    "new_id",
]
