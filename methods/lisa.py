"""LISA, layerwise importance sampled AdamW (arXiv:2403.17919).

Defining rule (Pan et al. 2024, Alg. 1): full-parameter AdamW in which the embeddings and the head
(everything outside the transformer blocks) always train, while of the transformer blocks only γ,
sampled uniformly, train during each period of K steps; the others are frozen (no gradient, no
update, no optimizer state). At every period boundary γ blocks are sampled afresh.

Hooks: `apply` unfreezes everything and samples the first period's blocks; `callback` resamples after
the last optimizer step of each period; `optimizer` is AdamW over every parameter that may train
(frozen ones have grad None, so AdamW skips them) that drops the moments of a block when it is
frozen: each period starts its blocks' AdamW afresh, as the algorithm's "run AdamW for K steps".
Sampling draws from Python's `random`, which the harness seeds and checkpoints; which parameters
train at a checkpoint is saved with it (harness/train.py), so a resumed run continues the period.
Defaults: γ=2 (the paper's main setting), K=20 (the authors' LMFlow default interval).
No capacity knob: the trainable set moves; every weight of the model is trained over a run.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._fullparam import transformer_blocks

ATTR = "peftbench_lisa"   # the schedule rides on the backbone, where the callback can find it


@dataclass
class LisaSchedule:
    layers: int     # γ: blocks trained per period
    interval: int   # K: steps per period


def schedule_of(model: nn.Module) -> LisaSchedule:
    for mod in model.modules():
        sched = getattr(mod, ATTR, None)
        if isinstance(sched, LisaSchedule):
            return sched
    raise TypeError(f"{type(model).__name__}: no LISA schedule (was the model built by methods.lisa.apply?)")


def active_blocks(model: nn.Module) -> list[int]:
    """Indices of the transformer blocks that train in the current period."""
    _, blocks = transformer_blocks(model)
    return [i for i, b in enumerate(blocks) if any(p.requires_grad for p in b.parameters())]


def resample(model: nn.Module) -> list[int]:
    """Freeze every transformer block, then unfreeze γ of them chosen uniformly at random."""
    sched = schedule_of(model)
    _, blocks = transformer_blocks(model)
    chosen = sorted(random.sample(range(len(blocks)), min(sched.layers, len(blocks))))
    for i, block in enumerate(blocks):
        for p in block.parameters():
            p.requires_grad_(i in chosen)
    return chosen


def apply_lisa(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    params = method_cfg.get("params") or {}
    layers, interval = int(params["n_layers"]), int(params["interval_steps"])
    if layers < 1 or interval < 1:
        raise ValueError(f"lisa: n_layers={layers} and interval_steps={interval} must be >= 1")
    for p in backbone.parameters():
        p.requires_grad_(True)   # embeddings, norms, head: always trained
    setattr(backbone, ATTR, LisaSchedule(layers=layers, interval=interval))
    resample(backbone)
    return backbone


class LisaAdamW(torch.optim.AdamW):
    """AdamW over every parameter that may train; a frozen parameter (grad None) is skipped and its
    moments are dropped, so only the current period's blocks (and the always-on parts) hold state."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None and p in self.state:
                    del self.state[p]
        return super().step(closure)


def lisa_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> LisaAdamW:
    optim = method_cfg.get("optim") or {}
    return LisaAdamW(list(model.parameters()), lr=float(optim["lr"]),
                     weight_decay=float(optim.get("weight_decay") or 0.0))


def lisa_callback(model: Any, step: int, total_steps: int) -> None:
    """After the last step of a period (steps are 0-based), sample the next period's blocks."""
    if (step + 1) % schedule_of(model).interval == 0:
        resample(model)


LISA = register(MethodImpl(name="lisa", apply=apply_lisa, optimizer=lisa_optimizer, callback=lisa_callback))
