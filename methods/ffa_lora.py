"""FFA-LoRA (arXiv:2403.12313, "Improving LoRA in Privacy-preserving Federated Learning"): LoRA with A frozen
at its random, non-zero initialization and only the zero-initialised B trained: ΔW = (α/r)·B·A."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class FfaLoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2403.12313, Sec. 4): A keeps LoRA's random init and is never updated; B = 0 at init
        # and is the only trainable factor, so ΔW stays in the fixed row space of A (and aggregating B across
        # clients is exact). A is drawn from the global RNG (seeded per job), so it is a persistent buffer.
        self.register_buffer("lora_A", kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.scaling = alpha / r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: FfaLoraLinear(lin, int(p["r"]), float(p["lora_alpha"])))


FFA_LORA = register(MethodImpl(name="ffa_lora", apply=apply))
