"""Sphinx configuration for peftbench's documentation (`make docs`; strict, offline: `make test` builds it too).

Sphinx + MyST rather than MkDocs: MkDocs itself has had no release since 2024-08 (mkdocs-material carries it),
while Sphinx and myst-parser release regularly, autodoc reads the docstrings without a plugin chain, and
`-W` turns every broken cross-reference, missing page and orphan page into an error (docs/design.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(DOCS / "_ext"), str(ROOT)]

from harness import __version__

project = "peftbench"
author = "peftbench contributors"
copyright = "2026, peftbench contributors"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "peftbench_docs",   # docs/_ext: the generated reference tables and the `runnable` block class
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]   # generated tables are included by the reference pages, not pages
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3          # [text](page.md#a-heading) links are checked like page links
suppress_warnings: list[str] = []   # nothing is waived: every warning fails `make docs`

html_theme = "alabaster"          # ships with Sphinx: no theme package, nothing fetched at build time
html_static_path = ["_static"]
html_css_files = ["peftbench.css"]
html_title = f"peftbench {__version__}"
html_theme_options = {"description": "fair PEFT comparisons, social-choice leaderboards",
                      "fixed_sidebar": True, "page_width": "1180px", "sidebar_width": "240px"}

autodoc_default_options: dict[str, object] = {}   # each automodule names the members it documents
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True  # defaults as written (PROJECT_ROOT / "results"), not this machine's paths
highlight_language = "text"       # docstrings are shown as literal text; fenced code names its language
