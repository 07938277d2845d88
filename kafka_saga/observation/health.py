"""The ``/healthz`` answer, one for the query API and every role's metrics server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def health_answer(body: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A ``health()`` body -> (the JSON answer, its HTTP status): 200 and ``status: ok``, or
    503 and ``status: unhealthy`` while the body says ``healthy: false`` (a role stalled)."""
    ok = body.get("healthy", True)
    return {"status": "ok" if ok else "unhealthy", **body}, 200 if ok else 503
