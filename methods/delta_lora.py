"""Delta-LoRA (arXiv:2309.02411, "Delta-LoRA: Fine-Tuning High-Rank Parameters with the Delta of Low-Rank
Matrices"): LoRA whose pre-trained weight also moves, by λ times the change of the LoRA product in each optimizer
step: W ← W + λ·(α/r)·(B_{t+1}A_{t+1} − B_tA_t). W gets no gradient and no optimizer state; only A and B train."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class DeltaLoraLinear(AdapterLinear):
    # B and A as of the last step: only a resumed run needs them (they equal B, A between steps)
    training_state = ("prev_A", "prev_B")

    def __init__(self, base: nn.Linear, r: int, alpha: float, update_ratio: float, start_steps: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2309.02411, Algorithm 1; also a LoRA-family re-implementation found with the search
        # tool): A kaiming-uniform, B = 0, both trained by the optimizer; after each optimizer step t (0-based) with
        # t > K ("start steps"), W(t+1) = W(t) + λ·(α/r)·(A(t+1)B(t+1) − A(t)B(t)) (their A·B is our B·A). The layer
        # computes W·x + (α/r)·B·A·x with no dropout on the low-rank path (the paper removes it so that the delta
        # stands in for W's gradient). Here W = W0 + D: D is a persistent buffer (zero at init) that the per-step
        # callback moves, W0 stays the frozen backbone weight, so the saved adapter carries what W learned.
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.register_buffer("delta_W", torch.zeros(self.out_features, self.in_features, **f))
        self.register_buffer("prev_A", self.lora_A.detach().clone())
        self.register_buffer("prev_B", self.lora_B.detach().clone())
        self.scaling = alpha / r
        self.update_ratio = update_ratio
        self.start_steps = start_steps

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.delta_W.T + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def propagate(self, step: int) -> None:
        """After optimizer step `step` (0-based): move W by λ·s·Δ(BA) when step > K (Algorithm 1: "if t > K"); remember B, A."""
        if step > self.start_steps:
            delta = self.lora_B @ self.lora_A - self.prev_B @ self.prev_A
            self.delta_W.add_(delta, alpha=self.update_ratio * self.scaling)
        self.prev_A.copy_(self.lora_A)
        self.prev_B.copy_(self.lora_B)


def delta_callback(model: nn.Module, step: int, total_steps: int) -> None:
    for m in model.modules():
        if isinstance(m, DeltaLoraLinear):
            m.propagate(step)


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    start = int(p["start_steps"])
    if start < 0:
        raise ValueError(f"delta_lora: start_steps={start} must be >= 0")
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: DeltaLoraLinear(lin, int(p["r"]), float(p["lora_alpha"]),
                                                    float(p["update_ratio"]), start))


DELTA_LORA = register(MethodImpl(name="delta_lora", apply=apply, callback=delta_callback))
