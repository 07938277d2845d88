"""Operation and administration endpoints: the dead letters (list, replay), metrics, health
and readiness. Replaying dead letters needs the admin token (:func:`.context.require_admin`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError

from .. import logs
from ..bus import reinject
from ..bus.client import BrokerUnavailable
from ..bus.producer import DeliveryError
from ..core.submission import blank
from ..observation.health import health_answer
from ..observation.http import (
    METRICS_FORMATS,
    BadRequest,
    int_param,
    json_error,
    json_response,
    metrics_response,
    query_value,
)
from .context import (
    BUS,
    HEALTH,
    LIMIT,
    MAX_PAGE,
    METRICS,
    SUBMIT_TIMEOUT_S,
    TEXT,
    json_body,
    read_model,
    require_admin,
)
from .openapi import MAX_REPLAY_REASON, OBJECT, Media, documented, ref

log = logs.get("query")
REPLAY_READ_TIMEOUT_S = 30.0  # reading the DLQ topic for POST /dlq/replay
REPLAY_LOCK = web.AppKey("replay_lock", asyncio.Lock)


@documented(query={"format": {"type": "string", "enum": list(METRICS_FORMATS)}},
            responses={200: Media({"application/json": OBJECT, "text/plain": {"type": "string"}})})
async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics — JSON snapshot, or Prometheus text (``text/plain``) with ?format=prometheus
    or when Accept names text/plain or openmetrics; ?format= wins over Accept."""
    return metrics_response(request, request.app[METRICS])


@documented(responses={200: OBJECT, 503: OBJECT})
async def get_health(request: web.Request) -> web.Response:
    """GET /healthz — the process is alive; per-role state."""
    health: Callable[[], dict[str, Any]] = request.app[HEALTH]  # type: ignore[assignment]
    return json_response(*health_answer(health()))  # 503 while a role is stalled


@documented(responses={200: OBJECT, 503: OBJECT})
async def get_ready(request: web.Request) -> web.Response:
    """GET /readyz — 200 once the read model caught up with the topic as it was at start-up."""
    model = read_model(request)
    done, target = model.aggregate_follower.progress()
    healthy = request.app[HEALTH]().get("healthy", True)  # type: ignore[operator]
    body = {"ready": model.ready and healthy, "read": done, "target": target, "healthy": healthy,
            "users": len(model.aggregates), "events": model.events_progress()}
    return json_response(body, status=200 if body["ready"] else 503)


@documented(query={"limit": LIMIT, "reason": TEXT})
async def list_dead_letters(request: web.Request) -> web.Response:
    """GET /dlq?limit=&reason= — the most recent dead letters, newest first."""
    limit = int_param(request, "limit", 50, 1, MAX_PAGE)
    reason = query_value(request, "reason")
    view = read_model(request).dead_letters
    letters = [d for d in reversed(view.recent) if reason is None or d.reason == reason][:limit]
    return json_response({
        "dead_letters": [d.to_dict() for d in letters],
        "count": len(letters),
        "by_reason": view.by_reason,
        "garbage": view.garbage,
    })


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
    if "reason" in body and (type(reason) is not str or blank(reason)
                               or len(reason) > MAX_REPLAY_REASON):
        raise BadRequest(f'dlq replay: "reason" must be a non-empty string of at most '
                         f'{MAX_REPLAY_REASON} characters')
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
    offset, reason = _replay_request(await json_body(request))
    bus = request.app.get(BUS)
    if bus is None:
        return json_error(503, "dead-letter replay is not available in this process")
    if bus.producer.breaker_open:
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
