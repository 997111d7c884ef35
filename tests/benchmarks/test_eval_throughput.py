"""Smoke test: benchmarks/eval_throughput.py runs end to end at tiny scale and reports both rates.

The ratio is never asserted (timing on a shared box is noise; the exit code 0/1 is the benchmark's
verdict). What is asserted is the wiring: both sides ran on the same prompts and returned the same
text for every prompt (exit code 2 otherwise), so the comparison is apples to apples. At 8 new tokens the
prompts form a full batch and a partial one, and one row ends before the cap (at a stop), so the
shrinking batch is part of what must agree. The script's main runs in this process
(tests/benchmarks/__init__.py); `--help` checks the command line itself.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness.spec import PROJECT_ROOT
from tests.benchmarks import run_main

SCRIPT = PROJECT_ROOT / "benchmarks" / "eval_throughput.py"


@pytest.mark.integration
def test_eval_throughput_runs_with_identical_outputs_on_both_sides() -> None:
    rc, out = run_main(SCRIPT, ["--n", "3", "--max-new-tokens", "8", "--batch-size", "2", "--repeats", "1"])
    assert rc in (0, 1), out
    assert re.search(r"^eval_throughput: model=smollm2-135m \+ LoRA .* prompts=3 gsm8k test, max_new_tokens=8, "
                     r"batch_size=2, greedy", out, re.MULTILINE), out
    assert re.search(r"^agreement: 3/3 outputs identical$", out, re.MULTILINE), out
    for side in ("peftbench", "lm-eval"):
        assert re.search(rf"^{side}: \d+\.\d\d examples/s \(median of 1 passes", out, re.MULTILINE), out
    verdict = re.search(r"^ratio peftbench/lm-eval = (\d+\.\d\d) \(target >= 1\.00.*\): (PASS|MISS)$", out, re.MULTILINE)
    assert verdict, out
    assert (verdict.group(2) == "PASS") == (rc == 0)


def test_help_lists_the_size_flags() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0
    for flag in ("--n", "--max-new-tokens", "--batch-size", "--repeats", "--threads"):
        assert flag in proc.stdout
