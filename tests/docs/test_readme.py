"""The README stays a short front page (issue #22): at most 200 lines, the two commands, and links into the
docs that resolve (Sphinx checks links between pages; the README is outside the site, so it is checked here)."""
from __future__ import annotations

import re

from tests.docs.blocks import ROOT

README = ROOT / "README.md"
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_readme_is_short_and_shows_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "make demo" in text and "make test" in text and "make docs" in text


def test_readme_links_resolve() -> None:
    targets = [m[1] for m in LINK.finditer(README.read_text(encoding="utf-8")) if "://" not in m[1]]
    assert sum(t.startswith("docs/") for t in targets) >= 10, "the README links into the docs"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
