"""OpenAPI generated from the routes, and the dashboard's page and feed, over a real socket."""

from __future__ import annotations

import asyncio

from ..support.platform import eventually
from .test_saga import order, submit


async def test_every_route_is_in_the_openapi_document(platform):
    await platform.start("query")
    code, doc = await platform.get("/openapi.json")
    assert code == 200 and doc["openapi"] == "3.1.0"
    app = platform.platform.supervisor.current["query"].server.app
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = route.resource.canonical
        assert path in doc["paths"], path
        operation = doc["paths"][path][route.method.lower()]
        assert operation["summary"] and operation["responses"]
    assert doc["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderRequest"}
    assert doc["paths"]["/orders/{order_id}/cancel"]["post"]["security"] == [{"adminToken": []}]
    assert "UserAggregate" in doc["components"]["schemas"]
    # every $ref resolves
    refs: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref


async def test_dashboard_page_and_feed(platform, bus):
    await platform.start("orchestrator", "inventory", "aggregator", "query")
    code, page = await platform.get("/")
    assert code == 200 and "<title>kafka_saga" in page and "http" not in page.split("<script>")[1].split("fetch(")[0]
    assert "cdn" not in page.lower()
    command = order(user="client05")
    await submit(bus, command)

    async def listed():
        code, body = await platform.get("/orders?limit=5")
        ids = [o["order_id"] for o in body["orders"]] if code == 200 else []
        return body if command.snapshot.order_id in ids and body["by_status"]["approved"] >= 1 else None

    body = await eventually(listed, timeout=60, what="order in the dashboard feed")
    newest = body["orders"][0]
    assert newest["order_id"] == command.snapshot.order_id and newest["history"]
    code, bad = await platform.get("/orders?limit=0")
    assert code == 400 and "error" in bad
    await asyncio.sleep(0)
