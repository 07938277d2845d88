"""The platform's topology, declared once: its topics, its roles, and who reads and writes what.

Everything that lists roles or topics is derived from here: the supervisor's start order and
the role names it accepts, the per-role settings and metrics-port variables, the topics that
are created, the AsyncAPI document and the roles/topics tables of the docs. The declaration
is data only; the code that runs a role lives in :mod:`kafka_saga.roles` and binds to its
entry by name (a test checks both sides match).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .contracts import CommandType, EventType


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name (before the test prefix), key, purpose and message types."""

    name: str
    channel: str  # AsyncAPI channel id
    key: str
    purpose: str
    messages: tuple[str, ...]
    config: dict[str, str] = field(default_factory=dict)
    external_senders: tuple[str, ...] = ()  # writers that are not roles (clients, the CLI)
    external_readers: tuple[str, ...] = ()  # readers that are not roles (the replayer)


@dataclass(frozen=True)
class Group:
    """One consumer group of a role: what it consumes, and whether it dead-letters what it
    cannot read (exactly one group per topic does, so a bad record lands in the DLQ once)."""

    name: str  # suffix of the group id: ``<prefix>kafka-saga.<name>``
    consumes: tuple[str, ...]
    dead_letters: bool = True
    # the compacted changelog of the group's per-partition state store, if it keeps one
    # (partition N of the changelog holds the state of partition N of ``consumes[0]``)
    changelog: str | None = None


@dataclass(frozen=True)
class RoleSpec:
    """One role: what it is, what it consumes and produces, and the settings it reads."""

    name: str
    purpose: str
    groups: tuple[Group, ...] = ()
    produces: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # environment variables the role reads (besides the common)
    serves_http: bool = False
    notes: str = ""  # how it does it, for the docs

    @property
    def consumes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for g in self.groups for t in g.consumes))

    @property
    def changelogs(self) -> tuple[str, ...]:
        """The changelogs of its state stores (it writes them, and reads them to restore)."""
        return tuple(g.changelog for g in self.groups if g.changelog)

    @property
    def workers_var(self) -> str:
        return f"{self.name.upper()}_WORKERS"

    @property
    def metrics_port_var(self) -> str | None:
        """A role with a consumer loop may serve its own /metrics (the query role serves it
        on its API port)."""
        return None if self.serves_http or not self.groups else f"{self.name.upper()}_METRICS_PORT"


_COMMANDS = tuple(t.value for t in CommandType)
_EVENTS = tuple(t.value for t in EventType)

COMMANDS = "orders.commands"
REPLIES = "orders.replies"
EVENTS = "orders.events"
AGGREGATES = "orders.aggregates"
INVENTORY = "orders.inventory"
DLQ = "orders.dlq"
ORCHESTRATOR_STATE = "orders.orchestrator.changelog"
INVENTORY_STATE = "orders.inventory.changelog"
TRACKER_STATE = "orders.tracker.changelog"
AGGREGATOR_STATE = "orders.aggregator.changelog"
_COMPACTED = {"cleanup.policy": "compact"}


