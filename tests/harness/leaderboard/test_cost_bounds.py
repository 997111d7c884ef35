"""Every rule's cost stays bounded at leaderboard scale, whatever the ties (issue #18).

The committed zoo_decoder board has 71 methods on one task, 32 of them tied at exactly 0.700: ranked
pairs' parallel-universe search ran for minutes there, and exact Kemeny inside a 200-resample bootstrap
of a 67-method board took as long. Here: a 70-method board with a 32-way exact tie, one seed, for every
registered rule (so a new rule is covered as soon as it is registered); the clone reduction that makes
exact ties cheap, against pref_voting; the stated fallbacks past a time budget; the bootstrap's
memo of identical tables and its time share; and how the leaderboard command reports all of it.

No timing is asserted beyond a guard against a runaway (minutes): the benchmarks hold the bars.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import re
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard import report
from harness.leaderboard import rules as R
from harness.leaderboard import stats as S
from harness.leaderboard.rules import RULES, OutOfTime, apply_rule, pairwise_matrix, time_limit
from harness.leaderboard.stats import bootstrap_ranks
from tests.harness.leaderboard.test_report import make_record, write_records

RUNAWAY_S = 120.0  # far above every budget: only a search that ignores its budget gets near it
TIED = [f"m{i:02d}" for i in range(32)]


def tied_board(tasks: int, *, tie_on_top: bool, seed: int = 0) -> pd.DataFrame:
    """70 methods, one seed: 32 of them exact clones (the same score on every task), the others drawn
    at random (ties between them unlikely). With one task and the tie on top it is the zoo_decoder
    board's shape; with several tasks the majority graph is full of cycles."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(0.4, 0.65, (70, tasks)), 4)
    x[:32] = 0.7 if tie_on_top else np.round(rng.uniform(0.4, 0.65, tasks), 4)
    return pd.DataFrame(x, index=[f"m{i:02d}" for i in range(70)], columns=[f"t{j}" for j in range(tasks)])


def _check_complete(rk: R.Ranking, names: list[str]) -> None:
    flat = [s for g in rk.groups for s in g]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert rk.winners == rk.groups[0]


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("tasks", [1, 6])
def test_every_rule_is_bounded_on_a_70_method_board_with_a_32_way_tie(rule: str, tasks: int) -> None:
    df = tied_board(tasks, tie_on_top=tasks == 1)
    t = time.perf_counter()
    rk = apply_rule(rule, df)
    elapsed = time.perf_counter() - t
    assert elapsed < RUNAWAY_S, (rule, elapsed)
    if rk.skipped is not None:
        assert rule == "condorcet" and not rk.groups  # 32 systems tie for first / a cycle: no Condorcet winner
        return
    _check_complete(rk, list(df.index))
    # exact clones are indistinguishable: every rule ranks them in one group
    group = next(g for g in rk.groups if TIED[0] in g)
    assert set(TIED) <= set(group), rule
    if rk.fallback is not None:  # allowed only for a searching rule, and it must say what it did
        assert RULES[rule].timed and "budget" in rk.fallback, (rule, rk.fallback)
    if tasks == 1:
        # one voter: every rule is exact and cheap, and the 32 tied at the top are the winners
        assert rk.fallback is None and sorted(rk.winners) == TIED, rule


def test_ranked_pairs_is_independent_of_exact_clones() -> None:
    """The tied board ranks as the board with one of the clones (Tideman's independence of clones):
    the 31 others join its group, no one else moves. (Kemeny is not independent of clones: a class
    weighs as many times as it has members, see kemeny_rule; the oracle test below covers it.)"""
    df = tied_board(6, tie_on_top=False, seed=1)
    full = apply_rule("ranked_pairs", df)
    reduced = apply_rule("ranked_pairs", df.drop(index=TIED[1:]))
    assert (full.fallback is None) == (reduced.fallback is None)
    expand = [[s for x in g for s in (TIED if x == TIED[0] else [x])] for g in reduced.groups]
    assert full.groups == [sorted(g) for g in expand]


def test_every_rule_declares_its_cost() -> None:
    for name, rl in RULES.items():
        assert rl.cost, name
        if rl.timed:
            assert re.search(r"\d s\b", rl.cost), (name, rl.cost)  # its time budget, in seconds
        else:
            assert "polynomial" in rl.cost, (name, rl.cost)
    assert {r for r, rl in RULES.items() if rl.timed} == {"kemeny", "ranked_pairs"}


# ---------------------------------------------------------------------------------------------
# The clone reduction is exact: pref_voting on the whole profile
# ---------------------------------------------------------------------------------------------


