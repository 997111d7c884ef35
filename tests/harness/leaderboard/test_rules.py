"""Rule engine: hand-computed examples per rule, properties, and pref_voting as an oracle."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard import rules as R
from harness.leaderboard.rules import (
    RULES,
    Ranking,
    apply_rule,
    condorcet_winner,
    pairwise_matrix,
    rank_all,
)

ALL = list(RULES)


def table(rows: dict[str, list[float]], tasks: list[str] | None = None) -> pd.DataFrame:
    n = len(next(iter(rows.values())))
    return pd.DataFrame.from_dict(rows, orient="index", columns=tasks or [f"t{i + 1}" for i in range(n)])


# ---------------------------------------------------------------------------------------------
# Registry and interface
# ---------------------------------------------------------------------------------------------


def test_registry_has_every_rule_with_properties():
    expected = {
        "mean", "geometric_mean", "median", "plurality", "borda", "dowdall", "copeland", "minimax",
        "kemeny", "schulze", "ranked_pairs", "baldwin", "nanson", "black", "optimality_gap", "condorcet",
    }  # fmt: skip
    assert expected <= set(RULES)
    for name, rule in RULES.items():
        assert rule.name == name and rule.description and callable(rule.fn)
    condorcet = {
        "copeland",
        "minimax",
        "kemeny",
        "schulze",
        "ranked_pairs",
        "baldwin",
        "nanson",
        "black",
        "condorcet",
    }
    assert {n for n, r in RULES.items() if r.condorcet_consistent} == condorcet
    pairwise = {"copeland", "minimax", "kemeny", "schulze", "ranked_pairs", "condorcet"}
    imputing = {"mean", "geometric_mean", "median", "optimality_gap"}
    assert {n for n, r in RULES.items() if r.handles_missing} == pairwise | imputing
    for n in imputing:
        assert "imputed" in RULES[n].description


def test_unknown_rule_lists_allowed_names():
    with pytest.raises(KeyError) as e:
        apply_rule("bordaa", table({"A": [1.0], "B": [2.0]}))
    assert "bordaa" in str(e.value) and "kemeny" in str(e.value) and "borda" in str(e.value)
    with pytest.raises(KeyError):
        rank_all(table({"A": [1.0], "B": [2.0]}), rules=["mean", "nope"])


def test_register_rejects_duplicates():
    with pytest.raises(ValueError):
        R.register("mean", handles_missing=True, condorcet_consistent=False, description="x")(
            lambda d, w: None
        )


def test_input_validation():
    df = table({"A": [1.0, 2.0], "B": [2.0, 1.0]})
    with pytest.raises(ValueError, match="unknown columns"):
        apply_rule("mean", df, {"t3": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        apply_rule("mean", df, {"t1": -1.0})
    with pytest.raises(ValueError, match="positive weight"):
        apply_rule("mean", df, {"t1": 0, "t2": 0})
    dup = pd.DataFrame([[1.0], [2.0]], index=["A", "A"], columns=["t1"])
    with pytest.raises(ValueError, match="duplicate system"):
        apply_rule("mean", dup)
    with pytest.raises(ValueError, match="non-numeric"):
        apply_rule("mean", pd.DataFrame({"t1": ["x", "y"]}, index=["A", "B"]))


def test_every_rule_returns_a_complete_ranking():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.random((7, 5)) + 0.1, index=[f"s{i}" for i in range(7)], columns=list("abcde"))
    for name, rk in rank_all(df).items():
        assert isinstance(rk, Ranking) and rk.skipped is None, name
        flat = [s for g in rk.groups for s in g]
        assert sorted(flat) == sorted(df.index), name
        assert rk.winners == rk.groups[0], name
        assert set(rk.scores) == set(df.index), name


def test_pairwise_matrix_weights_and_missing():
    df = table({"A": [1.0, np.nan, 3.0], "B": [2.0, 2.0, 1.0]})
    n = pairwise_matrix(df, {"t1": 0.5, "t2": 2.0, "t3": 1.5})
    # t1: B>A (0.5); t2: A missing, not counted; t3: A>B (1.5)
    assert n.loc["A", "B"] == 1.5 and n.loc["B", "A"] == 0.5 and n.loc["A", "A"] == 0


def test_zero_weight_drops_column_and_halves_add_up():
    df = table({"A": [3.0, 3.0, 0.0, 9.0], "B": [1.0, 1.0, 5.0, 0.0]}, ["x-a", "x-b", "y", "diag"])
    # two halves of one task weigh like the whole task: A wins x (1), B wins y (1) -> tie
    w = {"x-a": 0.5, "x-b": 0.5, "y": 1.0, "diag": 0.0}
    assert apply_rule("copeland", df, w).groups == [["A", "B"]]
    assert condorcet_winner(df, w) is None
    # without the weights, x counts twice and diag once more: A is the Condorcet winner
    assert condorcet_winner(df) == "A"


# ---------------------------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------------------------

# Four systems, five tasks. Each task ranks the systems; scores 4..1 by position:
#   t1: A>B>C>D   t2: A>B>C>D   t3: B>C>D>A   t4: C>B>D>A   t5: D>C>B>A
P4 = table(
    {
        "A": [4, 4, 1, 1, 1],
        "B": [3, 3, 4, 3, 2],
        "C": [2, 2, 3, 4, 3],
        "D": [1, 1, 2, 2, 4],
    }
).astype(float)
# Pairwise (wins-losses over 5 tasks): B>A 3-2, B>C 3-2, B>D 4-1, C>A 3-2, C>D 4-1, D>A 3-2.
# The majority relation is the transitive order B > C > D > A, so B is the Condorcet winner.

P4_EXPECTED = {
    # means: A 11/5=2.2, B 15/5=3.0, C 14/5=2.8, D 10/5=2.0
    "mean": [["B"], ["C"], ["A"], ["D"]],
    # geometric: A (4*4*1*1*1)^(1/5)=16^.2, B 216^.2, C 144^.2, D (1*1*2*2*4)^.2=16^.2 -> A and D tie
    "geometric_mean": [["B"], ["C"], ["A", "D"]],
    # medians: A med(1,1,1,4,4)=1, B med(2,3,3,3,4)=3, C med(2,2,3,3,4)=3, D med(1,1,2,2,4)=2
    "median": [["B", "C"], ["D"], ["A"]],
    # every task spans 4-1=3, so gap = (4 - mean)/3: B 1/3, C 0.4, A 0.6, D 2/3
    "optimality_gap": [["B"], ["C"], ["A"], ["D"]],
    # firsts: A t1,t2 (2); B t3, C t4, D t5 (1 each)
    "plurality": [["A"], ["B", "C", "D"]],
    # 3,2,1,0 points: A 3+3+0+0+0=6, B 2+2+3+2+1=10, C 1+1+2+3+2=9, D 0+0+1+1+3=5
    "borda": [["B"], ["C"], ["A"], ["D"]],
    # 1/p: A 1+1+1/4*3=2.75, B 1/2+1/2+1+1/2+1/3=2.83, C 1/3+1/3+1/2+1+1/2=2.67, D 1/4*2+1/3*2+1=2.17
    "dowdall": [["B"], ["A"], ["C"], ["D"]],
    # Copeland: B 3 wins, C 2, D 1, A 0
    "copeland": [["B"], ["C"], ["D"], ["A"]],
    # minimax loss (largest defeat margin): B 0, A 1 (to B, C, D), C 1 (to B), D 3 (to B, C)
    "minimax": [["B"], ["A", "C"], ["D"]],
    # majority relation transitive -> it is the Kemeny / Schulze / ranked-pairs order
    "kemeny": [["B"], ["C"], ["D"], ["A"]],
    "schulze": [["B"], ["C"], ["D"], ["A"]],
    "ranked_pairs": [["B"], ["C"], ["D"], ["A"]],
    # Baldwin: Borda B10 C9 A6 D5 -> drop D; on {A,B,C}: A 2+2=4, B 1+1+2+1+1=6, C 1+2+2=5 -> drop A;
    # on {B,C}: B 3, C 2 -> drop C.
    "baldwin": [["B"], ["C"], ["A"], ["D"]],
    # Nanson: mean Borda 7.5 -> drop A(6), D(5) together; {B,C}: 3 vs 2, mean 2.5 -> drop C
    "nanson": [["B"], ["C"], ["A", "D"]],
    # Black: Condorcet winner B, then the rest by Borda: C 9, A 6, D 5
    "black": [["B"], ["C"], ["A"], ["D"]],
    "condorcet": [["B"], ["A", "C", "D"]],
}


@pytest.mark.parametrize("rule", sorted(P4_EXPECTED))
def test_hand_computed_four_systems(rule):
    assert apply_rule(rule, P4).groups == P4_EXPECTED[rule]


def test_hand_computed_scores():
    assert apply_rule("borda", P4).scores == {"A": 6.0, "B": 10.0, "C": 9.0, "D": 5.0}
    assert apply_rule("copeland", P4).scores == {"A": 0.0, "B": 3.0, "C": 2.0, "D": 1.0}
    assert apply_rule("minimax", P4).scores == {"A": -1.0, "B": 0.0, "C": -1.0, "D": -3.0}
    assert apply_rule("plurality", P4).scores == {"A": 2.0, "B": 1.0, "C": 1.0, "D": 1.0}
    d = apply_rule("dowdall", P4).scores
    assert d["A"] == pytest.approx(2.75) and d["B"] == pytest.approx(17 / 6)
    og = apply_rule("optimality_gap", P4).scores
    assert og["B"] == pytest.approx(-1 / 3) and og["D"] == pytest.approx(-2 / 3)
    assert condorcet_winner(P4) == "B"


# Rock-paper-scissors: a perfectly symmetric Condorcet cycle.
#   t1: A>B>C   t2: B>C>A   t3: C>A>B     A beats B 2-1, B beats C 2-1, C beats A 2-1.
RPS = table({"A": [3, 1, 2], "B": [2, 3, 1], "C": [1, 2, 3]}).astype(float)


@pytest.mark.parametrize("rule", [r for r in ALL if r != "condorcet"])
def test_rock_paper_scissors_ties_everyone(rule):
    # every rule is neutral here: means 2, Borda 3, Dowdall 11/6, one first place, one win, loss 1,
    # Kemeny cost 4 for each of A>B>C, B>C>A, C>A>B (5 for the reverses) -> all three are winners
    rk = apply_rule(rule, RPS)
    assert rk.groups == [["A", "B", "C"]], rule
    assert rk.winners == ["A", "B", "C"]


def test_rock_paper_scissors_has_no_condorcet_winner():
    rk = apply_rule("condorcet", RPS)
    assert rk.skipped and "no Condorcet winner" in rk.skipped
    assert rk.groups == [] and rk.winners == []
    assert condorcet_winner(RPS) is None


def test_weighted_cycle_breaks_by_weakest_defeat():
    # RPS with weights 3, 2, 2: A>B 5-2 (t1+t3 vs t2), B>C 5-2 (t1+t2 vs t3), C>A 4-3 (t2+t3 vs t1).
    # Margins 3, 3, 1: the weakest defeat is C>A, so A wins minimax (loss 1 vs 3 for B and C),
    # Schulze and ranked pairs (lock A>B, B>C, skip C>A -> A>B>C), and Kemeny (reverse only C>A).
    w = {"t1": 3, "t2": 2, "t3": 2}
    for rule in ["minimax", "schulze", "ranked_pairs", "kemeny"]:
        assert apply_rule(rule, RPS, w).winners == ["A"], rule
    assert apply_rule("kemeny", RPS, w).groups == [["A"], ["B"], ["C"]]
    assert apply_rule("ranked_pairs", RPS, w).groups == [["A"], ["B"], ["C"]]
    # Borda: A 2*3+0*2+1*2=8, B 1*3+2*2+0*2=7, C 0*3+1*2+2*2=6
    assert apply_rule("borda", RPS, w).groups == [["A"], ["B"], ["C"]]


def test_ties_within_a_task():
    # t1: A = B > C ; t2: C > A > B
    df = table({"A": [2, 2], "B": [2, 1], "C": [1, 3]}).astype(float)
    # Borda, tied systems share their average position: t1 A 1.5, B 1.5, C 0; t2 C 2, A 1, B 0
    assert apply_rule("borda", df).scores == {"A": 2.5, "B": 1.5, "C": 2.0}
    # plurality splits t1 between A and B: A .5, B .5, C 1
    assert apply_rule("plurality", df).scores == {"A": 0.5, "B": 0.5, "C": 1.0}
    # Dowdall: A,B share positions 1-2 in t1: (1+1/2)/2 = .75 each; C 1/3 + 1; A .75+1/2; B .75+1/3
    d = apply_rule("dowdall", df).scores
    assert (
        d["A"] == pytest.approx(1.25) and d["B"] == pytest.approx(13 / 12) and d["C"] == pytest.approx(4 / 3)
    )
    assert apply_rule("dowdall", df).groups == [["C"], ["A"], ["B"]]
    # weighted median of two equal weights = midpoint: A (2+2)/2, B 1.5, C 2
    assert apply_rule("median", df).groups == [["A", "C"], ["B"]]


# Missing scores:  A: (1, -, 3)  B: (2, 2, 1)  C: (-, 1, 2)
MISSING = table({"A": [1, np.nan, 3], "B": [2, 2, 1], "C": [np.nan, 1, 2]}).astype(float)
# Compared only where both exist: A-B 1:1 (t1 B, t3 A), A-C 1:0 (t3 only), B-C 1:1 (t2 B, t3 C).


def test_missing_scores_pairwise_rules():
    # Copeland: A win + tie = 1.5, B two ties = 1, C loss + tie = .5
    assert apply_rule("copeland", MISSING).groups == [["A"], ["B"], ["C"]]
    # minimax loss: A 0, B 0, C 1 (to A)
    assert apply_rule("minimax", MISSING).groups == [["A", "B"], ["C"]]
    # Kemeny: only A-C is unbalanced; orders with A above C cost 2, others 3, so the optimal orders
    # are A>B>C, A>C>B, B>A>C: A and B are each first in one of them
    assert apply_rule("kemeny", MISSING).groups == [["A", "B"], ["C"]]
    # Schulze: the only positive edge is A->C
    assert apply_rule("schulze", MISSING).groups == [["A", "B"], ["C"]]
    # ranked pairs: lock A>C; the zero-margin pairs can go either way: B>A>C or A>B>C
    assert apply_rule("ranked_pairs", MISSING).groups == [["A", "B"], ["C"]]
    assert apply_rule("condorcet", MISSING).skipped is not None  # A only ties B


def test_missing_scores_positional_rules_skip_with_reason():
    for rule in ["plurality", "borda", "dowdall", "baldwin", "nanson", "black"]:
        rk = apply_rule(rule, MISSING)
        assert rk.skipped and "missing" in rk.skipped and "(A, t2)" in rk.skipped, rule
        assert rk.groups == [] and rk.winners == []
        assert all(math.isnan(v) for v in rk.scores.values())


def test_missing_scores_mean_imputes_task_median():
    # t1 median of {1, 2} = 1.5 fills C; t2 median of {2, 1} = 1.5 fills A
    # A (1+1.5+3)/3 = 1.833, B 5/3 = 1.667, C (1.5+1+2)/3 = 1.5
    rk = apply_rule("mean", MISSING)
    assert rk.groups == [["A"], ["B"], ["C"]]
    assert rk.scores["A"] == pytest.approx(11 / 6)


def test_geometric_mean_skips_nonpositive():
    rk = apply_rule("geometric_mean", table({"A": [1.0, -1.0], "B": [2.0, 1.0]}))
    assert rk.skipped and "t2" in rk.skipped


def test_single_system():
    df = table({"A": [1.0, 2.0]})
    for name, rk in rank_all(df).items():
        assert rk.groups == [["A"]], name


# ---------------------------------------------------------------------------------------------
# Kemeny: exact, and fast
# ---------------------------------------------------------------------------------------------


def _brute_kemeny(n: np.ndarray) -> tuple[float, set[int]]:
    k = n.shape[0]
    best, tops = math.inf, set()
    for perm in itertools.permutations(range(k)):
        cost = sum(n[perm[j], perm[i]] for i in range(k) for j in range(i + 1, k))
        if cost < best - 1e-9:
            best, tops = cost, {perm[0]}
        elif abs(cost - best) <= 1e-9:
            tops.add(perm[0])
    return best, tops


def test_kemeny_matches_brute_force_on_seven_systems():
    rng = np.random.default_rng(7)
    for _ in range(25):
        x = rng.integers(0, 4, size=(7, int(rng.integers(3, 8)))).astype(float)
        x[rng.random(x.shape) < 0.1] = np.nan
        w = rng.choice([0.5, 1.0, 2.0], size=x.shape[1])
        df = pd.DataFrame(x, index=[f"s{i}" for i in range(7)], columns=[f"t{j}" for j in range(x.shape[1])])
        weights = dict(zip(df.columns, w))
        n = pairwise_matrix(df, weights).to_numpy()
        best, tops = _brute_kemeny(n)
        rk = apply_rule("kemeny", df, weights)
        assert set(rk.winners) == {f"s{i}" for i in tops}
        order = [int(s[1:]) for g in rk.groups for s in g]
        if len(rk.groups[0]) == 1:  # a full optimal order was returned: its cost is optimal
            cost = sum(n[order[j], order[i]] for i in range(7) for j in range(i + 1, 7))
            assert cost == pytest.approx(best)


def _subset_dp_kemeny(n: np.ndarray) -> tuple[float, set[int]]:
    """Exact Kemeny by dynamic programming over subsets (Held-Karp style), an independent reference:
    f[S] = least disagreement inside S when S holds the top |S| places; c can come first iff its
    cost of being first plus the optimum of the rest equals the optimum."""
    k = n.shape[0]
    f = [math.inf] * (1 << k)
    f[0] = 0.0
    for s in range(1 << k):
        if f[s] == math.inf:
            continue
        members = [a for a in range(k) if s >> a & 1]
        for c in range(k):
            if not s >> c & 1:  # c goes right below S: voters preferring c to a member disagree
                cost = f[s] + sum(n[c, a] for a in members)
                f[s | 1 << c] = min(f[s | 1 << c], cost)
    full = (1 << k) - 1
    best = f[full]
    tops = {c for c in range(k) if abs(sum(n[b, c] for b in range(k) if b != c) + f[full & ~(1 << c)] - best) <= 1e-9}
    return best, tops


def test_kemeny_matches_subset_dp_on_twelve_systems():
    rng = np.random.default_rng(12)
    for trial in range(6):
        x = rng.random((12, 9)) if trial % 2 else rng.integers(0, 4, (12, 9)).astype(float)
        df = pd.DataFrame(x, index=[f"s{i}" for i in range(12)], columns=[f"t{j}" for j in range(9)])
        n = pairwise_matrix(df).to_numpy()
        best, tops = _subset_dp_kemeny(n)
        rk = apply_rule("kemeny", df)
        assert set(rk.winners) == {f"s{i}" for i in tops}
        order = [int(s[1:]) for g in rk.groups for s in g]
        if len(rk.groups[0]) == 1:
            assert sum(n[order[j], order[i]] for i in range(12) for j in range(i + 1, 12)) == pytest.approx(best)


# ---------------------------------------------------------------------------------------------
# Batch forms (the bootstrap's vectorised path) give exactly what each rule gives per table
# ---------------------------------------------------------------------------------------------

BATCHED = [r for r in RULES if RULES[r].batch is not None]


def _replicates(rng: np.random.Generator, trial: int) -> tuple[np.ndarray, np.ndarray]:
    """B replicate tables sharing their missing cells: ties (few levels), dyadic or unit weights."""
    n, t, b = int(rng.integers(1, 8)), int(rng.integers(1, 6)), 12
    kind = trial % 3
    if kind == 0:
        x = rng.integers(0, 3, (b, n, t)).astype(float)
    elif kind == 1:
        x = rng.normal(size=(b, n, t))
    else:
        x = rng.integers(1, 5, (b, n, t)).astype(float) / 4
    if trial % 4 == 0 and n > 1:
        x[:, rng.random((n, t)) < 0.2] = np.nan
    w = rng.choice([0.5, 1.0, 2.0], t) if trial % 2 else np.ones(t)
    return x, w


def test_batch_forms_cover_all_but_the_search_rules():
    assert set(RULES) - set(BATCHED) == {"kemeny", "ranked_pairs"}


@pytest.mark.parametrize("rule", BATCHED)
def test_batch_form_equals_the_rule_on_every_replicate(rule):
    from harness.leaderboard.stats import rank_positions

    rng = np.random.default_rng(sum(map(ord, rule)))
    for trial in range(120):
        x, w = _replicates(rng, trial)
        names = [f"s{i}" for i in range(x.shape[1])]
        cols = [f"t{j}" for j in range(x.shape[2])]
        got = RULES[rule].batch(R.BatchProfile(names, cols, x, w))
        for b in range(len(x)):
            want = RULES[rule].fn(R.Profile(names, cols, x[b], w))
            assert bool(got.valid[b]) == (want.skipped is None), (trial, b)
            if want.skipped is not None:
                assert np.isnan(got.positions[b]).all() and not got.winners[b].any()
                continue
            pos = rank_positions(want)
            assert got.positions[b].tolist() == [pos[s] for s in names], (trial, b)
            assert got.winners[b].tolist() == [s in want.winners for s in names], (trial, b)


def test_batch_profile_rejects_replicates_with_different_missing_cells():
    x = np.ones((2, 2, 2))
    x[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="same cells"):
        R.BatchProfile(["a", "b"], ["t0", "t1"], x, np.ones(2))


# ---------------------------------------------------------------------------------------------
# Oracle: pref_voting (winner sets on >= 1000 random profiles with ties and multiplicities)
# ---------------------------------------------------------------------------------------------


def _random_profile(rng: np.random.Generator, nmin: int, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(nmin, nmax + 1))
    t = int(rng.integers(3, 10))
    levels = int(rng.integers(2, n + 2))  # few levels -> many ties inside a task
    return rng.integers(0, levels, size=(n, t)).astype(float), rng.integers(1, 4, size=t)


def _ours(x: np.ndarray, w: np.ndarray, rules: list[str]) -> dict[str, list[int]]:
    df = pd.DataFrame(
        x, index=[str(i) for i in range(x.shape[0])], columns=[f"t{j}" for j in range(x.shape[1])]
    )
    res = rank_all(df, dict(zip(df.columns, w.astype(float))), rules)
    return {r: sorted(int(s) for s in rk.winners) for r, rk in res.items()}


def _linear_expansion(x: np.ndarray, w: np.ndarray):
    """A linear-order Profile equivalent to the weak orders: each task is replaced by all of its
    tie-breakings, equally weighted (multiplicities scaled by an lcm to stay integers). Averaged
    positions (our tie convention) equal the Borda scores of this expansion on every subset of
    systems, and margins scale uniformly, so Baldwin / Nanson / Black winners must coincide."""
    from pref_voting.profiles import Profile

    n, t = x.shape
    per_task = []
    for j in range(t):
        levels = sorted(set(x[:, j]), reverse=True)
        groups = [[c for c in range(n) if x[c, j] == v] for v in levels]
        per_task.append([sum(p, ()) for p in itertools.product(*[itertools.permutations(g) for g in groups])])
    lcm = math.lcm(*[len(e) for e in per_task])
    rankings, counts = [], []
    for j, exts in enumerate(per_task):
        for e in exts:
            rankings.append(list(e))
            counts.append(int(w[j]) * lcm // len(exts))
    return Profile(rankings, rcounts=counts)


def test_winner_sets_match_pref_voting():
    pv = pytest.importorskip("pref_voting")
    from pref_voting import voting_methods as vm
    from pref_voting.profiles_with_ties import ProfileWithTies

    assert pv is not None
    # Tie conventions aligned with pref_voting (and the standard definitions):
    # borda = average positions (pref_voting: symmetric Borda, an affine image); copeland = wins-losses;
    # minimax and schulze (beat_path) on margins; kemeny_young winners = first in SOME optimal order;
    # ranked_pairs = parallel-universe tie-breaking (pref_voting's default `ranked_pairs`, checked
    # with its independent 'from_stacks' algorithm); baldwin = drop all lowest at once;
    # nanson = strict_nanson (drop strictly below average); black = blacks.
    with_ties = {
        "borda": vm.borda,
        "copeland": vm.copeland,
        "minimax": vm.minimax,
        "kemeny": vm.kemeny_young,
        "schulze": vm.beat_path,
        "ranked_pairs": lambda p: vm.ranked_pairs(p, algorithm="from_stacks"),
    }
    linear_only = {"baldwin": vm.baldwin, "nanson": vm.strict_nanson, "black": vm.blacks}
    rng = np.random.default_rng(2024)
    checked = {r: 0 for r in [*with_ties, *linear_only]}
    mismatches: list[str] = []
    for _ in range(1000):
        x, w = _random_profile(rng, 3, 6)
        n = x.shape[0]
        ours = _ours(x, w, list(checked))
        prof = ProfileWithTies(
            [{c: -x[c, j] for c in range(n)} for j in range(x.shape[1])],
            rcounts=[int(v) for v in w],
            candidates=list(range(n)),
        )
        for r, fn in with_ties.items():
            if sorted(fn(prof)) != ours[r]:
                mismatches.append(f"{r}: {sorted(fn(prof))} vs ours {ours[r]} on {x.tolist()} w={w.tolist()}")
            checked[r] += 1
        if n <= 5:  # the tie expansion grows factorially; 5 systems keep it small
            lin = _linear_expansion(x, w)
            for r, fn in linear_only.items():
                if sorted(fn(lin)) != ours[r]:
                    mismatches.append(
                        f"{r}: {sorted(fn(lin))} vs ours {ours[r]} on {x.tolist()} w={w.tolist()}"
                    )
                checked[r] += 1
    # Top the elimination rules up to 1,000 profiles too, on 3-5 systems (expansion stays small).
    while min(checked[r] for r in linear_only) < 1000:
        x, w = _random_profile(rng, 3, 5)
        ours = _ours(x, w, list(linear_only))
        lin = _linear_expansion(x, w)
        for r, fn in linear_only.items():
            if sorted(fn(lin)) != ours[r]:
                mismatches.append(f"{r}: {sorted(fn(lin))} vs ours {ours[r]} on {x.tolist()} w={w.tolist()}")
            checked[r] += 1
    assert not mismatches, mismatches[:5]
    assert min(checked[r] for r in checked) >= 1000


def test_pairwise_winner_sets_match_pref_voting_with_missing_scores():
    pytest.importorskip("pref_voting")
    from pref_voting import voting_methods as vm
    from pref_voting.profiles_with_ties import ProfileWithTies

    # a missing score = the system is unranked by that task; pref_voting then leaves the pair
    # uncompared, exactly our convention
    methods = {
        "copeland": vm.copeland,
        "minimax": vm.minimax,
        "kemeny": vm.kemeny_young,
        "schulze": vm.beat_path,
        "ranked_pairs": lambda p: vm.ranked_pairs(p, algorithm="from_stacks"),
    }
    rng = np.random.default_rng(99)
    for _ in range(300):
        x, w = _random_profile(rng, 3, 6)
        x[rng.random(x.shape) < 0.2] = np.nan
        n = x.shape[0]
        prof = ProfileWithTies(
            [{c: -x[c, j] for c in range(n) if not np.isnan(x[c, j])} for j in range(x.shape[1])],
            rcounts=[int(v) for v in w],
            candidates=list(range(n)),
        )
        ours = _ours(x, w, list(methods))
        for r, fn in methods.items():
            assert sorted(fn(prof)) == ours[r], (r, x.tolist(), w.tolist())
        cw = prof.condorcet_winner()
        df = pd.DataFrame(x, index=[str(i) for i in range(n)])
        df.columns = [f"t{j}" for j in range(x.shape[1])]
        assert condorcet_winner(df, dict(zip(df.columns, w.astype(float)))) == (
            None if cw is None else str(cw)
        )
