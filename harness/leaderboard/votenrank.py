"""Vote'n'Rank's conventions for the rules it implements (Rofin et al., EACL 2023, arXiv:2210.05769;
the authors' library is PragmaticsLab/vote_and_rank, ``votenrank/leaderboard/_rules.py``).

``peftbench rank`` follows pref_voting's conventions by default (:mod:`harness.leaderboard.rules`):
tied systems share the average of the positions they occupy. Vote'n'Rank ranks each task with
pandas' ``rank(method="min")`` (a tied system takes the best of the tied positions) and
``rank(method="max")`` (the worst), and builds its rules on those. On tables with ties the two
conventions can order systems differently; ``peftbench rank --convention votenrank`` reproduces
Vote'n'Rank's rankings (checked against the GLUE and SuperGLUE rankings its paper's notebook
published: tests/harness/leaderboard/test_votenrank.py).

Per rule, with N[a, b] the weight of tasks scoring a strictly above b (both scored):

=================  ================================================  =====================================
rule               Vote'n'Rank                                       peftbench (default)
=================  ================================================  =====================================
borda              a point per system *strictly* beaten; ties score  tied systems share their average
                   nothing (n - max rank)                            position (n - 1 - above - tied/2)
plurality          the task's weight only to a system *alone* at     a tie for first splits the weight
                   the top (max rank 1); a tie for first scores 0
dowdall            1 / min rank: tied systems all get the best of    the average of 1/p over the tied
                   their positions                                   positions
baldwin            eliminate the lowest strict-Borda systems,        margin Borda (ties = average
                   strict Borda recomputed on the survivors          position); Condorcet consistent
copeland           score = pairwise wins - losses                    wins + 1/2 per pairwise tie (same
                                                                     order, other scores)
minimax            winning votes: a defeat counts N[b, a], the       margins: N[b, a] - N[a, b]
                   weight of the winner's side
optimality_gap     weighted mean of min(s, gamma) - gamma: the       mean shortfall from each task's best
                   shortfall below a fixed target (gamma = 95)       system, scaled by the task's range
geometric_mean     a score <= 0 makes that system's mean 0 (an       skipped when a score is <= 0
                   exact 0) or undefined (negative; ranked last)
threshold          fewest last places, then fewest second-to-last,   (not a peftbench rule)
                   ... (max ranks; Aleskerov et al.)
mean, condorcet    as peftbench                                      arithmetic mean (median imputation);
                                                                     Condorcet winner
=================  ================================================  =====================================

Rules Vote'n'Rank does not implement (median, nanson, black, kemeny, schulze, ranked_pairs) keep the
peftbench convention under both. Vote'n'Rank runs only condorcet, copeland, minimax, mean and
optimality_gap on tables with missing scores; so do both conventions here (the positional rules are
skipped with the reason).

Differences that are artefacts, not conventions, are not reproduced: Vote'n'Rank's geometric mean
also takes the log of weight-0 columns (0 · log 0 is NaN, so a system scoring 0 on a weight-0
diagnostic set gets no geometric mean at all); here weight-0 columns never vote.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.leaderboard.rules import (
    RULES,
    Profile,
    Ranking,
    Rule,
    _groups_from_scores,
    _ranking_from_groups,
    _ranking_from_scores,
    _skipped,
)

__all__ = ["CONVENTIONS", "DEFAULT_CONVENTION", "DEFAULT_GAMMA", "VOTENRANK_ONLY", "rules_for"]

CONVENTIONS = ("peftbench", "votenrank")
DEFAULT_CONVENTION = "peftbench"
DEFAULT_GAMMA = 95.0
"""Vote'n'Rank's default optimality-gap target (its METHODS_SETTINGS): scores on a 0-100 scale."""
VOTENRANK_ONLY = ("threshold",)
"""Rules that exist only under the votenrank convention."""


