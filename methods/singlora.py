"""SingLoRA (arXiv:2507.05566, "SingLoRA: Low Rank Adaptation Using a Single Matrix"): ΔW = (α/r)·u(t)·A·Aᵀ
with one trainable A (n×r): a symmetric low-rank update with about half LoRA's parameters and no scale
imbalance between two factors; u(t) = min(t/T, 1) ramps the update in from zero."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class SingLoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, ramp_up_steps: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2507.05566, Sec. 3): W = W0 + (α/r)·u(t)·A·Aᵀ, A ∈ R^{n×r} the only trainable
        # tensor, u(t) = min(t/T, 1), A kaiming-uniform. Non-square layers: A has max(d_out, d_in) rows and the
        # smaller side uses its first rows (A* = A[:min]), ΔW = A[:d_out]·A[:d_in]ᵀ, which is A·Aᵀ when square.
        # That is the truncation the paper describes for non-square weights as implemented by the PyPI package
        # peft-singlora (after kyegomez/SingLoRA); checked against those, not against the paper's full text.
        n = max(self.in_features, self.out_features)
        self.lora_A = nn.Parameter(kaiming_uniform((n, r), r, **f))
        self.scaling = alpha / r
        self.ramp_up_steps = ramp_up_steps
        # optimizer steps taken so far (set by the method's callback; saved, so a reload resumes the ramp)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.float32, device=f["device"]))

    def ramp(self) -> torch.Tensor:
        """u(t) = min(t/T, 1). The forward of optimizer step t (1, 2, ...) uses u(t), so the first step already
        has a gradient; evaluation after t steps uses u(t) too, and the untrained model (t = 0) is W0 exactly."""
        t = self.steps_done + (1.0 if self.training else 0.0)
        return torch.clamp(t / self.ramp_up_steps, max=1.0)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a_out, a_in = self.lora_A[: self.out_features], self.lora_A[: self.in_features]
        return (x @ a_in) @ a_out.T * (self.scaling * self.ramp())


def ramp_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step` (0-based): every SingLoRA layer has taken step + 1 steps."""
    for m in model.modules():
        if isinstance(m, SingLoraLinear):
            m.steps_done.fill_(step + 1)


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    ramp = int(p["ramp_up_steps"])
    if ramp < 1:
        raise ValueError(f"singlora: ramp_up_steps={ramp} must be >= 1")
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: SingLoraLinear(lin, int(p["r"]), float(p["lora_alpha"]), ramp))


SINGLORA = register(MethodImpl(name="singlora", apply=apply, callback=ramp_callback))
