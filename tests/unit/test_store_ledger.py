"""The inventory ledger as a state store: its journal, its changelog, its window (core.inventory)."""

from __future__ import annotations

import random

import pytest

from kafka_saga.core.catalog import Catalog, CatalogItem
from kafka_saga.core.contracts import InventoryRequest, new_id
from kafka_saga.core.inventory import Decision, InventoryLedger
from kafka_saga.core.store import DEFAULT_WINDOW, Store
from tests.support.changelog import Changelog

STOCK = {"widget": 5, "gadget": 2, "big box": 40}
CATALOG = Catalog({name: CatalogItem(100, stock) for name, stock in STOCK.items()})


def req(saga: str, action: str = "reserve", item: str = "widget", quantity: int = 1) -> InventoryRequest:
    return InventoryRequest(new_id(), saga, f"order-{saga}", item, quantity, action)


def reserve(ledger: InventoryLedger, saga: str, item: str = "widget", quantity: int = 1) -> Decision:
    return ledger.apply(req(saga, "reserve", item, quantity))


def release(ledger: InventoryLedger, saga: str) -> Decision:
    return ledger.apply(req(saga, "release"))


def restored(ledger: InventoryLedger, window: int = DEFAULT_WINDOW) -> InventoryLedger:
    changelog = Changelog()
    changelog.write(ledger)
    return changelog.restore(InventoryLedger(CATALOG, window))


def test_the_ledger_is_a_store_with_the_window_by_default():
    ledger = InventoryLedger(CATALOG)
    assert isinstance(ledger, Store) and len(ledger.journal) == 0
    for i in range(DEFAULT_WINDOW + 5):
        reserve(ledger, f"s{i}", "big box", 0)
    assert len(ledger) == DEFAULT_WINDOW and "s4" not in ledger.reserved and "s5" in ledger.reserved


def test_each_answer_writes_the_stock_it_moved_and_the_saga():
    ledger = InventoryLedger(CATALOG)
    reserve(ledger, "s1", quantity=4)
    assert ledger.journal.take() == {"i:widget": b"1", "s:s1": b"R4 widget"}
    reserve(ledger, "s2", quantity=2)
    assert ledger.journal.take() == {"s:s2": b"Finsufficient stock: 1 left, 2 asked"}
    reserve(ledger, "s3", "unicorn")
    assert ledger.journal.take() == {"s:s3": b"Funknown item 'unicorn'"}
    reserve(ledger, "s4", "big box", 3)  # an item's name is the rest of the value
    assert ledger.journal.take() == {"i:big box": b"37", "s:s4": b"R3 big box"}
    assert release(ledger, "s1") == Decision(True, "released", True)
    assert ledger.journal.take() == {"i:widget": b"5", "s:s1": b"X4 widget"}


def test_repeats_write_nothing():
    ledger = InventoryLedger(CATALOG)
    reserve(ledger, "s1")
    reserve(ledger, "s2", quantity=9)
    release(ledger, "s1")
    ledger.journal.take()
    assert [reserve(ledger, "s1").reason, reserve(ledger, "s2").approved,
            release(ledger, "s1").reason, release(ledger, "ghost").reason] == [
        "already released", False, "nothing to release", "nothing to release"]
    assert ledger.journal.take() == {}


def test_an_item_first_looked_at_is_written_with_its_catalog_stock():
    ledger = InventoryLedger(CATALOG)
    assert ledger.stock("gadget") == 2
    changelog = Changelog()
    changelog.write(ledger)
    assert changelog.entries == {"i:gadget": b"2"}
    ledger.stock("gadget")
    assert len(ledger.journal) == 0
    # the stock is the ledger's from then on, whatever the catalog says after a restart
    restocked = Catalog({"gadget": CatalogItem(100, 9)})
    assert changelog.restore(InventoryLedger(restocked)).stock("gadget") == 2
    assert InventoryLedger(restocked).stock("gadget") == 9


def test_a_restore_gives_back_the_stock_and_every_answer():
    ledger = InventoryLedger(CATALOG)
    canonical = new_id()
    reserve(ledger, canonical, quantity=2)
    reserve(ledger, "held", "gadget", 2)
    reserve(ledger, "refused", "gadget", 1)
    reserve(ledger, "released", "big box", 10)
    release(ledger, "released")
    copy = restored(ledger)
    assert copy.available == ledger.available == {"widget": 3, "gadget": 0, "big box": 40}
    assert copy.reserved == ledger.reserved and copy.released == {"released"}
    assert copy.refused == ledger.refused == {"refused": "insufficient stock: 0 left, 1 asked"}
    assert len(copy) == 4 and len(copy.journal) == 0
    # a reservation released before the restore gives nothing back again
    assert release(copy, "released") == Decision(True, "nothing to release", False)
    assert reserve(copy, "released", "big box", 10) == Decision(False, "already released", False)
    assert release(copy, canonical) == Decision(True, "released", True)
    assert copy.available["widget"] == 5


