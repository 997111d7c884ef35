"""The leaderboard modules import one another without cycles (type-only and function-level imports
included): verdict and html read a BoardReport and the cell formatters from modules below report."""
from __future__ import annotations

import ast
from pathlib import Path

import harness.leaderboard

PKG = Path(harness.leaderboard.__file__).parent


def _imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in sorted(PKG.glob("*.py")):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("harness.leaderboard."):
                    deps.add(node.module.rsplit(".", 1)[1])
                elif node.module == "harness.leaderboard":
                    deps |= {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("harness.leaderboard.")}
        out[f.stem] = deps - {f.stem}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d):], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles_in_the_leaderboard_package() -> None:
    graph = _imports()
    assert {"report", "verdict", "html", "board_report", "cells"} <= set(graph)
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])
    assert "report" not in graph["verdict"] and "report" not in graph["html"]


def test_the_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
