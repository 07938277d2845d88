"""Pure unit tests of settings and role lists (kafka_saga.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_saga.config import (
    METRICS_PORT_VARS,
    ROLE_ORDER,
    ConfigError,
    KafkaSecurity,
    RoleOptions,
    Settings,
    parse_roles,
)

# --- Settings.from_env ---------------------------------------------------------------------


def test_defaults_from_empty_env() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers is None and s.embedded_port == 9092 and s.topic_prefix == ""
    # replication 0 and idempotence None: both chosen from the cluster the process meets
    assert (s.partitions, s.replication_factor, s.idempotent_producer, s.linger_ms) == (6, 0, None, 5)
    assert (s.engine, s.kafka_data_dir, s.min_insync_replicas) == ("tansu", ".data/kafka", 0)
    assert (s.query_host, s.query_port) == ("127.0.0.1", 8080)
    assert (s.breaker_fail_max, s.breaker_reset_s, s.send_retry_max_s) == (5, 10.0, 60.0)
    assert (s.restart_max, s.restart_window_s, s.shutdown_timeout_s) == (5, 60.0, 10.0)
    assert (s.batch_max_records, s.dlq_recent, s.log_level, s.log_format) == (500, 200, "info", "auto")
    assert s.security == KafkaSecurity()
    assert list(s.roles) == list(ROLE_ORDER)
    assert all(opts == RoleOptions() for opts in s.roles.values())


def test_blank_values_mean_default() -> None:
    env = {"QUERY_API_PORT": "  ", "AGGREGATOR_WORKERS": "", "KAFKA_SAGA_BREAKER_RESET_S": "",
           "KAFKA_BOOTSTRAP_SERVERS": "", "QUERY_API_HOST": "", "KAFKA_ENABLE_IDEMPOTENCE": " "}
    s = Settings.from_env(env)
    assert s.query_port == 8080 and s.role("aggregator").workers == 1
    assert s.breaker_reset_s == 10.0 and s.bootstrap_servers is None
    assert s.query_host == "127.0.0.1" and s.idempotent_producer is None


def test_seed_variable_names() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "QUERY_API_HOST": "0.0.0.0",
        "QUERY_API_PORT": "9000",
        "AGGREGATOR_METRICS_PORT": "9101",
        "TRACKER_METRICS_PORT": "9102",
        "DLQ_METRICS_PORT": "9103",
        "ORCHESTRATOR_METRICS_PORT": "9104",
        "INVENTORY_METRICS_PORT": "9105",
        "AGGREGATOR_WORKERS": "3",
        "TRACKER_WORKERS": "2",
        "KAFKA_SAGA_TOPIC_PREFIX": "dev.",
        "KAFKA_SAGA_PARTITIONS": "12",
        "KAFKA_SAGA_REPLICATION_FACTOR": "3",
        "KAFKA_SAGA_EMBEDDED_PORT": "19092",
        "KAFKA_SAGA_LINGER_MS": "0",
        "KAFKA_SAGA_BREAKER_FAIL_MAX": "9",
        "KAFKA_SAGA_BREAKER_RESET_S": "2.5",
        "KAFKA_SAGA_SEND_RETRY_MAX_S": "1e1",
        "KAFKA_SAGA_RESTART_MAX": "7",
        "KAFKA_SAGA_RESTART_WINDOW_S": "30",
        "KAFKA_SAGA_SHUTDOWN_TIMEOUT_S": "0.5",
        "KAFKA_SAGA_DLQ_RECENT": "50",
        "KAFKA_ENABLE_IDEMPOTENCE": "true",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "JSON",
    }
    s = Settings.from_env(env)
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert (s.query_host, s.query_port) == ("0.0.0.0", 9000)
    assert {r: s.role(r).metrics_port for r in METRICS_PORT_VARS} == \
        {"aggregator": 9101, "tracker": 9102, "dlq": 9103, "orchestrator": 9104, "inventory": 9105}
    assert s.role("aggregator").workers == 3 and s.role("tracker").workers == 2
    assert s.role("query").workers == 1 and s.role("query").metrics_port is None
    assert (s.topic_prefix, s.partitions, s.replication_factor, s.embedded_port) == ("dev.", 12, 3, 19092)
    assert s.linger_ms == 0 and s.idempotent_producer is True
    assert (s.breaker_fail_max, s.breaker_reset_s, s.send_retry_max_s) == (9, 2.5, 10.0)
    assert (s.restart_max, s.restart_window_s, s.shutdown_timeout_s) == (7, 30.0, 0.5)
    assert s.dlq_recent == 50 and (s.log_level, s.log_format) == ("debug", "json")


def test_query_port_zero_is_kept() -> None:
    assert Settings.from_env({"QUERY_API_PORT": "0"}).query_port == 0


@pytest.mark.parametrize("raw", ["0", "-3"])
def test_workers_at_least_one(raw: str) -> None:
    assert Settings.from_env({"DLQ_WORKERS": raw}).role("dlq").workers == 1


@pytest.mark.parametrize("name", ["QUERY_API_PORT", "AGGREGATOR_METRICS_PORT", "AGGREGATOR_WORKERS",
                                  "KAFKA_SAGA_PARTITIONS", "KAFKA_SAGA_EMBEDDED_PORT",
                                  "KAFKA_SAGA_DLQ_RECENT", "DEMO_WORKERS"])
@pytest.mark.parametrize("raw", ["abc", "8080.0", "1e3", "0x10"])
def test_bad_integer_raises(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: raw})


@pytest.mark.parametrize("name", ["KAFKA_SAGA_BREAKER_RESET_S", "KAFKA_SAGA_SHUTDOWN_TIMEOUT_S"])
def test_bad_float_raises(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "ten"})


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("TRUE", True), ("yes", True),
                                            (" on ", True), ("0", False), ("no", False),
                                            ("enabled", False)])
def test_bool_values(raw: str, value: bool) -> None:
    assert Settings.from_env({"KAFKA_ENABLE_IDEMPOTENCE": raw}).idempotent_producer is value


def test_engine_and_replication_settings() -> None:
    s = Settings.from_env({"KAFKA_SAGA_ENGINE": "Kafka", "KAFKA_SAGA_KAFKA_DATA_DIR": "/d",
                           "KAFKA_SAGA_REPLICATION_FACTOR": "3", "KAFKA_SAGA_MIN_INSYNC_REPLICAS": "2"})
    assert (s.engine, s.kafka_data_dir, s.replication_factor, s.min_insync_replicas) == ("kafka", "/d", 3, 2)
    with pytest.raises(ConfigError, match="KAFKA_SAGA_ENGINE"):
        Settings.from_env({"KAFKA_SAGA_ENGINE": "zookeeper"})
    with pytest.raises(ConfigError, match="KAFKA_SAGA_REPLICATION_FACTOR"):
        Settings.from_env({"KAFKA_SAGA_REPLICATION_FACTOR": "-1"})


def test_security_settings() -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "hunter2",
           "KAFKA_SSL_CAFILE": "/ca.pem", "KAFKA_SSL_CERTFILE": "", "KAFKA_SSL_KEYFILE": "/k.pem"}
    sec = Settings.from_env(env).security
    assert sec == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "svc", "hunter2", "/ca.pem", None, "/k.pem")
    assert "hunter2" not in repr(sec)
    assert Settings.from_env({"KAFKA_SECURITY_PROTOCOL": ""}).security.protocol == "PLAINTEXT"


@pytest.mark.parametrize(("env", "match"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"KAFKA_SAGA_PARTITIONS": "-1"}, "KAFKA_SAGA_PARTITIONS"),
    ({"QUERY_ORDERS_MAX": "0"}, "QUERY_ORDERS_MAX"),
    ({"KAFKA_SAGA_STATE_WINDOW": "0"}, "KAFKA_SAGA_STATE_WINDOW"),
])
def test_validation_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env(env)


def test_zero_partitions_rejected() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SAGA_PARTITIONS"):
        Settings.from_env({"KAFKA_SAGA_PARTITIONS": "0"})


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERY_API_PORT", "8123")
    monkeypatch.setenv("AGGREGATOR_WORKERS", "4")
    s = Settings.from_env()
    assert s.query_port == 8123 and s.role("aggregator").workers == 4


def test_role_lookup_unknown_name() -> None:
    assert Settings.from_env({}).role("nope") == RoleOptions()


# --- parse_roles ---------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "roles"), [
    ("all", list(ROLE_ORDER)),
    (" all ", list(ROLE_ORDER)),
    ("query,all", list(ROLE_ORDER)),
    ("aggregator", ["aggregator"]),
    ("query,aggregator", ["aggregator", "query"]),
    ("demo, dlq ,tracker", ["tracker", "dlq", "demo"]),
    ("query,query,", ["query"]),
    ("orchestrator,inventory,aggregator,tracker,inventory,dlq,query,demo", list(ROLE_ORDER)),
])
def test_parse_roles(spec: str, roles: list[str]) -> None:
    assert parse_roles(spec) == roles


@pytest.mark.parametrize(("spec", "match"), [
    ("", "empty"), (" , ,", "empty"), ("aggregater", "aggregater"), ("query,web,api", "api, web"),
    ("ALL", "ALL"), ("Query", "Query"),
])
def test_parse_roles_errors(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_roles(spec)


# --- with_roles_file -----------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roles.yaml"
    path.write_text(text)
    return path


def test_roles_file_mapping_form(tmp_path: Path) -> None:
    path = write(tmp_path, """
