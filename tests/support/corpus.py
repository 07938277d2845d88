"""A corpus of malformed records for the bad-input chaos test, and an independent producer.

Every ``malformed_*`` list holds ``(key, value, label)`` records that the topic's contract
refuses (``Contract.decode`` raises :class:`ContractError`), so each must be dead-lettered
exactly once. ``dlq_garbage`` is what a careless tool might write straight to ``orders.dlq``
(no DLQ headers, or only some of them): counted, never re-published. Labels are unique per
list and start with the category (``invalid_json:``, ``bad_utf8:``, ``wrong_shape:``...).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from kafka import KafkaProducer  # kafka-python: independent of the platform's aiokafka

from kafka_saga.core.catalog import Catalog
from kafka_saga.core.contracts import (
    MAX_MESSAGE_BYTES,
    Command,
    CommandType,
    Contract,
    ContractError,
    Event,
    EventType,
    Snapshot,
    Step,
    UserAggregate,
    new_id,
)

from .engines import TEST_ENGINE

Record = tuple[bytes | None, bytes | None, str]
Headers = list[tuple[str, bytes]]
ONE_MB = 1_000_000  # SI megabyte: the platform's own producer caps requests at 1 MiB
MAX_REQUEST = 2_000_000
# the biggest record a broker takes by default: Apache Kafka's message.max.bytes is 1,048,588
# bytes for a whole batch (key, headers and framing included); Tansu has no such limit
BIG_RECORD = 1024 * 1024 if TEST_ENGINE != "kafka" else 1_000_000
CATALOG = Catalog()


# --- good records ------------------------------------------------------------------------

def good_order(user: str, item: str = "espresso", quantity: int = 2) -> Command:
    """A valid OrderCreate at the catalog price: it ends approved."""
    snap = Snapshot(order_id=f"chaos-{new_id()[:12]}", user=user, item=item, quantity=quantity,
                    price_cents=(CATALOG.unit_price(item) or 0) * quantity)
    return Command(new_id(), new_id(), CommandType.ORDER_CREATE, snap)


def good_aggregate(user: str, n: int) -> UserAggregate:
    return UserAggregate(user=user, orders=n + 1, total_items=2 * n + 1, approved=n + 1,
                         spent_cents=250 * (n + 1), status="approved",
                         last_updated="2026-01-01T00:00:00.000000Z")


# --- templates and mutations -------------------------------------------------------------

def _snapshot() -> dict[str, Any]:
    return {"order_id": "chaos-bad", "user": "chaos-user", "item": "espresso", "quantity": 1,
            "sequence": 0, "price_cents": 250, "inventory_available": True, "attributes": {}}


def _command() -> dict[str, Any]:
    return {"command_id": "cmd-bad", "saga_id": "saga-bad", "type": "OrderCreate",
            "snapshot": _snapshot(), "step": "Validation",
            "issued_at": "2026-01-01T00:00:00.000000Z", "metadata": {}, "schema_version": 1}


def _event() -> dict[str, Any]:
    return {"event_id": "evt-bad", "saga_id": "saga-bad", "type": "OrderCreated",
            "snapshot": _snapshot(), "step": "Validation",
            "occurred_at": "2026-01-01T00:00:00.000000Z", "command_id": "", "retry_count": 0,
            "error_message": "", "correlation_key": "", "metadata": {}, "schema_version": 1}


def _aggregate() -> dict[str, Any]:
    return {"user": "chaos-user", "orders": 1, "total_items": 1, "approved": 1, "rejected": 0,
            "failed": 0, "pending": 0, "spent_cents": 250, "status": "approved",
            "last_updated": "2026-01-01T00:00:00.000000Z", "metadata": {}, "schema_version": 1}


_DROP = object()


def _with(template: dict[str, Any], path: str, value: Any) -> bytes:
    """The template with ``path`` (dotted) set to ``value`` (or removed with ``_DROP``)."""
    doc = copy.deepcopy(template)
    *parents, name = path.split(".")
    node = doc
    for part in parents:
        node = node[part]
    if value is _DROP:
        del node[name]
    else:
        node[name] = value
    return json.dumps(doc, separators=(",", ":")).encode()  # stdlib: big integers too


def padded(template: dict[str, Any], size: int) -> bytes:
    """Valid-looking JSON of exactly ``size`` bytes (unknown keys are ignored by the reader)."""
    doc = copy.deepcopy(template)
    doc["padding"] = ""
    base = len(orjson.dumps(doc))
    doc["padding"] = "x" * (size - base)
    raw = orjson.dumps(doc)
    assert len(raw) == size
    return raw


def _generic(template: dict[str, Any], null_value: bool) -> list[tuple[bytes | None, str]]:
    """Damage any contract shares: syntax, encoding, shape, size (and null on non-tables)."""
    good = orjson.dumps(template)
    noted = orjson.dumps({**template, "note": "@@"})  # where bad bytes go inside a string

    def note(raw: bytes) -> bytes:
        return noted.replace(b"@@", raw)

    values: list[tuple[bytes | None, str]] = [
        (b"{not json", "invalid_json:unquoted"),
        (b"{", "invalid_json:open-brace"),
        (good[:-1], "invalid_json:truncated"),
        (good[:-1] + b",}", "invalid_json:trailing-comma"),
        (good.replace(b'"', b"'"), "invalid_json:single-quotes"),
        (good + b"}", "invalid_json:extra-brace"),
        (b"", "invalid_json:empty"),
        (b"   \n\t", "invalid_json:whitespace"),
        (b"NaN", "invalid_json:nan"),
        (b"\x00\x01\x02", "invalid_json:control-bytes"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json:too-deep"),
        (b'{"a": "\\ud800"}', "invalid_json:lone-surrogate-escape"),
        (b'{"quantity": 1e400}', "invalid_json:infinite-number"),
        (b"\xff\xfe\x00", "bad_utf8:ff-fe"),
        (note(b"caf\xe9"), "bad_utf8:latin1"),
        (note(b"\xc0\xaf"), "bad_utf8:overlong"),
        (note(b"\xed\xa0\x80"), "bad_utf8:encoded-surrogate"),
        (note(b"\xe2\x82"), "bad_utf8:truncated-sequence"),
        (good.decode().encode("utf-16"), "bad_utf8:utf16"),
        (b"\xef\xbb\xbf" + good, "bad_utf8:bom"),
        (b"[]", "wrong_shape:empty-list"),
        (b"[" + good + b"]", "wrong_shape:list-of-object"),
        (b'"OrderCreate"', "wrong_shape:string"),
        (b"42", "wrong_shape:number"),
        (b"-1", "wrong_shape:negative-number"),
        (b"null", "wrong_shape:json-null"),
        (b"true", "wrong_shape:bool"),
        (b"{}", "missing_field:empty-object"),
        (padded(template, MAX_MESSAGE_BYTES + 1), "oversize:limit-plus-one"),
        (padded(template, 300 * 1024), "oversize:300KiB"),
        (padded(template, ONE_MB), "oversize:1MB"),
    ]
    if null_value:
        values.append((None, "null_value:tombstone-on-a-stream"))
    return values


def _snapshot_fields(template: dict[str, Any], prefix: str) -> list[tuple[bytes, str]]:
    p = prefix
    return [
        (_with(template, f"{p}.order_id", _DROP), "missing_field:snapshot.order_id"),
        (_with(template, f"{p}.user", _DROP), "missing_field:snapshot.user"),
        (_with(template, f"{p}.item", _DROP), "missing_field:snapshot.item"),
        (_with(template, f"{p}.quantity", _DROP), "missing_field:snapshot.quantity"),
        (_with(template, p, []), "wrong_type:snapshot-list"),
        (_with(template, p, "order"), "wrong_type:snapshot-string"),
        (_with(template, f"{p}.quantity", "2"), "wrong_type:quantity-string"),
        (_with(template, f"{p}.quantity", 2.0), "wrong_type:quantity-float"),
        (_with(template, f"{p}.quantity", True), "wrong_type:quantity-bool"),
        (_with(template, f"{p}.price_cents", "250"), "wrong_type:price-string"),
        (_with(template, f"{p}.inventory_available", "yes"), "wrong_type:inventory-string"),
        (_with(template, f"{p}.attributes", ["a"]), "wrong_type:attributes-list"),
        (_with(template, f"{p}.attributes", {"a": 1}), "wrong_type:attributes-int-value"),
        (_with(template, f"{p}.user", None), "wrong_type:user-null"),
        (_with(template, f"{p}.quantity", -1), "number:quantity-negative"),
        (_with(template, f"{p}.quantity", 1_000_001), "number:quantity-huge"),
        (_with(template, f"{p}.quantity", 2**63), "number:quantity-2^63"),
        (_with(template, f"{p}.price_cents", -250), "number:price-negative"),
        (_with(template, f"{p}.price_cents", 10**12 + 1), "number:price-huge"),
        (_with(template, f"{p}.sequence", -1), "number:sequence-negative"),
        (_with(template, f"{p}.order_id", ""), "string:order_id-empty"),
        (_with(template, f"{p}.order_id", "o" * 129), "string:order_id-too-long"),
        (_with(template, f"{p}.attributes", {f"k{i}": "v" for i in range(65)}),
         "string:attributes-65-entries"),
    ]


def _envelope_fields(template: dict[str, Any], required: list[str], time_field: str,
                     choices: list[str]) -> list[tuple[bytes, str]]:
    out = [(_with(template, name, _DROP), f"missing_field:{name}") for name in required]
    out += [
        (_with(template, required[0], 123), f"wrong_type:{required[0]}-int"),
        (_with(template, "saga_id", None), "wrong_type:saga_id-null"),
        (_with(template, "type", 1), "wrong_type:type-int"),
        (_with(template, "metadata", "x"), "wrong_type:metadata-string"),
        (_with(template, time_field, 1767225600), f"wrong_type:{time_field}-epoch-int"),
        (_with(template, "schema_version", "1"), "wrong_type:schema_version-string"),
        (_with(template, "type", "OrderExplode"), "unknown_value:type"),
        (_with(template, "type", choices[0].lower()), "unknown_value:type-lowercase"),
        (_with(template, "type", ""), "unknown_value:type-empty"),
        (_with(template, "step", "Shipping"), "unknown_value:step"),
        (_with(template, "step", "validation"), "unknown_value:step-lowercase"),
        (_with(template, "schema_version", 0), "number:schema_version-0"),
        (_with(template, "schema_version", 99), "number:schema_version-99"),
        (_with(template, "saga_id", ""), "string:saga_id-empty"),
        (_with(template, "saga_id", "s" * 129), "string:saga_id-too-long"),
        (_with(template, time_field, "yesterday"), f"string:{time_field}-words"),
        (_with(template, time_field, "2026-01-01T00:00:00"), f"string:{time_field}-no-zone"),
        (_with(template, time_field, "0999-01-01T00:00:00Z"), f"string:{time_field}-year-999"),
        (_with(template, "metadata", {"k": "v" * 1025}), "string:metadata-value-too-long"),
    ]
    return out


def _keyed(values: list[tuple[bytes | None, str]], prefix: str, null_keys: bool = True) -> list[Record]:
    """Keys: mostly distinct (spread over partitions), every seventh one null (if ``null_keys``)."""
    out: list[Record] = []
    for i, (value, label) in enumerate(values):
        key = None if null_keys and i % 7 == 3 and value is not None else f"{prefix}-{i:03d}".encode()
        out.append((key, value, label if key is not None else label + "+null-key"))
    return out


def malformed_commands() -> list[Record]:
    template = _command()
    values = _generic(template, null_value=True) + _snapshot_fields(template, "snapshot")
    values += _envelope_fields(template, ["command_id", "saga_id", "type", "snapshot", "issued_at"],
                               "issued_at", [t.value for t in CommandType])
    return _keyed(values, "chaos-cmd")


def malformed_events() -> list[Record]:
    template = _event()
    values = _generic(template, null_value=True) + _snapshot_fields(template, "snapshot")
    values += _envelope_fields(
        template, ["event_id", "saga_id", "type", "snapshot", "step", "occurred_at"],
        "occurred_at", [t.value for t in EventType])
    values += [
        (_with(template, "retry_count", -1), "number:retry_count-negative"),
        (_with(template, "retry_count", 10_001), "number:retry_count-huge"),
        (_with(template, "error_message", "e" * 4097), "string:error_message-too-long"),
        (_with(template, "correlation_key", 7), "wrong_type:correlation_key-int"),
    ]
    return _keyed(values, "chaos-evt")


def malformed_aggregates() -> list[Record]:
    template = _aggregate()
    values = _generic(template, null_value=False)  # a null value here is a deletion
    values += [
        (_with(template, "user", _DROP), "missing_field:user"),
        (_with(template, "user", 5), "wrong_type:user-int"),
        (_with(template, "user", None), "wrong_type:user-null"),
        (_with(template, "user", ["a"]), "wrong_type:user-list"),
        (_with(template, "approved", "3"), "wrong_type:approved-string"),
        (_with(template, "spent_cents", 2.5), "wrong_type:spent-float"),
        (_with(template, "pending", True), "wrong_type:pending-bool"),
        (_with(template, "last_updated", 5), "wrong_type:last_updated-int"),
        (_with(template, "metadata", []), "wrong_type:metadata-list"),
        (_with(template, "metadata", {"revision": 3}), "wrong_type:metadata-int-value"),
        (_with(template, "status", 1), "wrong_type:status-int"),
        (_with(template, "status", "shipped"), "unknown_value:status"),
        (_with(template, "status", "APPROVED"), "unknown_value:status-uppercase"),
        (_with(template, "orders", -1), "number:orders-negative"),
        (_with(template, "rejected", -5), "number:rejected-negative"),
        (_with(template, "spent_cents", 2**62 + 1), "number:spent-huge"),
        (_with(template, "total_items", 2**64), "number:total_items-2^64"),
        (_with(template, "failed", 10**30), "number:failed-10^30"),
        (_with(template, "schema_version", 2), "number:schema_version-2"),
        (_with(template, "schema_version", 0), "number:schema_version-0"),
        (_with(template, "user", "u" * 129), "string:user-too-long"),
        (_with(template, "last_updated", "t" * 65), "string:last_updated-too-long"),
        (_with(template, "metadata", {f"k{i}": "v" for i in range(65)}), "string:metadata-65"),
    ]
    # Apache Kafka itself refuses a keyless record on a compacted topic (the whole batch)
    return _keyed(values, "chaos-agg", null_keys=TEST_ENGINE != "kafka")


# Headers some malformed records carry: the letter keeps them, but never our own names spoofed.
ORIGINAL_HEADERS: dict[str, Headers] = {
    "invalid_json:unquoted": [("reason", b"spoofed"), ("origin-topic", b"elsewhere"),
                              ("trace", b"t-1")],
    "wrong_shape:empty-list": [("trace", b"t-2"), ("retry-count", b"9")],
    "missing_field:empty-object": [("origin-offset", b"-7"), ("role", b"nobody")],
}


# Garbage hand-written to orders.dlq: DLQ headers absent, partial or empty.
GARBAGE_HEADERS: dict[str, Headers] = {
    "headers:reason-only": [("reason", b"invalid_json")],
    "headers:origin-only": [("origin-topic", b"orders.commands"), ("origin-offset", b"1")],
    "headers:empty-reason": [("reason", b""), ("origin-topic", b"orders.events")],
    "headers:empty-origin": [("reason", b"oversize"), ("origin-topic", b"")],
    "headers:capitalised": [("Reason", b"x"), ("Origin-Topic", b"orders.events")],
    "headers:binary-reason": [("reason", b"\xff\xfe")],
    "headers:unrelated": [("trace", b"abc"), ("role", b"orchestrator")],
}


def dlq_garbage() -> list[Record]:
    values: list[tuple[bytes | None, str]] = [
        (raw, f"contract:{label}") for raw, label in _generic(_command(), null_value=True)
        if not label.startswith("oversize:")  # the big ones are below, once
    ]
    values += [
        (good_order("chaos-dlq").encode(), "contract:valid-command-without-headers"),
        (orjson.dumps(_event()), "contract:valid-event-without-headers"),
        (b"garbage", "bytes:word"),
        (bytes(range(256)), "bytes:all-bytes"),
        (b"\x00" * 64, "bytes:zeros"),
        (padded(_command(), ONE_MB), "size:1MB"),
        (padded(_command(), 300 * 1024), "size:300KiB"),
    ]
    values += [(b'{"reason": "in the value, not a header"}', label) for label in GARBAGE_HEADERS]
    values += [(f"line {i}".encode(), f"bytes:line-{i}") for i in range(12)]
    return _keyed(values, "chaos-dlq")


def expected_reason(contract: type[Contract], value: bytes | None) -> str:
    """The reason the contract gives for refusing ``value`` (fails if it is accepted)."""
    try:
        contract.decode(value)
    except ContractError as exc:
        return exc.reason
    raise AssertionError(f"{contract.__name__} accepts {value[:80]!r}")


# --- the independent producer ------------------------------------------------------------

def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         enable_idempotence=False, max_request_size=MAX_REQUEST)


def send_all(client: KafkaProducer, topic: str, records: list[Record],
             headers: dict[str, Headers] | None = None) -> list[tuple[int, int]]:
    """Produce ``records`` in order; return each one's (partition, offset)."""
    futures = [client.send(topic, key=key, value=value,
                           headers=(headers or {}).get(label.removesuffix("+null-key"), []))
               for key, value, label in records]
    client.flush(60)
    return [(md.partition, md.offset) for md in (f.get(60) for f in futures)]


