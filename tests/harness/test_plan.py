"""`peftbench plan` shows each job's ranks, nodes and GPUs (issue #20), from the launcher's own fields."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness.plan import job_resources
from harness.spec import PROJECT_ROOT

CASES = [   # launcher, its fields, device -> (ranks, nodes, GPUs)
    ("slurm", {"nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4}, "cuda", (8, 2, 8)),
    ("slurm", {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1}, "auto", (1, 1, 1)),
    ("slurm_cpu", {"nodes": 1, "tasks_per_node": 2, "gpus_per_node": None}, "cpu", (2, 1, 0)),
    ("local", {"nproc_per_job": 2, "gpus_per_node": 2}, "cuda", (2, 1, 2)),
    ("local", {"nproc_per_job": 2, "gpus_per_node": 0}, "cpu", (2, 1, 0)),
    ("local", {"nproc_per_job": 4, "gpus_per_node": 0}, "cuda", (4, 1, 4)),
    ("debug", {}, "cpu", (1, 1, 0)),
]


@pytest.mark.parametrize(("launcher", "params", "device", "want"), CASES)
def test_job_resources(launcher: str, params: dict, device: str, want: tuple[int, int, int]) -> None:
    assert job_resources(launcher, params, SimpleNamespace(device=device)) == want


def test_plan_prints_ranks_gpus_and_gpu_hours_per_job(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "method=lora,dora", "task=glue/sst2",
                           "budget=smoke", "logger=none", "launcher=slurm", "hydra.launcher.nodes=2",
                           "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4", "device=cuda",
                           "budget.parallel=fsdp", f"results_dir={tmp_path}", f"runs_dir={tmp_path / 'runs'}"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [line for line in proc.stdout.splitlines() if line.strip().split(" ", 1)[0].isdigit()]
    assert len(jobs) == 2 and all("8 ranks fsdp on 2 nodes, 8 GPUs" in line for line in jobs), proc.stdout
