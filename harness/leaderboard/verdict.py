"""What a board's evidence supports, in a few plain sentences, and the evidence per cell behind it.

Why: a board carries 16 rankings, a Friedman test, a bootstrap and baselines; a reader who stops at
the first table sees a winner crowned by 15 rules even when nothing is significant and the tasks sit
at their trivial baselines. The verdict states the conclusion first, and every number in it is one of
the board's own statistics (no new test is run here):

1. significance over tasks: Friedman's p (and, when significant, who Nemenyi separates from the top);
2. the consensus winner: how many rules put it first, and how often the winner changes when seeds are
   resampled (the bootstrap of the first ranked rule);
3. the baselines: on how many tasks no method clears its trivial baseline (majority class, chance, 0),
   judged on each cell's interval (:func:`cell_bounds`);
4. the top two: on how many tasks the consensus winner beats the runner-up, at what parameter cost;
5. and, where the runs kept per-example outcomes, on how many tasks that lead (or lag) is significant
   on the same examples (the board's paired tests, :func:`harness.leaderboard.examples.board_paired_tests`).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from harness.leaderboard.board_report import BoardReport
    from harness.leaderboard.table import Board

ALPHA = 0.05


def _times(ratio: float) -> str:
    """A parameter ratio as a multiple: whole above 10×, one decimal below."""
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def cell_bounds(board: Board, example_ci: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(lo, hi, source) per method × task, in each metric's own scale. The interval of a cell is its
    example(+seed) bootstrap interval when every run of it kept per-example outcomes; else the 95%
    t-interval over seeds (mean ± t·std/√n, two seeds or more); else none (NaN, source "")."""
    from scipy import stats

    idx, cols = board.scores.index, board.scores.columns
    n = board.n_seeds.to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        t = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
        half = t * board.std.to_numpy(dtype=float) / np.sqrt(n)
    mean = board.scores.to_numpy(dtype=float)
    lo, hi = mean - half, mean + half
    source = np.where(np.isfinite(half), "seeds", "").astype(object)
    if example_ci is not None and not example_ci.empty:
        ri = {m: i for i, m in enumerate(idx)}
        ci = {c: j for j, c in enumerate(cols)}
        for m, task, a, b in zip(example_ci["method"], example_ci["task"], example_ci["lo"], example_ci["hi"]):
            if m in ri and task in ci:
                i, j = ri[m], ci[task]
                lo[i, j], hi[i, j] = a, b
                source[i, j] = "examples"
    return (pd.DataFrame(lo, index=idx, columns=cols), pd.DataFrame(hi, index=idx, columns=cols),
            pd.DataFrame(source, index=idx, columns=cols))


def below_baseline(board: Board, lo: pd.DataFrame, hi: pd.DataFrame) -> pd.DataFrame:
    """True where a cell does not clear its task's trivial baseline: its interval reaches the baseline
    (its mean, when it has no interval). False where the task records no baseline or the cell is empty."""
    out = pd.DataFrame(False, index=board.scores.index, columns=board.scores.columns)
    for task in board.scores.columns:
        base = board.baseline.get(task)
        if base is None or math.isnan(base):
            continue
        mean = board.scores[task]
        if board.directions.get(task) == "min":
            edge = hi[task].where(hi[task].notna(), mean)
            out[task] = mean.notna() & (edge >= base)
        else:
            edge = lo[task].where(lo[task].notna(), mean)
            out[task] = mean.notna() & (edge <= base)
    return out


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}" if p < 0.01 else f"= {p:.2f}"


def _seeds(board: Board) -> str:
    n = board.n_seeds.to_numpy(dtype=float)
    n = n[np.isfinite(n) & (n > 0)]
    if not n.size:
        return "no seeds"
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}–{hi} seeds"


def _names(ms: list[str]) -> str:
    q = [f"`{m}`" for m in ms]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " and " + q[-1]


def consensus(rep: BoardReport) -> pd.Series:
    """Mean rank position over the rules that ranked (1 = best): the board's one consensus column."""
    pos = rep.positions()
    return pos.mean(axis=1) if not pos.empty else pd.Series(np.nan, index=rep.board.scores.index)


