"""OpenAPI 3.1 generated from the registered aiohttp routes, their handlers and the contracts.

Each handler carries its own description (``@documented``: query parameters, body and
response schemas); :func:`openapi` walks the router, so a route cannot exist without
appearing in the document, and every schema comes from the contracts' field lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import __version__
from ..config import Settings
from ..core.contracts import MAX_MONEY, ORDER_MAX_QUANTITY, Event, Snapshot, UserAggregate
from ..core.contracts import STATUSES as _STATUSES
from ..core.submission import (
    MAX_ATTRIBUTE_KEY,
    MAX_ATTRIBUTE_VALUE,
    MAX_ATTRIBUTES,
    MAX_REASON,
    MAX_TEXT,
    TEXT_PATTERN,
)
from ..observation.http import json_response
from .context import SETTINGS

Handler = Callable[..., Any]
# A query parameter's schema, or a function of the settings giving it (a bound that is a setting)
Schema = dict[str, Any] | Callable[[Settings], dict[str, Any]]

STATUSES = list(_STATUSES)
ERROR = {"type": "object", "required": ["error", "status"],
         "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
def _text(limit: int) -> dict[str, Any]:
    """A string with something besides whitespace, of at most ``limit`` characters."""
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": TEXT_PATTERN}


ORDER_REQUEST = {
    "type": "object", "additionalProperties": False, "required": ["user", "item", "quantity"],
    "properties": {
        "user": _text(MAX_TEXT),
        "item": _text(MAX_TEXT),
        "quantity": {"type": "integer", "minimum": 1, "maximum": ORDER_MAX_QUANTITY},
        "attributes": {"type": ["object", "null"], "description": "null: no attributes",
                       "maxProperties": MAX_ATTRIBUTES,
                       "propertyNames": {"maxLength": MAX_ATTRIBUTE_KEY},
                       "additionalProperties": {"type": "string", "maxLength": MAX_ATTRIBUTE_VALUE}},
        "price_cents": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_MONEY,
                        "description": "absent or null: the catalog price"},
    },
}
ACCEPTED = {"type": "object", "required": ["order_id", "saga_id", "command_id"],
            "properties": {k: {"type": "string"} for k in ("order_id", "saga_id", "command_id")}}
HISTORY = {"type": "array", "items": {"type": "object", "properties": {
    "type": {"type": "string"}, "step": {"type": "string"}, "occurred_at": {"type": "string"},
    "retry_count": {"type": "integer"}, "error_message": {"type": "string"}}}}
ORDER = {"type": "object", "properties": {
    **{k: {"type": "string"} for k in ("order_id", "saga_id", "user", "item", "step", "reason",
                                        "created_at", "updated_at")},
    "quantity": {"type": "integer"}, "price_cents": {"type": "integer"},
    "retry_count": {"type": "integer"}, "status": {"type": "string", "enum": STATUSES},
    "trace_id": {"type": ["string", "null"], "pattern": "^[0-9a-f]{32}$",
                 "description": "the W3C trace id of the order's trace (null: its events carry none)"},
    "history": HISTORY}}
CANCEL_REQUEST = {"type": "object", "required": ["reason"], "additionalProperties": False,
                  "properties": {"reason": _text(MAX_REASON)}}
MAX_REPLAY_REASON = 256  # POST /dlq/replay's "reason" filter
REPLAY_REQUEST = {  # exactly one of offset and all (oneOf: both would match both)
    "type": "object", "additionalProperties": False,
    "oneOf": [{"required": ["offset"]}, {"required": ["all"]}],
    "properties": {"offset": {"type": "string", "pattern": "^[0-9]+:[0-9]+$"},
                   "all": {"const": True}, "reason": _text(MAX_REPLAY_REASON)}}
OVERLOADED = {  # POST /orders refused by admission (kafka_saga.api.admission)
    "type": "object", "required": ["error", "status", "reason", "backlog", "max_backlog", "retry_after_s"],
    "description": "Too many commands wait for the orchestrator (KAFKA_SAGA_MAX_BACKLOG); "
                   "nothing was submitted. Sent with a Retry-After header of retry_after_s.",
    "properties": {"error": {"type": "string"}, "status": {"const": 503}, "reason": {"const": "backlog"},
                   "backlog": {"type": "integer", "minimum": 0},
                   "max_backlog": {"type": "integer", "minimum": 1},
                   "retry_after_s": {"type": "integer", "minimum": 1, "maximum": 60}}}
RETRY_AFTER = {"Retry-After": {"description": "with reason backlog only: seconds to wait before retrying",
                               "schema": {"type": "integer", "minimum": 1, "maximum": 60}}}
OBJECT = {"type": "object"}


class Media(dict[str, Any]):
    """A response described per content type, ``{content_type: schema}``."""


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (UserAggregate, Event, Snapshot):
        schema = model.json_schema()
        schema.pop("$schema", None)
        out[model.__name__] = schema
    out.update(Error=ERROR, OrderRequest=ORDER_REQUEST, Accepted=ACCEPTED, Order=ORDER,
               CancelRequest=CANCEL_REQUEST, ReplayRequest=REPLAY_REQUEST, Overloaded=OVERLOADED)
    return out


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# A 503 of POST /orders: the backlog refusal, or any other (breaker open, no ack) Error.
SUBMIT_UNAVAILABLE = {"oneOf": [ref("Overloaded"), {**ref("Error"), "not": {
    "required": ["reason"], "properties": {"reason": {"const": "backlog"}}}}]}


def page(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """A cursor-paginated list: ``{key: [item], count, total, next_after}``."""
    return {"type": "object", "properties": {key: {"type": "array", "items": item},
                                             "count": {"type": "integer"}, "total": {"type": "integer"},
                                             "next_after": {"type": ["string", "null"]}}}


def documented(*, query: dict[str, Schema] | None = None, body: str | None = None,
               responses: dict[int, Any] | None = None, admin: bool = False,
               content_type: str = "application/json",
               headers: dict[int, dict[str, Any]] | None = None) -> Callable[[Handler], Handler]:
    """Attach the OpenAPI description of a handler: query parameters, body, responses
    (and the response headers of a status, ``{503: RETRY_AFTER}``); a response given as
    :class:`Media` has one schema per content type."""

    def mark(handler: Handler) -> Handler:
        handler.__openapi__ = {  # type: ignore[attr-defined]
            "query": query or {}, "body": body, "responses": responses or {200: OBJECT},
            "admin": admin, "content_type": content_type, "headers": headers or {}}
        return handler

    return mark


def _operation(method: str, path: str, handler: Handler, settings: Settings) -> dict[str, Any]:
    meta = getattr(handler, "__openapi__", {"query": {}, "body": None, "responses": {200: OBJECT},
                                            "admin": False, "content_type": "application/json"})
    doc = (handler.__doc__ or "").strip()
    summary = doc.splitlines()[0] if doc else f"{method} {path}"
    params = [{"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
              for p in path.split("/") if p.startswith("{")]
    params += [{"name": n, "in": "query", "required": False,
                "schema": s(settings) if callable(s) else s} for n, s in meta["query"].items()]
    responses: dict[str, Any] = {}
    for status, schema in meta["responses"].items():
        if isinstance(schema, Media):
            content = {kind: {"schema": one} for kind, one in schema.items()}
        elif meta["content_type"] == "text/html":
            content = {"text/html": {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": schema}}
        responses[str(status)] = {"description": "success" if status < 400 else "error", "content": content}
        if status in meta.get("headers", {}):
            responses[str(status)]["headers"] = meta["headers"][status]
    for status in (400, 404, 405) if params or meta["body"] else (405,):
        responses.setdefault(str(status), {"description": "error",
                                           "content": {"application/json": {"schema": ref("Error")}}})
    operation: dict[str, Any] = {"summary": summary, "operationId": handler.__name__,
                                 "parameters": params, "responses": responses}
    if meta["body"]:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": ref(meta["body"])}}}
    if meta["admin"]:
        operation["security"] = [{"adminToken": []}]
        for status in (401, 403):
            operation["responses"][str(status)] = {
                "description": "admin token missing, wrong, or admin endpoints disabled",
                "content": {"application/json": {"schema": ref("Error")}}}
    return operation


def openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route registered on ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    settings = app.get(SETTINGS) or Settings()  # bounds that are settings (?wait=)
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "*") or route.resource is None:
            continue
        path = route.resource.canonical
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, route.handler, settings)
    return {
        "openapi": "3.1.0",
        "info": {"title": "kafka_saga query API", "version": __version__,
                 "description": "Read side (CQRS) of the order platform, order submission and "
                                "administration. Every error is a JSON body {error, status}."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": _schemas(), "securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "KAFKA_SAGA_ADMIN_TOKEN"}}},
    }


@documented(responses={200: OBJECT})
async def get_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json — this document."""
    return json_response(openapi(request.app))