def _changelog(name: str, channel: str, what: str) -> TopicSpec:
    return TopicSpec(name, channel, "store entry key",
                     f"State store changelog ({what}): one record per changed entry, written at "
                     "each checkpoint before the input offsets are committed; a null value "
                     "deletes the entry. Compacted: its size follows the live state.",
                     ("StoreEntry",), config=dict(_COMPACTED))


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(COMMANDS, "ordersCommands",
              "order_id by convention; any key, or none, and any partitioner (a saga belongs "
              "to the partition its OrderCreate is on)",
              "Intents: order creation, and rejections of sagas whose partition is not known "
              "(flow-controlled: paused while the orchestrator is at its in-flight bound).",
              _COMMANDS, external_senders=("client",)),
    TopicSpec(REPLIES, "ordersReplies",
              "order_id; partition: the saga's (explicit, from the reply-partition header of "
              "the request or event it answers)",
              "Messages to running sagas: the inventory participant's InventoryReserved/"
              "InventoryRefused, the tracker's OrderReject, cancels (API, CLI). Never paused.",
              (CommandType.INVENTORY_RESERVED.value, CommandType.INVENTORY_REFUSED.value,
               CommandType.ORDER_REJECT.value),
              external_senders=("cli",)),
    TopicSpec(EVENTS, "ordersEvents",
              "user; partition: murmur2 of the user (explicit); header reply-partition: the "
              "saga's commands partition",
              "Every saga state transition, in order per saga and per user (a user's events "
              "are on one partition).", _EVENTS,
              external_readers=("replay",)),
    TopicSpec(AGGREGATES, "ordersAggregates", "user",
              "Per-user snapshots (compacted: the latest wins; a null value deletes the user "
              "from the query view).", ("UserAggregate",),
              config=dict(_COMPACTED)),
    TopicSpec(INVENTORY, "ordersInventory", "item",
              "Stock reservations and releases, one owner per item.", ("InventoryRequest",)),
    TopicSpec(DLQ, "ordersDlq", "original key",
              "Records that could not be handled: the original bytes (cut at 512 KiB) with DLQ "
              "headers giving the reason and origin.", ("DeadLetter",),
              external_senders=("the consume loop of every role",)),
    _changelog(ORCHESTRATOR_STATE, "ordersOrchestratorChangelog",
               "the orchestrator's sagas, live and finished, per commands partition"),
    _changelog(INVENTORY_STATE, "ordersInventoryChangelog",
               "stock per item and reservations per saga, per inventory partition"),
    _changelog(TRACKER_STATE, "ordersTrackerChangelog",
               "the rules' facts per saga and order, per events partition"),
    _changelog(AGGREGATOR_STATE, "ordersAggregatorChangelog",
               "per-user aggregates and per-order facts, per folded partition"),
)

