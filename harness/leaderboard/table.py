"""Records → long table → per-cell aggregates over seeds → method × task matrices.

Each stage is a plain DataFrame so a rule, a plot or a user's notebook can start from any of them.
Boards are keyed by (budget, model, suite): rankings never mix budgets, and methods are compared
on the same backbone.

A record whose eval block carries ``subtasks`` (one trained model evaluated on several sets: MNLI
matched/mismatched, ``commonsense/all``'s eight test sets) gives one row-set per subtask, the task
being the subtask's key; :func:`one_value_per_seed` keeps such a record from adding a second value
to a (cell, seed) that another record already fills.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.capacity import TOLERANCE as CAPACITY_TOLERANCE
from harness.leaderboard.external import board_budget
from harness.leaderboard.tuning import is_validation_run
from harness.records import iter_records

BOARD_KEYS = ("budget", "model", "suite")
# costs as peft's method comparison reports them (harness.costs): the accelerator's peak allocated memory and
# its reserved memory's per-step mean and 99th percentile (MiB; NaN off a GPU and in older records), and the
# tokens per second of training and of evaluation, and GPU-hours (training time × the GPUs the job held)
DEVICE_COST_COLUMNS = ["accelerator_max_mb", "accelerator_reserved_avg_mb", "accelerator_reserved_p99_mb",
                       "train_tokens_per_s", "eval_tokens_per_s", "gpu_hours"]
CELL_KEYS = (*BOARD_KEYS, "task", "method", "metric")
LONG_COLUMNS = ["signature", "status", "method", "model", "task", "suite", "budget", "seed", "metric",
                "value", "direction", "primary", "trainable_params", "total_params", "peak_memory_mb",
                "train_time_s", "task_version", "hardware", "subtask", "baseline", "baseline_kind", "n_outcomes",
                "outcome_sum", "outcome_key", "capacity_target", "capacity_params", *DEVICE_COST_COLUMNS]
NAN = float("nan")


def _baseline_of(block: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(metric → trivial-baseline value, kind) of one evaluated set; ({}, None) for records without one."""
    base = block.get("baseline") or {}
    return base.get("metrics") or {}, base.get("kind")


def _outcome_totals(block: Mapping[str, Any], metric: str, primary: str) -> tuple[float, float, float]:
    """(examples, examples right, key) of one set's per-example outcomes on the row of ``metric``.

    The totals are set when the outcomes are right/wrong by ``metric`` (the mean of the outcomes is then
    that metric); NaNs otherwise. Only the two totals enter the long table: they are all an interval
    over examples needs (:mod:`harness.leaderboard.examples`), and decoding the bits of 100k records
    would cost the regeneration its bar (a ``label`` block's sum counts the examples right: the totals
    of its accuracy row). The key (:func:`outcome_key`) is set on the row the outcomes score (right/wrong
    and labels: their metric; predictions: the primary metric), so that a board's cache key sees
    the outcomes themselves, which the paired tests read, and not only their totals."""
    oc = block.get("outcomes")
    if not oc:
        return NAN, NAN, NAN
    kind = oc.get("kind")
    scored = oc.get("metric") == metric if kind in ("correct", "label") else metric == primary
    key = outcome_key(oc) if scored else NAN
    # right/wrong totals: the outcomes' own metric (correct), or accuracy (label: sum = examples right)
    if (kind == "correct" and scored) or (kind == "label" and metric == "accuracy"):
        return float(oc["n"]), float(oc["sum"]), key
    return NAN, NAN, key


