"""The committed campaigns (sweeps/zoo*.yaml): every job they expand to validates before any compute, and
they cover exactly the methods that apply to their model, so a new method joins them by being added (and a
new decoder-only method must be excluded from the encoder campaign, or validation names it)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness.spec import PROJECT_ROOT
from methods.catalog import method_names
from tests.methods.test_registry import method_cfg


def _plan(name: str, tmp_path) -> str:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--config-dir", "sweeps", "--config-name",
                           name, f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}",
                           "logger=none"], check=False, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(("name", "kind", "tasks", "seeds", "budget"), [
    ("zoo", "encoder", {"glue/sst2", "glue/stsb"}, {0, 1}, "zoo"),
    ("zoo_decoder", "decoder", {"commonsense/boolq"}, {0}, "zoo_decoder"),
])
def test_campaign_runs_every_applicable_method(name: str, kind: str, tasks: set[str], seeds: set[int],
                                               budget: str, tmp_path) -> None:
    out = _plan(name, tmp_path)
    jobs = re.findall(r"^\s*\d+ run\s+(\S+)\|(\S+)\|(\S+)\|(\S+)\|s(\d+)", out, flags=re.MULTILINE)
    applies = {m for m in method_names() if kind in method_cfg(m)["info"]["applies_to"]}
    assert {j[0] for j in jobs} == applies
    assert {j[2] for j in jobs} == tasks and {j[3] for j in jobs} == {budget}
    assert {int(j[4]) for j in jobs} == seeds
    assert len(jobs) == len(applies) * len(tasks) * len(seeds)


def test_demo_sweep_is_four_methods_by_two_tasks_by_three_seeds(tmp_path) -> None:
    """`make demo`'s sweep: every job validates, on its own budget (never mixed with a campaign's board),
    4 methods × the two GLUE tasks that learn at that budget × 3 seeds."""
    out = _plan("demo", tmp_path)
    jobs = re.findall(r"^\s*\d+ run\s+(\S+)\|(\S+)\|(\S+)\|(\S+)\|s(\d+)", out, flags=re.MULTILINE)
    assert len(jobs) == 24
    assert {j[0] for j in jobs} == {"lora", "dora", "pissa", "ia3"}
    assert {j[1] for j in jobs} == {"minilm-l6"} and {j[3] for j in jobs} == {"demo"}
    assert {j[2] for j in jobs} == {"glue/sst2", "glue/stsb"}
    assert {int(j[4]) for j in jobs} == {0, 1, 2}
