"""The two-level instance ranking (Colombo et al., NeurIPS 2022) against its definition on small random
cases, against the authors' tie-breaking formula on tie-free scores, on a hand-computed example with
ties (right/wrong outcomes), and on a board."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from harness.leaderboard.instance import borda_points, instance_ranking, two_level
from harness.outcomes import Outcomes


@pytest.mark.parametrize("case", range(6))
def test_borda_points_are_average_positions(case: int) -> None:
    rng = np.random.default_rng(case)
    x = rng.integers(0, 3, (7, int(rng.integers(2, 6)))).astype(float)   # many ties
    pts = borda_points(x)
    for row, got in zip(x, pts):
        # brute force: each other system strictly below counts 1, tied counts 1/2
        want = [sum(1.0 if row[i] > row[j] else 0.5 if row[i] == row[j] else 0.0
                    for j in range(len(row)) if j != i) for i in range(len(row))]
        np.testing.assert_allclose(got, want)
        np.testing.assert_allclose(got, rankdata(row, method="average") - 1)


@pytest.mark.parametrize("case", range(6))
def test_two_level_matches_the_definition(case: int) -> None:
    rng = np.random.default_rng(10 + case)
    m = int(rng.integers(2, 6))
    per_task = {f"t{k}": rng.integers(0, 4, (int(rng.integers(3, 12)), m)) / 3.0 for k in range(3)}
    overall, counts = two_level(per_task)
    want_total = np.zeros(m)
    for t, x in per_task.items():
        count = np.sum([rankdata(row, method="average") - 1 for row in x], axis=0)
        np.testing.assert_allclose(counts[t], count)
        want_total += rankdata(count, method="average") - 1
    np.testing.assert_allclose(overall, want_total)


def test_tie_free_scores_give_the_authors_scores() -> None:
    """Without ties (per example, and among the task counts), average positions and a tie-breaking argsort
    give the same ranks, so the overall scores are those of their two_levels_aggregation: the sum over
    tasks of the rank of the summed per-example ranks."""
    rng = np.random.default_rng(1)   # a draw whose task counts have no tie
    per_task = {f"t{k}": rng.normal(size=(25, 6)) + rng.permutation(6) * 0.4 for k in range(4)}
    overall, counts = two_level(per_task)

    def ranks(v: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(v, kind="stable"), kind="stable")

    level1 = {t: np.sum([ranks(row) for row in x], axis=0) for t, x in per_task.items()}
    assert all(len(set(c.tolist())) == len(c) for c in level1.values())   # the premise: no tie
    for t in per_task:
        np.testing.assert_array_equal(counts[t], level1[t])
    np.testing.assert_array_equal(overall, sum(ranks(c) for c in level1.values()))


def test_one_seed_right_wrong_orders_a_task_by_accuracy() -> None:
    rng = np.random.default_rng(5)
    bits = (rng.random((200, 5)) < np.array([0.5, 0.6, 0.7, 0.65, 0.55])).astype(float)
    _, counts = two_level({"t": bits})
    n = bits.shape[1]
    base = counts["t"] - n / 2 * bits.sum(axis=0)   # the same for every method
    np.testing.assert_allclose(base, base[0])


def _outcomes(bits: np.ndarray) -> Outcomes:
    return Outcomes("correct", "accuracy", np.asarray(bits, dtype=np.uint8))


def test_instance_ranking_on_runs_and_its_skips() -> None:
    rng = np.random.default_rng(8)
    rows, outs, means = [], {}, {}
    for m, p in (("a", 0.8), ("b", 0.6), ("c", 0.5)):
        for t in ("t1", "t2"):
            bits = [(rng.random(30) < p).astype(int) for _ in range(2)]
            for seed, b in enumerate(bits):
                rows.append((m, t, seed))
                outs[m, t, seed] = _outcomes(b)
            means[m, t] = np.mean(bits, axis=0)
    samples = pd.DataFrame(rows, columns=["method", "task", "seed"])
    ranking, counts = instance_ranking(samples, outs, ["a", "b", "c"], ["t1", "t2"])
    overall, want = two_level({t: np.stack([means[m, t] for m in "abc"], axis=1) for t in ("t1", "t2")})
    assert ranking.skipped is None and ranking.scores == dict(zip("abc", overall.tolist()))
    assert counts["t1"] == dict(zip("abc", want["t1"].tolist()))
    assert ranking.winners == ["a"]

    del outs["c", "t2", 1]
    skipped, _ = instance_ranking(samples, outs, ["a", "b", "c"], ["t1", "t2"])
    assert skipped.skipped and "(c, t2, seed 1)" in skipped.skipped and skipped.groups == []
    outs["c", "t2", 1] = _outcomes(np.ones(29))
    short, _ = instance_ranking(samples, outs, ["a", "b", "c"], ["t1", "t2"])
    assert short.skipped and "not the same examples" in short.skipped


# A hand-computed example with ties: right (1) / wrong (0) outcomes of three methods a, b, c (columns,
# in table order) on the examples (rows) of two tasks. Accuracy: t1 a 3/4, b 3/4, c 2/4; t2 a 2/3,
# b 1/3, c 2/3 — a is never behind on either task.
T1 = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=float)
T2 = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 1]], dtype=float)


def _table_order_ranks(v: np.ndarray) -> np.ndarray:
    """0-based ranks, higher is better, ties broken by table order (the earlier one ranked lower): the
    authors' double argsort where their sort happens to be stable."""
    return np.argsort(np.argsort(v, kind="stable"), kind="stable")