def outcome_key(block: Mapping[str, Any]) -> float:
    """A 52-bit digest of an outcomes block (kind, n and its inline data or its sidecar's sha256) as a
    float (exact below 2**53, so the long table keeps it in a float column and the record cache stores
    it as plain float64): equal keys, equal outcomes. One sha256 of ~170 characters per set, paid when a
    record file is parsed, never on a cached regeneration."""
    import hashlib

    ref = block.get("data") if "data" in block else block.get("sha256")
    text = f"{block.get('kind')}|{block.get('n')}|{block.get('metric')}|{ref}"
    return float(int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:13], 16))


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
    budget = board_budget(run)   # an external record's budget names its publisher: a board of its own
    if run["status"] != "success":
        if include_failed:
            return [(run["signature"], run["status"], run["method"], run["model"], run["task"],
                     run.get("suite"), budget, run["seed"], None, NAN, None, None, NAN, NAN, NAN, NAN, None,
                     hardware, False, NAN, None, NAN, NAN, NAN, NAN, NAN, *(NAN,) * len(DEVICE_COST_COLUMNS))]
        return []
    ev, tr = rec["eval"], rec["train"]
    cost = (tr["trainable_params"], tr["total_params"], tr["peak_memory_mb"], tr["train_time_s"])
    # budget.trainable_params: the target and the adapter count the method reached (harness.capacity)
    cap = (rec.get("meta") or {}).get("capacity") or {}
    capacity = (_num(cap.get("target")), _num(cap.get("adapter_params")), *device_costs(tr, ev))
    subtasks = ev.get("subtasks")
    if subtasks:
        # one row-set per evaluated set; the record's own `metrics` repeat the first set's (kept for
        # readers that predate subtasks) and are not read again here
        out: list[tuple[Any, ...]] = []
        for task, sub in subtasks.items():
            head = (run["signature"], "success", run["method"], run["model"], task, run.get("suite") or "",
                    budget, run["seed"])
            tail = (*cost, sub.get("task_version", ev["task_version"]), hardware, True)
            primary = sub["primary_metric"]
            base, kind = _baseline_of(sub)
            out += [(*head, name, m["value"], m["direction"], name == primary, *tail, _num(base.get(name)), kind,
                     *_outcome_totals(sub, name, primary), *capacity) for name, m in sub["metrics"].items()]
        return out
    primary = ev["primary_metric"]
    head = (run["signature"], "success", run["method"], run["model"], run["task"], run.get("suite") or "",
            budget, run["seed"])
    tail = (*cost, ev["task_version"], hardware, False)
    base, kind = _baseline_of(ev)
    return [(*head, name, m["value"], m["direction"], name == primary, *tail, _num(base.get(name)), kind,
             *_outcome_totals(ev, name, primary), *capacity) for name, m in ev["metrics"].items()]


def device_costs(train: Mapping[str, Any], ev: Mapping[str, Any]) -> tuple[float, ...]:
    """The DEVICE_COST_COLUMNS of one record (NaN for what it does not carry)."""
    mem = train.get("memory") or {}
    return (_num(mem.get("allocated_max_mb")), _num(mem.get("reserved_avg_mb")), _num(mem.get("reserved_p99_mb")),
            _num(train.get("tokens_per_s")), _num(ev.get("tokens_per_s")), _num(train.get("gpu_hours")))


def _num(v: Any) -> float:
    return NAN if v is None else float(v)


def rows_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """The long table from rows in LONG_COLUMNS order."""
    return pd.DataFrame.from_records(rows, columns=LONG_COLUMNS, coerce_float=True)


def load_long_table(results_dir: Path, **kwargs: Any) -> pd.DataFrame:
    return long_table(iter_records(results_dir), **kwargs)


def one_value_per_seed(long: pd.DataFrame, *, success_only: bool = False) -> pd.DataFrame:
    """The long table with at most one value per (cell, seed) where a multi-set record is involved
    (``success_only``: and only successful runs, in the same single filtering pass).

    A user may run ``commonsense/all`` (eight subtask row-sets) and also ``commonsense/piqa`` for the
    same method, model, budget and seed: one cell then has two values for one seed, which would count
    as two samples in the std and the bootstrap. The dedicated single-task record wins (it is the run
    made for exactly that task); several multi-set records on one (cell, seed) are replaced by their
    mean, as one value. Rows are otherwise kept in order. Duplicates among single-task records (one
    method name used for two configurations) are left as they always were: this only resolves what
    subtasks introduced, and costs nothing when no record has subtasks.
    """
    keep = (long["status"] == "success").to_numpy(copy=True) if success_only else None
    fix = _subtask_duplicates(long)
    if fix is None:
        return long[keep] if keep is not None else long
    drop, first, mean = fix
    keep = ~drop if keep is None else keep & ~drop
    out = long[keep]
    if len(first):
        # positions among the kept rows: the rows before each `first` that were dropped shift it left
        at = first - np.cumsum(~keep)[first]
        col = out.columns.get_loc("value")
        values = out["value"].to_numpy(dtype=float, copy=True)
        values[at] = mean
        out.isetitem(col, values)
    return out


