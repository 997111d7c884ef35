"""Precision: model.dtype (the frozen base's) and budget.amp (autocast) are semantic; what trains stays
float32 on a half-precision base, and a bf16 base trains on a CPU with losses close to float32's.

Tolerance of the bf16-vs-fp32 loss tests, BF16_LOSS_TOL = 0.01 absolute per step, from measurements on this
CPU (torch 2.13): LoRA on the real MiniLM-L6, SST-2 batches of 4, 40 steps, bf16 base vs float32: largest gap
0.0025, mean 0.0007 (losses 0.26..1.32). The tiny models below over their 10 steps: bf16 base 0.0009
(encoder) and 0.0002 (decoder), bf16 autocast 0.0005 and 0.0001. 0.01 is 4x the real encoder's largest gap
and 10x the tiny models'. The loss gap alone cannot tell a float32 adapter from a bf16 one over 10 steps
(a whole-bf16 model stays within 0.003 here): the dtype assertions do that.
A deep real decoder drifts further, which is why the tolerance is stated per model: LoRA on SmolLM2-135M
(30 layers), BoolQ batches of 4 at 128 tokens, 6 steps: largest gap 0.077, mean 0.039 (losses 2.0..3.2, bf16
always the higher; 0.007 at step 1, before any update: the bf16 base's own rounding).
"""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

import methods
from harness.spec import ConfigError
from harness.train import (
    EncoderClassifier,
    StepState,
    make_optimizer,
    optimizer_params,
    precision,
    set_seed,
    train_step,
)
from tests.conftest import conf_names
from tests.harness.test_accumulation import batches, tiny_bert, tiny_llama
from tests.methods.test_registry import TINY_DECODER_CFG, TINY_ENCODER_CFG, method_cfg

BF16_LOSS_TOL = 0.01
STEPS = 10
# Methods whose trainable tensors are in the base's dtype, and why (harness.train.precision says the same):
BASE_DTYPE_TRAINABLES = {
    "full": "trains the base weights",
    "galore": "trains the base weights (a projected optimizer)",
    "frugal": "trains the base weights (a projected optimizer)",
    "flora": "trains the base weights (a projected optimizer)",
    "lisa": "trains the base weights (sampled layers)",
    "adaption_prompt": "peft keeps its prompts and gates in the base's dtype (not tuner layers)",
    "ln_tuning": "peft trains copies of the LayerNorms, in the base's dtype",
}


