"""The query API (aiohttp): the read side over the projections, and order submission."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiokafka.errors import KafkaError

from .. import logs
from ..bus import reinject
from ..bus.client import BrokerUnavailable, Bus
from ..bus.producer import DeliveryError
from ..config import Settings
from ..core.contracts import Command, Snapshot, Step
from ..core.fields import ContractError
from ..core.submission import (
    new_order_command,
    parse_cancel_request,
    parse_order_request,
    reject_command,
)
from ..runtime.http import (
    BadRequest,
    HttpError,
    int_param,
    json_error,
    json_errors,
    json_response,
    metrics_response,
    read_body,
)
from ..runtime.metrics import Metrics
from . import admission
from .dashboard import add_dashboard_routes
from .openapi import OBJECT, RETRY_AFTER, SUBMIT_UNAVAILABLE, documented, get_openapi, page, ref
from .orders import FAILED, REJECTED, STATUSES
from .readmodel import ReadModel

log = logs.get("query")
MAX_PAGE = 1000
SUBMIT_TIMEOUT_S = 10.0  # how long a submission waits for the broker's acknowledgement
BODY_TIMEOUT_S = 10.0  # a request body not fully received by then is refused (408)
REPLAY_READ_TIMEOUT_S = 30.0  # reading the DLQ topic for POST /dlq/replay
ADMIN_DISABLED = "admin endpoints are disabled: set KAFKA_SAGA_ADMIN_TOKEN"
READ_MODEL = web.AppKey("read_model", ReadModel)
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", object)
BUS = web.AppKey("bus", Bus)
SETTINGS = web.AppKey("settings", Settings)
BODY_LIMITS = web.AppKey("body_limits", tuple)  # (max bytes, seconds to receive them)
REPLAY_LOCK = web.AppKey("replay_lock", asyncio.Lock)


_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}
_TEXT = {"type": "string"}


def _model(request: web.Request) -> ReadModel:
    return request.app[READ_MODEL]


@documented(query={"limit": _LIMIT, "after": _TEXT}, responses={200: page("aggregates", ref("UserAggregate"))})
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


@documented(responses={200: ref("UserAggregate"), 404: ref("Error")})
async def get_aggregate(request: web.Request) -> web.Response:
    """GET /aggregates/{user} — one user's aggregate; 404 when unknown."""
    user = request.match_info["user"]
    body = _model(request).aggregates.bodies.get(user)  # encoded when it arrived, not per request
    if body is None:
        return json_error(404, f"no aggregate for user {user[:200]!r}")
    return web.Response(body=body, content_type="application/json")