def _subtask_duplicates(long: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows to drop as a mask over ``long``, positions of rows whose value becomes a mean, those means);
    None when nothing needs resolving. Only the boards holding a multi-set record are grouped (each
    board key filtered on its own: a superset of their rows, still small), so a table of 100k
    records with a few multi-set ones pays milliseconds."""
    if "subtask" not in long.columns or long.empty:
        return None
    sub = long["subtask"].to_numpy(dtype=bool)  # every row says True or False (failed rows: False)
    if not sub.any():
        return None
    mask = (long["status"] == "success").to_numpy(copy=True)
    for key in BOARD_KEYS:
        col = long[key]
        mask &= col.isin(col[sub].unique()).to_numpy(dtype=bool)
    pos = np.flatnonzero(mask)
    part = long.iloc[pos]
    gid = part.groupby([*CELL_KEYS, "seed"], sort=False, dropna=False).ngroup().to_numpy()
    is_sub = sub[pos]
    n_dedicated = np.bincount(gid, weights=~is_sub)
    n_sub = np.bincount(gid, weights=is_sub)
    drop_part = is_sub & (n_dedicated[gid] > 0)                      # superseded by a dedicated record
    several = is_sub & (n_dedicated[gid] == 0) & (n_sub[gid] > 1)  # only multi-set records: their mean
    if not drop_part.any() and not several.any():
        return None
    first = np.zeros(len(gid), bool)
    mean = np.zeros(0)
    if several.any():
        values = part["value"].to_numpy(dtype=float)
        total = np.bincount(gid[several], weights=values[several], minlength=len(n_sub))
        _, at = np.unique(gid[several], return_index=True)
        first[np.flatnonzero(several)[at]] = True
        mean = total[gid[first]] / n_sub[gid[first]]
        drop_part |= several & ~first
    drop = np.zeros(len(long), bool)
    drop[pos[drop_part]] = True
    return drop, pos[first], mean


def aggregate(long: pd.DataFrame, *, resolved: bool = False) -> pd.DataFrame:
    """Mean, std (ddof=1; NaN for one seed), n seeds and a 95% t-interval half-width per cell (one
    value per cell and seed where a multi-set record is involved: :func:`one_value_per_seed`).
    ``resolved``: ``long`` already is ``one_value_per_seed(..., success_only=True)`` (saves a pass)."""
    ok = long if resolved else one_value_per_seed(long, success_only=True)
    if ok.empty:
        return pd.DataFrame(columns=[*CELL_KEYS, "direction", "primary", "mean", "std", "n_seeds", "ci95",
                                     *COST_COLUMNS, "baseline", "baseline_kind"])
    g = ok.groupby(list(CELL_KEYS), dropna=False, sort=True)
    out = g.agg(direction=("direction", "first"), primary=("primary", "first"), mean=("value", "mean"),
                std=("value", "std"), n_seeds=("seed", "nunique"),
                trainable_params=("trainable_params", "median"), peak_memory_mb=("peak_memory_mb", "median"),
                train_time_s=("train_time_s", "median"), capacity_target=("capacity_target", "median"),
                capacity_params=("capacity_params", "median"), baseline=("baseline", "median"),
                **{c: (c, "median") for c in DEVICE_COST_COLUMNS},
                baseline_kind=("baseline_kind", "first")).reset_index()
    from scipy import stats

    # t quantile once per distinct seed count (a handful), not once per cell: 40k scipy calls took seconds
    n = out["n_seeds"].to_numpy(dtype=float)
    uniq = np.unique(n[n > 1])
    lookup = dict(zip(uniq.tolist(), stats.t.ppf(0.975, uniq - 1).tolist()))
    tcrit = np.array([lookup.get(k, np.nan) for k in n.tolist()])
    out["ci95"] = tcrit * out["std"].to_numpy(dtype=float) / np.sqrt(n)
    return out


@dataclass
class SuiteAverage:
    """One board's suite-average column (computed by ``suites.board_average``; defined here, beside
    the Board that carries it, so that suites imports table and not the other way round): per method mean, std and n over seeds, on one set of units.

    mean: the mean over ``units`` of each unit's mean over seeds (so it equals the mean of the board's
    own columns, as the literature's tables compute it). std and n: over the seeds that have every
    unit, the std (ddof=1) of that seed's average. When every cell has the same seeds (a complete
    sweep) the mean is also the mean of the per-seed averages; seeds missing a unit are then left
    out of std and n only.
    """

    name: str                      # "GLUE score"
    label: str                     # the column header: name, or "name over k of n tasks"
    description: str               # the convention in words, shown under the table
    units: tuple[str, ...]         # the units averaged on this board (the same for every method)
    suite_units: tuple[str, ...]   # all the suite's units
    mean: pd.Series                # method → average (NaN: the method lacks a unit)
    std: pd.Series
    n_seeds: pd.Series
    lacking: dict[str, list[str]] = field(default_factory=dict)   # method → units it has no score on

    def cache_parts(self) -> list[Any]:
        """What the board cache key must see of this column (see report.board_cache_key)."""
        return [self.name, self.label, self.description, list(self.units), list(self.suite_units),
                [str(m) for m in self.mean.index], self.mean.tolist(), self.std.tolist(), self.n_seeds.tolist(),
                {m: list(u) for m, u in self.lacking.items()}]


def board_key(budget: str, model: str, suite: str) -> str:
    """The name of a board's files (``<budget>__<model>__<suite>``) and of its ``--show`` selection."""
    return f"{budget}__{model}__{suite}".replace("/", "-")


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
    average: SuiteAverage | None = None  # the suite's conventional average (GLUE score), when known
    # task → the trivial baseline of its primary metric (the records' eval.baseline, median over runs:
    # the same examples give the same value) and its kind (majority | chance | zero); absent: not recorded
    baseline: dict[str, float] = field(default_factory=dict)
    baseline_kind: dict[str, str] = field(default_factory=dict)
    # a board over criteria (harness.leaderboard.external): their names; the score columns are then the tasks
    # (accuracy) and the other criteria, and `score_columns` the tasks alone (the Pareto plots' score)
    criteria: list[str] = field(default_factory=list)

    @property
    def score_columns(self) -> list[str]:
        from harness.leaderboard.external import CRITERIA

        cols = [str(c) for c in self.scores.columns]
        return [c for c in cols if c not in CRITERIA] if self.criteria else cols

    @property
    def key(self) -> str:
        return board_key(self.budget, self.model, self.suite)

    def oriented(self) -> pd.DataFrame:
        """Higher-is-better view for the ranking rules (lower-is-better columns negated)."""
        out = self.scores.copy()
        for task, d in self.directions.items():
            if d == "min":
                out[task] = -out[task]
        return out


