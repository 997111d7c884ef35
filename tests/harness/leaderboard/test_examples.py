"""Example-level statistics against brute force on small random cases, and against scipy."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.leaderboard.examples import (
    cell_intervals,
    mcnemar,
    paired_permutation,
    percentile_interval,
    sign_flip_pvalues,
    two_level_bootstrap,
)


def _explicit_bootstrap(bits_per_seed: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The definition, spelled out: draw seeds, then each drawn seed's examples, by index."""
    out = np.empty(n_boot)
    for b in range(n_boot):
        seeds = rng.integers(0, len(bits_per_seed), len(bits_per_seed))
        out[b] = np.mean([bits_per_seed[s][rng.integers(0, len(bits_per_seed[s]), len(bits_per_seed[s]))].mean()
                          for s in seeds])
    return out


def test_one_seed_bootstrap_matches_the_enumerated_distribution() -> None:
    """n = 4 examples, 3 right: all 4^4 resamples enumerated give the exact distribution of the mean."""
    bits = np.array([1, 1, 0, 1])
    exact = pd.Series([bits[list(idx)].mean() for idx in itertools.product(range(4), repeat=4)]).value_counts(
        normalize=True)
    reps = two_level_bootstrap([4], [3], n_boot=40_000, rng=np.random.default_rng(0))
    got = pd.Series(reps).value_counts(normalize=True).reindex(exact.index, fill_value=0.0)
    assert set(np.unique(reps)) <= set(exact.index)
    np.testing.assert_allclose(got.to_numpy(), exact.to_numpy(), atol=0.01)


@pytest.mark.parametrize("case", range(4))
def test_two_level_bootstrap_matches_resampling_the_bits(case: int) -> None:
    rng = np.random.default_rng(case)
    n_seeds = int(rng.integers(1, 4))
    bits = [(rng.random(int(rng.integers(5, 40))) < rng.uniform(0.2, 0.9)).astype(int) for _ in range(n_seeds)]
    fast = two_level_bootstrap([len(b) for b in bits], [b.sum() for b in bits], n_boot=20_000,
                               rng=np.random.default_rng(100 + case))
    slow = _explicit_bootstrap(bits, 20_000, np.random.default_rng(200 + case))
    assert abs(fast.mean() - slow.mean()) < 0.01 and abs(fast.std() - slow.std()) < 0.01
    for q in (2.5, 50, 97.5):
        assert abs(np.percentile(fast, q) - np.percentile(slow, q)) <= 0.04


def test_cell_intervals_cover_the_mean_and_skip_cells_without_outcomes() -> None:
    samples = pd.DataFrame({"method": ["a", "a", "b", "c"], "task": ["t"] * 4, "seed": [0, 1, 0, 0],
                            "value": [0.7, 0.8, 0.5, 0.6], "n_outcomes": [100.0, 100.0, 200.0, np.nan],
                            "outcome_sum": [70.0, 80.0, 100.0, np.nan]})
    ci = cell_intervals(samples).set_index("method")
    assert list(ci.index) == ["a", "b"]   # c has no outcomes
    assert ci.loc["a", "lo"] < 0.75 < ci.loc["a", "hi"] and ci.loc["b", "lo"] < 0.5 < ci.loc["b", "hi"]
    # the binomial standard error of 200 examples at p = 0.5 is 0.035: the interval is about ±0.07
    assert ci.loc["b", "hi"] - ci.loc["b", "lo"] == pytest.approx(4 * 0.035355, abs=0.02)
    assert ci.loc["a", "n_runs"] == 2 and ci.loc["a", "n_examples"] == 200
    again = cell_intervals(samples)
    pd.testing.assert_frame_equal(again.set_index("method"), ci)   # deterministic


def _brute_mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """Every way the discordant examples could have split between a and b, equally likely under H0."""
    m = int((a != b).sum())
    observed = abs(int((a & ~b).sum()) - int((~a & b).sum()))
    if m == 0:
        return 1.0
    splits = [abs(2 * sum(bits) - m) for bits in itertools.product((0, 1), repeat=m)]
    return float(np.mean([s >= observed for s in splits]))


@pytest.mark.parametrize("case", range(12))
def test_mcnemar_matches_brute_force_and_scipy(case: int) -> None:
    rng = np.random.default_rng(case)
    n = int(rng.integers(3, 14))
    a = rng.random(n) < rng.uniform(0.2, 0.9)
    b = rng.random(n) < rng.uniform(0.2, 0.9)
    res = mcnemar(a, b)
    assert res.pvalue == pytest.approx(_brute_mcnemar(a, b), abs=1e-12)
    if res.a_only + res.b_only:
        assert res.pvalue == pytest.approx(stats.binomtest(res.a_only, res.a_only + res.b_only).pvalue)
    assert res.diff == pytest.approx(a.mean() - b.mean())


