"""Issue #20 through whole jobs: `torchrun --nproc-per-node 2 -m harness.cli run ...` on the CPU (gloo) against the
same job in one process. World size is plumbing: same signature, the same metric, and a loss curve and adapter
within float tolerance. Dropout is off (model.dropout=0; LoRA's is 0 already): two ranks draw two masks where
one process draws one, as micro-batches do (tests/harness/test_accumulation.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import run_record
from tests.integration.hooks import inject
from tests.integration.test_preempt import adapter

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENCODER = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "seed=0", "threads=1",
           "device=cpu", "budget.steps=6", "budget.tokens=null", "budget.eval_size=64", "model.dropout=0")
DECODER = ("logger=none", "method=lora", "model=smollm2-135m", "task=gsm8k/gsm8k", "budget=smoke", "seed=0",
           "threads=1", "device=cpu", "budget.steps=3", "budget.tokens=null", "budget.max_seq_len=48",
           "budget.eval_size_generate=4", "budget.max_new_tokens=8", "model.dropout=0")


def torchrun(root: Path, *overrides: str, nproc: int = 2, env: dict[str, str] | None = None,
             timeout: float = 900) -> subprocess.CompletedProcess:
    """One job under torchrun, its results and runs under ``root``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "harness.cli", "run", *overrides, f"results_dir={root / 'results'}", f"runs_dir={root / 'runs'}"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)


