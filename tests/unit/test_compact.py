"""Compact per-order memory (kafka_saga.core.compact): exact id <-> number maps and tables."""

from __future__ import annotations

import random

import pytest

from kafka_saga.core.compact import IdRefs, IdTable, Names, hex_id, id_key, id_text, key_id
from kafka_saga.core.contracts import new_id


def test_canonical_ids_round_trip_and_nothing_else_is_read_as_a_number():
    for _ in range(100):
        key = new_id()
        value = hex_id(key)
        assert value is not None and id_text(value) == key and key_id(id_key(key)) == key
    assert hex_id("0" * 32) == 0 and id_text(0) == "0" * 32
    for odd in ["A" * 32, "0x" + "1" * 30, " " + "1" * 31, "1" * 31 + " ", "1_" * 16, "+" + "1" * 31,
                "\u0661" * 32, "g" * 32, "1" * 31, "1" * 33, "", "o-1", "saga-o1"]:
        assert hex_id(odd) is None and id_key(odd) == odd and key_id(odd) == odd


def test_names_number_strings_once():
    names = Names()
    assert names.find("alice") is None
    assert [names.index(n) for n in ("alice", "bob", "alice")] == [0, 1, 0]
    assert names[1] == "bob" and len(names) == 2 and names.find("alice") == 0


def test_id_refs_keep_any_id_exactly():
    refs = IdRefs()
    canonical, odd = new_id(), "saga-7"
    assert refs.find(odd) is None  # never stored: nothing added
    words = refs.words(odd)
    assert words[2] == 1 and refs.find(odd) == words and refs.text(*words) == odd
    words = refs.words(canonical)
    assert words[2] == 0 and refs.find(canonical) == words and refs.text(*words) == canonical
    assert len(refs.odd_ids) == 1


@pytest.mark.parametrize("width", [1, 3])
def test_id_table_behaves_like_a_dict(width: int):
    rng = random.Random(width)
    table, model = IdTable(width), {}
    keys = [new_id() for _ in range(12_000)] + [f"odd-{i}" for i in range(50)]
    prefix = "ab" * 8  # same high half: ordered by the low one
    keys += [prefix + f"{i:016x}" for i in (5, 1, 9, 3)] + ["0" * 32, "f" * 32]
    for key in keys:  # enough to double the buckets a few times
        model[key] = tuple(rng.randrange(2**64) for _ in range(width))
        table.put(key, model[key])
    for _ in range(6000):
        key = rng.choice(keys)
        if rng.random() < 0.15:
            assert table.pop(key) == model.pop(key, None)
        else:
            record = tuple(rng.randrange(2**64) for _ in range(width))
            table.put(key, record)
            model[key] = record
        assert len(table) == len(model)
    for key in keys:
        assert table.get(key) == model.get(key) and (key in table) == (key in model)
    assert dict(table.items()) == model
    assert table.get(new_id()) is None and table.pop(new_id()) is None


def test_id_table_refuses_records_of_the_wrong_shape():
    table = IdTable(2)
    with pytest.raises(ValueError):
        table.put(new_id(), (1,))
    with pytest.raises(OverflowError):
        table.put(new_id(), (1, 2**64))
    with pytest.raises(ValueError):
        IdTable(0)
    assert len(table) == 0


def test_id_table_entries_are_small():
    import tracemalloc

    keys = [new_id() for _ in range(20_000)]
    tracemalloc.start()
    table = IdTable(2)
    for key in keys:
        table.put(key, (1, 2))
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size / len(keys) < 48  # 32 bytes of words, and bucket arrays; in a dict: ~250
