"""State stores' building blocks: the journal and the retention window (kafka_saga.core.store)."""

from __future__ import annotations

import random

import pytest

from kafka_saga.core.store import Journal, Retention


def test_journal_keeps_the_last_write_of_each_key_in_last_write_order():
    journal = Journal()
    journal.put("a", b"1")
    journal.put("b", b"2")
    journal.put("a", b"3")
    journal.delete("b")
    journal.put("c", b"4")
    assert len(journal) == 3
    assert list(journal.take().items()) == [("a", b"3"), ("b", None), ("c", b"4")]
    assert len(journal) == 0 and journal.take() == {}


def test_retention_forgets_the_oldest_settled_first_and_a_settle_again_moves_a_key_last():
    window = Retention(2)
    assert window.settle("a") == [] and window.settle("b") == []
    assert window.settle("a") == []  # a again: b is now the oldest
    assert window.settle("c") == ["b"]
    assert ("a" in window, "b" in window, len(window)) == (True, False, 2)
    window.discard("a")
    assert window.settle("d") == [] and window.settle("e") == ["c"]
    assert Retention(0).settle("x") == ["x"] and Retention(-3).limit == 0


class Model:
    """The window as a list, slowly."""

    def __init__(self, limit: int) -> None:
        self.limit, self.keys = limit, list[str]()

    def settle(self, key: str) -> list[str]:
        if key in self.keys:
            self.keys.remove(key)
        self.keys.append(key)
        gone = self.keys[:max(0, len(self.keys) - self.limit)]
        del self.keys[:len(gone)]
        return gone

    def discard(self, key: str) -> None:
        if key in self.keys:
            self.keys.remove(key)


@pytest.mark.parametrize("seed", range(20))
def test_retention_behaves_like_a_list_of_keys(seed):
    rng = random.Random(seed)
    limit = rng.choice((0, 1, 3, 10, 40))
    window, model = Retention(limit), Model(limit)
    keys = [f"k{i}" for i in range(rng.choice((5, 30, 200)))]
    for _ in range(3000):
        key = rng.choice(keys)
        if rng.random() < 0.1:
            window.discard(key)
            model.discard(key)
        else:
            assert window.settle(key) == model.settle(key)
        assert len(window) == len(model.keys)
    assert all(key in window for key in model.keys)


def test_retention_stays_small_when_the_same_keys_settle_again_and_again():
    window = Retention(1000)
    for i in range(100_000):
        window.settle(f"k{i % 10}")
        if i % 7 == 0:
            window.discard(f"k{i % 10}")
    assert len(window) <= 10 and len(window._order) <= 10
