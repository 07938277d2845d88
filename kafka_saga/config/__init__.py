"""Settings: every environment variable the platform reads, declared once, and the YAML role list.

Each :class:`Settings` field names its variable, default, parser, check and meaning in one
:func:`setting` declaration; :meth:`Settings.from_env` reads the environment (and the
command line's overrides, and a role list) once and validates every value once.
``docs/configuration.md`` is generated from these declarations (``python -m kafka_saga.docgen``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..core import topology
from .declare import BadBootstrap as BadBootstrap  # re-exported: the kinds of settings' error
from .declare import ConfigError as ConfigError
from .declare import PartitionsDisagree as PartitionsDisagree
from .declare import PortTaken as PortTaken
from .declare import UnreadableRoleList as UnreadableRoleList
from .declare import (
    at_least,
    between,
    bootstrap_addresses,
    check_declared,
    flag,
    integer,
    lower,
    number,
    one_of,
    read_declared,
    setting,
    stripped,
    upper,
)
from .declare import declared as declared  # re-exported for the docs generator
from .declare import non_negative_int as non_negative_int  # re-exported for the roles

ROLE_ORDER = topology.ROLE_NAMES  # start order, declared once in the topology
METRICS_PORT_VARS = {r.name: r.metrics_port_var for r in topology.ROLES if r.metrics_port_var}
QUERY_PORT_SETTING = "QUERY_API_PORT"  # (or --port, or the role list's query.port)
# The broker a client dials when KAFKA_BOOTSTRAP_SERVERS is unset (`run` starts its own).
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True)
class RoleOptions:
    """Per-role options: competing workers, metrics port, free-form extras."""

    workers: int = 1
    metrics_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def metrics_port_setting(role: str) -> str:
    """What sets ``role``'s metrics port, as an error message names it."""
    listed = f"{role}.metrics_port in the role list"
    return f"{METRICS_PORT_VARS[role]} or {listed}" if role in METRICS_PORT_VARS else listed


def role_variables() -> Iterator[tuple[str, Any, str]]:
    """(variable, default, meaning) of the per-role variables."""
    for role in ROLE_ORDER:
        yield (f"{role.upper()}_WORKERS", 1,
               f"Competing consumers of the {role} role (values below 1 mean 1).")
    for role, name in METRICS_PORT_VARS.items():
        yield name, None, f"Port of the {role} role's metrics server (unset: none)."


def _roles(env: Mapping[str, str]) -> dict[str, RoleOptions]:
    def variable(name: str) -> int | None:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return None
        try:
            return integer(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} {exc}") from None

    return {
        role: RoleOptions(
            workers=max(1, variable(f"{role.upper()}_WORKERS") or 1),
            metrics_port=variable(METRICS_PORT_VARS[role]) if role in METRICS_PORT_VARS else None)
        for role in ROLE_ORDER
    }


