"""A suite's conventional average (the GLUE score, commonsense-8's "Avg."), as a reported column.

The average is what papers print next to the per-task numbers, so a reader can compare a board with
the literature; it is *not* a ranking rule (the social-choice rules keep ranking the voters).

The convention comes from ``tasks.suites`` (``conf/suite/<name>.yaml``):

* averaging *units* are the suite's tasks; a unit may gather several voters first (GLUE's MNLI is
  the mean of MNLI-m and MNLI-mm accuracy);
* ``metrics: all``: a voter scores the mean of all its metrics (MRPC = mean(accuracy, F1), STS-B =
  mean(Pearson, Spearman)); ``metrics: primary``: its primary metric only;
* the suite score is the unweighted mean over units.

:func:`unit_scores` and :func:`suite_average` are plain functions of a table of per-(task, metric)
scores, so the convention can be checked against a published leaderboard on its own.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.leaderboard.table import Board, SuiteAverage

if TYPE_CHECKING:
    from tasks.suites import Suite


def _as_frame(scores: pd.DataFrame | Mapping[tuple[str, str], float]) -> tuple[pd.DataFrame, bool]:
    """A table of rows (systems, or method × seed) and (task, metric) columns; True when one system."""
    if isinstance(scores, pd.DataFrame):
        return scores, False
    cols = pd.MultiIndex.from_tuples(list(scores), names=["task", "metric"])
    return pd.DataFrame([list(scores.values())], columns=cols, dtype=float), True


def unit_scores(scores: pd.DataFrame | Mapping[tuple[str, str], float], suite: Suite, *,
                primary: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Rows × the suite's averaging units (in suite order): each unit the mean of its voters, each
    voter the mean of its metrics (the suite's ``task_metrics`` for that voter when it names them, all
    of them present; else ``metrics: all``: every (voter, metric) column given; ``primary``: the
    column of ``primary[voter]``). A missing voter, or a NaN among what a unit averages, leaves
    the unit NaN: a unit is never scored on part of its definition.

    ``scores`` has (task, metric) column pairs (a DataFrame with a 2-level column index, or one
    system's ``{(task, metric): value}``). Under ``all`` the caller passes only the metrics the
    convention averages (the leaderboard drops metrics whose direction differs from the task's
    primary metric: averaging a loss with an accuracy means nothing).
    """
    frame, _ = _as_frame(scores)
    by_task: dict[str, list[Any]] = {}
    for col in frame.columns:
        by_task.setdefault(str(col[0]), []).append(col)
    values = frame.to_numpy(dtype=float)
    where = {col: j for j, col in enumerate(frame.columns)}
    nan = np.full(len(frame), np.nan)
    out: dict[str, np.ndarray] = {}
    for unit, voters in suite.units():
        per_voter = []
        for voter in voters:
            cols = by_task.get(voter, [])
            named = suite.task_metrics.get(voter)
            if named:  # exactly these metrics (CoLA: Matthews, not the accuracy it also records)
                have = {str(c[1]): c for c in cols}
                cols = [have[m] for m in named] if all(m in have for m in named) else []
            elif suite.average_metrics == "primary":
                if primary is not None:
                    cols = [c for c in cols if str(c[1]) == primary.get(voter)]
                elif len(cols) > 1:
                    raise ValueError(f"{voter}: several metrics given and no primary metric named")
            per_voter.append(values[:, [where[c] for c in cols]].mean(axis=1) if cols else nan)
        out[unit] = np.mean(per_voter, axis=0)
    return pd.DataFrame(out, index=frame.index, columns=[u for u, _ in suite.units()])


def suite_average(scores: pd.DataFrame | Mapping[tuple[str, str], float], suite: Suite, *,
                  primary: Mapping[str, str] | None = None,
                  units: Sequence[str] | None = None) -> pd.Series | float:
    """The suite score per row: the unweighted mean over ``units`` (default: all the suite's units) of
    :func:`unit_scores`; NaN for a row lacking any of them (never a mean over fewer units). One
    system's mapping gives a float."""
    frame, single = _as_frame(scores)
    per_unit = unit_scores(frame, suite, primary=primary)
    use = list(units) if units is not None else list(per_unit.columns)
    avg = per_unit[use].mean(axis=1, skipna=False) if use else pd.Series(np.nan, index=per_unit.index)
    return float(avg.iloc[0]) if single else avg


def describe(suite: Suite) -> str:
    """The averaging convention in one sentence, for the reader of a board."""
    units = suite.units()
    parts = [f"unweighted mean over the suite's {len(units)} task{'s' if len(units) != 1 else ''}"]
    if suite.average_metrics == "all":
        parts.append("a task with several metrics counts as their mean")
    else:
        parts.append("each task's primary metric")
    parts += [f"{v}: {', '.join(ms)} only" for v, ms in suite.task_metrics.items()]
    parts += [f"{u} = mean of {', '.join(vs)}" for u, vs in units if vs != (u,)]
    return ("Convention: " + "; ".join(parts) + ". Mean over seeds; ± = std over seeds of each seed's average. "
            "Reported, not used for ranking.")