@documented(query={"format": {"type": "string", "enum": ["prometheus"]}})
async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics — JSON snapshot, or Prometheus exposition when Accept asks for it."""
    return metrics_response(request, request.app[METRICS])


@documented(responses={200: OBJECT, 503: OBJECT})
async def get_health(request: web.Request) -> web.Response:
    """GET /healthz — the process is alive; per-role state."""
    health: Callable[[], dict[str, Any]] = request.app[HEALTH]  # type: ignore[assignment]
    body = health()  # 503 while a role is stalled (see runtime.watchdog)
    ok = body.get("healthy", True)
    return json_response({"status": "ok" if ok else "unhealthy", **body}, 200 if ok else 503)


@documented(responses={200: OBJECT, 503: OBJECT})
async def get_ready(request: web.Request) -> web.Response:
    """GET /readyz — 200 once the read model caught up with the topic as it was at start-up."""
    model = _model(request)
    done, target = model.aggregate_follower.progress()
    healthy = request.app[HEALTH]().get("healthy", True)  # type: ignore[operator]
    body = {"ready": model.ready and healthy, "read": done, "target": target, "healthy": healthy,
            "users": len(model.aggregates), "events": model.events_progress()}
    return json_response(body, status=200 if body["ready"] else 503)


@documented(query={"limit": _LIMIT, "reason": _TEXT})
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


# --- orders and sagas -------------------------------------------------------------------

def require_admin(request: web.Request) -> None:
    """Authorisation of the administrative routes (order cancel, DLQ replay).

    ``Authorization: Bearer <KAFKA_SAGA_ADMIN_TOKEN>``, compared in constant time. Without a
    configured token the routes are disabled (403); a missing or malformed header is 401
    with ``WWW-Authenticate: Bearer``; a wrong token is 403. Each refusal comes before the
    body is read, and closes the connection. The header is never logged.
    """
    token = _settings(request).admin_token
    if not token:
        raise HttpError(403, ADMIN_DISABLED, close=True)
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise HttpError(401, "admin endpoint: send the header 'Authorization: Bearer <token>'",
                        headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="kafka-saga"'}, close=True)
    if not hmac.compare_digest(credentials.encode("utf-8", "surrogatepass"),
                               token.encode("utf-8", "surrogatepass")):
        raise HttpError(403, "admin endpoint: invalid token", close=True)


def _invalid(exc: ContractError) -> web.Response:
    return json_error(400, str(exc), reason=exc.reason)


async def _json_body(request: web.Request) -> Any:
    max_size, timeout_s = request.app[BODY_LIMITS]
    raw = await read_body(request, max_size, timeout_s)
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object; it is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _settings(request: web.Request) -> Settings:
    return request.app.get(SETTINGS) or Settings()


async def _publish(request: web.Request, command: Command, partition: int | None = None
                   ) -> web.Response | None:
    """Send ``command`` and wait for the ack; a 503 response if not. A new order goes to the
    commands topic by key; with ``partition`` (a running saga's), to that partition of the
    replies topic: the partition owning the saga, whatever partitioner wrote its command."""
    order_id = command.snapshot.order_id
    bus = request.app.get(BUS)
    if bus is None:
        return json_error(503, "order submission is not available in this process")
    if bus.metrics.breaker_state == "open":
        return json_error(503, "the broker is unavailable (circuit breaker open); "
                          "nothing was submitted, retry later", order_id=order_id)
    producer = bus.producer
    try:
        if partition is None:
            await producer.send(bus.topics.commands, command.encode(), key=command.key)
        else:
            await producer.send(bus.topics.replies, command.encode(), key=command.key,
                                partition=partition)
        flush = asyncio.ensure_future(producer.flush())  # shared producer: never cancel a flush
        flush.add_done_callback(_consume_result)
        await asyncio.wait_for(asyncio.shield(flush), SUBMIT_TIMEOUT_S)
    except TimeoutError:
        log.warning("command not acknowledged in time", order_id=order_id,
                    command=command.type.value, timeout_s=SUBMIT_TIMEOUT_S)
        return json_error(503, f"the broker did not acknowledge the command within "
                          f"{SUBMIT_TIMEOUT_S:g}s; it may still be delivered: check "
                          f"/orders/{order_id} before retrying", order_id=order_id,
                          command_id=command.command_id)
    except (DeliveryError, KafkaError, ConnectionError) as exc:
        log.warning("command not delivered", order_id=order_id, command=command.type.value,
                    error=repr(exc)[:300])
        return json_error(503, "the broker could not take the command; retry later",
                          order_id=order_id, command_id=command.command_id)
    return None


def _consume_result(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        task.result()  # reported by the awaiting handler; never "exception never retrieved"


def _accepted(command: Command) -> web.Response:
    order_id = command.snapshot.order_id
    body = {"order_id": order_id, "saga_id": command.saga_id, "command_id": command.command_id}
    return json_response(body, status=202, headers={"Location": f"/orders/{order_id}"})


@documented(body="OrderRequest", responses={202: ref("Accepted"), 400: ref("Error"), 413: ref("Error"), 503: SUBMIT_UNAVAILABLE}, headers={503: RETRY_AFTER})
async def create_order(request: web.Request) -> web.Response:
    """POST /orders — validate, publish an OrderCreate command; 202 with the new ids."""
    body = await _json_body(request)
    try:
        order = parse_order_request(body)
    except ContractError as exc:
        return _invalid(exc)
    refused = admission.refusal(request)  # 503 + Retry-After above KAFKA_SAGA_MAX_BACKLOG
    if refused is not None:
        return refused
    command = new_order_command(order["user"], order["item"], order["quantity"],
                                _model(request).orders.catalog, attributes=order["attributes"],
                                price_cents=order["price_cents"])
    failed = await _publish(request, command)
    if failed is not None:
        return failed
    log.info("order submitted", order_id=command.snapshot.order_id, saga_id=command.saga_id)
    return _accepted(command)


def _wait_param(request: web.Request, limit: float) -> float | None:
    raw = request.query.get("wait")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= limit:  # also rejects nan and inf
        raise BadRequest(f"query parameter 'wait' must be a number of seconds greater than 0 "
                         f"and at most {limit:g}, got {raw!r}")
    return value


@documented(query={"wait": {"type": "number", "exclusiveMinimum": 0}}, responses={200: ref("Order"), 404: ref("Error"), 410: ref("Error")})
async def get_order(request: web.Request) -> web.Response:
    """GET /orders/{order_id}?wait=S — the order; with ``wait``, once terminal or S elapsed.

    410 for an order evicted from the orders window (``QUERY_ORDERS_MAX``): its details are
    gone, its status is still known (``order_status``)."""
    order_id = request.match_info["order_id"]
    wait = _wait_param(request, _settings(request).wait_max_s)
    view = _model(request).orders
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


@documented(query={"status": {"type": "string", "enum": list(STATUSES)}, "limit": _LIMIT, "after": _TEXT}, responses={200: page("sagas", OBJECT)})
async def list_sagas(request: web.Request) -> web.Response:
    """GET /sagas?status=&limit=&after= — saga summaries sorted by saga id, cursor-paginated."""
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}, "
                         f"got {status!r}")
    limit = int_param(request, "limit", 100, 1, MAX_PAGE)
    after = request.query.get("after")
    view = _model(request).orders
    items, next_after = view.page(limit, after, status)
    return json_response({"sagas": items, "count": len(items), "total": view.total(status),
                          "next_after": next_after})


@documented(responses={200: {"type": "object", "additionalProperties": {"type": "object", "properties": {"price_cents": {"type": "integer"}, "stock": {"type": "integer"}}}}})
async def get_catalog(request: web.Request) -> web.Response:
    """GET /catalog — ``{item: {price_cents, stock}}`` with the stock as the events show it."""
    return json_response(_model(request).orders.catalog_view())


@documented(body="CancelRequest", admin=True, responses={202: ref("Accepted"), 404: ref("Error"), 409: ref("Error")})
async def cancel_order(request: web.Request) -> web.Response:
    """POST /orders/{order_id}/cancel — publish an OrderReject for the order's saga."""
    require_admin(request)
    order_id = request.match_info["order_id"]
    body = await _json_body(request)
    try:
        reason = parse_cancel_request(body)
    except ContractError as exc:
        return _invalid(exc)
    view = _model(request).orders
    record = view.owner(order_id)
    evicted = view.evicted_order(order_id) if record is None else None
    if record is not None:
        saga_id, status, snapshot, step = (record.saga_id, record.status, record.snapshot,
                                           record.next_step())
    elif evicted is not None:  # the orchestrator compensates with its own copy of the order
        saga_id, status, step = evicted["saga_id"], evicted["status"], Step(evicted["step"])
        snapshot = Snapshot(order_id=order_id, user="", item="", quantity=0)
    else:
        return json_error(404, f"unknown order {order_id!r}", order_id=order_id)
    if status in (REJECTED, FAILED):
        return json_error(409, f"order {order_id!r} is already {status}",
                          order_id=order_id, saga_id=saga_id, order_status=status)
    command = reject_command(order_id, saga_id, snapshot, reason, "api", step=step)
    # to the saga's own partition (of its events, which is its command's) on orders.replies;
    # by key on orders.commands only for a saga whose partition the view was not told
    failed = await _publish(request, command, view.partition(order_id))
    if failed is not None:
        return failed
    log.info("order cancel requested", order_id=order_id, saga_id=saga_id, reason=reason)
    return _accepted(command)


# --- dead-letter replay ----------------------------------------------------------------

def _replay_request(body: Any) -> tuple[tuple[int, int] | None, str | None]:
    """``{"offset": "P:O"}`` or ``{"all": true}``, each with an optional ``"reason"`` filter."""
    if type(body) is not dict:
        raise BadRequest('dlq replay: expected a JSON object {"offset": "P:O"} or {"all": true}')
    unknown = sorted(k for k in body if k not in ("offset", "all", "reason"))
    if unknown:
        raise BadRequest(f"dlq replay: unknown field(s) {', '.join(repr(k[:50]) for k in unknown[:5])}"
                         "; allowed: offset, all, reason")
    if ("offset" in body) == ("all" in body):
        raise BadRequest('dlq replay: give exactly one of "offset": "P:O" and "all": true')
    if "all" in body and body["all"] is not True:
        raise BadRequest('dlq replay: "all" must be true')
    reason = body.get("reason")
    if reason is not None and (type(reason) is not str or not reason.strip() or len(reason) > 256):
        raise BadRequest('dlq replay: "reason" must be a non-empty string of at most 256 characters')
    offset = None
    if "offset" in body:
        if type(body["offset"]) is not str:
            raise BadRequest('dlq replay: "offset" must be a string "PARTITION:OFFSET"')
        try:
            offset = reinject.parse_offset(body["offset"])
        except ValueError as exc:
            raise BadRequest(f'dlq replay: "offset" {exc}') from None
    return offset, reason


@documented(body="ReplayRequest", admin=True, responses={200: OBJECT, 404: ref("Error"), 409: ref("Error"), 503: ref("Error")})
async def replay_dead_letters(request: web.Request) -> web.Response:
    """POST /dlq/replay — re-inject dead letters into their origin topic (as the CLI does)."""
    require_admin(request)
    offset, reason = _replay_request(await _json_body(request))
    bus = request.app.get(BUS)
    if bus is None:
        return json_error(503, "dead-letter replay is not available in this process")
    if bus.metrics.breaker_state == "open":
        return json_error(503, "the broker is unavailable (circuit breaker open); "
                          "nothing was re-injected, retry later")
    lock = request.app[REPLAY_LOCK]
    if lock.locked():
        return json_error(409, "a dead-letter replay is already running; retry when it is done")
    async with lock:
        try:
            letters = reinject.select(
                await reinject.read_dead_letters(bus, REPLAY_READ_TIMEOUT_S),
                reason=reason, offset=offset)
        except reinject.NoSuchDeadLetter as exc:
            return json_error(404, str(exc), offset=f"{offset[0]}:{offset[1]}" if offset else None)
        except LookupError as exc:  # the DLQ topic itself is missing
            return json_error(404, str(exc))
        except (TimeoutError, BrokerUnavailable, KafkaError, ConnectionError) as exc:
            log.warning("dlq not readable for replay", error=repr(exc)[:300])
            return json_error(503, "the dead-letter topic could not be read; nothing was "
                              "re-injected, retry later")
        try:
            sent = await reinject.reinject(bus, letters, SUBMIT_TIMEOUT_S)
        except TimeoutError:
            return json_error(503, f"the broker did not acknowledge the re-injected records "
                              f"within {SUBMIT_TIMEOUT_S:g}s; they may still be delivered")
        except (DeliveryError, KafkaError, ConnectionError) as exc:
            log.warning("dlq replay not delivered", error=repr(exc)[:300])
            return json_error(503, "the broker could not take the re-injected records; retry later")
    log.info("dead letters re-injected", count=len(sent), reason=reason,
             offset=f"{offset[0]}:{offset[1]}" if offset else "all")
    return json_response({
        "reinjected": len(sent),
        "records": [reinject.describe(d) for d in sent],
        "skipped": [f"{d.partition}:{d.offset}" for _, d in letters if not d.is_dead_letter],
    })


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
    app.router.add_get("/aggregates", list_aggregates)
    app.router.add_get("/aggregates/{user}", get_aggregate)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/readyz", get_ready)
    app.router.add_get("/dlq", list_dead_letters)
    app.router.add_post("/dlq/replay", replay_dead_letters)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_post("/orders/{order_id}/cancel", cancel_order)
    app.router.add_get("/sagas", list_sagas)
    app.router.add_get("/catalog", get_catalog)
    add_dashboard_routes(app)
    app.router.add_get("/openapi.json", get_openapi)
    return app


__all__ = ["ADMIN_DISABLED", "BadRequest", "create_app", "require_admin"]
