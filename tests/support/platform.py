"""Test helpers: run the platform in-process, wait for conditions, talk to it over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp

from kafka_saga.config import RoleOptions, Settings
from kafka_saga.runtime.platform import Platform

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T] | T], timeout: float = 30.0,
                     interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``check`` until it returns a truthy value (or raise with the last value seen)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return result  # type: ignore[return-value]
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


class RunningPlatform:
    """The real runtime (supervisor, roles, bus) started inside the test's event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.platform: Platform | None = None
        self.task: asyncio.Task[int] | None = None

    async def start(self, *roles: str, workers: dict[str, int] | None = None) -> Platform:
        settings = self.settings
        if workers:
            settings = replace(settings, roles={
                **settings.roles,
                **{name: RoleOptions(workers=n) for name, n in workers.items()},
            })
        ready = asyncio.Event()
        self.platform = Platform(settings, list(roles))
        self.task = asyncio.create_task(self.platform.run(on_ready=lambda _p: ready.set()))
        done, _ = await asyncio.wait({self.task, asyncio.create_task(ready.wait())},
                                     return_when=asyncio.FIRST_COMPLETED, timeout=60)
        if self.task in done:
            raise AssertionError(f"platform exited early with {self.task.result()}")
        if "query" in roles:
            await eventually(lambda: self.platform.shared.get("query_url"), what="query server")
        return self.platform

    @property
    def url(self) -> str:
        assert self.platform is not None
        return str(self.platform.shared["query_url"])

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def stop(self) -> int | None:
        if self.platform is None or self.task is None:
            return None
        self.platform.request_stop()
        try:
            return await asyncio.wait_for(self.task, 20)
        finally:
            self.platform = None
            self.task = None
