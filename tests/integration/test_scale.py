"""Issue #19's knobs through a whole job on the real MiniLM and SST-2: micro-batches, auto, activation
checkpointing and a bf16 base reach the loop from the config, the record's meta says how the job ran, the
signature does not (plumbing), and a job with micro-batches resumes exactly after a signal.
(tests/harness/test_accumulation.py and test_precision.py prove the equalities on tiny models.)"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from harness.spec import spec_from_config
from tests.conftest import compose_dict, run_record
from tests.integration.test_preempt import assert_same_result, finish, interrupt

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


def test_a_job_with_micro_batches_resumes_exactly(tmp_path: Path) -> None:
    """Checkpoints are written between optimizer steps, i.e. after whole effective batches: a SIGUSR2'd
    job with budget.micro_batch_size=2 resumes to the uninterrupted job's record and adapter, bit for bit."""
    micro = ("budget.micro_batch_size=2", "budget.tokens=3000")   # ~55 steps: half test_preempt's job
    ref_root, root = tmp_path / "ref", tmp_path / "stopped"
    ref_root.mkdir()
    root.mkdir()
    ref = finish(ref_root, *micro)
    assert ref["meta"]["execution"]["accumulation_steps"] == 2
    assert interrupt(root, signal.SIGUSR2, *micro) == 128 + signal.SIGUSR2
    rec = finish(root, *micro)
    assert rec["train"]["resumed_from_steps"] and rec["train"]["attempts"] == 2
    assert rec["train"]["memory"]["steps_sampled"] == rec["train"]["steps"]   # the trace crossed the checkpoint
    assert_same_result(rec, ref, root, ref_root)
