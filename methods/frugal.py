"""FRUGAL, full-rank updates with gradient splitting (arXiv:2411.07837).

Defining rule (Zmushko et al. 2024): each projected weight's gradient is split in two. The part in a
low-dimensional subspace (here GaLore-style: P = top-r singular vectors of the gradient, recomputed
every T steps, one of the projections the paper offers) gets a state-full optimizer, Adam, whose
moments are r-dimensional and reset when P changes; the residual G − P PᵀG gets a state-free one,
signSGD, with its own learning-rate multiplier. So the update is full-rank while the optimizer state
is low-rank:  W ← W − lr·[P·Adam(PᵀG) + λ·sign(G − P PᵀG)].
The authors' defaults: update_gap 200, signSGD on the residual; rank 8 and inactive_lr_scale 0.1 in
their GLUE fine-tuning. Parameters outside the transformer blocks' Linear layers (embeddings, norms,
biases, head) get plain AdamW, as in their code.

Every weight trains: capacity_knob is null; rank is a memory knob.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from methods import MethodImpl, register
from methods._fullparam import (
    SubspaceAdamW,
    adam_direction,
    apply_all_trainable,
    block_matrices,
    param_groups,
    project,
    project_back,
    subspace,
)


class FrugalAdamW(SubspaceAdamW):
    """Adam on the projected subspace + signSGD on the residual (groups marked `projected`), AdamW on
    the rest."""

    def __init__(self, params: Any, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, rank: int = 8, update_gap: int = 200,
                 inactive_lr_scale: float = 0.1, reset_statistics: bool = True) -> None:
        if rank < 1 or update_gap < 1:
            raise ValueError(f"frugal: rank={rank} and update_gap={update_gap} must be >= 1")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "projected": False,
                    "rank": rank, "update_gap": update_gap, "inactive_lr_scale": inactive_lr_scale,
                    "reset_statistics": reset_statistics}
        super().__init__(params, defaults)

    @staticmethod
    def matrix_update(state: dict[str, Any], grad: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        basis, right, refreshed = subspace(state, grad, group["rank"], group["update_gap"])
        if refreshed and group["reset_statistics"]:   # new subspace: old moments describe other coordinates
            for key in ("exp_avg", "exp_avg_sq", "adam_step"):
                state.pop(key, None)
        low = project(grad, basis, right)
        stateful = project_back(adam_direction(state, low, group["betas"], group["eps"]), basis, right)
        residual = grad - project_back(low, basis, right)
        return stateful + group["inactive_lr_scale"] * residual.sign()


def frugal_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> FrugalAdamW:
    params, optim = method_cfg.get("params") or {}, method_cfg.get("optim") or {}
    groups = param_groups(model, block_matrices(model), rank=int(params["rank"]),
                          update_gap=int(params["update_gap"]),
                          inactive_lr_scale=float(params["inactive_lr_scale"]))
    return FrugalAdamW(groups, lr=float(optim["lr"]), weight_decay=float(optim.get("weight_decay") or 0.0))


FRUGAL = register(MethodImpl(name="frugal", apply=apply_all_trainable, optimizer=frugal_optimizer))
