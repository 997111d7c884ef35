"""ALLoRA (arXiv:2410.09692, "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws"): LoRA without
dropout and without the α/r scaling, ΔW = B·A, whose gradients are rescaled, per output unit of ΔW, by a
coefficient inversely proportional to that unit's update norm, so B escapes its zero init fast and slows as it
grows."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class AlloraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, eta: float) -> None:
        super().__init__(base)
        f = self.factory
        # no dropout and no α/r: the two LoRA hyper-parameters ALLoRA removes (arXiv:2410.09692, Sec. 4)
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.eta = eta
        self.rescale = True   # False gives plain LoRA gradients (the property test compares the two)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A, self.lora_B
        if not self.rescale:
            return x @ a.T @ b.T
        # Two paths with one forward value x·Aᵀ·Bᵀ: the input's gradient goes through detached factors,
        # unscaled (earlier layers see plain LoRA's gradient); A's and B's go through a detached input, with
        # the output gradient of unit i multiplied by s_i first.
        to_input = x @ a.detach().T @ b.detach().T
        to_factors = x.detach() @ a.T @ b.T
        s = allora_coefficient(b.detach() @ a.detach(), self.eta)
        return to_input + s * (to_factors - to_factors.detach())


def allora_coefficient(delta_w: torch.Tensor, eta: float) -> torch.Tensor:
    """Defining rule (arXiv:2410.09692, "scaling the per sample and per parameter gradients with a coefficient
    inversely proportional to parameters' ℓ2 norm"): output unit i of ΔW = B·A has the gradient that reaches
    A and B through it multiplied by s_i = 1/√(‖ΔW_i,:‖² + 1/η²). B = 0 at init gives every unit the cap η,
    so B escapes zero fast; a unit slows as its update grows. Per output row of B·A, applied to the output
    gradient feeding A and B and not to the input's, is a reading of the paper's Sec. 4.2 by a third-party
    implementation (we could reach the abstract only); the squared norm is the abstract's "inversely
    proportional". Per row of ΔW rather than per row of A and of B matters under Adam: a positive factor on
    one parameter row's own gradient is nearly cancelled by Adam's normalisation, while s mixes the rows of
    A's gradient (∂L/∂A = Bᵀ·diag(s)·δᵀ·x)."""
    return 1.0 / torch.sqrt(delta_w.pow(2).sum(dim=1) + 1.0 / eta**2)


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    eta = float(p["eta"])
    if not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"allora: eta={eta} must be a positive number")
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: AlloraLinear(lin, int(p["r"]), eta))


ALLORA = register(MethodImpl(name="allora", apply=apply))