@dataclass(frozen=True)
class KafkaSecurity:
    """Security settings passed through to aiokafka (empty = PLAINTEXT)."""

    protocol: str = setting("PLAINTEXT", "KAFKA_SECURITY_PROTOCOL",
                            "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (any case).",
                            upper, one_of(*SECURITY_PROTOCOLS))
    sasl_mechanism: str | None = setting(
        None, "KAFKA_SASL_MECHANISM", "With `SASL_*`: `PLAIN` (unset), `SCRAM-SHA-256` or "
        "`SCRAM-SHA-512`.", upper)
    sasl_username: str | None = setting(None, "KAFKA_SASL_USERNAME",
                                        "SASL user name (required with `SASL_*`).")
    sasl_password: str | None = setting(None, "KAFKA_SASL_PASSWORD",
                                        "SASL password (required with `SASL_*`).", secret=True)
    ssl_cafile: str | None = setting(None, "KAFKA_SSL_CAFILE", "CA file the broker's "
                                     "certificate is verified against (unset: the system CAs).")
    ssl_certfile: str | None = setting(None, "KAFKA_SSL_CERTFILE", "Client certificate file.")
    ssl_keyfile: str | None = setting(None, "KAFKA_SSL_KEYFILE",
                                      "Client key file (needs `KAFKA_SSL_CERTFILE`).")
    ssl_password: str | None = setting(None, "KAFKA_SSL_KEY_PASSWORD",
                                       "Password of the client key file.", secret=True)

    def validate(self) -> None:
        """Each value alone; whether they combine (credentials, TLS files) is found out when
        :meth:`kafka_saga.bus.client.Bus.options` builds the clients' options."""
        check_declared(self)


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know; built by :meth:`from_env`."""

    bootstrap_servers: str | None = setting(
        None, "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers. Unset: `run` starts a local "
        f"broker (`KAFKA_SAGA_ENGINE`); the other commands dial `{DEFAULT_BOOTSTRAP}`.",
        check=bootstrap_addresses, error=BadBootstrap)
    engine: str = setting(
        "tansu", "KAFKA_SAGA_ENGINE",
        "The local broker `run` (and `broker`) starts: `tansu` (embedded, memory-only) or "
        "`kafka` (Apache Kafka 3.9.1, durable).", lower,
        one_of("tansu", "kafka"))
    embedded_port: int = setting(
        9092, "KAFKA_SAGA_EMBEDDED_PORT", "Port of the local broker (`run` falls back to a free "
        "port if it is taken; also the default of `broker --port`); 0: the default.", integer,
        zero_is_default=True)
    kafka_data_dir: str = setting(
        ".data/kafka", "KAFKA_SAGA_KAFKA_DATA_DIR", "Where a local Apache Kafka node keeps its "
        "data (`run` with `KAFKA_SAGA_ENGINE=kafka`; `broker --data-dir`).")
    kafka_home: str | None = setting(
        None, "KAFKA_SAGA_KAFKA_HOME", "An unpacked Apache Kafka distribution whose `libs/` a "
        "local Kafka node runs, instead of the jars Maven resolves into the cache.")
    kafka_cache: str | None = setting(
        None, "KAFKA_SAGA_KAFKA_CACHE", "Where Maven puts the Kafka jars (unset: "
        "`.cache/kafka/<version>` in the repository; `make kafka-jars`).")
    java_home: str | None = setting(None, "JAVA_HOME", "The JDK a local Apache Kafka node runs "
                                    "on (unset: `java` on PATH).")
    tansu_log: str = setting("warn", "TANSU_LOG", "Log level of the embedded Tansu broker "
                             "(passed to it as `RUST_LOG`).")
    topic_prefix: str = setting("", "KAFKA_SAGA_TOPIC_PREFIX",
                                "Prefix of every topic and consumer group.")
    partitions: int = setting(6, "KAFKA_SAGA_PARTITIONS", "Partitions of the topics created.",
                              integer, at_least(1))
    replication_factor: int = setting(
        0, "KAFKA_SAGA_REPLICATION_FACTOR", "Replication factor of the topics created; 0: "
        "`min(3, brokers in the cluster)`.", integer, at_least(0))
    min_insync_replicas: int = setting(
        0, "KAFKA_SAGA_MIN_INSYNC_REPLICAS",
        "`min.insync.replicas` of the topics created; 0: `min(2, replication factor)` "
        "(not set on unreplicated topics).", integer, at_least(0))
    idempotent_producer: bool | None = setting(
        None, "KAFKA_ENABLE_IDEMPOTENCE",
        "Idempotent producer. Unset: on when the broker grants a producer id (Apache "
        "Kafka), off otherwise (Tansu); logged once at start. `true`/`false` force it. "
        "acks=all always.", flag)
    processing: str = setting(
        "auto", "KAFKA_SAGA_PROCESSING",
        "Processing guarantee of the consuming roles. `auto`: exactly-once when the broker "
        "grants a transactional producer id (Apache Kafka), else at-least-once (Tansu). "
        "`exactly_once`: each input partition's checkpoint (outputs, changelog writes, input "
        "offsets) is one Kafka transaction and the platform's readers read committed records "
        "only; the start fails when the broker has no transactions. `at_least_once`: flush "
        "outputs, then commit; handlers are idempotent. Logged at start, on /metrics.",
        lower, one_of("auto", "exactly_once", "at_least_once"))
    linger_ms: int = setting(5, "KAFKA_SAGA_LINGER_MS", "Producer batching delay.", integer)
    fetch_max_wait_ms: int = setting(
        20, "KAFKA_SAGA_FETCH_MAX_WAIT_MS",
        "Longest a consumer's fetch waits for records (0: the default). Apache Kafka "
        "answers as soon as records arrive, so this only paces idle polling there; the "
        "embedded Tansu broker answers at the end of the wait (measured: 500 ms -> 115 ms "
        "per hop, 100 -> 17 ms, 20 -> 5 ms), so it bounds each hop's latency.",
        integer, zero_is_default=True)
    commit_interval_ms: int | None = setting(
        None, "KAFKA_SAGA_COMMIT_INTERVAL_MS",
        "Longest a consumer goes between checkpoints (flush outputs and changelogs, then "
        "commit offsets) while it has handled records; a rebalance and a stop checkpoint at "
        "once. Unset: 1000 at at-least-once (a crash redelivers at most this much work, and "
        "a state store writes a changed entry once per interval), 100 at exactly-once (a "
        "transaction commits at each checkpoint, so it bounds each hop's latency; an idle "
        "consumer then commits at once). 0: after every batch.", integer)
    query_host: str = setting("127.0.0.1", "QUERY_API_HOST",
                              "Bind address of the query API and the metrics servers.")
    query_port: int = setting(8080, QUERY_PORT_SETTING, "Query API port (0: any free port).",
                              integer)
    breaker_fail_max: int = setting(
        5, "KAFKA_SAGA_BREAKER_FAIL_MAX",
        "Consecutive failed delivery attempts that open the circuit breaker (0: the "
        "default).", integer, zero_is_default=True)
    breaker_reset_s: float = setting(10.0, "KAFKA_SAGA_BREAKER_RESET_S", "Seconds the breaker "
                                     "stays open before a half-open trial.", number)
    send_retry_max_s: float = setting(60.0, "KAFKA_SAGA_SEND_RETRY_MAX_S", "Total time a flush "
                                      "keeps retrying before it fails.", number)
    restart_max: int = setting(
        5, "KAFKA_SAGA_RESTART_MAX", "Crashes (or stalls) of one role within the window that "
        "stop the process (exit 3); 0: the default.", integer, zero_is_default=True)
    restart_window_s: float = setting(60.0, "KAFKA_SAGA_RESTART_WINDOW_S",
                                      "That window, in seconds.", number)
    shutdown_timeout_s: float = setting(
        10.0, "KAFKA_SAGA_SHUTDOWN_TIMEOUT_S", "Time allowed to stop all roles; a role still "
        "running then is cancelled.", number)
    stall_threshold_s: float = setting(
        60.0, "KAFKA_SAGA_STALL_THRESHOLD_S", "Watchdog: a consumer with records waiting and no "
        "progress for this long is stalled (0: watchdog off).", number)
    watchdog_interval_s: float = setting(
        5.0, "KAFKA_SAGA_WATCHDOG_INTERVAL_S", "How often the watchdog checks the consumers "
        "(0 also turns it off).", number)
    batch_max_records: int = setting(500, "KAFKA_SAGA_BATCH_MAX_RECORDS", "Records per consumed "
                                     "batch; 0: the default.", integer, zero_is_default=True)
    request_timeout_ms: int = setting(15000, "KAFKA_SAGA_REQUEST_TIMEOUT_MS", "Producer request "
                                      "time-out; 0: the default.", integer, zero_is_default=True)
    session_timeout_ms: int = setting(
        6000, "KAFKA_SAGA_SESSION_TIMEOUT_MS", "Consumer session time-out (also how long a join "
        "waits); 0: the default.", integer, zero_is_default=True)
    instance_id: str | None = setting(
        None, "KAFKA_SAGA_INSTANCE_ID",
        "Static group membership: a stable id of this process (unique among the running "
        "ones). A restarted process takes its partitions back at once instead of waiting "
        "for its old session to time out; a stopped one keeps them until it does.")
    dlq_recent: int = setting(200, "KAFKA_SAGA_DLQ_RECENT", "Dead letters kept in memory for "
                              "`/dlq` and the dlq role; 0: the default.", integer,
                              zero_is_default=True)
    catalog_path: str | None = setting(
        None, "KAFKA_SAGA_CATALOG", "YAML catalog (`items: {name: {price_cents, stock}}`); "
        "unset: the built-in one.")
    payment_max_retries: int = setting(3, "PAYMENT_MAX_RETRIES",
                                       "Payment retries after the first attempt (>= 0).",
                                       integer, at_least(0))
    payment_backoff_s: float = setting(0.1, "PAYMENT_BACKOFF_S",
                                       "Base of the payment retry backoff.", number)
    payment_timeout_s: float = setting(2.0, "PAYMENT_TIMEOUT_S",
                                       "Deadline of one payment attempt.", number)
    payment_failure_rate: float = setting(0.01, "PAYMENT_FAILURE_RATE",
                                          "Random transient gateway failures (0-1).", number,
                                          between(0.0, 1.0))
    inventory_timeout_s: float = setting(
        5.0, "INVENTORY_TIMEOUT_S",
        "Deadline of one inventory try, from when the request became readable (acknowledged; "
        "under exactly-once, committed), extended until "
        "the replies were read up to where they ended at the deadline.", number)
    inventory_max_tries: int = setting(3, "INVENTORY_MAX_TRIES", "Inventory tries (>= 1).",
                                       integer, at_least(1))
    state_window: int = setting(
        10_000, "KAFKA_SAGA_STATE_WINDOW",
        "The limit of idempotence: settled entries (finished sagas, settled reservations, "
        "closed orders, the tracker's sagas) each state store keeps per partition, oldest "
        "settled forgotten (tombstoned) first. A duplicate or late reject of an order older "
        "than this is not recognised (see docs/failure-handling.md).", integer, at_least(1))
    max_in_flight: int = setting(
        600, "KAFKA_SAGA_MAX_IN_FLIGHT",
        "Sagas in progress per orchestrator process; commands partitions are paused at "
        "their share and resumed at half (see docs/backpressure.md).", integer, at_least(1))
    max_backlog: int = setting(
        0, "KAFKA_SAGA_MAX_BACKLOG", "`POST /orders` answers 503 above this many commands "
        "waiting for the orchestrator (0: no admission limit).", integer, at_least(0))
    query_orders_max: int = setting(
        20_000, "QUERY_ORDERS_MAX",
        "Sagas the query view keeps in full (~1.4 KB each: snapshot, history); beyond, "
        "the oldest finished is evicted (the oldest unfinished only when none has "
        "finished) and keeps ~45 bytes: its status and saga state, so counts, funnel and "
        "stock stay exact. `GET /orders/{id}` answers 410 for it.",
        integer, at_least(1))
    wait_max_s: float = setting(30.0, "QUERY_WAIT_MAX_S",
                                "Largest `?wait=` of `GET /orders/{id}`.", number)
    broker_watch_s: float = setting(
        5.0, "KAFKA_SAGA_BROKER_WATCH_S", "How often the broker watch checks that our topics "
        "still exist (and that the local broker lives).", number)
    tracker_velocity_limit: int = setting(
        0, "TRACKER_VELOCITY_LIMIT", "Tracker: max orders per user per 60 s of event time (0: "
        "rule off); the role list's `tracker: {velocity_limit: N}` overrides it.", integer,
        at_least(0))
    demo_rate: float = setting(5.0, "DEMO_RATE", "Demo orders per second.", number)
    demo_count: int = setting(0, "DEMO_COUNT", "Demo orders in all (0: unlimited).", integer)
    log_level: str = setting("info", "LOG_LEVEL", "`debug`, `info`, `warning` or `error`.",
                             lower)
    log_format: str = setting("auto", "LOG_FORMAT", "`json`, `console`, or `auto` (console on "
                              "a terminal).", lower, one_of("auto", "json", "console"))
    event_loop: str = setting(
        "auto", "KAFKA_SAGA_EVENT_LOOP",
        "`auto` runs on uvloop when it is installed (a dependency on Linux and macOS), "
        "else on asyncio's loop; `asyncio` or `uvloop` to choose. Everything works on "
        "both.", lower, one_of(*EVENT_LOOPS))
    gc_threshold: int = setting(
        20_000, "KAFKA_SAGA_GC_THRESHOLD",
        "Young-generation threshold of Python's cyclic collector in `kafka-saga run` (0: "
        "Python's 700); with the default, full collections over a large heap cost ~0.5 ms "
        "an order after 60,000 orders, ~0.05 ms with 20,000.", integer, at_least(0))
    admin_token: str | None = setting(None, "KAFKA_SAGA_ADMIN_TOKEN", "Bearer token of the "
                                      "admin endpoints; unset or blank: they answer 403.",
                                      stripped, secret=True)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    roles: dict[str, RoleOptions] = field(default_factory=dict)
    listed_roles: tuple[str, ...] = ()  # the roles a role list (``roles_file``) names, in order

    @property
    def client_bootstrap(self) -> str:
        """The address a client dials: ``bootstrap_servers``, else :data:`DEFAULT_BOOTSTRAP`."""
        return self.bootstrap_servers or DEFAULT_BOOTSTRAP

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 roles_file: str | Path | None = None) -> Settings:
        """Read the environment, then the role list, then the command line's ``overrides``
        (field name -> value; they win), and validate the result once."""
        env = os.environ if env is None else env
        settings = cls(**read_declared(cls, env), security=KafkaSecurity(**read_declared(KafkaSecurity, env)),
                       roles=_roles(env))
        if roles_file is not None:
            settings, names = settings.with_roles_file(roles_file)
            settings = replace(settings, listed_roles=tuple(names))
        settings = replace(settings, **(overrides or {}))
        settings.validate()
        return settings

    def validate(self) -> None:
        check_declared(self)
        self.security.validate()

    def role(self, name: str) -> RoleOptions:
        return self.roles.get(name, RoleOptions())

    def with_roles_file(self, path: str | Path) -> tuple[Settings, list[str]]:
        """Apply a YAML role list; return the new settings and the roles it names, in order.

        Format::

            roles:
              aggregator: {workers: 2, metrics_port: 9101}
              query: {port: 8080}
              tracker: {}
        """
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise UnreadableRoleList(f"cannot read role list {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:  # on one line: where, and what is wrong there
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise UnreadableRoleList(f"cannot read role list {path}: not YAML{where}: "
                                     f"{getattr(exc, 'problem', None) or exc}") from None
        entries = doc.get("roles") if isinstance(doc, dict) else None
        if isinstance(entries, list):
            if not all(isinstance(name, str) for name in entries):
                raise UnreadableRoleList(f"{path}: the list form takes role names only; "
                                  "use the mapping form for options")
            entries = {name: {} for name in entries}
        if not isinstance(entries, dict) or not entries:
            raise UnreadableRoleList(f"{path}: expected a non-empty 'roles' mapping or list")
        roles = dict(self.roles)
        names: list[str] = []
        updates: dict[str, Any] = {}
        for name, options in entries.items():
            options = options or {}
            if name not in ROLE_ORDER:
                raise UnreadableRoleList(f"{path}: unknown role {name!r}; known: {', '.join(ROLE_ORDER)}")
            if not isinstance(options, dict):
                raise UnreadableRoleList(f"{path}: options of role {name!r} must be a mapping")
            base = roles.get(name, RoleOptions())
            extra = {k: v for k, v in options.items() if k not in ("workers", "metrics_port", "port")}
            roles[name] = RoleOptions(
                workers=_option_int(path, name, "workers", options.get("workers", base.workers)),
                metrics_port=_option_int(path, name, "metrics_port",
                                         options.get("metrics_port", base.metrics_port)),
                extra={**base.extra, **extra},
            )
            if name == "query" and "port" in options:
                updates["query_port"] = _option_int(path, name, "port", options["port"])
            names.append(name)
        return replace(self, roles=roles, **updates), names


def _option_int(path: str | Path, role: str, key: str, value: Any) -> Any:
    try:
        return None if value is None else non_negative_int(f"{path}: {role}.{key}", value)
    except ConfigError as exc:
        raise UnreadableRoleList(str(exc)) from None


def parse_roles(spec: str) -> list[str]:
    """``all`` or a comma-separated list -> role names in the fixed start order."""
    wanted = {r.strip() for r in spec.split(",") if r.strip()}
    if not wanted:
        raise ConfigError("--roles is empty")
    if "all" in wanted:
        return list(ROLE_ORDER)
    unknown = wanted - set(ROLE_ORDER)
    if unknown:
        raise ConfigError(f"unknown role(s) {', '.join(sorted(unknown))}; known: all, {', '.join(ROLE_ORDER)}")
    return [r for r in ROLE_ORDER if r in wanted]
