"""Generated blocks of the documentation: ``python -m kafka_saga.docgen [--check] [FILE ...]``.

A block sits between ``<!-- BEGIN GENERATED: <name> -->`` and ``<!-- END GENERATED: <name> -->``
in a Markdown file; :data:`BLOCKS` maps each name to the function that writes it (one function
a block). Without ``--check`` the blocks of the files are rewritten in place; with it nothing is
written and the exit status is 1, with one line naming the file, when a committed block differs
from what its function writes now.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import KafkaSecurity, Settings, declared, role_variables
from .core import topology

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILES = (REPO / "docs" / "configuration.md", REPO / "docs" / "architecture.md",
                 REPO / "README.md")
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- END GENERATED: (?P=name) -->)", re.DOTALL)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value!r}`" if value == "" else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table() -> str:
    """Every environment variable :class:`~kafka_saga.config.Settings` reads: name, default,
    meaning (from the field declarations in ``config.py``)."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for cls in (Settings, KafkaSecurity):
        for f, spec in declared(cls):
            rows.append(f"| `{spec['env']}` | {_default(f.default)} | {_cell(spec['meaning'])} |")
    for name, default, meaning in role_variables():
        rows.append(f"| `{name}` | {_default(default)} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


def _names(items: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "—"


def roles_table() -> str:
    """The roles in start order (from :mod:`kafka_saga.core.topology`): groups and what they
    consume, what they produce, what they are for."""
    rows = ["| Role | Consumer group: topics | Produces | What it does |",
            "| --- | --- | --- | --- |"]
    for spec in topology.ROLES:
        groups = "; ".join(f"`{g.name}`: {_names(g.consumes)}" for g in spec.groups)
        followed = topology.FOLLOWED.get(spec.name, ())
        if followed:
            groups = "; ".join(filter(None, (groups, f"no group: {_names(followed)}")))
        what = " ".join(filter(None, (spec.purpose, spec.notes)))
        rows.append(f"| `{spec.name}` | {groups or '—'} | {_names(spec.produces)} | {_cell(what)} |")
    return "\n".join(rows) + "\n"


def topics_table() -> str:
    """The topics (from :mod:`kafka_saga.core.topology`): key, messages, who writes and reads,
    cleanup policy."""
    rows = ["| Topic | Key | Messages | Written by | Read by | Cleanup |",
            "| --- | --- | --- | --- | --- | --- |"]
    for spec in topology.TOPICS:
        cleanup = spec.config.get("cleanup.policy", "delete")
        rows.append(f"| `{spec.name}` | {_cell(spec.key)} | {_names(spec.messages)} | "
                    f"{', '.join(topology.senders(spec.name))} | "
                    f"{', '.join(topology.readers(spec.name))} | "
                    f"{'**compact**' if cleanup == 'compact' else cleanup} |")
    return "\n".join(rows) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "roles": roles_table,
    "topics": topics_table,
}


def render(text: str) -> str:
    """``text`` with every known block rewritten (unknown block names are left alone)."""
    def block(match: re.Match[str]) -> str:
        make = BLOCKS.get(match["name"])
        if make is None:
            return match[0]
        return f"{match[1]}{make()}{match[4]}"

    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kafka_saga.docgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a file's generated blocks are stale")
    parser.add_argument("files", nargs="*", type=Path,
                        help="Markdown files (default: docs/configuration.md)")
    args = parser.parse_args(argv)
    for path in args.files or DEFAULT_FILES:
        text = path.read_text()
        fresh = render(text)
        if fresh == text:
            continue
        if args.check:
            print(f"{path}: generated blocks are stale; run `make docs` "
                  "(python -m kafka_saga.docgen)", file=sys.stderr)
            return 1
        path.write_text(fresh)
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