def only_record(root: Path) -> dict:
    records = list((root / "results" / "records").glob("*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


def assert_same_job(two: dict, one: dict, two_root: Path, one_root: Path, tol: float = 1e-5,
                    parallel: str = "ddp") -> None:
    assert two["run"]["status"] == "success", two["run"]["error"]
    assert two["run"]["signature"] == one["run"]["signature"]   # world size is plumbing
    assert two["eval"]["metrics"] == one["eval"]["metrics"]
    for key in ("steps", "tokens", "examples"):
        assert two["train"][key] == one["train"][key], key
    got, want = [p[1] for p in two["train"]["loss_curve"]], [p[1] for p in one["train"]["loss_curve"]]
    assert got == pytest.approx(want, abs=tol, rel=0)
    # The adapter: summing two halves' gradients (the all-reduce) instead of one batch's rounds differently, by
    # ~1e-7; AdamW divides each gradient by its own running magnitude, so an entry whose gradient is at that
    # noise level can step either way, by up to the learning rate. So: nearly every entry to 1e-5, every entry
    # within one learning rate (measured, MiniLM: 7 of 74,498 entries beyond 1e-5, the largest 3.8e-4 at lr 2e-3).
    lr = float(one["run"]["spec"]["method"]["optim"]["lr"])
    a, b = adapter(two_root), adapter(one_root)
    assert a.keys() == b.keys() and a
    total = close = 0
    for name in b:
        assert a[name].keys() == b[name].keys()
        for k in b[name]:
            d = (a[name][k] - b[name][k]).abs()
            assert float(d.max()) <= lr, (name, k, float(d.max()))
            total, close = total + d.numel(), close + int((d <= tol).sum())
    assert close >= 0.999 * total, (close, total)
    ex = two["meta"]["execution"]
    assert (ex["world_size"], ex["parallel"], ex["nodes"], ex["gpus_per_node"]) == (2, parallel, 1, 0)
    assert [r["rank"] for r in two["train"]["ranks"]] == [0, 1]
    assert two["train"]["peak_memory_mb"] == max(r["peak_memory_mb"] for r in two["train"]["ranks"])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """Each job once in one process: what every multi-rank run of it must equal."""
    out = {}
    for name, job in (("minilm-sst2", ENCODER), ("smollm2-gsm8k", DECODER)):
        root = tmp_path_factory.mktemp(name)
        out[name] = (run_record(root, *job), root)
    return out


class TwoRanks:
    """Each job's uninterrupted two-rank run under each parallel mode, made on first use: the equality tests
    compare it with the one-process job, the SIGTERM tests resume to it (one torchrun instead of two)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.roots: dict[tuple[str, str], Path] = {}
        self.jobs = {"minilm-sst2": ENCODER, "smollm2-gsm8k": DECODER}

    def root(self, name: str, parallel: str) -> Path:
        if (name, parallel) not in self.roots:
            root = self.factory.mktemp(f"{name}-{parallel}")
            proc = torchrun(root, *self.jobs[name], f"budget.parallel={parallel}")
            assert proc.returncode == 0, proc.stderr[-4000:]
            self.roots[name, parallel] = root
        return self.roots[name, parallel]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> TwoRanks:
    return TwoRanks(tmp_path_factory)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", ["minilm-sst2", "smollm2-gsm8k"])
def test_two_ranks_equal_one_process(name: str, parallel: str, one_process: dict, two_ranks: TwoRanks) -> None:
    """DDP (replicas, gradients all-reduced) and FSDP2 (each block's parameters, gradients and optimizer state
    sharded, gathered for its forward and backward; evaluation in lockstep) both give the one-process job."""
    one, one_root = one_process[name]
    root = two_ranks.root(name, parallel)
    assert_same_job(only_record(root), one, root, one_root, parallel=parallel)


def test_qlora_under_fsdp_equals_one_process(tmp_path: Path) -> None:
    """QLoRA under FSDP2: the NF4 base's packed uint8 weights are sharded per parameter like any other (FSDP2 needs
    no common storage dtype, which FSDP1's flat parameters did: bnb_4bit_quant_storage), gathered with their
    quantization state for each block's forward; 2 ranks give the one-process QLoRA job."""
    job = (*ENCODER, "model.quantization=nf4")
    one = run_record(tmp_path / "one", *job)
    proc = torchrun(tmp_path / "two", *job, "budget.parallel=fsdp")
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = only_record(tmp_path / "two")
    q = two["meta"]["model"]["quantization"]
    assert q == one["meta"]["model"]["quantization"] and q["quantization"] == "nf4" and q["quantized_linear_layers"] > 0
    assert_same_job(two, one, tmp_path / "two", tmp_path / "one", parallel="fsdp")


def test_loglik_evaluation_is_sharded_and_merged(tmp_path: Path) -> None:
    """A log-likelihood task (lm-eval) on 2 DDP ranks: each scores its contiguous share of the set in its own
    lm-eval, and the merged metrics, stderr and per-example outcomes are the one-process ones. One training step:
    what is sharded here is the evaluation (training under DDP is test_two_ranks_equal_one_process's)."""
    job = (*DECODER[:3], "task=commonsense/piqa", "task.protocol=loglik",
           *("budget.steps=1" if o == "budget.steps=3" else o for o in DECODER[4:]))
    assert "budget.steps=1" in job
    one = run_record(tmp_path / "one", *job)
    proc = torchrun(tmp_path / "two", *job)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = only_record(tmp_path / "two")
    assert two["run"]["status"] == "success", two["run"]["error"]
    assert two["eval"]["n_examples"] == one["eval"]["n_examples"] == 4
    assert two["eval"]["metrics"] == one["eval"]["metrics"]
    assert two["eval"]["outcomes"] == one["eval"]["outcomes"]
    lm_two, lm_one = two["eval"]["lm_eval"]["commonsense/piqa"], one["eval"]["lm_eval"]["commonsense/piqa"]
    assert lm_two["shards"] == 2 and "shards" not in lm_one
    assert lm_two["stderr"] == pytest.approx(lm_one["stderr"], rel=1e-9)


def test_launcher_local_runs_a_job_as_two_ranks(one_process: dict, tmp_path: Path) -> None:
    """launcher=local with hydra.launcher.nproc_per_job=2: the job's process forks two ranks (as torchrun
    would start them) and the sweep's one record equals the one-process record."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "-m", *ENCODER, "launcher=local", "hydra.launcher.parallel=1",
           "hydra.launcher.nproc_per_job=2", f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    one, one_root = one_process["minilm-sst2"]
    assert_same_job(only_record(tmp_path), one, tmp_path, one_root)


def test_a_rank_that_raises_ends_the_job_failed_naming_it(tmp_path: Path) -> None:
    """Rank 1 raises at its third step (injected from outside the package: tests/integration/hooks.py): the job
    ends within seconds, not at a collective's timeout, with one `failed` record naming rank 1 and its error."""
    t0 = time.monotonic()
    proc = torchrun(tmp_path, *ENCODER, env=inject(os.environ, tmp_path, 2, fail=True, rank=1))
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    rec = only_record(tmp_path)
    assert rec["run"]["status"] == "failed"
    assert rec["run"]["error"] == "rank 1: RuntimeError: rank 1 broke at step 2", rec["run"]["error"]
    assert elapsed < 120, elapsed   # model loading included; the gloo timeout is 600 s


STOP_AT = 3   # of ENCODER's 6 steps: mid-run, with steps on both sides of the checkpoint


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_sigtermed_mid_run_resume_exactly(parallel: str, two_ranks: TwoRanks, tmp_path: Path) -> None:
    """SIGTERM to torchrun mid-training (what a cluster's time limit or `kill` does): torchrun passes it to both
    ranks, they agree on one step, checkpoint there (rank 0 writes it, with each rank's generators) and rank 0
    records `cancelled`; rerunning resumes from the checkpoint to the uninterrupted 2-rank record, bit for bit.
    The signal is sent to torchrun from rank 0 after its step 3 (tests/integration/hooks.py, as in the test
    above), and rank 0 holds that step until torchrun's SIGTERM reaches it: the stop lands at step 3, not at
    whatever step a timer happened to hit."""
    job = (*ENCODER, f"budget.parallel={parallel}")
    ref_root, root = two_ranks.root("minilm-sst2", parallel), tmp_path / "stopped"
    hook = inject(os.environ, tmp_path, STOP_AT, signal_=signal.SIGTERM, to_parent=True, hold_s=60, rank=0)
    proc = torchrun(root, *job, env=hook, timeout=300)
    stopped = only_record(root)
    assert stopped["run"]["status"] == "cancelled", (stopped["run"], proc.stderr[-3000:])
    assert stopped["train"]["steps"] == STOP_AT   # mid-run: 0 < 3 < 6
    assert (root / "runs" / stopped["run"]["signature"] / "checkpoint.pt").exists()
    again = torchrun(root, *job)
    assert again.returncode == 0, again.stderr[-3000:]
    rec, want = only_record(root), only_record(ref_root)
    assert rec["train"]["resumed_from_steps"] == [STOP_AT]
    assert rec["train"]["steps"] == want["train"]["steps"] == 6
    assert rec["eval"]["metrics"] == want["eval"]["metrics"]
    assert rec["train"]["loss_curve"] == want["train"]["loss_curve"]
    a, b = adapter(root), adapter(ref_root)
    assert a.keys() == b.keys() and a
    for name in b:
        assert all(torch.equal(a[name][k], b[name][k]) for k in b[name]), name
