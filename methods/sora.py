"""SoRA (arXiv:2311.11696, "Sparse Low-rank Adaptation of Pre-trained Language Models"): LoRA with a gate
vector g between its factors, ΔW = (α/r)·B·diag(g)·A, whose entries are trained by a proximal gradient step for
an L1 penalty: after each optimizer step the gate is soft-thresholded, so gate entries (whole rank-1
components) become exactly zero and the adapter's rank becomes sparse; r is the maximum rank."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class SoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base)
        f = self.factory
        # the authors' src/lora.py (TsinghuaC3I/SoRA, LowRankLinear): A kaiming, B = 0, gate ~ N(0, 1) (r entries),
        # forward ((x·Aᵀ) ⊙ g)·Bᵀ·α/r. The gate comes from the global RNG like A (both saved with the adapter).
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.gate = nn.Parameter(torch.randn(r).to(**f))
        self.scaling = alpha / r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.lora_A.T) * self.gate) @ self.lora_B.T * self.scaling

    @property
    def rank(self) -> int:
        """Components still alive (non-zero gate entries)."""
        return int(torch.count_nonzero(self.gate))


@torch.no_grad()
def soft_threshold_(t: torch.Tensor, threshold: float) -> None:
    """The proximal map of threshold·‖·‖₁: t ← sign(t)·max(|t| − threshold, 0) (entries below become exactly 0)."""
    t.copy_(torch.sign(t) * (t.abs() - threshold).clamp_min(0))


class SoraAdamW(torch.optim.AdamW):
    """AdamW on every trainable tensor; the groups with a `threshold` (the gates) are then soft-thresholded.

    Defining rule (arXiv:2311.11696, Sec. 3, Eq. 5: g ← T_ξ(g − η∇L); the authors' src/sparse_optimizer.py,
    SparseAdamW): the gates have their own AdamW step (no weight decay) followed by soft-thresholding with the
    constant ξ (their sparse_lambda_2, applied as it is, not multiplied by the learning rate), every step; the
    other parameters get plain AdamW. The authors' optional ξ schedule (a sequence of re-trainings with growing ξ
    to trace a sparsity curve) is not part of a run here."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        for group in self.param_groups:
            threshold = float(group.get("threshold") or 0.0)
            if threshold > 0:
                for p in group["params"]:
                    if p.grad is not None:
                        soft_threshold_(p, threshold)
        return loss


def layers(model: nn.Module) -> list[SoraLinear]:
    return [m for m in model.modules() if isinstance(m, SoraLinear)]


def make_optimizer(model: nn.Module, method_cfg: Mapping[str, Any]) -> SoraAdamW:
    optim = method_cfg.get("optim") or {}
    params = method_cfg["params"]
    gates = [m.gate for m in layers(model)]
    ids = {id(g) for g in gates}
    rest = [q for q in model.parameters() if q.requires_grad and id(q) not in ids]
    groups = [{"params": rest, "weight_decay": float(optim.get("weight_decay") or 0.0)},
              {"params": gates, "weight_decay": 0.0, "threshold": float(params["threshold"]),
               "lr": float(params.get("gate_lr") or optim["lr"])}]
    return SoraAdamW([g for g in groups if g["params"]], lr=float(optim["lr"]))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    if float(p["threshold"]) < 0:
        raise ValueError(f"sora: threshold={p['threshold']} must be >= 0")
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: SoraLinear(lin, int(p["r"]), float(p["lora_alpha"])))


SORA = register(MethodImpl(name="sora", apply=apply, optimizer=make_optimizer))