def board_average(board: Board, part: pd.DataFrame, suite: Suite) -> tuple[SuiteAverage | None, list[str]]:
    """The suite-average column of ``board`` from its successful long-table rows ``part`` (all metrics,
    one value per cell and seed), with the notes a reader needs; (None, notes) when it cannot be
    computed honestly on this board."""
    name = suite.average_name
    voters = set(suite.voters)
    dirs = {board.directions[t] for t in board.scores.columns if t in voters}
    if not dirs:
        return None, []
    if len(dirs) > 1:
        note = f"{name} not shown: this board's {name} tasks mix higher- and lower-is-better primary metrics"
        return None, [note]
    part = part[part["task"].isin(voters)]
    if suite.average_metrics == "primary":
        part = part[part["primary"].astype(bool)]
    else:  # every metric of the task's primary direction
        want = part["task"].map(board.directions)
        part = part[part["direction"] == want]
    table = (part.groupby(["method", "seed", "task", "metric"], sort=True)["value"].mean()
             .unstack(["task", "metric"]))
    per_seed_units = unit_scores(table, suite)
    unit_means = per_seed_units.groupby(level="method", sort=True).mean()
    unit_means = unit_means.reindex(board.scores.index)
    present = [u for u in unit_means.columns if unit_means[u].notna().any()]
    suite_units = tuple(unit_means.columns)
    if not present:
        return None, [f"{name} not shown: no method has a complete score on any of the suite's tasks"]
    covered = unit_means[present].notna().all(axis=1)
    mean = unit_means[present].mean(axis=1).where(covered)
    per_seed = per_seed_units[present].mean(axis=1, skipna=False)
    std = per_seed.groupby(level="method").std(ddof=1).reindex(board.scores.index).where(covered)
    n = per_seed.groupby(level="method").count().reindex(board.scores.index).fillna(0).where(covered, 0)
    lacking = {str(m): [u for u in present if math.isnan(unit_means.at[m, u])]
               for m in board.scores.index if not covered[m]}
    notes: list[str] = []
    label = name
    if len(present) < len(suite_units):
        label = f"{name} over {len(present)} of {len(suite_units)} tasks"
        missing = [u for u in suite_units if u not in present]
        notes.append(f"{label}: this board has no complete score on {', '.join(missing)}; the column "
                     f"averages the same {len(present)} task(s) for every method, so it does not compare "
                     f"with a published {name}")
    if lacking:
        who = "; ".join(f"{m} (no {', '.join(u)})" for m, u in lacking.items())
        notes.append(f"{name} left blank for {len(lacking)} method(s) lacking some of its task(s): {who}. "
                     "A mean over fewer tasks would not compare with the other methods'")
    avg = SuiteAverage(name=name, label=label, description=describe(suite), units=tuple(present),
                       suite_units=suite_units, mean=mean.astype(float), std=std.astype(float),
                       n_seeds=n.astype(float), lacking=lacking)
    return avg, notes


def known_suites(names: Iterable[str] | None = None) -> dict[str, Suite]:
    """Every suite of conf/suite; an invalid suite file only costs the average columns (with a warning),
    never the leaderboard. With ``names`` (the boards' suites), nothing is imported or parsed unless
    one of them has a conf/suite file: boards of ad-hoc suites pay a stat per suite."""
    from harness.spec import CONF_DIR

    if names is not None and not any((Path(CONF_DIR) / "suite" / f"{n}.yaml").is_file() for n in set(names) if n):
        return {}
    try:
        from tasks.suites import load_suites

        return load_suites()
    except (ImportError, OSError, ValueError) as exc:
        print(f"peftbench leaderboard: warning: suite averages left out ({exc})", file=sys.stderr)
        return {}


def attach_averages(boards: Sequence[Board], ok: pd.DataFrame, suites: Mapping[str, Suite]) -> None:
    """Set ``board.average`` (and its notes) on every board whose suite is known. ``ok``: successful
    long-table rows, one value per (cell, seed) (:func:`table.one_value_per_seed`). Only the boards of
    known suites pay for this (a groupby on their own rows)."""
    wanted = [b for b in boards if b.suite in suites]
    if not wanted or ok.empty:
        return
    part_all = ok[ok["suite"].isin({b.suite for b in wanted})]
    groups = dict(iter(part_all.groupby(["budget", "model", "suite"], sort=False)))
    for b in wanted:
        part = groups.get((b.budget, b.model, b.suite))
        if part is None:
            continue
        avg, notes = board_average(b, part, suites[b.suite])
        b.average = avg
        b.notes += notes
