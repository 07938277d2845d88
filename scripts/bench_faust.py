"""The peer of the aggregator benchmark: a Faust (faust-streaming) agent and table doing the
same per-user fold on the same events, run in a process of its own by scripts/bench.py.

    python scripts/bench_faust.py BOOTSTRAP TOPIC PARTITIONS EVENTS OUTPUT

The agent reads ``TOPIC`` (orders.events, a user's events on one partition), folds each
event with the platform's own :class:`~kafka_saga.core.fold.AggregateFold` (one per
partition, as the aggregator keeps them) and writes the user's aggregate into a Faust table
(in memory, backed by its compacted changelog topic, as Faust tables are): the work the
aggregator does, in Faust's idiom. Once ``EVENTS`` events were folded it writes
``{"events", "seconds", "events_per_s"}`` (first event folded to the last) to ``OUTPUT``
and exits.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import faust

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kafka_saga.core.contracts import Event  # noqa: E402
from kafka_saga.core.fold import AggregateFold  # noqa: E402


def main() -> None:
    bootstrap, topic_name, partitions, expected, output = sys.argv[1:6]
    total = int(expected)
    app = faust.App(f"bench-faust-{uuid.uuid4().hex[:8]}", broker=f"kafka://{bootstrap}",
                    store="memory://", topic_partitions=int(partitions), web_enabled=False,
                    consumer_auto_offset_reset="earliest", topic_replication_factor=1,
                    datadir=tempfile.mkdtemp(prefix="bench-faust-"))
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw",
                      partitions=int(partitions))
    table = app.Table("aggregates", default=None, partitions=int(partitions), key_type=str,
                      value_type=dict)
    folds: dict[int, AggregateFold] = {}
    seen = {"count": 0, "first": 0.0}

    @app.agent(topic)
    async def fold(stream):  # noqa: ANN001, ANN202 - Faust's agent signature
        async for event in stream.events():
            partition = event.message.partition
            state = folds.get(partition)
            if state is None:
                state = folds[partition] = AggregateFold(journaled=False)
            user = state.apply(Event.decode(event.value))
            if user is not None:
                aggregate = state.aggregate(user)
                if aggregate is not None:
                    table[user] = aggregate.to_dict()
            if not seen["count"]:
                seen["first"] = time.perf_counter()
            seen["count"] += 1
            if seen["count"] >= total:
                seconds = time.perf_counter() - seen["first"]
                Path(output).write_text(json.dumps({"events": total, "seconds": seconds,
                                                    "events_per_s": total / seconds}))
                os._exit(0)  # the figure is written: no need for Faust's orderly stop

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
