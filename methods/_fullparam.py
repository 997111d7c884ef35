"""Shared pieces of the full-parameter methods (GaLore, FRUGAL, LISA): which modules are the
transformer blocks, which weights get a low-rank gradient projection, and the projection itself.

Full-parameter methods train the base weights (their YAML says `info.trains_base: true`); what makes
them methods is the optimizer (GaLore, FRUGAL) or the schedule of what trains (LISA).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def apply_all_trainable(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """Every weight trains (as full fine-tuning); the method is in the optimizer."""
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, list) of the model's repeated transformer blocks: the longest ModuleList whose
    children are all of one type (BERT `encoder.layer`, llama `model.layers`). The same rule finds
    them on every architecture of the zoo without a per-model table."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if (isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1
                and (best is None or len(mod) > len(best[1]))):
            best = (name, mod)
    if best is None:
        raise TypeError(f"{type(model).__name__}: no list of transformer blocks found")
    return best


def block_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of the Linear layers inside the transformer blocks (attention and MLP): the
    matrices GaLore (arXiv:2403.03507) projects. Embeddings, norms, biases and the head are left to
    plain Adam, as in the authors' code."""
    _, blocks = transformer_blocks(model)
    return [m.weight for block in blocks for m in block.modules()
            if isinstance(m, nn.Linear) and m.weight.requires_grad]


def top_singular_basis(grad: torch.Tensor, rank: int) -> tuple[torch.Tensor, bool]:
    """GaLore's 'std' projector: P holds the top-`rank` singular vectors of the gradient on its
    smaller side. Returns (P, right): right=True → P is n×r (right singular vectors; G ≈ (G P) Pᵀ),
    else P is m×r (left singular vectors; G ≈ P (Pᵀ G)). Optimizer state is then m×r or r×n."""
    m, n = grad.shape
    u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
    if m >= n:
        return vh[:rank].T.contiguous(), True
    return u[:, :rank].contiguous(), False


def project(grad: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    """The gradient in the r-dimensional subspace: G P (right) or Pᵀ G (left)."""
    return grad @ basis if right else basis.T @ grad


def project_back(low: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    """A low-rank direction back in the weight's shape: lies in span(P)."""
    return low @ basis.T if right else basis @ low


def adam_direction(state: dict[str, Any], grad: torch.Tensor, betas: tuple[float, float], eps: float) -> torch.Tensor:
    """One Adam moment update on `grad` (moments in `state`, created on first use) and the
    bias-corrected direction m̂ / (√v̂ + ε)."""
    b1, b2 = betas
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros_like(grad)
        state["exp_avg_sq"] = torch.zeros_like(grad)
        state["adam_step"] = 0
    state["adam_step"] += 1
    t = state["adam_step"]
    state["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = (state["exp_avg_sq"] / (1 - b2 ** t)).sqrt_().add_(eps)
    return (state["exp_avg"] / (1 - b1 ** t)) / denom


def param_groups(model: nn.Module, projected: list[nn.Parameter], **projected_opts: Any) -> list[dict[str, Any]]:
    """Two groups over every trainable parameter: the projected matrices (with `projected_opts`)
    and the rest (plain Adam)."""
    ids = {id(p) for p in projected}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": projected, "projected": True, **projected_opts}]
    if rest:
        groups.append({"params": rest, "projected": False})
    return groups


def subspace(state: dict[str, Any], grad: torch.Tensor, rank: int, gap: int
             ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(basis, right, refreshed) of one matrix: its gradient's top-`rank` singular subspace, recomputed
    every `gap` of its steps (GaLore's and FRUGAL's update_gap) and kept in `state` in between."""
    t = state.get("proj_step", 0)
    refreshed = t % gap == 0
    if refreshed:
        basis, right = top_singular_basis(grad, min(int(rank), *grad.shape))
        state["basis"], state["right"] = basis.to(grad.dtype), right
    state["proj_step"] = t + 1
    return state["basis"], state["right"], refreshed


class SubspaceAdamW(torch.optim.Optimizer):
    """The optimizer step GaLore and FRUGAL share: a 2-D weight in a ``projected`` group gets the method's
    own update (:meth:`matrix_update`), every other parameter plain Adam; decoupled weight decay, then
    ``p -= lr · update``. The methods differ only in what happens inside the gradient's subspace."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                grad = p.grad
                if group["projected"] and grad.dim() == 2:
                    update = self.matrix_update(state, grad, group)
                else:
                    update = adam_direction(state, grad, group["betas"], group["eps"])
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr)
        return loss

    @staticmethod
    def matrix_update(state: dict[str, Any], grad: torch.Tensor, group: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError
