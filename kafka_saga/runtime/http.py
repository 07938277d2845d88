"""HTTP plumbing shared by the query API and the per-role metrics servers."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .. import logs
from .metrics import Metrics

log = logs.get("http")
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data, default=str), status=status,
                        content_type="application/json", headers=headers)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, "status": status, **extra}, status=status)


class BadRequest(Exception):
    """Raised by handlers for invalid input; rendered as a 400 JSON error."""


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Every error is a JSON body; never a stack trace."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except Exception:  # noqa: BLE001
        log.exception("unhandled error in http handler", path=request.path)
        return json_error(500, "internal server error")


def wants_prometheus(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/plain" in accept or "openmetrics" in accept or request.query.get("format") == "prometheus"


def metrics_response(request: web.Request, metrics: Metrics) -> web.Response:
    if wants_prometheus(request):
        return web.Response(body=metrics.prometheus(), headers={"Content-Type": PROMETHEUS_TYPE})
    return json_response(metrics.snapshot())


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}")
    return value


class HttpServer:
    """A small aiohttp server started and stopped by a role."""

    def __init__(self, app: web.Application, host: str, port: int, name: str) -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        await site.start()
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
        return json_response({"status": "ok", **health()})

    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    return app
