"""GaLore, gradient low-rank projection (arXiv:2403.03507): full-parameter training whose Adam state
lives in a rank-r subspace of each weight matrix's gradient.

Defining rule (Zhao et al. 2024, Alg. 1): for every projected m×n matrix, every T steps
P ← the top-r singular vectors of the current gradient G (on its smaller side, the authors' 'std'
projector); Adam runs on the projected gradient PᵀG (or G P), so its two moments are r×n (m×r);
the Adam direction N is projected back, W ← W − lr·α·P N. Everything else (embeddings, norms, biases,
the head) gets plain AdamW. As in the authors' code, the moments are kept when P is recomputed.

r is a memory knob, not a capacity knob: every weight trains whatever r is (capacity_knob: null).
The optimizer is written here (no galore-torch dependency); its state, P included, round-trips
through state_dict, so a checkpointed run resumes exactly.
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


class GaLoreAdamW(SubspaceAdamW):
    """AdamW with GaLore's projection on the groups marked `projected` (rank, update_proj_gap, scale)."""

    def __init__(self, params: Any, *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, rank: int = 4, update_proj_gap: int = 500, scale: float = 4.0) -> None:
        if rank < 1 or update_proj_gap < 1:
            raise ValueError(f"galore: rank={rank} and update_proj_gap={update_proj_gap} must be >= 1")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "projected": False,
                    "rank": rank, "update_proj_gap": update_proj_gap, "scale": scale}
        super().__init__(params, defaults)

    @staticmethod
    def matrix_update(state: dict[str, Any], grad: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        basis, right, _ = subspace(state, grad, group["rank"], group["update_proj_gap"])
        low = project(grad, basis, right)
        direction = adam_direction(state, low, group["betas"], group["eps"])
        return project_back(direction, basis, right) * group["scale"]


def galore_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> GaLoreAdamW:
    params, optim = method_cfg.get("params") or {}, method_cfg.get("optim") or {}
    groups = param_groups(model, block_matrices(model), rank=int(params["rank"]),
                          update_proj_gap=int(params["update_proj_gap"]), scale=float(params["scale"]))
    return GaLoreAdamW(groups, lr=float(optim["lr"]), weight_decay=float(optim.get("weight_decay") or 0.0))


GALORE = register(MethodImpl(name="galore", apply=apply_all_trainable, optimizer=galore_optimizer))
