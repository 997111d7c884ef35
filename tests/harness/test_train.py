"""Pieces of the training loop that the end-to-end tests do not isolate: per-job memory peaks and
checkpoint round trips."""

from __future__ import annotations

import mmap
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from harness.train import StepState, load_checkpoint, peak_rss_mb, reset_peak_rss, save_checkpoint, train_step


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_peak_rss_resets_between_jobs_in_one_process():
    """launcher=debug runs a whole sweep in one process: a job must not inherit an earlier job's peak.

    The 300 MB block is an anonymous mapping, touched page by page and unmapped on close, so the test does
    not depend on the allocator handing freed memory back; and the peak is reset before it, so an earlier
    test's higher peak in the same (xdist) worker cannot stand in for the block's."""
    size = 300 * 2**20
    assert reset_peak_rss()
    before = peak_rss_mb()
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    high = peak_rss_mb()
    assert high > before + 250
    block.close()
    assert reset_peak_rss()
    assert peak_rss_mb() < high - 200


def _parts() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=10)


def _state(model: nn.Module, opt: torch.optim.Optimizer, sched: object, **counters: int) -> StepState:
    return StepState(model=model, optimizer=opt, scheduler=sched, trainable=list(model.parameters()),
                     protocol="classify", device=torch.device("cpu"), total_steps=10, **counters)


def test_checkpoint_round_trip_restores_weights_schedule_and_rng(tmp_path):
    model, opt, sched = _parts()
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()
    opt.step()
    sched.step()
    path = tmp_path / "ckpt.pt"
    st = _state(model, opt, sched, step=1, tokens=32, examples=8)
    st.losses = [[1, 0.5]]
    save_checkpoint(path, st, eval_history=[], attempts=[{"train_time_s": 1.5}])
    expected = (torch.rand(3), random.random(), np.random.rand())   # what the run draws next

    fresh, opt2, sched2 = _parts()
    st2 = _state(fresh, opt2, sched2)
    state = load_checkpoint(path, st2)
    assert (st2.step, st2.tokens, st2.examples, st2.losses) == (1, 32, 8, [[1, 0.5]])
    assert state["attempts"] == [{"train_time_s": 1.5}]
    draws = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], expected[0]) and draws[1:] == expected[1:]
    assert not list(tmp_path.glob(".*.tmp"))   # the atomic write left no temp file
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_restores_the_cuda_rng(tmp_path):
    model, opt, sched = _parts()
    model.cuda()
    torch.rand(1, device="cuda")  # initialise CUDA's generator
    save_checkpoint(tmp_path / "c.pt", _state(model, opt, sched), eval_history=[], attempts=[])
    expected = torch.rand(3, device="cuda")
    torch.rand(5, device="cuda")
    load_checkpoint(tmp_path / "c.pt", _state(model, opt, sched))
    assert torch.equal(torch.rand(3, device="cuda"), expected)


@pytest.mark.parametrize("name", ["galore", "frugal", "lisa", "lorafa"])
def test_checkpoint_resumes_a_method_optimizer_bit_identically(name, tmp_path):
    """A method's own optimizer (GaLore's projector and r-dimensional moments, FRUGAL's, LISA's per-period
    state, peft's LoRA-FA with its state keyed by name) and the method's moving trainable set round-trip through the checkpoint: 3 steps, save,
    3 more equal a fresh model resumed from the checkpoint running the same 3 steps."""
    import methods
    from harness.train import make_optimizer, optimizer_params, set_seed, train_step
    from tests.methods.test_properties import _tiny_llama
    from tests.methods.test_registry import TINY_DECODER_CFG, method_cfg

    cfg = method_cfg(name)
    cfg["params"] = {**cfg["params"], **{"galore": {"update_proj_gap": 2}, "frugal": {"update_gap": 2},
                                         "lisa": {"n_layers": 1, "interval_steps": 2}}.get(name, {})}
    impl = methods.resolve(cfg)
    batch = {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["labels"] = batch["input_ids"]

    def fresh() -> StepState:
        set_seed(1)
        model = impl.apply(_tiny_llama(layers=4), cfg, TINY_DECODER_CFG)
        opt = make_optimizer(model, [p for p in model.parameters() if p.requires_grad], cfg, impl)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        return StepState(model=model, optimizer=opt, scheduler=sched, trainable=optimizer_params(opt),
                         protocol="generate", device=torch.device("cpu"), total_steps=6, callback=impl.callback)

    st = fresh()
    trains_at_start = [n for n, p in st.model.named_parameters() if p.requires_grad]
    for _ in range(3):
        train_step(st, batch)
    if name == "lisa":   # a later period trains other blocks than the ones a fresh build samples
        assert [n for n, p in st.model.named_parameters() if p.requires_grad] != trains_at_start
    save_checkpoint(tmp_path / "c.pt", st, eval_history=[], attempts=[])
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    if name == "lorafa":   # the adapter (frozen A included), not the frozen base weights
        assert saved and all("lora_" in k for k in saved), [k for k in saved if "lora_" not in k][:3]
    for _ in range(3):
        train_step(st, batch)

    resumed = fresh()
    load_checkpoint(tmp_path / "c.pt", resumed)
    assert resumed.step == 3
    for _ in range(3):
        train_step(resumed, batch)
    for (n, a), b in zip(st.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n
        assert a.requires_grad == b.requires_grad, n
    states = [s for s in resumed.optimizer.state.values() if s]
    assert states, "the optimizer kept no state"
    if name in ("galore", "frugal"):   # the projector survived the round trip and is r-dimensional
        assert any("basis" in s and s["exp_avg"].shape[1 if s["right"] else 0] == cfg["params"]["rank"]
                   for s in states)


def test_build_model_prepares_the_backbone_under_the_classify_head():
    """A method with a prepare hook (LoRA-GA) calibrates with the classify loss, head included: the
    head is built first and the adapted backbone goes under it; no calibration gradient is left over."""
    import types

    from harness.train import EncoderClassifier, build_model
    from methods.peft_native import peft_model_of
    from tests.methods.test_registry import TINY_ENCODER_CFG, method_cfg, tiny_bert

    cfg = method_cfg("lora_ga")
    cfg["calibration"] = {"batches": 2}
    g = torch.Generator().manual_seed(0)
    batches = iter([{"input_ids": torch.randint(0, 100, (4, 8), generator=g),
                     "attention_mask": torch.ones(4, 8, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0])}
                    for _ in range(3)])
    spec = types.SimpleNamespace(method=cfg, model=TINY_ENCODER_CFG, task={"protocol": "classify"})
    model = build_model(spec, types.SimpleNamespace(backbone=tiny_bert()), 2, batches=batches)
    assert isinstance(model, EncoderClassifier) and peft_model_of(model) is model.encoder
    assert len(list(batches)) == 1   # it read the configured number of batches
    assert all(p.grad is None for p in model.parameters())
    assert model.classifier.weight.requires_grad
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)   # gradient-derived B, not LoRA's zeros


