"""``kafka-saga broker --engine kafka``: a local Apache Kafka node or cluster in the foreground."""

from __future__ import annotations

import asyncio
import signal
import time

from .. import logs
from ..bus.kafka_engine import KafkaCluster
from ..bus.kafka_jars import LaunchError

log = logs.get("kafka")


def serve(cluster: KafkaCluster) -> int:
    """Run ``cluster`` in the foreground: SIGINT/SIGTERM stop every node (exit 0).

    A node that exits (killed by a test, say) is reported once and left down; SIGHUP starts
    every stopped node again (a rolling restart by hand). Exit 1 once no node runs.
    """
    state = {"starting": True, "stopping": False, "revive": False}

    def on_stop(_sig: int, _frame: object) -> None:
        state["stopping"] = True
        if state["starting"]:
            raise KeyboardInterrupt

    def on_hup(_sig: int, _frame: object) -> None:
        state["revive"] = True

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    down: set[int] = set()
    try:
        asyncio.run(cluster.start())
        state["starting"] = False
        while not state["stopping"]:
            time.sleep(0.2)
            if state["revive"]:
                state["revive"] = False
                stopped = [node for node in cluster.nodes if not node.alive()]
                for node in stopped:
                    cluster.spawn(node)
                try:
                    asyncio.run(cluster.wait_ready(120.0, stopped))
                    log.info("Kafka nodes started again", nodes=[n.node_id for n in stopped])
                except LaunchError as exc:  # reported below as exited, and left down
                    log.error("Kafka nodes did not start again", error=str(exc))
            for node in cluster.nodes:
                if node.alive():
                    down.discard(node.node_id)
                elif node.node_id not in down:
                    down.add(node.node_id)
                    log.warning("Kafka node exited; left down (SIGHUP starts it again)",
                                node=node.node_id, code=node.process.returncode if node.process else None,
                                log=str(node.log_file))
            if not cluster.alive():
                log.error("every Kafka node has exited", data_dir=str(cluster.data_dir))
                return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()