def build(kind: str, dtype: torch.dtype, *, method: str = "lora", amp: torch.dtype | None = None,
          scaler: object = None) -> StepState:
    cfg = method_cfg(method)
    impl = methods.resolve(cfg)
    set_seed(0)
    if kind == "encoder":
        model: nn.Module = EncoderClassifier(impl.apply(tiny_bert().to(dtype), cfg, TINY_ENCODER_CFG), 32, 2, "mean")
        protocol = "classify"
    else:
        model = impl.apply(tiny_llama().to(dtype), cfg, TINY_DECODER_CFG)
        protocol = "generate"
    model.train()
    opt = make_optimizer(model, [p for p in model.parameters() if p.requires_grad], cfg, impl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return StepState(model=model, optimizer=opt, scheduler=sched, trainable=optimizer_params(opt), protocol=protocol,
                     device=torch.device("cpu"), total_steps=STEPS, grad_clip=1.0, callback=impl.callback,
                     regularizer=impl.regularizer, amp_dtype=amp, scaler=scaler)


def losses(st: StepState, kind: str) -> list[float]:
    return [train_step(st, b) for b in batches(kind, n=STEPS)]


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_a_bf16_base_trains_on_cpu_and_tracks_fp32(kind: str) -> None:
    st = build(kind, torch.bfloat16)
    assert {p.dtype for p in st.trainable} == {torch.float32}   # the adapter and the head stay float32
    assert any(p.dtype == torch.bfloat16 for p in st.model.parameters())   # the base does not
    gaps = [abs(a - b) for a, b in zip(losses(st, kind), losses(build(kind, torch.float32), kind))]
    assert max(gaps) < BF16_LOSS_TOL, gaps
    assert max(gaps) > 0   # it did run in bf16


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_bf16_autocast_tracks_fp32(kind: str) -> None:
    st = build(kind, torch.float32, amp=torch.bfloat16)
    gaps = [abs(a - b) for a, b in zip(losses(st, kind), losses(build(kind, torch.float32), kind))]
    assert 0 < max(gaps) < BF16_LOSS_TOL, gaps
    assert {p.dtype for p in st.trainable} == {torch.float32}


def test_the_loss_scaler_unscales_before_clipping() -> None:
    """float16's GradScaler path, run on a CPU in float32 with a power-of-two scale (exact): the steps equal
    the unscaled ones, so clipping and the optimizer saw the true gradients."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = build("decoder", torch.float32, scaler=scaler)
    assert losses(scaled, "decoder") == losses(build("decoder", torch.float32), "decoder")
    assert scaler.get_scale() == 2.0**10   # no overflow, no growth yet (growth_interval 2000)


METHOD_KINDS = [(m, k) for m in conf_names("method") for k in method_cfg(m)["info"]["applies_to"]]


@pytest.mark.parametrize(("method", "kind"), METHOD_KINDS, ids=[f"{m}-{k}" for m, k in METHOD_KINDS])
def test_what_trains_stays_float32_on_a_bf16_base(method: str, kind: str) -> None:
    """Every method on a bf16 base trains a step, and its trainable tensors are float32 unless it is one of
    BASE_DTYPE_TRAINABLES (which train in the base's dtype, for the reason given there)."""
    cfg = method_cfg(method)
    if methods.resolve(cfg).prepare is not None:   # calibrates on data first: covered by its own tests
        pytest.skip(f"{method} prepares the backbone on training batches")
    st = build(kind, torch.bfloat16, method=method)
    dtypes = {p.dtype for p in st.model.parameters() if p.requires_grad}
    if method in BASE_DTYPE_TRAINABLES:
        assert torch.bfloat16 in dtypes
    else:
        assert dtypes == {torch.float32}, [n for n, p in st.model.named_parameters()
                                           if p.requires_grad and p.dtype != torch.float32][:5]
    assert torch.isfinite(torch.tensor(train_step(st, batches(kind, n=1, size=4)[0])))


# ------------------------------------------------------------------------------------ float16
def _spec(amp: str | None, dtype: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(budget={"amp": amp}, model={"dtype": dtype})


@pytest.mark.parametrize(("amp", "dtype", "fields"), [("float16", "float32", ["budget.amp"]),
                                                      (None, "float16", ["model.dtype"]),
                                                      ("float16", "float16", ["budget.amp", "model.dtype"])])
def test_float16_off_a_gpu_is_a_config_error_naming_each_field(amp: str | None, dtype: str, fields: list[str]) -> None:
    """device=auto on a machine without a GPU resolves to the CPU only when the job starts: train() checks
    again there, before any compute (validation catches device=cpu up front)."""
    with pytest.raises(ConfigError) as info:
        precision(_spec(amp, dtype), torch.device("cpu"))
    assert [p.split(":")[0] for p in info.value.problems] == fields
    assert all("CUDA" in p and "bfloat16" in p for p in info.value.problems)


def test_precision_without_float16_needs_no_scaler() -> None:
    assert precision(_spec("bfloat16", "float32"), torch.device("cpu")) == (torch.bfloat16, None)
    assert precision(_spec(None, "bfloat16"), torch.device("cpu")) == (None, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("amp", "dtype"), [("float16", "float32"), (None, "float16")])
def test_float16_trains_on_a_gpu_with_a_loss_scaler(amp: str | None, dtype: str) -> None:
    amp_dtype, scaler = precision(_spec(amp, dtype), torch.device("cuda"))
    assert scaler is not None
    st = build("decoder", getattr(torch, dtype), amp=amp_dtype, scaler=scaler)
    st.model.cuda()
    st.device = torch.device("cuda")
    got = losses(st, "decoder")
    ref = losses(build("decoder", torch.float32), "decoder")
    assert max(abs(a - b) for a, b in zip(got, ref)) < BF16_LOSS_TOL
    assert {p.dtype for p in st.trainable} == {torch.float32}