@pytest.mark.parametrize("method", ["lora", "lora_ga"])
def test_a_regression_head_starts_at_the_mean_target(method: str) -> None:
    """STS-B's head starts at the mean training score, not 0 (EncoderClassifier says why), on both
    build paths: a prepare-hook method (LoRA-GA) calibrates under that head too."""
    import types

    from harness.train import build_model, loss_of
    from tests.methods.test_registry import TINY_ENCODER_CFG, method_cfg, tiny_bert

    cfg = method_cfg(method)
    cfg["calibration"] = {"batches": 1}
    g = torch.Generator().manual_seed(0)
    batches = iter([{"input_ids": torch.randint(0, 100, (4, 8), generator=g),
                     "attention_mask": torch.ones(4, 8, dtype=torch.long),
                     "labels": torch.tensor([2.0, 3.5, 1.0, 4.5])} for _ in range(2)])
    spec = types.SimpleNamespace(method=cfg, model=TINY_ENCODER_CFG, task={"protocol": "classify"})
    model = build_model(spec, types.SimpleNamespace(backbone=tiny_bert()), 1, batches=batches, target_mean=2.75)
    assert model.classifier.bias.tolist() == [2.75]
    batch = next(batches)
    model.eval()
    with torch.no_grad():   # the starting loss is about the targets' variance, not their mean square
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).squeeze(-1)
        assert abs(out.mean().item() - 2.75) < 1.0
        assert loss_of(model, batch, "classify").item() < (batch["labels"] ** 2).mean().item() / 2
    unset = build_model(spec, types.SimpleNamespace(backbone=tiny_bert()), 1, batches=iter([batch]))
    assert unset.classifier.bias.abs().max().item() < 1.0   # a classification head keeps nn.Linear's init


def test_train_step_adds_the_method_regularizer_but_logs_the_task_loss():
    """StepState.regularizer (KaSA's penalties) is optimised with the loss; the logged loss is the task's."""
    import types

    class LM(nn.Module):   # causal-LM-shaped: forward returns an object with .loss
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> types.SimpleNamespace:
            return types.SimpleNamespace(loss=self.lin(input_ids).pow(2).mean())

    torch.manual_seed(0)
    model = LM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    logged: list[float] = []
    st = StepState(model=model, optimizer=opt, scheduler=sched, trainable=list(model.parameters()),
                   protocol="generate", device=torch.device("cpu"), total_steps=1,
                   regularizer=lambda m: 3.0 * m.lin.weight.pow(2).sum(),
                   log=lambda metrics, step: logged.append(metrics["train/loss"]))
    batch = {"input_ids": torch.randn(8, 4, generator=torch.Generator().manual_seed(1)),
             "attention_mask": torch.ones(8, 4)}
    w0 = model.lin.weight.detach().clone()
    task = model(**batch).loss
    task_grad = torch.autograd.grad(task, model.lin.weight)[0]
    train_step(st, batch)
    assert logged == [pytest.approx(float(task))]
    # SGD: the step is lr·(task gradient + the penalty's gradient 6·W)
    torch.testing.assert_close(model.lin.weight.detach(), w0 - 0.1 * (task_grad + 6.0 * w0))
