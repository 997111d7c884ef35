"""Uncertainty and agreement statistics for leaderboard rankings.

* :func:`kendall_tau_agreement` - do the rules tell the same story? (Kendall tau-b between orders)
* :func:`bootstrap_ranks` - would the winner change under another draw of seeds (and tasks)?
* :func:`friedman_nemenyi` - are the systems' average ranks distinguishable at all? (Demsar, JMLR 2006)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.leaderboard.rules import (
    RULES,
    BatchProfile,
    OutOfTime,
    Profile,
    Ranking,
    UnknownRuleError,
    WeightsLike,
    profile,
    rank_profile,
    time_limit,
)

__all__ = ["BOOTSTRAP_RULE_BUDGET_S", "BootstrapRule", "bootstrap_ranks", "friedman_nemenyi", "kendall_tau_agreement", "rank_positions"]


def rank_positions(ranking: Ranking) -> dict[str, float]:
    """Competition rank of each system: 1 + number of systems in strictly better groups."""
    out: dict[str, float] = {}
    pos = 1
    for g in ranking.groups:
        for name in g:
            out[name] = float(pos)
        pos += len(g)
    return out


def kendall_tau_agreement(rankings: dict[str, Ranking]) -> pd.DataFrame:
    """Rule x rule Kendall tau-b between the orders the rules induce (ties count as ties).

    Skipped rules are left out. tau-b is NaN when one of the two orders ties every system."""
    live = {k: r for k, r in rankings.items() if r.skipped is None and r.groups}
    names = list(live)
    if not names:
        return pd.DataFrame(dtype=float)
    systems = [s for g in live[names[0]].groups for s in g]
    pos = np.array([[p[s] for s in systems] for p in (rank_positions(live[k]) for k in names)])
    if len(systems) < 2:
        return pd.DataFrame(np.nan, index=names, columns=names, dtype=float)
    # tau-b = (concordant - discordant) / sqrt(pairs untied in a * pairs untied in b): with
    # sign[r, pair] = sign of the position difference, all rule pairs at once are one matrix product
    i, j = np.triu_indices(len(systems), 1)
    sign = np.sign(pos[:, i] - pos[:, j])
    untied = (sign != 0).sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sign @ sign.T) / np.sqrt(np.outer(untied, untied))
    tau[~np.isfinite(tau)] = np.nan  # an order tying every system: tau-b undefined, as in scipy
    return pd.DataFrame(np.clip(tau, -1.0, 1.0), index=names, columns=names, dtype=float)


@dataclass(frozen=True)
class BootstrapRule:
    """Bootstrap summary of one rule (see :func:`bootstrap_ranks`)."""

    rank_interval: dict[str, tuple[float, float]]
    p_win: dict[str, float]
    winners: list[str]
    winner_prob: float
    winner_may_change: bool
    summary: str
    n_valid: int
    note: str | None = None
    """How a searching rule (kemeny, ranked_pairs) was bootstrapped: distinct tables ranked, whether its
    time share ran out before every resample was ranked, resamples ranked by its fallback. None for the
    polynomial rules unless one of the last two happened."""

    def as_dict(self) -> dict:
        return {
            "rank_interval": {k: list(v) for k, v in self.rank_interval.items()},
            "p_win": dict(self.p_win),
            "winners": list(self.winners),
            "winner_prob": self.winner_prob,
            "winner_may_change": self.winner_may_change,
            "summary": self.summary,
            "n_valid": self.n_valid,
            "note": self.note,
        }


BOOTSTRAP_RULE_BUDGET_S = 2.0
"""Wall-clock seconds one rule without a batch form (kemeny, ranked_pairs) may spend re-ranking the
resamples of one bootstrap. Resamples are ranked in draw order; once the share is spent the rest are
not ranked by that rule (a prefix of independent draws: fewer, not biased), and its n_valid and note
say how many were."""


class _Looped:
    """One rule ranked resample by resample: each distinct table once (the point table's ranking is
    known already), within the rule's share of time, counting the resamples ranked by its fallback."""

    def __init__(self, rule: str, budget: float, point_key: bytes, point: Ranking) -> None:
        self.rule = rule
        self.budget = budget
        self.spent = 0.0
        self.memo: dict[bytes, Ranking] = {point_key: point}
        self.stopped_at: int | None = None  # the first resample left unranked (time share spent)
        self.n_fallback = 0
        self.fallback: str | None = None
        self.seen = 0
        self.distinct: set[bytes] = set()

    def rank(self, b: int, key: bytes, make: Callable[[], Profile]) -> Ranking | None:
        """The ranking of resample `b` (table bytes `key`), or None once the time share is spent."""
        if self.stopped_at is not None:
            return None
        hit = self.memo.get(key)
        if hit is None:
            left = self.budget - self.spent
            t = time.perf_counter()
            try:
                if left <= 0:
                    raise OutOfTime
                with time_limit(left):
                    hit = RULES[self.rule].fn(make())
            except OutOfTime:
                self.stopped_at = b
                return None
            finally:
                self.spent += time.perf_counter() - t
            self.memo[key] = hit
        self.seen += 1
        self.distinct.add(key)
        if hit.fallback:
            self.n_fallback += 1
            self.fallback = self.fallback or hit.fallback
        return hit

    def note(self, n_boot: int) -> tuple[str | None, str | None]:
        """(the note, the part of it the summary line must carry, or None)."""
        parts = [f"ranked resample by resample: {len(self.distinct)} distinct table(s) among {self.seen} resample(s)"]
        loud = []
        if self.stopped_at is not None:
            loud.append(f"only {self.stopped_at} of {n_boot} resamples ranked: its {self.budget:g} s share of the "
                        "bootstrap ran out")
        if self.n_fallback:
            loud.append(f"{self.n_fallback} resample(s) ranked by its fallback, not its exact definition")
            parts.append(f"the first such: {self.fallback}")
        if not loud and not RULES[self.rule].timed:
            return None, None  # a polynomial rule looped (no batch form, or vectorized=False): nothing to say
        return "; ".join(loud + parts), "; ".join(loud) or None