def test_the_oldest_settled_saga_leaves_the_window_and_is_tombstoned():
    ledger = InventoryLedger(CATALOG, window=2)
    reserve(ledger, "a")
    reserve(ledger, "b", quantity=9)  # refused: settled too
    release(ledger, "a")  # settles again: now the newest
    ledger.journal.take()
    reserve(ledger, "c")
    assert ledger.journal.take() == {"i:widget": b"4", "s:c": b"R1 widget", "s:b": None}
    assert ledger.released == {"a"} and set(ledger.refused) == set()
    assert release(ledger, "a").changed is False  # still within the window
    reserve(ledger, "d")
    assert ledger.journal.take() == {"i:widget": b"3", "s:d": b"R1 widget", "s:a": None}
    # the documented limit: a saga older than the window is answered as new
    assert reserve(ledger, "a") == Decision(True, "reserved", True)


def test_a_window_of_zero_keeps_no_saga():
    ledger = InventoryLedger(CATALOG, window=0)
    reserve(ledger, "a")
    assert len(ledger) == 0 and ledger.journal.take() == {"i:widget": b"4", "s:a": None}


def test_a_smaller_window_at_restore_keeps_the_newest():
    ledger = InventoryLedger(CATALOG)
    for saga in "abcde":
        reserve(ledger, saga, "big box")
    copy = restored(ledger, window=2)
    assert set(copy.reserved) == {"d", "e"} and len(copy.journal) == 0


@pytest.mark.parametrize("key, value", [("x:1", b"1"), ("s:1", b"Q1 widget"), ("s:1", b"")])
def test_a_foreign_entry_is_refused(key, value):
    with pytest.raises(ValueError):
        InventoryLedger(CATALOG).load(key, value)


def test_the_journal_holds_one_entry_per_key_changed_between_takes():
    ledger = InventoryLedger(CATALOG, window=3)
    for i in range(1000):
        saga = f"s{i % 7}"
        ledger.apply(req(saga, "release" if i % 2 else "reserve", "big box", 1))
    keys = set(ledger.journal.entries)
    assert keys <= {"i:big box"} | {f"s:s{i}" for i in range(7)} and len(ledger.journal) == len(keys)


def random_requests(rng: random.Random, size: int) -> list[InventoryRequest]:
    """New sagas keep coming (one every few requests), older ones come back, some repeat."""
    out: list[InventoryRequest] = []
    names: list[str] = []
    for step in range(size):
        if out and rng.random() < 0.1:
            out.append(rng.choice(out))  # redelivery
            continue
        while len(names) <= step // 4:
            names.append(new_id() if len(names) % 2 else f"s{len(names)}")
        saga = names[max(0, len(names) - 1 - int(rng.expovariate(1 / 6)))]
        action = "release" if rng.random() < 0.35 else "reserve"
        out.append(req(saga, action, rng.choice((*STOCK, "unicorn")), rng.randint(0, 4)))
    return out


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("window", [3, 8, DEFAULT_WINDOW])
def test_a_ledger_restored_at_any_point_decides_like_the_original(seed, window):
    """Random requests; the journal taken every few steps into a compacted changelog; a fresh
    ledger loaded from it at a random point then gets every later request like the original."""
    rng = random.Random(seed * 31 + window)
    requests = random_requests(rng, 400)
    split = rng.randrange(len(requests))
    original, changelog = InventoryLedger(CATALOG, window), Changelog()
    decisions = []
    for step, request in enumerate(requests[:split]):
        decisions.append(original.apply(request))
        if rng.random() < 0.4 or step == split - 1:
            changelog.write(original)
    copy_log = changelog.copy()
    copy = copy_log.restore(InventoryLedger(CATALOG, window))
    assert (copy.available, copy.reserved, copy.released, copy.refused) == (
        original.available, original.reserved, original.released, original.refused)
    for request in requests[split:]:
        decisions.append(original.apply(request))
        assert copy.apply(request) == decisions[-1]
        assert copy.available == original.available
        if rng.random() < 0.4:
            changelog.write(original)
            copy_log.write(copy)
    changelog.write(original)
    copy_log.write(copy)
    assert list(copy_log.entries.items()) == list(changelog.entries.items())
    assert len(original) == len(copy) <= window
    assert sum(key.startswith("s:") for key in changelog.entries) == len(original)
    assert any(d.changed for d in decisions) and not all(d.approved for d in decisions)