def test_ties_share_their_average_position_at_both_levels() -> None:
    overall, counts = two_level({"t1": T1, "t2": T2})
    # Level 1, points = methods strictly below + 1/2 per method tied. t1: the rows give (1.5, 1.5, 0),
    # (1.5, 1.5, 0), (1.5, 0, 1.5), (0, 1.5, 1.5); t2: (2, .5, .5), (1.5, 0, 1.5), (0, 1.5, 1.5).
    np.testing.assert_array_equal(counts["t1"], [4.5, 4.5, 3.0])
    np.testing.assert_array_equal(counts["t2"], [3.5, 2.0, 3.5])
    # Level 2 ranks the task counts the same way: t1 gives (1.5, 1.5, 0), t2 (1.5, 0, 1.5).
    np.testing.assert_array_equal(overall, [3.0, 1.5, 1.5])

    # Breaking ties by table order instead (the authors' code with a stable sort) turns it upside down:
    # t1 counts (3, 5, 4) put c (accuracy 2/4) above a (3/4); t2 counts (3, 1, 5); overall (1, 2, 3),
    # so c wins and a, never behind on any task, comes last.
    by_table = {t: np.sum([_table_order_ranks(row) for row in x], axis=0) for t, x in (("t1", T1), ("t2", T2))}
    np.testing.assert_array_equal(by_table["t1"], [3, 5, 4])
    np.testing.assert_array_equal(by_table["t2"], [3, 1, 5])
    np.testing.assert_array_equal(_table_order_ranks(by_table["t1"]) + _table_order_ranks(by_table["t2"]),
                                  [1, 2, 3])


def test_level_one_is_the_mean_over_tie_breaking_orders_and_the_rule_is_neutral() -> None:
    """Averaged over the 3! table orders, the tie-breaking count is the average-position count; and
    listing the methods in another order only permutes the results (the table-order rule is not)."""
    overall, counts = two_level({"t1": T1, "t2": T2})
    for t, x in (("t1", T1), ("t2", T2)):
        per_order = []
        for order in itertools.permutations(range(3)):
            ranks = np.sum([_table_order_ranks(row[list(order)]) for row in x], axis=0)
            per_order.append(ranks[np.argsort(order)])   # back to a, b, c
        np.testing.assert_allclose(np.mean(per_order, axis=0), counts[t])
    for order in itertools.permutations(range(3)):
        o = list(order)
        overall_p, counts_p = two_level({"t1": T1[:, o], "t2": T2[:, o]})
        np.testing.assert_array_equal(overall_p, overall[o])
        np.testing.assert_array_equal(counts_p["t1"], counts["t1"][o])
    swapped = np.sum([_table_order_ranks(row[[2, 1, 0]]) for row in T1], axis=0)[[2, 1, 0]]
    assert swapped.tolist() != [3, 5, 4]   # the table-order count depends on the listing


def test_instance_ranking_with_ties_on_runs() -> None:
    rows, outs = [], {}
    for j, m in enumerate("abc"):
        for t, x in (("t1", T1), ("t2", T2)):
            rows.append((m, t, 0))
            outs[m, t, 0] = _outcomes(x[:, j])
    samples = pd.DataFrame(rows, columns=["method", "task", "seed"])
    ranking, counts = instance_ranking(samples, outs, ["a", "b", "c"], ["t1", "t2"])
    assert ranking.skipped is None
    assert ranking.scores == {"a": 3.0, "b": 1.5, "c": 1.5}
    assert ranking.groups == [["a"], ["b", "c"]] and ranking.winners == ["a"]
    assert counts == {"t1": {"a": 4.5, "b": 4.5, "c": 3.0}, "t2": {"a": 3.5, "b": 2.0, "c": 3.5}}
