"""HTTP calls to a running platform's query API, for the API tests."""

from __future__ import annotations

from typing import Any

import aiohttp


class Reply:
    """One HTTP answer: status, headers, raw text and parsed JSON (when it is JSON)."""

    def __init__(self, status: int, headers: Any, text: str, body: Any) -> None:
        self.status, self.headers, self.text, self.body = status, headers, text, body

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


async def call(platform, path: str, method: str = "GET", **kwargs: Any) -> Reply:
    async with aiohttp.ClientSession() as session, session.request(
            method, platform.url + path, **kwargs) as resp:
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else None
        reply = Reply(resp.status, resp.headers, text, body)
    assert "Traceback" not in text, f"{method} {path} leaked a stack trace: {text[:500]}"
    return reply


def assert_error(reply: Reply, status: int, *words: str) -> None:
    """A JSON error answer with this status whose message holds every one of ``words``."""
    assert reply.status == status, (reply.status, reply.text)
    assert reply.content_type.startswith("application/json"), reply.text
    assert reply.body["status"] == status and isinstance(reply.body["error"], str)
    for word in words:
        assert word in reply.body["error"], (word, reply.body)


def assert_json_error(reply: Reply, status: int) -> None:
    """:func:`assert_error`, and the message is not empty."""
    assert_error(reply, status)
    assert reply.body["error"]
