"""LoRA-SB (arXiv:2411.19557, "Initialization Using Update Approximation is a Silver Bullet for Extremely
Efficient Low-Rank Fine-Tuning"): LoRA-XS's form W0 + B·R·A (B, A frozen, only the r×r R trains), initialised
so that B·R·A is the best rank-r approximation of full fine-tuning's first update, estimated from gradients on
a few training batches (a data-dependent `init` hook); no α to tune (scale 1)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, batch_loss, wrap


class LoraSBLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, init_lr: float, init_batches: int) -> None:
        super().__init__(base)
        if r > min(self.in_features, self.out_features):
            raise ValueError(f"lora_sb: r={r} exceeds the rank of a {self.out_features}×{self.in_features} layer")
        f = self.factory
        # Until the init hook runs (capacity counting, a model built without data) B, A are W0's top singular
        # vectors and R = 0: the model is W0. The hook replaces all three; B, A are persistent because they come
        # from data.
        u, _, vh = torch.linalg.svd(base.weight.detach().to(torch.float32), full_matrices=False)
        self.register_buffer("lora_B", u[:, :r].to(**f))
        self.register_buffer("lora_A", vh[:r].to(**f))
        self.lora_R = nn.Parameter(torch.zeros(r, r, **f))
        self.init_lr, self.init_batches = init_lr, init_batches

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.lora_A.T @ self.lora_R.T @ self.lora_B.T   # scale 1: the authors set α = r


def first_update(grad_sum: torch.Tensor, lr: float) -> torch.Tensor:
    """Full fine-tuning's first step under Adam, -η·sign(ΣG) (its first update is the gradient's sign), as the
    authors estimate it (utils/gradient_utils.py, estimate_and_process_grads_torch_2)."""
    return -lr * torch.sign(grad_sum)


@torch.no_grad()
def _set_from_update(layer: LoraSBLinear, update: torch.Tensor) -> None:
    # Defining rule (arXiv:2411.19557; the authors' utils/initialization_utils.py, find_and_initialize_grad):
    # with ΔW_1 ≈ U·S·Vᵀ, B = U_r, A = V_rᵀ (orthonormal, frozen) and R = diag(S_r) (scale s = α/r = 1), so
    # B·R·A is the optimal rank-r approximation of ΔW_1 (Eckart–Young) and later R updates stay in those
    # subspaces. W0 is not changed: the init is that first step, taken in the subspace. (The authors use a
    # randomized SVD, torch.svd_lowrank with 10 iterations; this is the exact one.)
    r = layer.lora_R.shape[0]
    u, s, vh = torch.linalg.svd(update.to(torch.float32), full_matrices=False)
    layer.lora_B.copy_(u[:, :r])
    layer.lora_A.copy_(vh[:r])
    layer.lora_R.copy_(torch.diag(s[:r]))


def init_lora_sb(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> None:
    """Accumulate ∂L/∂W0 of every LoRA-SB layer over the first `init_batches` training batches (R = 0 there,
    so these are the base model's gradients), then set B, R, A from the estimated first update."""
    layers = [m for m in model.modules() if isinstance(m, LoraSBLinear)]
    if not layers:
        return
    weights = [m.base_layer.weight for m in layers]
    was_training = model.training
    model.eval()   # the expected gradient: no dropout noise in the estimate
    for w in weights:
        w.requires_grad_(True)
        w.grad = None
    seen = 0
    try:
        for batch in islice(batches, layers[0].init_batches):
            batch_loss(model, batch).backward()
            seen += 1
        if not seen:
            raise ValueError("lora_sb: the init needs at least one training batch")
        grads = [w.grad.detach().clone() for w in weights]
    finally:
        for w in weights:
            w.requires_grad_(False)
        for p in model.parameters():   # the head and R got gradients too: none may leak into step 1
            p.grad = None
        model.train(was_training)
    for layer, g in zip(layers, grads, strict=True):
        _set_from_update(layer, first_update(g, layer.init_lr))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    r, lr, n = int(p["r"]), float(p["init_lr"]), int(p["init_batches"])
    if n < 1:
        raise ValueError(f"lora_sb: init_batches={n} must be >= 1")
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: LoraSBLinear(lin, r, lr, n))


LORA_SB = register(MethodImpl(name="lora_sb", apply=apply, init=init_lora_sb))
