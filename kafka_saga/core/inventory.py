"""The inventory ledger: stock per item, reservations per saga. Pure, no I/O.

Its state is a fold of the reservation requests on ``orders.inventory`` (keyed by item,
so one owner per item): re-reading the log gives the same decisions in the same order,
which makes the stock durable across restarts without a separate store.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog
from .contracts import InventoryRequest


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    reason: str
    changed: bool  # True only when stock moved (a refusal or a duplicate moves nothing)


class InventoryLedger:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.available: dict[str, int] = {}
        self.reserved: dict[str, tuple[str, int]] = {}  # saga_id -> (item, quantity)
        self.released: set[str] = set()
        self.refused: dict[str, str] = {}  # saga_id -> reason: a repeat gets the same answer

    def stock(self, item: str) -> int:
        if item not in self.available:
            self.available[item] = self.catalog.initial_stock(item)
        return self.available[item]

    def apply(self, request: InventoryRequest) -> Decision:
        saga = request.saga_id
        if request.action == "reserve":
            if saga in self.released:
                return Decision(False, "already released", False)
            if saga in self.reserved:
                return Decision(True, "already reserved", False)
            if saga in self.refused:
                return Decision(False, self.refused[saga], False)
            stock = self.stock(request.item) if request.item in self.catalog else 0
            if request.item not in self.catalog:
                reason = f"unknown item {request.item!r}"
            elif request.quantity > stock:
                reason = f"insufficient stock: {stock} left, {request.quantity} asked"
            else:
                reason = ""
            if reason:
                self.refused[saga] = reason
                return Decision(False, reason, False)
            self.available[request.item] = stock - request.quantity
            self.reserved[saga] = (request.item, request.quantity)
            return Decision(True, "reserved", True)
        # release
        if saga not in self.reserved or saga in self.released:
            return Decision(True, "nothing to release", False)
        item, quantity = self.reserved[saga]
        self.available[item] = self.stock(item) + quantity
        self.released.add(saga)
        return Decision(True, "released", True)
