"""Settings from the environment (KAFKA_BOOTSTRAP_SERVERS, QUERY_API_PORT, …) and the YAML role list."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

# Long-running roles in their fixed start order (stopped in reverse).
ROLE_ORDER = ("aggregator", "tracker", "orchestrator", "dlq", "query", "demo")
METRICS_PORT_VARS = {
    "aggregator": "AGGREGATOR_METRICS_PORT",
    "tracker": "TRACKER_METRICS_PORT",
    "dlq": "DLQ_METRICS_PORT",
    "orchestrator": "ORCHESTRATOR_METRICS_PORT",
}


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class RoleOptions:
    """Per-role options: competing workers, metrics port, free-form extras."""

    workers: int = 1
    metrics_port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KafkaSecurity:
    """Security settings passed through to aiokafka (empty = PLAINTEXT)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)  # of the client key file


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know; built by :meth:`from_env`."""

    bootstrap_servers: str | None = None
    engine: str = "tansu"  # the broker `run` starts when none is given: tansu | kafka
    embedded_port: int = 9092
    kafka_data_dir: str = ".data/kafka"  # where a local Apache Kafka node keeps its data
    topic_prefix: str = ""
    partitions: int = 6
    replication_factor: int = 0  # 0: min(3, brokers in the cluster)
    min_insync_replicas: int = 0  # 0: min(2, replication factor)
    idempotent_producer: bool | None = None  # None: on when the broker grants a producer id
    linger_ms: int = 5
    fetch_max_wait_ms: int = 20  # see README: how long a fetch may wait for records
    commit_interval_ms: int = 100  # the longest a consumer goes between checkpoints under load
    query_host: str = "127.0.0.1"
    query_port: int = 8080
    breaker_fail_max: int = 5
    breaker_reset_s: float = 10.0
    send_retry_max_s: float = 60.0
    restart_max: int = 5
    restart_window_s: float = 60.0
    shutdown_timeout_s: float = 10.0
    stall_threshold_s: float = 60.0  # watchdog: no progress while records wait (0 = off)
    watchdog_interval_s: float = 5.0
    batch_max_records: int = 500
    request_timeout_ms: int = 15000
    session_timeout_ms: int = 6000  # Kafka's minimum by default; also how long a join waits
    dlq_recent: int = 200
    catalog_path: str | None = None
    payment_max_retries: int = 3
    payment_backoff_s: float = 0.1
    payment_timeout_s: float = 2.0
    payment_failure_rate: float = 0.01
    inventory_timeout_s: float = 5.0
    inventory_max_tries: int = 3
    finished_sagas_max: int = 50_000
    max_in_flight: int = 600  # sagas in progress per orchestrator process (see README: Backpressure)
    max_backlog: int = 0  # POST /orders answers 503 above this many commands waiting (0 = off)
    query_orders_max: int = 20_000  # sagas the query view keeps in full (older: status only)
    wait_max_s: float = 30.0
    broker_watch_s: float = 5.0
    demo_rate: float = 5.0
    demo_count: int = 0
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console
    event_loop: str = "auto"  # auto (uvloop when installed) | asyncio | uvloop
    gc_threshold: int = 20_000  # young-generation threshold of the collector (0: Python's 700)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    roles: dict[str, RoleOptions] = field(default_factory=dict)
    admin_token: str | None = field(default=None, repr=False)  # None: admin endpoints disabled

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        roles = {
            role: RoleOptions(
                workers=max(1, _int(env, f"{role.upper()}_WORKERS", 1) or 1),
                metrics_port=_int(env, METRICS_PORT_VARS[role], None)
                if role in METRICS_PORT_VARS
                else None,
            )
            for role in ROLE_ORDER
        }
        security = KafkaSecurity(
            protocol=(env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "PLAINTEXT").upper(),
            sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
            sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
            ssl_certfile=env.get("KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=env.get("KAFKA_SSL_KEYFILE") or None,
            ssl_password=env.get("KAFKA_SSL_KEY_PASSWORD") or None,
        )
        settings = cls(
            bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            engine=(env.get("KAFKA_SAGA_ENGINE") or "tansu").strip().lower(),
            embedded_port=_int(env, "KAFKA_SAGA_EMBEDDED_PORT", 9092) or 9092,
            kafka_data_dir=env.get("KAFKA_SAGA_KAFKA_DATA_DIR") or ".data/kafka",
            topic_prefix=env.get("KAFKA_SAGA_TOPIC_PREFIX", ""),
            partitions=_int(env, "KAFKA_SAGA_PARTITIONS", 6),  # type: ignore[arg-type]
            replication_factor=_int(env, "KAFKA_SAGA_REPLICATION_FACTOR", 0),  # type: ignore[arg-type]
            min_insync_replicas=_int(env, "KAFKA_SAGA_MIN_INSYNC_REPLICAS", 0),  # type: ignore[arg-type]
            idempotent_producer=_bool(env, "KAFKA_ENABLE_IDEMPOTENCE", False)
            if (env.get("KAFKA_ENABLE_IDEMPOTENCE") or "").strip() else None,
            linger_ms=_int(env, "KAFKA_SAGA_LINGER_MS", 5) or 0,
            fetch_max_wait_ms=_int(env, "KAFKA_SAGA_FETCH_MAX_WAIT_MS", 20) or 20,
            commit_interval_ms=_int(env, "KAFKA_SAGA_COMMIT_INTERVAL_MS", 100) or 0,
            query_host=env.get("QUERY_API_HOST", "127.0.0.1") or "127.0.0.1",
            query_port=_int(env, "QUERY_API_PORT", 8080) or 0,
            breaker_fail_max=_int(env, "KAFKA_SAGA_BREAKER_FAIL_MAX", 5) or 5,
            breaker_reset_s=_float(env, "KAFKA_SAGA_BREAKER_RESET_S", 10.0),
            send_retry_max_s=_float(env, "KAFKA_SAGA_SEND_RETRY_MAX_S", 60.0),
            restart_max=_int(env, "KAFKA_SAGA_RESTART_MAX", 5) or 5,
            restart_window_s=_float(env, "KAFKA_SAGA_RESTART_WINDOW_S", 60.0),
            shutdown_timeout_s=_float(env, "KAFKA_SAGA_SHUTDOWN_TIMEOUT_S", 10.0),
            stall_threshold_s=_float(env, "KAFKA_SAGA_STALL_THRESHOLD_S", 60.0),
            watchdog_interval_s=_float(env, "KAFKA_SAGA_WATCHDOG_INTERVAL_S", 5.0),
            request_timeout_ms=_int(env, "KAFKA_SAGA_REQUEST_TIMEOUT_MS", 15000) or 15000,
            session_timeout_ms=_int(env, "KAFKA_SAGA_SESSION_TIMEOUT_MS", 6000) or 6000,
            batch_max_records=_int(env, "KAFKA_SAGA_BATCH_MAX_RECORDS", 500) or 500,
            dlq_recent=_int(env, "KAFKA_SAGA_DLQ_RECENT", 200) or 200,
            catalog_path=env.get("KAFKA_SAGA_CATALOG") or None,
            payment_max_retries=_int(env, "PAYMENT_MAX_RETRIES", 3),  # type: ignore[arg-type]
            payment_backoff_s=_float(env, "PAYMENT_BACKOFF_S", 0.1),
            payment_timeout_s=_float(env, "PAYMENT_TIMEOUT_S", 2.0),
            payment_failure_rate=_float(env, "PAYMENT_FAILURE_RATE", 0.01),
            inventory_timeout_s=_float(env, "INVENTORY_TIMEOUT_S", 5.0),
            inventory_max_tries=_int(env, "INVENTORY_MAX_TRIES", 3),  # type: ignore[arg-type]
            finished_sagas_max=_int(env, "KAFKA_SAGA_FINISHED_SAGAS_MAX", 50_000),  # type: ignore[arg-type]
            max_in_flight=_int(env, "KAFKA_SAGA_MAX_IN_FLIGHT", 600),  # type: ignore[arg-type]
            max_backlog=_int(env, "KAFKA_SAGA_MAX_BACKLOG", 0),  # type: ignore[arg-type]
            query_orders_max=_int(env, "QUERY_ORDERS_MAX", 20_000),  # type: ignore[arg-type]
            wait_max_s=_float(env, "QUERY_WAIT_MAX_S", 30.0),
            broker_watch_s=_float(env, "KAFKA_SAGA_BROKER_WATCH_S", 5.0),
            demo_rate=_float(env, "DEMO_RATE", 5.0),
            demo_count=_int(env, "DEMO_COUNT", 0),  # type: ignore[arg-type]
            log_level=env.get("LOG_LEVEL", "info").lower(),
            log_format=env.get("LOG_FORMAT", "auto").lower(),
            event_loop=(env.get("KAFKA_SAGA_EVENT_LOOP") or "auto").lower(),
            gc_threshold=_int(env, "KAFKA_SAGA_GC_THRESHOLD", 20_000),  # type: ignore[arg-type]
            security=security,
            roles=roles,
            admin_token=(env.get("KAFKA_SAGA_ADMIN_TOKEN") or "").strip() or None,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.payment_max_retries < 0 or self.inventory_max_tries < 1:
            raise ConfigError("PAYMENT_MAX_RETRIES must be >= 0 and INVENTORY_MAX_TRIES >= 1")
        if not 0.0 <= self.payment_failure_rate <= 1.0:
            raise ConfigError("PAYMENT_FAILURE_RATE must be between 0 and 1")
        if self.partitions < 1:
            raise ConfigError("KAFKA_SAGA_PARTITIONS must be at least 1")
        if self.query_orders_max < 1 or self.finished_sagas_max < 0:
            raise ConfigError("QUERY_ORDERS_MAX must be >= 1 and KAFKA_SAGA_FINISHED_SAGAS_MAX >= 0")
        if self.gc_threshold < 0:
            raise ConfigError("KAFKA_SAGA_GC_THRESHOLD must be >= 0 (0 = Python's default)")
        if self.max_in_flight < 1 or self.max_backlog < 0:
            raise ConfigError("KAFKA_SAGA_MAX_IN_FLIGHT must be >= 1 and KAFKA_SAGA_MAX_BACKLOG >= 0 "
                              "(0 = no admission limit)")
        if self.engine not in ("tansu", "kafka"):
            raise ConfigError(f"KAFKA_SAGA_ENGINE={self.engine!r}: use tansu or kafka")
        if self.replication_factor < 0 or self.min_insync_replicas < 0:
            raise ConfigError("KAFKA_SAGA_REPLICATION_FACTOR and KAFKA_SAGA_MIN_INSYNC_REPLICAS must be "
                              ">= 0 (0 = chosen from the cluster's size)")
        if self.security.protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={self.security.protocol!r} is not supported")
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"KAFKA_SAGA_EVENT_LOOP={self.event_loop!r}: use auto, asyncio or uvloop")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"LOG_FORMAT={self.log_format!r}: use auto, json or console")

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
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read role list {path}: {exc}") from None
        entries = doc.get("roles") if isinstance(doc, dict) else None
        if isinstance(entries, list):
            if not all(isinstance(name, str) for name in entries):
                raise ConfigError(f"{path}: the list form takes role names only; "
                                  "use the mapping form for options")
            entries = {name: {} for name in entries}
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{path}: expected a non-empty 'roles' mapping or list")
        roles = dict(self.roles)
        names: list[str] = []
        updates: dict[str, Any] = {}
        for name, options in entries.items():
            options = options or {}
            if name not in ROLE_ORDER:
                raise ConfigError(f"{path}: unknown role {name!r}; known: {', '.join(ROLE_ORDER)}")
            if not isinstance(options, dict):
                raise ConfigError(f"{path}: options of role {name!r} must be a mapping")
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
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{path}: {role}.{key} must be a non-negative integer, got {value!r}")
    return value


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
