"""LoRA-Pro (arXiv:2407.18242, "LoRA-Pro: Are Low-Rank Adapters Properly Optimized?"): LoRA whose factor gradients
are replaced, before the optimizer step, by the closed-form g_A, g_B that make the equivalent gradient
s·(B·g_A + g_B·A) the closest low-rank-reachable approximation of the full gradient ∂L/∂W (its projection onto
the tangent space of the rank-r matrices at B·A), with the free r×r term X chosen to stay closest to LoRA's own
gradients."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap

DELTA = 1e-8   # the authors' ridge in (AAᵀ + δI)⁻¹ and (BᵀB + δI)⁻¹ (pinv of the regularised Gram matrices)


class LoraProLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__(base)
        f = self.factory
        # LoRA (arXiv:2106.09685): A kaiming, B = 0, ΔW = s·B·A with s = α/r
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.scaling = alpha / r

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def solve_sylvester(p: torch.Tensor, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """X with P·X + X·Q = C for symmetric positive semi-definite P, Q (r×r) not both singular: in the eigenbases
    P = U·diag(λ)·Uᵀ, Q = V·diag(μ)·Vᵀ the equation is elementwise, X = U·((Uᵀ·C·V) / (λ_i + μ_j))·Vᵀ."""
    lam, u = torch.linalg.eigh(p)
    mu, v = torch.linalg.eigh(q)
    denom = lam[:, None] + mu[None, :]
    return u @ ((u.T @ c @ v) / torch.where(denom.abs() > 1e-30, denom, torch.full_like(denom, 1e-30))) @ v.T


@torch.no_grad()
def adjusted_gradients(a: torch.Tensor, b: torch.Tensor, grad_a: torch.Tensor, grad_b: torch.Tensor,
                       s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Defining rule (arXiv:2407.18242, Theorems 2.1 and 2.2; the authors' peta/optim.py, X_mode "sylvester").
    LoRA's own gradients are g_A^lora = s·Bᵀ·G and g_B^lora = s·G·Aᵀ (G = ∂L/∂W, never formed). The g_A, g_B
    minimising ‖s·(B·g_A + g_B·A) − G‖_F are

        g_A = (1/s²)·(BᵀB)⁻¹·g_A^lora + X·A
        g_B = (1/s²)·(I − B·(BᵀB)⁻¹·Bᵀ)·g_B^lora·(AAᵀ)⁻¹ − B·X

    for any r×r X (their equivalent gradient is then P_B·G + (I − P_B)·G·P_A, P the orthogonal projectors on
    B's columns and A's rows); the X closest to LoRA's gradients (min ‖g_A − g_A^lora‖² + ‖g_B − g_B^lora‖²)
    solves BᵀB·X + X·AAᵀ = −(1/s²)·(BᵀB)⁻¹·g_A^lora·Aᵀ."""
    f32 = torch.float32
    a, b, grad_a, grad_b = a.to(f32), b.to(f32), grad_a.to(f32), grad_b.to(f32)
    r = a.shape[0]
    eye = torch.eye(r, dtype=f32, device=a.device)
    aat, btb = a @ a.T, b.T @ b
    aat_inv = torch.linalg.pinv(aat + DELTA * eye)
    btb_inv = torch.linalg.pinv(btb + DELTA * eye)
    x = solve_sylvester(btb, aat, -(1 / s**2) * btb_inv @ grad_a @ a.T)
    new_a = (1 / s**2) * btb_inv @ grad_a + x @ a
    new_b = (1 / s**2) * (grad_b @ aat_inv - b @ (btb_inv @ (b.T @ grad_b @ aat_inv))) - b @ x
    return new_a, new_b


class LoraProAdamW(torch.optim.AdamW):
    """AdamW whose step first replaces each layer's (∂L/∂A, ∂L/∂B) by LoRA-Pro's adjusted gradients.

    Left out (documented, not hidden): the paper's Sec. 2.4 also carries Adam's moments in the full m×n space of
    the equivalent gradient and maps the Adam direction back through the same closed form; here AdamW's moments
    stay those of the adjusted factor gradients (r×(m + n) state instead of 2·m×n per layer). The gradient
    adjustment itself is the theorem's, exactly."""

    def __init__(self, params: Any, pairs: list[tuple[nn.Parameter, nn.Parameter, float]], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.pairs = pairs

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for a, b, s in self.pairs:
            if a.grad is None or b.grad is None:
                continue
            new_a, new_b = adjusted_gradients(a, b, a.grad, b.grad, s)
            a.grad.copy_(new_a)
            b.grad.copy_(new_b)
        return super().step(closure)


def layers(model: nn.Module) -> list[LoraProLinear]:
    return [m for m in model.modules() if isinstance(m, LoraProLinear)]


def make_optimizer(model: nn.Module, method_cfg: Mapping[str, Any]) -> LoraProAdamW:
    optim = method_cfg.get("optim") or {}
    pairs = [(m.lora_A, m.lora_B, m.scaling) for m in layers(model)]
    return LoraProAdamW([q for q in model.parameters() if q.requires_grad], pairs, lr=float(optim["lr"]),
                        weight_decay=float(optim.get("weight_decay") or 0.0))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: LoraProLinear(lin, int(p["r"]), float(p["lora_alpha"])))


LORA_PRO = register(MethodImpl(name="lora_pro", apply=apply, optimizer=make_optimizer))
