"""State stores: what a stateful role's per-partition state offers the consume loop. Pure.

A store is the state of one input partition (an inventory ledger, the tracker's rules, an
aggregate fold, the orchestrator's sagas). It records every entry it changes in its
:class:`Journal`, as ``key -> value`` bytes (``None``: the entry is gone, a tombstone), or
marks the key for the journal to encode when it is taken. The loop takes the journal at
each checkpoint and writes it to the store's compacted changelog topic, at the partition
number of its input, before it commits the input offsets
(:mod:`kafka_saga.bus.stores`). On assignment the loop reads the changelog partition and
hands each live entry back to :meth:`Store.load`, in the order the entries were last
written, so a restore costs the live state, not the history.

Settled entries (a finished saga, a released reservation, a closed order) leave a store
after a bounded :class:`Retention` window: the one limit of idempotence. A duplicate of an
entry older than the window is treated as new; the window is applied the same way live,
on restore and on replay.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, cast, runtime_checkable

DEFAULT_WINDOW = 10_000  # settled entries kept per store (per partition)


class _Marked:
    """The value of a marked entry until the journal is taken."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MARKED"


MARKED = _Marked()
Encoder = Callable[[str], bytes | None]  # a store's entry as of now (None: gone)


class Journal:
    """The entries a store changed since the last checkpoint, in the order they were last
    written (a key written again moves to the end, as the compacted changelog keeps it).

    A store ``put``s an entry's bytes (``delete``: a tombstone), or ``mark``s its key and
    lets ``encode(key)``, given at construction, write the bytes at :meth:`take` from the
    store's state then (``None``: a tombstone). A key changed many times between two
    checkpoints is then encoded once, and never on the path of each change.
    """

    __slots__ = ("entries", "encode")

    def __init__(self, encode: Encoder | None = None) -> None:
        self.entries: dict[str, bytes | _Marked | None] = {}
        self.encode = encode

    def put(self, key: str, value: bytes) -> None:
        entries = self.entries
        entries.pop(key, None)
        entries[key] = value

    def delete(self, key: str) -> None:
        entries = self.entries
        entries.pop(key, None)
        entries[key] = None

    def mark(self, key: str) -> None:
        """``key`` changed: :meth:`take` encodes it (needs ``encode``)."""
        if self.encode is None:
            raise TypeError("a journal without an encoder takes put() and delete() only")
        entries = self.entries
        entries.pop(key, None)
        entries[key] = MARKED

    def take(self) -> dict[str, bytes | None]:
        """What changed since the last call, marked entries encoded now, and start afresh."""
        taken, self.entries = self.entries, {}
        encode = self.encode
        if encode is not None:
            for key, value in taken.items():
                if value is MARKED:
                    taken[key] = encode(key)
        return cast("dict[str, bytes | None]", taken)

    def __len__(self) -> int:
        return len(self.entries)


class NullJournal(Journal):
    """Keeps nothing: the journal of a store that is never restored (a replay's)."""

    __slots__ = ()

    def put(self, key: str, value: bytes) -> None:
        pass

    def delete(self, key: str) -> None:
        pass

    def mark(self, key: str) -> None:
        pass


@runtime_checkable
class Store(Protocol):
    """A partition's state that restores from its changelog."""

    journal: Journal

    def load(self, key: str, value: bytes) -> None:
        """Take back one live entry of the changelog (never a deleted one), oldest written
        first. Loading writes nothing to the journal."""

    def entries(self) -> Iterable[tuple[str, bytes]]:
        """Every live entry, as the journal would write it (for a snapshot)."""


class Retention:
    """Settled keys of one store in the order they settled; the oldest beyond ``limit`` go.

    ``settle(key)`` (again: it moves to the end) returns the keys that fell out of the
    window, which the store then forgets and tombstones. An ``OrderedDict``: taking the
    oldest key of a plain dict scans the slots its earlier deletions left at the front
    (~5 us a settle at 10,000 keys, against ~0.3 us).
    """

    __slots__ = ("limit", "_order")

    def __init__(self, limit: int = DEFAULT_WINDOW) -> None:
        self.limit = max(0, limit)
        self._order: OrderedDict[str, None] = OrderedDict()

    def settle(self, key: str) -> list[str]:
        order = self._order
        if key in order:
            order.move_to_end(key)
            return []
        order[key] = None
        gone: list[str] = []
        while len(order) > self.limit:
            gone.append(order.popitem(last=False)[0])
        return gone

    def discard(self, key: str) -> None:
        self._order.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        """The settled keys, oldest first."""
        return iter(list(self._order))

    def __contains__(self, key: str) -> bool:
        return key in self._order

    def __len__(self) -> int:
        return len(self._order)
