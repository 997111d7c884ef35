"""QLoRA (arXiv:2305.14314) and LoftQ (arXiv:2310.08659) through whole jobs on the real embedded models, on a
CPU (bitsandbytes >= 0.47 quantizes nf4 there): the nf4 base learns, the record says what was quantized, and a
method that trains the base is refused before any compute.

No prepare_model_for_kbit_training: it upcasts every non-quantized tensor to float32 (the base's dtype is
model.dtype, semantic, so the harness keeps it as configured) and turns on gradient checkpointing (plumbing:
budget.gradient_checkpointing), so each of its effects is already a field of the job."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec import ConfigError
from tests.conftest import run_record

pytestmark = pytest.mark.integration
pytest.importorskip("bitsandbytes")


def _run(tmp_path: Path, *overrides: str) -> dict:
    # no `threads`: in-process, train() would set it for the rest of this worker's tests too; the worker's share
    # of the cores (tests/conftest.py) is what they all run with
    return run_record(tmp_path, "logger=none", "budget=smoke", "seed=0", "device=cpu", "budget.tokens=null",
                      *overrides)


def _falls(rec: dict) -> None:
    losses = [point[-1] if isinstance(point, list) else point for point in rec["train"]["loss_curve"]]
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < first, (first, last)


def _quantized(rec: dict, layers: int, base_params: int, kind: str = "nf4") -> None:
    assert rec["run"]["spec"]["model"]["quantization"] == kind
    assert rec["run"]["spec"]["model"].get("double_quant") is (None if kind == "int8" else True)
    q = rec["meta"]["model"]["quantization"]
    assert q["quantization"] == kind and q["quantized_linear_layers"] == layers and q["base_bytes"] > 0
    # the total is the logical parameter count (a 4-bit weight's numel counts packed bytes: half its values)
    assert rec["train"]["total_params"] > base_params > rec["train"]["trainable_params"]
    assert q["base_bytes"] < 4 * base_params * 0.8   # smaller than the float32 base


@pytest.mark.parametrize("kind", ["nf4", "fp4", "int8"])
def test_lora_on_a_quantized_minilm_learns(kind: str, tmp_path: Path) -> None:
    """QLoRA (nf4), and LoRA on an fp4 and on an int8 (LLM.int8()) base."""
    rec = _run(tmp_path, "method=lora", "model=minilm-l6", "task=glue/sst2", f"model.quantization={kind}",
               "budget.steps=40", "budget.eval_size=32", "method.optim.lr=5e-3")
    _quantized(rec, 6 * 6, 22_500_000, kind)   # 6 linear layers in each of 6 blocks (the pooler is dropped)
    _falls(rec)


def test_qlora_on_smollm2_learns(tmp_path: Path) -> None:
    rec = _run(tmp_path, "method=lora", "model=smollm2-135m", "task=gsm8k/gsm8k", "model.quantization=nf4",
               "budget.steps=8", "budget.max_seq_len=48", "budget.eval_size_generate=1", "budget.max_new_tokens=4")
    _quantized(rec, 30 * 7, 134_000_000)   # q, k, v, o, gate, up, down in each of 30 blocks (lm_head stays float)
    _falls(rec)


def test_loftq_runs(tmp_path: Path) -> None:
    rec = _run(tmp_path, "method=loftq", "model=minilm-l6", "task=glue/sst2", "budget.steps=3",
               "budget.eval_size=16")
    assert rec["run"]["spec"]["method"]["params"]["loftq_config"] == {"loftq_bits": 4, "loftq_iter": 1}
    assert rec["train"]["steps"] == 3


def test_a_quantized_full_fine_tune_is_refused_before_compute(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _run(tmp_path, "method=full", "model=minilm-l6", "task=glue/sst2", "model.quantization=nf4")
    assert "model.quantization: 'nf4' with method 'full', which trains the base weights" in str(exc.value)
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()
