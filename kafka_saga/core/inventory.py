"""The inventory ledger: stock per item, reservations per saga. Pure, no I/O.

Its state is a fold of the reservation requests on ``orders.inventory`` (keyed by item,
so one owner per item): re-reading the log gives the same decisions in the same order,
which makes the stock durable across restarts without a separate store.

Every saga that asked is remembered (a repeated request gets the same answer; a late
release gives back what was taken), as one machine word in an
:class:`~kafka_saga.core.compact.IdTable`, ~25 bytes a saga:
``kind | quantity << 2 | item index << 22`` (reserved, released) or ``kind | reason index << 2``
(refused).
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import Catalog
from .compact import IdTable, Names
from .contracts import InventoryRequest

_RESERVED, _RELEASED, _REFUSED = 1, 2, 3
_QUANTITY_BITS = 20  # InventoryRequest.quantity <= 1_000_000


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    reason: str
    changed: bool  # True only when stock moved (a refusal or a duplicate moves nothing)


class InventoryLedger:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.available: dict[str, int] = {}
        self._sagas = IdTable(width=1)  # saga_id -> its packed word
        self._items = Names()
        self._reasons = Names()  # refusal reasons (a repeat gets the very same answer)

    def stock(self, item: str) -> int:
        if item not in self.available:
            self.available[item] = self.catalog.initial_stock(item)
        return self.available[item]

    def apply(self, request: InventoryRequest) -> Decision:
        saga = request.saga_id
        found = self._sagas.get(saga)
        word = found[0] if found else 0
        kind = word & 3
        if request.action == "reserve":
            if kind == _RELEASED:
                return Decision(False, "already released", False)
            if kind == _RESERVED:
                return Decision(True, "already reserved", False)
            if kind == _REFUSED:
                return Decision(False, self._reasons[word >> 2], False)
            stock = self.stock(request.item) if request.item in self.catalog else 0
            if request.item not in self.catalog:
                reason = f"unknown item {request.item!r}"
            elif request.quantity > stock:
                reason = f"insufficient stock: {stock} left, {request.quantity} asked"
            else:
                reason = ""
            if reason:
                self._sagas.put(saga, (_REFUSED | self._reasons.index(reason) << 2,))
                return Decision(False, reason, False)
            self.available[request.item] = stock - request.quantity
            self._sagas.put(saga, (_RESERVED | self._pack(request.item, request.quantity) << 2,))
            return Decision(True, "reserved", True)
        # release
        if kind != _RESERVED:
            return Decision(True, "nothing to release", False)
        item, quantity = self._unpack(word >> 2)
        self.available[item] = self.stock(item) + quantity
        self._sagas.put(saga, (word & ~3 | _RELEASED,))
        return Decision(True, "released", True)

    def _pack(self, item: str, quantity: int) -> int:
        return quantity | self._items.index(item) << _QUANTITY_BITS

    def _unpack(self, value: int) -> tuple[str, int]:
        return self._items[value >> _QUANTITY_BITS], value & ((1 << _QUANTITY_BITS) - 1)

    # --- views (copies, built on demand: for checks and tests) ---------------------------

    @property
    def reserved(self) -> dict[str, tuple[str, int]]:
        """``saga_id -> (item, quantity)`` of every reservation, released ones included."""
        return {saga: self._unpack(word >> 2) for saga, (word,) in self._sagas.items()
                if word & 3 in (_RESERVED, _RELEASED)}

    @property
    def released(self) -> set[str]:
        return {saga for saga, (word,) in self._sagas.items() if word & 3 == _RELEASED}

    @property
    def refused(self) -> dict[str, str]:
        """``saga_id -> reason``: a repeated request gets the same answer."""
        return {saga: self._reasons[word >> 2] for saga, (word,) in self._sagas.items()
                if word & 3 == _REFUSED}
