"""The AsyncAPI document covers every topic and message type, and its references resolve."""

from __future__ import annotations

import json

from kafka_saga.asyncapi import document
from kafka_saga.bus.topics import Topics
from kafka_saga.core.contracts import CommandType, EventType


def _resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_topic_is_a_channel():
    doc = document(Topics("p."))
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(Topics("p.").all())
    assert doc["asyncapi"] == "3.0.0"


def test_every_message_type_is_described_with_its_schema():
    doc = document()
    names = set(doc["components"]["messages"])
    assert {t.value for t in CommandType} <= names
    assert {t.value for t in EventType} <= names
    assert {"UserAggregate", "InventoryRequest", "DeadLetter"} <= names
    created = doc["components"]["schemas"]["OrderCreated"]
    assert created["properties"]["type"] == {"type": "string", "const": "OrderCreated"}
    assert "snapshot" in created["required"]
    commands = doc["channels"]["ordersCommands"]["messages"]
    assert set(commands) == {t.value for t in CommandType}


def test_every_reference_resolves_and_the_document_is_json():
    doc = json.loads(json.dumps(document()))
    refs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    assert refs
    for ref in refs:
        assert _resolve(doc, ref), ref
    ops = doc["operations"]
    assert {op["action"] for op in ops.values()} == {"send", "receive"}
    assert doc["channels"]["ordersAggregates"]["bindings"]["kafka"]["topicConfiguration"] == {
        "cleanup.policy": ["compact"]}


def test_the_cli_prints_the_document(capsys):
    from kafka_saga.cli import main

    assert main(["asyncapi", "--partitions", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["ordersEvents"]["bindings"]["kafka"]["partitions"] == 3
