"""query: the aiohttp read side (CQRS) over the projections."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from .. import logs
from ..api.app import create_app
from ..config import QUERY_PORT_SETTING
from ..core.catalog import Catalog
from ..observation.http import HttpServer
from ..query.readmodel import ReadModel
from .base import Role

log = logs.get("query")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class QueryRole(Role):
    name = "query"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.catalog = Catalog.load(ctx.settings.catalog_path)
        self.model = ReadModel(ctx.bus, ctx.settings.dlq_recent, self.catalog,
                               ctx.settings.query_orders_max)
        self.server: HttpServer | None = None
        ctx.shared["read_model"] = self.model

    async def run(self, stop: asyncio.Event) -> None:
        health = self.ctx.shared.get("health", lambda: {})
        app = create_app(self.model, self.ctx.metrics, health, bus=self.ctx.bus,
                         settings=self.ctx.settings)
        self.server = HttpServer(app, self.ctx.settings.query_host, self.ctx.settings.query_port, "query",
                                 QUERY_PORT_SETTING)
        await self.server.start()
        admin = "enabled" if self.ctx.settings.admin_token else "disabled (no KAFKA_SAGA_ADMIN_TOKEN)"
        if _is_loopback(self.server.host):
            log.info("query api admin endpoints", admin=admin)
        else:
            log.warning("query api reachable beyond this host", host=self.server.host, admin=admin)
        self.ctx.shared["query_url"] = f"http://{self.server.host}:{self.server.port}"
        try:
            await self.model.run(stop)
        finally:
            await self.server.stop()

    def health(self) -> dict[str, Any]:
        return {"ready": self.model.ready, "users": len(self.model.aggregates),
                "orders": len(self.model.orders), "events_caught_up": self.model.events_caught_up}
