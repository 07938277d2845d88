"""Access control of the query API, secrets in logs, and the Kafka security pass-through.

* The query API binds 127.0.0.1 unless ``--host``/``QUERY_API_HOST`` say otherwise.
* ``POST /orders/{id}/cancel`` and ``POST /dlq/replay`` need ``Authorization: Bearer
  <KAFKA_SAGA_ADMIN_TOKEN>``: disabled (403) without a configured token, 401 with
  ``WWW-Authenticate: Bearer`` for a missing or malformed header, 403 for a wrong token.
  ``POST /orders`` stays open.
* ``POST /dlq/replay`` re-injects dead letters into their origin topic as the CLI does.
* Neither the admin token nor a SASL password ever reaches the logs.
* ``KAFKA_SECURITY_PROTOCOL``/``KAFKA_SASL_*``/``KAFKA_SSL_*`` map onto aiokafka's options;
  a Tansu broker started with ``--authentication`` refuses clients without valid credentials.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import uuid
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from kafka_saga import cli, logs
from kafka_saga.api.context import ADMIN_DISABLED
from kafka_saga.bus.client import BrokerUnavailable, Bus
from kafka_saga.bus.embedded import broker_binary
from kafka_saga.bus.follow import read_topic
from kafka_saga.bus.ports import free_port
from kafka_saga.config import ConfigError, Settings
from kafka_saga.core.contracts import REINJECTED_HEADER, Command, CommandType, headers_dict

from ..support.logsetup import configured_logs
from ..support.orders import order_events, produce, produce_events
from ..support.platform import eventually

pytestmark = pytest.mark.chaos
TIMEOUT = 60.0
TOKEN = "adm-" + uuid.uuid4().hex
SASL_PASSWORD = "sasl-" + uuid.uuid4().hex
GOOD_ORDER = {"user": "alice", "item": "espresso", "quantity": 1}


async def call(platform, method: str, path: str, authorization: str | None = None,
               **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, platform.url + path, headers=headers, **kwargs) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, resp.headers, await resp.json()


def bearer(token: str = TOKEN) -> str:
    return f"Bearer {token}"


# --- binding ---------------------------------------------------------------------------------

def test_the_query_api_binds_loopback_unless_told_otherwise(monkeypatch):
    assert Settings.from_env({}).query_host == "127.0.0.1"
    assert Settings.from_env({"QUERY_API_HOST": "0.0.0.0"}).query_host == "0.0.0.0"
    seen: list[Settings] = []

    async def fake_run(settings: Settings, names: list[str]) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr("kafka_saga.runtime.platform.run_with_signals", fake_run)
    monkeypatch.delenv("QUERY_API_HOST", raising=False)
    for argv, host in ((["run", "--roles", "query"], "127.0.0.1"),
                       (["run", "--roles", "query", "--host", "0.0.0.0"], "0.0.0.0")):
        assert cli.cmd_run(cli.build_parser().parse_args(argv)) == 0
        assert seen.pop().query_host == host, argv


# --- admin endpoints -------------------------------------------------------------------------

async def test_admin_endpoints_are_disabled_without_a_token(platform, bus):
    await platform.start("query")
    assert platform.url.startswith("http://127.0.0.1:")
    for path, body in (("/orders/any/cancel", {"reason": "r"}), ("/dlq/replay", {"all": True})):
        for authorization in (None, bearer(), "Bearer ", "junk"):
            status, _, answer = await call(platform, "POST", path, authorization, json=body)
            assert status == 403 and answer == {"error": ADMIN_DISABLED, "status": 403}
    status, _, answer = await call(platform, "POST", "/orders", json=GOOD_ORDER)
    assert status == 202 and answer["order_id"], answer  # the public submission API stays open


async def test_admin_token_is_required_and_compared_in_constant_time(platform, settings, bus):
    platform.settings = replace(settings, admin_token=TOKEN)
    await platform.start("query")
    events = order_events("o-adm", "client01", "pending")
    await asyncio.to_thread(produce_events, settings.bootstrap_servers, bus.topics.events, events,
                            settings.partitions)  # as the orchestrator writes them

    async def seen() -> bool:
        return (await platform.get("/orders/o-adm"))[0] == 200

    await eventually(seen, TIMEOUT, what="order o-adm served")
    body = {"reason": "changed my mind"}
    for authorization in (None, "", "Bearer", "Bearer   ", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"):
        status, headers, answer = await call(platform, "POST", "/orders/o-adm/cancel",
                                             authorization, json=body)
        assert status == 401 and answer["status"] == 401, (authorization, answer)
        assert headers["WWW-Authenticate"].startswith("Bearer"), headers
    for wrong in ("wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f"{TOKEN} {TOKEN}", "é" * 8):
        status, headers, answer = await call(platform, "POST", "/dlq/replay", bearer(wrong),
                                             json={"all": True})
        assert status == 403 and answer["error"] == "admin endpoint: invalid token", answer
    status, _, answer = await call(platform, "POST", "/dlq/replay", f"bearer  {TOKEN} ",
                                   json={"all": True, "reason": "no_such_reason"})
    assert status == 200 and answer["reinjected"] == 0, answer  # scheme is case-insensitive
    status, headers, answer = await call(platform, "POST", "/orders/o-adm/cancel", bearer(), json=body)
    assert status == 202 and headers["Location"] == "/orders/o-adm", answer
    found: list[Command] = []  # on the saga's partition of orders.replies (its events')
    await read_topic(bus, bus.topics.replies, lambda r: found.append(Command.decode(r.value)),
                     timeout=TIMEOUT)
    assert [c.type for c in found] == [CommandType.ORDER_REJECT]
    assert found[0].metadata == {"reason": "changed my mind", "source": "api"}
    assert found[0].command_id == answer["command_id"]


# --- POST /dlq/replay ------------------------------------------------------------------------

async def test_dlq_replay_over_http_reinjects_into_the_origin_topic(platform, settings, bus):
    platform.settings = replace(settings, admin_token=TOKEN)
    await platform.start("aggregator", "query")
    bootstrap = settings.bootstrap_servers
    key, value = b"order-bad-http", b"{this is not json"
    await asyncio.to_thread(produce, bootstrap, bus.topics.events, [(key, value)],
                            [("trace-id", b"t-http")])
    await asyncio.to_thread(produce, bootstrap, bus.topics.dlq, [(b"hand", b"garbage")])

    async def letters(n: int) -> list[dict] | None:
        status, body = await platform.get("/dlq?limit=1000")
        found = [d for d in body["dead_letters"] if d["key"] == key.decode()]
        return found if status == 200 and len(found) >= n and body["garbage"] >= 1 else None

    [letter] = await eventually(lambda: letters(1), TIMEOUT, what="the dead letter")
    where = f"{letter['partition']}:{letter['offset']}"

    async def replay(body: Any) -> tuple[int, Any]:
        status, _, answer = await call(platform, "POST", "/dlq/replay", bearer(), json=body)
        return status, answer

    for bad in ({}, [], "all", {"all": False}, {"all": "yes"}, {"offset": where, "all": True},
                {"offset": 0}, {"offset": "x:y"}, {"offset": "-1:0"}, {"offset": "1"},
                {"all": True, "reason": ""}, {"all": True, "reason": 3}, {"all": True, "x": 1}):
        status, answer = await replay(bad)
        assert status == 400 and answer["error"].startswith("dlq replay:"), (bad, answer)
    assert await replay({"offset": "2:999999"}) == (
        404, {"error": "no dlq record at 2:999999", "status": 404, "offset": "2:999999"})
    status, answer = await replay({"all": True, "reason": "no_such_reason"})
    assert status == 200 and answer == {"reinjected": 0, "records": [], "skipped": []}

    status, answer = await replay({"offset": where})
    assert status == 200 and answer["reinjected"] == 1 and answer["skipped"] == [], answer
    [record] = answer["records"]
    assert record["partition"] == letter["partition"] and record["offset"] == letter["offset"]
    assert record["origin_topic"] == bus.topics.events and record["reason"] == "invalid_json"
    assert record["key"] == key.decode() and record["reinjected_before"] == 0

    copies: list[Any] = []
    await read_topic(bus, bus.topics.events, lambda r: copies.append(r) if r.key == key else None,
                     timeout=TIMEOUT)
    assert len(copies) == 2, copies
    headers = headers_dict(copies[1].headers)
    assert copies[1].value == value and headers[REINJECTED_HEADER] == "1"
    assert headers["trace-id"] == "t-http" and "reason" not in headers
    again = await eventually(lambda: letters(2), TIMEOUT, what="the copy dead-lettered again")
    assert sorted(d["reinjected"] for d in again) == [0, 1]

    status, answer = await replay({"all": True})  # every real dead letter; garbage skipped
    assert status == 200 and answer["reinjected"] == 2 and len(answer["skipped"]) == 1, answer


# --- secrets and logs ------------------------------------------------------------------------

def secure_settings(settings: Settings) -> Settings:
    return replace(settings, admin_token=TOKEN, security=replace(
        settings.security, protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc", sasl_password=SASL_PASSWORD))


async def test_the_admin_token_and_sasl_password_never_reach_the_logs(platform, settings, bus,
                                                                      capfd):
    with configured_logs("debug"):
        platform.settings = replace(settings, admin_token=TOKEN)
        await platform.start("query")
        for authorization in (bearer(), bearer("wrong"), f"Basic {TOKEN}", TOKEN):
            for path, body in (("/orders/none/cancel", {"reason": TOKEN}), ("/dlq/replay", {})):
                await call(platform, "POST", path, authorization, json=body)
        reader, writer = await asyncio.open_connection(*platform.url[7:].split(":"))
        writer.write(f"GET /aggregates HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\x01\r\n\r\n".encode())
        await reader.read()  # unparsable: refused by aiohttp's parser, which quotes the bad line
        writer.close()
        secure = secure_settings(settings)
        assert SASL_PASSWORD not in repr(secure) and TOKEN not in repr(secure)
        with pytest.raises(BrokerUnavailable):  # the plain broker refuses the SASL handshake
            await Bus(secure).start(timeout=1.5)
        logs.get("test").info("secrets by name", sasl_password=SASL_PASSWORD, admin_token=TOKEN,
                              Authorization=bearer(), client_secret=TOKEN)
    out, err = capfd.readouterr()
    captured = out + err
    assert "http server listening" in captured and "broker not reachable yet" in captured
    assert TOKEN not in captured and SASL_PASSWORD not in captured
    assert '"admin_token":"***"' in captured and '"Authorization":"***"' in captured


def test_logging_a_settings_object_does_not_show_its_secrets(settings, capfd):
    with configured_logs("debug"):
        logs.get("test").info("config", settings=secure_settings(settings),
                              headers={"Authorization": bearer()})
    captured = "".join(capfd.readouterr())
    assert "config" in captured and TOKEN not in captured and SASL_PASSWORD not in captured


# --- Kafka security: environment -> aiokafka -------------------------------------------------

def security_env(protocol: str, **extra: str) -> dict[str, str]:
    return {"KAFKA_SECURITY_PROTOCOL": protocol, **{f"KAFKA_{k.upper()}": v for k, v in extra.items()}}


@pytest.mark.parametrize("mechanism,expected", [
    (None, "PLAIN"), ("PLAIN", "PLAIN"), ("SCRAM-SHA-256", "SCRAM-SHA-256"),
    ("SCRAM-SHA-512", "SCRAM-SHA-512"), ("scram-sha-512", "SCRAM-SHA-512"),
])
async def test_sasl_settings_map_onto_aiokafka_options(mechanism, expected):
    env = security_env("SASL_PLAINTEXT", sasl_username="svc", sasl_password=SASL_PASSWORD)
    if mechanism:
        env["KAFKA_SASL_MECHANISM"] = mechanism
    options = Bus(Settings.from_env({**env, "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})).options()
    assert options == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "SASL_PLAINTEXT",
                       "sasl_mechanism": expected, "sasl_plain_username": "svc",
                       "sasl_plain_password": SASL_PASSWORD}
    for client in (AIOKafkaProducer(**options), AIOKafkaConsumer(**options)):  # aiokafka accepts
        await client.stop()
    await AIOKafkaAdminClient(**options).close()


def test_plaintext_is_the_default_and_carries_no_credentials():
    options = Bus(Settings.from_env({"KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                                     "KAFKA_BOOTSTRAP_SERVERS": "k:9092"})).options()
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    """A CA, and a client certificate signed by it whose key is protected by a password."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=kafka-saga-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-keyout", "client.key", "-out", "client.csr",
            "-passout", "pass:key-secret", "-subj", "/CN=svc")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2")
    return {name: str(folder / name) for name in ("ca.pem", "client.pem", "client.key")}


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_settings_build_a_verifying_context_with_the_client_certificate(protocol, tls_files):
    env = security_env(protocol, ssl_cafile=tls_files["ca.pem"], ssl_certfile=tls_files["client.pem"],
                       ssl_keyfile=tls_files["client.key"], ssl_key_password="key-secret",
                       sasl_mechanism="SCRAM-SHA-256", sasl_username="svc", sasl_password="pw")
    options = Bus(Settings.from_env(env)).options()
    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname and context.get_ca_certs()[0]["subject"] == (
        (("commonName", "kafka-saga-test-ca"),),)
    assert options["security_protocol"] == protocol
    assert ("sasl_mechanism" in options) == (protocol == "SASL_SSL")
    no_ca = Bus(Settings.from_env(security_env("SSL"))).options()["ssl_context"]
    assert no_ca.verify_mode == ssl.CERT_REQUIRED  # the system's CAs