def _profile_with_clones(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, t = int(rng.integers(2, 5)), int(rng.integers(2, 7))
    x = rng.integers(0, int(rng.integers(2, n + 2)), size=(n, t)).astype(float)
    extra = int(rng.integers(1, 7 - n)) if n < 6 else 0
    src = rng.integers(0, n, size=extra)
    return np.vstack([x, x[src]]), rng.integers(1, 4, size=t)


def test_clone_winner_sets_match_pref_voting() -> None:
    """Winner sets of kemeny and ranked_pairs on profiles with planted exact clones (up to 6 systems),
    against pref_voting on the whole profile: a clone class wins whole or not at all, and reducing it to
    one system (weighted by its size for Kemeny) loses no winner and adds none."""
    pytest.importorskip("pref_voting")
    from pref_voting import voting_methods as vm
    from pref_voting.profiles_with_ties import ProfileWithTies

    rng = np.random.default_rng(18)
    oracle = {"kemeny": vm.kemeny_young, "ranked_pairs": lambda p: vm.ranked_pairs(p, algorithm="from_stacks")}
    tied_winners = 0
    for _ in range(200):
        x, w = _profile_with_clones(rng)
        n = x.shape[0]
        df = pd.DataFrame(x, index=[str(i) for i in range(n)], columns=[f"t{j}" for j in range(x.shape[1])])
        weights = dict(zip(df.columns, w.astype(float)))
        prof = ProfileWithTies([{c: -x[c, j] for c in range(n)} for j in range(x.shape[1])],
                               rcounts=[int(v) for v in w], candidates=list(range(n)))
        for rule, fn in oracle.items():
            rk = apply_rule(rule, df, weights)
            assert rk.fallback is None
            ours = sorted(int(s) for s in rk.winners)
            assert ours == sorted(fn(prof)), (rule, x.tolist(), w.tolist())
            classes = {tuple(row) for row in x[ours]}
            tied_winners += any((x == np.array(c)).all(axis=1).sum() > 1 for c in classes)
    assert tied_winners > 50  # the clone path was exercised, with clones among the winners


def test_kemeny_order_with_clones_is_optimal() -> None:
    """The whole order (clones kept together) costs the optimum of the full profile (brute force)."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        x, w = _profile_with_clones(rng)
        n = x.shape[0]
        df = pd.DataFrame(x, index=[f"s{i}" for i in range(n)], columns=[f"t{j}" for j in range(x.shape[1])])
        weights = dict(zip(df.columns, w.astype(float)))
        nm = pairwise_matrix(df, weights).to_numpy()
        best = min(sum(nm[p[j], p[i]] for i in range(n) for j in range(i + 1, n))
                   for p in itertools.permutations(range(n)))
        rk = apply_rule("kemeny", df, weights)
        order = [int(s[1:]) for g in rk.groups for s in g]
        if len(rk.groups[0]) == 1 or len({tuple(r) for r in x[[int(s[1:]) for s in rk.groups[0]]]}) == 1:
            assert sum(nm[order[j], order[i]] for i in range(n) for j in range(i + 1, n)) == pytest.approx(best)


def test_lock_order_runs_equal_one_edge_at_a_time() -> None:
    """The run-at-a-time locking of ranked pairs' fixed tie-break equals locking edge by edge."""

    def one_by_one(n: int, edges: list[tuple[int, int]]) -> list[int]:
        reach = [{i} for i in range(n)]
        for a, b in edges:
            if a in reach[b] or b in reach[a]:
                continue
            for v in range(n):
                if a in reach[v]:
                    reach[v] |= reach[b]
        return sorted(range(n), key=lambda a: -len(reach[a]))

    rng = np.random.default_rng(3)
    for _ in range(300):
        n, t = int(rng.integers(1, 12)), int(rng.integers(1, 6))
        x = rng.integers(0, int(rng.integers(2, 5)), (n, t)).astype(float)
        m = R.profile(pd.DataFrame(x, index=[f"s{i}" for i in range(n)])).margins
        ea, eb = np.nonzero((m >= 0) & ~np.eye(n, dtype=bool))
        tb = rng.permutation(n)
        srt = np.lexsort((tb[eb], tb[ea], -m[ea, eb]))
        edges = list(zip(ea[srt].tolist(), eb[srt].tolist()))
        assert R._lock_order(n, ea[srt], eb[srt], m[ea, eb][srt]) == one_by_one(n, edges)


# ---------------------------------------------------------------------------------------------
# Past a budget: a stated fallback; under a caller's deadline: OutOfTime
# ---------------------------------------------------------------------------------------------


def _cyclic(n: int = 12, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.random((n, 9)), index=[f"s{i}" for i in range(n)], columns=[f"t{j}" for j in range(9)])


def _cost(nm: np.ndarray, groups: list[list[str]]) -> float:
    o = [int(s[1:]) for g in groups for s in g]
    return float(sum(nm[o[j], o[i]] for i in range(len(o)) for j in range(i + 1, len(o))))


def test_searching_rules_fall_back_past_their_budget_and_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _cyclic()
    exact = {r: apply_rule(r, df) for r in ("kemeny", "ranked_pairs")}
    assert all(rk.fallback is None for rk in exact.values())
    monkeypatch.setattr(R, "_KEMENY_MEMO", OrderedDict())  # the exact solve above is memoised
    monkeypatch.setattr(R, "KEMENY_TIME_BUDGET_S", 0.0)
    monkeypatch.setattr(R, "RP_TIME_BUDGET_S", 0.0)
    for rule, ex in exact.items():
        rk = apply_rule(rule, df)
        _check_complete(rk, list(df.index))
        assert rk.fallback and "budget" in rk.fallback, rule
        if rule == "ranked_pairs":  # the winners returned are true winners (a subset of the exact set)
            assert set(rk.winners) <= set(ex.winners) and "incomplete" in rk.fallback
        else:  # the heuristic order is an order; its cost is no better than the optimum
            assert "heuristic" in rk.fallback and len(rk.winners) == 1
            if len(ex.winners) == 1:
                nm = pairwise_matrix(df).to_numpy()
                assert _cost(nm, rk.groups) >= _cost(nm, ex.groups) - 1e-9


def test_time_limit_makes_a_search_raise_out_of_time(monkeypatch: pytest.MonkeyPatch) -> None:
    df = _cyclic(14, seed=8)
    monkeypatch.setattr(R, "_KEMENY_MEMO", OrderedDict())
    for rule in ("kemeny", "ranked_pairs"):
        with pytest.raises(OutOfTime), time_limit(0.0):
            apply_rule(rule, df)
    with time_limit(0.0):  # a polynomial rule never searches: nothing to stop
        assert apply_rule("borda", df).groups
    with time_limit(None):
        assert apply_rule("kemeny", df).fallback is None


# ---------------------------------------------------------------------------------------------
# The bootstrap: identical tables ranked once; a time share per searching rule
# ---------------------------------------------------------------------------------------------


def _samples(seeds: int, *, n: int = 8, tasks: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"method": f"m{i}", "task": f"t{j}", "seed": s, "value": float(rng.random())}
            for i in range(n) for j in range(tasks) for s in range(seeds)]
    return pd.DataFrame(rows)


