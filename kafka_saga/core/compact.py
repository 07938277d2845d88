"""Compact, exact per-order memory: ids as numbers, records as machine words. Pure, no I/O.

The projections remember something about every order they ever saw (the aggregate fold
must, to stay idempotent). As Python objects that costs a few hundred bytes an order: a
32-character id string is 81 bytes, a dict slot ~40, a small object ~50-100. Here:

* :func:`hex_id` reads a canonical id (32 lowercase hex digits, what :func:`new_id` makes)
  as a 128-bit number, and :func:`id_text` writes it back: a bijection, never a hash;
  :func:`id_key` / :func:`key_id` do the same for dict keys, leaving other ids as they are.
* :class:`IdTable` maps ids to a fixed number of unsigned 64-bit words, kept in sorted
  ``array('Q')`` buckets: about ``16 + 8 x width`` bytes an entry. Ids that are not
  canonical (tests, hand-made ids) go to a plain dict, so the table is exact for any id.
* :class:`Names` numbers strings (users, items) so a record can hold an index, and
  :class:`IdRefs` turns any id into words a record can hold.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator

HEX_DIGITS = "0123456789abcdef"
WORD = (1 << 64) - 1
FIRST_BUCKET_BITS, MAX_BUCKET_BITS = 4, 20  # 16 buckets at first, doubling
BUCKET_TARGET = 256  # entries per bucket, on average, before the buckets double


def hex_id(key: str) -> int | None:
    """The 128-bit value of a canonical id (32 lowercase hex digits), else None."""
    if len(key) == 32 and not key.strip(HEX_DIGITS):
        return int(key, 16)
    return None


def id_text(value: int) -> str:
    """The canonical id of a value :func:`hex_id` returned."""
    return f"{value:032x}"


def id_key(key: str) -> int | str:
    """A dict key for an id: its number when canonical (44 bytes, not 81), else the id itself."""
    value = hex_id(key)
    return key if value is None else value


def key_id(key: int | str) -> str:
    """The id back from :func:`id_key`."""
    return id_text(key) if isinstance(key, int) else key


class Names:
    """Strings <-> small indexes (each string stored once, never forgotten)."""

    __slots__ = ("names", "_index")

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def find(self, name: str) -> int | None:
        """The index of ``name``, or None (without adding it)."""
        return self._index.get(name)

    def index(self, name: str) -> int:
        """The index of ``name``, added if new."""
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = len(self.names)
            self.names.append(name)
        return found

    def __getitem__(self, index: int) -> str:
        return self.names[index]

    def __len__(self) -> int:
        return len(self.names)


class IdRefs:
    """Ids as three words ``(high, low, odd)``: a canonical id by value (odd = 0), any other
    id by its index in :attr:`odd_ids` (odd = 1). Lets a record point at another id exactly."""

    __slots__ = ("odd_ids",)

    def __init__(self) -> None:
        self.odd_ids = Names()

    def words(self, key: str) -> tuple[int, int, int]:
        value = hex_id(key)
        if value is None:
            return 0, self.odd_ids.index(key), 1
        return value >> 64, value & WORD, 0

    def find(self, key: str) -> tuple[int, int, int] | None:
        """Like :meth:`words`, but None for an odd id never stored (nothing is added)."""
        value = hex_id(key)
        if value is None:
            index = self.odd_ids.find(key)
            return None if index is None else (0, index, 1)
        return value >> 64, value & WORD, 0

    def text(self, high: int, low: int, odd: int) -> str:
        return self.odd_ids[low] if odd else id_text(high << 64 | low)


class IdTable:
    """``id -> tuple of width unsigned 64-bit words``; exact, and ~16 + 8 x width bytes an entry.

    A canonical id is split into its high and low 64 bits and kept in the bucket of its first
    bits, sorted by (high, low): a look-up is one bisection in a bucket of at most a few
    hundred entries, an insertion moves the tail of that one bucket (``array.insert``). The
    buckets double (each split in two, in place of order) as the table grows. Other ids live
    in ``other``, a dict.
    """

    __slots__ = ("width", "other", "_bits", "_high", "_low", "_words", "_size")

    def __init__(self, width: int = 1) -> None:
        if width < 1:
            raise ValueError("an IdTable record has at least one word")
        self.width = width
        self.other: dict[str, tuple[int, ...]] = {}
        self._bits = FIRST_BUCKET_BITS
        self._high = [array("Q") for _ in range(1 << self._bits)]
        self._low = [array("Q") for _ in range(1 << self._bits)]
        self._words = [array("Q") for _ in range(1 << self._bits)]
        self._size = 0

    def __len__(self) -> int:
        return self._size + len(self.other)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> tuple[int, ...] | None:
        value = hex_id(key)
        if value is None:
            return self.other.get(key)
        bucket, index, found = self._locate(value)
        if not found:
            return None
        start = index * self.width
        return tuple(self._words[bucket][start:start + self.width])

    def put(self, key: str, words: Iterable[int]) -> None:
        """Insert or replace ``key``'s record (each word in 0 .. 2**64 - 1)."""
        record = array("Q", words)  # OverflowError for a word out of range
        if len(record) != self.width:
            raise ValueError(f"expected {self.width} words, got {len(record)}")
        value = hex_id(key)
        if value is None:
            self.other[key] = tuple(record)
            return
        bucket, index, found = self._locate(value)
        start = index * self.width
        if found:
            self._words[bucket][start:start + self.width] = record
            return
        self._high[bucket].insert(index, value >> 64)
        self._low[bucket].insert(index, value & WORD)
        self._words[bucket][start:start] = record
        self._size += 1
        if self._size > BUCKET_TARGET << self._bits and self._bits < MAX_BUCKET_BITS:
            self._split()

    def pop(self, key: str) -> tuple[int, ...] | None:
        """Remove ``key``; return its record, or None when it was not there."""
        value = hex_id(key)
        if value is None:
            return self.other.pop(key, None)
        bucket, index, found = self._locate(value)
        if not found:
            return None
        start = index * self.width
        words = self._words[bucket]
        record = tuple(words[start:start + self.width])
        del words[start:start + self.width]
        del self._high[bucket][index]
        del self._low[bucket][index]
        self._size -= 1
        return record

    def items(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        """Every ``(id, record)``: canonical ids by value, then the others (slow: for checks)."""
        width = self.width
        for highs, lows, words in zip(self._high, self._low, self._words, strict=True):
            for index, (high, low) in enumerate(zip(highs, lows, strict=True)):
                yield id_text(high << 64 | low), tuple(words[index * width:(index + 1) * width])
        yield from self.other.items()

    def _locate(self, value: int) -> tuple[int, int, bool]:
        """(bucket, index, found): where ``value`` is, or where it would be inserted."""
        bucket = value >> (128 - self._bits)
        highs, lows = self._high[bucket], self._low[bucket]
        high, low = value >> 64, value & WORD
        index = bisect_left(highs, high)
        end = len(highs)
        while index < end and highs[index] == high:  # equal high halves: ordered by the low one
            if lows[index] >= low:
                return bucket, index, lows[index] == low
            index += 1
        return bucket, index, False

    def _split(self) -> None:
        """Twice the buckets: bucket b becomes 2b and 2b + 1, cut where the new bit turns on."""
        self._bits += 1
        width, high, low, words = self.width, [], [], []
        for bucket, (highs, lows, records) in enumerate(
                zip(self._high, self._low, self._words, strict=True)):
            cut = bisect_left(highs, (2 * bucket + 1) << (64 - self._bits))
            high += [highs[:cut], highs[cut:]]
            low += [lows[:cut], lows[cut:]]
            words += [records[:cut * width], records[cut * width:]]
        self._high, self._low, self._words = high, low, words


__all__ = ["IdRefs", "IdTable", "Names", "hex_id", "id_key", "id_text", "key_id"]
