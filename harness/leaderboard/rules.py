"""Social-choice ranking rules for the method x task leaderboard.

Voters are tasks (columns), candidates are systems (rows). Every voter ranks the systems by its score,
higher is better, equal scores are ties, NaN means the voter has no opinion on that system. Column
weights act as voter multiplicities (a weight of 2 counts like two identical tasks; 0 drops the task).

Each rule returns a :class:`Ranking` of ordered tie groups. Rules live in :data:`RULES`, filled by
:func:`register`; callers look rules up by name, never by ``eval``.

Conventions shared by all rules (see each rule's docstring for its own tie convention):

* ``N[a, b]`` (:func:`pairwise_matrix`) is the total weight of tasks scoring ``a`` strictly above
  ``b``, counted only where both have a score; the margin is ``N[a, b] - N[b, a]``. A pair with no
  common task has margin 0 (a pairwise tie).
* Scores are compared with a small relative tolerance when forming tie groups, so fractional weights
  (e.g. 0.5 + 0.5) do not split ties through float rounding.
* Systems with identical score vectors (the same score on every task, missing on the same tasks) are
  *clones*: every rule ranks them in one tie group. The searching rules (kemeny, ranked_pairs) rank
  one representative per clone class, so that an exact tie of 32 systems costs what one system does.
* Every rule's cost is bounded at any size and any pattern of ties (:attr:`Rule.cost`): most are
  polynomial array operations; the two searching rules are exact where that is cheap and otherwise
  stop at a time budget (not a count of states), returning a stated fallback in
  :attr:`Ranking.fallback` that the leaderboard prints beside the board. A caller can impose a deadline
  of its own with :func:`time_limit` (the bootstrap does): past it a searching rule raises
  :class:`OutOfTime` instead of answering.
* Positional rules (plurality, borda, dowdall, baldwin, nanson, black) need every voter to rank every
  system, so they are *skipped* (with the reason) when a score is missing. Score-averaging rules
  (mean, geometric_mean, median, optimality_gap) impute a missing cell with that task's median over
  the systems that have it, as Vote'n'Rank does (arXiv:2210.05769); their descriptions say so.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "RULES",
    "OutOfTime",
    "Profile",
    "Ranking",
    "Rule",
    "UnknownRuleError",
    "apply_rule",
    "condorcet_winner",
    "pairwise_matrix",
    "profile",
    "rank_all",
    "rank_profile",
    "register",
    "time_limit",
]


@dataclass(frozen=True)
class Ranking:
    """The outcome of one rule: ordered tie groups (best first) plus a per-system score."""

    groups: list[list[str]]
    scores: dict[str, float]
    winners: list[str]
    skipped: str | None = None
    fallback: str | None = None
    """Set when the rule did not compute its exact definition (a search ran out of its time budget):
    what was returned instead, in words. None: the exact result."""


@dataclass(frozen=True)
class Rule:
    """A registered rule and the properties a reader needs to judge it."""

    name: str
    fn: Callable[[Profile], Ranking]
    handles_missing: bool
    condorcet_consistent: bool
    description: str
    batch: Callable[[BatchProfile], BatchRanks] | None = None
    """Optional vectorised form over many replicate tables at once (see :func:`batch_form`)."""
    cost: str = "polynomial: at most O(n^3 + n^2 t) array operations (n systems, t tasks), no search"
    """The bound on one call's cost, in words."""
    timed: bool = False
    """True for a rule whose exact form is a search: past its time budget it returns a fallback
    (:attr:`Ranking.fallback`), and under :func:`time_limit` it may raise :class:`OutOfTime`."""


class UnknownRuleError(KeyError):
    """Raised for a rule name that is not registered; the message lists the allowed names."""

    def __str__(self) -> str:  # KeyError would repr() the message, quoting it
        return str(self.args[0]) if self.args else ""


RULES: dict[str, Rule] = {}


def register(
    name: str, *, handles_missing: bool, condorcet_consistent: bool, description: str,
    cost: str | None = None, timed: bool = False,
) -> Callable[[Callable[[Profile], Ranking]], Callable[[Profile], Ranking]]:
    """Decorator adding a rule to :data:`RULES` (one registry, no string dispatch elsewhere)."""

    def deco(
        fn: Callable[[Profile], Ranking],
    ) -> Callable[[Profile], Ranking]:
        if name in RULES:
            raise ValueError(f"rule {name!r} registered twice")
        rule = Rule(name, fn, handles_missing, condorcet_consistent, description, timed=timed)
        RULES[name] = replace(rule, cost=cost) if cost else rule
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# Time budgets of the searching rules
# ----------------------------------------------------------------------------------------------


class OutOfTime(Exception):
    """The deadline of an enclosing :func:`time_limit` passed while a rule was still searching."""


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("peftbench_rule_deadline", default=None)


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Inside the block a searching rule raises :class:`OutOfTime` once `seconds` have passed (None:
    no limit; nested limits keep the earlier deadline). The rules' own budgets give a labelled
    fallback instead; this is for a caller that would rather drop the call, such as the bootstrap,
    which stops re-ranking resamples with a rule once that rule has used its share of time."""
    if seconds is None:
        yield
        return
    outer = _DEADLINE.get()
    at = time.perf_counter() + max(0.0, seconds)
    token = _DEADLINE.set(at if outer is None else min(outer, at))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class _OverBudget(Exception):
    """A search's own budget ran out: the rule falls back (and says so)."""


class _Budget:
    """Wall-clock budget of one search, capped by the caller's :func:`time_limit` deadline."""

    def __init__(self, seconds: float, parent: _Budget | None = None) -> None:
        now = time.perf_counter()
        self.seconds = seconds
        self.own = now + max(0.0, seconds)
        if parent is not None:
            self.own = min(self.own, parent.own)
        self.outer = _DEADLINE.get()

    def left(self) -> float:
        """Seconds left of the own budget; raises OutOfTime past the caller's deadline."""
        now = time.perf_counter()
        if self.outer is not None and now >= self.outer:
            raise OutOfTime
        left = self.own - now
        return left if self.outer is None else min(left, self.outer - now)

    def check(self) -> None:
        """Raise _OverBudget past the own budget (OutOfTime past the caller's deadline)."""
        if self.left() <= 0:
            raise _OverBudget


def batch_form(name: str) -> Callable[[Callable[[BatchProfile], BatchRanks]], Callable[[BatchProfile], BatchRanks]]:
    """Decorator attaching a vectorised form to the registered rule `name`.

    The bootstrap re-ranks hundreds of replicate tables; a rule with a batch form ranks them all in a
    few array operations instead of one call per replicate. A batch form must give exactly the rank
    positions, winners and skips of the rule's own function on each replicate (tests check this for
    every rule that has one); rules without one (kemeny, ranked_pairs) run replicate by replicate."""

    def deco(fn: Callable[[BatchProfile], BatchRanks]) -> Callable[[BatchProfile], BatchRanks]:
        RULES[name] = replace(RULES[name], batch=fn)
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# Input validation and shared helpers
# ----------------------------------------------------------------------------------------------

WeightsLike = Mapping[str, float] | pd.Series | None


def profile(scores: pd.DataFrame, weights: WeightsLike = None) -> Profile:
    """Check the table and weights once, so every rule can assume clean float input.

    Returns the :class:`Profile` of the positive-weight columns (as float) and their weights.
    """
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a pandas DataFrame, got {type(scores).__name__}")
    if scores.shape[0] == 0:
        raise ValueError("scores has no systems (rows)")
    names = [str(i) for i in scores.index]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate system names: {dup}")
    cols = [str(c) for c in scores.columns]
    dupc = sorted({c for c in cols if cols.count(c) > 1})
    if dupc:
        raise ValueError(f"duplicate task columns: {dupc}")
    bad = [
        c
        for c, dt in zip(cols, scores.dtypes)
        if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)
    ]
    if bad:
        raise ValueError(f"non-numeric task columns: {bad}")
    x = scores.to_numpy(dtype=float, na_value=np.nan)
    if np.isinf(x).any():
        raise ValueError("scores contain infinite values")
    w = pd.Series(1.0, index=pd.Index(cols), dtype=float)
    if weights is not None:
        items = weights.items() if isinstance(weights, (Mapping, pd.Series)) else None
        if items is None:
            raise TypeError("weights must be a mapping or Series from column name to weight")
        unknown = []
        for k, v in items:
            k = str(k)
            if k not in w.index:
                unknown.append(k)
                continue
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"weight for column {k!r} is not a number: {v!r}") from None
            if not np.isfinite(fv) or fv < 0:
                raise ValueError(f"weight for column {k!r} must be finite and >= 0, got {v!r}")
            w[k] = fv
        if unknown:
            raise ValueError(f"weights given for unknown columns {unknown}; columns are {cols}")
    keep = w.to_numpy() > 0
    if not keep.any():
        raise ValueError("no task column with a positive weight")
    return Profile(names, [c for c, k in zip(cols, keep) if k], x[:, keep], w.to_numpy()[keep])