def test_mcnemar_finds_a_clear_difference_with_one_seed() -> None:
    a = np.r_[np.ones(180), np.zeros(20)].astype(int)
    b = np.r_[np.ones(120), np.zeros(80)].astype(int)
    assert mcnemar(a, b).pvalue < 1e-10 and mcnemar(a, a).pvalue == 1.0
    with pytest.raises(ValueError, match="same examples"):
        mcnemar(a, b[:-1])


def _brute_permutation(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    observed = abs(d.sum())
    flips = [abs(sum(s * x for s, x in zip(signs, d))) for signs in itertools.product((-1, 1), repeat=len(d))]
    return float(np.mean([f >= observed - 1e-9 for f in flips]))


@pytest.mark.parametrize("case", range(10))
def test_paired_permutation_matches_brute_force_and_scipy(case: int) -> None:
    rng = np.random.default_rng(case)
    n = int(rng.integers(2, 11))
    a, b = rng.normal(0.3, 1, n).round(2), rng.normal(0, 1, n).round(2)
    res = paired_permutation(a, b)
    assert res.pvalue == pytest.approx(_brute_permutation(a, b), abs=1e-12)
    ref = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                                 n_resamples=np.inf, alternative="two-sided")
    assert res.pvalue == pytest.approx(min(1.0, ref.pvalue), abs=1e-9)


def test_paired_permutation_monte_carlo_on_many_examples() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.8
    b = rng.random(500) < 0.6
    res = paired_permutation(a, b, n_perm=5000)
    assert 0 < res.pvalue < 1e-3
    null = paired_permutation(a, a.copy())
    assert null.pvalue == 1.0


def test_percentile_interval() -> None:
    assert percentile_interval(np.arange(1001) / 1000) == pytest.approx((0.025, 0.975))


def test_cell_intervals_match_the_explicit_two_level_bootstrap() -> None:
    """All cells at once (the board's path) against the definition, cell by cell, on random cells."""
    rng = np.random.default_rng(11)
    rows, bits = [], {}
    for m in ("a", "b"):
        for t in ("t1", "t2"):
            seeds = int(rng.integers(1, 4))
            bits[m, t] = [(rng.random(int(rng.integers(20, 60))) < rng.uniform(0.3, 0.9)).astype(int)
                          for _ in range(seeds)]
            rows += [(m, t, s, b.mean(), float(len(b)), float(b.sum())) for s, b in enumerate(bits[m, t])]
    samples = pd.DataFrame(rows, columns=["method", "task", "seed", "value", "n_outcomes", "outcome_sum"])
    ci = cell_intervals(samples, n_boot=20_000).set_index(["method", "task"])
    for key, per_seed in bits.items():
        lo, hi = percentile_interval(_explicit_bootstrap(per_seed, 8_000, np.random.default_rng(5)))
        assert ci.loc[key, "lo"] == pytest.approx(lo, abs=0.03) and ci.loc[key, "hi"] == pytest.approx(hi, abs=0.03)
        assert ci.loc[key, "n_runs"] == len(per_seed)


def test_large_cells_use_a_normal_draw_that_matches_the_exact_binomial() -> None:
    """1,000 examples per seed (n·p·(1−p) ≥ 50): the fast path's interval against exact binomial draws."""
    from harness.leaderboard.examples import NORMAL_FROM

    n, k = np.array([1000, 1000, 1000]), np.array([700.0, 720.0, 690.0])
    assert (n * (k / n) * (1 - k / n) >= NORMAL_FROM).all()
    samples = pd.DataFrame({"method": "a", "task": "t", "seed": [0, 1, 2], "value": k / n, "n_outcomes": n * 1.0,
                            "outcome_sum": k})
    ci = cell_intervals(samples, n_boot=40_000).iloc[0]
    exact = two_level_bootstrap(n, k, n_boot=40_000, rng=np.random.default_rng(3))   # numpy's exact binomial
    lo, hi = percentile_interval(exact)
    assert ci["lo"] == pytest.approx(lo, abs=0.002) and ci["hi"] == pytest.approx(hi, abs=0.002)


# --- the board's paired tests ----------------------------------------------------------------------


@pytest.mark.parametrize("case", range(8))
def test_sign_flip_pvalues_exact_rows_match_brute_force_and_scipy(case: int) -> None:
    """Rows with at most 16 nonzero differences are enumerated: the brute-force p of each row, and scipy's
    exact paired permutation test."""
    rng = np.random.default_rng(30 + case)
    n = int(rng.integers(2, 12))
    a, b = rng.integers(0, 4, (3, n)) / 3.0, rng.integers(0, 4, (3, n)) / 3.0   # means over 3 seeds
    p = sign_flip_pvalues(a - b)
    for row in range(3):
        assert p[row] == pytest.approx(_brute_permutation(a[row], b[row]), abs=1e-12)
        ref = stats.permutation_test((a[row], b[row]), lambda x, y, axis: np.mean(x - y, axis=axis),
                                     permutation_type="samples", n_resamples=np.inf, alternative="two-sided")
        assert p[row] == pytest.approx(min(1.0, ref.pvalue), abs=1e-9)