def bootstrap_ranks(
    samples: pd.DataFrame,
    *,
    system_col: str,
    task_col: str,
    seed_col: str,
    value_col: str,
    rules: Sequence[str],
    weights: WeightsLike = None,
    n_boot: int = 1000,
    resample_tasks: bool = False,
    rng_seed: int = 0,
    stable_at: float = 0.95,
    vectorized: bool = True,
) -> dict[str, BootstrapRule]:
    """Bootstrap the rankings over seeds (and optionally tasks).

    Each replicate redraws, with replacement, as many seeds as each (system, task) cell has, takes
    the mean, and re-ranks with every rule; with ``resample_tasks`` it also redraws the task set
    (a task drawn twice votes twice, carrying its weight each time). Values are higher-is-better.

    Per rule and system: the 2.5/97.5 percentiles of the competition rank (1 = best), and the share
    of replicates in which the system is among the winners (joint winners each count as winning, so
    the shares may sum above 1). ``winner_may_change`` is True when the full-data winner (or, for a
    joint win, the least stable of them) wins in fewer than ``stable_at`` of the replicates; the
    one-line ``summary`` says so in words. Replicates where the rule is skipped are not counted.

    Without task resampling, rules with a batch form (:func:`rules.batch_form`) rank all replicates
    at once; ``vectorized=False`` runs every rule replicate by replicate instead (same results: the
    reference the batch forms are tested against).
    """
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise UnknownRuleError(f"unknown rule(s) {unknown}; allowed: {', '.join(RULES)}")
    for c in (system_col, task_col, seed_col, value_col):
        if c not in samples.columns:
            raise ValueError(f"samples has no column {c!r}; columns: {list(samples.columns)}")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    data = samples[[system_col, task_col, seed_col, value_col]].dropna(subset=[value_col])
    data = data.assign(**{system_col: data[system_col].astype(str), task_col: data[task_col].astype(str)})
    systems = list(dict.fromkeys(data[system_col]))
    tasks = list(dict.fromkeys(data[task_col]))
    si = {s: i for i, s in enumerate(systems)}
    ti = {t: j for j, t in enumerate(tasks)}
    # cell values padded into [system, task, seed-slot]; count[s, t] = seeds present
    count = np.zeros((len(systems), len(tasks)), dtype=int)
    cells: dict[tuple[int, int], list[float]] = {}
    for s, t, v in zip(data[system_col], data[task_col], data[value_col].astype(float)):
        cells.setdefault((si[s], ti[t]), []).append(v)
    kmax = max((len(v) for v in cells.values()), default=1)
    vals = np.full((len(systems), len(tasks), kmax), np.nan)
    for (i, j), v in cells.items():
        vals[i, j, : len(v)] = v
        count[i, j] = len(v)
    wmap = {t: 1.0 for t in tasks}
    if weights is not None:
        unknown_w = [str(k) for k in weights if str(k) not in wmap]
        if unknown_w:
            raise ValueError(f"weights given for unknown tasks {unknown_w}; tasks are {tasks}")
        wmap.update({str(k): float(v) for k, v in weights.items()})

    with np.errstate(all="ignore"):
        full_means = np.where(
            count > 0, np.nansum(np.nan_to_num(vals), axis=2) / np.maximum(count, 1), np.nan
        )
    # the full-data table is validated once (weights included); replicates reuse its checks
    point = rank_profile(profile(pd.DataFrame(full_means, index=systems, columns=tasks), wmap), rules)
    wvec = np.array([wmap[t] for t in tasks])
    all_cols = np.nonzero(wvec > 0)[0]  # as validation does: a weight-0 task does not vote

    def table_key(cols: np.ndarray, means: np.ndarray) -> bytes:
        return np.ascontiguousarray(cols, dtype=np.int64).tobytes() + np.ascontiguousarray(means).tobytes()

    point_key = table_key(all_cols, full_means[:, all_cols])

    rng = np.random.default_rng(rng_seed)
    ranks = {r: np.full((n_boot, len(systems)), np.nan) for r in rules}
    wins = {r: np.zeros(len(systems)) for r in rules}
    valid = {r: 0 for r in rules}
    ii, jj = np.indices(count.shape)
    slot = np.arange(kmax)[None, None, :] < count[..., None]  # draw as many seeds as the cell has

    def resample(draw_u: np.ndarray) -> np.ndarray:
        """Cell means of replicates from their uniforms (..., systems, tasks, kmax)."""
        draw = (draw_u * count[..., None]).astype(int)
        picked = vals[ii[..., None], jj[..., None], np.minimum(draw, kmax - 1)]
        with np.errstate(all="ignore"):
            return np.where(count > 0, np.where(slot, picked, 0.0).sum(axis=-1) / np.maximum(count, 1), np.nan)

    def tally(b: int, res: dict[str, Ranking | None]) -> None:
        for r, rk in res.items():
            if rk is None or rk.skipped is not None or not rk.groups:
                continue
            valid[r] += 1
            pos = rank_positions(rk)
            ranks[r][b] = [pos[s] for s in systems]
            for s in rk.winners:
                wins[r][si[s]] += 1

    def looped_ranks(b: int, loops: list[_Looped], cols: np.ndarray, means: np.ndarray) -> None:
        """Replicate `b` (`means` over the tasks `cols`) ranked by the looped rules, each distinct table once."""
        key = table_key(cols, means)
        made: list[Profile] = []

        def make() -> Profile:  # one Profile per replicate, shared by the rules that need it
            if not made:
                made.append(Profile(systems, [tasks[j] for j in cols], means, wvec[cols]))
            return made[0]

        tally(b, {lp.rule: lp.rank(b, key, make) for lp in loops})

    if resample_tasks:
        # the task draw interleaves with the seed draws in the stream: one replicate at a time
        loops = [_Looped(r, BOOTSTRAP_RULE_BUDGET_S, point_key, point[r]) for r in rules]
        for b in range(n_boot):
            means = resample(rng.random((*count.shape, kmax)))
            cols = rng.integers(0, len(tasks), len(tasks))
            cols = cols[wvec[cols] > 0]  # as validation does: a weight-0 task does not vote
            if len(cols) == 0:
                continue  # every drawn task has weight 0: no ranking in this replicate
            looped_ranks(b, loops, cols, np.ascontiguousarray(means[:, cols]))
    else:
        # Without task resampling the stream is the seed uniforms alone, replicate after replicate, so
        # drawing a block of replicates at once consumes the same numbers in the same order (same
        # results for the same rng_seed), and every replicate has the same tasks and missing cells:
        # rules with a batch form rank the whole block at once, the others one replicate at a time.
        cols = all_cols
        names = [tasks[j] for j in cols]
        batched = [r for r in rules if vectorized and RULES[r].batch is not None]
        loops = [_Looped(r, BOOTSTRAP_RULE_BUDGET_S, point_key, point[r]) for r in rules if r not in batched]
        per_rep = count.size * kmax
        step = max(1, min(n_boot, (1 << 21) // max(per_rep, 1)))  # replicates per block (~16 MB of uniforms)
        for b0 in range(0, n_boot, step):
            block = resample(rng.random((min(step, n_boot - b0), *count.shape, kmax)))[:, :, cols]
            if batched:
                bp = BatchProfile(systems, names, block, wvec[cols])
                for r in batched:
                    br = RULES[r].batch(bp)
                    ranks[r][b0 : b0 + len(block)] = br.positions
                    wins[r] += br.winners.sum(axis=0)
                    valid[r] += int(br.valid.sum())
            for k, means in enumerate(block if loops else ()):
                looped_ranks(b0 + k, loops, cols, np.ascontiguousarray(means))

    notes = {lp.rule: lp.note(n_boot) for lp in loops}
    out: dict[str, BootstrapRule] = {}
    for r in rules:
        note, loud = notes.get(r, (None, None))
        nv = valid[r]
        p_win = {s: (float(wins[r][i] / nv) if nv else float("nan")) for i, s in enumerate(systems)}
        if nv:
            rows = ranks[r][~np.isnan(ranks[r]).all(axis=1)]  # a replicate is ranked whole, or not at all
            pct = np.percentile if not np.isnan(rows).any() else np.nanpercentile  # same numbers, 30x faster
            lo = pct(rows, 2.5, axis=0)
            hi = pct(rows, 97.5, axis=0)
            interval = {s: (float(lo[i]), float(hi[i])) for i, s in enumerate(systems)}
        else:
            interval = {s: (float("nan"), float("nan")) for s in systems}
        winners = list(point[r].winners)
        if point[r].skipped is not None or not winners or nv == 0:
            why = point[r].skipped or loud or "no valid bootstrap replicate"
            out[r] = BootstrapRule(
                interval, p_win, [], float("nan"), True, f"{r}: no stable winner ({why})", nv, note
            )
            continue
        wp = min(p_win[s] for s in winners)
        may_change = wp < stable_at
        who = " and ".join(winners)
        if may_change:
            rivals = sorted(
                (s for s in systems if s not in winners and p_win[s] > 0), key=lambda s: -p_win[s]
            )
            alt = f"; {rivals[0]} wins in {p_win[rivals[0]]:.0%}" if rivals else ""
            summary = f"{r}: the winner could change - {who} wins in only {wp:.0%} of {nv} resamples{alt}"
        else:
            summary = f"{r}: stable - {who} wins in {wp:.0%} of {nv} resamples"
        if loud:
            summary += f" ({loud})"
        out[r] = BootstrapRule(interval, p_win, winners, wp, may_change, summary, nv, note)
    return out


@functools.lru_cache(maxsize=256)
def _q_alpha(alpha: float, k: int) -> float:
    """Nemenyi's q_alpha: the studentized range quantile (k groups, infinite df) / sqrt(2). A numerical
    integration in scipy (~10 ms), the same for every board with as many systems: computed once."""
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf)) / np.sqrt(2.0)


