"""Every relative link in README.md and docs/*.md points to a file in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = ("method.md", "design.md", "formats.md", "conventions.md")
# [text](target) outside code; images too; the target ends at whitespace or ")"
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    links = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in links if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_docs_pages_exist() -> None:
    for name in DOCS:
        assert (REPO / "docs" / name).is_file(), name


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_relative_links_point_to_files_in_the_repository(page: Path) -> None:
    bad = []
    for target in _relative_links(page):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or not path.is_relative_to(REPO):
            bad.append(target)
    assert not bad, f"{page.relative_to(REPO)} links to missing or outside files: {bad}"


def test_the_link_finder_sees_links_and_skips_code(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "[a](docs/x.md) ![img](y.png) [web](https://example.org) [top](#anchor)\n"
        "`[code](not/a/link.md)`\n```\n[fenced](nor/this.md)\n```\n[b](../z.md#part)\n"
    )
    assert _relative_links(page) == ["docs/x.md", "y.png", "../z.md#part"]
