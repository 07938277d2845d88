"""Snapshots of the state stores: what ``entries()`` lists (what the keeper re-writes to move a
restore point) rebuilds a store that behaves like the original from then on, for every store."""

from __future__ import annotations

import random

import pytest

from kafka_saga.core.fold import AggregateFold
from kafka_saga.core.inventory import InventoryLedger
from kafka_saga.core.rules import TrackerRules
from tests.unit.test_fold_store import as_dicts
from tests.unit.test_fold_store import random_stream as fold_stream
from tests.unit.test_store_ledger import CATALOG as LEDGER_CATALOG
from tests.unit.test_store_ledger import random_requests
from tests.unit.test_store_rules import CATALOG as RULES_CATALOG
from tests.unit.test_store_rules import random_stream as rules_stream
from tests.unit.test_store_rules import violations


def snapshot_of(store, fresh):
    """``fresh`` loaded from ``store``'s snapshot; the snapshot is the journal's encoding."""
    entries = list(store.entries())
    assert len({key for key, _ in entries}) == len(entries)  # one entry per key
    for key, value in entries:
        fresh.load(key, value)
    assert len(fresh.journal) == 0
    return fresh


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("window", [3, 10_000])
def test_a_ledger_from_its_snapshot_decides_like_the_original(seed, window):
    rng = random.Random(seed)
    requests = random_requests(rng, 300)
    split = rng.randrange(1, len(requests))
    original = InventoryLedger(LEDGER_CATALOG, window)
    for request in requests[:split]:
        original.apply(request)
    copy = snapshot_of(original, InventoryLedger(LEDGER_CATALOG, window))
    assert (copy.available, copy.reserved, copy.released, copy.refused) == (
        original.available, original.reserved, original.released, original.refused)
    for request in requests[split:]:
        assert copy.apply(request) == original.apply(request)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("velocity, max_sagas", [(0, 5), (0, 10_000), (2, 25)])
def test_rules_from_their_snapshot_find_what_the_original_finds(seed, velocity, max_sagas):
    rng = random.Random(seed * 3 + velocity)
    events = rules_stream(rng, 60)
    split = rng.randrange(1, len(events))
    original = TrackerRules(RULES_CATALOG, velocity, max_sagas=max_sagas)
    found = [violations(original, event) for event in events[:split]]
    copy = snapshot_of(original, TrackerRules(RULES_CATALOG, velocity, max_sagas=max_sagas))
    assert len(copy) == len(original)
    for event in events[split:]:
        found.append(violations(original, event))
        assert violations(copy, event) == found[-1]
    assert any(found)


@pytest.mark.parametrize("seed", range(8))
def test_a_fold_from_its_snapshot_folds_like_the_original(seed):
    rng = random.Random(seed)
    window, open_max = rng.choice((1, 5, 80, 10_000)), rng.choice((1, 3, 10_000))
    stream = fold_stream(seed)
    split = rng.randrange(1, len(stream))
    original = AggregateFold(open_max=open_max, window=window)
    for event in stream[:split]:
        original.apply(event)
    copy = snapshot_of(original, AggregateFold(open_max=open_max, window=window))
    assert as_dicts(copy) == as_dicts(original)
    orders = {e.snapshot.order_id for e in stream}
    assert {o: copy.facts(o) for o in orders} == {o: original.facts(o) for o in orders}
    for event in stream[split:]:
        assert copy.apply(event) == original.apply(event)
    assert as_dicts(copy) == as_dicts(original)