def friedman_nemenyi(scores: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Friedman test over tasks plus the Nemenyi critical difference (Demsar, JMLR 7, 2006).

    Systems are the treatments, tasks the blocks; within a task rank 1 = best (higher score), ties get
    average ranks. Tasks with a missing score are dropped (listed in ``dropped_tasks``; the test needs
    complete blocks). CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha = studentized range quantile
    (k groups, infinite df) / sqrt(2). Two systems differ significantly when their average ranks
    differ by at least CD; ``groups`` lists the maximal runs of systems (by average rank) whose span is
    below CD, i.e. the bars of a CD diagram. Column weights are not used: drop weight-0 columns first.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    df = scores.astype(float)
    df.index = df.index.map(str)
    dropped = [str(c) for c in df.columns if df[c].isna().any()]
    df = df.drop(columns=dropped)
    k, n_tasks = df.shape
    note = f"dropped {len(dropped)} task(s) with missing scores: {dropped}" if dropped else ""
    if k < 3:
        raise ValueError(f"the Friedman test needs >= 3 systems, got {k}")
    if n_tasks < 2:
        raise ValueError(
            f"the Friedman test needs >= 2 tasks with complete scores, got {n_tasks}. {note}".strip()
        )
    ranks = df.rank(axis=0, ascending=False, method="average")
    avg = ranks.mean(axis=1).sort_values(kind="stable")
    res = sps.friedmanchisquare(*[df.loc[s].to_numpy() for s in df.index])
    q = _q_alpha(alpha, k)
    cd = q * float(np.sqrt(k * (k + 1) / (6.0 * n_tasks)))
    names = list(avg.index)
    vals = avg.to_numpy()
    runs: list[list[str]] = []
    for i in range(k):
        j = i
        while j + 1 < k and vals[j + 1] - vals[i] < cd:
            j += 1
        if j > i and not (runs and names.index(runs[-1][-1]) >= j):
            runs.append(names[i : j + 1])
    return {
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
        "significant": bool(res.pvalue < alpha),
        "avg_ranks": {s: float(v) for s, v in avg.items()},
        "cd": float(cd),
        "q_alpha": float(q),
        "alpha": alpha,
        "n_systems": k,
        "n_tasks": n_tasks,
        "dropped_tasks": dropped,
        "note": note,
        "groups": runs,
    }