# medians per method; capacity_*: the budget's trainable-parameter target and the method's adapter count
# (NaN without a target), so a board can mark a method that ran off the target (capacity_policy=closest)
COST_COLUMNS = ["trainable_params", "peak_memory_mb", "train_time_s", "capacity_target", "capacity_params",
                *DEVICE_COST_COLUMNS]


# the device costs' headers and decimals in a board's cost table
DEVICE_COST_HEADERS = {"accelerator_max_mb": ("GPU mem max (MB)", 0), "accelerator_reserved_avg_mb":
                       ("GPU reserved avg (MB)", 0), "accelerator_reserved_p99_mb": ("GPU reserved p99 (MB)", 0),
                       "train_tokens_per_s": ("train tok/s", 0), "eval_tokens_per_s": ("eval tok/s", 0),
                       "gpu_hours": ("GPU-hours", 4)}


def shown_device_costs(cost: pd.DataFrame) -> list[str]:
    """The device-cost columns a board shows: those some method on it has (older records and CPU runs
    leave the accelerator's NaN, and a board of such records keeps its old table)."""
    return [c for c in DEVICE_COST_COLUMNS if c in cost and cost[c].notna().any()]


def capacity_misses(cost: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """method → (target, adapter count) for every method whose count is further than ±10% from its target."""
    if "capacity_target" not in cost:
        return {}
    t, c = cost["capacity_target"].to_numpy(dtype=float), cost["capacity_params"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(c / t - 1.0) > CAPACITY_TOLERANCE
    return {str(m): (float(t[i]), float(c[i])) for i, m in enumerate(cost.index) if off[i]}


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
           hardware: Mapping[tuple[str, str, str], Mapping[str, int]] | None = None,
           voter_order: Mapping[str, Sequence[str]] | None = None) -> list[Board]:
    """Split the aggregate table into boards on the primary metric of each task.

    Tasks are columns in alphabetical order, except on a board whose suite ``voter_order`` names
    (suite → its voters, as conf/suite lists them): those come in the suite's order, any other task
    after them alphabetically, so a GLUE board reads as the GLUE papers print it.

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
    vals = {c: prim[c].to_numpy(dtype=float) for c in ("mean", "std", "n_seeds", "baseline", *COST_COLUMNS)}
    kinds = prim["baseline_kind"].to_numpy() if "baseline_kind" in prim else np.full(len(prim), None)
    # cost medians per (board, method) over its tasks, for every board in one groupby (NaN skipped, as
    # nanmedian would): rows are sorted by board then method, so each board's groups are contiguous
    gid = prim.groupby([*BOARD_KEYS, "method"], sort=False).ngroup().to_numpy()
    cost_med = pd.DataFrame({c: vals[c] for c in COST_COLUMNS}).groupby(gid, sort=True).median().to_numpy()
    out: list[Board] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        budget, model, suite = (cols[k][a] for k in BOARD_KEYS)
        methods, mi = np.unique(cols["method"][a:b].astype(str), return_inverse=True)
        tasks, ti = np.unique(cols["task"][a:b].astype(str), return_inverse=True)
        order = (voter_order or {}).get(str(suite))
        if order:
            rank = {t: i for i, t in enumerate(order)}
            new = sorted(tasks.tolist(), key=lambda t: (rank.get(t, len(rank)), t))
            ti = np.array([new.index(t) for t in tasks.tolist()], dtype=np.intp)[ti]
            tasks = np.array(new, dtype=object)
        mats = {}
        for c in ("mean", "std", "n_seeds"):
            m = np.full((len(methods), len(tasks)), np.nan)
            m[mi, ti] = vals[c][a:b]
            mats[c] = m
        index = pd.Index(methods.tolist(), name="method")
        columns = pd.Index(tasks.tolist(), name="task")
        scores, std, n = (pd.DataFrame(mats[c], index=index, columns=columns) for c in ("mean", "std", "n_seeds"))
        first = int(gid[a])
        cost = pd.DataFrame(cost_med[first: first + len(methods)], index=index, columns=COST_COLUMNS)
        base_t, base_v, base_k = (cols["task"][a:b].tolist(), vals["baseline"][a:b].tolist(), kinds[a:b].tolist())
        baseline: dict[str, list[float]] = {}
        baseline_kind: dict[str, str] = {}
        for t, v, k in zip(base_t, base_v, base_k):
            if not math.isnan(v):
                baseline.setdefault(t, []).append(v)
            if isinstance(k, str):
                baseline_kind.setdefault(t, k)
        board = Board(budget=str(budget), model=str(model), suite=str(suite), scores=scores, std=std,
                      n_seeds=n, directions=dict(zip(cols["task"][a:b].tolist(), cols["direction"][a:b].tolist())),
                      metrics=dict(zip(cols["task"][a:b].tolist(), cols["metric"][a:b].tolist())), cost=cost,
                      min_seeds=(min_seeds or {}).get(str(budget)),
                      baseline={t: float(np.median(v)) for t, v in baseline.items()}, baseline_kind=baseline_kind)
        if scores.isna().any().any():
            board.notes.append(f"{int(scores.isna().sum().sum())} method×task cell(s) have no successful run")
        missed = capacity_misses(cost)
        if missed:
            target = next(iter(missed.values()))[0]
            board.notes.append(f"{len(missed)} of {len(methods)} methods ran off the capacity target of {target:,.0f} "
                               f"adapter parameters by more than ±{CAPACITY_TOLERANCE:.0%} (no capacity knob, or its "
                               "closest setting; ‡ in the tables): "
                               + ", ".join(f"{m} {c:,.0f}" for m, (_, c) in sorted(missed.items())))
        if board.min_seeds and (n.fillna(0) < board.min_seeds).any().any():
            board.notes.append(f"some cells have fewer than the {board.min_seeds} seeds budget {budget!r} asks for")
        mix = (hardware or {}).get((board.budget, board.model, board.suite), {})
        if len(mix) > 1:
            kinds = ", ".join(f"{hw} ({k} run{'s' if k != 1 else ''})" for hw, k in sorted(mix.items()))
            board.notes.append(f"runs measured on different hardware — {kinds}: train time and peak memory "
                               "do not compare across them")
        out.append(board)
    return out
