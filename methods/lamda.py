"""LaMDA (arXiv:2406.12832, "LaMDA: Large Model Fine-Tuning via Spectrally Decomposed Low-Dimensional
Adaptation"): ΔW = (α/r)·B·S·A with the first projection A frozen, a trainable low-dimensional square S (r×r),
and the second projection B trained at first and then frozen column by column early in training, so most
steps update only r² parameters per layer."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class LamdaLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float, freeze_fraction: float) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2406.12832, Sec. 3; the authors' lamda.py and custom_trainer.py): A (PMA) keeps
        # LoRA's random init and is frozen; S = nn.Linear(r, r)'s default init, trained; B (PMB) = 0 at init and
        # trained until its columns freeze: after step s the first ⌊s / (η·total_steps)⌋ columns are frozen
        # (`gradual_freeze_B`, η = 0.3 there), all of B once that reaches r. A comes from the global RNG, so it
        # is a persistent buffer.
        self.register_buffer("lora_A", kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_S = nn.Parameter(kaiming_uniform((r, r), r, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.scaling = alpha / r
        self.freeze_fraction = freeze_fraction
        # B's frozen columns and their values (restored after every optimizer step: Adam's momentum would
        # otherwise keep moving a column whose gradient is zeroed); persistent so a resumed run keeps them
        self.register_buffer("b_frozen_cols", torch.zeros((), dtype=torch.long, device=f["device"]))
        self.register_buffer("b_frozen", torch.zeros(self.out_features, r, **f))

    def _b(self) -> torch.Tensor:
        """B with its frozen columns cut from the graph (no gradient reaches them)."""
        n = int(self.b_frozen_cols)
        b = self.lora_B
        return torch.cat([b[:, :n].detach(), b[:, n:]], dim=1) if n else b

    @torch.no_grad()
    def freeze_columns(self, n: int) -> None:
        """Keep B's first `n` columns (at most r) at their values from now on."""
        r = self.lora_B.shape[1]
        n = min(n, r)
        done = int(self.b_frozen_cols)
        self.lora_B[:, :done] = self.b_frozen[:, :done]   # undo what the optimizer did to frozen columns
        if n > done:
            self.b_frozen[:, done:n] = self.lora_B[:, done:n]
            self.b_frozen_cols.fill_(n)
        if n >= r:
            self.lora_B.requires_grad_(False)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_S.T @ self._b().T) * self.scaling


def freeze_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step` (0-based): freeze the columns of B the schedule has reached."""
    for m in model.modules():
        if isinstance(m, LamdaLinear):
            m.freeze_columns(math.floor((step + 1) / (m.freeze_fraction * total_steps)))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    eta = float(p["freeze_fraction"])
    if not 0 < eta <= 1:
        raise ValueError(f"lamda: freeze_fraction={eta} must be in (0, 1]")
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: LamdaLinear(lin, int(p["r"]), float(p["lora_alpha"]), eta))


LAMDA = register(MethodImpl(name="lamda", apply=apply, callback=freeze_callback))
