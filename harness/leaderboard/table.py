"""Records → long table → per-cell aggregates over seeds → method × task matrices.

Each stage is a plain DataFrame so a rule, a plot or a user's notebook can start from any of them.
Boards are keyed by (budget, model, suite): rankings never mix budgets, and methods are compared
on the same backbone.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.tuning import is_validation_run
from harness.records import iter_records

BOARD_KEYS = ("budget", "model", "suite")
CELL_KEYS = (*BOARD_KEYS, "task", "method", "metric")
LONG_COLUMNS = ["signature", "status", "method", "model", "task", "suite", "budget", "seed", "metric",
                "value", "direction", "primary", "trainable_params", "total_params", "peak_memory_mb",
                "train_time_s", "task_version", "hardware"]


def long_table(records: Iterable[Mapping[str, Any]], *, include_failed: bool = False) -> pd.DataFrame:
    """One row per (record, metric). Failed/cancelled runs have no metrics; they are counted apart.

    Rows are built as tuples in LONG_COLUMNS order (not dicts): at 100k records that halves the cost.
    """
    rows: list[tuple[Any, ...]] = []
    for rec in records:
        rows += record_rows(rec, include_failed=include_failed)
    return rows_frame(rows)


def hardware_label(meta: Mapping[str, Any] | None) -> str | None:
    """What a run's time and memory were measured on: 'cuda: <GPU name>' or 'cpu: <CPU model>' (None
    when the record does not say). Boards flag a mix, since those costs do not compare across it."""
    meta = meta or {}
    device = meta.get("device")
    if not isinstance(device, str) or not device:
        return None
    hw = meta.get("hardware") or {}
    kind, _, index = device.partition(":")
    if kind == "cuda":
        gpus = hw.get("gpus") or []
        idx = int(index) if index.isdigit() else 0
        return f"cuda: {gpus[idx]}" if idx < len(gpus) else "cuda"
    if device == "cpu" and hw.get("cpu"):
        return f"cpu: {hw['cpu']}"
    return device


def record_rows(rec: Mapping[str, Any], *, include_failed: bool = False) -> list[tuple[Any, ...]]:
    """The long-table rows (LONG_COLUMNS order) of one record; `long_table` is these, concatenated."""
    run = rec["run"]
    if is_validation_run(rec):   # a search trial: tuning, not a result
        return []
    hardware = hardware_label(rec.get("meta"))
    if run["status"] != "success":
        if include_failed:
            return [(run["signature"], run["status"], run["method"], run["model"], run["task"],
                     run.get("suite"), run["budget"], run["seed"], None, float("nan"), None, None, float("nan"),
                     float("nan"), float("nan"), float("nan"), None, hardware)]
        return []
    ev, tr = rec["eval"], rec["train"]
    primary = ev["primary_metric"]
    head = (run["signature"], "success", run["method"], run["model"], run["task"], run.get("suite") or "",
            run["budget"], run["seed"])
    tail = (tr["trainable_params"], tr["total_params"], tr["peak_memory_mb"], tr["train_time_s"],
            ev["task_version"], hardware)
    return [(*head, name, m["value"], m["direction"], name == primary, *tail) for name, m in ev["metrics"].items()]


def rows_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The long table from rows in LONG_COLUMNS order."""
    return pd.DataFrame.from_records(rows, columns=LONG_COLUMNS, coerce_float=True)


