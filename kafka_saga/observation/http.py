"""HTTP plumbing shared by the query API and the per-role metrics servers.

Every error answer is a JSON object ``{"error": str, "status": int, ...}``: handler errors
through the :func:`json_errors` middleware, and requests that aiohttp cannot even parse
(bad request line, oversized headers, broken chunking) through :class:`JsonErrorHandler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from .. import logs
from ..config import PortTaken
from .health import health_answer
from .metrics import Metrics

log = logs.get("http")
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_FORMATS = ("json", "prometheus")  # GET /metrics?format=
IDLE_TIMEOUT_S = 30.0  # an idle (or header-trickling) connection is closed after this long
# Headers an error answer keeps from the ``web.HTTPException`` it renders (e.g. Allow on 405).
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", "Location")


def _scrub(data: Any) -> Any:
    """``data`` with every string made valid UTF-8 (lone surrogates from odd URLs escaped)."""
    if isinstance(data, str):
        return data.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(data, Mapping):
        return {_scrub(str(k)): _scrub(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_scrub(v) for v in data]
    return data


def _dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data, default=str)
    except orjson.JSONEncodeError:  # e.g. a path segment decoded to a lone surrogate
        return orjson.dumps(_scrub(data), default=lambda o: _scrub(str(o)))


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    return web.Response(body=_dumps(data), status=status, content_type="application/json",
                        headers=headers)


def json_error(status: int, message: str, *, headers: Mapping[str, str] | None = None,
               close: bool = False, **extra: Any) -> web.Response:
    """``{"error": message, "status": status, **extra}``; ``close`` ends the connection after."""
    response = json_response({"error": message, "status": status, **extra}, status=status,
                             headers=headers)
    if close:
        response.force_close()
    return response


class BadRequest(Exception):
    """Raised by handlers for invalid input; rendered as a 400 JSON error."""


class HttpError(Exception):
    """Raised by handlers for any error status; rendered as a JSON error by ``json_errors``."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None,
                 close: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.close, self.extra = (
            status, message, dict(headers or {}), close, extra)

    def response(self) -> web.Response:
        return json_error(self.status, self.message, headers=self.headers, close=self.close,
                          **self.extra)


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every error is a JSON body; never a stack trace."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(400, str(exc))
    except HttpError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
        return json_error(exc.status, exc.reason, headers=kept)
    except Exception:  # noqa: BLE001
        log.exception("unhandled error in http handler", method=request.method, path=request.path)
        return json_error(500, "internal server error")


async def read_body(request: web.Request, max_size: int, timeout_s: float) -> bytes:
    """The whole request body, at most ``max_size`` bytes, received within ``timeout_s``.

    413 when it is larger (checked on Content-Length first, then while reading), 408 when
    the client is too slow to send it, 400 when the framing breaks; each closes the connection.
    """
    declared = request.content_length
    if declared is not None and declared > max_size:
        raise HttpError(413, f"the request body is larger than {max_size} bytes "
                        f"(Content-Length: {declared})", close=True, max_bytes=max_size)
    try:
        return await asyncio.wait_for(request.read(), timeout_s)
    except TimeoutError:
        raise HttpError(408, f"the request body was not received within {timeout_s:g}s",
                        close=True) from None
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, f"the request body is larger than {max_size} bytes",
                        close=True, max_bytes=max_size) from None
    except (HttpProcessingError, ConnectionError) as exc:
        raise HttpError(400, f"the request body could not be read: {exc}"[:300],
                        close=True) from None


def wants_prometheus(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    chosen = query_value(request, "format")  # wins over Accept
    if chosen is not None:
        if chosen not in METRICS_FORMATS:
            raise BadRequest(f"query parameter 'format' must be one of {', '.join(METRICS_FORMATS)}, "
                             f"got {chosen[:100]!r}")
        return chosen == "prometheus"
    return "text/plain" in accept or "openmetrics" in accept


def metrics_response(request: web.Request, metrics: Metrics) -> web.Response:
    if wants_prometheus(request):
        return web.Response(body=metrics.prometheus(), headers={"Content-Type": PROMETHEUS_TYPE})
    return json_response(metrics.snapshot())


def query_value(request: web.Request, name: str, empty_is_absent: bool = False) -> str | None:
    """The query parameter ``name`` (None when absent); given more than once, or empty (unless
    ``empty_is_absent``, as a cursor that starts at the beginning): 400."""
    values = request.query.getall(name, [])
    if not values or (empty_is_absent and values == [""]):
        return None
    if len(values) > 1:
        raise BadRequest(f"query parameter {name!r} given {len(values)} times; give it once")
    if values[0] == "":
        raise BadRequest(f"query parameter {name!r} is empty; give a value or leave it out")
    return values[0]


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = query_value(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw[:100]!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}")
    return value


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering unparsable requests with a JSON error.

    aiohttp answers those (and failures outside the middleware) itself, as ``text/plain``,
    before any application code runs. The parser's message quotes the offending bytes
    (which may be a header such as Authorization): it goes back to the client only, and
    the log line names the status, never the request's content.
    """

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response was already started: nothing to add
            raise ConnectionError("response already sent, cannot send an error response")
        if status >= 500:
            log.error("http request failed outside the handlers", status=status,
                      error=type(exc).__name__ if exc else None)
        else:
            log.info("unparsable http request refused", status=status, remote=request.remote)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        text = phrase if status >= 500 or not message else f"{phrase}: {message}"[:500]
        return json_error(status, text, close=True)


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now (as aiohttp binds), if it could not."""
    if not port:
        return None  # any free port
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"no such host ({exc.strerror})"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return _bind_failure(exc)
    return None


def _bind_failure(exc: OSError) -> str:
    return "taken by another process" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)


def listen_error(setting: str, host: str, port: int, problem: str) -> str:
    """The one line that says which listening address failed, and what to change."""
    return (f"cannot listen on {host}:{port} ({setting}): {problem}; change it to a free "
            "port (0: any free port)")


class HttpServer:
    """A small aiohttp server started and stopped by a role."""

    def __init__(self, app: web.Application, host: str, port: int, name: str,
                 setting: str = "the port") -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self.setting = setting  # what an operator changes when the port is taken
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0, keepalive_timeout=IDLE_TIMEOUT_S)
        await self.runner.setup()
        server = self.runner.server
        if type(server) is web.Server:  # JSON for the errors aiohttp answers by itself
            server.__class__ = _JsonErrorServer
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:  # taken since the start-up check: no restart can fix it
            await self.stop()
            raise PortTaken(listen_error(self.setting, self.host, self.port,
                                         _bind_failure(exc))) from None
        sockets = getattr(site._server, "sockets", None) or []  # noqa: SLF001 - actual bound port
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("http server listening", server=self.name, url=f"http://{self.host}:{self.port}")

    async def stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
            self.runner = None


def metrics_app(metrics: Metrics, health: Callable[[], dict[str, Any]]) -> web.Application:
    """``/metrics`` (JSON or Prometheus) and ``/healthz`` for one role."""
    app = web.Application(middlewares=[json_errors])

    async def get_metrics(request: web.Request) -> web.Response:
        return metrics_response(request, metrics)

    async def get_health(_request: web.Request) -> web.Response:
        # 503 while the supervisor's watchdog reports the role stalled
        return json_response(*health_answer(health()))

    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    return app