@pytest.mark.parametrize("env,words", [
    (security_env("SASL_PLAINTEXT", sasl_mechanism="GSSAPI", sasl_username="u", sasl_password="p"),
     "KAFKA_SASL_MECHANISM"),
    (security_env("SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_username="u", sasl_password="p"),
     "KAFKA_SASL_MECHANISM"),
    (security_env("SASL_PLAINTEXT", sasl_password="p"), "KAFKA_SASL_USERNAME"),
    (security_env("SASL_PLAINTEXT", sasl_username="u"), "KAFKA_SASL_PASSWORD"),
    (security_env("SSL", ssl_cafile="/nonexistent/ca.pem"), "KAFKA_SSL_CAFILE"),
    (security_env("SSL", ssl_keyfile="/some/key.pem"), "KAFKA_SSL_CERTFILE"),
])
def test_unusable_security_settings_are_configuration_errors(env, words):
    with pytest.raises(ConfigError, match=words):
        Bus(Settings.from_env(env)).options()


def test_a_wrong_key_password_is_a_configuration_error(tls_files):
    env = security_env("SSL", ssl_certfile=tls_files["client.pem"], ssl_keyfile=tls_files["client.key"],
                       ssl_key_password="not-the-password")
    with pytest.raises(ConfigError, match="TLS files") as info:
        Bus(Settings.from_env(env)).options()
    assert "not-the-password" not in str(info.value)


def test_an_unknown_protocol_is_refused_when_settings_are_read():
    for protocol in ("TLS", "SASL", "plain"):
        with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
            Settings.from_env(security_env(protocol))


# --- a real broker that requires SASL --------------------------------------------------------

async def test_a_broker_requiring_sasl_refuses_clients_without_valid_credentials(tmp_path):
    """Tansu ``broker --authentication`` (SCRAM only; PLAIN is not offered by this build).

    ``tansu user create`` needs an authenticated connection on such a broker, and the memory
    storage engine keeps users in the broker process, so no user can be created and every
    client is refused. Should a Tansu build allow the creation, the full path is checked.
    """
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "tansu.log", "wb") as out:
        proc = subprocess.Popen([broker_binary(), "broker", "--authentication", "--listener-url",
                                 url, "--advertised-listener-url", url], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        await eventually(listening, 20, 0.05, what="the SASL broker")
        created = await asyncio.to_thread(subprocess.run, [
            broker_binary(), "user", "create", "--broker", url, "--mechanism", "scram256", "svc",
            SASL_PASSWORD], capture_output=True, timeout=30)
        base = replace(Settings.from_env({}), topic_prefix=f"s{uuid.uuid4().hex[:8]}.", partitions=1)

        def bus_with(**security: Any) -> Bus:
            settings = replace(base, security=replace(base.security, **security))
            return Bus(replace(settings, bootstrap_servers=f"127.0.0.1:{port}"))

        for refused in (bus_with(), bus_with(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                             sasl_username="svc", sasl_password=SASL_PASSWORD)):
            with pytest.raises(BrokerUnavailable):  # connection closed: no SASL / no PLAIN
                await refused.start(timeout=1.5)
        # A refused SCRAM exchange ends in aiokafka with KeyError('v') (the server's final
        # message carries "e=..." instead of "v=..."); KeyError being a LookupError, the
        # bus's retry loop passes it on at once instead of retrying until BrokerUnavailable.
        wrong = bus_with(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                         sasl_username="svc", sasl_password="wrong")
        with pytest.raises((BrokerUnavailable, KeyError)):
            await wrong.start(timeout=1.5)
        if created.returncode != 0:  # Tansu 0.6: refused with NotAuthenticated ("early eof")
            return
        good = bus_with(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                        sasl_username="svc", sasl_password=SASL_PASSWORD)
        await good.ensure_topics(timeout=20)
        async with good:
            await good.producer.send_and_wait(good.topics.commands, b"over-sasl", b"k")
        seen: list[bytes] = []
        await read_topic(good, good.topics.commands, lambda r: seen.append(r.value), timeout=20)
        assert seen == [b"over-sasl"]
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
