"""The platform on a three-node Apache Kafka cluster under broker faults, under load.

Each scenario runs a runtime (every role but the demo) in a process of its own, writes
``CLUSTER_ORDERS`` valid orders (3,000) at a steady rate with kafka-python, injects its
fault mid-run, and checks that every order ended exactly once, that every event is on
``orders.events``, that the aggregates count each order once, and that ``kafka-saga replay
--compare`` finds the live read model equal to the log. The one-line summary of each goes to
stdout (``-s``) and to ``artifacts/cluster-report.jsonl``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from ..support.cluster import leader_of, start_node, wait_in_sync
from .scenario import Scenario, conclude

pytestmark = pytest.mark.cluster
ORDERS = int(os.environ.get("CLUSTER_ORDERS", "3000"))
RATE = float(os.environ.get("CLUSTER_RATE", "125"))
# the roll's first rate; then what is left is spread over the restarts to come
ROLL_RATE = float(os.environ.get("CLUSTER_ROLL_RATE", "25"))


@pytest.mark.timeout(540)  # the first test also waits for the cluster to start
async def test_the_leader_of_a_commands_partition_killed_for_good(cluster, tmp_path):
    async with Scenario("leader-kill", cluster, tmp_path, ORDERS, RATE) as run:
        load = run.start_load()
        await run.until_sent(ORDERS // 3)
        node = await leader_of(cluster, run.bus.topics.commands, 0)
        await run.note_node(node)
        run.fault(f"SIGKILL node {node} (leader of orders.commands:0)")
        cluster.stop_node(node, signal.SIGKILL)  # left down until the fixture's teardown
        run.notes["killed_node"] = node
        await run.finish(load)
        verdict = await run.verdict()
    conclude(run, verdict)


@pytest.mark.timeout(480)
async def test_a_rolling_restart_of_every_broker(cluster, tmp_path):
    async with Scenario("rolling-restart", cluster, tmp_path, ORDERS, ROLL_RATE) as run:
        load = run.start_load()
        await run.until_sent(ORDERS // 20)
        steps = []
        for done, node in enumerate(cluster.nodes, 1):
            left = len(cluster.nodes) - done  # restarts still to come after this one
            await run.note_node(node.node_id)
            began = time.perf_counter()
            run.fault(f"SIGTERM node {node.node_id}")
            await asyncio.to_thread(cluster.stop_node, node.node_id, signal.SIGTERM)
            stopped = time.perf_counter()
            await start_node(cluster, node.node_id)
            answered = time.perf_counter()
            await wait_in_sync(cluster)  # back in every ISR before the next one goes
            took = time.perf_counter() - began
            steps.append({"node": node.node_id, "stop_s": round(stopped - began, 1),
                          "start_s": round(answered - stopped, 1),
                          "in_sync_s": round(time.perf_counter() - answered, 1),
                          "sent_by_then": run.load.sent, "rate": round(run.load.rate, 1)})
            # spread what is left of the load over the restarts still to come
            remaining = ORDERS - run.load.sent
            run.load.rate = RATE if not left else max(5.0, min(RATE, remaining / (left * took * 1.6)))
        run.notes["restarts"] = steps
        await run.finish(load)
        verdict = await run.verdict()
    conclude(run, verdict)


@pytest.mark.timeout(480)
async def test_the_runtime_and_a_broker_killed_together(cluster, tmp_path):
    async with Scenario("runtime-and-broker-kill", cluster, tmp_path, ORDERS, RATE) as run:
        load = run.start_load()
        await run.until_sent(ORDERS // 3)
        node = await leader_of(cluster, run.bus.topics.events, 0)
        await run.note_node(node)
        run.fault(f"SIGKILL runtime and node {node} (leader of orders.events:0)")
        run.runtime.signal(signal.SIGKILL)
        cluster.stop_node(node, signal.SIGKILL)
        await asyncio.to_thread(run.runtime.proc.wait)
        run.runtime.start()
        run.notes["killed_node"] = node
        # the broker comes back once the new runtime is ending orders again
        await run.until_done(min(len(run.ids), run.done() + 300), timeout=240)
        run.notes["node_restarted_at_s"] = round(time.perf_counter() - run.started, 1)
        await start_node(cluster, node)
        await run.finish(load)
        verdict = await run.verdict()
    conclude(run, verdict)


@pytest.mark.timeout(480)
async def test_a_broker_cut_off_for_15_seconds(cluster, tmp_path):
    """A network cut of one broker, as its peers and clients see it: the JVM frozen (SIGSTOP)
    for 15 s, so its connections stay open and answer nothing, then thawed. It leads a
    partition of orders.events and may coordinate transactions and groups: leadership moves,
    the requests it held time out, and it rejoins as a follower."""
    async with Scenario("broker-cut-15s", cluster, tmp_path, ORDERS, RATE) as run:
        load = run.start_load()
        await run.until_sent(ORDERS // 3)
        node = await leader_of(cluster, run.bus.topics.events, 0)
        await run.note_node(node)
        process = cluster.node(node).process
        assert process is not None
        run.fault(f"SIGSTOP node {node} (leader of orders.events:0) for 15 s")
        process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(15)
        finally:
            process.send_signal(signal.SIGCONT)
        run.fault(f"SIGCONT node {node}")
        run.notes["cut_node"] = node
        await run.finish(load)
        verdict = await run.verdict()
    conclude(run, verdict)
