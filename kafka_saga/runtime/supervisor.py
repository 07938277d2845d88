"""The supervisor: starts roles in a fixed order, restarts crashed ones, stops them in reverse.

A crashing role is logged and restarted with exponential backoff; a role that crashes
``restart_max`` times within ``restart_window_s`` stops the whole process with a non-zero
exit code (a crash loop is not something to hide). ``request_stop`` (SIGINT/SIGTERM) stops
every role in reverse start order; each commits its offsets and the shared producer is
flushed by the runtime afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from .. import logs
from ..config import ROLE_ORDER
from ..roles import ROLES
from ..roles.base import Role, RoleContext
from .http import HttpServer, metrics_app

log = logs.get("supervisor")
CRASH_LOOP_EXIT = 3


class Supervisor:
    def __init__(self, ctx_for: Any, role_names: list[str], *, restart_max: int = 5,
                 restart_window_s: float = 60.0, shutdown_timeout_s: float = 10.0,
                 first_backoff_s: float = 0.5, roles: dict[str, type[Role]] | None = None) -> None:
        self.ctx_for = ctx_for  # role name -> RoleContext
        registry = roles or ROLES
        self.names = sorted(role_names, key=lambda n: ROLE_ORDER.index(n) if n in ROLE_ORDER else 99)
        self.classes = {name: registry[name] for name in self.names}
        self.restart_max = restart_max
        self.restart_window_s = restart_window_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.first_backoff_s = first_backoff_s
        self.current: dict[str, Role] = {}
        self.stops: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.names}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.names, 0)
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._servers: list[HttpServer] = []

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested")
            self.stopping.set()

    def health(self) -> dict[str, Any]:
        roles = {}
        for name in self.names:
            role = self.current.get(name)
            task = self.tasks.get(name)
            roles[name] = {
                "state": "running" if task and not task.done() else "stopped",
                "restarts": self.restarts[name],
                **(role.health() if role else {}),
            }
        return {"roles": roles}

    async def _keep_alive(self, name: str) -> None:
        ctx: RoleContext = self.ctx_for(name)
        stop = self.stops[name]
        crashes: deque[float] = deque()
        delay = self.first_backoff_s
        metrics = ctx.bus.metrics
        while not stop.is_set():
            metrics.role_state[name] = "running"
            started = time.monotonic()
            try:
                role = self.current[name] = self.classes[name](ctx)
                await role.run(stop)
                if stop.is_set():
                    break
                raise RuntimeError(f"role {name} returned without being asked to stop")
            except Exception as exc:  # noqa: BLE001 - any crash is restarted
                now = time.monotonic()
                if now - started > self.restart_window_s:
                    delay = self.first_backoff_s  # it ran fine for a while: start afresh
                crashes.append(now)
                while crashes and now - crashes[0] > self.restart_window_s:
                    crashes.popleft()
                self.restarts[name] += 1
                metrics.restarts.labels(role=name).inc()
                metrics.role_state[name] = "crashed"
                log.error("role crashed", role=name, error=f"{type(exc).__name__}: {exc}",
                          crashes_in_window=len(crashes), exc_info=exc)
                if len(crashes) >= self.restart_max:
                    log.critical("crash loop: stopping the process", role=name,
                                 crashes=len(crashes), window_s=self.restart_window_s)
                    self.exit_code = CRASH_LOOP_EXIT
                    self.request_stop()
                    break
                log.info("restarting role", role=name, in_s=round(delay, 2))
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)
        metrics.role_state[name] = "stopped"

    async def _start_metrics_servers(self) -> None:
        for name in self.names:
            ctx: RoleContext = self.ctx_for(name)
            port = ctx.options.metrics_port
            if port:
                app = metrics_app(ctx.bus.metrics, lambda n=name: self.health()["roles"][n])
                server = HttpServer(app, ctx.settings.query_host, int(port), f"{name} metrics")
                await server.start()
                self._servers.append(server)

    async def run(self) -> int:
        """Run until a stop is requested or a crash loop; return the exit code."""
        await self._start_metrics_servers()
        for name in self.names:
            self.tasks[name] = asyncio.create_task(self._keep_alive(name), name=f"role:{name}")
            log.info("role started", role=name, workers=self.ctx_for(name).options.workers)
        try:
            await self.stopping.wait()
        finally:
            await self._stop_all()
        return self.exit_code

    async def _stop_all(self) -> None:
        deadline = time.monotonic() + max(1.0, self.shutdown_timeout_s - 2.0)
        for name in reversed(self.names):
            self.stops[name].set()
            task = self.tasks.get(name)
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.1, deadline - time.monotonic()))
                log.info("role stopped", role=name)
            except TimeoutError:
                log.error("role did not stop in time, cancelling", role=name)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for server in self._servers:
            await server.stop()
