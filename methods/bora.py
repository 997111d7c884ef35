"""BoRA (arXiv:2412.06441, "BoRA: Bi-dimensional Weight-Decomposed Low-Rank Adaptation"): DoRA's magnitude/direction
decomposition applied along both dimensions of the weight: the LoRA-updated direction V = W0 + s·B·A is normalised
and rescaled per output unit by a trainable magnitude vector, then per input unit by a second one, so both the
row-wise and the column-wise magnitudes train: r·(d_in + d_out) + d_in + d_out parameters per adapted layer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class BoRALinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base)
        # Defining rule (arXiv:2412.06441, Sec. 3; checked against the abstract and third-party summaries of the
        # paper, which describe two trainable magnitudes, one per dimension, applied with two normalisation steps;
        # no authors' code found): V = W0 + s·B·A (LoRA, s = α/r, A kaiming-uniform, B = 0);
        # V' = diag(m_out)·V / ‖V‖_row (DoRA's step: each output unit's weight vector normalised, as peft's DoRA);
        # W = V'·diag(m_in) / ‖V'‖_col (each input unit's column of V' normalised and rescaled).
        # m_out = ‖W0‖_row and m_in = ‖W0‖_col at init, so W = W0 until B trains. As in DoRA (arXiv:2402.09353
        # Sec. 4.3) both norms are constants to autograd. The order of the two steps (output side first) is this
        # implementation's reading; the paper's text was not available here to confirm it.
        w = base.weight.detach().to(torch.float32)
        f = self.factory
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.lora_m_out = nn.Parameter(w.norm(dim=1).to(**f))
        self.lora_m_in = nn.Parameter(w.norm(dim=0).to(**f))
        self.scaling = alpha / r

    def _scales(self, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) with W = diag(a)·V·diag(b)."""
        v = w0 + self.scaling * self.lora_B @ self.lora_A
        a = self.lora_m_out / v.norm(dim=1).detach()
        b = self.lora_m_in / (a.unsqueeze(1) * v).norm(dim=0).detach()
        return a, b

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        w0 = self.base_layer.weight.to(x.dtype)
        a, b = self._scales(w0)
        xb = x * b
        # W·x − W0·x = a ⊙ (W0·(b ⊙ x) + s·B·A·(b ⊙ x)) − W0·x
        return a * (xb @ w0.T + (xb @ self.lora_A.T @ self.lora_B.T) * self.scaling) - x @ w0.T


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: BoRALinear(lin, int(p["r"]), float(p["lora_alpha"])))


BORA = register(MethodImpl(name="bora", apply=apply))