def load_long_table(results_dir: Path, **kwargs: Any) -> pd.DataFrame:
    return long_table(iter_records(results_dir), **kwargs)


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed), n seeds and a 95% t-interval half-width per cell."""
    ok = long[long["status"] == "success"]
    if ok.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "direction", "primary", "mean", "std", "n_seeds", "ci95",
                                     "trainable_params", "peak_memory_mb", "train_time_s"])
    g = ok.groupby(list(CELL_KEYS), dropna=False, sort=True)
    out = g.agg(direction=("direction", "first"), primary=("primary", "first"), mean=("value", "mean"),
                std=("value", "std"), n_seeds=("seed", "nunique"),
                trainable_params=("trainable_params", "median"), peak_memory_mb=("peak_memory_mb", "median"),
                train_time_s=("train_time_s", "median")).reset_index()
    from scipy import stats

    # t quantile once per distinct seed count (a handful), not once per cell: 40k scipy calls took seconds
    n = out["n_seeds"].to_numpy(dtype=float)
    uniq = np.unique(n[n > 1])
    lookup = dict(zip(uniq.tolist(), stats.t.ppf(0.975, uniq - 1).tolist()))
    tcrit = np.array([lookup.get(k, np.nan) for k in n.tolist()])
    out["ci95"] = tcrit * out["std"].to_numpy(dtype=float) / np.sqrt(n)
    return out


@dataclass
class Board:
    """One leaderboard: a (budget, model, suite) slice, primary metric per task."""

    budget: str
    model: str
    suite: str
    scores: pd.DataFrame          # method × task, raw primary-metric means
    std: pd.DataFrame             # method × task, std over seeds
    n_seeds: pd.DataFrame         # method × task
    directions: dict[str, str]    # task → max|min
    metrics: dict[str, str]       # task → primary metric name
    cost: pd.DataFrame            # method → trainable_params, peak_memory_mb, train_time_s (medians)
    min_seeds: int | None = None  # budget.seeds; cells with fewer are flagged
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.budget}__{self.model}__{self.suite}".replace("/", "-")

    def oriented(self) -> pd.DataFrame:
        """Higher-is-better view for the ranking rules (lower-is-better columns negated)."""
        out = self.scores.copy()
        for task, d in self.directions.items():
            if d == "min":
                out[task] = -out[task]
        return out


COST_COLUMNS = ["trainable_params", "peak_memory_mb", "train_time_s"]


def hardware_by_board(long: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, int]]:
    """(budget, model, suite) → {hardware label: successful runs}, for runs whose record names it."""
    ok = long[(long["status"] == "success") & long["hardware"].notna()] if "hardware" in long else long.iloc[:0]
    if ok.empty:
        return {}
    runs = ok.drop_duplicates("signature").groupby([*BOARD_KEYS, "hardware"], sort=True).size()
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for (budget, model, suite, hw), n in runs.items():
        out.setdefault((str(budget), str(model), str(suite)), {})[str(hw)] = int(n)
    return out


def boards(agg: pd.DataFrame, *, min_seeds: Mapping[str, int] | None = None,
           hardware: Mapping[tuple[str, str, str], Mapping[str, int]] | None = None) -> list[Board]:
    """Split the aggregate table into boards on the primary metric of each task.

    ``hardware`` (from :func:`hardware_by_board`) adds a note to every board whose runs were measured
    on more than one kind of device: its time and memory columns then do not compare like for like.

    Sorted once, then each board is a contiguous slice filled into numpy matrices: per-board pandas
    pivots/groupbys cost ~6 ms of index building each, which dominated at a hundred boards.
    """
    prim = agg[agg["primary"].astype(bool)]
    if prim.empty:
        return []
    prim = prim.sort_values([*BOARD_KEYS, "method", "task"], kind="stable")
    bid = prim.groupby(list(BOARD_KEYS), sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]])
    ends = np.r_[starts[1:], len(bid)]
    cols = {c: prim[c].to_numpy() for c in (*BOARD_KEYS, "method", "task", "direction", "metric")}
    vals = {c: prim[c].to_numpy(dtype=float) for c in ("mean", "std", "n_seeds", *COST_COLUMNS)}
    out: list[Board] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        budget, model, suite = (cols[k][a] for k in BOARD_KEYS)
        methods, mi = np.unique(cols["method"][a:b].astype(str), return_inverse=True)
        tasks, ti = np.unique(cols["task"][a:b].astype(str), return_inverse=True)
        mats = {}
        for c in ("mean", "std", "n_seeds", *COST_COLUMNS):
            m = np.full((len(methods), len(tasks)), np.nan)
            m[mi, ti] = vals[c][a:b]
            mats[c] = m
        index = pd.Index(methods.tolist(), name="method")
        columns = pd.Index(tasks.tolist(), name="task")
        scores, std, n = (pd.DataFrame(mats[c], index=index, columns=columns) for c in ("mean", "std", "n_seeds"))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cost rows stay NaN
            cost = pd.DataFrame({c: np.nanmedian(mats[c], axis=1) for c in COST_COLUMNS}, index=index)
        board = Board(budget=str(budget), model=str(model), suite=str(suite), scores=scores, std=std,
                      n_seeds=n, directions=dict(zip(cols["task"][a:b].tolist(), cols["direction"][a:b].tolist())),
                      metrics=dict(zip(cols["task"][a:b].tolist(), cols["metric"][a:b].tolist())), cost=cost,
                      min_seeds=(min_seeds or {}).get(str(budget)))
        if scores.isna().any().any():
            board.notes.append(f"{int(scores.isna().sum().sum())} method×task cell(s) have no successful run")
        if board.min_seeds and (n.fillna(0) < board.min_seeds).any().any():
            board.notes.append(f"some cells have fewer than the {board.min_seeds} seeds budget {budget!r} asks for")
        mix = (hardware or {}).get((board.budget, board.model, board.suite), {})
        if len(mix) > 1:
            kinds = ", ".join(f"{hw} ({k} run{'s' if k != 1 else ''})" for hw, k in sorted(mix.items()))
            board.notes.append(f"runs measured on different hardware — {kinds}: train time and peak memory "
                               "do not compare across them")
        out.append(board)
    return out
