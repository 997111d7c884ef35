"""Example-level statistics from the records' per-example outcomes (:mod:`harness.outcomes`).

Why: a cell's spread over seeds needs several seeds, and one seed gives no interval at all; but every
run answered hundreds of examples. Resampling the examples (and the seeds, where there are several)
gives an interval per cell even from one run, and two methods evaluated on the *same* examples can be
compared pairwise (McNemar, paired permutation), which is far more sensitive than comparing means.

* :func:`cell_intervals`: the percentile bootstrap of a cell's mean over seeds, two levels — draw the
  seeds with replacement, then each drawn seed's examples with replacement. For right/wrong outcomes
  resampling n examples of which k are right gives Binomial(n, k/n) right, so only the totals
  (n, k) of each run are needed (what the long table carries), not the bits: the same distribution
  as resampling the bits themselves, at a fraction of the cost (tested against the explicit resample).
* :func:`mcnemar`: exact McNemar test of two methods' right/wrong on the same examples (a two-sided
  binomial test on the discordant pairs).
* :func:`paired_permutation`: sign-flip permutation test of the mean per-example difference (exact
  enumeration up to 2^16 flips, Monte Carlo beyond), for outcomes that are not just right/wrong.
* :func:`board_paired_tests`: on a board, per task, the consensus winner against every other method on
  the same examples — McNemar when both ran one seed with right/wrong outcomes, else the sign-flip test
  of the per-example mean over seeds (:func:`sign_flip_pvalues`, every method of a task at once).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from harness.outcomes import Outcomes

DEFAULT_EXAMPLE_BOOT = 1000   # resamples per cell: enough for the 2.5/97.5 percentiles of a mean
EXACT_PERMUTATION_MAX = 16    # up to 2^16 sign flips are enumerated; beyond, Monte Carlo


def two_level_bootstrap(n: Sequence[int] | np.ndarray, k: Sequence[float] | np.ndarray, *, n_boot: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap replicates of a cell's mean over seeds; seed s evaluated ``n[s]`` examples,
    ``k[s]`` right. Each replicate draws len(n) seeds with replacement, then for each drawn seed its
    n examples with replacement (Binomial(n, k/n) right), and averages the seeds' accuracies."""
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(k, dtype=float) / n
    seeds = rng.integers(0, len(n), size=(n_boot, len(n))) if len(n) > 1 else np.zeros((n_boot, 1), np.int64)
    right = rng.binomial(n[seeds], p[seeds])
    return (right / n[seeds]).mean(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.percentile(replicates, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def cell_intervals(samples: pd.DataFrame, *, n_boot: int = DEFAULT_EXAMPLE_BOOT, rng_seed: int = 0,
                   level: float = 0.95) -> pd.DataFrame:
    """(method, task) → lo, hi, n_examples, n_runs: the example(+seed) bootstrap interval of every cell
    whose runs all carry right/wrong outcome totals (``n_outcomes``, ``outcome_sum`` columns of a board's
    samples, values in the metric's own orientation). Cells where a run lacks them are left out: an
    interval over some seeds' examples only would be narrower than the truth.

    Every cell is resampled at once (:func:`two_level_bootstrap`'s scheme, cells × replicates × seed
    slots in one array): a Python loop over a board's 160 cells cost more than the rest of its analysis.
    A pure function of the samples (one generator, cells in sorted order)."""
    cols = ["method", "task", "lo", "hi", "n_examples", "n_runs"]
    if samples.empty or "n_outcomes" not in samples:
        return pd.DataFrame(columns=cols)
    part = samples.sort_values(["method", "task"], kind="stable")
    gid = part.groupby(["method", "task"], sort=True).ngroup().to_numpy()
    n = part["n_outcomes"].to_numpy(dtype=float)
    k = part["outcome_sum"].to_numpy(dtype=float)
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    bad = np.bincount(gid, weights=(~np.isfinite(n) | ~np.isfinite(k) | ~(n > 0)).astype(float), minlength=n_groups)
    keep_g = np.flatnonzero(bad == 0)
    if not keep_g.size:
        return pd.DataFrame(columns=cols)
    rows = np.isin(gid, keep_g)
    gid, n, k = gid[rows], n[rows].astype(np.int64), k[rows]
    first = np.r_[0, np.flatnonzero(np.diff(gid)) + 1]
    count = np.diff(np.r_[first, len(gid)])
    slot = np.arange(len(gid)) - np.repeat(first, count)
    kmax = int(count.max())
    nn = np.ones((len(first), kmax), np.int64)
    pp = np.zeros((len(first), kmax))
    cell = np.repeat(np.arange(len(first)), count)
    nn[cell, slot], pp[cell, slot] = n, k / n
    rng = np.random.default_rng(rng_seed)
    draw = (rng.random((len(first), n_boot, kmax)) * count[:, None, None]).astype(np.int64)
    ci = np.arange(len(first))[:, None, None]
    n_sel = nn[ci, draw]
    acc = _binomial(rng, n_sel, pp[ci, draw]) / n_sel
    valid = np.arange(kmax)[None, None, :] < count[:, None, None]
    reps = np.where(valid, acc, 0.0).sum(axis=2) / count[:, None]
    a = (1.0 - level) / 2.0
    lo, hi = np.percentile(reps, [100 * a, 100 * (1 - a)], axis=1)
    keys = part[["method", "task"]].to_numpy()[rows][first]
    totals = np.add.reduceat(n, first)
    return pd.DataFrame({"method": keys[:, 0], "task": keys[:, 1], "lo": lo, "hi": hi,
                         "n_examples": totals.astype(int), "n_runs": count.astype(int)}, columns=cols)


NORMAL_FROM = 50.0   # n·p·(1−p) from which a Binomial(n, p) draw is taken from its normal approximation


def _binomial(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binomial(n, p) draws; where n·p·(1−p) ≥ NORMAL_FROM (sd ≥ 7 examples), the normal approximation,
    rounded and clipped to [0, n]: numpy's exact sampler costs ~0.4 µs a draw at n = 1,000, which made
    a 20 × 8 board with 5 seeds spend most of its analysis here; at that spread the percentiles of a
    cell's mean move by well under one example (tested against the exact draws)."""
    var = n * p * (1.0 - p)
    big = var >= NORMAL_FROM
    if big.all():   # the usual case (hundreds of examples per run): no masked copies
        return np.clip(np.rint(n * p + rng.standard_normal(n.shape) * np.sqrt(var)), 0, n)
    out = np.empty(n.shape, dtype=float)
    if (~big).any():
        out[~big] = rng.binomial(n[~big], p[~big])
    if big.any():
        z = rng.standard_normal(int(big.sum()))   # ~8× faster than normal(loc, scale) with array arguments
        out[big] = np.clip(np.rint(n[big] * p[big] + z * np.sqrt(var[big])), 0, n[big])
    return out


@dataclass(frozen=True)
class PairedTest:
    """A paired test of method a against method b on the same examples (``diff`` = mean a − mean b)."""

    test: str
    n: int
    diff: float
    pvalue: float
    a_only: int = 0   # McNemar: examples a got right and b wrong
    b_only: int = 0


def mcnemar(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> PairedTest:
    """Exact McNemar test (two-sided): under H0 each discordant example is a's with probability 1/2."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size} (not the same examples)")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = float(mcnemar_pvalues(np.array([a_only]), np.array([b_only]))[0])
    return PairedTest("mcnemar", int(a.size), float(a.mean() - b.mean()) if a.size else 0.0, p, a_only, b_only)


def mcnemar_pvalues(a_only: np.ndarray, b_only: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p-values of many pairs at once: scipy's ``binomtest(a_only, a_only + b_only,
    0.5)``, which for the symmetric Binomial(m, 1/2) is 2 · P(X <= min(a_only, b_only)), at most 1 (and 1
    without discordant examples); one vectorised cdf instead of a binomtest (~1 ms) per pair."""
    from scipy.stats import binom

    a_only, b_only = np.asarray(a_only, dtype=np.int64), np.asarray(b_only, dtype=np.int64)
    m = a_only + b_only
    p = np.minimum(1.0, 2.0 * binom.cdf(np.minimum(a_only, b_only), np.maximum(m, 1), 0.5))
    return np.where(m == 0, 1.0, p)


def paired_permutation(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_perm: int = 10_000,
                       rng_seed: int = 0) -> PairedTest:
    """Two-sided sign-flip test of the mean difference a − b: under H0 each example's difference is as
    likely negated. Exact over all 2^m flips of the m nonzero differences when m ≤ 16; otherwise
    ``n_perm`` random flips, with the observed statistic counted once ((hits + 1) / (n_perm + 1)), so
    a Monte Carlo p is never 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size} (not the same examples)")
    d = a - b
    observed = abs(d.sum())
    nz = d[d != 0]
    tol = 1e-9 * max(1.0, observed)
    if nz.size == 0:
        p = 1.0
    elif nz.size <= EXACT_PERMUTATION_MAX:
        signs = 1 - 2 * ((np.arange(2 ** nz.size)[:, None] >> np.arange(nz.size)) & 1)
        p = float(np.mean(np.abs(signs @ nz) >= observed - tol))
    else:
        rng = np.random.default_rng(rng_seed)
        hits = 0
        for start in range(0, n_perm, 1000):
            signs = rng.choice((-1.0, 1.0), size=(min(1000, n_perm - start), nz.size))
            hits += int((np.abs(signs @ nz) >= observed - tol).sum())
        p = (hits + 1) / (n_perm + 1)
    return PairedTest("paired_permutation", int(a.size), float(d.mean()) if d.size else 0.0, p)


BINARY = ("correct", "label")   # right/wrong per example (harness.outcomes.BINARY_KINDS)
BOARD_PERMUTATIONS = 1000   # sign flips on a board (Monte Carlo): p resolution 1/1001, enough for p < 0.01


SIGN_CHUNK = 1 << 21   # signs drawn per block (16 MB of float64): a 10k-example task must not hold 2000 × 10k


def flip_signs(n_perm: int, n: int, rng_seed: int = 0) -> Iterator[np.ndarray]:
    """``n_perm`` × ``n`` random ±1 in blocks of rows, each sign one random bit (numpy's random bytes,
    unpacked: ~10× faster than drawing uniforms, which cost more than the tests themselves on a
    1,000-example task). A pure function of (n_perm, n, rng_seed)."""
    rng = np.random.default_rng(rng_seed)
    step = max(1, SIGN_CHUNK // max(n, 1))
    for start in range(0, n_perm, step):
        k = min(step, n_perm - start)
        bits = np.unpackbits(np.frombuffer(rng.bytes((k * n + 7) // 8), dtype=np.uint8), count=k * n)
        yield 1.0 - 2.0 * bits.reshape(k, n).astype(np.float64)


def sign_flip_pvalues(d: np.ndarray, *, n_perm: int = BOARD_PERMUTATIONS, rng_seed: int = 0,
                      scale: np.ndarray | None = None) -> np.ndarray:
    """Two-sided sign-flip p-values of the mean of each row of ``d`` (rows: method pairs; columns: the
    same examples), as :func:`paired_permutation` defines them: exact over all flips of a row's nonzero
    differences when it has at most :data:`EXACT_PERMUTATION_MAX`; otherwise ``n_perm`` random flips,
    *shared by every row* (one draw of signs over the examples, a flip of a zero difference changing
    nothing), with the observed statistic counted once. One matrix product for a whole board's pairs
    instead of a loop of tests; the draw (:func:`flip_signs`) is a pure function of ``rng_seed`` and
    the shape.

    ``scale``: per row, an integer that makes that row's differences integers (a mean over k seeds of
    right/wrong minus one over k' seeds: k·k'). A row's p does not change when it is scaled, and integer
    sums below 2**24 are exact in float32: the product then runs in float32, twice as fast, with ties
    (frequent with such discrete differences) counted exactly."""
    d = np.atleast_2d(np.asarray(d, dtype=float))
    if scale is not None:
        scaled = d * np.asarray(scale, dtype=float)[:, None]
        if np.allclose(scaled, np.rint(scaled), rtol=0, atol=1e-6) and np.abs(scaled).sum(axis=1).max(initial=0) < 2**24:
            d = np.rint(scaled)
        else:
            scale = None
    observed = np.abs(d.sum(axis=1))
    tol = 0.5 * np.ones(len(d)) if scale is not None else 1e-9 * np.maximum(1.0, observed)
    nonzero = (d != 0).sum(axis=1)
    out = np.ones(len(d))
    big = nonzero > EXACT_PERMUTATION_MAX
    for i in np.flatnonzero(~big & (nonzero > 0)):
        nz = d[i][d[i] != 0]
        signs = 1 - 2 * ((np.arange(2 ** nz.size)[:, None] >> np.arange(nz.size)) & 1)
        out[i] = float(np.mean(np.abs(signs @ nz) >= observed[i] - tol[i]))
    if big.any():
        dtype = np.float32 if scale is not None else np.float64
        rows = d[big].T.astype(dtype)
        hits = np.zeros(int(big.sum()))
        for signs in flip_signs(n_perm, d.shape[1], rng_seed):
            hits += (np.abs(signs.astype(dtype, copy=False) @ rows) >= observed[big] - tol[big]).sum(axis=0)
        out[big] = (hits + 1) / (n_perm + 1)
    return out


def per_example_scores(out: Outcomes) -> np.ndarray:
    """Higher-is-better score of each example: right (1) / wrong (0), or minus a regression prediction's
    absolute error (a correlation has no per-example share; the paired test then compares errors)."""
    if out.kind == "correct":
        return np.asarray(out.values, dtype=float)
    assert out.reference is not None
    if out.kind == "label":
        return (np.asarray(out.values) == np.asarray(out.reference)).astype(float)
    return -np.abs(np.asarray(out.values, dtype=float) - np.asarray(out.reference, dtype=float))


def board_paired_tests(samples: pd.DataFrame, outcomes: Mapping[tuple[str, str, Any], Outcomes], reference: str, *,
                       n_perm: int = BOARD_PERMUTATIONS, rng_seed: int = 0) -> dict[str, dict[str, PairedTest]]:
    """task → method → the paired test of ``reference`` against that method on the task's examples
    (``diff`` = reference − method, each example's score as :func:`per_example_scores` gives it).

    A pair is tested only when every run of both cells has outcomes (``outcomes``, keyed by (method,
    task, seed) as in ``samples``) over the same number of examples (the task's evaluated set, in file
    order, is the same for every method). One seed each, right/wrong: exact McNemar; otherwise the mean
    of each example over a method's seeds, and the sign-flip test of the differences — every such pair
    of the board with as many examples in one :func:`sign_flip_pvalues` (one draw of signs, one
    product)."""
    runs: dict[tuple[str, str], list[Outcomes]] = {}
    complete: dict[tuple[str, str], bool] = {}
    for m, t, seed in zip(samples["method"].astype(str), samples["task"].astype(str), samples["seed"]):
        got = outcomes.get((m, t, seed))
        complete[m, t] = complete.get((m, t), True) and got is not None
        if got is not None:
            runs.setdefault((m, t), []).append(got)
    out: dict[str, dict[str, PairedTest]] = {}
    # per number of examples: (task, method, differences, integer scale or 0) of the pairs to permute
    perm: dict[int, list[tuple[str, str, np.ndarray, int]]] = {}
    for task in dict.fromkeys(samples["task"].astype(str)):
        ref = runs.get((reference, task)) if complete.get((reference, task)) else None
        if not ref or len({o.n for o in ref}) != 1:
            continue
        n = ref[0].n
        others = [m for (m, t) in runs if t == task and m != reference and complete.get((m, t))
                  and {o.n for o in runs[m, t]} == {n}]
        if not others:
            continue
        out[task] = {}
        exact: list[tuple[str, int, int, float]] = []
        ref_mean = np.mean([per_example_scores(o) for o in ref], axis=0)
        ref_binary = all(o.kind in BINARY for o in ref)
        for m in others:
            theirs = runs[m, task]
            binary = ref_binary and all(o.kind in BINARY for o in theirs)
            if binary and len(ref) == 1 and len(theirs) == 1:
                a, b = ref_mean.astype(bool), per_example_scores(theirs[0]).astype(bool)
                exact.append((m, int((a & ~b).sum()), int((~a & b).sum()), float(a.mean() - b.mean())))
                continue
            d = ref_mean - np.mean([per_example_scores(o) for o in theirs], axis=0)
            perm.setdefault(n, []).append((task, m, d, len(ref) * len(theirs) if binary else 0))
            out[task][m] = None   # type: ignore[assignment]  # filled below, in the board's order
        if exact:
            ps = mcnemar_pvalues(np.array([e[1] for e in exact]), np.array([e[2] for e in exact]))
            for (m, a_only, b_only, diff), pv in zip(exact, ps):
                out[task][m] = PairedTest("mcnemar", n, diff, float(pv), a_only, b_only)
        out[task] = {m: out[task].get(m) for m in others}   # type: ignore[misc]
    for n, pairs in perm.items():
        d = np.stack([x[2] for x in pairs])
        scales = np.array([x[3] for x in pairs])
        if (scales > 0).all():
            p = sign_flip_pvalues(d, n_perm=n_perm, rng_seed=rng_seed, scale=scales)
        else:
            p = sign_flip_pvalues(d, n_perm=n_perm, rng_seed=rng_seed)
        for (task, m, row, _), pv in zip(pairs, p):
            out[task][m] = PairedTest("paired_permutation", n, float(row.mean()), float(pv))
    return out


def paired_document(reference: str | None, tests: Mapping[str, Mapping[str, PairedTest]]) -> dict[str, Any]:
    """The JSON form of :func:`board_paired_tests` (read back by :func:`paired_from_document`)."""
    return {"reference": reference, "tasks": {t: {m: asdict(pt) for m, pt in per.items()} for t, per in tests.items()}}


def paired_from_document(doc: Mapping[str, Any]) -> tuple[str | None, dict[str, dict[str, PairedTest]]]:
    return doc.get("reference"), {t: {m: PairedTest(**v) for m, v in per.items()}
                                  for t, per in (doc.get("tasks") or {}).items()}


# --- intervals of metrics that are not a mean of right/wrong ----------------------------------------

LABEL_METRICS = ("matthews", "f1", "accuracy")
PREDICTION_METRICS = ("pearson", "spearman")
PREDICTION_BOOT = 400   # resamples per run of a correlation (each one touches all its examples)


def confusion_metric(metric: str, conf: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """``metric`` of confusion matrices ``conf`` (..., gold, predicted) over ``labels``, as
    :mod:`tasks.metrics` scores the examples they count: Matthews' multi-class form (0 for a constant
    predictor), F1 of label 1 (0 when there is nothing to score), accuracy."""
    conf = np.asarray(conf, dtype=float)
    s = conf.sum(axis=(-2, -1))
    c = np.trace(conf, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return c / s
    if metric == "matthews":
        t, p = conf.sum(axis=-1), conf.sum(axis=-2)
        num = c * s - (t * p).sum(axis=-1)
        den = np.sqrt((s * s - (p * p).sum(axis=-1)) * (s * s - (t * t).sum(axis=-1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    if metric == "f1":
        if 1 not in labels:
            return np.zeros(conf.shape[:-2])
        i = list(labels).index(1)
        tp = conf[..., i, i]
        fp = conf[..., :, i].sum(axis=-1) - tp
        fn = conf[..., i, :].sum(axis=-1) - tp
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)
    raise ValueError(f"no confusion-matrix form for metric {metric!r}")


def correlation(metric: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson (or Spearman: Pearson of average ranks) of each row of ``x`` against the same row of
    ``y``; NaN where a row is constant (as :func:`tasks.metrics.pearson`)."""
    if metric == "spearman":
        from scipy.stats import rankdata

        x, y = rankdata(x, axis=-1), rankdata(y, axis=-1)
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    sxx, syy = (x * x).sum(axis=-1), (y * y).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((sxx > 0) & (syy > 0), (x * y).sum(axis=-1) / np.sqrt(sxx * syy), np.nan)


def metric_intervals(samples: pd.DataFrame, outcomes: Mapping[tuple[str, str, Any], Outcomes],
                     metrics: Mapping[str, str], *, n_boot: int = DEFAULT_EXAMPLE_BOOT, rng_seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """(method, task) → lo, hi, n_examples, n_runs: the two-level bootstrap interval (seeds, then each
    drawn seed's examples) of the task's metric itself, for cells whose runs all kept outcomes that can
    score it — labels for Matthews / F1 / accuracy, predictions for Pearson / Spearman. The mean over the
    drawn seeds of the metric of each resample, as :func:`cell_intervals` does for accuracy.

    Labels: resampling n examples with replacement draws the confusion matrix from Multinomial(n, its
    cells' shares), so a replicate is one multinomial draw per drawn seed (no example is touched).
    Predictions: each run gets ``min(n_boot, PREDICTION_BOOT)`` resamples of its examples (indices) and
    their correlations; a replicate of the cell averages, over its drawn seeds, one of those (drawn at
    random) per seed."""
    cols = ["method", "task", "lo", "hi", "n_examples", "n_runs"]
    runs: dict[tuple[str, str], list[Outcomes | None]] = {}
    for m, t, seed in zip(samples["method"].astype(str), samples["task"].astype(str), samples["seed"]):
        runs.setdefault((m, t), []).append(outcomes.get((m, t, seed)))
    rng = np.random.default_rng(rng_seed)
    a = (1.0 - level) / 2.0
    rows = []
    for (m, t), outs in sorted(runs.items()):
        metric = metrics.get(t)
        if metric is None or any(o is None for o in outs):
            continue
        got = [o for o in outs if o is not None]
        k = len(got)
        pick = rng.integers(0, k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), np.int64)
        if metric in LABEL_METRICS and all(o.kind == "label" for o in got):
            labels = sorted({int(v) for o in got for v in (*np.unique(o.values), *np.unique(o.reference))})
            li = {v: i for i, v in enumerate(labels)}
            nl = len(labels)
            share = np.zeros((k, nl * nl))
            for r, o in enumerate(got):
                cell = np.array([li[int(g)] for g in o.reference]) * nl + np.array([li[int(p)] for p in o.values])
                share[r] = np.bincount(cell, minlength=nl * nl) / o.n
            n_run = np.array([o.n for o in got])
            counts = rng.multinomial(n_run[pick], share[pick])
            reps = confusion_metric(metric, counts.reshape(n_boot, k, nl, nl), labels).mean(axis=1)
        elif metric in PREDICTION_METRICS and all(o.kind == "prediction" for o in got):
            per_run = []
            n_rep = min(n_boot, PREDICTION_BOOT)
            for o in got:
                idx = rng.integers(0, o.n, size=(n_rep, o.n))
                assert o.reference is not None
                per_run.append(correlation(metric, np.asarray(o.values)[idx], np.asarray(o.reference)[idx]))
            which = rng.integers(0, n_rep, size=(n_boot, k))
            reps = np.stack(per_run)[pick, which].mean(axis=1)
        else:
            continue
        reps = reps[np.isfinite(reps)]
        if not reps.size:
            continue
        lo, hi = np.percentile(reps, [100 * a, 100 * (1 - a)])
        rows.append((m, t, float(lo), float(hi), int(sum(o.n for o in got)), k))
    return pd.DataFrame(rows, columns=cols)
