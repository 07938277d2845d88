"""Client and controller ports for the Apache Kafka nodes a test starts: below the ephemeral range.

``kafka_engine.free_port_block`` starts its block at a port from ``bind(("127.0.0.1", 0))``,
inside the kernel's ephemeral range, where Linux gives odd ports to ``bind(0)`` and even
ones to ``connect()``. So P+1, P+3, ... are the ports outgoing connections take, and the
TIME_WAIT of a connection closed by its client (60 s, no SO_REUSEADDR) makes a server's
later bind of that port fail with "Address already in use". A node binds its client port
only once it is unfenced, 20-90 s after the ports were checked on a busy machine; a
three-node cluster on such a block lost a node that way in about one launch of five.
``connect()`` never takes a port below the ephemeral range, as 9092 is for a user.
"""

from __future__ import annotations

import random

from kafka_saga.bus.embedded import port_is_free
from kafka_saga.bus.kafka_engine import free_port_block

LOWEST = 20000


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_block(size: int, attempts: int = 500) -> int:
    """A port P such that P .. P+size-1 are free on 127.0.0.1 and below the ephemeral range."""
    high = ephemeral_low() - size
    if high <= LOWEST:  # an unusual range: nothing better than the engine's own choice
        return free_port_block(size)
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(LOWEST, high)
        if all(port_is_free(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports found in {LOWEST}..{high + size - 1}")
