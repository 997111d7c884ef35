"""EDoRA (arXiv:2501.12067, "EDoRA: Efficient Weight-Decomposed Low-Rank Adaptation via Singular Value
Decomposition"): DoRA's decomposition W = m·V/‖V‖ with the direction's low-rank update B·R·A, where B and A are
frozen from W0's truncated SVD and only the r×r core R and the magnitude vector m train: r² + d_out parameters
per adapted layer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, wrap


class EDoRALinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, init_std: float) -> None:
        super().__init__(base)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"edora: r={r} exceeds the rank of a {self.out_features}×{self.in_features} layer")
        # Defining rule (arXiv:2501.12067, Sec. 3; the authors' utils/initialization_utils.py `find_and_initialize`
        # and utils/latent_utils.py `forward_edora`): W = m ⊙ (W0 + s·B·R·A) / ‖W0 + s·B·R·A‖, the norm taken per
        # output unit (peft's DoRA convention) and detached from the gradient (DoRA, arXiv:2402.09353 Sec. 4.3, as
        # the authors do); s = α/r. B = U_r and A = Σ_r·V_rᵀ from the truncated SVD of W0 (their SVD of W0ᵀ gives
        # encoder V_rΣ_r → A, decoder U_rᵀ → B), both frozen; R ~ N(0, σ²) with σ = 1e-5 and m = ‖W0‖ (DoRA's
        # init), the only trainable tensors, so the model is W0 up to O(σ) at init.
        w = base.weight.detach().to(torch.float32)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        f = self.factory
        # persistent: an SVD recomputed on another device may flip signs of singular vectors
        self.register_buffer("lora_B", u[:, :r].contiguous().to(**f))
        self.register_buffer("lora_A", (s[:r, None] * vh[:r]).to(**f))
        self.lora_R = nn.Parameter(torch.randn(r, r, **f) * init_std)
        self.lora_magnitude = nn.Parameter(w.norm(dim=1).to(**f))
        self.scaling = alpha / r

    def _low_rank(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_R.T @ self.lora_B.T) * self.scaling

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.base_layer.weight.to(x.dtype)
        direction = w0 + self.scaling * self.lora_B @ self.lora_R @ self.lora_A
        scale = self.lora_magnitude / direction.norm(dim=1).detach()   # m / ‖W0 + s·BRA‖ (a constant to autograd)
        # W·x − W0·x = (scale − 1)·W0·x + scale·s·B·R·A·x
        return (scale - 1) * (x @ w0.T) + scale * self._low_rank(x)


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: EDoRALinear(lin, int(p["r"]), float(p["lora_alpha"]), float(p["init_std"])))


EDORA = register(MethodImpl(name="edora", apply=apply))
