"""Shell blocks of the docs (docs/**/*.md): every `bash` block is a MyST `{code-block} bash` with one class,
`runnable` or the reason it is not (docs/reference/docs-conventions.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SHELLS = ("bash", "sh", "shell", "console")
RUNNABLE = "runnable"
REASONS = ("needs-gpu", "needs-hub", "needs-network", "needs-slurm", "needs-setup", "needs-minutes", "needs-hours")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    page: str          # path under docs/
    line: int          # 1-based line of the opening fence
    language: str
    classes: tuple[str, ...]
    directive: bool    # a {code-block} directive (classifiable), not a bare fence
    code: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def pages() -> list[Path]:
    skip = {"_build", "_generated"}
    return sorted(p for p in DOCS.rglob("*.md") if not skip & set(p.relative_to(DOCS).parts))


def blocks(path: Path) -> list[Block]:
    """Top-level fenced blocks of one page, with their directive options; a fence inside a longer fence (an
    example of the convention itself) is content, not a block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) and not close["info"].strip():
                break
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        directive = info.startswith(("{code-block}", "{code}"))
        language = info.split(None, 1)[1].strip() if directive and len(info.split()) > 1 else info.split(" ")[0]
        classes: tuple[str, ...] = ()
        if directive:
            while body and body[0].startswith(":"):
                key, _, value = body.pop(0)[1:].partition(":")
                if key.strip() == "class":
                    classes = tuple(value.split())
            while body and not body[0].strip():
                body.pop(0)
        out.append(Block(str(path.relative_to(DOCS)), start + 1, language, classes, directive, "\n".join(body) + "\n"))
    return out


def shell_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks(p) if b.language in SHELLS]


def runnable_by_page() -> dict[str, list[Block]]:
    out: dict[str, list[Block]] = {}
    for b in shell_blocks():
        if RUNNABLE in b.classes:
            out.setdefault(b.page, []).append(b)
    return out
