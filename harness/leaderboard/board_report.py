"""What one board's analysis holds: :class:`BoardReport`, computed by :mod:`harness.leaderboard.report` and
read by the writers (Markdown, CSV, JSON, HTML, W&B) and by :mod:`harness.leaderboard.verdict`.

Its own module, below all of them, so that the verdict (which reads a report) and the report module
(which writes the verdict) do not import each other, not even for types.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.examples import PairedTest
from harness.leaderboard.rules import Ranking
from harness.leaderboard.stats import BootstrapRule, rank_positions
from harness.leaderboard.table import Board


def position_of(ranking: Ranking) -> dict[str, int]:
    """Rank position per method (1 = best) as integers for the tables: stats.rank_positions' ranks."""
    return {name: int(p) for name, p in rank_positions(ranking).items()}


@dataclass
class BoardReport:
    """Everything computed for one board; the writers (md, csv, json, html, W&B) only format it."""

    board: Board
    rankings: dict[str, Ranking]
    agreement: pd.DataFrame
    condorcet: str | None
    n_failed: int = 0
    friedman: dict[str, Any] | None = None
    friedman_note: str | None = None          # why the test could not run
    bootstrap: dict[str, BootstrapRule] | None = None
    bootstrap_note: str | None = None         # degenerate / disabled / partial, in words
    n_boot: int = 0
    notes: list[str] = field(default_factory=list)
    # per method × task, each metric's own scale: the cell's 95% interval (over examples where the runs
    # kept outcomes, else over seeds; NaN: none), its source, and whether it fails to clear the baseline
    interval_lo: pd.DataFrame | None = None
    interval_hi: pd.DataFrame | None = None
    interval_source: pd.DataFrame | None = None
    below_baseline: pd.DataFrame | None = None
    verdict: list[str] = field(default_factory=list)   # the board's conclusion, sentence by sentence
    # task → method → the paired test of the consensus winner (``paired_reference``) against that method
    # on the same examples; None: no run on the board kept per-example outcomes (or none were loaded)
    paired: dict[str, dict[str, PairedTest]] | None = None
    paired_reference: str | None = None
    # the instance-level rule (harness.leaderboard.instance): examples → tasks → overall, beside the
    # rules (it reads the outcomes, not the table); each task's Borda count per method. None: no outcomes
    instance: Ranking | None = None
    instance_counts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def live(self) -> list[str]:
        """Rules that produced a ranking (not skipped)."""
        return [r for r, rk in self.rankings.items() if not rk.skipped]

    def positions(self) -> pd.DataFrame:
        """Methods × live rules, rank position (1 = best)."""
        idx = self.board.scores.index
        pos = {r: position_of(self.rankings[r]) for r in self.live}
        return pd.DataFrame({r: [pos[r].get(m, np.nan) for m in idx] for r in self.live}, index=idx, dtype=float)

    def order(self) -> list[str]:
        """Methods sorted by the first live rule, then name."""
        order = list(self.board.scores.index)
        if self.live:
            pos = position_of(self.rankings[self.live[0]])
            order.sort(key=lambda m: (pos.get(m, math.inf), m))
        return order
