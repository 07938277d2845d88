"""The live dashboard: a self-contained page (no build step, no CDN) and the feed it polls."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from ..observation.http import int_param, json_response
from .context import read_model
from .openapi import OBJECT, documented, ref

PAGE = resources.files("kafka_saga").joinpath("static", "index.html")


@documented(responses={200: {"type": "string"}}, content_type="text/html")
async def dashboard(_request: web.Request) -> web.Response:
    """GET / — the live dashboard (HTML)."""
    return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


@documented(query={"limit": {"type": "integer", "minimum": 1, "maximum": 200}},
            responses={200: {"type": "object", "properties": {
                "orders": {"type": "array", "items": ref("Order")},
                "by_status": OBJECT, "total": {"type": "integer"}}}})
async def recent_orders(request: web.Request) -> web.Response:
    """GET /orders — the newest orders with their saga history, and the saga funnel."""
    limit = int_param(request, "limit", 25, 1, 200)
    view = read_model(request).orders
    return json_response({"orders": view.recent(limit), "by_status": view.by_status,
                          "total": view.total()})

