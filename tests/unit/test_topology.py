"""The declared topology and the code agree: roles, consumer groups, topics, start order."""

from __future__ import annotations

from kafka_saga.asyncapi import document
from kafka_saga.bus.memory import MemoryBus
from kafka_saga.bus.topics import Topics
from kafka_saga.config import METRICS_PORT_VARS, ROLE_ORDER, RoleOptions, Settings, parse_roles
from kafka_saga.core import topology
from kafka_saga.roles import ROLES
from kafka_saga.roles.base import RoleContext


def test_every_declared_role_is_implemented_in_start_order():
    assert list(ROLES) == list(topology.ROLE_NAMES) == list(ROLE_ORDER)
    assert parse_roles("all") == list(topology.ROLE_NAMES)
    assert ROLE_ORDER.index("inventory") < ROLE_ORDER.index("orchestrator")  # asked before it asks


def test_roles_consume_exactly_the_groups_they_declare():
    topics = Topics("t.")
    bus = MemoryBus(topics)
    checked = 0
    for name, cls in ROLES.items():
        role = cls(RoleContext(bus, Settings.from_env({}), RoleOptions()))  # type: ignore[arg-type]
        subs = role.subscriptions()
        if not subs:
            continue  # the orchestrator builds its subscription when it runs; query and demo have none
        declared = {topics.group(g.name): tuple(topics.name(t) for t in g.consumes)
                    for g in topology.role(name).groups}
        assert {s.group_id: s.topics for s in subs} == declared, name
        checked += 1
    assert checked == 4  # aggregator, tracker, inventory, dlq


def test_metrics_ports_and_topics_come_from_the_declaration():
    assert METRICS_PORT_VARS == {
        "aggregator": "AGGREGATOR_METRICS_PORT", "tracker": "TRACKER_METRICS_PORT",
        "inventory": "INVENTORY_METRICS_PORT", "orchestrator": "ORCHESTRATOR_METRICS_PORT",
        "dlq": "DLQ_METRICS_PORT"}
    assert set(Topics().all()) == {t.name for t in topology.TOPICS}
    produced = {t for r in topology.ROLES for t in r.produces}
    consumed = {t for r in topology.ROLES for t in r.consumes}
    for spec in topology.TOPICS:  # every topic has a writer and a reader
        assert topology.senders(spec.name) and topology.readers(spec.name), spec.name
        assert spec.name in produced | consumed or spec.external_senders, spec.name


def test_asyncapi_senders_and_receivers_follow_the_topology():
    ops = document()["operations"]
    assert ops["send_ordersReplies"]["summary"] == "Published by tracker, inventory, query, cli."
    assert ops["receive_ordersReplies"]["summary"] == "Consumed by orchestrator."
    assert ops["receive_ordersInventory"]["summary"] == "Consumed by inventory."
    assert ops["receive_ordersEvents"]["summary"] == "Consumed by aggregator, tracker, query, replay."


def test_every_setting_a_role_declares_is_a_declared_setting():
    from kafka_saga.config import KafkaSecurity, declared, role_variables

    known = {spec["env"] for cls in (Settings, KafkaSecurity) for _, spec in declared(cls)}
    known |= {name for name, _, _ in role_variables()}
    for spec in topology.ROLES:
        assert set(spec.settings) <= known, (spec.name, set(spec.settings) - known)
        assert spec.workers_var in known or not spec.groups, spec.name