def _ranks(p: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Per (system, task): the min rank (1 + systems strictly above) and the max rank (min rank +
    systems tied with it), i.e. pandas' rank(method="min"/"max", ascending=False) of each column."""
    above, tied = p.position_stats
    return above + 1.0, above + tied + 1.0


def _strict_below(p: Profile) -> np.ndarray:
    """Per (system, task): the systems it strictly beats, n - max rank."""
    _, max_rank = _ranks(p)
    return p.x.shape[-2] - max_rank


def vnr_plurality(p: Profile) -> Ranking:
    """A task's weight goes to the system alone at its top (max rank 1); a tie for first gives none."""
    if (reason := p.missing_reason) is not None:
        return _skipped(p.names, reason)
    _, max_rank = _ranks(p)
    return _ranking_from_scores(p.names, (max_rank == 1.0).astype(float) @ p.w)


def vnr_borda(p: Profile) -> Ranking:
    """Borda as Vote'n'Rank counts it: a point per system strictly beaten (n - max rank), weighted."""
    if (reason := p.missing_reason) is not None:
        return _skipped(p.names, reason)
    return _ranking_from_scores(p.names, _strict_below(p) @ p.w)


def vnr_dowdall(p: Profile) -> Ranking:
    """Dowdall with min ranks: every tied system gets 1/(the best of the tied positions)."""
    if (reason := p.missing_reason) is not None:
        return _skipped(p.names, reason)
    min_rank, _ = _ranks(p)
    return _ranking_from_scores(p.names, (1.0 / min_rank) @ p.w)


def vnr_threshold(p: Profile) -> Ranking:
    """Threshold rule (Aleskerov, Chistyakov and Kalyagin, 2010), as Vote'n'Rank elects with it: the
    fewest (weighted) last places wins; among those tied, the fewest second-to-last places; and so
    on up to second places. Positions are max ranks on the whole table. The full ranking here is that
    lexicographic order (Vote'n'Rank only elects); equal vectors tie. Score = systems in lower groups."""
    names = p.names
    if (reason := p.missing_reason) is not None:
        return _skipped(names, reason)
    n = len(names)
    _, max_rank = _ranks(p)
    # counts[a, j] = weight of tasks where a sits at max rank n - j (j = 0: last place)
    counts = np.stack([(max_rank == float(n - j)).astype(float) @ p.w for j in range(max(n - 1, 0))], axis=1)
    tol = 1e-9 * max(1.0, float(p.w.sum()))
    keys = np.round(counts / tol) if counts.size else counts
    order = sorted(range(n), key=lambda i: (tuple(keys[i]), i))
    groups: list[list[int]] = []
    for i in order:
        if groups and np.array_equal(keys[groups[-1][0]], keys[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return _ranking_from_groups(names, groups)


def vnr_baldwin(p: Profile) -> Ranking:
    """Baldwin with Vote'n'Rank's Borda: drop every system with the lowest strict-Borda score (points
    per system strictly beaten), recompute it among the survivors, until the survivors all tie.

    Not Condorcet consistent once ballots have ties: a Condorcet winner that ties many systems scores
    few strict points and can be dropped first (a test shows one)."""
    names = p.names
    if (reason := p.missing_reason) is not None:
        return _skipped(names, reason)
    n_mat = p.pairwise
    tol = 1e-9 * max(1.0, float(p.w.sum())) * max(1, len(names))
    alive = np.arange(len(names))
    eliminated: list[list[int]] = []
    while len(alive) > 1:
        b = n_mat[np.ix_(alive, alive)].sum(axis=1)
        out = b <= b.min() + tol
        if out.all():
            break  # the survivors tie: joint winners
        eliminated.append(list(alive[out]))
        alive = alive[~out]
    return _ranking_from_groups(names, [list(alive)] + eliminated[::-1])


def vnr_copeland(p: Profile) -> Ranking:
    """Copeland 'difference' (Vote'n'Rank's default): pairwise majority wins minus losses. Orders as
    peftbench's wins + 1/2 per tie; only the scores differ."""
    m = p.margins
    return _ranking_from_scores(p.names, (m > 0).sum(axis=-1) - (m < 0).sum(axis=-1).astype(float))


def vnr_minimax(p: Profile) -> Ranking:
    """Minimax with winning votes (Vote'n'Rank's default): a system's loss is the largest N[b, a] over
    the systems b that beat it by pairwise majority (0 if unbeaten); score = -loss."""
    n_mat, m = p.pairwise, p.margins
    defeats = np.where(m.T > 0, n_mat.T, 0.0)   # [a, b] = N[b, a] where b beats a
    return _ranking_from_scores(p.names, -defeats.max(axis=-1))


def vnr_optimality_gap(gamma: float):
    """Optimality gap with a fixed target: the weighted mean of min(s, gamma) - gamma (0 for a system
    at or above gamma on every task), missing cells imputed with the task median as in peftbench."""

    def rule(p: Profile) -> Ranking:
        x = p.imputed
        return _ranking_from_scores(p.names, (np.minimum(x, gamma) - gamma) @ p.w / p.w.sum())

    return rule


def vnr_geometric_mean(p: Profile) -> Ranking:
    """Weighted geometric mean without the skip: a system with an exact 0 scores 0, one with a
    negative score has no mean and is ranked last (Vote'n'Rank sorts it to the bottom)."""
    x = p.imputed
    if np.isnan(x).any():
        return _skipped(p.names, "a task has no score at all, nothing to impute from")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.where(x == 0, -np.inf, np.nan))
        score = np.exp(logs @ p.w / p.w.sum())
    groups = _groups_from_scores(p.names, score)
    return Ranking(groups=groups, scores=dict(zip(p.names, map(float, score))), winners=list(groups[0]))


def rules_for(convention: str = DEFAULT_CONVENTION, *, gamma: float = DEFAULT_GAMMA) -> dict[str, Rule]:
    """The rule registry under a convention: :data:`rules.RULES` itself for peftbench; for votenrank
    the rules Vote'n'Rank implements replaced by its versions (``gamma``: the optimality-gap target),
    plus ``threshold``. Names and order follow RULES, threshold last."""
    if convention == "peftbench":
        return dict(RULES)
    if convention != "votenrank":
        raise ValueError(f"unknown convention {convention!r}; allowed: {', '.join(CONVENTIONS)}")
    note = "Vote'n'Rank convention"
    vnr = {
        "plurality": (vnr_plurality, False, False,
                      f"{note}: a task's weight to the system alone at its top; a tie for first scores nothing"),
        "borda": (vnr_borda, False, False, f"{note}: a point per system strictly beaten; ties score nothing"),
        "dowdall": (vnr_dowdall, False, False, f"{note}: 1/(min rank) points; tied systems take the best position"),
        "baldwin": (vnr_baldwin, False, False,
                    f"{note}: drop the lowest strict-Borda systems, recomputed on the survivors"),
        "copeland": (vnr_copeland, True, True, f"{note}: pairwise majority wins minus losses"),
        "minimax": (vnr_minimax, True, True,
                    f"{note}: winning votes; score = -(largest weight beating the system in a lost pair)"),
        "optimality_gap": (vnr_optimality_gap(gamma), True, False,
                           (f"{note}: weighted mean of min(s, {gamma:g}) - {gamma:g}; missing cells "
                            "imputed with the task median")),
        "geometric_mean": (vnr_geometric_mean, True, False,
                           (f"{note}: weighted geometric mean; a score of 0 gives 0, a negative score "
                            "ranks the system last")),
    }
    out: dict[str, Rule] = {}
    for name, rule in RULES.items():
        if name in vnr:
            fn, missing, cc, desc = vnr[name]
            out[name] = Rule(name, fn, missing, cc, desc)
        else:
            out[name] = rule
    out["threshold"] = Rule("threshold", vnr_threshold, False, False,
                            f"{note}: fewest last places, then fewest second-to-last, ... (max ranks)")
    return out


def rank_with(p: Profile, registry: dict[str, Rule], rules: Sequence[str]) -> dict[str, Ranking]:
    """Run the named rules of ``registry`` on a validated profile."""
    return {r: registry[r].fn(p) for r in rules}
