"""Looking at other processes from tests and benchmarks: their JSON logs, liveness, memory."""

from __future__ import annotations

import json
import os
import sys


def json_log_lines(path: str) -> list[dict]:
    """Every JSON line a process logged to ``path`` (other lines are skipped)."""
    lines = []
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not sys.platform.startswith("linux")


def memory_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of ``pid`` from /proc: ``VmRSS`` now, ``VmHWM`` its peak so far."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
