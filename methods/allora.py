"""ALLoRA (arXiv:2410.09692, "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws"): LoRA without
dropout and without the α/r scaling, ΔW = B·A, whose gradients are rescaled per parameter by a coefficient
inversely proportional to the parameter's ℓ2 norm, so B escapes its zero init fast and slows as it grows."""
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
        if self.rescale:
            a, b = rescale_grad(a, allora_coefficient(a.detach(), self.eta)), rescale_grad(
                b, allora_coefficient(b.detach(), self.eta))
        return x @ a.T @ b.T


def rescale_grad(param: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """`param` in the forward pass; its gradient multiplied by `coef` in the backward pass (coef is computed
    from the parameter as it is in this step: nothing changes it between the forward and the backward)."""
    return param.detach() + coef * (param - param.detach())


def allora_coefficient(param: torch.Tensor, eta: float) -> torch.Tensor:
    """Defining rule (arXiv:2410.09692): each row θ_i of A and B gets its gradient multiplied by
    1/√(‖θ_i‖² + 1/η²): inversely proportional to the row's ℓ2 norm, capped at η where the row is zero (B's
    init), so the effective learning rate adapts to the parameter's size. Checked against the abstract only
    ("scaling the per sample and per parameter gradients with a coefficient inversely proportional to
    parameters' ℓ2 norm"); the row-wise norm and the cap η are our reading, to confirm against the paper."""
    return 1.0 / torch.sqrt(param.pow(2).sum(dim=1, keepdim=True) + 1.0 / eta**2)


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    eta = float(p["eta"])
    if not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"allora: eta={eta} must be a positive number")
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: AlloraLinear(lin, int(p["r"]), eta))


ALLORA = register(MethodImpl(name="allora", apply=apply))