def odd_events(user: str) -> list[Event]:
    """Contract-valid but odd (never dead-lettered): one saga's events newest first, then
    events of sagas nobody started (two different sagas for one order)."""
    snap = Snapshot(order_id=f"chaos-odd-{new_id()[:8]}", user=user, item="latte", quantity=1,
                    price_cents=400)
    saga = new_id()

    def at(second: int) -> str:
        return f"2026-01-01T00:00:{second:02d}.000000Z"

    steps = (Step.VALIDATION, Step.PAYMENT, Step.INVENTORY, Step.FINALIZE)
    forward = [Event.new(EventType.ORDER_CREATED, snap, Step.VALIDATION, saga, occurred_at=at(0))]
    forward += [Event.new(EventType.ORDER_APPROVED, snap, step, saga, occurred_at=at(i + 1))
                for i, step in enumerate(steps)]
    ghost = Snapshot(order_id=f"chaos-ghost-{new_id()[:8]}", user=user, item="mocha", quantity=2,
                     price_cents=900)
    unknown = [
        Event.new(EventType.ORDER_APPROVED, ghost, Step.PAYMENT, new_id(), occurred_at=at(5)),
        Event.new(EventType.ORDER_REJECTED, ghost, Step.FINALIZE, new_id(), occurred_at=at(6),
                  error_message="ghost"),
    ]
    return list(reversed(forward)) + unknown
