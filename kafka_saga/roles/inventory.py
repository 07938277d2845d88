"""The inventory participant of the saga (runs inside the orchestrator role).

Consumes reservation requests from ``orders.inventory`` (keyed by item: one owner per item,
so two processes never sell the same stock twice), decides with the pure
:class:`~kafka_saga.core.inventory.InventoryLedger`, and answers on ``orders.replies``
with ``OrderApprove``/``OrderReject`` at step Inventory (``metadata.source = inventory``),
to the partition the request names in its ``reply-partition`` header (the partition of the
saga's command), so the answer reaches the orchestrator that owns the saga whatever
partitioner the client used, and never waits behind new orders. The ledger is rebuilt
from the request log when a partition is assigned, so stock survives restarts.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from .. import logs
from ..bus.client import Bus
from ..bus.loop import Subscription
from ..core.catalog import Catalog
from ..core.contracts import Command, CommandType, InventoryRequest, Snapshot, Step, headers_dict
from ..core.inventory import InventoryLedger

log = logs.get("inventory")
SOURCE = "inventory"
REPLY_PARTITION = "reply-partition"  # request header: where the answer goes on orders.replies


def reply_partition(record: Any) -> int | None:
    """The partition a request asks its answer to go to (None: by key)."""
    raw = headers_dict(record.headers).get(REPLY_PARTITION, "")
    return int(raw) if raw.isdigit() else None


class InventoryParticipant:
    def __init__(self, bus: Bus, catalog: Catalog) -> None:
        self.bus = bus
        self.catalog = catalog
        self.ledgers: dict[int, InventoryLedger] = {}

    def _ledger(self, partition: int) -> InventoryLedger:
        ledger = self.ledgers.get(partition)
        if ledger is None:
            ledger = self.ledgers[partition] = InventoryLedger(self.catalog)
        return ledger

    async def restore(self, request: InventoryRequest, record: Any) -> None:
        self._ledger(record.partition).apply(request)

    async def handle(self, request: InventoryRequest, record: Any) -> None:
        decision = self._ledger(record.partition).apply(request)
        if request.action != "reserve":
            log.debug("stock released", order_id=request.order_id, saga_id=request.saga_id,
                     item=request.item, outcome=decision.reason)
            return
        reply = Command(
            command_id=f"inventory:{request.request_id}",
            saga_id=request.saga_id,
            type=CommandType.ORDER_APPROVE if decision.approved else CommandType.ORDER_REJECT,
            snapshot=Snapshot(order_id=request.order_id, user="", item=request.item,
                              quantity=request.quantity),
            step=Step.INVENTORY,
            metadata={"source": SOURCE, "reason": decision.reason},
        )
        log.debug("stock reservation", order_id=request.order_id, saga_id=request.saga_id,
                 item=request.item, quantity=request.quantity, approved=decision.approved,
                 reason=decision.reason)
        await self.bus.producer.send(self.bus.topics.replies, reply.encode(), reply.key,
                                     partition=reply_partition(record))

    async def assigned(self, _consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        for tp in committed:
            self.ledgers[tp.partition] = InventoryLedger(self.catalog)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.ledgers.pop(tp.partition, None)

    def stock(self) -> dict[str, int]:
        """Current stock of the items this process owns."""
        out: dict[str, int] = {}
        for ledger in self.ledgers.values():
            out.update(ledger.available)
        return out

    def subscription(self) -> Subscription:
        topics = self.bus.topics
        return Subscription("orchestrator.inventory", (topics.inventory,),
                            topics.group("orchestrator.inventory"), InventoryRequest.decode,
                            self.handle, restore=self.restore, on_assigned=self.assigned,
                            on_revoked=self.revoked)