def verdict(rep: BoardReport, marks: pd.DataFrame | None = None) -> list[str]:
    """The board's verdict, sentence by sentence (Markdown: method names in backticks)."""
    b = rep.board
    tasks = list(b.scores.columns)
    n_tasks = len(tasks)
    out: list[str] = []
    if getattr(b, "criteria", None):   # a board over criteria: the voters are criteria, not only tasks
        out.append(f"Ranked over {len(b.criteria)} criteria, each a voter: {', '.join(b.criteria)}.")
    # 1. significance over tasks
    f = rep.friedman
    if f is not None:
        ctx = f"{f['n_tasks']} tasks, {_seeds(b)}"
        if not f["significant"]:
            out.append(f"No method is significantly better than another on these {f['n_tasks']} tasks "
                       f"(Friedman p {_p(f['pvalue'])}, {_seeds(b)}).")
        else:
            avg = f["avg_ranks"]
            best = min(avg, key=avg.get)
            behind = [m for m, r in sorted(avg.items(), key=lambda kv: kv[1]) if r - avg[best] >= f["cd"]]
            tail = (f"; `{best}` is significantly ahead of {_names(behind)} (Nemenyi, CD = {f['cd']:.2f})"
                    if behind else "; no pair is separated by Nemenyi's critical difference "
                                   f"(CD = {f['cd']:.2f})")
            out.append(f"Methods differ significantly over these tasks (Friedman p {_p(f['pvalue'])}, {ctx}){tail}.")
    elif rep.friedman_note:
        why = rep.friedman_note.split(": ", 1)[-1]
        out.append(f"No significance test over tasks: {why[0].lower() + why[1:]}".rstrip(".") + ".")
    # 2. the consensus winner
    live = rep.live
    if live:
        firsts = Counter(m for r in live for m in rep.rankings[r].winners)
        top, k = max(sorted(firsts.items()), key=lambda kv: kv[1])
        joint = [m for m, c in firsts.items() if c == k and m != top]
        s = (f"`{top}` ranks first under {k} of {len(live)} rules" if not joint
             else f"{_names([top, *joint])} each rank first under {k} of {len(live)} rules")
        # how often `top` loses first place when seeds are resampled, under each rule that crowned it
        change = sorted((1.0 - br.p_win.get(top, 0.0), r) for r, br in (rep.bootstrap or {}).items()
                        if top in br.winners and br.n_valid and not math.isnan(br.p_win.get(top, math.nan)))
        if change:
            (lo, r_lo), (hi, r_hi) = change[0], change[-1]
            n_valid = max(rep.bootstrap[r].n_valid for _, r in change) if rep.bootstrap else 0
            span = (f"in {lo:.0%}" if f"{lo:.0%}" == f"{hi:.0%}"
                    else f"in {lo:.0%} ({r_lo}) to {hi:.0%} ({r_hi})")
            s += f"; it loses first place {span} of {n_valid} bootstrap resamples over seeds"
        elif rep.bootstrap_note and "single seed" in rep.bootstrap_note:
            s += "; with one seed per cell, resampling seeds cannot test that"
        out.append(s + ".")
    # 3. baselines
    if marks is not None and b.baseline:
        judged = [t for t in tasks if t in b.baseline and b.scores[t].notna().any()]
        flat = [t for t in judged if bool(marks[t][b.scores[t].notna()].all())]
        n_marked = int(marks[judged].to_numpy().sum()) if judged else 0
        if flat:
            out.append(f"On {len(flat)} of {len(judged)} tasks no method clears the trivial baseline "
                       f"({', '.join(flat)}).")
        elif n_marked:
            out.append(f"Every task has a method above its trivial baseline; {n_marked} cell(s) do not clear it.")
        elif judged:
            out.append(f"Every method clears the trivial baseline on all {len(judged)} tasks that record one.")
    # 4. the top two
    cons = consensus(rep).dropna().sort_values(kind="stable")
    if len(cons) >= 2 and n_tasks:
        first, second = cons.index[0], cons.index[1]
        o = b.oriented()
        both = o.loc[[first, second]].dropna(axis=1)
        wins = int((both.loc[first] > both.loc[second]).sum())
        s = f"By mean rank over rules, `{first}` beats the runner-up `{second}` on {wins} of {both.shape[1]} tasks"
        pa, pb = (float(b.cost.loc[m, "trainable_params"]) for m in (first, second))
        if pa > 0 and pb > 0 and math.isfinite(pa) and math.isfinite(pb):
            rel = pa / pb - 1.0
            if abs(rel) < 0.005:
                s += ", at the same parameter count"
            elif rel <= -0.5:   # a share would round to "100% fewer": say how many times fewer
                s += f", with {_times(pb / pa)} fewer trainable parameters"
            elif rel >= 1.0:    # "30269% more" reads worse than "304× more"
                s += f", with {_times(pa / pb)} more trainable parameters"
            else:
                s += f", at {abs(rel):.0%} {'more' if rel > 0 else 'fewer'} trainable parameters"
        out.append(s + ".")
        # 5. the same pair on the same examples
        if rep.paired and rep.paired_reference == first:
            tested = {t: per[second] for t, per in rep.paired.items() if second in per}
            if tested:
                ahead = [t for t, pt in tested.items() if pt.diff > 0 and pt.pvalue < ALPHA]
                behind = [t for t, pt in tested.items() if pt.diff < 0 and pt.pvalue < ALPHA]
                kinds = sorted({"McNemar" if pt.test == "mcnemar" else "sign-flip permutation"
                                for pt in tested.values()})
                how = f"paired {' and '.join(kinds)} test{'s' if len(tested) > 1 else ''}, p < {ALPHA:g}"
                if not ahead and not behind:
                    out.append(f"On the same examples, no task separates `{first}` from `{second}` "
                               f"({len(tested)} task{'s' if len(tested) != 1 else ''} tested; {how.replace('<', '≥')}).")
                else:
                    s = (f"On the same examples, `{first}` is significantly ahead of `{second}` on {len(ahead)} of "
                         f"{len(tested)} tasks")
                    if behind:
                        s += f" and behind on {len(behind)} ({', '.join(behind)})"
                    out.append(s + f" ({how}).")
    return out


def verdict_markdown(lines: list[str]) -> str:
    return "**Verdict.** " + " ".join(lines) if lines else "**Verdict.** No ranked method on this board."


def as_document(lo: pd.DataFrame, hi: pd.DataFrame, source: pd.DataFrame, marks: pd.DataFrame) -> dict[str, Any]:
    """Per method and task: the interval, where it came from, and whether it clears the baseline."""
    cols = list(lo.columns)
    lo_a, hi_a, src_a = lo.to_numpy(dtype=float).tolist(), hi.to_numpy(dtype=float).tolist(), source.to_numpy().tolist()
    mk = marks.to_numpy(dtype=bool).tolist()   # whole frames to lists: a pandas .at per cell cost ~40 ms a board
    return {m: {t: {"lo": lo_a[i][j], "hi": hi_a[i][j], "interval_from": src_a[i][j] or None,
                    "below_baseline": mk[i][j]} for j, t in enumerate(cols)} for i, m in enumerate(lo.index)}
