"""What the HTTP handlers share: the application's keys, the request's read model, settings
and JSON body, and the authorisation of the administrative routes."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import hdrs, web

from ..bus.client import Bus
from ..config import Settings
from ..core.fields import ContractError
from ..observation.http import BadRequest, HttpError, json_error, read_body
from ..observation.metrics import Metrics
from ..query.readmodel import ReadModel

MAX_PAGE = 1000
SUBMIT_TIMEOUT_S = 10.0  # how long a submission waits for the broker's acknowledgement
ADMIN_DISABLED = "admin endpoints are disabled: set KAFKA_SAGA_ADMIN_TOKEN"
READ_MODEL = web.AppKey("read_model", ReadModel)
METRICS = web.AppKey("metrics", Metrics)
HEALTH = web.AppKey("health", object)
BUS = web.AppKey("bus", Bus)
SETTINGS = web.AppKey("settings", Settings)
BODY_LIMITS = web.AppKey("body_limits", tuple)  # (max bytes, seconds to receive them)

LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}  # OpenAPI: ?limit=
TEXT = {"type": "string", "minLength": 1}  # a query parameter given empty is refused
CURSOR = {"type": "string", "description": "next_after of the page before; empty or absent: the first page"}


def read_model(request: web.Request) -> ReadModel:
    return request.app[READ_MODEL]


def settings_of(request: web.Request) -> Settings:
    return request.app.get(SETTINGS) or Settings()


def invalid(exc: ContractError) -> web.Response:
    return json_error(400, str(exc), reason=exc.reason)


async def json_body(request: web.Request) -> Any:
    max_size, timeout_s = request.app[BODY_LIMITS]
    raw = await read_body(request, max_size, timeout_s)
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object; it is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def require_admin(request: web.Request) -> None:
    """Authorisation of the administrative routes (order cancel, DLQ replay).

    ``Authorization: Bearer <KAFKA_SAGA_ADMIN_TOKEN>``, compared in constant time. Without a
    configured token the routes are disabled (403); a missing or malformed header is 401
    with ``WWW-Authenticate: Bearer``; a wrong token is 403. Each refusal comes before the
    body is read, and closes the connection. The header is never logged.
    """
    token = settings_of(request).admin_token
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
