"""AsyncAPI 3.0 description of the topics and messages, generated from the contracts.

Every schema comes from the contracts' own field lists (``Contract.json_schema``), so the
document cannot drift from what the consumers actually accept.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .bus.topics import Topics
from .core.contracts import (
    DLQ_HEADERS,
    REINJECTED_HEADER,
    Command,
    CommandType,
    Event,
    EventType,
    InventoryRequest,
    UserAggregate,
)

# channel id -> (topic attribute, key, description, messages, who sends, who receives)
CHANNELS: dict[str, tuple[str, str, str, list[str], list[str], list[str]]] = {
    "ordersCommands": ("commands", "order_id by convention; any key, or none, and any partitioner "
                       "(a saga belongs to the partition its OrderCreate is on)",
                       "Intents: order creation, and rejections of sagas whose partition is not "
                       "known (flow-controlled: paused while the orchestrator is at its in-flight "
                       "bound).",
                       [t.value for t in CommandType], ["client", "demo"], ["orchestrator"]),
    "ordersReplies": ("replies", "order_id; partition: the saga's (explicit, from the request's "
                      "reply-partition header, or the partition of the saga's events)",
                      "Messages to running sagas: the inventory participant's OrderApprove/"
                      "OrderReject, the tracker's OrderReject, cancels (API, CLI). Never paused.",
                      [CommandType.ORDER_APPROVE.value, CommandType.ORDER_REJECT.value],
                      ["inventory", "tracker", "query", "cli"], ["orchestrator"]),
    "ordersEvents": ("events", "order_id; partition: the saga's command partition (explicit)",
                     "Every saga state transition, in order per saga.",
                     [t.value for t in EventType], ["orchestrator"],
                     ["aggregator", "tracker", "query", "replay"]),
    "ordersEventsByUser": ("events_by_user", "user", "orders.events re-keyed by user (aggregator stage).",
                           [t.value for t in EventType], ["aggregator"], ["aggregator"]),
    "ordersAggregates": ("aggregates", "user", "Per-user snapshots (compacted: the latest wins).",
                         ["UserAggregate"], ["aggregator"], ["query", "dlq"]),
    "ordersInventory": ("inventory", "item", "Stock reservations and releases, one owner per item.",
                        ["InventoryRequest"], ["orchestrator"], ["inventory"]),
    "ordersDlq": ("dlq", "original key", "Records that could not be handled, with their reason and origin.",
                  ["DeadLetter"], ["every role"], ["dlq"]),
}


def _typed(schema: dict[str, Any], type_value: str) -> dict[str, Any]:
    typed = {**schema, "properties": {**schema["properties"]}}
    typed["properties"]["type"] = {"type": "string", "const": type_value}
    typed.pop("$schema", None)
    return typed


def _messages() -> tuple[dict[str, Any], dict[str, Any]]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    command, event = Command.json_schema(), Event.json_schema()
    for kind in CommandType:
        schemas[kind.value] = _typed(command, kind.value)
    for kind in EventType:
        schemas[kind.value] = _typed(event, kind.value)
    for model in (UserAggregate, InventoryRequest):
        schema = model.json_schema()
        schema.pop("$schema", None)
        schemas[model.__name__] = schema
    schemas["DeadLetter"] = {
        "description": "The original record's bytes, unchanged (any content).",
        "type": ["string", "object", "array", "null"],
    }
    for name in schemas:
        message: dict[str, Any] = {"name": name, "contentType": "application/json",
                                   "payload": {"$ref": f"#/components/schemas/{name}"}}
        if name == "DeadLetter":
            message["contentType"] = "application/octet-stream"
            message["headers"] = {"type": "object", "properties": {
                h: {"type": "string"} for h in (*DLQ_HEADERS, REINJECTED_HEADER)},
                "required": list(DLQ_HEADERS)}
        messages[name] = message
    return schemas, messages


def document(topics: Topics | None = None, partitions: int = 6,
             bootstrap: str = "127.0.0.1:9092") -> dict[str, Any]:
    """The AsyncAPI 3.0 document for this platform's topics and messages."""
    topics = topics or Topics()
    schemas, messages = _messages()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel_id, (attr, key, description, names, senders, receivers) in CHANNELS.items():
        address = getattr(topics, attr)
        bindings: dict[str, Any] = {"partitions": partitions, "bindingVersion": "0.5.0"}
        if attr == "aggregates":
            bindings["topicConfiguration"] = {"cleanup.policy": ["compact"]}
        channels[channel_id] = {
            "address": address,
            "description": f"{description} Key: {key}.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": address, **bindings}},
        }
        refs = [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names]
        operations[f"send_{channel_id}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{channel_id}"}, "messages": refs,
            "summary": f"Published by {', '.join(senders)}."}
        operations[f"receive_{channel_id}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{channel_id}"}, "messages": refs,
            "summary": f"Consumed by {', '.join(receivers)}."}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "kafka_saga", "version": __version__,
                 "description": "Event-driven order platform: saga orchestration and choreography, "
                                "CQRS read side, event sourcing, dead-letter queue."},
        "defaultContentType": "application/json",
        "servers": {"local": {"host": bootstrap, "protocol": "kafka",
                              "description": "The embedded broker, or any Apache Kafka cluster."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
