"""The HTTP application of the query role: the read API (:mod:`.reads`), the command
endpoints (:mod:`.commands`), the administration endpoints (:mod:`.admin`), the dashboard
and the OpenAPI document, with JSON errors and body limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..bus.client import Bus
from ..config import Settings
from ..observation.http import json_errors
from ..observation.metrics import Metrics
from ..query.readmodel import ReadModel
from . import admission
from .admin import (
    REPLAY_LOCK,
    get_health,
    get_metrics,
    get_ready,
    list_dead_letters,
    replay_dead_letters,
)
from .commands import cancel_order, create_order
from .context import BODY_LIMITS, BUS, HEALTH, METRICS, READ_MODEL, SETTINGS
from .dashboard import dashboard, recent_orders
from .openapi import get_openapi
from .reads import get_aggregate, get_catalog, get_order, list_aggregates, list_sagas

BODY_TIMEOUT_S = 10.0  # a request body not fully received by then is refused (408)


def create_app(model: ReadModel, metrics: Metrics, health: Callable[[], dict[str, Any]],
               client_max_size: int = 64 * 1024, *, bus: Bus | None = None,
               settings: Settings | None = None, body_timeout_s: float | None = None
               ) -> web.Application:
    """The query API. Without ``bus`` the order submission and DLQ replay routes answer 503.

    Bodies are limited to ``client_max_size`` bytes (413) received within ``body_timeout_s``
    (default :data:`BODY_TIMEOUT_S`; 408).
    """
    app = web.Application(middlewares=[json_errors], client_max_size=client_max_size)
    app[READ_MODEL] = model
    app[METRICS] = metrics
    app[HEALTH] = health
    app[BODY_LIMITS] = (client_max_size, body_timeout_s or BODY_TIMEOUT_S)
    app[REPLAY_LOCK] = asyncio.Lock()
    if bus is not None:
        app[BUS] = bus
    if settings is not None:
        app[SETTINGS] = settings
    admission.install(app, bus, settings)  # the backlog monitor, when KAFKA_SAGA_MAX_BACKLOG > 0
    # One route table, in the order the OpenAPI document lists a path's methods
    router = app.router
    router.add_get("/aggregates", list_aggregates)
    router.add_get("/aggregates/{user}", get_aggregate)
    router.add_get("/metrics", get_metrics)
    router.add_get("/healthz", get_health)
    router.add_get("/readyz", get_ready)
    router.add_get("/dlq", list_dead_letters)
    router.add_post("/dlq/replay", replay_dead_letters)
    router.add_post("/orders", create_order)
    router.add_get("/orders/{order_id}", get_order)
    router.add_post("/orders/{order_id}/cancel", cancel_order)
    router.add_get("/sagas", list_sagas)
    router.add_get("/catalog", get_catalog)
    router.add_get("/", dashboard)
    router.add_get("/orders", recent_orders)
    router.add_get("/openapi.json", get_openapi)
    return app
