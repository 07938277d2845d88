"""The supervisor: starts roles in a fixed order, restarts crashed ones, stops them in reverse.

A crashing role is logged and restarted with exponential backoff; a role that crashes
``restart_max`` times within ``restart_window_s`` stops the whole process with a non-zero
exit code (a crash loop is not something to hide). A role that raises
:class:`~kafka_saga.config.ConfigError` (a misconfiguration no restart can fix, e.g. topics
with unequal partition counts, a port taken since the start-up check) stops the process at
once, with that error's exit code and one critical log line saying why. ``request_stop`` (SIGINT/SIGTERM) stops
every role in reverse start order; each commits its offsets and the shared producer is
flushed by the runtime afterwards.

A role that is alive but stuck (a consumer with records waiting and no progress for longer
than ``stall_threshold_s``; see :mod:`.watchdog`) is reported ``stalled`` by :meth:`health`
and restarted like a crashed one: its task is cancelled (a frozen handler ignores the stop
event), waited for a bounded time, and the role goes through the same backoff and
crash-loop accounting.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from typing import Any

from .. import logs
from ..bus.loop import wait_unless_stopped
from ..config import ROLE_ORDER, ConfigError, metrics_port_setting
from ..observation.http import HttpServer, metrics_app
from ..observation.progress import OWNER
from ..roles import ROLES
from ..roles.base import Role, RoleContext
from .watchdog import Stall, Watchdog

log = logs.get("supervisor")
CRASH_LOOP_EXIT = 3


class RoleStalled(Exception):
    """Raised in the supervisor when the watchdog found the role stalled and it was cancelled."""

    def __init__(self, stall: Stall) -> None:
        super().__init__(f"no progress while records wait on {', '.join(stall.partitions) or '?'}")
        self.stall = stall


class Supervisor:
    def __init__(self, ctx_for: Any, role_names: list[str], *, restart_max: int = 5,
                 restart_window_s: float = 60.0, shutdown_timeout_s: float = 10.0,
                 first_backoff_s: float = 0.5, roles: dict[str, type[Role]] | None = None,
                 stall_threshold_s: float | None = None, watchdog_interval_s: float | None = None,
                 stall_cancel_timeout_s: float = 5.0) -> None:
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
        self.config_error: ConfigError | None = None  # what stopped the process, if a setting
        self._servers: list[HttpServer] = []
        # None: from the roles' settings (KAFKA_SAGA_STALL_THRESHOLD_S, ..._WATCHDOG_INTERVAL_S)
        self._watchdog_times = (stall_threshold_s, watchdog_interval_s)
        self.stall_cancel_timeout_s = stall_cancel_timeout_s
        self.watchdog = Watchdog(stall_threshold_s or 0.0, watchdog_interval_s or 0.0, self._on_stall)
        self._kicks: dict[str, asyncio.Future[Stall]] = {}
        self._abandoned: set[asyncio.Task[None]] = set()  # stalled roles that ignored cancellation

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested")
            self.stopping.set()

    def health(self) -> dict[str, Any]:
        """Per-role state (running | stalled | stopped) and ``healthy``: no role stalled, and
        none stopped unless the process is stopping."""
        roles = {}
        for name in self.names:
            role = self.current.get(name)
            task = self.tasks.get(name)
            state = "running" if task and not task.done() else "stopped"
            if state == "running" and name in self.watchdog.stalled:
                state = "stalled"
            roles[name] = {
                "state": state,
                "healthy": state == "running" or (state == "stopped" and self.stopping.is_set()),
                "restarts": self.restarts[name],
                **self.watchdog.health(name),
                **(role.health() if role else {}),
            }
        return {"healthy": all(r["healthy"] for r in roles.values()), "roles": roles}

    def _role_health(self, name: str) -> dict[str, Any]:
        """One role's ``health()`` entry (its ``healthy`` says whether to answer 503)."""
        return dict(self.health()["roles"][name])

    def _on_stall(self, stall: Stall) -> None:
        """Called by the watchdog: make the role's keep-alive loop restart it."""
        kick = self._kicks.get(stall.role)
        if kick is not None and not kick.done() and not self.stops[stall.role].is_set():
            kick.set_result(stall)

    async def _run_role(self, name: str, role: Role, stop: asyncio.Event) -> None:
        """Run one instance of a role in a task of its own; raise :class:`RoleStalled` when
        the watchdog reports it stalled (after cancelling it)."""
        kick: asyncio.Future[Stall] = asyncio.get_running_loop().create_future()
        self._kicks[name] = kick
        run = asyncio.create_task(role.run(stop), name=f"role:{name}:run")
        try:
            either: set[asyncio.Future[Any]] = {run, kick}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the supervisor is cancelling us: take the role along
            await self._cancel(name, run)
            raise
        finally:
            self._kicks.pop(name, None)
            kick.cancel()
        if run.done():
            return run.result()  # a crash of the role is raised here
        stall = kick.result()
        await self._cancel(name, run)
        raise RoleStalled(stall)

    async def _cancel(self, name: str, run: asyncio.Task[None]) -> None:
        """Cancel a role's task; a frozen one may swallow a cancellation, so try twice, then
        abandon it (logged) rather than block the restart."""
        for _attempt in range(2):
            run.cancel()
            done, _ = await asyncio.wait({run}, timeout=self.stall_cancel_timeout_s)
            if done:
                if not run.cancelled() and run.exception() is not None:
                    log.warning("role raised while being cancelled", role=name,
                                error=repr(run.exception()))
                return
        log.error("role ignores cancellation: abandoned (its consumers may keep their partitions "
                  "until their group evicts them)", role=name,
                  waited_s=2 * self.stall_cancel_timeout_s, stuck_at=_where_stuck(name, run))
        self._abandoned.add(run)
        run.add_done_callback(self._forget_abandoned)

    def _forget_abandoned(self, run: asyncio.Task[None]) -> None:
        self._abandoned.discard(run)
        if not run.cancelled() and run.exception() is not None:
            log.warning("abandoned role finished with an error", error=repr(run.exception()))

    async def _keep_alive(self, name: str) -> None:
        ctx: RoleContext = self.ctx_for(name)
        stop = self.stops[name]
        crashes: deque[float] = deque()
        delay = self.first_backoff_s
        metrics = ctx.bus.metrics
        OWNER.set((self.watchdog, name))  # the role's consume loops report to our watchdog
        while not stop.is_set():
            metrics.role_state[name] = "running"
            started = time.monotonic()
            self.watchdog.restarted(name)
            try:
                role = self.current[name] = self.classes[name](ctx)
                await self._run_role(name, role, stop)
                if stop.is_set():
                    break
                raise RuntimeError(f"role {name} returned without being asked to stop")
            except ConfigError as exc:  # restarting cannot fix it: say why, once, and stop
                metrics.role_state[name] = "crashed"
                log.critical("role misconfigured: stopping the process", role=name, error=str(exc))
                self.exit_code = exc.exit_code
                self.config_error = exc
                self.request_stop()
                break
            except Exception as exc:  # noqa: BLE001 - any crash (or stall) is restarted
                now = time.monotonic()
                if now - started > self.restart_window_s:
                    delay = self.first_backoff_s  # it ran fine for a while: start afresh
                crashes.append(now)
                while crashes and now - crashes[0] > self.restart_window_s:
                    crashes.popleft()
                self.restarts[name] += 1
                metrics.restarts.labels(role=name).inc()
                if isinstance(exc, RoleStalled):
                    metrics.role_state[name] = "stalled"
                    log.error("role stalled", role=name, partitions=exc.stall.partitions,
                              crashes_in_window=len(crashes))
                else:
                    metrics.role_state[name] = "crashed"
                    log.error("role crashed", role=name, error=crash_reason(exc),
                              crashes_in_window=len(crashes), exc_info=exc)
                if len(crashes) >= self.restart_max:
                    log.critical("crash loop: stopping the process", role=name,
                                 crashes=len(crashes), window_s=self.restart_window_s)
                    self.exit_code = CRASH_LOOP_EXIT
                    self.request_stop()
                    break
                log.info("restarting role", role=name, in_s=round(delay, 2))
                await wait_unless_stopped(stop, delay)
                delay = min(delay * 2, 30.0)
        metrics.role_state[name] = "stopped"

    async def _start_metrics_servers(self) -> None:
        for name in self.names:
            ctx: RoleContext = self.ctx_for(name)
            port = ctx.options.metrics_port
            if port:
                app = metrics_app(ctx.bus.metrics, functools.partial(self._role_health, name))
                server = HttpServer(app, ctx.settings.query_host, int(port), f"{name} metrics",
                                    metrics_port_setting(name))
                await server.start()
                self._servers.append(server)

    def _configure_watchdog(self) -> None:
        watchdog = self.watchdog
        if not self.names:
            return
        ctx: RoleContext = self.ctx_for(self.names[0])
        watchdog.metrics = ctx.bus.metrics
        threshold, interval = self._watchdog_times
        watchdog.threshold_s = ctx.settings.stall_threshold_s if threshold is None else threshold
        watchdog.interval_s = ctx.settings.watchdog_interval_s if interval is None else interval

    async def run(self) -> int:
        """Run until a stop is requested or a crash loop; return the exit code."""
        await self._start_metrics_servers()
        self._configure_watchdog()
        watching = None
        if self.watchdog.enabled:
            watching = asyncio.create_task(self.watchdog.run(), name="watchdog")
        for name in self.names:
            self.tasks[name] = asyncio.create_task(self._keep_alive(name), name=f"role:{name}")
            log.info("role started", role=name, workers=self.ctx_for(name).options.workers)
        try:
            await self.stopping.wait()
        finally:
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
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


def crash_reason(exc: BaseException) -> str:
    """What a crash says: the errors inside the task groups, not "unhandled errors in a
    TaskGroup" (a role's consume loops run in nested task groups)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(crash_reason(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _where_stuck(name: str, run: asyncio.Task[None]) -> dict[str, list[str]]:
    """Where each task of a role is suspended (its await chain, outermost first): what to read
    when a role ignores its cancellation."""
    tasks = [run] + [t for t in asyncio.all_tasks() if t.get_name().startswith(f"{name}-")]
    where = {}
    for task in tasks:
        chain: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(chain) < 40:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            chain.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} "
                         f"{frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        where[task.get_name()] = chain
    return where
