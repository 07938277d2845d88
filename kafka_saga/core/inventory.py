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
    changed: bool  # False for a duplicate request (same answer, nothing moved)


class InventoryLedger:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.available: dict[str, int] = {}
        self.reserved: dict[str, tuple[str, int]] = {}  # saga_id -> (item, quantity)
        self.released: set[str] = set()

    def stock(self, item: str) -> int:
        if item not in self.available:
            self.available[item] = self.catalog.initial_stock(item)
        return self.available[item]

    def apply(self, request: InventoryRequest) -> Decision:
        saga = request.saga_id
        if request.action == "reserve":
            if saga in self.reserved:
                return Decision(saga not in self.released, "already reserved", False)
            if request.item not in self.catalog:
                return Decision(False, f"unknown item {request.item!r}", False)
            stock = self.stock(request.item)
            if request.quantity > stock:
                return Decision(False, f"insufficient stock: {stock} left, {request.quantity} asked",
                                False)
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