def _tol(values: np.ndarray) -> float:
    """Absolute tolerance for 'equal' scores: relative to the scale, so float sums tie properly."""
    finite = values[np.isfinite(values)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    return 1e-9 * max(1.0, scale)


def _groups_from_scores(names: Sequence[str], values: np.ndarray) -> list[list[str]]:
    """Tie groups by descending score; NaN scores form a last group. Table order inside a group."""
    values = np.asarray(values, dtype=float)
    tol = _tol(values)
    finite = [i for i in range(len(names)) if np.isfinite(values[i])]
    finite.sort(key=lambda i: -values[i])  # stable: table order within equal scores
    groups: list[list[int]] = []
    for i in finite:
        if groups and abs(values[groups[-1][0]] - values[i]) <= tol:
            groups[-1].append(i)
        else:
            groups.append([i])
    groups = [sorted(g) for g in groups]
    nan = [i for i in range(len(names)) if not np.isfinite(values[i])]
    if nan:
        groups.append(nan)
    return [[names[i] for i in g] for g in groups]


def _ranking_from_scores(names: Sequence[str], values: np.ndarray) -> Ranking:
    groups = _groups_from_scores(names, values)
    return Ranking(groups=groups, scores=dict(zip(names, map(float, values))), winners=list(groups[0]))


def _ranking_from_groups(names: Sequence[str], groups_idx: list[list[int]], fallback: str | None = None) -> Ranking:
    """Ranking whose score is the number of systems in strictly lower groups (higher = better)."""
    n = len(names)
    scores: dict[str, float] = {}
    seen = 0
    for g in groups_idx:
        seen += len(g)
        for i in g:
            scores[names[i]] = float(n - seen)
    groups = [[names[i] for i in sorted(g)] for g in groups_idx]
    return Ranking(groups=groups, scores={nm: scores[nm] for nm in names}, winners=list(groups[0]),
                   fallback=fallback)


def _skipped(names: Sequence[str], reason: str) -> Ranking:
    return Ranking(groups=[], scores={n: float("nan") for n in names}, winners=[], skipped=reason)


def _pairwise(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """N[a, b] = weight of voters scoring a strictly above b, where both are scored. `x` is systems ×
    tasks, or replicates × systems × tasks (then one N per replicate), as are the helpers below."""
    gt = (x[..., :, None, :] > x[..., None, :, :]).astype(float)  # NaN compares False: missing never counts
    return gt @ w


def _margins_of(n: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Margins N - N^T, with float dust from fractional weights set to an exact 0 (a pairwise tie)."""
    m = n - np.swapaxes(n, -1, -2)
    m[np.abs(m) <= 1e-9 * max(1.0, float(w.sum()))] = 0.0
    return m


class Profile:
    """One validated ballot table as arrays: what every rule reads.

    Rules share it, so the matrices several rules need (pairwise counts, margins, positions) are
    computed once per table, and the bootstrap can rank hundreds of resampled tables without building
    a DataFrame for each. :func:`profile` builds one from a DataFrame (validating it); tables derived
    from an already validated one (bootstrap replicates) are built directly."""

    def __init__(self, names: Sequence[str], columns: Sequence[str], x: np.ndarray, w: np.ndarray) -> None:
        self.names = list(names)
        self.columns = list(columns)
        self.x = x
        self.w = w

    @cached_property
    def pairwise(self) -> np.ndarray:
        return _pairwise(self.x, self.w)

    @cached_property
    def margins(self) -> np.ndarray:
        return _margins_of(self.pairwise, self.w)

    @cached_property
    def position_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return _position_stats(self.x)

    @cached_property
    def components(self) -> list[list[int]]:
        """Strongly connected components of the weak-majority graph, best first (kemeny, ranked_pairs)."""
        return _components(self.margins, list(range(len(self.names))))

    @cached_property
    def clones(self) -> list[list[int]]:
        """Classes of systems with identical score vectors (same scores, same missing cells), in table
        order of their first member. Clones have margin 0 between them and equal counts against every
        other system, so every rule ties them; the searching rules rank one member per class."""
        x = np.where(np.isnan(self.x), np.nan, self.x) + 0.0  # one NaN and one zero bit pattern each
        classes: dict[bytes, list[int]] = {}
        for i, row in enumerate(np.ascontiguousarray(x)):
            classes.setdefault(row.tobytes(), []).append(i)
        return list(classes.values())

    def subset(self, idx: Sequence[int]) -> Profile:
        """The profile of the systems `idx` alone (same tasks and weights)."""
        return Profile([self.names[i] for i in idx], self.columns, self.x[list(idx)], self.w)

    @cached_property
    def missing_reason(self) -> str | None:
        """Why a complete-ballot rule cannot run, or None when no score is missing."""
        na = np.isnan(self.x)
        if not na.any():
            return None
        cells = list(zip(*np.nonzero(na)))
        first = ", ".join(f"({self.names[r]}, {self.columns[c]})" for r, c in cells[:3])
        more = f" and {len(cells) - 3} more" if len(cells) > 3 else ""
        return (
            f"needs every system scored on every task; {len(cells)} missing cell(s): {first}{more}. "
            "Use a pairwise rule (copeland, minimax, kemeny, schulze, ranked_pairs) instead"
        )

    @cached_property
    def imputed(self) -> np.ndarray:
        """Scores with a missing cell filled by its task's median (Vote'n'Rank, arXiv:2210.05769)."""
        na = np.isnan(self.x)
        if not na.any():
            return self.x
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a task with no score at all stays NaN
            med = np.nanmedian(self.x, axis=-2)
        return np.where(na, med[..., None, :], self.x)


def _position_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per voter (column): how many systems score strictly above each system, and how many tie it."""
    above = (x[..., None, :, :] > x[..., :, None, :]).sum(axis=-2)  # [a, t] = #b with x[b,t] > x[a,t]
    tied = (x[..., None, :, :] == x[..., :, None, :]).sum(axis=-2) - 1
    return above.astype(float), tied.astype(float)


# ----------------------------------------------------------------------------------------------
# Public helpers
# ----------------------------------------------------------------------------------------------


def pairwise_matrix(scores: pd.DataFrame, weights: WeightsLike = None) -> pd.DataFrame:
    """N[a, b] = total weight of tasks scoring a strictly above b (only where both are scored)."""
    p = profile(scores, weights)
    return pd.DataFrame(p.pairwise, index=p.names, columns=p.names)


def _condorcet_index(m: np.ndarray) -> int | None:
    n = m.shape[0]
    for a in range(n):
        if all(m[a, b] > 0 for b in range(n) if b != a):
            return a
    return None


def condorcet_winner(scores: pd.DataFrame, weights: WeightsLike = None) -> str | None:
    """The system beating every other one by weighted pairwise majority, or None."""
    p = profile(scores, weights)
    if len(p.names) == 1:
        return p.names[0]
    i = _condorcet_index(p.margins)
    return None if i is None else p.names[i]


def apply_rule(name: str, scores: pd.DataFrame, weights: WeightsLike = None) -> Ranking:
    """Validate the input, then run the named rule."""
    if name not in RULES:
        raise UnknownRuleError(f"unknown rule {name!r}; allowed: {', '.join(RULES)}")
    return RULES[name].fn(profile(scores, weights))


def rank_all(
    scores: pd.DataFrame, weights: WeightsLike = None, rules: Sequence[str] | None = None
) -> dict[str, Ranking]:
    """Run several rules (all by default) on one validated table, keyed by rule name."""
    names = list(RULES) if rules is None else list(rules)
    unknown = [r for r in names if r not in RULES]
    if unknown:
        raise UnknownRuleError(f"unknown rule(s) {unknown}; allowed: {', '.join(RULES)}")
    return rank_profile(profile(scores, weights), names)


def rank_profile(p: Profile, rules: Sequence[str]) -> dict[str, Ranking]:
    """Run registered rules on an already validated profile (no checks: callers resolved the names)."""
    return {r: RULES[r].fn(p) for r in rules}


# ----------------------------------------------------------------------------------------------
# Score-aggregation rules
# ----------------------------------------------------------------------------------------------

_IMPUTE_NOTE = "missing cells imputed with the task median (Vote'n'Rank, arXiv:2210.05769)"


@register(
    "mean",
    handles_missing=True,
    condorcet_consistent=False,
    description=f"weighted arithmetic mean of the task scores; {_IMPUTE_NOTE}",
)
def mean_rule(p: Profile) -> Ranking:
    """Weighted arithmetic mean. Ties: equal means share a group."""
    return _ranking_from_scores(p.names, _mean_scores(p))


# A rule's scores come from one function that takes a Profile or a BatchProfile alike (systems on
# axis -2, tasks on axis -1): the rule ranks them, its batch form ranks every replicate's at once.


def _mean_scores(p: Profile) -> np.ndarray:
    return p.imputed @ p.w / p.w.sum()


@register(
    "geometric_mean",
    handles_missing=True,
    condorcet_consistent=False,
    description=f"weighted geometric mean (needs all scores > 0, else skipped); {_IMPUTE_NOTE}",
)
def geometric_mean_rule(p: Profile) -> Ranking:
    """Weighted geometric mean exp(sum w log s / sum w); undefined for scores <= 0, so skipped then
    (a negated lower-is-better column makes every score negative)."""
    names, x = p.names, p.imputed
    if np.isnan(x).any():
        return _skipped(names, "a task has no score at all, nothing to impute from")
    if (x <= 0).any():
        bad = sorted({p.columns[c] for c in np.nonzero((x <= 0).any(axis=0))[0]})
        return _skipped(names, f"geometric mean needs scores > 0; columns with scores <= 0: {bad}")
    return _ranking_from_scores(names, _geometric_scores(p))


def _geometric_scores(p: Profile) -> np.ndarray:
    with np.errstate(all="ignore"):  # log of a score <= 0: the callers skip those tables
        return np.exp(np.log(p.imputed) @ p.w / p.w.sum())


def _median_scores(p: Profile) -> np.ndarray:
    """Per system, the smallest score reaching half the total weight; the midpoint of the two middle
    scores when the cumulative weight hits exactly one half (so unit weights give the usual median).
    NaN for a system with a score still missing after imputation."""
    x = p.imputed
    t = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    v = np.take_along_axis(x, order, axis=-1)
    cum = np.cumsum(p.w[order], axis=-1)
    total = cum[..., -1:]
    half = total / 2.0
    tol = 1e-12 * np.maximum(1.0, total)
    k = np.minimum((cum < half - tol).sum(axis=-1, keepdims=True), t - 1)  # = searchsorted(cum, half - tol)
    at_k = np.take_along_axis(v, k, axis=-1)
    nxt = np.take_along_axis(v, np.minimum(k + 1, t - 1), axis=-1)
    mid = (np.abs(np.take_along_axis(cum, k, axis=-1) - half) <= tol) & (k + 1 < t)
    med = np.where(mid, (at_k + nxt) / 2.0, at_k)[..., 0]
    return np.where(np.isnan(x).any(axis=-1), np.nan, med)


@register(
    "median",
    handles_missing=True,
    condorcet_consistent=False,
    description=f"weighted median of the task scores (midpoint at an exact half); {_IMPUTE_NOTE}",
)
def median_rule(p: Profile) -> Ranking:
    """Weighted median per system: the smallest score reaching half the total weight, or the midpoint
    of the two middle scores when the cumulative weight hits exactly one half."""
    return _ranking_from_scores(p.names, _median_scores(p))


@register(
    "optimality_gap",
    handles_missing=True,
    condorcet_consistent=False,
    description=(
        "weighted mean relative distance to the best system per task, (best-s)/(best-worst), "
        "negated (arXiv:2108.13264, Vote'n'Rank arXiv:2210.05769); " + _IMPUTE_NOTE
    ),
)
def optimality_gap_rule(p: Profile) -> Ranking:
    """Mean shortfall from the best score of each task, scaled by that task's range so tasks with
    different scales count alike (without the scaling the order would equal `mean`'s exactly).
    A task where all systems tie contributes 0. Score = -gap, so 0 means best on every task."""
    return _ranking_from_scores(p.names, _gap_scores(p))


def _gap_scores(p: Profile) -> np.ndarray:
    x = p.imputed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task with no score at all stays NaN
        best = np.nanmax(x, axis=-2)
        span = best - np.nanmin(x, axis=-2)
    span[span <= 0] = np.inf  # every system ties on this task: no gap for anyone
    return -(((best[..., None, :] - x) / span[..., None, :]) @ p.w / p.w.sum())


# ----------------------------------------------------------------------------------------------
# Positional rules (complete ballots only)
# ----------------------------------------------------------------------------------------------


@register(
    "plurality",
    handles_missing=False,
    condorcet_consistent=False,
    description="weight of tasks on which the system is best; a tie for first splits that task's weight",
)
def plurality_rule(p: Profile) -> Ranking:
    """Each task gives its weight to its top system; k systems tied first get weight/k each."""
    if (reason := p.missing_reason) is not None:
        return _skipped(p.names, reason)
    return _ranking_from_scores(p.names, _plurality_points(p) @ p.w)


def _plurality_points(p: Profile) -> np.ndarray:
    above, tied = p.position_stats
    return np.where(above == 0, 1.0 / (tied + 1.0), 0.0)


@register(
    "borda",
    handles_missing=False,
    condorcet_consistent=False,
    description="Borda count: n-position points per task, tied systems share their average position",
)
def borda_rule(p: Profile) -> Ranking:
    """Borda: a system gets (#systems strictly below) + (#tied)/2 points from each task, i.e. n minus
    its average position; weighted sum. Equals the sum of pairwise margins up to an affine map, which
    is why it agrees with pref_voting's Borda on profiles with ties."""
    names, wv = p.names, p.w
    if (reason := p.missing_reason) is not None:
        return _skipped(names, reason)
    return _ranking_from_scores(names, _borda_points(p) @ wv)


def _borda_points(p: Profile) -> np.ndarray:
    above, tied = p.position_stats
    return (p.x.shape[-2] - 1 - above) - tied / 2.0


@register(
    "dowdall",
    handles_missing=False,
    condorcet_consistent=False,
    description="Dowdall (Nauru) count: 1/position points per task; ties average 1/p over the tied positions",
)
def dowdall_rule(p: Profile) -> Ranking:
    """Dowdall: 1/p points for position p. A group of k tied systems occupying positions
    q+1..q+k each get the average of 1/p over those positions, so a task's total stays H(n)."""
    if (reason := p.missing_reason) is not None:
        return _skipped(p.names, reason)
    return _ranking_from_scores(p.names, _dowdall_points(p) @ p.w)


def _dowdall_points(p: Profile) -> np.ndarray:
    above, tied = p.position_stats
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, p.x.shape[-2] + 1))])
    return (harmonic[(above + tied + 1).astype(int)] - harmonic[above.astype(int)]) / (tied + 1.0)


def _borda_by_margins(m: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Borda restricted to `alive`, as the sum of margins over alive opponents. On complete ballots
    with ties this is 2*(average-position Borda) - const, so it orders exactly like Borda."""
    return m[np.ix_(alive, alive)].sum(axis=1)


def _elimination(p: Profile, *, nanson: bool) -> Ranking:
    names, wv = p.names, p.w
    if (reason := p.missing_reason) is not None:
        return _skipped(names, reason)
    m = p.margins
    tol = 1e-9 * max(1.0, float(wv.sum())) * max(1, len(names))
    alive = np.arange(len(names))
    eliminated: list[list[int]] = []  # batches, first eliminated first
    while len(alive) > 1:
        b = _borda_by_margins(m, alive)
        if nanson:
            # mean of margin-Borda over alive systems is 0: drop the strictly below-average ones
            out = b < -tol
        else:
            out = b <= b.min() + tol
        if out.all() or not out.any():
            break  # everybody ties: all remaining systems win together
        eliminated.append(list(alive[out]))
        alive = alive[~out]
    groups = [list(alive)] + eliminated[::-1]
    return _ranking_from_groups(names, groups)


@register(
    "baldwin",
    handles_missing=False,
    condorcet_consistent=True,
    description="Baldwin: repeatedly drop every system with the lowest Borda score on the remaining systems",
)
def baldwin_rule(p: Profile) -> Ranking:
    """Baldwin (1926): recompute Borda (ties = average positions) on the surviving systems and drop
    all systems tied for the lowest score at once; when all survivors tie they are joint winners.
    Groups: winners, then elimination batches in reverse order; score = #systems in lower groups."""
    return _elimination(p, nanson=False)


@register(
    "nanson",
    handles_missing=False,
    condorcet_consistent=True,
    description="Nanson (strict): repeatedly drop every system whose Borda score is strictly below the mean",
)
def nanson_rule(p: Profile) -> Ranking:
    """Nanson (1882), the 'strict' variant (pref_voting.strict_nanson): recompute Borda on the
    survivors and drop those strictly below the average; stop when nobody is below (all tie) or one
    remains. Groups: winners, then elimination batches in reverse order."""
    return _elimination(p, nanson=True)


@register(
    "black",
    handles_missing=False,
    condorcet_consistent=True,
    description="Black (1958): the Condorcet winner if one exists, otherwise the Borda ranking",
)
def black_rule(p: Profile) -> Ranking:
    """Black: the Condorcet winner first, then the others in Borda order; without a Condorcet winner,
    exactly the Borda ranking. Scores are Borda scores (so the winner need not have the top score)."""
    names, wv = p.names, p.w
    if (reason := p.missing_reason) is not None:
        return _skipped(names, reason)
    borda = _borda_points(p) @ wv
    cw = _condorcet_index(p.margins) if len(names) > 1 else 0
    if cw is None:
        return _ranking_from_scores(names, borda)
    rest = [i for i in range(len(names)) if i != cw]
    rest_groups = _groups_from_scores([names[i] for i in rest], borda[rest])
    groups = [[names[cw]]] + rest_groups
    return Ranking(groups=groups, scores=dict(zip(names, map(float, borda))), winners=[names[cw]])


# ----------------------------------------------------------------------------------------------
# Pairwise (majority-graph) rules: compare only where both systems are scored
# ----------------------------------------------------------------------------------------------


@register(
    "condorcet",
    handles_missing=True,
    condorcet_consistent=True,
    description="the Condorcet winner (beats every other system by weighted pairwise majority), else skipped",
)
def condorcet_rule(p: Profile) -> Ranking:
    """Winner group = the Condorcet winner, everyone else tied second. Score 1 for it, 0 otherwise.
    Skipped when no system beats all others (a cycle or a pairwise tie at the top)."""
    names = p.names
    if len(names) == 1:
        return _ranking_from_groups(names, [[0]])
    cw = _condorcet_index(p.margins)
    if cw is None:
        return _skipped(names, "no Condorcet winner: no system beats every other one by pairwise majority")
    rest = [i for i in range(len(names)) if i != cw]
    groups = [[names[cw]]] + ([[names[i] for i in rest]] if rest else [])
    return Ranking(
        groups=groups, scores={n: float(i == cw) for i, n in enumerate(names)}, winners=[names[cw]]
    )


@register(
    "copeland",
    handles_missing=True,
    condorcet_consistent=True,
    description="Copeland: pairwise majority wins + 1/2 per pairwise tie",
)
def copeland_rule(p: Profile) -> Ranking:
    """Copeland: 1 point per pairwise majority win, 1/2 per pairwise tie (equal weight either way,
    or no common task), 0 per loss. Orders like wins - losses (pref_voting's default)."""
    return _ranking_from_scores(p.names, _copeland_scores(p))


def _copeland_scores(p: Profile) -> np.ndarray:
    m = p.margins  # the diagonal is a zero margin: the -1 takes it out (a lone system scores 0)
    return (m > 0).sum(axis=-1) + 0.5 * ((m == 0).sum(axis=-1) - 1.0)


@register(
    "minimax",
    handles_missing=True,
    condorcet_consistent=True,
    description="Minimax (Simpson-Kramer) with margins: score = -(largest pairwise defeat margin, 0 if none)",
)
def minimax_rule(p: Profile) -> Ranking:
    """Minimax, 'margins' variant: a system's loss is the largest margin by which any system beats it
    (0 if unbeaten); score = -loss. Margins rather than winning votes: they differ only with ties,
    and margins match pref_voting's default (Vote'n'Rank defaults to winning votes)."""
    return _ranking_from_scores(p.names, _minimax_scores(p))


def _minimax_scores(p: Profile) -> np.ndarray:
    # the diagonal's zero margin makes an unbeaten (or lone) system's loss 0
    return -np.maximum(np.swapaxes(p.margins, -1, -2), 0.0).max(axis=-1)


@register(
    "schulze",
    handles_missing=True,
    condorcet_consistent=True,
    description="Schulze beat-path with margins (arXiv:1804.02973); groups peel off the undefeated",
)
def schulze_rule(p: Profile) -> Ranking:
    """Schulze (arXiv:1804.02973) with margin strengths: p[a,b] = widest path from a to b through
    positive-margin edges; a beats b iff p[a,b] > p[b,a] (a strict partial order). Groups: the
    undefeated systems, then the undefeated among the rest, and so on. Score = #beaten - #beaten by."""
    names = p.names
    n = len(names)
    m = p.margins
    p = np.where(m > 0, m, 0.0)
    for k in range(n):  # Floyd-Warshall on the (max, min) semiring
        p = np.maximum(p, np.minimum(p[:, k : k + 1], p[k : k + 1, :]))
    np.fill_diagonal(p, 0.0)
    beats = p > p.T + 1e-12
    alive = list(range(n))
    groups: list[list[int]] = []
    while alive:
        top = [a for a in alive if not any(beats[b, a] for b in alive)]
        groups.append(top)
        alive = [a for a in alive if a not in top]
    out = _ranking_from_groups(names, groups)
    score = beats.sum(axis=1) - beats.sum(axis=0)
    return Ranking(groups=out.groups, scores=dict(zip(names, map(float, score))), winners=out.winners)


# --- shared by the searching rules (ranked pairs, Kemeny) -----------------------------------------


def _expand(groups: list[list[int]], classes: list[list[int]]) -> list[list[int]]:
    """Groups over clone-class representatives (indices into `classes`) → groups over all systems:
    a class enters its representative's group whole."""
    return [sorted(x for i in g for x in classes[i]) for g in groups]


def _layers(m: np.ndarray, idx: list[int]) -> np.ndarray | None:
    """Per system of `idx`, its layer in the strict majority relation (margin > 0) on `idx`: 0 for the
    systems no one beats, then those beaten only from layer 0, and so on; None when the relation has a
    cycle (a round where every remaining system is beaten by a remaining one)."""
    sub = m[np.ix_(idx, idx)] > 0
    layer = np.full(len(idx), -1)
    alive = np.ones(len(idx), dtype=bool)
    for depth in range(len(idx)):
        if not alive.any():
            break
        free = alive & ~(sub & alive[:, None]).any(axis=0)
        if not free.any():
            return None
        layer[free] = depth
        alive &= ~free
    return layer


def _strict_order(m: np.ndarray, idx: list[int], key: np.ndarray) -> list[int] | None:
    """A linear extension of the strict majority relation (margin > 0) on `idx`, or None when that
    relation has a cycle: by layer (:func:`_layers`; whoever beats a system sits in an earlier layer),
    then the largest `key`, then the lowest index (a fixed choice: the same table, the same order)."""
    layer = _layers(m, idx)
    if layer is None:
        return None
    kk = np.asarray(key, dtype=float)[idx]
    return [idx[j] for j in np.lexsort((np.arange(len(idx)), -kk, layer))]


def _undominated(m: np.ndarray, idx: list[int]) -> set[int] | None:
    """When the strict majority relation on `idx` is acyclic: the systems of `idx` that no system of
    `idx` beats by majority; None when it has a cycle.

    Why this is the winner set of both searching rules on a majority component whose strict relation
    is acyclic (any profile of one or two voters, or of exact ties): every pairwise-majority
    disagreement can then be avoided at once, so the Kemeny orders are exactly the linear extensions of
    the relation, and ranked pairs locks all of its edges, whatever the tie-break; the zero-margin pairs
    lock either way, so a system no one beats is first under the tie-break that locks its zero-margin
    edges first, and a beaten one never is."""
    if len(idx) <= 1:
        return set(idx)
    layer = _layers(m, idx)
    return None if layer is None else {idx[j] for j in np.nonzero(layer == 0)[0]}


# --- ranked pairs ---------------------------------------------------------------------------------

RP_TIME_BUDGET_S = 2.0
"""Wall-clock seconds of one call's parallel-universe winner search (NP-hard in general); past them the
rule returns the winners found so far plus the fixed tie-break's winner and says so (Ranking.fallback)."""


def _lock_order(n: int, ea: np.ndarray, eb: np.ndarray, strength: np.ndarray) -> list[int]:
    """Lock the edges ea[i] -> eb[i] in the given order, skipping any that would close a cycle; return
    the total order. `strength` (e.g. the margin) is constant on each run of equally strong edges.

    A run of consecutive edges out of one system a (the tie-break orders equal edges by their tail, so
    a's edges of one strength are consecutive) is locked at once: locking a -> b adds paths from a's
    ancestors to b's descendants only, which changes neither who reaches a nor whom a reaches from
    outside them, so whether a later edge a -> b' closes a cycle ("b' reaches a") is the same as
    before the run. Same outcome as one edge at a time; the closure is kept as bitmasks both ways
    (descendants and ancestors), so a run costs the systems it connects, not n per edge."""
    reach = [1 << i for i in range(n)]  # reach[v]: bitmask of the systems v is locked above (v included)
    anc = [1 << i for i in range(n)]  # anc[v]: bitmask of the systems locked above v (v included)
    if len(ea):
        cut = np.flatnonzero((ea[1:] != ea[:-1]) | (strength[1:] != strength[:-1])) + 1
        eal, ebl = ea.tolist(), eb.tolist()
        for lo, hi in zip([0, *cut.tolist()], [*cut.tolist(), len(eal)]):
            a = eal[lo]
            new = 0
            for b in ebl[lo:hi]:
                if not (reach[b] >> a) & 1:  # b already above a: locking a > b would close a cycle
                    new |= reach[b]
            new &= ~reach[a]
            if not new:
                continue
            above = anc[a]
            bits = above
            while bits:  # every ancestor of a (a included) now reaches the new descendants
                low = bits & -bits
                reach[low.bit_length() - 1] |= new
                bits ^= low
            bits = new
            while bits:
                low = bits & -bits
                anc[low.bit_length() - 1] |= above
                bits ^= low
    # in a total order, |reach[a]| - 1 = number of systems below a
    return sorted(range(n), key=lambda a: -reach[a].bit_count())


def _add_edge(reach: list[int], a: int, b: int) -> None:
    """Transitive closure update: everything reaching a now reaches all that b reaches."""
    rb = reach[b]
    bit_a = 1 << a
    for v in range(len(reach)):
        if reach[v] & bit_a:
            reach[v] |= rb


def _rp_put_winners(
    n: int, groups: list[list[tuple[int, int]]], cands: list[int], budget: _Budget
) -> tuple[set[int], int]:
    """Parallel-universe tie-breaking (PUT) winners of ranked pairs: the systems that come first
    under *some* order of the equal-margin edges (Brill & Fischer, AAAI 2012; NP-hard in general).

    Only `cands` (the top weak-majority component) can win: no edge enters it from outside, so its
    edges lock regardless of the rest, and every outsider is beaten. For each candidate c, a
    depth-first search over the edge orders asks "can c stay unbeaten?". Inside one margin group,
    an edge on no cycle of (locked closure + the group's open edges) can never be skipped nor cause
    a skip, so such edges are locked at once and only edges on cycles are branched on (c's own
    out-edges first, edges into c last). Failed states are memoised.

    Returns (winners found, candidates decided): when `budget` runs out, the candidates after the
    first undecided one are not examined (their count says so); OutOfTime propagates."""
    cset = set(cands)
    groups = [g2 for g2 in ([(a, b) for a, b in grp if a in cset and b in cset] for grp in groups) if g2]
    visited = 0
    winners: set[int] = set()

    def undecided(reach: list[int], edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(a, b) for a, b in edges if not ((reach[a] >> b) & 1) and not ((reach[b] >> a) & 1)]

    def can_win(c: int) -> bool:
        failed: set[tuple] = set()
        bit_c = 1 << c

        def beaten(reach: list[int]) -> bool:
            return any(reach[v] & bit_c for v in cands if v != c)

        def rec(g: int, reach: list[int], pending: list[tuple[int, int]]) -> bool:
            nonlocal visited
            visited += 1
            if visited % 64 == 0:
                budget.check()  # a state costs O(n · candidates) big-integer work: time, not states
            if beaten(reach):
                return False
            pending = undecided(reach, pending)
            while not pending:
                g += 1
                if g >= len(groups):
                    return True  # every pair is decided and c is unbeaten: c is first
                pending = undecided(reach, groups[g])
            key = (g, tuple(reach), tuple(sorted(pending)))
            if key in failed:
                return False
            # reachability in closure + open edges: an edge (a, b) lies on a cycle iff b reaches a
            adj = list(reach)
            for a, b in pending:
                adj[a] |= 1 << b
            for k in range(n):
                bit_k = 1 << k
                ak = adj[k]
                for v in cands:
                    if adj[v] & bit_k:
                        adj[v] |= ak
            safe = [(a, b) for a, b in pending if not (adj[b] >> a) & 1]
            risky = [(a, b) for a, b in pending if (adj[b] >> a) & 1]
            base = list(reach)
            for a, b in safe:
                _add_edge(base, a, b)
            if not risky:
                return rec(g, base, [])
            risky.sort(key=lambda e: (e[1] == c) - (e[0] == c))
            for i, (a, b) in enumerate(risky):
                nxt = list(base)
                _add_edge(nxt, a, b)
                if rec(g, nxt, risky[:i] + risky[i + 1 :]):
                    return True
            failed.add(key)
            return False

        return rec(-1, [1 << i for i in range(n)], [])

    strength = {e: k for k, grp in enumerate(groups) for e in grp}  # lower k = stronger

    def surely_beaten(c: int) -> bool:
        """An edge (y, c) of group k is skipped only via a path c -> y of edges from groups <= k;
        without such a path in the whole graph, (y, c) is locked under every tie-break."""
        for (y, b), k in strength.items():
            if b != c or (c, y) in strength:
                continue  # a zero-margin pair can lock either way
            budget.check()
            seen, stack = {c}, [c]
            while stack:
                v = stack.pop()
                for u in cands:
                    if u not in seen and strength.get((v, u), len(groups)) <= k:
                        seen.add(u)
                        stack.append(u)
            if y not in seen:
                return True
        return False

    decided = 0
    try:
        for c in cands:
            if not surely_beaten(c) and can_win(c):
                winners.add(c)
            decided += 1
    except _OverBudget:
        pass
    return winners, decided


@register(
    "ranked_pairs",
    handles_missing=True,
    condorcet_consistent=True,
    description=(
        "Tideman ranked pairs with margins; winners = parallel-universe tie-breaking set "
        "(pref_voting.ranked_pairs), order below them from one fixed tie-break"
    ),
    cost=(
        f"O(n^3) for the order; the winner set is exact (and polynomial) when the top majority component "
        f"has no majority cycle, else a search stopped after {RP_TIME_BUDGET_S:g} s (fallback stated); "
        "exact clones count once"
    ),
    timed=True,
)
def ranked_pairs_rule(p: Profile) -> Ranking:
    """Ranked pairs (Tideman 1987) with margins: lock pairwise edges from the largest margin down,
    skipping those that would close a cycle; zero-margin pairs are locked last, in either direction.

    Equal margins need a tie-break. Winners (groups[0]) are all systems that win under *some*
    tie-break (parallel-universe tie-breaking, the neutral definition, = pref_voting's
    `ranked_pairs`). The order below the winners comes from one fixed tie-break (pref_voting's
    `ranked_pairs_tb` convention: equal edges in lexicographic order of (winner, loser) positions in
    a tie-breaking list), the list being the systems by descending sum of margins, table order next.
    Score = #systems in lower groups.

    Exact clones (identical score vectors) are ranked as one system and share its group: a clone of a
    PUT winner is one too (the tie-break that makes the representative win, with the clones' edges to
    others next to its own and the clones' mutual zero-margin edges ordered to put the chosen one
    first, makes any clone win), and every PUT winner of the whole profile is one of the reduced
    profile (checked against pref_voting in the tests). When the top majority component has no
    majority cycle (one or two voters, exact ties) the winners are its unbeaten systems
    (:func:`_undominated`); otherwise the search runs for at most RP_TIME_BUDGET_S seconds, then the
    winners found plus the fixed tie-break's winner are returned with ``fallback`` saying so."""
    names = p.names
    classes = p.clones
    reps = [c[0] for c in classes]
    q = p if len(reps) == len(names) else p.subset(reps)
    n = len(reps)
    m = q.margins
    msum = m.sum(axis=1)  # over one system per clone class: adding a clone changes no one's place
    tb = sorted(range(n), key=lambda i: (-msum[i], i))
    pos = {c: k for k, c in enumerate(tb)}
    # edges a->b with margin >= 0, strongest first, equal margins by (pos[a], pos[b]); grouped by margin
    ea, eb = np.nonzero((m >= 0) & ~np.eye(n, dtype=bool))
    rank_of = np.array([pos[i] for i in range(n)])
    srt = np.lexsort((rank_of[eb], rank_of[ea], -m[ea, eb]))
    order = _lock_order(n, ea[srt], eb[srt], m[ea, eb][srt])
    top = q.components[0]
    fallback = None
    win = _undominated(m, top)
    if win is None:
        flat = list(zip(ea[srt].tolist(), eb[srt].tolist()))
        cuts = [0, *(np.nonzero(np.diff(m[ea, eb][srt]))[0] + 1).tolist(), len(flat)]
        by_strength = [flat[i:j] for i, j in itertools.pairwise(cuts)]
        win, decided = _rp_put_winners(n, by_strength, top, _Budget(RP_TIME_BUDGET_S))
        if decided < len(top):
            win.add(order[0])  # the fixed tie-break's winner wins under that tie-break
            fallback = (
                f"winner set incomplete: the parallel-universe search stopped at its {RP_TIME_BUDGET_S:g} s "
                f"budget after {decided} of the {len(top)} systems of the top majority cycle; listed are those "
                "shown to win under some tie-break and the fixed tie-break's winner; the order below is exact "
                "for that tie-break"
            )
    groups = [sorted(win)] + [[i] for i in order if i not in win]
    return _ranking_from_groups(names, _expand(groups, classes), fallback)


# --- Kemeny-Young ---------------------------------------------------------------------------------

KEMENY_EXACT_MAX = 30
"""Systems (clone classes) in one majority component up to which the integer program may use the whole
per-call budget: the 30-system bar of benchmarks/leaderboard_rules.py (about 2 s there, i.i.d. scores)."""
KEMENY_TIME_BUDGET_S = 60.0
"""Wall-clock seconds of one call's exact search (all components and the winner search)."""
KEMENY_LARGE_BUDGET_S = 2.0
"""The share of that budget a component above KEMENY_EXACT_MAX gets before the heuristic replaces it."""
KEMENY_LOCAL_PASSES = 100
"""Cap on the local search's passes (each O(k^2)) in the heuristic fallback."""


def _components(m: np.ndarray, idx: list[int]) -> list[list[int]]:
    """Strongly connected components of the weak-majority graph (edge a->b when margin >= 0), in
    topological order. Every system of an earlier component strictly beats every system of a later
    one, so every Kemeny ranking respects this order (Truchon's extended Condorcet criterion) and
    each component can be solved on its own."""
    k = len(idx)
    if k == 1:
        return [list(idx)]
    sub = m[np.ix_(idx, idx)]
    n_comp, label = connected_components(coo_matrix(sub >= 0), directed=True, connection="strong")
    if n_comp == 1:
        return [list(idx)]
    comps = [np.nonzero(label == c)[0] for c in range(n_comp)]
    # the condensation is a chain (every pair has an edge): a component beating more outsiders comes first
    # (each member of a component strictly beats exactly the members of the later ones)
    later = [int(((sub[c[0]] > 0) & (label != label[c[0]])).sum()) for c in comps]
    order = sorted(range(n_comp), key=lambda c: -later[c])
    return [[idx[i] for i in comps[c].tolist()] for c in order]


def _kemeny_ilp(nmat: np.ndarray, idx: list[int], budget: _Budget) -> tuple[float, list[int]]:
    """Exact Kemeny order of the systems `idx` by integer programming (scipy/HiGHS).

    Binary x[i,j] (i<j) = 1 iff i is placed above j; x[j,i] = 1 - x[i,j] is implied. Cost of the pair
    = N[j,i] if i above j, else N[i,j]. Transitivity: for i<j<k, 0 <= x_ij + x_jk - x_ik <= 1 (no
    3-cycle in either direction). These O(n^3) rows are added lazily: solve, find the violated
    triangles, add them, solve again (a tournament without 3-cycles is transitive). Raises
    _OverBudget when `budget` runs out first.
    """
    k = len(idx)
    if k == 1:
        return 0.0, list(idx)
    if k == 2:  # no triangle: the majority order (the second first on a tie, as below) is optimal
        i, j = idx
        return (float(nmat[j, i]), [i, j]) if nmat[j, i] - nmat[i, j] < 0 else (float(nmat[i, j]), [j, i])
    sub = np.ascontiguousarray(nmat[np.ix_(idx, idx)], dtype=float)
    cost, local = _kemeny_solve(sub.tobytes(), k, budget)
    return cost, [idx[i] for i in local]


_KEMENY_MEMO: OrderedDict[bytes, tuple[float, tuple[int, ...]]] = OrderedDict()
_KEMENY_MEMO_SIZE = 4096


def _kemeny_solve(sub_bytes: bytes, k: int, budget: _Budget) -> tuple[float, tuple[int, ...]]:
    """`_kemeny_ilp` on the k x k pairwise block given as bytes: a pure function of the block, so
    memoised (a search stopped by its budget is not). Bootstrap replicates often repeat a component's
    block exactly (counts of a few tasks)."""
    hit = _KEMENY_MEMO.get(sub_bytes)
    if hit is not None:
        _KEMENY_MEMO.move_to_end(sub_bytes)
        return hit
    sub = np.frombuffer(sub_bytes, dtype=float).reshape(k, k)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    var = {p: v for v, p in enumerate(pairs)}
    const = float(sum(sub[i, j] for i, j in pairs))
    cost = np.array([sub[j, i] - sub[i, j] for i, j in pairs])
    rows: list[list[tuple[int, float]]] = []
    tri = np.array(list(itertools.combinations(range(k), 3)), dtype=int).reshape(-1, 3)
    tij = np.array([var[(a, b)] for a, b in tri[:, [0, 1]]], dtype=int)
    tjk = np.array([var[(a, b)] for a, b in tri[:, [1, 2]]], dtype=int)
    tik = np.array([var[(a, b)] for a, b in tri[:, [0, 2]]], dtype=int)

    # start from the majority relation (optimal if transitive); add the triangles it violates
    xs = (cost < 0).astype(float)
    while True:
        s = xs[tij] + xs[tjk] - xs[tik]
        viol = np.nonzero((s > 1.5) | (s < -0.5))[0]
        if len(viol) == 0:
            break  # no 3-cycle left: the solution is a linear order, optimal for the full model
        for t in viol:  # an added triangle is never violated again, so these are all new
            rows.append([(tij[t], 1.0), (tjk[t], 1.0), (tik[t], -1.0)])
        data, ri, ci = [], [], []
        for r, row in enumerate(rows):
            for c, v in row:
                ri.append(r)
                ci.append(c)
                data.append(v)
        a = coo_matrix((data, (ri, ci)), shape=(len(rows), len(pairs))).tocsr()
        left = budget.left()
        if left <= 0:
            raise _OverBudget
        res = milp(
            cost,
            constraints=[LinearConstraint(a, 0.0, 1.0)],
            integrality=np.ones(len(pairs)),
            bounds=Bounds(0.0, 1.0),
            options={"time_limit": left},
        )
        if res.status == 1:  # HiGHS stopped at the time limit: no proven optimum
            budget.check()
            raise _OverBudget
        if res.status != 0 or res.x is None:
            raise RuntimeError(f"Kemeny integer program failed: {res.message}")
        xs = np.round(res.x)
    above = np.zeros((k, k), dtype=bool)
    for (i, j), v in var.items():
        above[i, j] = xs[v] > 0.5
        above[j, i] = not above[i, j]
    order = sorted(range(k), key=lambda i: -int(above[i].sum()))
    out = (const + float(cost @ xs), tuple(order))
    _KEMENY_MEMO[sub_bytes] = out
    if len(_KEMENY_MEMO) > _KEMENY_MEMO_SIZE:
        _KEMENY_MEMO.popitem(last=False)
    return out


def _kemeny_local_search(nmat: np.ndarray, idx: list[int]) -> list[int]:
    """The heuristic fallback for one component: the Borda order (sum of margins inside it), improved
    by moving one system at a time to its best place while that lowers the cost (at most
    KEMENY_LOCAL_PASSES passes of O(k^2) each). A local optimum, not a proven global one."""
    k = len(idx)
    sub = np.asarray(nmat[np.ix_(idx, idx)], dtype=float)
    score = (sub - sub.T).sum(axis=1)
    order = sorted(range(k), key=lambda i: (-score[i], i))
    tol = 1e-9 * max(1.0, float(sub.sum()))
    for _ in range(KEMENY_LOCAL_PASSES):
        if (outer := _DEADLINE.get()) is not None and time.perf_counter() >= outer:
            raise OutOfTime
        improved = False
        for e in range(k):
            at = order.index(e)
            rest = order[:at] + order[at + 1 :]
            # e at place p of `rest`: rest[:p] above it disagree with N[e, a], rest[p:] below with N[b, e]
            above, below = sub[e, rest], sub[rest, e]
            c = np.concatenate(([0.0], np.cumsum(above))) + np.concatenate((np.cumsum(below[::-1])[::-1], [0.0]))
            best = int(np.argmin(c))
            if c[best] < c[at] - tol:
                order = rest[:best] + [e] + rest[best:]
                improved = True
        if not improved:
            break
    return [idx[i] for i in order]


def _kemeny(nmat: np.ndarray, m: np.ndarray, idx: list[int], key: np.ndarray, budget: _Budget, *,
            comps: list[list[int]] | None = None, exact: bool = False
            ) -> tuple[float, list[int], list[list[int]], float, list[int]]:
    """Optimal cost and order over `idx`, decomposed by majority components (given, or computed); also
    the components, the optimal cost inside the first one, and the positions (in the components) of those
    whose order is heuristic (their exact search passed its budget; with ``exact`` that raises _OverBudget instead).

    A component whose strict majority relation is acyclic is ordered by a linear extension of it (exact:
    see :func:`_undominated`); others by the integer program, within the whole `budget` up to
    KEMENY_EXACT_MAX systems and KEMENY_LARGE_BUDGET_S of it above."""
    comps = _components(m, idx) if comps is None else comps
    order: list[int] = []
    top_cost = 0.0
    approx: list[int] = []
    for k, c in enumerate(comps):
        o = _strict_order(m, c, key) if len(c) > 2 else None
        if o is not None:
            cst = float(np.tril(nmat[np.ix_(o, o)], -1).sum())
        else:
            try:
                within = budget if len(c) <= KEMENY_EXACT_MAX else _Budget(KEMENY_LARGE_BUDGET_S, budget)
                cst, o = _kemeny_ilp(nmat, c, within)
            except _OverBudget:
                if exact:
                    raise
                o = _kemeny_local_search(nmat, c)
                cst = float(np.tril(nmat[np.ix_(o, o)], -1).sum())
                approx.append(k)
        top_cost = cst if k == 0 else top_cost
        order += o
    # the cost of the whole order: pairs across components disagree in a fixed way, so one sum
    total = float(np.tril(nmat[np.ix_(order, order)], -1).sum())
    return total, order, comps, top_cost, approx


@register(
    "kemeny",
    handles_missing=True,
    condorcet_consistent=True,
    description=(
        "exact Kemeny-Young (integer program); winners = every system first in some optimal order; "
        "order below from one optimal order; past its time budget a stated heuristic"
    ),
    cost=(
        f"exact and polynomial where a majority component has no majority cycle; else an integer program "
        f"within {KEMENY_TIME_BUDGET_S:g} s per call ({KEMENY_LARGE_BUDGET_S:g} s for a component above "
        f"{KEMENY_EXACT_MAX} systems), then Borda + local search (fallback stated); exact clones count once"
    ),
    timed=True,
)
def kemeny_rule(p: Profile) -> Ranking:
    """Kemeny-Young: the linear order minimising the total weight of (task, pair) disagreements
    with N, i.e. maximising the sum of margins along the order; a task tying a pair disagrees with
    neither order, a task missing either system is not counted.

    Solved exactly (see `_kemeny_ilp`) per majority component. Winners (groups[0]) are *all*
    systems placed first by at least one optimal order - the same definition as
    pref_voting.kemeny_young - found by re-solving with each candidate of the top component forced
    first (skipped when a lower bound already exceeds the optimum). Below the winners, the systems
    follow one optimal order (others may exist). Score = #systems in lower groups.

    Exact clones (identical score vectors, k of them) disagree with no task between themselves and
    alike with everyone else, so moving all of them next to the one whose disagreements cost least
    never costs more: some optimal order keeps every clone class together, and the problem is that of
    one system per class with its counts multiplied by the class sizes. A class is first in some
    optimal order iff its representative is there, and any member can then lead it; the class shares
    one group. When the exact search passes its budget, the component's order is heuristic and
    ``fallback`` says so (and which part of the ranking it touches)."""
    names = p.names
    n = len(names)
    classes = p.clones
    reps = [c[0] for c in classes]
    size = np.array([len(c) for c in classes], dtype=float)
    scale = np.outer(size, size)
    nmat = p.pairwise[np.ix_(reps, reps)] * scale
    m = p.margins[np.ix_(reps, reps)] * scale
    key = p.margins.sum(axis=1)[reps]  # a fixed tie-break between equally good places: sum of margins
    comps = p.components if len(reps) == n else _components(m, list(range(len(reps))))
    budget = _Budget(KEMENY_TIME_BUDGET_S)
    _opt, order, comps, sub_opt, approx = _kemeny(nmat, m, list(range(len(reps))), key, budget, comps=comps)
    top = comps[0]
    tol = 1e-9 * max(1.0, float(p.w.sum())) * max(1, n) ** 2
    win = {order[0]}
    notes: list[str] = []
    if approx:
        sizes = ", ".join(str(sum(len(classes[i]) for i in comps[k])) for k in approx)
        notes.append(
            f"the order inside {len(approx)} majority cycle(s) of {sizes} systems is "
            f"heuristic (Borda order improved by local search; optimality not proven): the exact integer "
            f"program passed its time budget ({KEMENY_LARGE_BUDGET_S:g} s above {KEMENY_EXACT_MAX} systems, "
            f"{KEMENY_TIME_BUDGET_S:g} s per call)"
        )
    if 0 in approx:
        notes.append("winners = the first system of the heuristic order")
    elif len(top) > 1:
        found = _undominated(m, top)
        if found is not None:
            win = found
        else:
            sub = nmat[np.ix_(top, top)]
            low = np.minimum(sub, sub.T)
            low_all = float(np.triu(low, 1).sum())
            decided = 0
            # a large cycle gets the same share for its winner search as for its order
            wb = budget if len(top) <= KEMENY_EXACT_MAX else _Budget(KEMENY_LARGE_BUDGET_S, budget)
            try:
                for ci, c in enumerate(top):
                    if c not in win:
                        others = [b for b in top if b != c]
                        first_cost = float(sub[:, ci].sum() - sub[ci, ci])
                        # a lower bound: c first, then every other pair at its cheaper orientation
                        bound = first_cost + low_all - float(low[ci].sum() - low[ci, ci])
                        if bound <= sub_opt + tol and \
                                first_cost + _kemeny(nmat, m, others, key, wb, exact=True)[0] <= sub_opt + tol:
                            win.add(c)
                    decided += 1
            except _OverBudget:
                notes.append(
                    f"winner set incomplete: the search for every system first in some optimal order passed its "
                    f"{wb.seconds:g} s budget after {decided} of the {len(top)} systems of the top majority cycle; "
                    "listed are those shown to come first in an optimal order"
                )
    groups = [sorted(win)] + [[i] for i in order if i not in win]
    return _ranking_from_groups(names, _expand(groups, classes), "; ".join(notes) or None)


# ----------------------------------------------------------------------------------------------
# Vectorised forms for the bootstrap: B replicate tables at once
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRanks:
    """A rule's outcome on B replicates: competition rank positions (1 = best; NaN where skipped),
    winner masks (B × systems) and which replicates the rule ranked at all (B,)."""

    positions: np.ndarray
    winners: np.ndarray
    valid: np.ndarray


class BatchProfile(Profile):
    """B replicate tables (B × systems × tasks) sharing systems, tasks, weights and missing cells,
    e.g. bootstrap redraws of seeds. The batched twin of :class:`Profile`: the same matrices, one per
    replicate, each computed once for the whole batch."""

    def __init__(self, names: Sequence[str], columns: Sequence[str], x: np.ndarray, w: np.ndarray) -> None:
        super().__init__(names, columns, x, w)
        nan = np.isnan(x)
        if (nan != nan[:1]).any():
            raise ValueError("replicates of a BatchProfile must miss the same cells")

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.x.shape[1]

    @cached_property
    def missing_reason(self) -> str | None:
        # the missing cells are the same in every replicate, so is the reason to skip
        return Profile(self.names, self.columns, self.x[0], self.w).missing_reason if len(self.x) else None

    @cached_property
    def condorcet(self) -> np.ndarray:
        """Index of each replicate's Condorcet winner, -1 where there is none (n > 1)."""
        n = self.shape[1]
        beats_all = ((self.margins > 0) | np.eye(n, dtype=bool)[None]).all(axis=2)
        return np.where(beats_all.any(axis=1), beats_all.argmax(axis=1), -1)


def _batch_ranks(values: np.ndarray) -> np.ndarray:
    """Per row of `values` (B × n), the competition ranks of :func:`_groups_from_scores`' groups: the
    same descending order, the same tolerance anchored at each group's first (largest) score, every
    non-finite score in one last group."""
    b, n = values.shape
    fin = np.isfinite(values)
    scale = np.max(np.abs(np.where(fin, values, 0.0)), axis=1, initial=0.0)
    tol = 1e-9 * np.maximum(1.0, scale)
    order = np.argsort(np.where(fin, -values, np.inf), axis=1, kind="stable")
    srt = np.take_along_axis(values, order, axis=1)
    rank_sorted = np.empty((b, n))
    anchor, start = srt[:, 0].copy(), np.zeros(b)
    rank_sorted[:, 0] = 1.0
    for i in range(1, n):
        new = np.abs(anchor - srt[:, i]) > tol
        anchor = np.where(new, srt[:, i], anchor)
        start = np.where(new, float(i), start)
        rank_sorted[:, i] = start + 1.0
    n_fin = fin.sum(axis=1, keepdims=True)
    rank_sorted = np.where(np.arange(n)[None, :] < n_fin, rank_sorted, n_fin + 1.0)
    ranks = np.empty((b, n))
    np.put_along_axis(ranks, order, rank_sorted, axis=1)
    return ranks


def _batch_from_scores(values: np.ndarray, valid: np.ndarray | None = None) -> BatchRanks:
    ranks = _batch_ranks(values)
    ok = np.ones(len(values), dtype=bool) if valid is None else valid
    ranks[~ok] = np.nan
    return BatchRanks(ranks, (ranks == 1.0) & ok[:, None], ok)


def _batch_skipped(bp: BatchProfile) -> BatchRanks:
    b, n = bp.shape
    return BatchRanks(np.full((b, n), np.nan), np.zeros((b, n), dtype=bool), np.zeros(b, dtype=bool))


@batch_form("mean")
def _mean_batch(bp: BatchProfile) -> BatchRanks:
    return _batch_from_scores(_mean_scores(bp))


@batch_form("geometric_mean")
def _geometric_mean_batch(bp: BatchProfile) -> BatchRanks:
    x = bp.imputed
    return _batch_from_scores(_geometric_scores(bp), ~(np.isnan(x) | (x <= 0)).any(axis=(1, 2)))


@batch_form("median")
def _median_batch(bp: BatchProfile) -> BatchRanks:
    return _batch_from_scores(_median_scores(bp))


@batch_form("optimality_gap")
def _optimality_gap_batch(bp: BatchProfile) -> BatchRanks:
    return _batch_from_scores(_gap_scores(bp))


def _positional(bp: BatchProfile, points: Callable[[Profile], np.ndarray]) -> BatchRanks:
    if bp.missing_reason is not None:
        return _batch_skipped(bp)
    return _batch_from_scores(points(bp) @ bp.w)


@batch_form("plurality")
def _plurality_batch(bp: BatchProfile) -> BatchRanks:
    return _positional(bp, _plurality_points)


@batch_form("borda")
def _borda_batch(bp: BatchProfile) -> BatchRanks:
    return _positional(bp, _borda_points)


@batch_form("dowdall")
def _dowdall_batch(bp: BatchProfile) -> BatchRanks:
    return _positional(bp, _dowdall_points)


def _elimination_batch(bp: BatchProfile, *, nanson: bool) -> BatchRanks:
    """`_elimination` on every replicate: the round in which a system drops out (survivors: never)
    orders it; rank = 1 + #systems dropped later (or surviving)."""
    if bp.missing_reason is not None:
        return _batch_skipped(bp)
    b, n = bp.shape
    m = bp.margins
    tol = 1e-9 * max(1.0, float(bp.w.sum())) * max(1, n)
    alive = np.ones((b, n), dtype=bool)
    dropped_at = np.full((b, n), np.inf)
    active = np.full(b, n > 1)
    for rnd in range(n):
        if not active.any():
            break
        score = (m * alive[:, None, :]).sum(axis=2)
        if nanson:
            out = alive & (score < -tol)
        else:
            low = np.where(alive, score, np.inf).min(axis=1, keepdims=True)
            out = alive & (score <= low + tol)
        n_out = out.sum(axis=1)
        act = active & (n_out > 0) & (n_out < alive.sum(axis=1))
        out &= act[:, None]
        dropped_at[out] = rnd
        alive &= ~out
        active = act & (alive.sum(axis=1) > 1)
    ranks = 1.0 + (dropped_at[:, None, :] > dropped_at[:, :, None]).sum(axis=2)
    return BatchRanks(ranks, alive, np.ones(b, dtype=bool))


@batch_form("baldwin")
def _baldwin_batch(bp: BatchProfile) -> BatchRanks:
    return _elimination_batch(bp, nanson=False)


@batch_form("nanson")
def _nanson_batch(bp: BatchProfile) -> BatchRanks:
    return _elimination_batch(bp, nanson=True)


@batch_form("black")
def _black_batch(bp: BatchProfile) -> BatchRanks:
    if bp.missing_reason is not None:
        return _batch_skipped(bp)
    b, n = bp.shape
    borda = _borda_points(bp) @ bp.w
    cw = bp.condorcet if n > 1 else np.zeros(b, dtype=int)
    has = cw >= 0
    rows = np.nonzero(has)[0]
    rest = borda.copy()
    rest[rows, cw[rows]] = np.nan  # the others are ranked among themselves, below the winner
    ranks = np.where(has[:, None], _batch_ranks(rest) + 1.0, _batch_ranks(borda))
    ranks[rows, cw[rows]] = 1.0
    return BatchRanks(ranks, ranks == 1.0, np.ones(b, dtype=bool))


@batch_form("condorcet")
def _condorcet_batch(bp: BatchProfile) -> BatchRanks:
    b, n = bp.shape
    if n == 1:
        return BatchRanks(np.ones((b, 1)), np.ones((b, 1), dtype=bool), np.ones(b, dtype=bool))
    cw = bp.condorcet
    ok = cw >= 0
    win = (np.arange(n)[None, :] == cw[:, None]) & ok[:, None]
    ranks = np.where(win, 1.0, 2.0)
    ranks[~ok] = np.nan
    return BatchRanks(ranks, win, ok)


@batch_form("copeland")
def _copeland_batch(bp: BatchProfile) -> BatchRanks:
    return _batch_from_scores(_copeland_scores(bp))


@batch_form("minimax")
def _minimax_batch(bp: BatchProfile) -> BatchRanks:
    return _batch_from_scores(_minimax_scores(bp))


@batch_form("schulze")
def _schulze_batch(bp: BatchProfile) -> BatchRanks:
    b, n = bp.shape
    m = bp.margins
    p = np.where(m > 0, m, 0.0)
    for k in range(n):
        p = np.maximum(p, np.minimum(p[:, :, k : k + 1], p[:, k : k + 1, :]))
    p[:, np.arange(n), np.arange(n)] = 0.0
    beats = p > p.transpose(0, 2, 1) + 1e-12
    alive = np.ones((b, n), dtype=bool)
    ranks = np.zeros((b, n))
    placed = np.zeros((b, 1))
    for _ in range(n):  # peel the undefeated, as schulze_rule does
        top = alive & ~(beats & alive[:, :, None]).any(axis=1)
        ranks = np.where(top, placed + 1.0, ranks)
        placed = placed + top.sum(axis=1, keepdims=True)
        alive &= ~top
        if not alive.any():
            break
    return BatchRanks(ranks, ranks == 1.0, np.ones(b, dtype=bool))
