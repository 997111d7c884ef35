"""Pieces of the training loop that the end-to-end tests do not isolate: per-job memory peaks and
checkpoint round trips."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from harness.train import StepState, load_checkpoint, peak_rss_mb, reset_peak_rss, save_checkpoint


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_peak_rss_resets_between_jobs_in_one_process():
    """launcher=debug runs a whole sweep in one process: a job must not inherit an earlier job's peak."""
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    high = peak_rss_mb()
    del block
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
