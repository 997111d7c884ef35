"""Smoke test: benchmarks/dispatch.py runs end to end and prints both verdict lines (timings are never
asserted here: on a shared CI box they are noise; the bars are the benchmark's own business).

Its jobs run on RTE rather than SST-2 (`--task`: 2.5k training rows to read per job instead of 67k; the same
launch path). The script's main runs in this process (tests/benchmarks/__init__.py), so the warm process its
direct `execute(spec)` calls are timed in is this one; the submission and the local launcher's drivers and jobs
still run in their own processes."""
from __future__ import annotations

import re

from harness.spec import PROJECT_ROOT
from tests.benchmarks import run_main

SCRIPT = PROJECT_ROOT / "benchmarks" / "dispatch.py"


def test_dispatch_benchmark_reports_submission_and_local_overhead() -> None:
    rc, out = run_main(SCRIPT, ["--jobs", "5", "--local-jobs", "2", "--task", "glue/rte"])
    assert rc == 0, out
    assert re.search(r"^sweep_submit_s = (\d+\.\d\d \(target <= 10\): (PASS|MISS)|n/a .*)$", out, re.MULTILINE), out
    assert re.search(r"^local_overhead_per_job_s = -?\d+\.\d\d \(target <= 2\): (PASS|MISS)$", out, re.MULTILINE), out
