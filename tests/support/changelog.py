"""A compacted changelog topic in memory, for the state stores' unit tests."""

from __future__ import annotations

from typing import TypeVar

from kafka_saga.core.store import Store

S = TypeVar("S", bound=Store)


class Changelog:
    """What compaction keeps of a store's changelog: the last value of each key, in the order
    the keys were last written; a tombstone (None) deletes its key."""

    def __init__(self, entries: dict[str, bytes] | None = None) -> None:
        self.entries: dict[str, bytes] = dict(entries or {})

    def write(self, store: Store) -> int:
        """Take the store's journal and append it; return how many entries it held."""
        taken = store.journal.take()
        for key, value in taken.items():
            self.entries.pop(key, None)
            if value is not None:
                self.entries[key] = value
        return len(taken)

    def restore(self, store: S) -> S:
        """Load every live entry into ``store`` (a fresh one), oldest written first."""
        for key, value in self.entries.items():
            store.load(key, value)
        assert len(store.journal) == 0, "loading must write nothing"
        return store

    def copy(self) -> Changelog:
        return Changelog(self.entries)
