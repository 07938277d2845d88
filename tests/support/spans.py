"""The finished spans of traced runtimes (the OpenTelemetry SDK's ``to_json`` form)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def service(span: dict[str, Any]) -> str:
    return span["resource"]["attributes"]["service.name"]


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class Spans:
    """The finished spans of several processes, as the SDK writes them (``to_json``)."""

    def __init__(self, spans: list[dict[str, Any]], prefix: str) -> None:
        for span in spans:  # the test's own topic prefix off the names
            span["name"] = span["name"].replace(prefix, "")
        self.all = spans
        self.by_id = {s["context"]["span_id"]: s for s in spans}

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.all if s["context"]["trace_id"] == "0x" + trace_id]

    def named(self, trace_id: str, name: str) -> list[dict[str, Any]]:
        return sorted((s for s in self.of_trace(trace_id) if s["name"] == name),
                      key=lambda s: s["start_time"])

    def one(self, trace_id: str, name: str) -> dict[str, Any]:
        found = self.named(trace_id, name)
        assert found, f"no span {name!r} in trace {trace_id}: {sorted({s['name'] for s in self.of_trace(trace_id)})}"
        return found[0]

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        return self.by_id.get(span["parent_id"]) if span["parent_id"] else None

    def tree(self, trace_id: str) -> str:
        """The trace drawn as a tree: each span with its service, duration and status."""
        spans = self.of_trace(trace_id)
        children: dict[str | None, list[dict[str, Any]]] = {}
        known = {s["context"]["span_id"] for s in spans}
        for span in sorted(spans, key=lambda s: s["start_time"]):
            parent = span["parent_id"] if span["parent_id"] in known else None
            children.setdefault(parent, []).append(span)
        lines: list[str] = []

        def draw(span: dict[str, Any], depth: int) -> None:
            took = (_time(span["end_time"]) - _time(span["start_time"])) * 1000
            status = span["status"]["status_code"]
            lines.append(f"{'  ' * depth}{span['name']}  [{service(span)}] {took:.1f} ms"
                         + (f"  {status}: {span['status'].get('description') or ''}" if status == "ERROR" else ""))
            for child in children.get(span["context"]["span_id"], []):
                draw(child, depth + 1)

        for root in children.get(None, []):
            draw(root, 0)
        return "\n".join(lines)

    def chain(self, span: dict[str, Any]) -> list[str]:
        """The names from ``span`` up to its trace's root."""
        names = [span["name"]]
        while (up := self.parent(span)) is not None:
            names.append(up["name"])
            span = up
        return names
