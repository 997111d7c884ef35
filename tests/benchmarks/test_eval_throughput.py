"""Smoke test: benchmarks/eval_throughput.py runs end to end at tiny scale and reports both rates.

The ratio is never asserted (timing on a shared box is noise; the exit code 0/1 is the benchmark's
verdict). What is asserted is the wiring: both sides ran on the same prompts and returned the same
text for every prompt (exit code 2 otherwise), so the comparison is apples to apples.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness.spec import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "benchmarks" / "eval_throughput.py"


@pytest.mark.integration
def test_eval_throughput_runs_with_identical_outputs_on_both_sides() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--n", "3", "--max-new-tokens", "8", "--batch-size", "2", "--repeats", "1"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^eval_throughput: model=smollm2-135m \+ LoRA .* prompts=3 gsm8k test, max_new_tokens=8, "
                     r"batch_size=2, greedy", out, re.MULTILINE), out
    assert re.search(r"^agreement: 3/3 outputs identical$", out, re.MULTILINE), out
    for side in ("peftbench", "lm-eval"):
        assert re.search(rf"^{side}: \d+\.\d\d examples/s \(median of 1 passes", out, re.MULTILINE), out
    verdict = re.search(r"^ratio peftbench/lm-eval = (\d+\.\d\d) \(target >= 1\.00.*\): (PASS|MISS)$", out, re.MULTILINE)
    assert verdict, out
    assert (verdict.group(2) == "PASS") == (proc.returncode == 0)


def test_help_lists_the_size_flags() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0
    for flag in ("--n", "--max-new-tokens", "--batch-size", "--repeats", "--threads"):
        assert flag in proc.stdout
