"""The inventory ledger, pure: stock per item, reservations per saga (kafka_saga.core.inventory)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from kafka_saga.core.catalog import Catalog, CatalogItem
from kafka_saga.core.contracts import InventoryRequest, new_id
from kafka_saga.core.inventory import Decision, InventoryLedger

STOCK = {"widget": 5, "gadget": 2, "gizmo": 0}
CATALOG = Catalog({name: CatalogItem(100, stock) for name, stock in STOCK.items()})
_ids = iter(range(10**9))


def req(saga: str, action: str = "reserve", item: str = "widget", quantity: int = 1,
        request_id: str | None = None) -> InventoryRequest:
    return InventoryRequest(request_id or f"r{next(_ids)}", saga, f"order-{saga}", item,
                            quantity, action)


def reserve(ledger: InventoryLedger, saga: str, item: str = "widget", quantity: int = 1) -> Decision:
    return ledger.apply(req(saga, "reserve", item, quantity))


def release(ledger: InventoryLedger, saga: str, item: str = "widget", quantity: int = 1) -> Decision:
    return ledger.apply(req(saga, "release", item, quantity))


@pytest.fixture
def ledger() -> InventoryLedger:
    return InventoryLedger(CATALOG)


def test_stock_starts_from_the_catalog_lazily(ledger: InventoryLedger) -> None:
    assert ledger.available == {}
    assert ledger.stock("widget") == 5 and ledger.available == {"widget": 5}
    assert ledger.stock("unicorn") == 0  # unknown items have no stock


def test_reserve_within_stock(ledger: InventoryLedger) -> None:
    assert reserve(ledger, "s1", quantity=3) == Decision(True, "reserved", True)
    assert ledger.available["widget"] == 2
    assert ledger.reserved == {"s1": ("widget", 3)}
    assert reserve(ledger, "s2", quantity=2).approved
    assert ledger.available["widget"] == 0


def test_reserve_touches_only_its_item(ledger: InventoryLedger) -> None:
    reserve(ledger, "s1", item="gadget", quantity=2)
    assert ledger.stock("gadget") == 0 and ledger.stock("widget") == 5


@pytest.mark.parametrize("item, quantity, stock", [("widget", 6, 5), ("gadget", 3, 2),
                                                   ("gizmo", 1, 0)])
def test_reserve_more_than_stock_moves_nothing(ledger: InventoryLedger, item: str,
                                               quantity: int, stock: int) -> None:
    decision = reserve(ledger, "s1", item=item, quantity=quantity)
    assert (decision.approved, decision.changed) == (False, False)
    assert "insufficient stock" in decision.reason
    assert f"{stock} left, {quantity} asked" in decision.reason
    assert ledger.stock(item) == stock and ledger.reserved == {}


def test_reserve_after_stock_ran_out(ledger: InventoryLedger) -> None:
    assert reserve(ledger, "s1", quantity=5).approved
    decision = reserve(ledger, "s2", quantity=1)
    assert not decision.approved and "0 left, 1 asked" in decision.reason
    assert ledger.available["widget"] == 0 and "s2" not in ledger.reserved


def test_duplicate_reserve_gives_the_same_answer_without_moving_stock(ledger: InventoryLedger) -> None:
    first = req("s1", quantity=2)
    assert ledger.apply(first) == Decision(True, "reserved", True)
    again = ledger.apply(first)
    assert (again.approved, again.changed) == (True, False)
    retry = reserve(ledger, "s1", quantity=2)  # a new request id, the same saga
    assert (retry.approved, retry.changed) == (True, False)
    assert reserve(ledger, "s1", quantity=4).approved  # keyed by saga, not by quantity
    assert ledger.available["widget"] == 3
    assert ledger.reserved == {"s1": ("widget", 2)}


def test_duplicate_of_a_refused_reserve_keeps_its_answer(ledger: InventoryLedger) -> None:
    reserve(ledger, "holder", quantity=5)
    attempt = req("late", quantity=3)
    assert not ledger.apply(attempt).approved  # the orchestrator rejects the saga
    release(ledger, "holder")
    again = ledger.apply(attempt)  # the same request, redelivered (orchestrator retry)
    assert (again.approved, again.changed) == (False, False)
    assert ledger.available["widget"] == 5


def test_unknown_item(ledger: InventoryLedger) -> None:
    decision = reserve(ledger, "s1", item="unicorn")
    assert decision == Decision(False, "unknown item 'unicorn'", False)
    assert ledger.available == {} and ledger.reserved == {}


def test_release_returns_stock_once(ledger: InventoryLedger) -> None:
    reserve(ledger, "s1", quantity=4)
    assert release(ledger, "s1", quantity=4) == Decision(True, "released", True)
    assert ledger.available["widget"] == 5 and ledger.released == {"s1"}
    duplicate = release(ledger, "s1", quantity=4)
    assert duplicate == Decision(True, "nothing to release", False)
    assert ledger.available["widget"] == 5


def test_release_uses_the_reserved_quantity_not_the_requested_one(ledger: InventoryLedger) -> None:
    reserve(ledger, "s1", quantity=2)
    release(ledger, "s1", item="gadget", quantity=99)
    assert ledger.available == {"widget": 5}


def test_release_of_an_unknown_saga_is_harmless(ledger: InventoryLedger) -> None:
    reserve(ledger, "s1", quantity=2)
    assert release(ledger, "ghost", quantity=3) == Decision(True, "nothing to release", False)
    assert ledger.available == {"widget": 3}
    assert ledger.released == set() and ledger.reserved == {"s1": ("widget", 2)}


def test_reserve_after_release_of_the_same_saga_is_refused(ledger: InventoryLedger) -> None:
    # The saga gave its stock back (compensated); a late or redelivered reserve must neither
    # claim the old reservation nor take the stock again. The refusal's reason currently
    # reads "already reserved", which is misleading (see the report) and is not pinned here.
    reserve(ledger, "s1", quantity=2)
    release(ledger, "s1")
    decision = reserve(ledger, "s1", quantity=2)
    assert (decision.approved, decision.changed) == (False, False)
    assert ledger.available["widget"] == 5
    assert release(ledger, "s1").changed is False


def test_release_before_any_reserve_does_not_block_a_later_reserve(ledger: InventoryLedger) -> None:
    release(ledger, "s1")
    assert reserve(ledger, "s1", quantity=1) == Decision(True, "reserved", True)


def random_log(rng: random.Random, size: int) -> list[InventoryRequest]:
    log: list[InventoryRequest] = []
    sagas = [f"s{i}" for i in range(25)]
    for _ in range(size):
        if log and rng.random() < 0.15:
            log.append(rng.choice(log))  # redelivery
            continue
        saga = rng.choice(sagas)
        item = rng.choice((*STOCK, "unicorn"))
        action = "release" if rng.random() < 0.3 else "reserve"
        log.append(req(saga, action, item, rng.randint(0, 4)))
    return log


def fold(log: list[InventoryRequest]) -> tuple[InventoryLedger, list[Decision]]:
    ledger = InventoryLedger(CATALOG)
    return ledger, [ledger.apply(request) for request in log]


@pytest.mark.parametrize("seed", range(10))
def test_folding_the_same_log_twice_is_deterministic(seed: int) -> None:
    log = random_log(random.Random(seed), 300)
    first, decisions = fold(log)
    second, replayed = fold(log)
    assert first.available == second.available
    assert first.reserved == second.reserved and first.released == second.released
    assert decisions == replayed
    assert any(d.changed for d in decisions) and any(not d.approved for d in decisions)


@pytest.mark.parametrize("seed", range(10))
def test_stock_is_conserved(seed: int) -> None:
    ledger, _ = fold(random_log(random.Random(100 + seed), 300))
    held: Counter[str] = Counter()
    for saga, (item, quantity) in ledger.reserved.items():
        if saga not in ledger.released:
            held[item] += quantity
    for item, stock in STOCK.items():
        assert ledger.stock(item) >= 0
        assert ledger.stock(item) + held[item] == stock
    assert "unicorn" not in ledger.available
    assert ledger.released <= set(ledger.reserved)


@pytest.mark.parametrize("seed", range(3))
def test_canonical_saga_ids_get_the_same_decisions(seed: int) -> None:
    log = random_log(random.Random(seed), 300)
    ids = {f"s{i}": new_id() for i in range(25)}
    odd_ledger, odd_decisions = fold(log)
    ledger, decisions = fold([replace(r, saga_id=ids[r.saga_id]) for r in log])
    assert decisions == odd_decisions and ledger.available == odd_ledger.available
    assert ledger.reserved == {ids[s]: held for s, held in odd_ledger.reserved.items()}
    assert ledger.released == {ids[s] for s in odd_ledger.released}
    assert ledger.refused == {ids[s]: reason for s, reason in odd_ledger.refused.items()}
