"""LoRA-XS (arXiv:2405.17604): W = W0 + (α/r)·B·R·A with B = U_r and A = Σ_r·V_rᵀ frozen from the truncated SVD
of W0 and only the r×r matrix R trained: r² parameters per adapted layer, whatever the layer's width."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, wrap


class LoraXSLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, init_std: float) -> None:
        super().__init__(base)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"lora_xs: r={r} exceeds the rank of a {self.out_features}×{self.in_features} layer")
        # Defining rule (arXiv:2405.17604, Sec. 3; the authors' utils/initialization_utils.py): W0 = UΣVᵀ and
        # B = U_r, A = Σ_r·V_rᵀ, both frozen. Their code runs scikit-learn's TruncatedSVD on W0ᵀ (in×out), whose
        # transform U'Σ' = V_rΣ_r becomes lora_A (transposed) and whose components_ U_rᵀ become lora_B
        # (transposed): Σ sits on the A side, so ΔW = B·R·A = U_r·R·Σ_r·V_rᵀ. R between them is the only
        # trainable tensor, initialised N(0, σ²) with σ = 1e-5 (W0 is reproduced at init up to O(σ)).
        u, s, vh = torch.linalg.svd(base.weight.detach().to(torch.float32), full_matrices=False)
        f = self.factory
        # persistent: an SVD recomputed on another device may flip signs of singular vectors
        self.register_buffer("lora_B", u[:, :r].to(**f))
        self.register_buffer("lora_A", (s[:r, None] * vh[:r]).to(**f))
        self.lora_R = nn.Parameter(torch.randn(r, r, **f) * init_std)
        self.scaling = alpha / r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_R.T @ self.lora_B.T) * self.scaling


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: LoraXSLinear(lin, int(p["r"]), float(p["lora_alpha"]), float(p["init_std"])))


LORA_XS = register(MethodImpl(name="lora_xs", apply=apply))
