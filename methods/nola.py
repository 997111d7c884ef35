"""NOLA (arXiv:2310.02556, "NOLA: Compressing LoRA using Linear Combination of Random Basis"): LoRA's A and
B are linear combinations of frozen random bases drawn from a seed; only the mixture coefficients train, so
the trainable count (2k per layer) is decoupled from the rank and the layer's width."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class NolaLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, k: int, alpha: float, seed: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2310.02556, Sec. 3): A = Σ_i α_i A_i, B = Σ_j β_j B_j with A_i, B_j frozen random
        # matrices generated from a seed, and only α, β trained: ΔW = (lora_alpha/r)·B·A. As in the authors'
        # GPT-2 code (gpt/src/model_nola.py): bases U(-1, 1)/√k, both coefficient vectors zero at init, and A
        # offset by a frozen kaiming-uniform A_0 (LoRA's A init), so that B's coefficients get a gradient at
        # step 0 while ΔW = 0. Everything frozen comes from `seed` (+ the layer's index): non-persistent, the
        # saved adapter holds only the 2k coefficients per layer.
        g = torch.Generator(device="cpu").manual_seed(seed)
        cpu = {"dtype": f["dtype"]}
        scale = 1.0 / math.sqrt(k)
        self.register_buffer("basis_A", ((torch.rand(k, r, self.in_features, generator=g, **cpu) * 2 - 1) * scale)
                             .to(f["device"]), persistent=False)
        self.register_buffer("basis_B", ((torch.rand(k, self.out_features, r, generator=g, **cpu) * 2 - 1) * scale)
                             .to(f["device"]), persistent=False)
        self.register_buffer("lora_A0", kaiming_uniform((r, self.in_features), self.in_features, g, **cpu)
                             .to(f["device"]), persistent=False)
        self.nola_alpha = nn.Parameter(torch.zeros(k, **f))
        self.nola_beta = nn.Parameter(torch.zeros(k, **f))
        self.scaling = alpha / r

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.lora_A0 + torch.einsum("k,kri->ri", self.nola_alpha, self.basis_A)
        b = torch.einsum("k,kor->or", self.nola_beta, self.basis_B)
        return a, b

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.factors()
        return (x @ a.T @ b.T) * self.scaling


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    r, k, alpha, seed = int(p["r"]), int(p["num_basis"]), float(p["lora_alpha"]), int(p["seed"])
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: NolaLinear(lin, r, k, alpha, seed + i))


NOLA = register(MethodImpl(name="nola", apply=apply))
