"""Cell formatters shared by the Markdown (:mod:`harness.leaderboard.report`) and HTML
(:mod:`harness.leaderboard.html`) writers: mean ± std (n), counts, the suite average, baselines, the
paired tests' Δ. Below both, so that neither writer imports the other for them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.leaderboard.examples import PairedTest
from harness.leaderboard.table import Board, SuiteAverage


def _fmt(mean: float, std: float, n: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    s = f"{mean:.4f}"
    if n and n > 1 and not math.isnan(std):
        s += f" ± {std:.4f}"
    return s + f" (n={int(n)})" if n else s


def _fmt_int(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{int(v):,}"


def _fmt_float(v: float, digits: int) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _rows(board: Board, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """method → its row of a board table, in the board's task order (one array, not a pandas lookup per cell)."""
    frame = frame.reindex(index=board.scores.index, columns=board.scores.columns)
    return dict(zip(frame.index, frame.to_numpy()))


def average_header(avg: SuiteAverage) -> str:
    """The suite-average column's header: its label (which says when it covers part of the suite), ↑."""
    return f"{avg.label} ↑"


def average_cell(avg: SuiteAverage, method: str) -> str:
    """mean ± std (n) of one method's suite average; "—" when it lacks a task (the board's notes say which)."""
    return _fmt(float(avg.mean.get(method, np.nan)), float(avg.std.get(method, np.nan)),
                float(avg.n_seeds.get(method, 0.0)))


def board_title(board: Board) -> str:
    return f"budget={board.budget} · model={board.model} · suite={board.suite}"


BELOW_MARK = "†"   # a cell whose interval does not clear its task's trivial baseline
CAPACITY_MARK = "‡"   # a method whose adapter count is more than ±10% off budget.trainable_params

PAIRED_ALPHA = 0.05


def paired_cell(pt: PairedTest | None) -> str:
    """Δ (reference − method) to 3 places, ** for p < 0.01, * for p < 0.05; "—" when not tested."""
    if pt is None:
        return "—"
    star = "**" if pt.pvalue < 0.01 else "*" if pt.pvalue < PAIRED_ALPHA else ""
    return f"{pt.diff:+.3f}{star}"


def _baseline_cell(board: Board, task: str) -> str:
    v = board.baseline.get(task)
    if v is None or math.isnan(v):
        return "—"
    kind = board.baseline_kind.get(task)
    return f"{v:.4f}" + (f" ({kind})" if kind else "")
