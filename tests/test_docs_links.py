"""Links between the README and docs/: every relative link names a file that exists and, with #anchor, a heading in it."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose_lines(page: Path) -> Iterator[str]:
    """A page's lines outside fenced code blocks (where '#' is a comment, not a heading)."""
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


@functools.cache
def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, repeated ones numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(page):
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> list[str]:
    """Relative link targets of a page, outside code blocks."""
    return [t for line in prose_lines(page) for t in LINK.findall(line) if not re.match(r"[a-z]+:", t)]


def test_slug_follows_githubs_rules():
    assert slug(" The long recipe's goal at 20 points: what has been tried") == \
        "the-long-recipes-goal-at-20-points-what-has-been-tried"
    assert slug("Longer, on more real video, and larger crops (2026-12-05)") == \
        "longer-on-more-real-video-and-larger-crops-2026-12-05"
    assert slug("`motionprop transfer`: label propagation") == "motionprop-transfer-label-propagation"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT) if ROOT in file.parents else file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.name}: broken links: " + "; ".join(broken)