def test_sign_flip_pvalues_monte_carlo_agrees_with_scipy() -> None:
    """Many examples: the shared-sign Monte Carlo p against scipy's randomised paired permutation test (both
    estimate the same p; 2,000 flips give a standard error of ~0.011 at p = 0.3)."""
    rng = np.random.default_rng(4)
    a = (rng.random((4, 300)) < np.array([[0.70], [0.72], [0.75], [0.80]])).astype(float)
    b = (rng.random((4, 300)) < 0.70).astype(float)
    p = sign_flip_pvalues(a - b, n_perm=2000, rng_seed=1)
    for row in range(4):
        ref = stats.permutation_test((a[row], b[row]), lambda x, y, axis: np.mean(x - y, axis=axis),
                                     permutation_type="samples", n_resamples=20_000, alternative="two-sided",
                                     random_state=row)
        assert p[row] == pytest.approx(ref.pvalue, abs=max(0.04, 0.25 * ref.pvalue))
    assert sign_flip_pvalues(np.zeros((1, 300)))[0] == 1.0
    again = sign_flip_pvalues(a - b, n_perm=2000, rng_seed=1)
    np.testing.assert_array_equal(p, again)   # a pure function of the seed


def _outcomes(bits: np.ndarray):  # type: ignore[no-untyped-def]
    from harness.outcomes import Outcomes

    return Outcomes("correct", "accuracy", np.asarray(bits, dtype=np.uint8))


@pytest.mark.parametrize("case", range(6))
def test_board_paired_tests_match_the_definition_on_small_random_boards(case: int) -> None:
    """Random small boards (1-2 seeds, 10 examples): every test is McNemar on the bits (one seed each) or the
    brute-force sign-flip p of the per-example means over seeds; cells missing a run's outcomes are untested."""
    from harness.leaderboard.examples import board_paired_tests

    rng = np.random.default_rng(50 + case)
    n = 10
    rows, outcomes, bits = [], {}, {}
    for m in ("ref", "x", "y"):
        for t in ("t1", "t2"):
            for seed in range(int(rng.integers(1, 3))):
                b = (rng.random(n) < rng.uniform(0.3, 0.9)).astype(int)
                rows.append((m, t, seed, b.mean()))
                outcomes[m, t, seed] = _outcomes(b)
                bits.setdefault((m, t), []).append(b)
    rows.append(("z", "t1", 0, 0.5))   # z has no outcomes on t1: not tested there
    samples = pd.DataFrame(rows, columns=["method", "task", "seed", "value"])
    tests = board_paired_tests(samples, outcomes, "ref")
    assert set(tests) == {"t1", "t2"} and all(set(per) == {"x", "y"} for per in tests.values())
    for t, per in tests.items():
        for m, got in per.items():
            ra, rb = bits["ref", t], bits[m, t]
            if len(ra) == len(rb) == 1:
                assert got.test == "mcnemar"
                assert got.pvalue == pytest.approx(_brute_mcnemar(ra[0].astype(bool), rb[0].astype(bool)))
            else:
                assert got.test == "paired_permutation"
                assert got.pvalue == pytest.approx(_brute_permutation(np.mean(ra, axis=0), np.mean(rb, axis=0)),
                                                   abs=1e-12)
            assert got.diff == pytest.approx(np.mean(ra) - np.mean(rb)) and got.n == n


def test_board_paired_tests_skip_mismatched_sets_and_compare_regression_errors() -> None:
    from harness.leaderboard.examples import board_paired_tests
    from harness.outcomes import Outcomes

    ref = np.linspace(0, 5, 40)
    good = Outcomes("prediction", "pearson", ref + 0.1, ref)
    bad = Outcomes("prediction", "pearson", ref + np.where(np.arange(40) % 2, 1.0, -1.0), ref)
    short = _outcomes(np.ones(30))
    samples = pd.DataFrame({"method": ["a", "b", "a", "c"], "task": ["reg", "reg", "cls", "cls"], "seed": 0,
                            "value": [0.9, 0.5, 0.8, 0.7]})
    tests = board_paired_tests(samples, {("a", "reg", 0): good, ("b", "reg", 0): bad,
                                         ("a", "cls", 0): _outcomes(np.ones(40)), ("c", "cls", 0): short}, "a")
    assert set(tests) == {"reg"}   # cls: 40 vs 30 examples are not the same examples
    got = tests["reg"]["b"]
    assert got.test == "paired_permutation" and got.diff == pytest.approx(0.9) and got.pvalue < 0.001


