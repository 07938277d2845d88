"""A simulated, pluggable payment gateway (the saga's external participant).

Driven by the order's attributes, for demos and tests:
``payment=decline`` refuses the payment; ``payment_errors=N`` fails the first N attempts
transiently; ``payment_delay_ms=N`` answers slowly (a step deadline can then fire). A demo
failure rate adds random transient errors. Calls carry an idempotency key (the saga id),
as a real gateway's would.
"""

from __future__ import annotations

import asyncio
import random
from typing import Protocol

from .contracts import Snapshot

APPROVED, DECLINED = "approved", "declined"


class TransientPaymentError(Exception):
    """The gateway failed in a way that a retry may fix."""


class PaymentGateway(Protocol):
    async def charge(self, key: str, snapshot: Snapshot) -> str: ...
    async def refund(self, key: str, snapshot: Snapshot) -> None: ...
    def forget(self, key: str) -> None: ...


def _attr_int(snapshot: Snapshot, name: str) -> int:
    try:
        return max(0, int(snapshot.attributes.get(name, "0")))
    except ValueError:
        return 0


class SimulatedGateway:
    def __init__(self, failure_rate: float = 0.0, seed: int | None = None) -> None:
        self.failure_rate = failure_rate
        self.random = random.Random(seed)
        self.attempts: dict[str, int] = {}
        self.charged: set[str] = set()
        self.refunded: set[str] = set()

    async def charge(self, key: str, snapshot: Snapshot) -> str:
        attempt = self.attempts[key] = self.attempts.get(key, 0) + 1
        delay_ms = _attr_int(snapshot, "payment_delay_ms")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if snapshot.attributes.get("payment") == "decline":
            return DECLINED
        if attempt <= _attr_int(snapshot, "payment_errors"):
            raise TransientPaymentError(f"gateway unavailable (attempt {attempt})")
        if self.failure_rate and self.random.random() < self.failure_rate:
            raise TransientPaymentError(f"random gateway failure (attempt {attempt})")
        self.charged.add(key)
        return APPROVED

    async def refund(self, key: str, snapshot: Snapshot) -> None:
        self.refunded.add(key)  # idempotent by key

    def forget(self, key: str) -> None:
        self.attempts.pop(key, None)
        self.charged.discard(key)
        self.refunded.discard(key)
