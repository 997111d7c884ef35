"""Smoke test: benchmarks/train_overhead.py runs end to end and prints its two verdict lines.

Timing values are never asserted: on a shared CI box they are noise. The targets are the
benchmark's own business (`--strict`); here only the plumbing (spec → both loops → subprocess
peak RSS → report) has to work, on the tiny config-built model so it stays cheap. The script's main runs in
this process (tests/benchmarks/__init__.py); its peak-RSS sides still run in fresh subprocesses of their own.
"""
from __future__ import annotations

import re
import subprocess
import sys

from harness.spec import PROJECT_ROOT
from tests.benchmarks import run_main

SCRIPT = PROJECT_ROOT / "benchmarks" / "train_overhead.py"
RATIO_LINE = r"^{name} harness/bare = \d+\.\d\d \(target <= {target}\): (PASS|MISS)$"


def test_train_overhead_runs_and_reports_both_ratios() -> None:
    """Every case (fp32, bf16, accumulation, checkpointing) runs; peak RSS subprocesses only for the two
    the checkpointing memory line compares, which keeps this cheap."""
    rc, out = run_main(SCRIPT, ["--tiny", "--steps", "3", "--warmup", "1", "--repeats", "1", "--n-batches", "4",
                                "--rss-cases", "fp32,checkpointing"])
    assert rc == 0, out
    lines = out.strip().splitlines()
    assert re.match(RATIO_LINE.format(name="step_time_ratio", target=r"1\.05"), lines[-2]), out
    assert re.match(RATIO_LINE.format(name="peak_rss_ratio", target=r"1\.10"), lines[-1]), out
    for case in ("fp32", "bf16", "accumulation", "checkpointing"):
        assert re.search(RATIO_LINE.format(name=rf"step_time_ratio\[{case}\]", target=r"1\.05"), out,
                         re.MULTILINE), case
    # Both sides of every case really did the same work from the same start (a wiring check, not a timing one).
    assert out.count("(identical)") == 4, out
    assert re.search(r"^bf16 base vs fp32, harness training loss over the same 4 steps: largest gap 0\.\d+", out,
                     re.MULTILINE), out
    assert re.search(r"^  harness +saved for backward [\d.]+ -> [\d.]+ MB .*; peak RSS", out, re.MULTILINE)


def test_strict_flag_is_accepted() -> None:
    """--strict only changes the exit code on a miss; --help must list it (cheap, no model)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "--strict" in proc.stdout