# In start order: a role starts after those it may need (the aggregator and tracker before
# the orchestrator, the inventory participant before the sagas that ask it, the read side
# last but the demo); the supervisor stops them in reverse.
ROLES: tuple[RoleSpec, ...] = (
    RoleSpec("aggregator", "Per-user aggregates: folds orders.events (partitioned by user), "
             "publishes snapshots to the compacted orders.aggregates.",
             groups=(Group("aggregator", (EVENTS,), changelog=AGGREGATOR_STATE),),
             produces=(AGGREGATES, AGGREGATOR_STATE),
             settings=("KAFKA_SAGA_STATE_WINDOW",),
             notes="Each user is on exactly one partition of orders.events; the fold is a "
                   "per-partition state store, restored from its changelog; one snapshot per "
                   "changed user per batch."),
    RoleSpec("tracker", "Choreography: checks the event stream against rules and asks for "
             "rejections (OrderReject on orders.replies).",
             groups=(Group("tracker", (EVENTS,), dead_letters=False, changelog=TRACKER_STATE),),
             produces=(REPLIES, TRACKER_STATE),
             settings=("TRACKER_VELOCITY_LIMIT", "KAFKA_SAGA_STATE_WINDOW"),
             notes="Rules price_integrity, duplicate_order, velocity (off by default), all "
                   "partition-local (a user is on one partition); command id "
                   "tracker:{rule}:{saga_id}, at the saga's partition of orders.replies (the "
                   "event's reply-partition header). Skips unreadable events: the aggregator "
                   "dead-letters them."),
    RoleSpec("inventory", "Saga participant: reserves and releases stock, one owner per item; "
             "answers on orders.replies.",
             groups=(Group("inventory", (INVENTORY,), changelog=INVENTORY_STATE),),
             produces=(REPLIES, INVENTORY_STATE),
             settings=("KAFKA_SAGA_CATALOG", "KAFKA_SAGA_STATE_WINDOW"),
             notes="Stock ledger per partition, restored from its changelog; answers go to "
                   "the partition named by the request's reply-partition header."),
    RoleSpec("orchestrator", "Runs each order's saga (Validation, Payment, Inventory, Finalize) "
             "with compensations, retries and the DLQ; its sagas are a state store.",
             groups=(Group("orchestrator", (COMMANDS, REPLIES), changelog=ORCHESTRATOR_STATE),),
             produces=(EVENTS, INVENTORY, ORCHESTRATOR_STATE),
             settings=("KAFKA_SAGA_MAX_IN_FLIGHT", "PAYMENT_FAILURE_RATE", "PAYMENT_TIMEOUT_S",
                       "PAYMENT_MAX_RETRIES", "PAYMENT_BACKOFF_S", "INVENTORY_TIMEOUT_S",
                       "INVENTORY_MAX_TRIES", "KAFKA_SAGA_STATE_WINDOW", "KAFKA_SAGA_CATALOG"),
             notes="Co-partitioned group over commands and replies (range assignment; equal "
                   "partition counts checked at start); one task per saga, at most "
                   "KAFKA_SAGA_MAX_IN_FLIGHT per process (commands partitions paused at the "
                   "bound); writes a saga's events to its user's partition with the saga's "
                   "partition in a header; restores a partition's sagas from its changelog "
                   "plus the orders.events written since the last checkpoint (on every events "
                   "partition), and resumes the unfinished ones."),
    RoleSpec("dlq", "Reads orders.dlq (counts and logs by reason) and audits orders.aggregates.",
             groups=(Group("dlq", (DLQ,), dead_letters=False),
                     Group("dlq.aggregates-audit", (AGGREGATES,))),
             settings=("KAFKA_SAGA_DLQ_RECENT",),
             notes="Never re-publishes garbage written to orders.dlq (counted); the audit group "
                   "is the one that dead-letters a malformed aggregate."),
    RoleSpec("query", "The HTTP side (CQRS read model, order submission, admin, dashboard); "
             "follows orders.events, orders.aggregates and orders.dlq without a group.",
             produces=(COMMANDS, REPLIES),
             settings=("QUERY_API_HOST", "QUERY_API_PORT", "QUERY_ORDERS_MAX", "QUERY_WAIT_MAX_S",
                       "KAFKA_SAGA_ADMIN_TOKEN"),
             serves_http=True,
             notes="aiohttp on QUERY_API_HOST:QUERY_API_PORT; POST /orders writes commands, "
                   "cancels go to the saga's partition of orders.replies, POST /dlq/replay "
                   "re-injects to the origin topic and partition."),
    RoleSpec("demo", "Order generator for make run: steady OrderCreate commands.",
             produces=(COMMANDS,), settings=("DEMO_RATE", "DEMO_COUNT"),
             notes="DEMO_RATE orders/s, DEMO_COUNT in all (0: no limit)."),
)

# Topics read without a consumer group (every instance reads all of them).
FOLLOWED: dict[str, tuple[str, ...]] = {"query": (EVENTS, AGGREGATES, DLQ)}

ROLE_NAMES: tuple[str, ...] = tuple(r.name for r in ROLES)
BY_NAME: dict[str, RoleSpec] = {r.name: r for r in ROLES}
TOPIC_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def role(name: str) -> RoleSpec:
    return BY_NAME[name]


def senders(topic: str) -> list[str]:
    """Who writes ``topic``: the roles declaring it, then the writers outside the platform."""
    spec = TOPIC_BY_NAME[topic]
    return [r.name for r in ROLES if topic in r.produces] + list(spec.external_senders)


def readers(topic: str) -> list[str]:
    """Who reads ``topic``: roles in a group, following it or restoring a store from it, then
    readers outside."""
    spec = TOPIC_BY_NAME[topic]
    return ([r.name for r in ROLES if topic in r.consumes or topic in FOLLOWED.get(r.name, ())
             or topic in r.changelogs]
            + list(spec.external_readers))
