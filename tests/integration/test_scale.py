"""Issue #19's knobs through a whole job on the real MiniLM and SST-2: micro-batches, auto, activation
checkpointing and a bf16 base reach the loop from the config, the record's meta says how the job ran, the
signature does not (plumbing), and a job with micro-batches resumes exactly after a signal.
(tests/harness/test_accumulation.py and test_precision.py prove the equalities on tiny models.)"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from harness.spec import spec_from_config
from tests.conftest import compose_dict, run_record
from tests.integration.test_preempt import assert_same_result

pytestmark = pytest.mark.integration

JOB = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "seed=0", "threads=1",
       "device=cpu", "budget.steps=3", "budget.tokens=null", "budget.eval_size=16")


def _run(tmp_path: Path, *overrides: str) -> dict:
    return run_record(tmp_path, *JOB, *overrides)


def test_plumbing_reaches_the_loop_and_the_meta_not_the_signature(tmp_path: Path) -> None:
    plain = spec_from_config(compose_dict(JOB))
    rec = _run(tmp_path, "budget.micro_batch_size=auto", "budget.gradient_checkpointing=true")
    assert rec["run"]["signature"] == plain.signature
    ex = rec["meta"]["execution"]
    assert ex["micro_batch_requested"] == "auto" and ex["micro_batch_changes"] == []   # nothing ran out of memory
    assert (ex["batch_size"], ex["micro_batch_size"], ex["accumulation_steps"]) == (4, 4, 1)
    assert ex["gradient_checkpointing"] is True and ex["loss_scaler"] is False
    assert ex["attn_implementation"] in ("sdpa", "eager", "flash_attention_2")
    assert ex["trainable_dtypes"] == {"float32": rec["train"]["trainable_params"]}
    assert rec["train"]["steps"] == 3 and rec["train"]["examples"] == 12
    # costs as peft's method comparison records them; off a GPU the samples are the resident set
    mem = rec["train"]["memory"]
    assert mem["device"] == "cpu" and mem["steps_sampled"] == 3 and rec["train"]["accelerator"] is None
    assert rec["train"]["gpus"] == 0 and rec["train"]["gpu_hours"] is None
    assert mem["rss_max_mb"] >= mem["rss_p99_mb"] >= mem["rss_avg_mb"] > 0
    assert mem["rss_max_mb"] == rec["train"]["peak_memory_mb"]
    assert rec["train"]["tokens_per_s"] == pytest.approx(rec["train"]["tokens"] / rec["train"]["train_time_s"], rel=0.01)
    ev = rec["eval"]
    assert 16 * 2 < ev["tokens"] <= 16 * 128 and ev["tokens_per_s"] > 0   # 16 sentences, unpadded


def test_a_bf16_base_with_micro_batches_runs_a_job(tmp_path: Path) -> None:
    rec = _run(tmp_path, "model.dtype=bf16", "budget.micro_batch_size=2")
    assert rec["run"]["spec"]["model"]["dtype"] == "bfloat16"   # the short name, normalised
    ex = rec["meta"]["execution"]
    assert (ex["micro_batch_size"], ex["accumulation_steps"], ex["micro_batch_requested"]) == (2, 2, 2)
    assert ex["trainable_dtypes"] == {"float32": rec["train"]["trainable_params"]}   # LoRA and the head
    assert all(p[1] == p[1] for p in rec["train"]["loss_curve"])   # finite (NaN != NaN)


def test_a_job_with_micro_batches_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints are written between optimizer steps, i.e. after whole effective batches: a job with
    budget.micro_batch_size=2 that gets SIGUSR2 between the two micro-batches of a step finishes that step,
    checkpoints after it, and resumes to the uninterrupted job's record and adapter, bit for bit.

    In-process (dispatch.execute, as the CLI runs it): the signal is a real one, sent to this process from inside
    the step, so it lands mid-batch at a known step (test_preempt signals a CLI subprocess at a random time)."""
    import harness.train
    from harness.dispatch import execute

    for var in [v for v in os.environ if v.startswith("SLURM_")]:   # outside SLURM a signal cancels, not requeues
        monkeypatch.delenv(var)
    job = (*JOB, "budget.steps=18", "budget.micro_batch_size=2", "budget.checkpoint_every=null")
    stop = 6   # the step the signal arrives in (its first micro-batch); the checkpoint follows it
    ref_root, root = tmp_path / "ref", tmp_path / "stopped"
    ref = run_record(ref_root, *job)
    assert ref["meta"]["execution"]["accumulation_steps"] == 2 and ref["train"]["steps"] == 18

    backward, calls = harness.train._backward, []

    def signalled_backward(st: harness.train.StepState, loss: torch.Tensor) -> None:
        backward(st, loss)
        calls.append(st.step)   # the optimizer steps done so far
        if len(calls) == 2 * (stop - 1) + 1:   # the first of step `stop`'s two micro-batches
            os.kill(os.getpid(), signal.SIGUSR2)

    spec = spec_from_config(compose_dict((*job, f"results_dir={root / 'results'}", f"runs_dir={root / 'runs'}")))
    with monkeypatch.context() as m, pytest.raises(SystemExit) as exit_:
        m.setattr(harness.train, "_backward", signalled_backward)
        execute(spec)
    assert exit_.value.code == 128 + signal.SIGUSR2
    # the step the signal arrived in was finished (both its micro-batches ran), and no step after it
    assert len(calls) == 2 * stop and calls[-2:] == [stop - 1, stop - 1]
    assert (spec.run_dir / "checkpoint.pt").exists()
    rec = run_record(root, *job)
    assert rec["train"]["resumed_from_steps"] == [stop] and rec["train"]["attempts"] == 2
    assert rec["train"]["memory"]["steps_sampled"] == rec["train"]["steps"]   # the trace crossed the checkpoint
    assert_same_result(rec, ref, root, ref_root)
