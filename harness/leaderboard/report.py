"""`peftbench leaderboard`: regenerate results/leaderboards/ from results/records/ alone.

Per board (budget × model × suite): the method × task table of mean ± std over seeds, the cost
columns that make a comparison fair or unfair (trainable parameters, peak memory, train time), the
ranking of every social-choice rule (all registered rules by default), the Condorcet winner, the
rules' Kendall agreement, a Friedman/Nemenyi test and a bootstrap over seeds of every rule (rank
intervals, P(win), would the winner change?). Written as Markdown, CSV and JSON per board, one
static HTML page with plots (index.html), and mirrored to one W&B run (offline by default).

Every board costs seconds at most: the searching rules stop at their time budgets and say so (a
``fallback`` per rule in the JSON, a "not exact" line in the Markdown), and the bootstrap gives each a
share of time (its ``n_valid`` and note say how many resamples it ranked). A line per board goes to
stderr as it is analysed; ``--show`` prints chosen boards only (by key, glob or ``sweep:NAME``).
"""
from __future__ import annotations

import argparse
import fnmatch
import functools
import hashlib
import json
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.board_report import BoardReport, position_of
from harness.leaderboard.cells import (
    BELOW_MARK,
    CAPACITY_MARK,
    PAIRED_ALPHA,
    _baseline_cell,
    _fmt,
    _fmt_float,
    _fmt_int,
    _rows,
    average_cell,
    average_header,
    board_title,
    paired_cell,
)
from harness.leaderboard.examples import (
    board_paired_tests,
    cell_intervals,
    metric_intervals,
    paired_document,
    paired_from_document,
)
from harness.leaderboard.external import (
    CRITERIA,
    add_external_notes,
    criteria_note,
    criteria_rows,
    parse_criteria,
)
from harness.leaderboard.instance import DESCRIPTION as INSTANCE_DESCRIPTION
from harness.leaderboard.instance import RULE_NAME as INSTANCE_RULE
from harness.leaderboard.instance import instance_ranking
from harness.leaderboard.rank_cli import _clean, rank_table, ranking_document
from harness.leaderboard.rules import RULES, Ranking
from harness.leaderboard.stats import BootstrapRule, bootstrap_ranks, friedman_nemenyi
from harness.leaderboard.suites import attach_averages, known_suites
from harness.leaderboard.table import (
    DEVICE_COST_HEADERS,
    Board,
    aggregate,
    board_key,
    boards,
    capacity_misses,
    hardware_by_board,
    one_value_per_seed,
    shown_device_costs,
)
from harness.leaderboard.tuning import add_search_notes
from harness.leaderboard.verdict import (
    as_document,
    below_baseline,
    cell_bounds,
    consensus,
    verdict,
    verdict_markdown,
)
from harness.records import RecordError, atomic_write
from harness.spec import CONF_DIR, PROJECT_ROOT, _path_or

DEFAULT_RULES: tuple[str, ...] = tuple(RULES)  # every registered rule (issue #3)
DEFAULT_BOOTSTRAP = 200  # replicates: enough for 95% rank intervals at a few seconds per board


def rank_board(board: Board, rules: Sequence[str]) -> dict[str, Ranking]:
    return rank_table(board.oriented(), None, list(rules))[0]


# ------------------------------------------------------------------------------------------------
# Analysis
# ------------------------------------------------------------------------------------------------


def board_samples(long_ok: pd.DataFrame, board: Board) -> pd.DataFrame:
    """Per (method, task, seed) primary-metric values of one board, oriented higher-is-better."""
    long_ok = one_value_per_seed(long_ok)
    part = long_ok[(long_ok["budget"] == board.budget) & (long_ok["model"] == board.model)
                   & (long_ok["suite"] == board.suite) & long_ok["primary"].astype(bool)]
    return _oriented_samples(part)


def _oriented_samples(part: pd.DataFrame) -> pd.DataFrame:
    """Per run: oriented value, and the totals of its per-example outcomes (NaN when it kept none)."""
    value = part["value"].astype(float).where(part["direction"] != "min", -part["value"].astype(float))
    out = {"method": part["method"].astype(str), "task": part["task"].astype(str), "seed": part["seed"],
           "value": value}
    for c in ("n_outcomes", "outcome_sum", "outcome_key"):
        out[c] = part[c].astype(float) if c in part else np.nan
    if "record" in part:   # the record file of each run (cache.read_frame(with_files=True)): not in the key
        out["record"] = part["record"]
    return pd.DataFrame(out)


def board_outcomes(samples: pd.DataFrame, files: Sequence[str], records_dir: Path,
                   cache_file: Path | None = None) -> dict[tuple[str, str, Any], Any]:
    """(method, task, seed) → the per-example outcomes of that run, read again from its record file (and
    sidecar) for the runs of ``samples`` whose row has an ``outcome_key``: what the paired tests of a
    board need. Called only for boards that are recomputed, so a regeneration that changes nothing
    reads no record file; a record that fails to decode leaves its run without outcomes (the pairs it
    is in are not tested), it never fails the board.

    ``cache_file`` (:func:`outcomes_cache_path`): the board's inline outcome blocks by record file, keyed
    by its (size, mtime_ns) (as the record cache listed it, when ``files`` carries that), so that a board
    recomputed after a few new records parses those records and not the hundreds it already had. Blocks
    are decoded by the same :func:`read_outcomes` either way; a record with a sidecar (its bytes live in
    another file) is always read again."""
    import json as _json

    from harness.outcomes import OutcomeError, read_outcomes, record_outcomes

    if "record" not in samples or "outcome_key" not in samples:
        return {}
    want = samples[np.isfinite(samples["outcome_key"].to_numpy(dtype=float))]
    cached = _load_outcome_blocks(cache_file) if cache_file is not None else {}
    keep: dict[str, list[Any]] = {}
    parsed: dict[int, dict[str, Any]] = {}
    out: dict[tuple[str, str, Any], Any] = {}

    stamp_of = getattr(files, "stamp", None)   # cache.RecordFiles: the stats of the listing

    def one(i: int) -> dict[str, Any]:
        name = files[i]
        try:
            if stamp_of is not None:
                stamp = stamp_of(i)
            else:
                st = (records_dir / name).stat()
                stamp = [st.st_size, st.st_mtime_ns]
            hit = cached.get(name)
            if hit is not None and hit[0] == stamp:
                blocks = hit[1]
            else:
                rec = _json.loads((records_dir / name).read_text(encoding="utf-8"))
                blocks = _inline_outcome_blocks(rec)
                if blocks is None:   # a sidecar: read as before, never cached
                    return record_outcomes(rec, record_dir=records_dir)
            decoded = {k: read_outcomes(b) for k, b in blocks.items()}
            keep[name] = [stamp, blocks]
            return {k: v for k, v in decoded.items() if v is not None}
        except (OSError, ValueError, KeyError, TypeError, OutcomeError):
            return {}

    for m, t, seed, rec_i in zip(want["method"], want["task"], want["seed"], want["record"]):
        rec_i = int(rec_i)
        if rec_i not in parsed:
            parsed[rec_i] = one(rec_i)
        got = parsed[rec_i].get(t)
        if got is not None:
            out[m, t, seed] = got
    if cache_file is not None and keep != cached:
        _save_outcome_blocks(cache_file, keep)
    return out


OUTCOMES_CACHE_VERSION = 1


