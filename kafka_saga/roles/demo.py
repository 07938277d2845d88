"""demo: the order generator — steady OrderCreate commands for ``make run``.

Templates cycle through users ``client01``… and drinks (espresso, cappuccino, latte…);
a few orders carry attributes that exercise every saga path (a declined payment, transient
gateway errors, an inventory refusal, a wrong price that the tracker catches). Rate and
count come from ``DEMO_RATE``/``DEMO_COUNT`` or the role list (``demo: {rate: 5, count: 100}``).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from .. import logs
from ..bus.loop import wait_unless_stopped
from ..core.catalog import Catalog
from ..core.contracts import Command
from ..core.submission import new_order_command
from .base import Role

log = logs.get("demo")
USERS = tuple(f"client{i:02d}" for i in range(1, 11))
ITEMS = ("espresso", "cappuccino", "latte", "americano", "mocha", "flat-white")
# (share of orders, attributes, price override factor)
VARIANTS: tuple[tuple[float, dict[str, str], float | None], ...] = (
    (0.04, {"payment": "decline"}, None),
    (0.06, {"payment_errors": "2"}, None),
    (0.02, {"payment_errors": "9"}, None),
    (0.03, {"inventory": "unavailable"}, None),
    (0.03, {}, 0.5),  # a wrong price: the tracker rejects it
)


def demo_order(index: int, catalog: Catalog, rng: random.Random) -> Command:
    """The ``index``-th demo order (deterministic for a given random generator)."""
    user = USERS[index % len(USERS)]
    item = ITEMS[rng.randrange(len(ITEMS))]
    quantity = rng.randint(1, 3)
    attributes: dict[str, str] = {"source": "demo"}
    price: int | None = None
    roll = rng.random()
    for share, extra, factor in VARIANTS:
        if roll < share:
            attributes.update(extra)
            if factor is not None:
                price = int((catalog.price(item, quantity) or 0) * factor)
            break
        roll -= share
    command = new_order_command(user, item, quantity, catalog, attributes=attributes, price_cents=price)
    if attributes.get("inventory") == "unavailable":
        command.snapshot.inventory_available = False
    command.snapshot.sequence = index
    return command


class DemoRole(Role):
    name = "demo"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        self.rate = float(extra.get("rate", ctx.settings.demo_rate))
        self.count = int(extra.get("count", ctx.settings.demo_count))
        self.sent = int(ctx.shared.get("demo_sent", 0))  # a restart carries on, not over
        self.rng = random.Random(int(extra.get("seed", 7)) + self.sent)
        self.catalog = Catalog.load(ctx.settings.catalog_path)

    async def run(self, stop: asyncio.Event) -> None:
        bus = self.ctx.bus
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        log.info("demo generator started", rate_per_s=self.rate, count=self.count or "unlimited")
        next_at = time.monotonic()
        while not stop.is_set() and (not self.count or self.sent < self.count):
            command = demo_order(self.sent, self.catalog, self.rng)
            await bus.producer.send(bus.topics.commands, command.encode(), command.key)
            self.sent += 1
            self.ctx.shared["demo_sent"] = self.sent
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await wait_unless_stopped(stop, delay)
            if self.sent % 100 == 0:
                await bus.producer.flush()
                log.info("demo orders submitted", sent=self.sent)
        await bus.producer.flush()
        log.info("demo generator finished", sent=self.sent)
        await stop.wait()

    def health(self) -> dict[str, Any]:
        return {"sent": self.sent, "rate_per_s": self.rate}