COLS = {"system_col": "method", "task_col": "task", "seed_col": "seed", "value_col": "value"}


def _counting(monkeypatch: pytest.MonkeyPatch, rule: str) -> list[int]:
    calls: list[int] = []
    fn = RULES[rule].fn

    def counted(p: R.Profile) -> R.Ranking:
        calls.append(1)
        return fn(p)

    monkeypatch.setitem(RULES, rule, R.replace(RULES[rule], fn=counted))
    return calls


def test_bootstrap_ranks_each_distinct_table_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch, "kemeny")
    # one seed per cell: every resample is the point table, ranked once (for the point estimate)
    out = bootstrap_ranks(_samples(1), **COLS, rules=["kemeny", "mean"], n_boot=200)
    assert len(calls) == 1 and out["kemeny"].n_valid == 200
    assert "1 distinct table(s) among 200 resample(s)" in out["kemeny"].note
    assert out["mean"].note is None
    # two seeds: few distinct tables on a tiny board (2 cells × 2^2 draws), each ranked once
    calls.clear()
    df = _samples(2, n=2, tasks=1)
    out = bootstrap_ranks(df, **COLS, rules=["kemeny"], n_boot=200)
    assert out["kemeny"].n_valid == 200 and len(calls) <= 1 + 9
    same = bootstrap_ranks(df, **COLS, rules=["kemeny"], n_boot=200, vectorized=False)
    assert same["kemeny"].as_dict() == out["kemeny"].as_dict()


def test_bootstrap_time_share_stops_a_searching_rule_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "BOOTSTRAP_RULE_BUDGET_S", 0.0)
    out = bootstrap_ranks(_samples(3), **COLS, rules=["ranked_pairs", "borda"], n_boot=50)
    rp = out["ranked_pairs"]
    assert rp.n_valid == 0 and "only 0 of 50 resamples ranked" in rp.summary and "ran out" in rp.note
    assert out["borda"].n_valid == 50 and out["borda"].note is None  # a batch rule is not looped


def test_bootstrap_counts_resamples_ranked_by_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "RP_TIME_BUDGET_S", 0.0)
    df = _samples(2, n=10, tasks=7, seed=2)
    out = bootstrap_ranks(df, **COLS, rules=["ranked_pairs"], n_boot=20)
    rp = out["ranked_pairs"]
    assert "resample(s) ranked by its fallback" in rp.summary  # cyclic resamples search, and stop at once
    assert "the first such: winner set incomplete" in rp.note


