"""The command endpoints: POST /orders and POST /orders/{order_id}/cancel.

Each validates its request, publishes one command (a new order to ``orders.commands`` by
key; a cancel to the saga's own partition of ``orders.replies``) and answers 202 once the
broker acknowledged it, or 503 (breaker open, no acknowledgement in time, admission).
"""

from __future__ import annotations

from aiohttp import web
from aiokafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from .. import logs
from ..bus.producer import DeliveryError
from ..core.contracts import Command, Snapshot, Step
from ..core.fields import ContractError
from ..core.submission import (
    new_order_command,
    parse_cancel_request,
    parse_order_request,
    reject_command,
)
from ..observation import tracing
from ..observation.http import json_error, json_response
from ..query.orders import FAILED, REJECTED
from . import admission
from .context import (
    BUS,
    SUBMIT_TIMEOUT_S,
    invalid,
    json_body,
    read_model,
    require_admin,
)
from .openapi import RETRY_AFTER, SUBMIT_UNAVAILABLE, documented, ref

log = logs.get("query")


async def _publish(request: web.Request, command: Command, partition: int | None = None
                   ) -> web.Response | None:
    """Send ``command`` and wait for the ack; a 503 response if not. A new order goes to the
    commands topic by key; with ``partition`` (a running saga's), to that partition of the
    replies topic: the partition owning the saga, whatever partitioner wrote its command."""
    order_id = command.snapshot.order_id
    bus = request.app.get(BUS)
    if bus is None:
        return json_error(503, "order submission is not available in this process")
    if bus.producer.breaker_open:
        return json_error(503, "the broker is unavailable (circuit breaker open); "
                          "nothing was submitted, retry later", order_id=order_id)
    producer = bus.producer
    topic = bus.topics.commands if partition is None else bus.topics.replies
    try:
        with tracing.span(f"send {topic}", {"messaging.system": "kafka", "messaging.operation.type": "send",
                                             "messaging.destination.name": topic,
                                             "message_type": command.type.value}, SpanKind.PRODUCER):
            await producer.send(topic, command.encode(), key=command.key, partition=partition)
            await producer.flush_within(SUBMIT_TIMEOUT_S)
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


def _accepted(command: Command) -> web.Response:
    order_id = command.snapshot.order_id
    body = {"order_id": order_id, "saga_id": command.saga_id, "command_id": command.command_id}
    return json_response(body, status=202, headers={"Location": f"/orders/{order_id}"})


@documented(body="OrderRequest", responses={202: ref("Accepted"), 400: ref("Error"), 413: ref("Error"), 503: SUBMIT_UNAVAILABLE}, headers={503: RETRY_AFTER})
async def create_order(request: web.Request) -> web.Response:
    """POST /orders — validate, publish an OrderCreate command; 202 with the new ids."""
    # the order's trace: the caller's traceparent, else a new one
    with tracing.server_span("POST /orders", request.headers, {"http.request.method": "POST",
                                                               "http.route": "/orders"}):
        response = await _create_order(request)
        tracing.describe(**{"http.response.status_code": response.status})
        return response


async def _create_order(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        order = parse_order_request(body)
    except ContractError as exc:
        return invalid(exc)
    refused = admission.refusal(request)  # 503 + Retry-After above KAFKA_SAGA_MAX_BACKLOG
    if refused is not None:
        return refused
    command = new_order_command(order["user"], order["item"], order["quantity"],
                                read_model(request).orders.catalog, attributes=order["attributes"],
                                price_cents=order["price_cents"])
    tracing.describe(order_id=command.snapshot.order_id, saga_id=command.saga_id,
                     user=command.snapshot.user)
    failed = await _publish(request, command)
    if failed is not None:
        return failed
    log.info("order submitted", order_id=command.snapshot.order_id, saga_id=command.saga_id)
    return _accepted(command)


@documented(body="CancelRequest", admin=True, responses={202: ref("Accepted"), 404: ref("Error"), 409: ref("Error")})
async def cancel_order(request: web.Request) -> web.Response:
    """POST /orders/{order_id}/cancel — publish an OrderReject for the order's saga."""
    require_admin(request)
    order_id = request.match_info["order_id"]
    body = await json_body(request)
    try:
        reason = parse_cancel_request(body)
    except ContractError as exc:
        return invalid(exc)
    view = read_model(request).orders
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
    # to the saga's own partition (its command's, named by its events) on orders.replies;
    # by key on orders.commands only for a saga whose partition the view was not told
    with tracing.server_span("POST /orders/{order_id}/cancel", request.headers,
                             {"http.request.method": "POST", "http.route": "/orders/{order_id}/cancel",
                              "order_id": order_id, "saga_id": saga_id}):
        failed = await _publish(request, command, view.partition(order_id))
    if failed is not None:
        return failed
    log.info("order cancel requested", order_id=order_id, saga_id=saga_id, reason=reason)
    return _accepted(command)
