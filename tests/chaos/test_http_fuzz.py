"""The query API under hostile HTTP: property-based fuzzing and raw-socket abuse.

One real server (aggregator + query roles, some orders, users and dead letters) answers
every test over a socket. For any method, path, query string, header and body, it must
answer below 500, and every error must be a JSON object ``{"error": str, "status": int}``,
including what aiohttp refuses before the application runs (bad request line, oversized
URL). Bodies are bounded in size (413) and in time (408); idle or header-trickling
connections are closed. ``KAFKA_SAGA_FUZZ_EXAMPLES`` scales the number of examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from kafka_saga.api import app as query_app
from kafka_saga.config import Settings
from kafka_saga.observation import http as observation_http

from ..support.orders import order_events, produce, produce_events
from ..support.platform import RunningPlatform, eventually

pytest.importorskip("hypothesis", reason="pip install hypothesis (the dev extra)")
from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as fuzzing  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]
TOKEN = "fuzz-" + uuid.uuid4().hex
EXAMPLES = int(os.environ.get("KAFKA_SAGA_FUZZ_EXAMPLES", "120"))
BODY_TIMEOUT_S = 1.0
IDLE_TIMEOUT_S = 2.0
FUZZ = fuzzing(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@dataclass
class Server:
    url: str
    host: str
    port: int
    order_id: str
    user: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(broker) -> AsyncIterator[Server]:
    """Aggregator + query on their own topics, short body/idle time-outs, an admin token."""
    base = Settings.from_env({})
    config = replace(base, bootstrap_servers=broker.bootstrap, partitions=3, query_port=0,
                     topic_prefix=f"fz{uuid.uuid4().hex[:10]}.", admin_token=TOKEN,
                     wait_max_s=0.2, shutdown_timeout_s=10.0)
    running = RunningPlatform(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(query_app, "BODY_TIMEOUT_S", BODY_TIMEOUT_S)
        patch.setattr(observation_http, "IDLE_TIMEOUT_S", IDLE_TIMEOUT_S)
        platform = await running.start("aggregator", "query")
    try:
        events = [e for o in ("approved", "rejected", "pending")
                  for e in order_events(f"fz-{o}", "fuzzer", o)]
        topics = platform.bus.topics
        await asyncio.to_thread(produce_events, broker.bootstrap, topics.events, events,
                                config.partitions)  # as the orchestrator writes them
        await asyncio.to_thread(produce, broker.bootstrap, topics.events,
                                [(b"fz-bad", b"{not json"), (None, b"[1]")])

        async def seeded() -> bool:
            status, body = await running.get("/dlq")
            found, _ = await running.get("/aggregates/fuzzer")
            return status == 200 and body["count"] >= 2 and found == 200

        await eventually(seeded, 60, what="fuzz data served")
        url = URL(running.url)
        yield Server(running.url, url.host or "127.0.0.1", url.port or 0, "fz-pending", "fuzzer")
    finally:
        await running.stop()


async def send(server: Server, method: str, target: str, *, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """One request over a fresh connection; ``target`` is sent exactly as given."""
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as session:
        async with session.request(method, URL(server.url + target, encoded=True), data=body,
                                   headers=headers or {}, allow_redirects=False) as resp:
            return resp.status, resp.headers, await resp.read()


def check(method: str, target: str, status: int, headers: Any, raw: bytes) -> Any:
    """Below 500; an error is a JSON object naming the error and its status."""
    where = f"{method} {target[:200]} -> {status}: {raw[:300]!r}"
    content_type = headers.get("Content-Type", "")
    assert status < 500, where
    assert b"Traceback" not in raw, where
    if status >= 400 and method != "HEAD":
        assert content_type.startswith("application/json"), where
        body = json.loads(raw)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), where
        assert body.get("status") == status, where
        return body
    return None


# --- strategies ------------------------------------------------------------------------------

def _quoted(text: str) -> str:
    return quote(text, safe="")


escapes = st.lists(st.one_of(
    st.sampled_from(["%FF", "%C0%AF", "%ED%A0%80", "%00", "%2F", "%25", "%E2%82", "%", "%zz",
                     "..", ".", "%2e%2e", "~", ";", "@", "%0D%0A", "+", "%F0%9F%92%A9"]),
    st.text("abcXYZ019-_.", min_size=1, max_size=5),
), max_size=12).map("".join)
segments = st.one_of(
    st.text(max_size=60).map(_quoted),          # any unicode, percent-encoded
    escapes,                                     # raw (and invalid) escapes, kept as sent
    st.integers(200, 12_000).map(lambda n: "u" * n),  # very long: past aiohttp's 8190-byte line
    st.just(""), st.just("fz-pending"), st.just("fuzzer"),
)
params = st.dictionaries(
    st.sampled_from(["limit", "after", "wait", "status", "reason", "format", "x", ""]),
    st.one_of(st.text(max_size=30), st.sampled_from(
        ["0", "-1", "1", "1000", "1001", "1e309", "nan", "inf", "0.05", "99999999999999999999",
         "pending", "approved", "prometheus", "invalid_json"])),
    max_size=4,
)


def _query(values: dict[str, str]) -> str:
    return "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in values.items())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
shaped = st.fixed_dictionaries({}, optional={
    "user": st.text(max_size=20), "item": st.sampled_from(["espresso", "nope", ""]),
    "quantity": st.integers(-5, 200) | st.integers(), "attributes": json_values,
    "price_cents": st.integers() | json_values, "reason": st.text(max_size=20) | json_values,
    "offset": st.sampled_from(["0:0", "1:2", "2:999", "x:y", ":", "-1:0", "0"]) | json_values,
    "all": json_values | st.just(True),
})
bodies = st.one_of(
    st.none(),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),                                   # incl. invalid UTF-8
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),   # nesting past orjson's limit
    st.sampled_from([b"1" * 500, b"-" + b"9" * 400, b"1e999", b"NaN", b'{"a":', b"\xef\xbb\xbf{}",
                     b'"\\ud800"', b"{}" * 100, b" "]),
)
content_types = st.sampled_from([None, "application/json", "text/plain", "application/xml",
                                 "application/x-www-form-urlencoded", "multipart/form-data",
                                 "application/json; charset=latin-1", "*/*", "garbage"])
auth = st.sampled_from([None, f"Bearer {TOKEN}", "Bearer wrong", "Bearer", "Basic Zm9vOmJhcg==",
                        f"bearer  {TOKEN} ", "Bearer " + "x" * 4000, f"Token {TOKEN}"])
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]) | \
    st.from_regex(r"\A[A-Z]{1,12}\Z").filter(lambda m: m != "CONNECT")


def _headers(content_type: str | None, authorization: str | None) -> dict[str, str]:
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if authorization:
        headers["Authorization"] = authorization
    return headers


# --- property-based fuzzing ------------------------------------------------------------------

@FUZZ
@given(route=st.sampled_from(["/aggregates/{}", "/orders/{}", "/orders/{}/cancel", "/{}",
                              "/dlq/{}", "/sagas/{}", "/{}/{}"]),
       first=segments, second=segments, query=params)
async def test_any_path_and_query_under_each_route_is_below_500_and_json(server, route, first,
                                                                        second, query):
    target = route.format(first, second) + (f"?{_query(query)}" if query else "")
    for method in ("GET", "POST"):
        status, headers, raw = await send(server, method, target,
                                          body=b"{}" if method == "POST" else None)
        check(method, target, status, headers, raw)


@FUZZ
@given(path=st.sampled_from(["/aggregates", "/sagas", "/dlq", "/metrics", "/orders/fz-pending",
                             "/aggregates/fuzzer", "/healthz", "/catalog"]), query=params)
async def test_random_query_strings_are_below_500_and_json(server, path, query):
    target = f"{path}?{_query(query)}"
    status, headers, raw = await send(server, "GET", target)
    check("GET", target, status, headers, raw)


@FUZZ
@given(path=st.sampled_from(["/orders", "/orders/fz-pending/cancel", "/orders/ghost/cancel",
                             "/orders/fz-approved/cancel", "/dlq/replay"]),
       body=bodies, content_type=content_types, authorization=auth)
async def test_random_bodies_on_every_post_route_are_below_500_and_json(server, path, body,
                                                                       content_type, authorization):
    status, headers, raw = await send(server, "POST", path, body=body,
                                      headers=_headers(content_type, authorization))
    check("POST", path, status, headers, raw)
    if path != "/orders":  # the admin routes: the token, or nothing happens
        if authorization is None or not authorization.lower().startswith("bearer "):
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), raw
        elif TOKEN not in authorization:
            assert status == 403, raw


@FUZZ
@given(method=methods, path=st.sampled_from(["/aggregates", "/aggregates/fuzzer", "/orders",
                                             "/orders/fz-pending", "/orders/fz-pending/cancel",
                                             "/dlq", "/dlq/replay", "/sagas", "/catalog", "/metrics",
                                             "/healthz", "/readyz", "/"]),
       body=bodies, authorization=auth)
async def test_random_methods_are_below_500_and_json(server, method, path, body, authorization):
    status, headers, raw = await send(server, method, path, body=body,
                                      headers=_headers("application/json", authorization))
    check(method, path, status, headers, raw)


# --- raw sockets: size and time bounds, unparsable requests ----------------------------------

def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


async def exchange(server: Server, chunks: list[bytes], pause: float = 0.0,
                   timeout: float = 10.0) -> tuple[bytes, float]:
    """Write ``chunks`` (``pause`` s apart) while reading; stop writing once a reply comes.

    Returns the reply (complete, or whatever came before the server closed) and the seconds
    from connecting to then.
    """
    reader, writer = await asyncio.open_connection(server.host, server.port)
    started = time.monotonic()
    answered = asyncio.Event()

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            for chunk in chunks:
                if answered.is_set():
                    return
                writer.write(chunk)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)

    writing = asyncio.create_task(write())
    reply = b""
    try:
        async with asyncio.timeout(timeout):
            while not _complete(reply):
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                reply += data
                answered.set()
        return reply, time.monotonic() - started
    finally:
        writing.cancel()
        with contextlib.suppress(BaseException):
            await writing
        writer.close()


def parse(reply: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    status = int(lines[0].split(" ")[1])
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(body) if body else None


def request_head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: fuzz", *(f"{k.replace('_', '-')}: {v}"
                                                          for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/orders", "/orders/fz-pending/cancel", "/dlq/replay"])
async def test_a_trickled_body_is_cut_off_with_408_json(server, path):
    head = request_head("POST", path, Content_Type="application/json", Content_Length="500",
                        Authorization=f"Bearer {TOKEN}")
    reply, took = await exchange(server, [head] + [b" "] * 40, pause=0.1)
    status, headers, body = parse(reply)
    assert status == 408 and headers["content-type"].startswith("application/json"), reply
    assert body["status"] == 408 and "within" in body["error"]
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 2.5, took  # and the connection is closed


async def test_an_admin_route_refuses_before_reading_a_slow_body(server):
    head = request_head("POST", "/dlq/replay", Content_Length="500")
    reply, took = await exchange(server, [head, b"{"], timeout=5)
    status, headers, body = parse(reply)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer"), reply
    assert took < BODY_TIMEOUT_S, took


@pytest.mark.parametrize("path", ["/orders", "/orders/fz-pending/cancel", "/dlq/replay"])
async def test_oversized_bodies_are_413_json(server, path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    declared = request_head("POST", path, Content_Length=str(10 * 1024 * 1024), **auth)
    reply, took = await exchange(server, [declared], timeout=5)  # refused on the header alone
    status, _, body = parse(reply)
    assert status == 413 and body["status"] == 413 and body["max_bytes"] == 64 * 1024, reply
    chunked = request_head("POST", path, Transfer_Encoding="chunked", **auth)
    piece = b"%x\r\n%s\r\n" % (16 * 1024, b"x" * 16 * 1024)
    reply, _ = await exchange(server, [chunked] + [piece] * 6 + [b"0\r\n\r\n"], timeout=5)
    status, _, body = parse(reply)
    assert status == 413 and "larger than 65536 bytes" in body["error"], reply
    status, headers, raw = await send(server, "POST", path, body=b"[" + b"1," * 40_000 + b"1]",
                                      headers={"Content-Type": "application/json", **auth})
    assert check("POST", path, status, headers, raw)["status"] == 413


@pytest.mark.parametrize("raw_request", [
    b"GARBAGE\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /aggregates HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20_000 + b"\r\n\r\n",
    b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"GET /aggregates HTTP/1.1\r\nHost: x\r\nBad Header\x01: v\r\n\r\n",
    b"GET /aggregates HTTP/9.9\r\nHost: x\r\n\r\n",
], ids=["not-http", "long-url", "long-header", "bad-length", "bad-chunk", "bad-header", "version"])
async def test_unparsable_requests_get_a_json_error_too(server, raw_request):
    reply, _ = await exchange(server, [raw_request], timeout=5)
    status, headers, body = parse(reply)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json"), reply
    assert body["status"] == status and isinstance(body["error"], str)


async def test_idle_and_header_trickling_connections_are_closed(server):
    reply, took = await exchange(server, [], timeout=IDLE_TIMEOUT_S + 5)
    assert reply == b"" and IDLE_TIMEOUT_S - 0.5 <= took < IDLE_TIMEOUT_S + 3, took
    head = request_head("GET", "/aggregates")
    reply, took = await exchange(server, [bytes([b]) for b in head[:-4]], pause=0.2,
                                 timeout=IDLE_TIMEOUT_S + 5)
    assert took < IDLE_TIMEOUT_S + 3, took
