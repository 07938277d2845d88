"""The query API (aiohttp): the read side over the projections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..runtime.http import BadRequest, int_param, json_errors, json_response, metrics_response
from ..runtime.metrics import Metrics
from .readmodel import ReadModel

MAX_PAGE = 1000
READ_MODEL = web.AppKey("read_model", ReadModel)
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", object)


def _model(request: web.Request) -> ReadModel:
    return request.app[READ_MODEL]


async def list_aggregates(request: web.Request) -> web.Response:
    """GET /aggregates?limit=&after= — sorted by user, cursor-paginated."""
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    after = request.query.get("after")
    items, next_after = _model(request).aggregates.page(limit, after)
    return json_response({
        "aggregates": [a for a in items],
        "count": len(items),
        "total": len(_model(request).aggregates),
        "next_after": next_after,
    })


async def get_aggregate(request: web.Request) -> web.Response:
    """GET /aggregates/{user} — one user's aggregate; 404 when unknown."""
    user = request.match_info["user"]
    aggregate = _model(request).aggregates.by_user.get(user)
    if aggregate is None:
        raise web.HTTPNotFound(reason=f"no aggregate for user {user!r}")
    return json_response(aggregate)


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics — JSON snapshot, or Prometheus exposition when Accept asks for it."""
    return metrics_response(request, request.app[METRICS])


async def get_health(request: web.Request) -> web.Response:
    """GET /healthz — the process is alive; per-role state."""
    health: Callable[[], dict[str, Any]] = request.app[HEALTH]  # type: ignore[assignment]
    return json_response({"status": "ok", **health()})


async def get_ready(request: web.Request) -> web.Response:
    """GET /readyz — 200 once the read model caught up with the topic as it was at start-up."""
    model = _model(request)
    done, target = model.aggregate_follower.progress()
    body = {"ready": model.ready, "read": done, "target": target, "users": len(model.aggregates)}
    return json_response(body, status=200 if model.ready else 503)


async def list_dead_letters(request: web.Request) -> web.Response:
    """GET /dlq?limit=&reason= — the most recent dead letters, newest first."""
    limit = int_param(request, "limit", 50, 1, MAX_PAGE)
    reason = request.query.get("reason")
    view = _model(request).dead_letters
    letters = [d for d in reversed(view.recent) if reason is None or d.reason == reason][:limit]
    return json_response({
        "dead_letters": [d.to_dict() for d in letters],
        "count": len(letters),
        "by_reason": view.by_reason,
        "garbage": view.garbage,
    })


def create_app(model: ReadModel, metrics: Metrics, health: Callable[[], dict[str, Any]],
               client_max_size: int = 64 * 1024) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=client_max_size)
    app[READ_MODEL] = model
    app[METRICS] = metrics
    app[HEALTH] = health
    app.router.add_get("/aggregates", list_aggregates)
    app.router.add_get("/aggregates/{user}", get_aggregate)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/readyz", get_ready)
    app.router.add_get("/dlq", list_dead_letters)
    return app


__all__ = ["BadRequest", "create_app"]
