"""Order submission: validating a client's order request and building saga commands. Pure.

Used by the query API (``POST /orders``, ``POST /orders/{id}/cancel``) and the CLI, so every
entry point produces the same commands. Validation errors raise :class:`ContractError` with a
short stable ``reason`` code and a message naming the offending field.
"""

from __future__ import annotations

from typing import Any

from .catalog import Catalog
from .contracts import MAX_MONEY, ORDER_MAX_QUANTITY, Command, CommandType, Snapshot, Step, new_id
from .fields import ContractError, now_rfc3339

MAX_TEXT = 128
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 256
MAX_ATTRIBUTE_VALUE = 1024
MAX_REASON = 1024
ORDER_FIELDS = ("user", "item", "quantity", "attributes", "price_cents")
CANCEL_FIELDS = ("reason",)


BLANKS = " \t\r\n"  # what a text made only of is empty (as the OpenAPI document's pattern says)
TEXT_PATTERN = "[^ \\t\\r\\n]"  # the same, as a JSON Schema pattern: one character that is not blank


def blank(value: str) -> bool:
    """Whether ``value`` holds only spaces, tabs and line breaks (or nothing)."""
    return not value.strip(BLANKS)


def _invalid(message: str, reason: str = "invalid_field") -> ContractError:
    return ContractError(reason, message)


def _object(body: Any, what: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if type(body) is not dict:
        kind = "null" if body is None else type(body).__name__
        raise _invalid(f"{what}: expected a JSON object, got {kind}", "wrong_shape")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise _invalid(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; "
                       f"allowed: {', '.join(allowed)}", "unknown_field")
    return body


def _integer(value: Any, name: str) -> int:
    """An integer as JSON Schema counts one: ``14`` or ``14.0``, not ``true``, ``14.5`` or ``"14"``."""
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is not int:  # excludes bool, other floats and numeric strings
        raise _invalid(f"{name}: expected an integer, got {type(value).__name__}")
    return value


def _text(body: dict[str, Any], name: str, limit: int, what: str) -> str:
    if name not in body:
        raise _invalid(f"{what}.{name}: required field missing", "missing_field")
    value = body[name]
    if type(value) is not str:
        kind = "null" if value is None else type(value).__name__
        raise _invalid(f"{what}.{name}: expected a string, got {kind}")
    if blank(value):
        raise _invalid(f"{what}.{name}: must not be empty")
    if len(value) > limit:
        raise _invalid(f"{what}.{name}: longer than {limit} characters")
    return value


def parse_order_request(body: Any) -> dict[str, Any]:
    """Validate a ``POST /orders`` body; return ``{user, item, quantity, attributes, price_cents}``.

    ``price_cents`` is ``None`` when the client did not give one, or gave null (the catalog
    price applies); ``attributes`` null is no attributes.
    """
    what = "order"
    body = _object(body, what, ORDER_FIELDS)
    user = _text(body, "user", MAX_TEXT, what)
    item = _text(body, "item", MAX_TEXT, what)
    if "quantity" not in body:
        raise _invalid(f"{what}.quantity: required field missing", "missing_field")
    quantity = _integer(body["quantity"], f"{what}.quantity")
    if not 1 <= quantity <= ORDER_MAX_QUANTITY:
        raise _invalid(f"{what}.quantity: must be between 1 and {ORDER_MAX_QUANTITY}, got {quantity}")
    attributes = body.get("attributes")
    if attributes is None:
        attributes = {}
    elif type(attributes) is not dict:
        raise _invalid(f"{what}.attributes: expected an object of strings, "
                       f"got {type(attributes).__name__}")
    elif len(attributes) > MAX_ATTRIBUTES:
        raise _invalid(f"{what}.attributes: more than {MAX_ATTRIBUTES} entries")
    for key, value in attributes.items():
        if len(key) > MAX_ATTRIBUTE_KEY:
            raise _invalid(f"{what}.attributes: key longer than {MAX_ATTRIBUTE_KEY} characters")
        if type(value) is not str:
            raise _invalid(f"{what}.attributes.{key}: expected a string, got {type(value).__name__}")
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise _invalid(f"{what}.attributes.{key}: longer than {MAX_ATTRIBUTE_VALUE} characters")
    price = body.get("price_cents")
    if price is not None:
        price = _integer(price, f"{what}.price_cents")
        if not 0 <= price <= MAX_MONEY:
            raise _invalid(f"{what}.price_cents: must be between 0 and {MAX_MONEY}, got {price}")
    return {"user": user, "item": item, "quantity": quantity, "attributes": dict(attributes),
            "price_cents": price}


def parse_cancel_request(body: Any) -> str:
    """Validate a ``POST /orders/{id}/cancel`` body ``{"reason": str}``; return the reason."""
    body = _object(body, "cancel", CANCEL_FIELDS)
    return _text(body, "reason", MAX_REASON, "cancel")


def new_order_command(user: str, item: str, quantity: int, catalog: Catalog,
                      attributes: dict[str, str] | None = None, price_cents: int | None = None,
                      order_id: str | None = None, saga_id: str | None = None) -> Command:
    """The ``OrderCreate`` command starting a new saga (fresh ids unless given)."""
    if price_cents is None:
        price_cents = catalog.price(item, quantity) or 0
    snapshot = Snapshot(order_id=order_id or new_id(), user=user, item=item, quantity=quantity,
                        price_cents=price_cents, attributes=dict(attributes or {}))
    return Command(command_id=new_id(), saga_id=saga_id or new_id(), type=CommandType.ORDER_CREATE,
                   snapshot=snapshot, step=Step.VALIDATION, issued_at=now_rfc3339())


def reject_command(order_id: str, saga_id: str, snapshot: Snapshot, reason: str,
                   source: str, step: Step = Step.VALIDATION, *, command_id: str | None = None,
                   **metadata: str) -> Command:
    """The ``OrderReject`` command asking the orchestrator to cancel the saga ``saga_id``
    (the one builder: the API, the CLI and the tracker's rules). ``command_id`` defaults to a
    new one; ``metadata`` joins ``reason`` and ``source``."""
    if snapshot.order_id != order_id:
        raise _invalid(f"reject: snapshot is of order {snapshot.order_id!r}, not {order_id!r}")
    return Command(command_id=command_id or new_id(), saga_id=saga_id,
                   type=CommandType.ORDER_REJECT, snapshot=snapshot, step=step,
                   issued_at=now_rfc3339(), metadata={"reason": reason, "source": source, **metadata})


__all__ = ["new_order_command", "parse_cancel_request", "parse_order_request", "reject_command"]
