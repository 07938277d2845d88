"""The read API over the query model (CQRS read side): aggregates, orders, sagas, catalog."""

from __future__ import annotations

from aiohttp import web

from ..observation.http import BadRequest, int_param, json_error, json_response, query_value
from ..query.orders import STATUSES
from .context import CURSOR, LIMIT, MAX_PAGE, read_model, settings_of
from .openapi import OBJECT, documented, page, ref


@documented(query={"limit": LIMIT, "after": CURSOR}, responses={200: page("aggregates", ref("UserAggregate"))})
async def list_aggregates(request: web.Request) -> web.Response:
    """GET /aggregates?limit=&after= — sorted by user, cursor-paginated."""
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    after = query_value(request, "after", empty_is_absent=True)
    items, next_after = read_model(request).aggregates.page(limit, after)
    return json_response({
        "aggregates": [a for a in items],
        "count": len(items),
        "total": len(read_model(request).aggregates),
        "next_after": next_after,
    })


@documented(responses={200: ref("UserAggregate"), 404: ref("Error")})
async def get_aggregate(request: web.Request) -> web.Response:
    """GET /aggregates/{user} — one user's aggregate; 404 when unknown."""
    user = request.match_info["user"]
    body = read_model(request).aggregates.bodies.get(user)  # encoded when it arrived, not per request
    if body is None:
        return json_error(404, f"no aggregate for user {user[:200]!r}")
    return web.Response(body=body, content_type="application/json")


def _wait_param(request: web.Request, limit: float) -> float | None:
    raw = query_value(request, "wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= limit:  # also rejects nan and inf
        raise BadRequest(f"query parameter 'wait' must be a number of seconds greater than 0 "
                         f"and at most {limit:g}, got {raw!r}")
    return value


@documented(query={"wait": lambda settings: {"type": "number", "exclusiveMinimum": 0,
                                              "maximum": settings.wait_max_s}}, responses={200: ref("Order"), 404: ref("Error"), 410: ref("Error")})
async def get_order(request: web.Request) -> web.Response:
    """GET /orders/{order_id}?wait=S — the order; with ``wait``, once terminal or S elapsed.

    410 for an order evicted from the orders window (``QUERY_ORDERS_MAX``): its details are
    gone, its status is still known (``order_status``)."""
    order_id = request.match_info["order_id"]
    wait = _wait_param(request, settings_of(request).wait_max_s)
    view = read_model(request).orders
    if wait is not None:
        await view.wait_terminal(order_id, wait)
    order = view.order(order_id)
    if order is not None:
        return json_response(order)
    evicted = view.evicted_order(order_id)
    if evicted is not None:
        return json_error(410, f"order {order_id!r} was evicted from the query view's window of "
                          "recent orders (QUERY_ORDERS_MAX); only its status is kept",
                          order_id=order_id, saga_id=evicted["saga_id"],
                          order_status=evicted["status"], evicted=True)
    return json_error(404, f"unknown order {order_id!r}", order_id=order_id)


@documented(query={"status": {"type": "string", "enum": list(STATUSES)}, "limit": LIMIT, "after": CURSOR}, responses={200: page("sagas", OBJECT)})
async def list_sagas(request: web.Request) -> web.Response:
    """GET /sagas?status=&limit=&after= — saga summaries sorted by saga id, cursor-paginated."""
    status = query_value(request, "status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}, "
                         f"got {status!r}")
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    after = query_value(request, "after", empty_is_absent=True)
    view = read_model(request).orders
    items, next_after = view.page(limit, after, status)
    return json_response({"sagas": items, "count": len(items), "total": view.total(status),
                          "next_after": next_after})


@documented(responses={200: {"type": "object", "additionalProperties": {"type": "object", "properties": {"price_cents": {"type": "integer"}, "stock": {"type": "integer"}}}}})
async def get_catalog(request: web.Request) -> web.Response:
    """GET /catalog — ``{item: {price_cents, stock}}`` with the stock as the events show it."""
    return json_response(read_model(request).orders.catalog_view())
