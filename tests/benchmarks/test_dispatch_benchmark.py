"""Smoke test: benchmarks/dispatch.py runs end to end and prints both verdict lines (timings are never
asserted here: on a shared CI box they are noise; the bars are the benchmark's own business)."""
from __future__ import annotations

import re
import subprocess
import sys

from harness.spec import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "dispatch.py"


def test_dispatch_benchmark_reports_submission_and_local_overhead() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "5", "--local-jobs", "2"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^sweep_submit_s = (\d+\.\d\d \(target <= 10\): (PASS|MISS)|n/a .*)$", out, re.MULTILINE), out
    assert re.search(r"^local_overhead_per_job_s = -?\d+\.\d\d \(target <= 2\): (PASS|MISS)$", out, re.MULTILINE), out
