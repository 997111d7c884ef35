"""SVFit (arXiv:2409.05926, "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular
Values"): W0 = W_r + W_e with W_r = U_r·diag(σ)·V_rᵀ its best rank-r part; U_r, V_r and the residual W_e are frozen
and only the top-r singular values σ train: r parameters per adapted layer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, wrap


class SVFitLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int) -> None:
        super().__init__(base)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"svfit: r={r} exceeds the rank of a {self.out_features}×{self.in_features} layer")
        # Defining rule (arXiv:2409.05926, Sec. III; checked against the abstract and the paper's method summary,
        # no authors' code found): W0 = UΣVᵀ, W = W_e + U_r·diag(σ)·V_rᵀ with W_e = W0 − U_rΣ_rV_rᵀ frozen, U_r and
        # V_r frozen, σ initialised to the top-r singular values Σ_r and the only trainable tensor. Written here as
        # W0 + U_r·diag(σ − Σ_r)·V_rᵀ (the same weight; W0 untouched), so W0 is reproduced exactly at init.
        u, s, vh = torch.linalg.svd(base.weight.detach().to(torch.float32), full_matrices=False)
        f = self.factory
        # persistent: an SVD recomputed on another device may flip signs of singular vectors
        self.register_buffer("lora_U", u[:, :r].contiguous().to(**f))
        self.register_buffer("lora_V", vh[:r].contiguous().to(**f))
        self.register_buffer("lora_S0", s[:r].clone().to(**f))
        self.lora_S = nn.Parameter(s[:r].clone().to(**f))

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.lora_V.T) * (self.lora_S - self.lora_S0)) @ self.lora_U.T


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    r = int(method_cfg["params"]["r"])
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: SVFitLinear(lin, r))


SVFIT = register(MethodImpl(name="svfit", apply=apply))