roles:
  query: {port: 9090, cors: true}
  aggregator: {workers: 2, metrics_port: 9101}
  tracker: {}
  dlq:
""")
    base = Settings.from_env({})
    s, names = base.with_roles_file(path)
    assert names == ["query", "aggregator", "tracker", "dlq"]
    assert s.query_port == 9090 and base.query_port == 8080
    assert s.role("aggregator") == RoleOptions(workers=2, metrics_port=9101)
    assert s.role("query").extra == {"cors": True} and "port" not in s.role("query").extra
    assert s.role("tracker") == RoleOptions() and s.role("dlq") == RoleOptions()
    assert base.role("aggregator") == RoleOptions()


def test_roles_file_list_form(tmp_path: Path) -> None:
    s, names = Settings.from_env({}).with_roles_file(write(tmp_path, "roles: [dlq, aggregator]\n"))
    assert names == ["dlq", "aggregator"]
    assert s.role("dlq") == RoleOptions() and s.query_port == 8080


def test_roles_file_keeps_env_options(tmp_path: Path) -> None:
    base = Settings.from_env({"AGGREGATOR_WORKERS": "5", "AGGREGATOR_METRICS_PORT": "9200",
                              "QUERY_API_PORT": "7000"})
    s, _ = base.with_roles_file(write(tmp_path, "roles:\n  aggregator: {workers: 2}\n  query: {}\n"))
    assert s.role("aggregator") == RoleOptions(workers=2, metrics_port=9200)
    assert s.query_port == 7000
    s2, _ = s.with_roles_file(write(tmp_path, "roles:\n  aggregator: {batch: 10}\n"))
    assert s2.role("aggregator") == RoleOptions(workers=2, metrics_port=9200, extra={"batch": 10})


def test_roles_file_query_port_string(tmp_path: Path) -> None:
    s, _ = Settings.from_env({}).with_roles_file(write(tmp_path, "roles:\n  query: {port: '8181'}\n"))
    assert s.query_port == 8181


@pytest.mark.parametrize(("text", "match"), [
    ("roles:\n  aggregator: {}\n  webshop: {}\n", "unknown role 'webshop'"),
    ("roles: [aggregator, bogus]\n", "unknown role 'bogus'"),
    ("roles:\n  query: 8080\n", "must be a mapping"),
    ("roles:\n  query: [1, 2]\n", "must be a mapping"),
    ("", "non-empty 'roles'"),
    ("roles: []\n", "non-empty 'roles'"),
    ("roles: {}\n", "non-empty 'roles'"),
    ("roles: aggregator\n", "non-empty 'roles'"),
    ("- aggregator\n", "non-empty 'roles'"),
    ("services: [aggregator]\n", "non-empty 'roles'"),
    ("roles: [unclosed\n", "cannot read role list"),
])
def test_roles_file_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env({}).with_roles_file(write(tmp_path, text))


def test_roles_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read role list"):
        Settings.from_env({}).with_roles_file(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text", ["roles:\n  aggregator: {workers: many}\n",
                                  "roles:\n  query: {port: http}\n"])
def test_roles_file_bad_integer_is_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}).with_roles_file(write(tmp_path, text))


def test_roles_file_list_with_mapping_item(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({}).with_roles_file(
            write(tmp_path, "roles:\n  - aggregator\n  - query: {port: 9000}\n"))


def test_security_protocol_is_case_insensitive() -> None:
    assert Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}).security.protocol == "SASL_SSL"


def test_memory_bounds() -> None:
    assert (Settings().query_orders_max, Settings().state_window) == (20_000, 10_000)
    settings = Settings.from_env({"QUERY_ORDERS_MAX": "500", "KAFKA_SAGA_STATE_WINDOW": "1"})
    assert (settings.query_orders_max, settings.state_window) == (500, 1)
