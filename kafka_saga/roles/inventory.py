"""inventory: the saga's inventory participant, a role of its own.

Consumes reservation requests from ``orders.inventory`` (keyed by item: one owner per item,
so two processes never sell the same stock twice), decides with the pure
:class:`~kafka_saga.core.inventory.InventoryLedger`, and answers on ``orders.replies`` with
``InventoryReserved`` or ``InventoryRefused`` — command types of their own, so the
orchestrator tells an answer from a reject by its type. The answer goes to the partition the
request names in its ``reply-partition`` header (the partition of the saga's command), so it
reaches the orchestrator that owns the saga whatever partitioner the client used, and never
waits behind new orders. The ledger is a per-partition state store of the shared loop, restored
from ``orders.inventory.changelog`` when a partition is assigned, so stock survives restarts
and rebalances.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import logs
from ..bus.handling import Emit, PartitionStates
from ..bus.loop import Subscription
from ..core.catalog import Catalog
from ..core.contracts import (
    Command,
    CommandType,
    InventoryRequest,
    Snapshot,
    Step,
    reply_partition,
)
from ..core.inventory import InventoryLedger
from .base import Role

log = logs.get("inventory")
def answer(request: InventoryRequest, approved: bool, reason: str) -> Command:
    """The participant's answer to a reservation request."""
    return Command(
        command_id=f"inventory:{request.request_id}",
        saga_id=request.saga_id,
        type=CommandType.INVENTORY_RESERVED if approved else CommandType.INVENTORY_REFUSED,
        snapshot=Snapshot(order_id=request.order_id, user="", item=request.item,
                          quantity=request.quantity),
        step=Step.INVENTORY,
        metadata={"reason": reason},
    )


class InventoryRole(Role):
    name = "inventory"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.catalog = Catalog.load(ctx.settings.catalog_path)
        self.ledgers: PartitionStates[InventoryLedger] = PartitionStates(
            lambda _tp: InventoryLedger(self.catalog, window=ctx.settings.state_window))

    def handle(self, request: InventoryRequest, record: Any, ledger: InventoryLedger) -> list[Emit]:
        decision = ledger.apply(request)
        debug = logs.enabled(logging.DEBUG)  # the hot path: build the line only if written
        if request.action != "reserve":
            if debug:
                log.debug("stock released", order_id=request.order_id, saga_id=request.saga_id,
                          item=request.item, outcome=decision.reason)
            return []
        reply = answer(request, decision.approved, decision.reason)
        if debug:
            log.debug("stock reservation", order_id=request.order_id, saga_id=request.saga_id,
                      item=request.item, quantity=request.quantity, approved=decision.approved,
                      reason=decision.reason)
        return [Emit(self.ctx.bus.topics.replies, reply.encode(), reply.key,
                     partition=reply_partition(record.headers))]

    def stock(self) -> dict[str, int]:
        """Current stock of the items this process owns."""
        out: dict[str, int] = {}
        for ledger in self.ledgers.values():
            out.update(ledger.available)
        return out

    def subscriptions(self) -> list[Subscription]:
        return [self.subscription("inventory", InventoryRequest.decode, self.handle,
                                  state=self.ledgers)]

    def health(self) -> dict[str, Any]:
        return {"partitions": self.ledgers.partitions(), "stock": self.stock()}
