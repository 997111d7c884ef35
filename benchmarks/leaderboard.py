"""Timing of leaderboard regeneration from 100k synthetic run records.

Run:  python benchmarks/leaderboard.py [--records 100000] [--reps 3] [--disk 100000] [--jobs N] [--seed 0]
                                      [--kemeny-reps 5]

The records have the real schema (run / train / eval / meta blocks, as harness/dispatch.py writes
them) over budgets × models × suites × 20 methods × 8 tasks × seeds, with a true per-method effect
plus task and seed noise, two metrics per task (one lower-is-better) and ~1% failed runs. In the
first board, task6's records evaluate two sets (eval.subtasks: task6 and task7, as MNLI m/mm or
commonsense/all do) while task7 also has its own records: the duplicate (cell, seed) values the
leaderboard resolves (the dedicated record wins), so that path is timed too.

Timed, best of --reps:  long_table → aggregate → boards → rank every board with every rule
(the in-memory regeneration; target <= 5 s for 100k records). Baseline measured in the same run:
a plain pandas groupby-mean over the same long table (the least any aggregation must cost); the
ratio pipeline / baseline is printed. Reading records from disk is timed apart, on --disk records
written as JSON files in a temporary directory (0 skips it), and extrapolated per 100k. Also apart:
what `peftbench leaderboard` adds per board on top (bootstrap over seeds with every rule, the HTML
figures), measured on one 20 × 8 board and multiplied by the number of boards.

End to end, the real command: --disk record files (default 100k) are written to a temporary results
dir (setup, not timed), then `peftbench leaderboard --results-dir TMP --no-wandb` runs in-process
(harness.leaderboard.report.main), with the HTML page and the 200-resample bootstrap of every board.

* Regeneration, held to the <= 5 s bar: (a) records unchanged (the record cache and the per-board
  output cache both hit), (b) 10 new records in one board (only that board is analysed again).
* Full rebuilds, reported with their breakdown but not held to it: (c) first build from nothing
  (parses every record file, analyses and draws every board; on 2 cores parsing 100k JSON files
  alone takes several seconds) and (d) every board recomputed without bootstrap (--bootstrap 0, a new
  board-cache key, record cache warm).

Each line shows the ratio to the pandas baseline and the number of boards recomputed (board-cache
misses).

At leaderboard scale (issue #18), each with its bar beside it:

* (e) a 70-method board, 2 tasks × 2 seeds, and (f) a 70-method board, 1 task × 1 seed, 32 methods tied at
  exactly 0.700 (the committed zoo_decoder board's shape): each analysed cold by the real command on a
  results dir holding only it (every rule, the 200-resample bootstrap, paired tests, Markdown/CSV/JSON/HTML),
  <= 5 s; for (f) also the bootstrap itself on its samples (every resample is the point table: one
  distinct table ranked), under the same bar;
* (g) a cold build of the committed records (results/records copied to a temporary results dir, no cache):
  `peftbench leaderboard` in a fresh process, imports included, <= 30 s.

The exit code is 0 when every bar passes (in-memory regeneration, (a), (b), (e), (f), (g), Kemeny).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.leaderboard.rules import RULES, rank_all
from harness.leaderboard.table import aggregate, boards, long_table
from harness.records import iter_records

TARGET_S = 5.0
SCALE_TARGET_S = 5.0       # one 70-method board analysed cold
COMMITTED_TARGET_S = 30.0  # every committed record, cold, in a fresh process
METHODS = [f"method{i:02d}" for i in range(20)]
TASKS = [f"task{j}" for j in range(8)]


def _outcomes(acc: float, n: int) -> dict[str, Any]:
    """An outcomes block of n examples, about acc of them right (deterministic in acc: setup cost only)."""
    from harness.outcomes import Outcomes, encode_outcomes

    bits = (np.arange(n) * 0.6180339887 % 1.0 < acc).astype(np.uint8)
    return encode_outcomes(Outcomes("correct", "accuracy", bits))


def synthetic_records(n: int, *, seed: int = 0, outcomes: int = 0) -> list[dict[str, Any]]:
    """`n` records with the real schema: boards of 20 methods × 8 tasks, seeds filling up to n; with
    ``outcomes`` > 0 each evaluated set carries that many per-example outcomes (harness.outcomes)."""
    rng = np.random.default_rng(seed)
    per_board_seed = len(METHODS) * len(TASKS)
    budgets, models, suites = ["smoke", "small", "paper", "paper-long", "xl"], \
        [f"model{i}" for i in range(5)], [f"suite{i}" for i in range(5)]
    n_boards = len(budgets) * len(models) * len(suites)
    seeds = max(1, -(-n // (n_boards * per_board_seed)))
    effect = rng.normal(0.0, 0.03, len(METHODS))
    params = np.round(10 ** rng.uniform(4, 7.5, len(METHODS))).astype(int)
    out: list[dict[str, Any]] = []
    for budget in budgets:
        for model in models:
            for suite in suites:
                task_base = rng.uniform(0.5, 0.9, len(TASKS))
                for s in range(seeds):
                    for mi, method in enumerate(METHODS):
                        for ti, task in enumerate(TASKS):
                            if len(out) >= n:
                                return out
                            sig = f"{len(out):040x}"
                            acc = float(task_base[ti] + effect[mi] + rng.normal(0, 0.01))
                            also = {}
                            if (budget, model, suite) == (budgets[0], models[0], suites[0]) and task == "task6":
                                also = {f"{suite}/task7": float(task_base[7] + effect[mi] + rng.normal(0, 0.01))}
                            out.append(_record(sig, method, model, f"{suite}/{task}", suite, budget, s,
                                               acc, int(params[mi]), failed=rng.random() < 0.01, also=also,
                                               outcomes=outcomes))
    return out


def _record(sig: str, method: str, model: str, task: str, suite: str, budget: str, seed: int, acc: float,
            params: int, *, failed: bool, also: dict[str, float] | None = None, outcomes: int = 0) -> dict[str, Any]:
    """One record; ``also`` (other set → accuracy) makes it a multi-set record with eval.subtasks;
    ``outcomes``: that many per-example outcomes per evaluated set."""
    spec = {"method": {"name": method}, "model": {"name": model}, "task": {"name": task, "version": 1},
            "budget": {"name": budget, "seeds": 3}, "seed": seed}
    run = {"signature": sig, "status": "failed" if failed else "success", "method": method, "model": model,
           "task": task, "suite": suite, "budget": budget, "seed": seed, "spec": spec, "sweep": "bench",
           "launcher": "debug", "error": "RuntimeError: synthetic" if failed else None, "traceback": None,
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
           "host": "bench", "slurm": None}
    if failed:
        return {"schema_version": 1, "run": run, "train": None, "eval": None, "meta": {}}
    train = {"steps": 100, "tokens": 10_000, "examples": 800, "stopped_by": "steps", "wall_time_s": 60.0,
             "train_time_s": 50.0 + params / 1e5, "peak_memory_mb": 900.0 + params / 1e4,
             "peak_accelerator_mb": None, "trainable_params": params, "total_params": 22_713_986,
             "adapter_bytes": 4 * params, "loss_curve": [[1, 0.7], [100, 0.4]], "resumed_from_step": None}
    ev = {"metrics": {"accuracy": {"value": acc, "direction": "max"},
                      "error_rate": {"value": 1.0 - acc, "direction": "min"}},
          "primary_metric": "accuracy", "n_examples": 256, "split": "dev", "task_version": 1,
          "protocol": "classify", "eval_time_s": 2.0, "history": [], "samples": []}
    if outcomes:
        ev["n_examples"] = outcomes
        ev["outcomes"] = _outcomes(acc, outcomes)
    if also:
        sets = {task: acc, **also}
        ev["subtasks"] = {name: {"metrics": {"accuracy": {"value": a, "direction": "max"},
                                             "error_rate": {"value": 1.0 - a, "direction": "min"}},
                                 "primary_metric": "accuracy", "n_examples": outcomes or 256, "split": "dev",
                                 **({"outcomes": _outcomes(a, outcomes)} if outcomes else {})}
                          for name, a in sets.items()}
    return {"schema_version": 1, "run": run, "train": train, "eval": ev, "meta": {}}


def pipeline(recs: list[dict[str, Any]]) -> tuple[int, int]:
    """The in-memory regeneration: records → boards → every rule on every board."""
    agg = aggregate(long_table(recs, include_failed=True))
    n = 0
    bs = boards(agg)
    for b in bs:
        n += len(rank_all(b.oriented(), rules=list(RULES)))
    return len(bs), n


def baseline(recs: list[dict[str, Any]]) -> float:
    """The floor: a plain pandas groupby-mean over the same long table (built outside the timing)."""
    long = long_table(recs)
    t = time.perf_counter()
    long.groupby(["budget", "model", "suite", "task", "method", "metric"], sort=True)["value"].mean()
    return time.perf_counter() - t


def extras(recs: list[dict[str, Any]], bs: list[Any], n_boot: int) -> None:
    """Per-board cost of the bootstrap and the HTML figures, on the first board, times the boards."""
    from harness.leaderboard.html import render_board
    from harness.leaderboard.report import analyze_board, samples_by_board

    long = long_table(recs)
    board = bs[0]
    samples = samples_by_board(long)[(board.budget, board.model, board.suite)]
    t = time.perf_counter()
    rep = analyze_board(board, samples, list(RULES), n_boot=n_boot)
    boot = time.perf_counter() - t
    t = time.perf_counter()
    render_board(rep)
    page = time.perf_counter() - t
    print(f"per board (apart): bootstrap {n_boot} resamples × {len(RULES)} rules {boot:.2f} s, HTML figures "
          f"{page:.2f} s → × {len(bs)} boards ≈ {(boot + page) * len(bs):.0f} s for a full `peftbench leaderboard`")


def _write_files(root: Path, recs: list[dict[str, Any]]) -> None:
    """The record files, as write_record lays them out (same JSON), minus its per-file fsync: setup only."""
    import json

    d = root / "records"
    d.mkdir(parents=True, exist_ok=True)
    for r in recs:
        (d / f"{r['run']['signature']}.json").write_text(json.dumps(r, indent=2))


def end_to_end(recs: list[dict[str, Any]], n: int, base: float, *, jobs: int | None, n_boot: int,
               outcomes: int = 0) -> bool:
    """`peftbench leaderboard` on n record files: first build, regenerations, full rebuild without bootstrap."""
    import contextlib
    import io
    import os

    from harness.leaderboard import report

    if n > len(recs):
        recs = synthetic_records(n, outcomes=outcomes)
    sub = recs[:n]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        _write_files(root, sub)
        print(f"\nend to end: wrote {len(sub):,} record files in {time.perf_counter() - t:.1f} s (setup, not timed); "
              f"--jobs {jobs or os.cpu_count()}")
        t = time.perf_counter()
        read = sum(1 for _ in iter_records(root))
        parse_s = time.perf_counter() - t
        print(f"  reference: iter_records (no cache) reads them in {parse_s:.2f} s")
        args = ["--results-dir", str(root), "--no-wandb", "--quiet", "--bootstrap", str(n_boot)]
        if jobs:
            args += ["--jobs", str(jobs)]
        ok = True
        computed: list[str] = []  # board-cache misses = boards analysed and rendered again
        real_load = report._load_board

        def counting_load(path: Path, html: bool) -> Any:
            hit = real_load(path, html)
            if hit is None:
                computed.append(path.stem)
            return hit

        def timed(label: str, extra: list[str], *, bar: bool) -> float:
            nonlocal ok
            computed.clear()
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rc = report.main([*args, *extra])
            sec = time.perf_counter() - t
            passed = rc == 0 and sec <= TARGET_S
            if bar:
                ok = ok and passed
                verdict = f"target <= {TARGET_S:.0f} s   {'PASS' if passed else 'FAIL'}"
            else:
                verdict = "(full rebuild: reported)" if rc == 0 else "FAIL"
                ok = ok and rc == 0
            print(f"  {label:<46} {sec:8.2f} s   {verdict}   ratio/baseline = {sec / base:.0f}×   "
                  f"boards recomputed: {len(computed)}" + ("" if rc == 0 else f"  rc={rc}"))
            return sec

        report._load_board = counting_load
        try:
            cold = timed("(c) first build, no caches", [], bar=False)
            n_cold = len(computed)
            timed("(a) regeneration, records unchanged", [], bar=True)
            timed("(d) every board again, --bootstrap 0", ["--bootstrap", "0"], bar=False)
            # 10 new records (a new seed of 10 cells), all in the first board
            first = sub[0]["run"]
            suite = first["suite"]
            extra_recs = [_record(f"{len(sub) + k:040x}", METHODS[k], first["model"], f"{suite}/{TASKS[k % len(TASKS)]}",
                                  suite, first["budget"], 1000 + k, 0.7, 10_000, failed=False, outcomes=outcomes)
                          for k in range(10)]
            _write_files(root, extra_recs)
            timed("(b) regeneration after 10 new records, 1 board", [], bar=True)
            n_proc = jobs or os.cpu_count() or 1
            rest = max(cold - parse_s / n_proc, 0.0)
            print(f"  (c) breakdown: parsing the record files ≈ {parse_s:.1f} s in one process (÷ {n_proc} "
                  f"processes); the other ≈ {rest:.1f} s analyse and draw {n_cold} boards "
                  f"(≈ {rest * n_proc / max(n_cold, 1) * 1000:.0f} ms of one process per board, 200-resample "
                  "bootstrap included)")
        finally:
            report._load_board = real_load
        assert read == len(sub)
    return ok


def scale_records(*, tasks: int, seeds: int, tie: int, outcomes: int, seed: int = 0) -> list[dict[str, Any]]:
    """One board (budget "scale") of 70 methods × `tasks` × `seeds`; the first `tie` methods score exactly
    0.700 on every task and seed, above all the others (0.45-0.69), as 32 methods do on the committed
    zoo_decoder board. The others: a per-method effect, task and seed noise."""
    rng = np.random.default_rng(seed)
    methods = [f"m{i:02d}" for i in range(70)]
    effect = rng.normal(0.0, 0.04, len(methods))
    params = np.round(10 ** rng.uniform(4, 7.5, len(methods))).astype(int)
    out: list[dict[str, Any]] = []
    for j in range(tasks):
        base = rng.uniform(0.5, 0.64)
        for i, m in enumerate(methods):
            for s in range(seeds):
                acc = 0.7 if i < tie else float(np.clip(base + effect[i] + rng.normal(0, 0.01), 0.45, 0.69))
                out.append(_record(f"{len(out):040x}", m, "model0", f"suite0/task{j}", "suite0", "scale", s, acc,
                                   int(params[i]), failed=False, outcomes=outcomes))
    return out


def _verdict(sec: float, target: float, rc: int = 0) -> tuple[bool, str]:
    passed = rc == 0 and sec <= target
    return passed, f"target <= {target:g} s   {'PASS' if passed else 'FAIL'}" + ("" if rc == 0 else f"  rc={rc}")


def _board_notes(root: Path) -> str:
    """What the board's JSON says about the searching rules: any fallback, and their bootstrap resamples."""
    import json

    doc = next((root / "leaderboards").glob("scale__*.json"), None)
    if doc is None:
        return "(no board written)"
    d = json.loads(doc.read_text())
    boot = d["bootstrap"]
    used = ", ".join(f"{r} {b['n_valid']}/{boot['n_boot']}" for r, b in boot["rules"].items()
                     if r in ("kemeny", "ranked_pairs"))
    return (f"fallbacks: {', '.join(sorted(d.get('fallbacks', {}))) or 'none'}; bootstrap resamples ranked: "
            f"{used or 'none (' + str(boot['note']).split(':')[0] + ')'}")


