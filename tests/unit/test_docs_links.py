"""Relative links in README.md and docs/*.md resolve: the file exists and the anchor is a heading.

External (http, https, mailto) links are not fetched. Anchors follow GitHub's slug rules:
lowercase, punctuation dropped except hyphens and underscores, spaces turned into hyphens,
a repeated heading gets ``-1``, ``-2``… Links inside code (fenced blocks, inline code spans)
are not links and are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_BYTES = 16_000

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")
# [text](target) and ![alt](target), target optionally in <>, optionally followed by a title.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s+[^>]*?(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked if asked."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = None
            continue
        if match:
            fence = match.group(1)
            continue
        out.append((number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keep letters, digits, _, -, spaces
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (deduplicated as GitHub does) and HTML ids."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    lines = prose_lines(path.read_text(encoding="utf-8"), blank_code=False)  # code counts in a slug
    previous = ""
    for _, line in lines:
        match = HEADING.match(line)
        text = match.group(2) if match else None
        if text is None and previous.strip() and SETEXT_UNDERLINE.match(line) and not HEADING.match(previous):
            text = previous.strip()
        if text is not None:
            base = slug(text)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
        previous = line
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link on a page, external ones included."""
    out: list[tuple[int, str]] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in INLINE_LINK.finditer(line):
            out.append((number, match.group(1).strip("<>")))
        ref = REFERENCE_DEF.match(line)
        if ref:
            out.append((number, ref.group(1).strip("<>")))
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems: list[str] = []
    for number, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file {dest}")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                problems.append(f"{where}: anchor on a file that is not markdown")
            elif unquote(anchor).lower() not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_docs_pages_exist() -> None:
    assert (DOCS / "README.md").is_file()
    assert len(markdown_files()) > 2


def test_every_docs_page_is_reachable_from_the_readme_or_the_index() -> None:
    linked: set[Path] = set()
    for page in (README, DOCS / "README.md"):
        for _, target in links(page):
            if not EXTERNAL.match(target) and target.partition("#")[0]:
                linked.add((page.parent / unquote(target.partition("#")[0])).resolve())
    unlinked = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.resolve() not in linked]
    assert unlinked == []


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_checker_catches_broken_links(tmp_path: Path) -> None:
    (tmp_path / "target.md").write_text("# Some Title: with `code`, punctuation!\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](target.md#some-title-with-code-punctuation) [ok2](target.md#twice-1) [self](#heading)\n"
        "# Heading\n"
        "[missing file](nope.md) [bad anchor](target.md#absent) [bad dup](target.md#twice-2)\n"
        "`[in code](ignored.md)` [external](https://example.invalid/x.md)\n"
        "```\n[in a fence](ignored.md)\n```\n",
    )
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert "nope.md" in problems[0]
    assert "#absent" in problems[1]
    assert "#twice-2" in problems[2]
