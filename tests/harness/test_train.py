"""Pieces of the training loop that the end-to-end tests do not isolate: per-job memory peaks and
checkpoint round trips."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from harness.train import load_checkpoint, peak_rss_mb, reset_peak_rss, save_checkpoint


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


def test_checkpoint_round_trip_restores_weights_schedule_and_rng(tmp_path):
    model, opt, sched = _parts()
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()
    opt.step()
    sched.step()
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, opt, sched, step=1, tokens=32, loss_curve=[[1, 0.5]], eval_history=[])
    expected_draw = torch.rand(3)  # what the run would have drawn next (dropout masks, …)

    fresh, opt2, sched2 = _parts()
    state = load_checkpoint(path, fresh, opt2, sched2)
    assert state["step"] == 1 and state["tokens"] == 32
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_restores_the_cuda_rng(tmp_path):
    model, opt, sched = _parts()
    model.cuda()
    torch.rand(1, device="cuda")  # initialise CUDA's generator
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, 0, 0, [], [])
    expected = torch.rand(3, device="cuda")
    torch.rand(5, device="cuda")
    load_checkpoint(tmp_path / "c.pt", model, opt, sched)
    assert torch.equal(torch.rand(3, device="cuda"), expected)