def scale_boards(*, n_boot: int, jobs: int | None, outcomes: int) -> bool:
    """(e), (f): a 70-method board analysed cold by the real command, each on a results dir of its own."""
    import contextlib
    import io

    import pandas as pd

    from harness.leaderboard import report
    from harness.leaderboard.stats import bootstrap_ranks

    ok = True
    print(f"\nat leaderboard scale (issue #18): every rule, {n_boot}-resample bootstrap, report, cold")
    cases = [("(e) 70 methods × 2 tasks × 2 seeds", {"tasks": 2, "seeds": 2, "tie": 0}),
             ("(f) 70 methods × 1 task × 1 seed, 32-way tie", {"tasks": 1, "seeds": 1, "tie": 32})]
    for label, kw in cases:
        recs = scale_records(outcomes=outcomes, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            _write_files(root, recs)
            args = ["--results-dir", str(root), "--no-wandb", "--quiet", "--bootstrap", str(n_boot)]
            if jobs:
                args += ["--jobs", str(jobs)]
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                rc = report.main(args)
            sec = time.perf_counter() - t
            passed, verdict = _verdict(sec, SCALE_TARGET_S, rc)
            ok = ok and passed
            print(f"  {label:<46} {sec:8.2f} s   {verdict}   {_board_notes(root)}")
        if kw["seeds"] == 1:
            # the command skips the bootstrap of a one-seed board; bootstrap_ranks itself ranks each distinct
            # resample table once: here all are the point table
            long = long_table(recs)
            samples = pd.DataFrame({"method": long["method"], "task": long["task"], "seed": long["seed"],
                                    "value": long["value"]})[long["metric"] == "accuracy"]
            t = time.perf_counter()
            res = bootstrap_ranks(samples, system_col="method", task_col="task", seed_col="seed", value_col="value",
                                  rules=list(RULES), n_boot=max(n_boot, 1))
            sec = time.perf_counter() - t
            passed, verdict = _verdict(sec, SCALE_TARGET_S)
            ok = ok and passed
            print(f"  {'    its bootstrap_ranks, all rules':<46} {sec:8.2f} s   {verdict}   kemeny: "
                  f"{res['kemeny'].note}")
    return ok


def committed_cold(*, jobs: int | None) -> bool:
    """(g): `peftbench leaderboard` on a copy of results/records, no cache, in a fresh process."""
    import shutil
    import subprocess

    src = Path(__file__).resolve().parents[1] / "results" / "records"
    files = sorted(src.glob("*.json"))
    if not files:
        print("\n(g) no committed records: skipped")
        return True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(src, root / "records")
        # not --quiet: its progress lines (stderr) give each board's seconds
        cmd = [sys.executable, "-m", "harness.cli", "leaderboard", "--results-dir", str(root), "--no-wandb",
               *(["--jobs", str(jobs)] if jobs else [])]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                              check=False)
        sec = time.perf_counter() - t
        passed, verdict = _verdict(sec, COMMITTED_TARGET_S, proc.returncode)
        boards = [ln for ln in proc.stderr.splitlines() if ln.startswith("[")]
        print(f"\n(g) cold build of the {len(files)} committed records (fresh process, no cache) {sec:8.2f} s   "
              f"{verdict}")
        for ln in boards:
            print(f"      {ln}")
        if proc.returncode:
            print(proc.stderr[-2000:])
    return passed


