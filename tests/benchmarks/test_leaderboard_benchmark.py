"""Smoke test: benchmarks/leaderboard.py runs end to end on a small record set and prints every line
the issue asks for (in-memory regeneration, the real command's regenerations and rebuilds, exact
Kemeny at 12 and 30 systems, the 70-method boards and the committed records' cold build of issue #18).
Timings are never asserted here; the script's own verdicts are its job.

Small on purpose: 1,000 records in memory; 320 record files on disk, i.e. two boards, so that (b) shows one
board recomputed out of several; one random profile per Kemeny size. The script's main runs in this process
(tests/benchmarks/__init__.py); (g) still starts its own fresh `peftbench leaderboard`.
"""
from __future__ import annotations

import re

from harness.spec import PROJECT_ROOT
from tests.benchmarks import run_main

SCRIPT = PROJECT_ROOT / "benchmarks" / "leaderboard.py"


def test_leaderboard_benchmark_prints_every_timing() -> None:
    rc, out = run_main(SCRIPT, ["--records", "1000", "--disk", "320", "--reps", "1", "--bootstrap", "10", "--jobs", "1",
                                "--kemeny-reps", "1"])
    assert rc in (0, 1), out  # 1 = a timing verdict missed: not ours to judge
    assert "(1000 per-example outcomes each)" in out, out   # the bar is held with outcomes in the records
    assert re.search(r"^regeneration \(records → rankings\)\s+\d+\.\d+ s\s+target <= 5 s\s+(PASS|FAIL)$", out, re.MULTILINE), out
    for label in ("(c) first build, no caches", "(a) regeneration, records unchanged",
                  "(d) every board again, --bootstrap 0", "(b) regeneration after 10 new records, 1 board"):
        line = next((ln for ln in out.splitlines() if label in ln), None)
        assert line is not None, out
        assert "rc=" not in line, line  # the command itself succeeded
    # the cache did its job: nothing recomputed when nothing changed, one board (of the two) after new records
    assert re.search(r"\(c\) first build, no caches .* boards recomputed: 2$", out, re.MULTILINE), out
    assert re.search(r"\(a\) regeneration, records unchanged .* boards recomputed: 0$", out, re.MULTILINE), out
    assert re.search(r"\(b\) regeneration after 10 new records, 1 board .* boards recomputed: 1$", out, re.MULTILINE), out
    assert re.search(r"^\s+12\s+9\s+\S+s\s+\S+s", out, re.MULTILINE) and re.search(r"^\s+30\s+9\s+\S+s", out, re.MULTILINE), out
    # issue #18: the 70-method boards (one with a 32-way exact tie) and the committed records' cold build,
    # each printed with its bar; the command itself succeeded on each
    for label, bar in (("(e) 70 methods × 2 tasks × 2 seeds", 5), ("(f) 70 methods × 1 task × 1 seed, 32-way tie", 5),
                       ("its bootstrap_ranks, all rules", 5), ("(g) cold build of the ", 30)):
        line = next((ln for ln in out.splitlines() if label in ln), None)
        assert line is not None, out
        assert re.search(rf"\d+\.\d+ s\s+target <= {bar} s\s+(PASS|FAIL)", line) and "rc=" not in line, line
    assert re.search(r"^\s+\[1/\d+\] \S+__\S+ \d+\.\d+ s$", out, re.MULTILINE), out  # (g)'s progress lines
    assert "1 distinct table(s) among 10 resample(s)" in out, out   # one seed: every resample is the point table
