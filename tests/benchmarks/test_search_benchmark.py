"""Smoke test: benchmarks/search.py runs end to end (real driver, storage, executors) and reports.

Timing values are never asserted (noise on a shared box); the 90% bar is the benchmark's own
business (`--strict`). Only the plumbing has to work: no-op trials through the debug and local
executors, then both idle-time modes, each line printed.
"""
from __future__ import annotations

import re
import subprocess
import sys

from harness.spec import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "search.py"


def test_search_benchmark_runs_and_reports() -> None:
    args = ["--noop", "3", "--noop-local", "1", "--n", "3", "--p", "2", "--min-s", "0.1", "--max-s", "0.4"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"in-process \d+\.\d ms; local subprocess \d+ ms", out), out
    for mode in ("async", "batch"):
        assert re.search(rf"^  {mode}\s+wall\s+\d+\.\d s\s+occupancy\s+\d+\.\d%", out, re.MULTILINE), out
    assert re.search(r"async occupancy = \d+\.\d% \(target >= 90%\): (PASS|MISS)$", out.strip()), out
