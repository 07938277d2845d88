"""Addresses: free local ports for the brokers this package starts (the embedded one, Kafka
nodes), and bootstrap hosts that do not exist."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

from .kafka_jars import LaunchError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port`` (closed connections do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (32768 if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(size: int, attempts: int = 500) -> int:
    """A port P such that P .. P+size-1 are free on 127.0.0.1, below the ephemeral range.

    Not from ``bind(0)``: that range is where outgoing connections take their ports, and a
    node binds its ports only once it has joined the cluster, seconds later on a busy
    machine; a port taken by a connection meanwhile (or held in its TIME_WAIT) would kill
    the node with "Address already in use". ``connect()`` never takes a port below the range.
    """
    high = _ephemeral_low() - size
    rng = random.SystemRandom()
    for _ in range(attempts if high > LOWEST_PORT else 0):
        base = rng.randrange(LOWEST_PORT, high)
        if all(port_is_free(base + i) for i in range(size)):
            return base
    for _ in range(attempts):  # an unusual range: the kernel's choice, as a last resort
        base = free_port()
        if base + size < 65536 and all(port_is_free(base + i) for i in range(size)):
            return base
    raise LaunchError(f"no {size} consecutive free ports found on 127.0.0.1")


def free_port_pair() -> int:
    """A client port whose next port (the controller's) is free too: one local node."""
    return free_port_block(2)


async def unknown_hosts(bootstrap: str) -> list[str]:
    """The hosts of a ``host:port`` list that name no address at all (not a passing DNS failure)."""
    loop = asyncio.get_running_loop()
    unknown = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        try:
            await loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_NONAME:
                unknown.append(host)
        except (OSError, UnicodeError):
            unknown.append(host)
    return unknown
