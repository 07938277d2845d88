"""The inventory ledger: stock per item, reservations per saga. Pure, no I/O.

:class:`InventoryLedger` is a :class:`~kafka_saga.core.store.Store`: the state of one
partition of ``orders.inventory`` (keyed by item, so one owner per item). Each change goes
to its journal, and a new owner restores the ledger from the compacted changelog
(:meth:`InventoryLedger.load`), not by re-reading the requests. Changelog entries (UTF-8):

* ``i:<item>`` -> the item's stock as a decimal, e.g. ``b"42"``: written when the item is
  first looked at (so a restore does not depend on the catalog's stock) and at each move;
* ``s:<saga_id>`` -> the saga's answer: ``b"R<quantity> <item>"`` (reserved),
  ``b"X<quantity> <item>"`` (released) or ``b"F<reason>"`` (refused).

A saga that asked is remembered (a repeated request gets the same answer; a late release
gives back what was taken, once) while it is in the :class:`~kafka_saga.core.store.Retention`
window: a saga settles when it is answered (the reservation of an approved order is never
released) and again when released; the oldest beyond ``window`` are forgotten and
tombstoned. In memory a saga is one machine word in an
:class:`~kafka_saga.core.compact.IdTable`: ``kind | quantity << 2 | item index << 22``
(reserved, released) or ``kind | reason index << 2`` (refused), the indexes being this
process's :class:`~kafka_saga.core.compact.Names`; with its id and place in the window, ~155
bytes a saga (for 32-hex-digit ids), at most ``window`` sagas.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .catalog import Catalog
from .compact import IdTable, Names
from .contracts import InventoryRequest
from .store import DEFAULT_WINDOW, Journal, Retention

_RESERVED, _RELEASED, _REFUSED = 1, 2, 3
_QUANTITY_BITS = 20  # InventoryRequest.quantity <= 1_000_000
_CODES = {b"R": _RESERVED, b"X": _RELEASED, b"F": _REFUSED}  # the changelog's saga kinds


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    reason: str
    changed: bool  # True only when stock moved (a refusal or a duplicate moves nothing)


class InventoryLedger:
    """The stock and the answered sagas of one partition; restores from its changelog."""

    def __init__(self, catalog: Catalog, window: int = DEFAULT_WINDOW) -> None:
        self.catalog = catalog
        self.available: dict[str, int] = {}
        self.journal = Journal()
        self._sagas = IdTable(width=1)  # saga_id -> its packed word
        self._settled = Retention(window)  # every saga in the table, oldest settled first
        self._items = Names()
        self._reasons = Names()  # refusal reasons (a repeat gets the very same answer)

    def __len__(self) -> int:
        """Sagas remembered."""
        return len(self._sagas)

    def stock(self, item: str) -> int:
        found = self.available.get(item)
        if found is None:
            found = self.available[item] = self.catalog.initial_stock(item)
            self.journal.put("i:" + item, b"%d" % found)
        return found

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
            item, quantity = request.item, request.quantity
            stock = self.stock(item) if item in self.catalog else 0
            if item not in self.catalog:
                reason = f"unknown item {item!r}"
            elif quantity > stock:
                reason = f"insufficient stock: {stock} left, {quantity} asked"
            else:
                reason = ""
            if reason:
                self._answer(saga, _REFUSED | self._reasons.index(reason) << 2,
                             b"F" + reason.encode())
                return Decision(False, reason, False)
            self._move(item, stock - quantity)
            self._answer(saga, _RESERVED | self._pack(item, quantity) << 2,
                         b"R%d %s" % (quantity, item.encode()))
            return Decision(True, "reserved", True)
        # release
        if kind != _RESERVED:
            return Decision(True, "nothing to release", False)
        item, quantity = self._unpack(word >> 2)
        self._move(item, self.stock(item) + quantity)
        self._answer(saga, word & ~3 | _RELEASED, b"X%d %s" % (quantity, item.encode()))
        return Decision(True, "released", True)

    def load(self, key: str, value: bytes) -> None:
        """Take back one changelog entry (see the module); writes nothing to the journal."""
        kind, _, name = key.partition(":")
        if kind == "i":
            self.available[name] = int(value)
        elif kind == "s":
            self._sagas.put(name, (self._word(value),))
            for gone in self._settled.settle(name):  # the window shrank since it was written
                self._sagas.pop(gone)
        else:
            raise ValueError(f"not an inventory ledger entry: {key!r}")

    def entries(self) -> Iterator[tuple[str, bytes]]:
        """Every live entry as the journal writes it (a snapshot): stock, then the sagas,
        oldest settled first."""
        for item, stock in list(self.available.items()):
            yield "i:" + item, b"%d" % stock
        for saga in self._settled:
            found = self._sagas.get(saga)
            if found is not None:
                yield "s:" + saga, self._value(found[0])

    def _value(self, word: int) -> bytes:
        """The changelog value of a packed saga word (the inverse of :meth:`_word`)."""
        kind = word & 3
        if kind == _REFUSED:
            return b"F" + self._reasons[word >> 2].encode()
        item, quantity = self._unpack(word >> 2)
        return b"%s%d %s" % (b"R" if kind == _RESERVED else b"X", quantity, item.encode())

    def _move(self, item: str, stock: int) -> None:
        self.available[item] = stock
        self.journal.put("i:" + item, b"%d" % stock)

    def _answer(self, saga: str, word: int, value: bytes) -> None:
        """Record the saga's answer, settle it, forget (and tombstone) what left the window."""
        self._sagas.put(saga, (word,))
        journal = self.journal
        journal.put("s:" + saga, value)
        for gone in self._settled.settle(saga):
            self._sagas.pop(gone)
            journal.delete("s:" + gone)

    def _word(self, value: bytes) -> int:
        """The packed word of a changelog value ``R|X<quantity> <item>`` or ``F<reason>``."""
        kind = _CODES.get(value[:1])
        if kind is None:
            raise ValueError(f"not an inventory ledger answer: {value!r}")
        if kind == _REFUSED:
            return kind | self._reasons.index(value[1:].decode()) << 2
        quantity, _, item = value[1:].partition(b" ")
        return kind | self._pack(item.decode(), int(quantity)) << 2

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
