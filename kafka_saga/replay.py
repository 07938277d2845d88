"""replay: event sourcing — rebuild the projections from ``orders.events``.

Reads every partition from the beginning to its exact end as it was when the replay
started, folds with the aggregator's own :class:`AggregateFold`, and writes
``{generated_at, events, aggregates}`` atomically. ``compare`` diffs the result with a
live query API.

The live aggregator keeps one fold per partition of ``orders.events.by-user``, each
forgetting closed orders beyond the state window (``KAFKA_SAGA_STATE_WINDOW``) counted
over that partition's orders. The replay applies the same window the same way: one fold
per partition, each user in the partition the aggregator's re-key sends it to (the Kafka
client's murmur2 of the user, modulo that topic's partition count). A single fold would
count every partition's closings against one window and forget up to N times sooner. The
replay reads the orders in another interleaving than the re-key did, so the two can
differ only for an event that comes about ``window`` closings after its order closed:
the limit of idempotence (:mod:`kafka_saga.core.fold`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from .bus.client import Bus, TopicNotFound, retry_until
from .bus.follow import TopicFollower, read_topic
from .core.contracts import ContractError, Event, UserAggregate, now_rfc3339
from .core.fold import AggregateFold
from .core.store import DEFAULT_WINDOW


def user_partition(user: str, partitions: int) -> int:
    """The partition of ``orders.events.by-user`` that ``user`` is keyed to (as the Kafka
    client's default partitioner places a keyed record)."""
    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


class PartitionedFold:
    """One :class:`AggregateFold` per partition of ``orders.events.by-user``, as live."""

    def __init__(self, window: int = DEFAULT_WINDOW, partitions: int = 1,
                 partition_of: Callable[[str, int], int] = user_partition) -> None:
        self.window = window
        self.partitions = max(1, partitions)
        self.folds: dict[int, AggregateFold] = {}
        self._partition_of = partition_of
        self._users: dict[str, AggregateFold] = {}  # each user's fold, once placed

    def apply(self, event: Event) -> str | None:
        user = event.snapshot.user
        fold = self._users.get(user)
        if fold is None:
            partition = self._partition_of(user, self.partitions)
            fold = self.folds.get(partition)
            if fold is None:
                fold = self.folds[partition] = AggregateFold(window=self.window,
                                                             journaled=False)
            self._users[user] = fold
        return fold.apply(event)

    def aggregate(self, user: str) -> UserAggregate | None:
        fold = self._users.get(user)
        return fold.aggregate(user) if fold else None

    def aggregates(self) -> dict[str, UserAggregate]:
        """Copies of every aggregate, sorted by user (each user is in one fold)."""
        merged = {u: a for fold in self.folds.values() for u, a in fold.aggregates().items()}
        return {u: merged[u] for u in sorted(merged)}

    def __len__(self) -> int:
        return len(self._users)


class ReplayResult:
    def __init__(self, window: int = DEFAULT_WINDOW, partitions: int = 1) -> None:
        self.fold = PartitionedFold(window, partitions)
        self.events = 0
        self.skipped = 0

    def apply(self, record: Any) -> None:
        try:
            event = Event.decode(record.value)
        except (ContractError, ValueError):
            self.skipped += 1  # the live roles dead-lettered it; the projection ignores it too
            return
        self.events += 1
        self.fold.apply(event)

    def document(self) -> dict[str, Any]:
        return {
            "generated_at": now_rfc3339(),
            "events": self.events,
            "skipped": self.skipped,
            "aggregates": {u: a.to_dict() for u, a in self.fold.aggregates().items()},
        }


async def replay_events(bus: Bus, progress: Any = None, timeout: float | None = None,
                        window: int | None = None) -> ReplayResult:
    """Fold all of ``orders.events`` with ``window`` (default: the bus's settings)."""
    settings = bus.settings
    topic = bus.topics.events_by_user
    try:
        partitions = len(await retry_until(f"partitions of {topic}", bus.bootstrap,
                                           lambda: bus.partitions(topic), timeout or 60.0))
    except TopicNotFound:
        partitions = settings.partitions  # no aggregator yet: as it will be created
    result = ReplayResult(settings.state_window if window is None else window, partitions)

    def on_batch(follower: TopicFollower) -> None:
        if progress:
            progress(*follower.progress())

    await read_topic(bus, bus.topics.events, result.apply, timeout, on_batch)
    return result


def write_atomically(path: str | Path, document: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


COMPARED_FIELDS = ("orders", "total_items", "approved", "rejected", "failed", "pending",
                   "spent_cents", "status", "last_updated")


def compare(replayed: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]]) -> list[str]:
    """Every difference between replayed and live aggregates, one line each."""
    diffs: list[str] = []
    for user in sorted(set(replayed) | set(live)):
        a, b = replayed.get(user), live.get(user)
        if a is None:
            diffs.append(f"{user}: only in the live read model")
        elif b is None:
            diffs.append(f"{user}: only in the replay")
        else:
            for name in COMPARED_FIELDS:
                if a.get(name) != b.get(name):
                    diffs.append(f"{user}.{name}: replay={a.get(name)!r} live={b.get(name)!r}")
    return diffs


async def fetch_live(url: str) -> dict[str, dict[str, Any]]:
    """Every aggregate of a running query API, following the ``after`` cursor."""
    import aiohttp

    out: dict[str, dict[str, Any]] = {}
    after: str | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            params = {"limit": "1000", **({"after": after} if after else {})}
            async with session.get(url.rstrip("/") + "/aggregates", params=params) as resp:
                resp.raise_for_status()
                page = await resp.json()
            for item in page["aggregates"]:
                out[item["user"]] = item
            after = page.get("next_after")
            if not after:
                return out
