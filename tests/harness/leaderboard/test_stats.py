"""Agreement, bootstrap and Friedman/Nemenyi statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.leaderboard.rules import RULES, Ranking, rank_all
from harness.leaderboard.stats import bootstrap_ranks, friedman_nemenyi, kendall_tau_agreement, rank_positions


def rk(groups: list[list[str]]) -> Ranking:
    return Ranking(groups=groups, scores={s: 0.0 for g in groups for s in g}, winners=groups[0])


def test_rank_positions_are_competition_ranks():
    assert rank_positions(rk([["A", "B"], ["C"], ["D"]])) == {"A": 1, "B": 1, "C": 3, "D": 4}


def test_kendall_tau_agreement():
    rankings = {
        "same1": rk([["A"], ["B"], ["C"], ["D"]]),
        "same2": rk([["A"], ["B"], ["C"], ["D"]]),
        "reverse": rk([["D"], ["C"], ["B"], ["A"]]),
        "tied": rk([["A", "B"], ["C", "D"]]),
        "skipped": Ranking(groups=[], scores={}, winners=[], skipped="no"),
    }
    tau = kendall_tau_agreement(rankings)
    assert list(tau.index) == ["same1", "same2", "reverse", "tied"]  # skipped rule left out
    assert tau.loc["same1", "same2"] == pytest.approx(1.0)
    assert tau.loc["same1", "reverse"] == pytest.approx(-1.0)
    # tau-b against a tied order: 4 concordant, 0 discordant pairs, 6 pairs, 2 ties in one order:
    # tau_b = 4 / sqrt(6 * 4)
    assert tau.loc["same1", "tied"] == pytest.approx(4 / math.sqrt(24))
    assert (tau.to_numpy() == tau.to_numpy().T).all()


def _samples(means: dict[str, float], sd: float, seeds: int, tasks: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (s, f"t{t}", k, m + rng.normal(0, sd))
        for s, m in means.items()
        for t in range(tasks)
        for k in range(seeds)
    ]
    return pd.DataFrame(rows, columns=["method", "task", "seed", "acc"])


COLS = {"system_col": "method", "task_col": "task", "seed_col": "seed", "value_col": "acc"}


def test_kendall_tau_agreement_equals_scipy_on_random_tied_orders():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 9))
        systems = [f"s{i}" for i in range(n)]
        rankings = {}
        for r in range(4):
            level = rng.integers(0, int(rng.integers(1, n + 1)), n)  # few levels: ties; 1 level: all tied
            groups = [[s for s, lv in zip(systems, level) if lv == v] for v in sorted(set(level))]
            rankings[f"r{r}"] = rk(groups)
        tau = kendall_tau_agreement(rankings)
        pos = {k: rank_positions(v) for k, v in rankings.items()}
        for a in rankings:
            for b in rankings:
                x = [pos[a][s] for s in systems]
                y = [pos[b][s] for s in systems]
                want = sps.kendalltau(x, y, variant="b").statistic
                if a == b:
                    want = 1.0 if len(set(x)) > 1 else np.nan
                got = tau.loc[a, b]
                assert (np.isnan(want) and np.isnan(got)) or got == pytest.approx(want, abs=1e-12), (a, b)


def test_bootstrap_clear_winner_is_stable():
    df = _samples({"A": 0.9, "B": 0.6, "C": 0.3}, sd=0.01, seeds=3, tasks=4)
    out = bootstrap_ranks(df, **COLS, rules=["mean", "kemeny"], n_boot=200)
    for r in ("mean", "kemeny"):
        b = out[r]
        assert b.winners == ["A"] and b.p_win["A"] == 1.0 and b.p_win["B"] == 0.0
        assert b.rank_interval == {"A": (1.0, 1.0), "B": (2.0, 2.0), "C": (3.0, 3.0)}
        assert not b.winner_may_change and "stable" in b.summary and b.n_valid == 200


def test_bootstrap_close_race_may_change_winner():
    # A and B are equal in expectation; seed noise decides the winner in each replicate
    df = _samples({"A": 0.70, "B": 0.70, "C": 0.2}, sd=0.05, seeds=5, tasks=3, seed=1)
    out = bootstrap_ranks(df, **COLS, rules=["mean"], n_boot=300, rng_seed=3)
    b = out["mean"]
    assert b.winner_may_change and "could change" in b.summary
    assert 0.05 < b.p_win["A"] < 0.95 and 0.05 < b.p_win["B"] < 0.95
    assert b.p_win["A"] + b.p_win["B"] == pytest.approx(1.0)
    assert b.rank_interval["A"] == (1.0, 2.0) and b.rank_interval["C"] == (3.0, 3.0)
    # reproducible with the same seed
    again = bootstrap_ranks(df, **COLS, rules=["mean"], n_boot=300, rng_seed=3)["mean"]
    assert again.p_win == b.p_win
    assert b.as_dict()["rank_interval"]["A"] == [1.0, 2.0]


def test_bootstrap_resample_tasks_and_weights():
    # A wins t0 by far, B wins t1 and t2 narrowly. Mean: A (0.9+0.5+0.5)/3=.633 vs B (.1+.6+.6)/3=.433
    df = pd.concat(
        [
            _samples({"A": 0.9, "B": 0.1}, 0.001, 2, 1),
            _samples({"A": 0.5, "B": 0.6}, 0.001, 2, 1).assign(task="t1"),
            _samples({"A": 0.5, "B": 0.6}, 0.001, 2, 1).assign(task="t2"),
        ]
    )
    fixed = bootstrap_ranks(df, **COLS, rules=["mean", "borda"], n_boot=100)
    assert fixed["mean"].p_win["A"] == 1.0 and fixed["borda"].p_win["B"] == 1.0
    # resampling tasks: the mean winner flips whenever t0 is not drawn (prob (2/3)^3 ~ .30)
    res = bootstrap_ranks(df, **COLS, rules=["mean"], n_boot=400, resample_tasks=True, rng_seed=1)
    assert 0.15 < res["mean"].p_win["B"] < 0.45 and res["mean"].winner_may_change
    # weight 0 on t0 makes B win every replicate
    w = bootstrap_ranks(df, **COLS, rules=["mean"], weights={"t0": 0.0}, n_boot=50)
    assert w["mean"].winners == ["B"] and w["mean"].p_win["B"] == 1.0


@pytest.mark.parametrize("missing", [False, True])
def test_bootstrap_vectorized_equals_replicate_by_replicate(missing):
    """The batch forms are a speed-up only: every rule's intervals, win shares and summaries match
    the replicate-by-replicate path exactly, ties, weights and missing cells included."""
    rng = np.random.default_rng(5)
    rows = []
    for s in range(6):
        for t in range(5):
            for seed in range(3):
                if missing and (s, t) in {(0, 1), (3, 4)}:
                    continue
                rows.append({"method": f"m{s}", "task": f"t{t}", "seed": seed,
                             "acc": round(0.5 + 0.02 * s + rng.normal(0, 0.03), 2)})  # rounding: ties
    df = pd.DataFrame(rows)
    kw = dict(**COLS, rules=list(RULES), weights={"t0": 2.0, "t2": 0.5, "t3": 0.0}, n_boot=60, rng_seed=9)
    fast = bootstrap_ranks(df, **kw)
    slow = bootstrap_ranks(df, **kw, vectorized=False)
    for r in RULES:
        a, b = fast[r].as_dict(), slow[r].as_dict()
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True), r


def test_bootstrap_input_errors():
    df = _samples({"A": 0.9, "B": 0.6}, 0.01, 2, 2)
    with pytest.raises(KeyError):
        bootstrap_ranks(df, **COLS, rules=["nope"], n_boot=5)
    with pytest.raises(ValueError, match="no column"):
        bootstrap_ranks(df, system_col="x", task_col="task", seed_col="seed", value_col="acc", rules=["mean"])


def test_friedman_nemenyi_against_scipy_and_demsar_table():
    rng = np.random.default_rng(5)
    scores = pd.DataFrame(rng.random((4, 12)), index=list("ABCD"))
    scores.loc["A"] += 1.0  # A best on every task
    out = friedman_nemenyi(scores)
    ref = sps.friedmanchisquare(*[scores.loc[s].to_numpy() for s in "ABCD"])
    assert out["statistic"] == pytest.approx(ref.statistic) and out["pvalue"] == pytest.approx(ref.pvalue)
    # Demsar (2006) Table 5: q_0.05 for k=4 is 2.569; CD = q * sqrt(k(k+1)/(6N))
    assert out["q_alpha"] == pytest.approx(2.569, abs=1e-3)
    assert out["cd"] == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 12)), abs=1e-3)
    assert out["avg_ranks"]["A"] == 1.0 and next(iter(out["avg_ranks"])) == "A"
    assert sum(out["avg_ranks"].values()) == pytest.approx(10.0)  # 1+2+3+4
    for g in out["groups"]:
        ranks = [out["avg_ranks"][s] for s in g]
        assert max(ranks) - min(ranks) < out["cd"]
        assert "A" not in g or len(g) == 1  # A is 1.0; the others average ~3


def test_friedman_nemenyi_cd_groups_hand_example():
    # 3 systems, 6 tasks, no ties: ranks A 1,1,1,1,1,1 ; B 2,2,2,3,3,2 ; C 3,3,3,2,2,3
    scores = pd.DataFrame(
        {
            f"t{i}": col
            for i, col in enumerate([[3, 2, 1], [3, 2, 1], [3, 2, 1], [3, 1, 2], [3, 1, 2], [3, 2, 1]])
        },
        index=list("ABC"),
    ).astype(float)
    out = friedman_nemenyi(scores)
    assert out["avg_ranks"] == {"A": 1.0, "B": pytest.approx(14 / 6), "C": pytest.approx(16 / 6)}
    # q_0.05(k=3) = 2.343; CD = 2.343*sqrt(12/36) = 1.353. A-B differ by 1.333 < CD, B-C by 0.333,
    # A-C by 1.667 >= CD: two overlapping bars, A~B and B~C, while A and C differ significantly
    assert out["cd"] == pytest.approx(1.3527, abs=1e-3)
    assert out["groups"] == [["A", "B"], ["B", "C"]]


def test_friedman_drops_incomplete_tasks_and_needs_three_systems():
    scores = pd.DataFrame(
        {"t1": [1.0, 2.0, 3.0], "t2": [2.0, np.nan, 1.0], "t3": [3.0, 1.0, 2.0]}, index=list("ABC")
    )
    out = friedman_nemenyi(scores)
    assert out["dropped_tasks"] == ["t2"] and "t2" in out["note"] and out["n_tasks"] == 2
    with pytest.raises(ValueError, match=">= 3 systems"):
        friedman_nemenyi(scores.iloc[:2])


def test_agreement_on_real_rankings():
    df = pd.DataFrame(np.random.default_rng(0).random((6, 5)), index=list("ABCDEF"))
    df.columns = [f"t{i}" for i in range(5)]
    tau = kendall_tau_agreement(rank_all(df, rules=["borda", "black", "kemeny", "mean"]))
    assert tau.shape == (4, 4) and np.allclose(np.diag(tau), 1.0)
    assert ((tau.to_numpy() >= -1) & (tau.to_numpy() <= 1)).all()
