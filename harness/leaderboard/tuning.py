"""Search budgets on the leaderboard: trials stay off it, and each board says how its methods were tuned.

A search trial is scored on a validation split carved from train; it is a tuning step, not a result,
so it never enters a board. The final runs of ``peftbench tune`` carry a ``tuning`` block, and tune
leaves a pointer per final record under ``results/studies/tuned/`` so a board can state whether every
method had the same number of trials without rereading every record.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def is_validation_run(rec: Mapping[str, Any]) -> bool:
    """A job evaluated on the carved validation split (every search trial): never ranked."""
    task = ((rec.get("run") or {}).get("spec") or {}).get("task") or {}
    return task.get("eval_split") == "validation" or bool((rec.get("run") or {}).get("search"))


def tuned_pointers(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((Path(results_dir) / "studies" / "tuned").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def search_budget_note(methods: Iterable[str], tuned: Mapping[str, set[int]]) -> str | None:
    """The board's statement: equal search budget, or which methods had more (None: nothing tuned)."""
    methods = sorted(methods)
    if not any(m in tuned for m in methods):
        return None
    counts = {m: tuned.get(m, set()) for m in methods}
    distinct = set().union(*counts.values())
    if all(len(c) == 1 for c in counts.values()) and len(distinct) == 1:
        n = distinct.pop()
        return (f"equal search budget: every method had {n} Optuna trial(s) per task on a validation split "
                f"carved from train (peftbench tune); the reported split was used only for the final runs")
    parts = [f"{m} {'/'.join(map(str, sorted(c)))} trial(s)" if c else f"{m} untuned" for m, c in counts.items()]
    return ("UNEQUAL search budget: " + ", ".join(parts)
            + " — methods searched more are favoured; compare with care")


def add_search_notes(boards: list[Any], results_dir: Path, ok_signatures: Iterable[str]) -> list[Any]:
    """Append each board's search-budget statement to its notes (boards without tuned runs: none)."""
    ok = set(ok_signatures)
    by_board: dict[tuple[str, str, str], dict[str, set[int]]] = {}
    for p in tuned_pointers(results_dir):
        if p.get("signature") in ok and p.get("trials") is not None:
            key = (str(p["budget"]), str(p["model"]), str(p.get("suite") or ""))
            by_board.setdefault(key, {}).setdefault(str(p["method"]), set()).add(int(p["trials"]))
    for board in boards:
        note = search_budget_note(board.scores.index, by_board.get((board.budget, board.model, board.suite), {}))
        if note:
            board.notes.append(note)
    return boards
