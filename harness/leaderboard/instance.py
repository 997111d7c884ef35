"""Instance-level ranking: every evaluated example is a voter (Colombo, Noiry, Irurozki and Clémençon,
"What are the best systems? New perspectives on NLP benchmarking", NeurIPS 2022, arXiv:2202.03799).

A board's rules vote with tasks: one number per (method, task). Where the runs kept their per-example
outcomes (:mod:`harness.outcomes`), each example of a task ranks the methods by how they did on it, and
the paper's two-level aggregation turns those rankings into one.

What the paper defines (its instance-level setting, in the authors' notation; their repository
PierreColombo/RankingNLPSystems states it on the "instance-level ranking" slide of
datacraft/datacraft_slides.pdf): system n has a score on instance k of task t, which ranks the N
systems as σ_{t,k}. Two procedures are given, both Borda counts, the tractable stand-in for the Kemeny
consensus argmin_σ Σ_i d_Kendall(σ, σ_i) that motivates the paper (the only rule that is neutral,
consistent and Condorcet, but NP-hard): one level, σ^l = Borda(σ_{t,k} over all t and k); two levels,
σ_t = Borda(σ_{t,k}, 1 ≤ k ≤ K_t) for every task, then σ^{2l} = Borda(σ_t, 1 ≤ t ≤ T). The authors
recommend σ^{2l}, and this module computes it: level 2 counts each task's ranking σ_t (the positions
of its Borda counts), not the counts, so every task weighs the same. As in the paper, no Kemeny
consensus is computed at either level.

Ties. The paper takes every σ_{t,k} and σ_t to be a permutation of the systems (an element of the
symmetric group S_N), so it defines nothing for ties. Here they are the rule, not the exception: with
right/wrong outcomes an example only separates the methods that got it right from those that did not.
The authors' code ranks by a double argsort of the scores, so tied systems get distinct consecutive
ranks in whatever order NumPy's default (unstable) sort leaves them: table order on small arrays with
some NumPy builds, not in general (NumPy 2.3 on an AVX-512 CPU can reorder ties among 5 systems).
Either way the result depends on how the systems are listed, against the neutrality the paper asks of
an aggregation, and with right/wrong outcomes it can outweigh accuracy (a test shows table order
putting a method above one with higher accuracy). The closest faithful version, used here at both
levels: tied methods share the average of the positions they span, i.e. Borda points = methods
strictly below + ½ × methods tied — the usual Borda count of a ranking with ties (the row sums of its
pairwise-preference matrix, a tied pair giving ½ to each), under which relabelling the methods only
relabels the result. At level 1 it is exactly the expected count when ties are broken in a uniformly
random order; level 2 applies the same convention to the task counts. On tie-free scores it gives the
authors' results (tests check both).

Other departures, all forced by the data: a method's outcome on an example is its score there (right =
1, wrong = 0; a regression prediction: minus its absolute error) averaged over its seeds, where the
paper has one score per system and instance; and methods whose overall counts tie are reported as
tied, where the paper outputs a permutation.

With right/wrong outcomes and one seed per method, a right answer always earns n/2 points more than a
wrong one on the same example (n methods), so a task's Borda count orders the methods exactly as their
accuracy does: the instance level then departs from the task-level rules through the second level
(Borda over task rankings) and through the seeds (per-example means of several runs).

The rule needs every method to have outcomes on every task, over the same examples; otherwise it is
skipped with the reason, as the positional rules are on incomplete tables. It is reported beside the
registered rules (Markdown winners list, JSON ``instance_level``, HTML), not among them: it reads the
outcomes, not the method × task table the rules and their bootstrap share.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.examples import per_example_scores
from harness.leaderboard.rules import Ranking, _ranking_from_scores, _skipped

RULE_NAME = "instance_borda"
DESCRIPTION = ("two-level Borda over examples (examples → task ranking, tasks → overall: the σ^2l of Colombo "
               "et al., NeurIPS 2022, arXiv:2202.03799); tied methods share their average position (the paper "
               "defines rankings without ties)")


def borda_points(x: np.ndarray) -> np.ndarray:
    """Borda points of each column (system) in each row (voter) of ``x`` (higher is better): the systems
    strictly below it plus half the systems tied with it, i.e. n minus its average position."""
    x = np.asarray(x, dtype=float)
    below = (x[..., :, None] > x[..., None, :]).sum(axis=-1)
    tied = (x[..., :, None] == x[..., None, :]).sum(axis=-1) - 1
    return below + 0.5 * tied


def two_level(per_task: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(overall score per system, task → the task's Borda count per system) of examples × systems arrays
    (one per task, the same systems in the same column order). The overall score is the Borda count of
    the task rankings: a task gives each system its Borda points among the task's Borda counts."""
    counts = {t: borda_points(x).sum(axis=0) for t, x in per_task.items()}
    overall = np.sum([borda_points(c) for c in counts.values()], axis=0) if counts else np.zeros(0)
    return np.asarray(overall, dtype=float), counts


def instance_ranking(samples: pd.DataFrame, outcomes: Mapping[tuple[str, str, Any], Any],
                     methods: Sequence[str], tasks: Sequence[str]) -> tuple[Ranking, dict[str, dict[str, float]]]:
    """The two-level instance ranking of ``methods`` over ``tasks`` from their runs' per-example outcomes
    (keyed (method, task, seed) as in ``samples``), and each task's Borda count per method; a skipped
    Ranking (with the reason) when some cell lacks outcomes or the methods saw different examples."""
    runs: dict[tuple[str, str], list[np.ndarray]] = {}
    missing: list[str] = []
    for m, t, seed in zip(samples["method"].astype(str), samples["task"].astype(str), samples["seed"]):
        got = outcomes.get((m, t, seed))
        if got is None:
            missing.append(f"({m}, {t}, seed {seed})")
        else:
            runs.setdefault((m, t), []).append(per_example_scores(got))
    lacking = [f"({m}, {t})" for t in tasks for m in methods if (m, t) not in runs]
    if missing or lacking:
        what = missing + lacking
        return _skipped(list(methods), f"needs every method's per-example outcomes on every task; missing for "
                                       f"{len(what)} run(s)/cell(s): {', '.join(what[:3])}"
                                       + (f" and {len(what) - 3} more" if len(what) > 3 else "")), {}
    per_task: dict[str, np.ndarray] = {}
    for t in tasks:
        sizes = {len(v) for m in methods for v in runs[m, t]}
        if len(sizes) != 1:
            return _skipped(list(methods), f"the methods' outcomes on {t} cover different numbers of examples "
                                           f"({sorted(sizes)}): not the same examples"), {}
        per_task[t] = np.stack([np.mean(runs[m, t], axis=0) for m in methods], axis=1)
    overall, counts = two_level(per_task)
    ranking = _ranking_from_scores(list(methods), overall)
    return ranking, {t: dict(zip(methods, map(float, c))) for t, c in counts.items()}
