"""Tied-LoRA (arXiv:2311.09578): one LoRA pair A, B per kind of target module, tied across all layers, with
per-layer trainable scaling vectors: ΔW_l = (α/r)·diag(v_l)·B·diag(u_l)·A (the paper's "vBuA" with every
part trained, TL6, its best configuration)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class TiedFactors(nn.Module):
    """A, B shared by every layer of one target kind (query, value, ...): registered in each of those layers,
    so `parameters()` counts them once and the optimizer updates one tensor."""

    def __init__(self, r: int, in_features: int, out_features: int, **factory: Any) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(kaiming_uniform((r, in_features), in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, **factory))


class TiedLoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, tied: TiedFactors, alpha: float) -> None:
        super().__init__(base)
        r = tied.lora_A.shape[0]
        f = self.factory
        # Defining rule (arXiv:2311.09578, Sec. 2): A and B are tied across layers, each layer keeps only its
        # own u (r) and v (out): B = 0 at init so ΔW = 0, u = v = 1 so B's gradient is not masked.
        self.tied = tied
        self.lora_u = nn.Parameter(torch.ones(r, **f))
        self.lora_v = nn.Parameter(torch.ones(self.out_features, **f))
        self.scaling = alpha / r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.tied.lora_A.T) * self.lora_u) @ self.tied.lora_B.T * self.lora_v * self.scaling


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    r, alpha = int(p["r"]), float(p["lora_alpha"])
    groups: dict[tuple[str, int, int], TiedFactors] = {}

    def make(i: int, hit: str, lin: nn.Linear) -> TiedLoraLinear:
        # tie per target kind and shape (a GQA k/v projection is narrower than q)
        key = (hit, lin.in_features, lin.out_features)
        if key not in groups:
            w = lin.weight
            dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
            groups[key] = TiedFactors(r, lin.in_features, lin.out_features, dtype=dtype, device=w.device)
        return TiedLoraLinear(lin, groups[key], alpha)

    return wrap(backbone, method_cfg, model_cfg, make)


TIED_LORA = register(MethodImpl(name="tied_lora", apply=apply))