def best(fn: Any, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--disk", type=int, default=100_000,
                   help="record files written to a tmp results dir for the end-to-end timings (0 skips them)")
    p.add_argument("--jobs", type=int, default=None, help="--jobs of the end-to-end command (default: every CPU)")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the per-board extras timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outcomes", type=int, default=1000,
                   help="per-example outcomes in every synthetic record (issue 11's bar: 1000; 0 = none, as before)")
    p.add_argument("--no-kemeny", action="store_true", help="skip the exact-Kemeny timings (12 and 30 systems)")
    p.add_argument("--kemeny-reps", type=int, default=None,
                   help="random profiles per size for the Kemeny timings (default: leaderboard_rules.py's, 5)")
    p.add_argument("--no-scale", action="store_true",
                   help="skip the 70-method boards (e, f) and the committed records' cold build (g)")
    args = p.parse_args(argv)

    t = time.perf_counter()
    recs = synthetic_records(args.records, seed=args.seed, outcomes=args.outcomes)
    print(f"generated {len(recs):,} synthetic records ({args.outcomes} per-example outcomes each) "
          f"in {time.perf_counter() - t:.2f} s")
    pipeline(recs[:2000])  # warm up imports (scipy, HiGHS)

    stages: dict[str, float] = {}
    stages["long_table"] = best(lambda: long_table(recs, include_failed=True), args.reps)
    long = long_table(recs, include_failed=True)
    stages["aggregate"] = best(lambda: aggregate(long), args.reps)
    agg = aggregate(long)
    stages["boards"] = best(lambda: boards(agg), args.reps)
    bs = boards(agg)
    stages["rank (all rules)"] = best(lambda: [rank_all(b.oriented(), rules=list(RULES)) for b in bs], args.reps)
    total = best(lambda: pipeline(recs), args.reps)
    base = min(baseline(recs) for _ in range(max(1, args.reps)))

    n_boards, n_rankings = pipeline(recs)
    print(f"{n_boards} boards × {len(RULES)} rules = {n_rankings} rankings; {len(long):,} long-table rows")
    for name, sec in stages.items():
        print(f"  {name:<18} {sec:7.3f} s")
    ok = total <= TARGET_S
    print(f"regeneration (records → rankings)  {total:7.3f} s   target <= {TARGET_S:.0f} s   "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"baseline (pandas groupby-mean)      {base:7.3f} s   ratio regeneration/baseline = {total / base:.1f}×")

    extras(recs, bs, args.bootstrap)
    if args.disk > 0:
        ok = end_to_end(recs, args.disk, base, jobs=args.jobs, n_boot=args.bootstrap, outcomes=args.outcomes) and ok
    if not args.no_scale:
        ok = scale_boards(n_boot=args.bootstrap, jobs=args.jobs, outcomes=args.outcomes) and ok
        ok = committed_cold(jobs=args.jobs) and ok
    if not args.no_kemeny:
        # Issue #3 asks for all leaderboard timings in one run: exact Kemeny for 12 and 30 systems.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import leaderboard_rules

        print()
        reps = [] if args.kemeny_reps is None else ["--reps", str(args.kemeny_reps)]
        ok = (leaderboard_rules.main(["--seed", str(args.seed), *reps]) == 0) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