def outcomes_cache_path(results_dir: Path, board: Board) -> Path:
    """<results>/leaderboards/.cache/outcomes/<digest of the board's key>.json"""
    key = hashlib.sha256(json.dumps([board.budget, board.model, board.suite]).encode("utf-8")).hexdigest()[:32]
    return Path(results_dir) / "leaderboards" / ".cache" / "outcomes" / f"{key}.json"


def _inline_outcome_blocks(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The outcome blocks :func:`record_outcomes` decodes, by task, when each is inline (its bytes in the
    record itself, so the record's (size, mtime) covers them); None otherwise."""
    ev = rec.get("eval") or {}
    subtasks = ev.get("subtasks")
    if subtasks:
        found = {name: sub.get("outcomes") for name, sub in subtasks.items()}
    else:
        found = {rec["run"]["task"]: ev.get("outcomes")}
    blocks = {k: b for k, b in found.items() if b}
    if not all(isinstance(k, str) and isinstance(b, dict) and "data" in b for k, b in blocks.items()):
        return None
    return blocks


def _load_outcome_blocks(path: Path) -> dict[str, list[Any]]:
    """record file name → [[size, mtime_ns], {task: block}]; {} for a missing or unusable file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("version") != OUTCOMES_CACHE_VERSION:
            return {}
        entries = doc["records"]
        if not isinstance(entries, dict) or not all(
                isinstance(v, list) and len(v) == 2 and isinstance(v[0], list) and len(v[0]) == 2
                and all(isinstance(x, int) for x in v[0]) and isinstance(v[1], dict) for v in entries.values()):
            return {}
        return entries
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        return {}


def _save_outcome_blocks(path: Path, entries: Mapping[str, list[Any]]) -> None:
    """Atomic write; an unwritable results tree just goes uncached."""
    payload = json.dumps({"version": OUTCOMES_CACHE_VERSION, "records": entries}, separators=(",", ":"))
    try:
        atomic_write(path, payload.encode("utf-8"))
    except OSError:
        pass


def samples_by_board(long_ok: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """`board_samples` for every board: oriented once over every row, then split by one groupby
    (filtering per board is O(rows × boards); orienting per board costs a few ms × boards)."""
    prim = long_ok[long_ok["primary"].astype(bool)]
    if prim.empty:
        return {}
    oriented = _oriented_samples(prim).reset_index(drop=True)
    keys = prim[["budget", "model", "suite"]].reset_index(drop=True)
    return {(str(b), str(m), str(s)): oriented.iloc[idx]
            for (b, m, s), idx in keys.groupby(["budget", "model", "suite"], sort=False).indices.items()}


def _ranked_report(board: Board, rules: Sequence[str], *, n_boot: int, n_failed: int) -> BoardReport:
    """Every rule's ranking, agreement, Condorcet winner and Friedman/Nemenyi: all but the bootstrap."""
    oriented = board.oriented()
    rankings, agreement, cw = rank_table(oriented, None, list(rules))
    rep = BoardReport(board=board, rankings=rankings, agreement=agreement, condorcet=cw, n_failed=n_failed,
                      n_boot=n_boot)
    try:
        rep.friedman = friedman_nemenyi(oriented)
    except ValueError as exc:
        rep.friedman_note = f"Friedman/Nemenyi test not run: {exc}"
    return rep


def analyze_board(board: Board, samples: pd.DataFrame, rules: Sequence[str], *, n_boot: int = DEFAULT_BOOTSTRAP,
                  n_failed: int = 0, outcomes: Mapping[tuple[str, str, Any], Any] | None = None) -> BoardReport:
    """Rank one board with every rule; add agreement, Condorcet, Friedman/Nemenyi, the bootstrap and, given
    its runs' per-example ``outcomes`` (:func:`board_outcomes`), the paired tests on the same examples."""
    rep = _ranked_report(board, rules, n_boot=n_boot, n_failed=n_failed)
    _evidence(rep, samples, outcomes)
    _bootstrap(rep, samples, n_boot)
    rep.verdict = verdict(rep, rep.below_baseline)
    return rep


def _example_intervals(samples: pd.DataFrame) -> pd.DataFrame | None:
    return cell_intervals(samples, rng_seed=BOOTSTRAP_SEED) if "n_outcomes" in samples else None


def _evidence(rep: BoardReport, samples: pd.DataFrame, outcomes: Mapping[tuple[str, str, Any], Any] | None = None,
              example_ci: Any = False) -> None:
    """Each cell's interval (over examples where the runs kept outcomes, else over seeds) and whether
    it clears its task's trivial baseline; the paired tests of the consensus winner against every other
    method, task by task, where the runs' outcomes are given. ``example_ci``: the intervals from outcome
    totals when already computed (elsewhere, in parallel), else computed here."""
    if example_ci is False:
        example_ci = _example_intervals(samples)
    if outcomes:   # Matthews, F1, correlations: the metric itself on resampled examples
        b = rep.board
        done = set() if example_ci is None else set(zip(example_ci["method"], example_ci["task"]))
        todo = samples[np.array([(m, t) not in done and b.directions.get(t) == "max"
                                 for m, t in zip(samples["method"], samples["task"])], dtype=bool)]
        extra = metric_intervals(todo, outcomes, b.metrics, rng_seed=BOOTSTRAP_SEED)
        if len(extra):
            example_ci = extra if example_ci is None or example_ci.empty else pd.concat([example_ci, extra],
                                                                                         ignore_index=True)
    rep.interval_lo, rep.interval_hi, rep.interval_source = cell_bounds(rep.board, example_ci)
    rep.below_baseline = below_baseline(rep.board, rep.interval_lo, rep.interval_hi)
    if outcomes:
        cons = consensus(rep).dropna().sort_values(kind="stable")
        if len(cons):
            rep.paired_reference = str(cons.index[0])
            rep.paired = board_paired_tests(samples, outcomes, rep.paired_reference, rng_seed=BOOTSTRAP_SEED)
        rep.instance, rep.instance_counts = instance_ranking(samples, outcomes, [str(m) for m in rep.board.scores.index],
                                                            [str(t) for t in rep.board.scores.columns])


def _bootstrap(rep: BoardReport, samples: pd.DataFrame, n_boot: int) -> None:
    n = rep.board.n_seeds.to_numpy(dtype=float)
    present = n[np.isfinite(n) & (n > 0)]
    if n_boot <= 0:
        rep.bootstrap_note = "bootstrap disabled (--bootstrap 0)"
        return
    if not rep.live:
        rep.bootstrap_note = "no rule produced a ranking, nothing to bootstrap"
        return
    if present.size == 0 or (present <= 1).all():
        rep.bootstrap_note = ("every cell has a single seed: resampling seeds cannot move any score, so rank "
                              "intervals would be degenerate (a point) and P(win) 0 or 1. Run more seeds "
                              "for uncertainty.")
        return
    rep.bootstrap = bootstrap_ranks(samples, system_col="method", task_col="task", seed_col="seed",
                                    value_col="value", rules=rep.live, n_boot=n_boot, rng_seed=BOOTSTRAP_SEED)
    single = int((present <= 1).sum())
    if single:
        rep.bootstrap_note = (f"{single} of {present.size} cells have a single seed; those cells do not vary "
                              "across resamples, so intervals are narrower than they should be.")


def failed_by_board(long: pd.DataFrame) -> dict[tuple[str, str, str], int]:
    """Count failed/cancelled runs per (budget, model, suite), suite None read as '' like successes."""
    bad = long[long["status"] != "success"]
    out: dict[tuple[str, str, str], int] = {}
    for b, m, s in zip(bad["budget"], bad["model"], bad["suite"]):
        key = (str(b), str(m), "" if s is None or (isinstance(s, float) and math.isnan(s)) else str(s))
        out[key] = out.get(key, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------
# Markdown / CSV / JSON
# ------------------------------------------------------------------------------------------------


def board_frame(board: Board, rankings: dict[str, Ranking]) -> pd.DataFrame:
    """One row per method: per-task mean/std/n, cost columns, one rank column per rule."""
    index = board.scores.index
    cols: dict[str, Any] = {}  # built whole, then one frame: inserting ~40 columns one by one is slow
    for task in board.scores.columns:
        cols[f"{task}:{board.metrics[task]}"] = board.scores[task]
        cols[f"{task}:std"] = board.std[task]
        cols[f"{task}:n_seeds"] = board.n_seeds[task]
    avg = board.average
    if avg is not None:  # named after the suite's convention ("GLUE score"), whatever the coverage
        cols[avg.name] = avg.mean.reindex(index)
        cols[f"{avg.name}:std"] = avg.std.reindex(index)
        cols[f"{avg.name}:n_seeds"] = avg.n_seeds.reindex(index)
        cols[f"{avg.name}:tasks"] = pd.Series(float(len(avg.units)), index=index).where(avg.mean.reindex(index).notna())
    for col in board.cost.columns:
        cols[col] = board.cost[col]
    for rule, ranking in rankings.items():
        if ranking.skipped:
            continue
        pos = position_of(ranking)
        cols[f"rank:{rule}"] = pd.Series([pos.get(m) for m in index], index=index)
    df = pd.DataFrame(cols, index=index)
    df.index.name = "method"
    return df


MD_WIDTH = 120     # the printed leaderboard.md fits a terminal this wide (tables of up to 8 tasks)
RULE_ABBREV = {"mean": "mn", "geometric_mean": "gm", "median": "md", "optimality_gap": "og", "plurality": "pl",
               "borda": "bo", "dowdall": "dw", "baldwin": "bw", "nanson": "na", "black": "bl", "condorcet": "cc",
               "copeland": "cp", "minimax": "mm", "schulze": "sc", "ranked_pairs": "rp", "kemeny": "km"}


def _wrap(text: str, indent: str = "") -> list[str]:
    import textwrap

    return textwrap.wrap(text, MD_WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)


def short_task_names(tasks: Sequence[str], width: int = 6) -> dict[str, str]:
    """A column header of at most ``width`` characters per task (the last path part, cut), unique on the
    board; the full names go in a legend under the table."""
    out: dict[str, str] = {}
    for i, t in enumerate(tasks):
        name = t.rsplit("/", 1)[-1][:width] or f"t{i + 1}"
        if name in out.values():
            name = f"t{i + 1}"
        out[t] = name
    return out


def _compact_number(v: float) -> str:
    if v is None or math.isnan(v):
        return "—"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def board_markdown(board: Board, rankings: dict[str, Ranking], report: BoardReport | None = None) -> str:
    """A board in Markdown, conclusion first: the verdict; a compact table (mean per task, † under the
    baseline, trainable params, train time, mean rank over the rules) that fits 120 columns for up to
    8 tasks; the winners per rule; the tests; then the full tables (mean ± std (n), every cost; the rank
    under each rule)."""
    lines = [f"## {board_title(board)}", ""]
    if report is not None and report.verdict:
        lines += [*_wrap(verdict_markdown(report.verdict)), ""]
    below = report.below_baseline if report is not None else None
    tasks = list(board.scores.columns)
    avg = board.average
    ranked_rules = [r for r, rk in rankings.items() if not rk.skipped]
    positions = {r: position_of(rankings[r]) for r in ranked_rules}
    cons = {m: float(np.mean([positions[r][m] for r in ranked_rules if m in positions[r]]))
            if any(m in positions[r] for r in ranked_rules) else math.nan for m in board.scores.index}
    order = sorted(board.scores.index, key=lambda m: (cons[m] if not math.isnan(cons[m]) else math.inf, m))
    mean, std, n = (_rows(board, f) for f in (board.scores, board.std, board.n_seeds))
    marked = _rows(board, below.astype(float)) if below is not None else None
    short = short_task_names(tasks)
    missed = capacity_misses(board.cost)
    head = ["method", *[short[t] for t in tasks], *(["avg"] if avg is not None else []), "params", "time s",
            "rank"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for m in order:
        cells = [m] + [("—" if math.isnan(mean[m][j]) else f"{mean[m][j]:.3f}")
                       + (BELOW_MARK if marked and marked[m][j] == 1 else "") for j in range(len(tasks))]
        if avg is not None:
            v = float(avg.mean.get(m, np.nan))
            cells.append("—" if math.isnan(v) else f"{v:.3f}")
        cost = board.cost.loc[m]
        cells += [_compact_number(cost["trainable_params"]) + (CAPACITY_MARK if m in missed else ""),
                  _fmt_float(cost["train_time_s"], 0),
                  "—" if math.isnan(cons[m]) else f"{cons[m]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if board.baseline:
        base = [f"{board.baseline[t]:.3f}" if t in board.baseline else "—" for t in tasks]
        lines.append("| " + " | ".join(["*baseline*", *base, *[""] * (len(head) - 1 - len(tasks))]) + " |")
    lines.append("")
    legend = "Tasks: " + ", ".join(f"{short[t]} = {t} ({board.metrics[t]} "
                                   f"{'↑' if board.directions[t] == 'max' else '↓'}"
                                   + (f"; baseline: {board.baseline_kind[t]}" if t in board.baseline_kind else "")
                                   + ")" for t in tasks) + "."
    if avg is not None:
        legend += f" avg = {avg.label}: {avg.description}"
    legend += (f" params = trainable parameters; time s = train time (median over runs); rank = mean position "
               f"over the {len(ranked_rules)} rules that ranked (1 = best).")
    if board.baseline and below is not None and below.to_numpy().any():
        legend += (f" {BELOW_MARK}: the cell's 95% interval (over examples where the runs kept per-example outcomes, "
                   "else over seeds; its mean with one seed) does not clear the task's trivial baseline.")
    if missed:
        target = next(iter(missed.values()))[0]
        legend += (f" {CAPACITY_MARK}: the method's adapter count is more than ±10% off the capacity target of "
                   f"{target:,.0f} (budget.trainable_params): it ran at its closest setting.")
    lines += [*_wrap(legend), ""]
    # the winners per rule, grouped: who wins under how many rules
    groups: dict[tuple[str, ...], list[str]] = {}
    for r in ranked_rules:
        groups.setdefault(tuple(rankings[r].winners), []).append(r)
    lines.append("**Winners per rule**:")
    for who, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines += _wrap(f"- {', '.join(who)} ({len(rs)} of {len(ranked_rules)}): {', '.join(rs)}", "  ")
    for r, rk in rankings.items():
        if rk.skipped:
            lines += _wrap(f"- **{r}**: skipped — {rk.skipped}", "  ")
        elif rk.fallback:
            lines += _wrap(f"- **{r}**: not exact — {rk.fallback}", "  ")
    if report is not None and report.instance is not None:
        ins = report.instance
        what = (f"{', '.join(ins.winners)}; order: " + " > ".join(" = ".join(g) for g in ins.groups)
                if not ins.skipped else f"skipped — {ins.skipped}")
        lines += _wrap(f"- **{INSTANCE_RULE}** (every example a voter; not among the rules above): {what}", "  ")
    if report is not None:
        lines += _wrap(f"- **Condorcet winner**: {report.condorcet or 'none (no method beats every other by majority)'}",
                       "  ")
        if report.n_failed:
            lines.append(f"- {report.n_failed} failed/cancelled run(s) on this board, not ranked")
        if report.friedman is not None:
            f = report.friedman
            lines += _wrap(f"- Friedman χ² = {f['statistic']:.2f}, p = {f['pvalue']:.3g} over {f['n_tasks']} task(s); "
                           f"Nemenyi CD = {f['cd']:.2f}" + (f" ({f['note']})" if f.get("note") else ""), "  ")
        else:
            lines += _wrap(f"- {report.friedman_note}", "  ")
        lines += ["", "**Uncertainty** (bootstrap over seeds"
                  + (f", {report.n_boot} resamples)" if report.bootstrap else ")") + ":", ""]
        if report.bootstrap_note:
            lines += _wrap(f"- {report.bootstrap_note}", "  ")
        for br in (report.bootstrap or {}).values():
            lines += _wrap(f"- {br.summary}", "  ")
    if report is not None and report.paired:
        lines += ["", *paired_markdown(report, short)]
    for note in board.notes:
        lines += _wrap(f"- note: {note}", "  ")
    # the full tables, further down: one row per cell, so that any number of tasks fits the width
    lo, hi = (report.interval_lo, report.interval_hi) if report is not None else (None, None)
    src = report.interval_source if report is not None else None
    lines += ["", "**Scores** (mean ± std over seeds, n = seeds; 95% interval over examples, else seeds):", "",
              "| method | task | score | interval | below baseline |", "|---|---|---|---|---|"]
    for m in order:
        for j, t in enumerate(tasks):
            iv = "—"
            if lo is not None and hi is not None and src is not None and not math.isnan(lo.at[m, t]):
                iv = f"[{lo.at[m, t]:.4f}, {hi.at[m, t]:.4f}] ({src.at[m, t]})"
            flag = BELOW_MARK if marked and marked[m][j] == 1 else ""
            lines.append(f"| {m} | {t} | {_fmt(mean[m][j], std[m][j], n[m][j])} | {iv} | {flag} |")
    if board.baseline:
        lines += ["", *_wrap("Trivial baselines: " + ", ".join(f"{t} {_baseline_cell(board, t)}" for t in tasks
                                                               if t in board.baseline) + ".")]
    avg_head = [average_header(avg)] if avg is not None else []
    device_cols = shown_device_costs(board.cost)
    lines += ["", "**" + ("Suite average and cost" if avg is not None else "Cost") + "** (cost: median over runs):",
              "", "| " + " | ".join(["method", *avg_head, "trainable params", "peak mem (MB)", "train time (s)",
                                     *(DEVICE_COST_HEADERS[c][0] for c in device_cols)]) + " |",
              "|---|---|---|---|" + ("---|" if avg is not None else "") + "---|" * len(device_cols)]
    for m in order:
        cost = board.cost.loc[m]
        cells = [m, *([average_cell(avg, m)] if avg is not None else []),
                 _fmt_int(cost["trainable_params"]) + (CAPACITY_MARK if m in missed else ""),
                 _fmt_float(cost["peak_memory_mb"], 0), _fmt_float(cost["train_time_s"], 1),
                 *(_fmt_float(cost[c], DEVICE_COST_HEADERS[c][1]) for c in device_cols)]
        lines.append("| " + " | ".join(cells) + " |")
    if ranked_rules:
        abbrev = {r: RULE_ABBREV.get(r, r[:3]) for r in ranked_rules}
        lines += ["", "**Rank per rule** (1 = best):", "", "| method | " + " | ".join(abbrev.values()) + " |",
                  "|" + "---|" * (len(ranked_rules) + 1)]
        for m in order:
            lines.append("| " + " | ".join([m, *[str(positions[r][m]) if m in positions[r] else "—"
                                               for r in ranked_rules]]) + " |")
        lines += ["", *_wrap("Rules: " + ", ".join(f"{a} = {r}" for r, a in abbrev.items()) + ".")]
    lines.append("")
    return "\n".join(lines)


def paired_markdown(rep: BoardReport, short: Mapping[str, str]) -> list[str]:
    """The board's paired tests as a method × task table of Δ with stars (p-values in the JSON)."""
    assert rep.paired is not None
    tasks = [t for t in rep.board.scores.columns if t in rep.paired]
    methods = [m for m in rep.order() if any(m in rep.paired[t] for t in tasks)]
    lines = _wrap(f"**Paired tests on the same examples**: `{rep.paired_reference}` against each method, per task "
                  "(Δ = its score − the method's, per example; McNemar when both ran one seed with right/wrong "
                  "outcomes, else the sign-flip permutation test of the per-example means over seeds; "
                  f"* p < {PAIRED_ALPHA:g}, ** p < 0.01; p-values in the board's JSON):")
    lines += ["", "| method | " + " | ".join(short.get(t, t) for t in tasks) + " |", "|" + "---|" * (len(tasks) + 1)]
    for m in methods:
        lines.append("| " + " | ".join([m, *[paired_cell(rep.paired[t].get(m)) for t in tasks]]) + " |")
    return lines


def board_document(rep: BoardReport) -> dict[str, Any]:
    """The `peftbench rank --format json` document of the board, plus what only a board has."""
    b = rep.board
    oriented = b.oriented()
    doc = ranking_document(oriented.index, oriented.columns, {t: 1.0 for t in oriented.columns},
                           rep.rankings, rep.agreement, rep.condorcet)
    doc["board"] = {"budget": b.budget, "model": b.model, "suite": b.suite, "directions": b.directions,
                    "metrics": b.metrics, "n_failed": rep.n_failed, "min_seeds": b.min_seeds, "notes": b.notes,
                    "oriented": "rule inputs are higher-is-better: lower-is-better tasks are negated"}
    mean, std, n = (_rows(b, f) for f in (b.scores, b.std, b.n_seeds))
    doc["cells"] = {m: {t: {"mean": mean[m][j], "std": std[m][j], "n_seeds": n[m][j]}
                        for j, t in enumerate(b.scores.columns)} for m in b.scores.index}
    doc["cost"] = {m: b.cost.loc[m].to_dict() for m in b.cost.index}
    if b.average is not None:
        a = b.average
        doc["average"] = {"name": a.name, "label": a.label, "description": a.description, "units": list(a.units),
                          "suite_units": list(a.suite_units), "ranked": False,
                          "cells": {m: {"mean": a.mean.get(m), "std": a.std.get(m), "n_seeds": a.n_seeds.get(m),
                                        "lacking": a.lacking.get(m, [])} for m in b.scores.index}}
    doc["verdict"] = list(rep.verdict)
    doc["baseline"] = {t: {"value": v, "kind": b.baseline_kind.get(t)} for t, v in b.baseline.items()}
    if rep.interval_lo is not None and rep.interval_hi is not None and rep.interval_source is not None \
            and rep.below_baseline is not None:
        doc["intervals"] = as_document(rep.interval_lo, rep.interval_hi, rep.interval_source, rep.below_baseline)
    if rep.paired is not None:
        doc["paired"] = paired_document(rep.paired_reference, rep.paired)
    if rep.instance is not None:
        ins = rep.instance
        doc["instance_level"] = {"rule": INSTANCE_RULE, "description": INSTANCE_DESCRIPTION,
                                 "ranking": [list(g) for g in ins.groups], "scores": dict(ins.scores),
                                 "winners": list(ins.winners), "skipped": ins.skipped,
                                 "task_borda": rep.instance_counts}
    # the rules that did not compute their exact definition (a search past its time budget), and how the
    # bootstrap treated the searching rules: the same words as the rules' blocks and the Markdown
    doc["fallbacks"] = {r: rk.fallback for r, rk in rep.rankings.items() if rk.fallback}
    doc["friedman"] = rep.friedman if rep.friedman is not None else {"skipped": rep.friedman_note}
    doc["bootstrap"] = {"n_boot": rep.n_boot if rep.bootstrap else 0, "note": rep.bootstrap_note,
                        "rules": {r: br.as_dict() for r, br in (rep.bootstrap or {}).items()}}
    return _clean(doc)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def render_board_files(board: Board, samples: pd.DataFrame, rules: Sequence[str], n_boot: int, n_failed: int,
                       html: bool, outcomes: Mapping[tuple[str, str, Any], Any] | None = None
                       ) -> tuple[BoardReport, str, str, str, str | None]:
    """All the per-board work (rankings, Friedman, bootstrap, paired tests, Markdown/CSV/JSON text, HTML
    section with figures); a pure function of its arguments (the bootstrap and permutation seeds are
    fixed per board), so boards can run in any process in any order and give the same bytes."""
    rep = analyze_board(board, samples, rules, n_boot=n_boot, n_failed=n_failed, outcomes=outcomes)
    md = board_markdown(board, rep.rankings, rep)
    csv = board_frame(board, rep.rankings).to_csv()
    js = json.dumps(board_document(rep), indent=2, allow_nan=False) + "\n"
    section = None
    if html:
        from harness.leaderboard.html import render_board

        section = render_board(rep)
    return rep, md, csv, js, section


def _bootstrap_job(rep: BoardReport, samples: pd.DataFrame, n_boot: int) -> tuple[Any, str | None]:
    _bootstrap(rep, samples, n_boot)
    return rep.bootstrap, rep.bootstrap_note


def _intervals_job(samples: pd.DataFrame) -> pd.DataFrame | None:
    return _example_intervals(samples)


_UNCERTAINTY_HEAD = "<h3>Uncertainty: would the winner change?</h3>"


def render_board_split(board: Board, samples: pd.DataFrame, rules: Sequence[str], n_boot: int, n_failed: int,
                       html: bool, outcomes: Mapping[tuple[str, str, Any], Any] | Callable[[], Any] | None = None,
                       *, pool: Any) -> tuple[BoardReport, str, str, str, str | None]:
    """`render_board_files` of one board on two processes: the bootstrap runs in ``pool`` while this
    process draws the figures (which do not depend on it); the HTML section's uncertainty part is then
    rendered from the bootstrap. Same bytes as `render_board_files` (checked; else it renders again)."""
    from harness.leaderboard import html as html_mod

    rep = _ranked_report(board, rules, n_boot=n_boot, n_failed=n_failed)
    # the bootstrap over seeds and the intervals from outcome totals need no outcome bits: both run in the
    # pool while this process reads the runs' per-example outcomes
    pending = pool.apply_async(_bootstrap_job, (rep, samples, n_boot))
    intervals = pool.apply_async(_intervals_job, (samples,))
    if callable(outcomes):
        outcomes = outcomes()
    _evidence(rep, samples, outcomes, example_ci=intervals.get())
    rep.verdict = verdict(rep, rep.below_baseline)   # without the bootstrap: replaced in the draft below
    draft = html_mod.render_board(rep) if html else None  # no bootstrap yet: all but the uncertainty part
    early = html_mod.verdict_html(rep)
    rep.bootstrap, rep.bootstrap_note = pending.get()
    rep.verdict = verdict(rep, rep.below_baseline)
    if draft is not None:
        draft = draft.replace(early, html_mod.verdict_html(rep), 1)
    section = None
    if draft is not None:
        at = draft.rfind(_UNCERTAINTY_HEAD)
        tail = _UNCERTAINTY_HEAD + html_mod._uncertainty(
            BoardReport(board=board, rankings=rep.rankings, agreement=rep.agreement, condorcet=rep.condorcet,
                        n_failed=n_failed, n_boot=n_boot, friedman=rep.friedman,
                        friedman_note=rep.friedman_note)) + "</section>"
        if at >= 0 and draft[at:] == tail:
            section = draft[:at] + _UNCERTAINTY_HEAD + html_mod._uncertainty(rep) + "</section>"
        else:  # the page layout changed under us: render it whole
            section = html_mod.render_board(rep)
    md = board_markdown(board, rep.rankings, rep)
    csv = board_frame(board, rep.rankings).to_csv()
    js = json.dumps(board_document(rep), indent=2, allow_nan=False) + "\n"
    return rep, md, csv, js, section


def _board_job(args: tuple[Any, ...]) -> tuple[BoardReport, str, str, str, str | None]:
    return render_board_files(*args)


def _timed_board_job(args: tuple[Any, ...]) -> tuple[tuple[BoardReport, str, str, str, str | None], float]:
    """`_board_job` and its wall-clock seconds in the process that ran it (for the progress lines)."""
    t = time.perf_counter()
    res = render_board_files(*args)
    return res, time.perf_counter() - t


def _timed_split(job: tuple[Any, ...], pool: Any) -> tuple[tuple[BoardReport, str, str, str, str | None], float]:
    t = time.perf_counter()
    res = render_board_split(*job, pool=pool)
    return res, time.perf_counter() - t


# ------------------------------------------------------------------------------------------------
# Per-board output cache: <results>/leaderboards/.cache/boards/<sha256 of the board's inputs>.json
# ------------------------------------------------------------------------------------------------

# the cache layout (3: the verdict beside the files); the code that renders a board is keyed by its digest
BOARD_CACHE_VERSION = 3
BOOTSTRAP_SEED = 0       # the rng_seed of every board's bootstrap (see _bootstrap)


def board_cache_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "leaderboards" / ".cache" / "boards"


@functools.cache
def _code_digest() -> str:
    """sha256 of the leaderboard package's source: a cached board is stale as soon as the code that
    ranks or draws it changes (an upgrade, a local edit), with no version number to remember to bump."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _versions(html: bool) -> list[str]:
    # `html` adds nothing of its own: the figures are hand-written SVG (plots.py), covered by the digest
    import scipy

    return [_code_digest(), np.__version__, pd.__version__, scipy.__version__]


def board_cache_key(board: Board, samples: pd.DataFrame, rules: Sequence[str], n_boot: int, n_failed: int,
                    html: bool, versions: Sequence[str] = ()) -> str:
    """sha256 of everything `render_board_files` reads: the board's cells and costs, the per-seed
    samples the bootstrap resamples, the rules, n_boot, the bootstrap seed, html on/off, the code's
    cache version and the numeric libraries' versions. The suite average (``board.average``) enters
    whole (its convention in words, units, values), so an edit of conf/suite — outside the code
    digest — is seen too."""
    h = hashlib.sha256()

    def put(obj: Any) -> None:
        h.update(json.dumps(obj, separators=(",", ":"), default=repr).encode("utf-8"))
        h.update(b"\0")

    def put_array(a: Any) -> None:
        arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        put(list(arr.shape))
        h.update(arr.tobytes())

    put([BOARD_CACHE_VERSION, BOOTSTRAP_SEED, list(rules), int(n_boot), int(n_failed), bool(html), list(versions),
         board.budget, board.model, board.suite, board.directions, board.metrics, board.min_seeds, board.notes,
         board.average.cache_parts() if board.average is not None else None])
    for df in (board.scores, board.std, board.n_seeds, board.cost):
        put([[str(x) for x in df.index], [str(x) for x in df.columns], df.index.name, df.columns.name])
        put_array(df.to_numpy(dtype=np.float64))
    put([str(c) for c in samples.columns])
    put([str(samples[c].dtype) for c in samples.columns])
    for c in ("method", "task", "seed"):
        put(samples[c].tolist())
    for c in ("value", "n_outcomes", "outcome_sum", "outcome_key"):   # not "record": a file index, not data
        if c in samples:
            put_array(samples[c].to_numpy(dtype=np.float64))
    put([board.baseline, board.baseline_kind])
    return h.hexdigest()


def _load_board(path: Path, html: bool) -> tuple[str, str, str, str | None, list[str]] | None:
    """(md, csv, json, HTML section, the verdict in the JSON) of a cached board; None: not usable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        md, csv, js, section, board_verdict = doc["md"], doc["csv"], doc["json"], doc["section"], doc["verdict"]
        if not all(isinstance(x, str) for x in (md, csv, js)) or not (isinstance(section, str) if html
                                                                        else section is None):
            return None
        if not isinstance(board_verdict, list) or not all(isinstance(x, str) for x in board_verdict):
            return None
        return md, csv, js, section, board_verdict
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        return None


def _save_board(path: Path, md: str, csv: str, js: str, section: str | None, *, verdict: list[str]) -> None:
    """Atomic write; an unwritable results tree just goes uncached. ``verdict``: the JSON document's, kept
    apart so that a regeneration does not parse every board's document to list the verdicts."""
    payload = json.dumps({"md": md, "csv": csv, "json": js, "section": section, "verdict": verdict},
                         separators=(",", ":"))
    try:
        atomic_write(path, payload.encode("utf-8"))
    except OSError:
        pass


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def report_from_document(board: Board, js: str) -> BoardReport:
    """The BoardReport a board's JSON document (:func:`board_document`) was written from, rebuilt
    without re-analysing (NaN comes back for the document's nulls)."""
    doc = json.loads(js)
    rankings = {r: Ranking(groups=[list(g) for g in d["ranking"]],
                           scores={k: _nan(v) for k, v in d["scores"].items()},
                           winners=list(d["winners"]), skipped=d["skipped"], fallback=d.get("fallback"))
                for r, d in doc["rules"].items()}
    agreement = pd.DataFrame({b: {a: _nan(row[b]) for a, row in doc["agreement"].items()}
                              for b in next(iter(doc["agreement"].values()), {})},
                             index=list(doc["agreement"]), dtype=float)
    fr = doc["friedman"]
    boot = doc["bootstrap"]
    rules_b = boot["rules"]
    bootstrap = {r: BootstrapRule(rank_interval={m: (_nan(v[0]), _nan(v[1])) for m, v in d["rank_interval"].items()},
                                  p_win={m: _nan(v) for m, v in d["p_win"].items()}, winners=list(d["winners"]),
                                  winner_prob=_nan(d["winner_prob"]), winner_may_change=d["winner_may_change"],
                                  summary=d["summary"], n_valid=d["n_valid"], note=d.get("note"))
                 for r, d in rules_b.items()}
    skipped_fr = isinstance(fr, dict) and set(fr) == {"skipped"}
    rep = BoardReport(board=board, rankings=rankings, agreement=agreement, condorcet=doc["condorcet_winner"],
                      n_failed=int(doc["board"]["n_failed"]), friedman=None if skipped_fr else fr,
                      friedman_note=fr["skipped"] if skipped_fr else None, bootstrap=bootstrap or None,
                      bootstrap_note=boot["note"], n_boot=int(boot["n_boot"]), verdict=list(doc["verdict"]))
    if doc.get("paired"):
        rep.paired_reference, rep.paired = paired_from_document(doc["paired"])
    if doc.get("instance_level"):
        ins = doc["instance_level"]
        rep.instance = Ranking(groups=[list(g) for g in ins["ranking"]],
                               scores={m: _nan(v) for m, v in ins["scores"].items()}, winners=list(ins["winners"]),
                               skipped=ins["skipped"])
        rep.instance_counts = {t: {m: float(v) for m, v in per.items()} for t, per in ins["task_borda"].items()}
    cells = doc.get("intervals") or {}
    if cells:
        idx, cols = list(cells), list(next(iter(cells.values())))

        def frame(key: str, conv: Any) -> pd.DataFrame:
            return pd.DataFrame([[conv(cells[m][t][key]) for t in cols] for m in idx], index=idx, columns=cols)

        rep.interval_lo, rep.interval_hi = frame("lo", _nan), frame("hi", _nan)
        rep.interval_source = frame("interval_from", lambda v: v or "")
        rep.below_baseline = frame("below_baseline", bool)
    return rep


class CachedBoardReport:
    """A board whose files came from the board cache: ``board`` is at hand (all the index page needs);
    any other attribute of :class:`BoardReport` (rankings, bootstrap, ... e.g. for W&B) is read, on
    first use, from the board's cached JSON document (or, should that fail, by analysing it again)."""

    def __init__(self, board: Board, samples: pd.DataFrame, rules: Sequence[str], n_boot: int,
                 n_failed: int, js: str | None = None) -> None:
        self.board = board
        self._args = (samples, list(rules), n_boot, n_failed)
        self._js = js
        self._report: BoardReport | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._report is None:
            samples, rules, n_boot, n_failed = self._args
            try:
                if self._js is None:
                    raise ValueError("no document")
                self._report = report_from_document(self.board, self._js)
                self._report.n_boot = n_boot
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                self._report = analyze_board(self.board, samples, rules, n_boot=n_boot, n_failed=n_failed)
        return getattr(self._report, name)


def generate(results_dir: Path, out_dir: Path, rules: Sequence[str] = DEFAULT_RULES, *,
             n_boot: int = DEFAULT_BOOTSTRAP, html: bool = True, jobs: int | None = None,
             use_cache: bool = True, progress: Callable[[str], None] | None = None,
             criteria: Sequence[str] = ()) -> tuple[str, list[Path], list[BoardReport]]:
    """Write every board; return (the combined Markdown, files written, the board reports).

    ``progress``, when given, gets one line per board as it is analysed (``[n/N] <board key> 1.2 s``,
    the seconds spent on that board) and one for the boards the cache already had: a cold build of
    many boards takes minutes, and a silent one looks hung.

    Records are read through the per-file cache (:mod:`harness.leaderboard.cache`); a board whose
    inputs hash to a key already in the board cache reuses its stored Markdown/CSV/JSON/HTML (its
    report is then a :class:`CachedBoardReport`, analysed only if something asks for more than the
    board); the other boards are analysed and rendered in a pool of ``jobs`` processes (default:
    every CPU; 1 = in-process). ``use_cache=False`` neither reads nor writes either cache. ``criteria``
    (:data:`harness.leaderboard.external.CRITERIA` names): every board ranks over them, each a voter."""
    from harness.leaderboard.cache import _pool_context, read_frame

    jobs = max(1, jobs or os.cpu_count() or 1)
    long, seeds, files = read_frame(results_dir, jobs=jobs, use_cache=use_cache, with_files=True)
    n_failed = int((long["status"] != "success").sum()) if not long.empty else 0
    ok = criteria_rows(one_value_per_seed(long, success_only=True), criteria)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # counted before resolving duplicates: a multi-set run wholly superseded by single-task runs still ran
    n_runs = long["signature"][long["status"] == "success"].nunique() if not long.empty else 0
    parts = ["# peftbench leaderboard", "",
             f"Generated from {n_runs} successful run record(s) in `{results_dir / 'records'}`"
             + (f" ({n_failed} failed/cancelled run(s) not ranked)." if n_failed else "."),
             *_wrap("Scores: mean of each task's primary metric over seeds (± std and n in each board's full "
                    "table). Ranks per social-choice rule; tasks are the voters."), ""]
    agg = aggregate(ok, resolved=True)
    failed = failed_by_board(long)
    samples = samples_by_board(ok)
    suites = known_suites(agg["suite"].unique().tolist() if not agg.empty else [])
    bs = boards(agg, min_seeds=seeds, hardware=hardware_by_board(long),
                voter_order={name: s.voters for name, s in suites.items()})
    attach_averages(bs, ok, suites)
    add_search_notes(bs, results_dir, ok["signature"])
    for board in bs if criteria else ():
        board.criteria = list(criteria)
        board.notes.append(criteria_note(criteria))
    add_external_notes(bs, results_dir, ok)
    all_jobs = [(board, samples[(board.budget, board.model, board.suite)], list(rules), n_boot,
                 failed.get((board.budget, board.model, board.suite), 0), html) for board in bs]
    results: list[tuple[Any, str, str, str, str | None] | None] = [None] * len(all_jobs)
    cpaths: list[Path | None] = [None] * len(all_jobs)
    verdict_of: list[list[str] | None] = [None] * len(all_jobs)   # each board's verdict (from its JSON)
    if use_cache:
        cdir = board_cache_dir(results_dir)
        versions = _versions(html)
        for i, job in enumerate(all_jobs):
            cpaths[i] = cdir / f"{board_cache_key(*job, versions=versions)}.json"
            hit = _load_board(cpaths[i], html)
            if hit is not None:
                results[i] = (CachedBoardReport(*job[:5], js=hit[2]), *hit[:4])
                verdict_of[i] = hit[4]
    todo = [i for i, r in enumerate(results) if r is None]
    if progress is not None and len(todo) < len(all_jobs):
        progress(f"{len(all_jobs) - len(todo)} of {len(all_jobs)} board(s) unchanged (board cache)")
    split = jobs > 1 and len(todo) == 1 and html and n_boot > 0
    ocache = {i: outcomes_cache_path(results_dir, all_jobs[i][0]) if use_cache else None for i in todo}
    for i in todo:   # only the boards analysed again read their runs' per-example outcomes (paired tests)
        if split:    # the one board of an incremental regeneration: read while its bootstrap runs
            all_jobs[i] = (*all_jobs[i], functools.partial(board_outcomes, all_jobs[i][1], files,
                                                           results_dir / "records", ocache[i]))
        else:
            all_jobs[i] = (*all_jobs[i], board_outcomes(all_jobs[i][1], files, results_dir / "records", ocache[i]))
    if jobs > 1 and len(todo) > 1:
        pool = _pool_context().Pool(min(jobs, len(todo)))
        fresh = pool.imap(_timed_board_job, [all_jobs[i] for i in todo], chunksize=1)
    elif split:
        # one board to redo (the usual incremental case): its bootstrap and its figures in parallel
        pool = _pool_context().Pool(1)
        fresh = (_timed_split(all_jobs[i], pool) for i in todo)
    else:
        pool, fresh = None, map(_timed_board_job, [all_jobs[i] for i in todo])
    reports: list[Any] = []
    sections: list[str] = []
    # the cell table is written from a thread: it runs while this process waits on the pool (the bootstrap)
    cells = threading.Thread(target=lambda: _write_text(out_dir / "cells.csv", agg.to_csv(index=False), "utf-8"),
                             name="cells.csv") if not ok.empty else None
    if cells is not None:
        cells.start()
    try:
        for k, (i, (res, sec)) in enumerate(zip(todo, fresh), 1):
            if progress is not None:
                progress(f"[{k}/{len(todo)}] {all_jobs[i][0].key} {sec:.1f} s")
            results[i] = res
            verdict_of[i] = json.loads(res[3]).get("verdict") or []
            if cpaths[i] is not None:
                _save_board(cpaths[i], *res[1:], verdict=verdict_of[i])
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    verdicts: list[str] = []
    for res, board_verdict in zip(results, verdict_of):
        assert res is not None and board_verdict is not None
        rep, md, csv, js, section = res
        reports.append(rep)
        parts.append(md)
        verdicts += _wrap(f"- **{board_title(rep.board)}**: " + " ".join(board_verdict), "  ")
        paths = [out_dir / f"{rep.board.key}.{ext}" for ext in ("md", "csv", "json")]
        _write_text(paths[0], md)
        _write_text(paths[1], csv)
        _write_text(paths[2], js)
        written += paths
        if section is not None:
            sections.append(section)
    if cells is not None:
        cells.join()
        written.append(out_dir / "cells.csv")
    if verdicts:   # the conclusions first: what a reader of the printed summary sees before any table
        parts[2:2] = ["## Verdicts", "", *verdicts, ""]
    combined = "\n".join(parts)
    _write_text(out_dir / "leaderboard.md", combined)
    written.append(out_dir / "leaderboard.md")
    if html:
        from harness.leaderboard.html import render_index

        page = render_index(reports, n_runs=n_runs, n_failed=n_failed, records_dir=results_dir / "records",
                            sections=sections)
        _write_text(out_dir / "index.html", page, "utf-8")
        written.append(out_dir / "index.html")
    return combined, written, reports


def _write_text(path: Path, text: str, encoding: str | None = None) -> None:
    """``path.write_text(text, encoding)``, skipped when the file already holds exactly those bytes: a
    regeneration rewrites hundreds of unchanged board files, and truncating and rewriting a file costs
    far more than reading it back (its mtime then says when its content last changed)."""
    import locale

    data = text.encode(encoding or locale.getpreferredencoding(False))
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    path.write_bytes(data)


def budget_seeds(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """budget name → seeds it asks for, read from the records' own budget blocks."""
    out: dict[str, int] = {}
    for rec in records:
        b = ((rec["run"].get("spec") or {}).get("budget")) or {}
        if b.get("seeds") and b.get("name"):
            out[b["name"]] = int(b["seeds"])
    return out


def _logger_config(project: str | None) -> dict[str, Any]:
    """The `logger/wandb` config group (project, entity, mode), with --wandb-project on top."""
    import yaml

    path = CONF_DIR / "logger" / "wandb.yaml"
    cfg = dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {"name": "wandb"}
    cfg["name"] = "wandb"
    cfg["system_stats"] = False  # a leaderboard run has no hardware story worth sampling
    if project:
        cfg["project"] = project
    return cfg


def log_to_wandb(reports: Sequence[BoardReport], *, rules: Sequence[str], n_boot: int, runs_dir: Path,
                 project: str | None = None) -> Path | None:
    """Mirror the tables to one W&B run (job_type "leaderboard"); warn, never raise, on failure."""
    tracker = None
    try:
        from harness.tracking import log_table, start_run

        cfg = _logger_config(project)
        tracker = start_run(cfg, name="leaderboard", group="leaderboard", job_type="leaderboard",
                            config={"rules": list(rules), "n_boot": n_boot,
                                    "boards": [r.board.key for r in reports]},
                            root_dir=runs_dir)
        summary: dict[str, Any] = {}
        for rep in reports:
            key = rep.board.key
            log_table(tracker, f"{key}/scores", board_frame(rep.board, rep.rankings).reset_index())
            pos = rep.positions().reset_index()
            log_table(tracker, f"{key}/ranks", pos)
            if rep.bootstrap:
                rows = [{"rule": r, "method": m, "rank_lo": br.rank_interval[m][0], "rank_hi": br.rank_interval[m][1],
                         "p_win": br.p_win[m]} for r, br in rep.bootstrap.items() for m in br.p_win]
                log_table(tracker, f"{key}/bootstrap", pd.DataFrame(rows))
            for r in rep.live:
                summary[f"{key}/winner/{r}"] = ", ".join(rep.rankings[r].winners)
            summary[f"{key}/condorcet_winner"] = rep.condorcet or ""
        tracker.summary(summary)
        tracker.finish()
        return tracker.run_dir
    except Exception as exc:  # noqa: BLE001 - W&B mirrors the files; it must never cost the leaderboard
        msg = f"W&B logging of the leaderboard failed ({type(exc).__name__}: {exc}); files are written anyway"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        print(f"peftbench leaderboard: warning: {msg}", file=sys.stderr)
        if tracker is not None:
            try:
                tracker.finish(failed=True)
            except Exception as fin:  # noqa: BLE001 - already warned; the run is lost either way
                print(f"peftbench leaderboard: warning: W&B finish failed too: {fin}", file=sys.stderr)
        return None


def sweep_board_keys(records_dir: Path, sweep: str) -> set[str]:
    """Keys of the boards holding a successful record of the sweep named ``sweep`` (the record's
    ``run.sweep``, the sweep file's ``sweep_name``): what ``--show sweep:NAME`` selects. Reads the record
    files, parsing only those whose text contains the name (an opt-in look-up, not on the default path)."""
    needle = json.dumps(sweep)
    keys: set[str] = set()
    for path in sorted(records_dir.glob("*.json")):
        try:
            raw = path.read_text(encoding="utf-8")
            if needle not in raw:
                continue
            run = json.loads(raw)["run"]
            if run.get("sweep") == sweep and run.get("status") == "success":
                keys.add(board_key(str(run["budget"]), str(run["model"]), str(run.get("suite") or "")))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue  # an unreadable record is the leaderboard's to report, not the selection's
    return keys


def select_boards(keys: Sequence[str], patterns: Sequence[str], records_dir: Path) -> list[str]:
    """The board keys matching any of ``patterns``: a shell-style pattern on the key, or ``sweep:NAME``."""
    chosen: set[str] = set()
    for pat in patterns:
        if pat.startswith("sweep:"):
            chosen |= sweep_board_keys(records_dir, pat.removeprefix("sweep:"))
        else:
            chosen |= {k for k in keys if fnmatch.fnmatchcase(k, pat)}
    return [k for k in keys if k in chosen]


def parse_rules(arg: str | None) -> list[str]:
    """'all' (or nothing) → every registered rule; else the comma-separated names, in order."""
    if arg is None or arg.strip() in ("", "all"):
        return list(RULES)
    return [r.strip() for r in arg.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peftbench leaderboard", description=__doc__.splitlines()[0])
    ap.add_argument("--results-dir", default=None, help="default: $PEFTBENCH_RESULTS or <project>/results")
    ap.add_argument("--out", default=None, help="default: <results-dir>/leaderboards")
    ap.add_argument("--rules", default="all",
                    help=f"'all' (default) or comma-separated rules (known: {', '.join(RULES)})")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                    help=f"bootstrap resamples over seeds per board (default {DEFAULT_BOOTSTRAP}; 0 disables)")
    ap.add_argument("--no-wandb", action="store_true", help="do not mirror the tables to a W&B run")
    ap.add_argument("--wandb-project", default=None, help="default: the project of conf/logger/wandb.yaml")
    ap.add_argument("--quiet", action="store_true",
                    help="write files, print only their paths (and no progress lines)")
    ap.add_argument("--show", action="append", default=None, metavar="BOARD",
                    help="print only the boards whose key (<budget>__<model>__<suite>, as their files are named) "
                         "matches this shell-style pattern, e.g. smoke__minilm-l6__glue or 'smoke__*', or that hold "
                         "a record of a sweep: sweep:NAME (its sweep_name, e.g. sweep:demo); repeatable. Every "
                         "board is still written")
    ap.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="processes for reading records and for the per-board work (default: every CPU)")
    ap.add_argument("--no-cache", action="store_true",
                    help="re-parse every record file and recompute every board; do not read or write "
                         "<results-dir>/leaderboards/.cache (record cache and per-board output cache)")
    ap.add_argument("--criteria", default=None, metavar="A,B,...",
                    help="rank every board over these criteria, each a voter with its direction (known: "
                         f"{', '.join(CRITERIA)}; accuracy = each task's primary metric), e.g. "
                         "accuracy,memory,train_time")
    args = ap.parse_args(argv)
    try:
        criteria = parse_criteria(args.criteria)
    except ValueError as exc:
        print(f"peftbench leaderboard: --criteria: {exc}", file=sys.stderr)
        return 2
    results = _path_or(args.results_dir, "PEFTBENCH_RESULTS", PROJECT_ROOT / "results")
    out = Path(args.out).resolve() if args.out else results / "leaderboards"
    rules = parse_rules(args.rules)
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        named = ", ".join(unknown) if unknown else repr(args.rules)
        print(f"peftbench leaderboard: unknown rule(s) {named}; "
              f"known: all, {', '.join(RULES)}", file=sys.stderr)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print("peftbench leaderboard: --jobs must be >= 1", file=sys.stderr)
        return 2
    if args.bootstrap < 0:
        print("peftbench leaderboard: --bootstrap must be >= 0", file=sys.stderr)
        return 2
    if not (results / "records").is_dir():
        print(f"peftbench leaderboard: no records directory at {results / 'records'}", file=sys.stderr)
        return 2
    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        text, written, reports = generate(results, out, rules, n_boot=args.bootstrap, jobs=args.jobs,
                                          use_cache=not args.no_cache, progress=None if args.quiet else progress,
                                          criteria=criteria)
    except RecordError as exc:
        print(f"peftbench leaderboard: {exc}", file=sys.stderr)
        return 2
    if not args.no_wandb and reports:
        # next to the training runs' W&B files: $PEFTBENCH_RUNS, else <results-dir>/../runs
        runs_dir = Path(os.environ["PEFTBENCH_RUNS"]) if os.environ.get("PEFTBENCH_RUNS") else results.parent / "runs"
        log_to_wandb(reports, rules=rules, n_boot=args.bootstrap, runs_dir=runs_dir, project=args.wandb_project)
    if args.quiet:
        print("\n".join(str(p) for p in written))
        return 0
    where = f"{len(reports)} board(s) written to {out} (leaderboard.md, index.html, <board key>.md/.csv/.json)"
    if args.show:
        keys = [r.board.key for r in reports]
        shown = select_boards(keys, args.show, results / "records")
        if not shown:
            print(f"peftbench leaderboard: no board matches --show {' '.join(args.show)}; boards: "
                  f"{', '.join(keys) or 'none'}. {where}", file=sys.stderr)
            return 1
        print("\n".join((out / f"{k}.md").read_text() for k in shown))
        print(f"Shown: {', '.join(shown)}. All {where}.")
        return 0
    print(text)
    print(f"peftbench leaderboard: {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
