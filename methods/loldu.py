"""LoLDU (arXiv:2410.13618, "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient
Fine-Tuning"): W0 = P·L·D·U (LU with partial pivoting, U's diagonal pulled out as D); the top-r part P·L_r·D_r·U_r
is taken out of W0 and put back as σ·P·L_r·diag(z)·U_r with P, L_r, U_r frozen and only the diagonal z (r values,
initialised to D_r) and the scalar σ trained: r + 1 parameters per adapted layer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, wrap


class LoLDULinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"loldu: r={r} exceeds the rank of a {self.out_features}×{self.in_features} layer")
        # Defining rule (arXiv:2410.13618, Sec. 3 and Fig. 3; the authors' minloldu/loldu.py, `ldu_decomposition`
        # and `get_residual_matrix`): P, L, U = torch.linalg.lu(W0), D = diag(U), U ← U / D (unit diagonal);
        # L_r = L[:, :r], D_r = D[:r], U_r = U[:r]. The residual W_res = W0 − σ0·P·L_r·diag(D_r)·U_r stays frozen
        # and the layer computes W_res + σ·P·L_r·diag(z)·U_r, with z (init D_r) and the scaling factor σ (a
        # trainable scalar, init σ0 = α/r) the only trainable tensors; P, L_r, U_r are frozen. Written here as
        # W0 + P·L_r·(σ·diag(z) − σ0·diag(D_r))·U_r, the same weight with W0 untouched: at init σ·z − σ0·D_r is
        # exactly 0, so W0 is reproduced exactly (no rounding in a subtracted residual).
        w = base.weight.detach().to(torch.float32)
        p, lower, upper = torch.linalg.lu(w)
        d = torch.diagonal(upper)[:r].clone()
        if bool((d == 0).any()):
            raise ValueError("loldu: W0 has a zero pivot among its first r (LDU needs D_r ≠ 0)")
        f = self.factory
        # persistent: an LU recomputed on another device may pivot differently. P is kept as the row index it
        # applies (P @ M == M[perm]), L_r and U_r as they are.
        self.register_buffer("lora_perm", p.argmax(dim=1).to(f["device"]))
        self.register_buffer("lora_L", lower[:, :r].to(**f))
        self.register_buffer("lora_U", (upper[:r] / d.unsqueeze(1)).to(**f))
        self.register_buffer("lora_D0", d.to(**f))
        self.sigma0 = alpha / r
        self.lora_z = nn.Parameter(d.to(**f).clone())
        self.lora_sigma = nn.Parameter(torch.tensor(self.sigma0, **f))

    def core(self) -> torch.Tensor:
        """σ·z − σ0·D_r: the diagonal between P·L_r and U_r in ΔW (zero at init)."""
        return self.lora_sigma * self.lora_z - self.sigma0 * self.lora_D0

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = ((x @ self.lora_U.T) * self.core()) @ self.lora_L.T   # L_r·diag(·)·U_r·x, before the row permutation
        return h.index_select(-1, self.lora_perm)               # (P·y)[i] = y[perm[i]]


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: LoLDULinear(lin, int(p["r"]), float(p["lora_alpha"])))


LOLDU = register(MethodImpl(name="loldu", apply=apply))
