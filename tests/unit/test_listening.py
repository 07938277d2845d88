"""The ports a process listens on: checked before anything starts, and a port taken in the
meantime is still a :class:`PortTaken` naming the setting (real sockets, no broker)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from aiohttp import web

from kafka_saga.config import BadBootstrap, PortTaken, RoleOptions, Settings, bootstrap_addresses
from kafka_saga.observation.http import HttpServer, bind_problem
from kafka_saga.runtime.platform import check_listening


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_bind_problem_tells_a_taken_port_from_a_free_one(taken_port):
    assert bind_problem("127.0.0.1", taken_port) == "taken by another process"
    assert bind_problem("127.0.0.1", 0) is None
    assert bind_problem("no-such-host.invalid", 8080).startswith("no such host")


async def test_a_port_taken_after_the_check_is_port_taken_naming_the_setting(taken_port):
    server = HttpServer(web.Application(), "127.0.0.1", taken_port, "query", "QUERY_API_PORT")
    with pytest.raises(PortTaken, match=rf"127.0.0.1:{taken_port} \(QUERY_API_PORT\): taken"):
        await server.start()
    assert server.runner is None  # nothing left half started


def test_check_listening_looks_only_at_the_roles_that_listen(taken_port):
    settings = replace(Settings.from_env({}), query_port=taken_port)
    check_listening(settings, ["orchestrator", "tracker"])  # neither serves the query API
    with pytest.raises(PortTaken, match="QUERY_API_PORT"):
        check_listening(settings, ["tracker", "query"])
    metrics = replace(Settings.from_env({}), query_port=0,
                      roles={"inventory": RoleOptions(metrics_port=taken_port)})
    with pytest.raises(PortTaken, match="INVENTORY_METRICS_PORT or inventory.metrics_port"):
        check_listening(metrics, ["inventory"])


@pytest.mark.parametrize("good", ["a:1", "127.0.0.1:9092,b.example:19092", "[::1]:9092"])
def test_good_bootstrap_addresses(good):
    assert bootstrap_addresses(good) is None
    assert Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": good}).bootstrap_servers == good


@pytest.mark.parametrize("bad", ["localhost", ":9092", "a:0", "a:65536", "a:9092,b", "a:x"])
def test_bad_bootstrap_addresses_are_bad_bootstrap(bad):
    assert bootstrap_addresses(bad)
    with pytest.raises(BadBootstrap, match="KAFKA_BOOTSTRAP_SERVERS="):
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bad})
