"""AsyncAPI 3.0 description of the topics and messages, generated from the code.

The channels, who sends and who receives come from the topology
(:mod:`kafka_saga.core.topology`); every schema comes from the contracts' own field lists
(``Contract.json_schema``). The document cannot drift from what runs.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .bus.topics import Topics
from .config import DEFAULT_BOOTSTRAP
from .core import topology
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


def _typed(schema: dict[str, Any], type_value: str) -> dict[str, Any]:
    typed = {**schema, "properties": {**schema["properties"]}}
    typed["properties"]["type"] = {"type": "string", "const": type_value}
    typed.pop("$schema", None)
    return typed


def _messages() -> tuple[dict[str, Any], dict[str, Any]]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    command, event = Command.json_schema(), Event.json_schema()
    for command_type in CommandType:
        schemas[command_type.value] = _typed(command, command_type.value)
    for event_type in EventType:
        schemas[event_type.value] = _typed(event, event_type.value)
    for model in (UserAggregate, InventoryRequest):
        schema = model.json_schema()
        schema.pop("$schema", None)
        schemas[model.__name__] = schema
    schemas["DeadLetter"] = {
        "description": "The original record's bytes, unchanged (any content).",
        "type": ["string", "object", "array", "null"],
    }
    schemas["StoreEntry"] = {
        "description": "One entry of a role's state store, in the role's own encoding "
                       "(internal: read only by the role that wrote it); null deletes the entry.",
        "type": ["string", "object", "array", "null"],
    }
    for name in schemas:
        message: dict[str, Any] = {"name": name, "contentType": "application/json",
                                   "payload": {"$ref": f"#/components/schemas/{name}"}}
        if name == "StoreEntry":
            message["contentType"] = "application/octet-stream"
        if name == "DeadLetter":
            message["contentType"] = "application/octet-stream"
            message["headers"] = {"type": "object", "properties": {
                h: {"type": "string"} for h in (*DLQ_HEADERS, REINJECTED_HEADER)},
                "required": list(DLQ_HEADERS)}
        messages[name] = message
    return schemas, messages


def document(topics: Topics | None = None, partitions: int = 6,
             bootstrap: str = DEFAULT_BOOTSTRAP) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for this platform's topics and messages."""
    topics = topics or Topics()
    schemas, messages = _messages()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in topology.TOPICS:
        channel_id, address, names = spec.channel, topics.name(spec.name), spec.messages
        bindings: dict[str, Any] = {"partitions": partitions, "bindingVersion": "0.5.0"}
        if spec.config:
            bindings["topicConfiguration"] = {k: [v] if k == "cleanup.policy" else v
                                              for k, v in spec.config.items()}
        channels[channel_id] = {
            "address": address,
            "description": f"{spec.purpose} Key: {spec.key}.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
            "bindings": {"kafka": {"topic": address, **bindings}},
        }
        senders, receivers = topology.senders(spec.name), topology.readers(spec.name)
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