# ---------------------------------------------------------------------------------------------
# The command: fallbacks in the board's JSON and Markdown; progress lines; --show
# ---------------------------------------------------------------------------------------------


def _two_boards(results: Path) -> None:
    """A cyclic 12-method glue board (smoke · minilm-l6) and a small gsm8k one (smoke · smollm2-135m)."""
    rng = np.random.default_rng(4)
    recs = [make_record(f"m{i:02d}", f"glue/t{j}", s, float(rng.random()))
            for i in range(12) for j in range(7) for s in range(2)]
    recs += [make_record(m, "gsm8k/gsm8k", 0, v, model="smollm2-135m") for m, v in (("lora", 0.12), ("dora", 0.1))]
    write_records(results, recs)


def _main(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = report.main(args)
    return rc, out.getvalue(), err.getvalue()


def test_leaderboard_states_fallbacks_and_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    _two_boards(results)
    monkeypatch.setattr(R, "_KEMENY_MEMO", OrderedDict())
    monkeypatch.setattr(R, "KEMENY_TIME_BUDGET_S", 0.0)
    monkeypatch.setattr(R, "RP_TIME_BUDGET_S", 0.0)
    out = tmp_path / "lb"
    rc, _, stderr = _main(["--results-dir", str(results), "--out", str(out), "--bootstrap", "20",
                           "--no-wandb", "--jobs", "1", "--no-cache"])
    assert rc == 0, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("[")]
    assert len(lines) == 2 and lines[0].startswith("[1/2] ") and lines[1].startswith("[2/2] ")
    assert all(ln.endswith(" s") and not math.isnan(float(ln.split()[-2])) for ln in lines)
    assert f"2 board(s) written to {out}" in stderr
    import json

    doc = json.loads((out / "smoke__minilm-l6__glue.json").read_text())
    assert set(doc["fallbacks"]) == {"kemeny", "ranked_pairs"}
    for r in ("kemeny", "ranked_pairs"):
        assert doc["rules"][r]["fallback"] == doc["fallbacks"][r] and "budget" in doc["fallbacks"][r]
    assert "fallback" not in doc["rules"]["borda"]
    md = (out / "smoke__minilm-l6__glue.md").read_text()
    assert "- **kemeny**: not exact — " in md and "- **ranked_pairs**: not exact — " in md
    # the board read back from its document (a cache hit) keeps the fallbacks
    rep = report.report_from_document(None, (out / "smoke__minilm-l6__glue.json").read_text())  # type: ignore[arg-type]
    assert rep.rankings["kemeny"].fallback == doc["fallbacks"]["kemeny"]
    assert rep.rankings["borda"].fallback is None


def test_show_prints_only_the_chosen_board(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _two_boards(results)
    out = tmp_path / "lb"
    base = ["--results-dir", str(results), "--out", str(out), "--bootstrap", "0", "--no-wandb", "--jobs", "1"]
    rc, stdout, stderr = _main([*base, "--show", "smoke__minilm-l6__glue"])
    assert rc == 0, stderr
    assert stdout.startswith("## budget=smoke · model=minilm-l6 · suite=glue")
    assert "smollm2-135m" not in stdout
    assert f"written to {out}" in stdout
    assert {p.name for p in out.glob("*.md")} >= {"smoke__minilm-l6__glue.md", "smoke__smollm2-135m__gsm8k.md",
                                                   "leaderboard.md"}
    # a glob; a second run finds both boards in the cache and says so
    rc, stdout, stderr = _main([*base, "--show", "smoke__*"])
    assert rc == 0 and "minilm-l6" in stdout and "smollm2-135m" in stdout
    assert "2 of 2 board(s) unchanged (board cache)" in stderr
    rc, stdout, stderr = _main([*base, "--show", "nope"])
    assert rc == 1 and "no board matches --show nope" in stderr and "smoke__minilm-l6__glue" in stderr
    # by sweep name (records carry run.sweep): make demo's board, whatever its budget and model
    demo = make_record("lora", "glue/t0", 0, 0.5, budget={"name": "demo", "steps": 5, "seeds": 1})
    demo["run"]["sweep"] = "demo"
    write_records(results, [demo])
    rc, stdout, stderr = _main([*base, "--show", "sweep:demo"])
    assert rc == 0, stderr
    assert stdout.startswith("## budget=demo · model=minilm-l6 · suite=glue") and "budget=smoke" not in stdout
    assert "Shown: demo__minilm-l6__glue. All 3 board(s) written to" in stdout