# --- intervals of Matthews, F1 and correlations -------------------------------------------------


def test_confusion_metrics_match_tasks_metrics_on_explicit_resamples() -> None:
    """Each replicate's confusion matrix, expanded back into examples, scores as tasks.metrics does."""
    from harness.leaderboard.examples import confusion_metric
    from tasks.metrics import accuracy, f1, matthews

    rng = np.random.default_rng(0)
    labels = [0, 1, 2]
    for _ in range(30):
        conf = rng.integers(0, 6, (3, 3))
        if rng.random() < 0.3:
            conf[:, 1] = 0    # a class never predicted: degenerate denominators
        gold = [g for g in range(3) for p in range(3) for _ in range(conf[g, p])]
        pred = [p for g in range(3) for p in range(3) for _ in range(conf[g, p])]
        if not gold:
            continue
        for name, fn in (("matthews", matthews), ("f1", f1), ("accuracy", accuracy)):
            assert confusion_metric(name, conf, labels) == pytest.approx(fn(pred, gold), abs=1e-12), name


def test_correlation_matches_tasks_metrics() -> None:
    from harness.leaderboard.examples import correlation
    from tasks.metrics import pearson, spearman

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 40)).round(1), rng.normal(size=(5, 40)).round(1)
    for i in range(5):
        assert correlation("pearson", x[i], y[i]) == pytest.approx(pearson(list(x[i]), list(y[i])))
        assert correlation("spearman", x[i], y[i]) == pytest.approx(spearman(list(x[i]), list(y[i])))
    assert np.isnan(correlation("pearson", np.ones(5), np.arange(5.0)))


def _explicit_metric_bootstrap(runs: list[tuple[np.ndarray, np.ndarray]], fn, n_boot: int,  # type: ignore[no-untyped-def]
                               rng: np.random.Generator) -> np.ndarray:
    """The definition: draw seeds, then each drawn seed's examples by index, score with tasks.metrics."""
    out = np.empty(n_boot)
    for b in range(n_boot):
        vals = []
        for s in rng.integers(0, len(runs), len(runs)):
            pred, gold = runs[s]
            idx = rng.integers(0, len(gold), len(gold))
            vals.append(fn(list(pred[idx]), list(gold[idx])))
        out[b] = np.mean(vals)
    return out


@pytest.mark.parametrize("metric", ["matthews", "f1", "pearson"])
def test_metric_intervals_match_the_explicit_bootstrap(metric: str) -> None:
    from harness.leaderboard.examples import metric_intervals
    from harness.outcomes import Outcomes
    from tasks.metrics import METRICS

    rng = np.random.default_rng(7)
    runs, outs, rows = [], {}, []
    for seed in range(3):
        if metric == "pearson":
            gold = rng.normal(size=150)
            pred = gold + rng.normal(scale=0.8 + 0.2 * seed, size=150)
            outs["m", "t", seed] = Outcomes("prediction", metric, pred, gold)
        else:
            gold = rng.integers(0, 2, 150)
            pred = np.where(rng.random(150) < 0.75 + 0.05 * seed, gold, 1 - gold)
            outs["m", "t", seed] = Outcomes("label", metric, pred, gold)
        runs.append((pred, gold))
        rows.append(("m", "t", seed))
    samples = pd.DataFrame(rows, columns=["method", "task", "seed"])
    got = metric_intervals(samples, outs, {"t": metric}, n_boot=4000, rng_seed=3).iloc[0]
    lo, hi = percentile_interval(_explicit_metric_bootstrap(runs, METRICS[metric], 1500, np.random.default_rng(9)))
    width = hi - lo
    assert got["lo"] == pytest.approx(lo, abs=0.12 * width) and got["hi"] == pytest.approx(hi, abs=0.12 * width)
    assert (got["n_runs"], got["n_examples"]) == (3, 450)
    # a cell missing one run's outcomes gets no interval over examples
    del outs["m", "t", 2]
    assert metric_intervals(samples, outs, {"t": metric}).empty


def test_vectorised_mcnemar_equals_scipy_binomtest_on_a_grid() -> None:
    from harness.leaderboard.examples import mcnemar_pvalues

    a = np.array([0, 0, 1, 3, 5, 7, 10, 40, 41, 200, 480, 1000, 3])
    b = np.array([0, 4, 1, 9, 5, 2, 31, 60, 40, 260, 520, 1100, 0])
    got = mcnemar_pvalues(a, b)
    for x, y, p in zip(a, b, got):
        want = 1.0 if x + y == 0 else stats.binomtest(int(x), int(x + y), 0.5).pvalue
        assert p == pytest.approx(want, rel=1e-9, abs=1e-300), (x, y)
