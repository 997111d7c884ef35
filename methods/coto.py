"""CoTo (arXiv:2506.05713, "Come Together, but Not Right Now: A Progressive Strategy to Boost Low-Rank
Adaptation"): plain LoRA trained with whole adapters stochastically switched off, the probability that an adapter
is active ramping linearly from a low value to 1 over the first part of training; every adapter is active at
evaluation. Early steps thus spread the gradient over all layers instead of letting a few adapters dominate."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, find_targets, kaiming_uniform, target_names, wrap


class CotoLinear(AdapterLinear):
    # whether this adapter is on for the next training step: only a resumed run needs it
    training_state = ("active",)

    def __init__(self, base: nn.Linear, r: int, alpha: float, group: int, seed: int) -> None:
        super().__init__(base)
        f = self.factory
        # LoRA (arXiv:2106.09685): A kaiming, B = 0, ΔW = (α/r)·B·A
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.scaling = alpha / r
        self.group, self.seed = group, seed
        self.register_buffer("active", torch.ones((), dtype=torch.bool, device=f["device"]))
        self.register_buffer("sampler_seed", torch.tensor(seed, dtype=torch.long, device=f["device"]))
        self.on = True   # Python copy of `active`: the forward branches on it without a device sync
        self.register_load_state_dict_post_hook(lambda module, _: module.loaded())

    def loaded(self) -> None:
        self.on, self.seed = bool(self.active), int(self.sampler_seed)

    def set_active(self, on: bool) -> None:
        self.on = on
        self.active.fill_(on)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Defining rule (arXiv:2506.05713; the authors' CoTo README, `cotodrop`): a dropped adapter is skipped in
        # the forward (the layer is W0 alone, its factors get no gradient at all: AdamW leaves them untouched);
        # no 1/p rescaling of the active ones. Evaluation always uses every adapter.
        if self.training and not self.on:
            return self.base_layer(x)
        return super().forward(x)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def probability(step: int, total_steps: int, p: Mapping[str, Any]) -> float:
    """Activation probability of optimizer step `step` (0-based): initial_p + (final_p − initial_p)·step/end,
    end = ⌈stage1_ratio·total_steps⌉, capped at final_p (the authors' CoToSchedulerCallback)."""
    lo, hi = float(p["initial_p"]), float(p["final_p"])
    end = max(1, math.ceil(total_steps * float(p["stage1_ratio"])))
    return min(lo + (hi - lo) * step / end, hi)


def draw(seed: int, step: int, groups: int, rate: float) -> torch.Tensor:
    """Which groups are active at `step`: uniform u per group, active where u ≤ rate, redrawn until at least one
    group is active (the authors' generate_random_tensor). Seeded by (seed, step) alone: reproducible, and a
    resumed run draws what the uninterrupted one would have."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    while True:
        u = torch.rand(groups, generator=g)
        if bool((u <= rate).any()):
            return u <= rate


def layers(model: nn.Module) -> list[CotoLinear]:
    return [m for m in model.modules() if isinstance(m, CotoLinear)]


def set_step(model: nn.Module, step: int, total_steps: int) -> None:
    """Draw the active adapters of training step `step`: one draw per transformer block (all of a block's
    adapters share it, as the authors' module_num grouping does)."""
    found = layers(model)
    if not found:
        return
    p = found[0].params
    groups = max(m.group for m in found) + 1
    mask = draw(found[0].seed, step, groups, probability(step, total_steps, p))
    for m in found:
        m.set_active(bool(mask[m.group]))


def coto_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step`: draw the adapters of step + 1."""
    set_step(model, step + 1, total_steps)


def _block_of(path: str) -> str:
    """The block a module belongs to: its path up to the first numeric component (encoder.layer.3 …)."""
    m = re.match(r"^(.*?\.\d+)(\.|$)", path)
    return m.group(1) if m else path


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = dict(method_cfg["params"])
    lo, hi, ratio = float(p["initial_p"]), float(p["final_p"]), float(p["stage1_ratio"])
    if not (0 < lo <= hi <= 1 and 0 < ratio <= 1):
        raise ValueError(f"coto: need 0 < initial_p={lo} <= final_p={hi} <= 1 and stage1_ratio={ratio} in (0, 1]")
    seed = int(p["sampler_seed"]) if p.get("sampler_seed") is not None else torch.initial_seed() % 2**62
    paths = [path for path, _, _ in find_targets(backbone, target_names(method_cfg, model_cfg))]
    blocks: dict[str, int] = {}
    group = [blocks.setdefault(_block_of(path), len(blocks)) for path in paths]
    model = wrap(backbone, method_cfg, model_cfg,
                 lambda i, hit, lin: CotoLinear(lin, int(p["r"]), float(p["lora_alpha"]), group[i], seed))
    for m in layers(model):
        m.params = p
    set_step(model, 0, 1)   # step 0 runs at initial_p (its total is irrelevant there)
    return model


COTO = register(MethodImpl(name="coto", apply=apply, callback=coto_callback))
