"""replay: event sourcing — rebuild the projections from ``orders.events``.

Reads every partition from the beginning to its exact end as it was when the replay
started, folds with the aggregator's own :class:`AggregateFold`, and writes
``{generated_at, events, aggregates}`` atomically. ``compare`` diffs the result with a
live query API.

The live aggregator keeps one fold per partition of ``orders.events`` (a user's events are
all on one partition), each forgetting closed orders beyond the state window
(``KAFKA_SAGA_STATE_WINDOW``) counted over that partition's orders. The replay applies the
same window the same way: one fold per partition, fed that partition's records in log order,
exactly as the aggregator reads them. A single fold would count every partition's closings
against one window and forget up to N times sooner.

Since the folds are per partition, the partitions of a large topic are replayed in
parallel worker processes (``workers``, default: one per core, at most one per partition),
each folding its share to the ends taken at the start; the aggregates are then merged
(each user is in one partition): the output is the same as one process's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from .bus.client import Bus, retry_until
from .bus.follow import TopicFollower, read_topic
from .core.contracts import ContractError, Event, UserAggregate, now_rfc3339
from .core.fold import AggregateFold
from .core.store import DEFAULT_WINDOW

# events: below this, one process is done before more have started (measured on 2 cores:
# 100,000 events replay in 1.1 s in one process, 1.2 s in two that take ~0.5 s to start)
PARALLEL_FROM = 200_000


class PartitionedFold:
    """One :class:`AggregateFold` per partition of ``orders.events``, as live."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self.folds: dict[int, AggregateFold] = {}
        self.merged: dict[str, UserAggregate] = {}  # the aggregates of folds run elsewhere

    def apply(self, event: Event, partition: int) -> str | None:
        fold = self.folds.get(partition)
        if fold is None:
            fold = self.folds[partition] = AggregateFold(window=self.window, journaled=False)
        return fold.apply(event)

    def aggregates(self) -> dict[str, UserAggregate]:
        """Copies of every aggregate, sorted by user (each user is in one fold)."""
        merged = dict(self.merged)
        merged.update((u, a) for fold in self.folds.values() for u, a in fold.aggregates().items())
        return {u: merged[u] for u in sorted(merged)}


class ReplayResult:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.fold = PartitionedFold(window)
        self.events = 0
        self.skipped = 0

    def apply(self, record: Any) -> None:
        try:
            event = Event.decode(record.value)
        except (ContractError, ValueError):
            self.skipped += 1  # the live roles dead-lettered it; the projection ignores it too
            return
        self.events += 1
        self.fold.apply(event, record.partition)

    def document(self) -> dict[str, Any]:
        return {
            "generated_at": now_rfc3339(),
            "events": self.events,
            "skipped": self.skipped,
            "aggregates": {u: a.to_dict() for u, a in self.fold.aggregates().items()},
        }


async def replay_events(bus: Bus, progress: Any = None, timeout: float | None = None,
                        window: int | None = None, workers: int | None = None) -> ReplayResult:
    """Fold all of ``orders.events`` with ``window`` (default: the bus's settings), in
    ``workers`` processes (default: one per core) when it holds ``PARALLEL_FROM`` events."""
    window = bus.settings.state_window if window is None else window
    topic = bus.topics.events
    ends = {tp.partition: end for tp, end in (await retry_until(
        f"{topic} end offsets", bus.bootstrap, lambda: bus.end_offsets(topic), timeout or 60.0)).items()}
    workers = min(workers or os.cpu_count() or 1, len(ends))
    total = sum(ends.values())
    if workers <= 1 or total < PARALLEL_FROM:
        result = ReplayResult(window)

        def on_batch(follower: TopicFollower) -> None:
            if progress:
                progress(*follower.progress())

        await read_topic(bus, topic, result.apply, timeout, on_batch, ends=ends)
        return result
    partitions = sorted(ends)
    shares = [{p: ends[p] for p in partitions[i::workers]} for i in range(workers)]
    loop = asyncio.get_running_loop()
    # spawned, not forked: a fork would share this process's event loop and sockets
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = await asyncio.wait_for(asyncio.gather(*(
            loop.run_in_executor(pool, replay_share, bus.settings, share, window, timeout)
            for share in shares)), timeout)
    result = ReplayResult(window)
    for events, skipped, aggregates in parts:
        result.events += events
        result.skipped += skipped
        result.fold.merged.update(aggregates)
    if progress:
        progress(total, total)
    return result


def replay_share(settings: Any, ends: dict[int, int], window: int,
                 timeout: float | None) -> tuple[int, int, dict[str, UserAggregate]]:
    """In a worker process: fold the partitions of ``ends`` up to those offsets."""

    async def fold() -> tuple[int, int, dict[str, UserAggregate]]:
        bus = Bus(settings)
        result = ReplayResult(window)
        await read_topic(bus, bus.topics.events, result.apply, timeout, partitions=sorted(ends),
                         ends=ends)
        return result.events, result.skipped, result.fold.aggregates()

    return asyncio.run(fold())


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
