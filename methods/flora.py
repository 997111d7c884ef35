"""Flora (arXiv:2402.03293, "Flora: Low-Rank Adapters Are Secretly Gradient Compressors"): full-parameter
training with Adafactor whose first moment (momentum) of each weight matrix is kept compressed by a random
Gaussian down-projection of rank r, the projection resampled every κ steps (the compressed momentum is carried
over by decompressing with the old projection and compressing with the new one). Each κ-step window moves the
weights in a different random subspace, so the total update is high-rank while the momentum costs r·n, not m·n.

Every weight trains (info.trains_base: true; capacity_knob: null: r is a memory knob, as GaLore's rank).
The optimizer is written here (the authors' flora-opt needs bitsandbytes and accelerate); its state, projection
seeds included, round-trips through state_dict, so a checkpointed run resumes exactly.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from methods import MethodImpl, register
from methods._fullparam import apply_all_trainable

INT64_MAX = torch.iinfo(torch.int64).max


def stable_randn(shape: tuple[int, ...], seed: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def next_seed(seed: int, adv: int = 0xF) -> int:
    """The authors' next_seed: the last of `adv` draws from a generator seeded by `seed`."""
    g = torch.Generator().manual_seed(seed)
    return int(torch.randint(0, INT64_MAX, (adv,), generator=g)[-1])


def split_seed(seed: int) -> tuple[int, int]:
    g = torch.Generator().manual_seed(seed)
    left, right = torch.randint(0, INT64_MAX, (2,), generator=g).tolist()
    return int(left), int(right)


def projection(seed: int, rank: int, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(P, left): the random projection of a matrix of `shape`, N(0, 1/r) entries; left (r×m, on the rows) when
    m < n, else right (n×r) — the smaller side is compressed, as the authors' _down_proj / _up_proj."""
    lseed, rseed = split_seed(seed)
    if shape[0] < shape[-1]:
        return stable_randn((rank, shape[0]), lseed, like.device, like.dtype) / math.sqrt(rank), True
    return stable_randn((shape[-1], rank), rseed, like.device, like.dtype) / math.sqrt(rank), False


def down(seed: int, rank: int, t: torch.Tensor) -> torch.Tensor:
    p, left = projection(seed, rank, tuple(t.shape), t)
    return p @ t if left else t @ p


def up(seed: int, rank: int, shape: tuple[int, ...], c: torch.Tensor) -> torch.Tensor:
    p, left = projection(seed, rank, shape, c)
    return p.T @ c if left else c @ p.T


class Flora(torch.optim.Optimizer):
    """The authors' Flora optimizer (flora_opt/optimizers/torch/flora.py, without quantisation): Adafactor
    (factored second moment, relative step scaled by the parameter's RMS, update clipping) with momentum β1;
    a matrix whose smaller side is ≥ rank and whose aspect ratio is ≤ 4 (not an embedding) keeps its momentum
    compressed (rank r), the rest keep it dense."""

    def __init__(self, params: Any, *, lr: float, rank: int, kappa: int = 1000, beta1: float = 0.9,
                 eps: tuple[float, float] = (1e-30, 1e-3), clip_threshold: float = 1.0, decay_rate: float = -0.8,
                 weight_decay: float = 0.0, scale_parameter: bool = True, seed: int = 0) -> None:
        if rank < 1 or kappa < 1:
            raise ValueError(f"flora: rank={rank} and kappa={kappa} must be >= 1")
        defaults = {"lr": lr, "rank": rank, "kappa": kappa, "beta1": beta1, "eps": eps,
                    "clip_threshold": clip_threshold, "decay_rate": decay_rate, "weight_decay": weight_decay,
                    "scale_parameter": scale_parameter}
        super().__init__(params, defaults)
        idx = seed
        for group in self.param_groups:   # the authors' seeds: seed + running index over the parameters
            for p in group["params"]:
                idx += 1
                self.state[p]["seed"] = idx

    @staticmethod
    def compressed(group: Mapping[str, Any], shape: tuple[int, ...]) -> bool:
        return (len(shape) == 2 and group["beta1"] > 0 and min(shape) >= group["rank"]
                and max(shape) / min(shape) <= 4)

    @staticmethod
    def _rms(t: torch.Tensor) -> torch.Tensor:
        return t.norm(2) / (t.numel() ** 0.5)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad.float(), group)
        return loss

    def _update(self, p: torch.Tensor, grad: torch.Tensor, group: Mapping[str, Any]) -> None:
        state = self.state[p]
        shape = tuple(grad.shape)
        factored = len(shape) == 2
        comp = self.compressed(group, shape)
        b1, rank = group["beta1"], group["rank"]
        if "step" not in state:
            state["step"] = 0
            if b1 > 0:
                cshape = ((rank, shape[-1]) if shape[0] < shape[-1] else (shape[0], rank)) if comp else shape
                state["exp_avg"] = torch.zeros(cshape, dtype=torch.float32, device=grad.device)
            if factored:
                state["exp_avg_sq_row"] = torch.zeros(shape[:-1], dtype=torch.float32, device=grad.device)
                state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:], dtype=torch.float32, device=grad.device)
            else:
                state["exp_avg_sq"] = torch.zeros_like(grad)
        state["step"] += 1
        w = p.float()
        lr = group["lr"] * (max(group["eps"][1], float(self._rms(w))) if group["scale_parameter"] else 1.0)
        beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
        update = grad**2 + group["eps"][0]
        if factored:   # Adafactor's rank-1 second moment
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1 - beta2t)
            col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1 - beta2t)
            r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
            update = (r_factor * col.unsqueeze(-2).rsqrt()).mul_(grad)
        else:
            sq = state["exp_avg_sq"]
            sq.mul_(beta2t).add_(update, alpha=1 - beta2t)
            update = sq.rsqrt().mul_(grad)
        if b1 > 0:
            if not comp:
                update = update * (1 - b1) + state["exp_avg"] * b1
                state["exp_avg"].copy_(update)
            else:
                # Defining rule (arXiv:2402.03293, Alg. 2; the authors' flora_step_): the momentum is kept as
                # C = compress(M) with a seeded random projection; the update uses (1−β1)·u + β1·decompress(C);
                # every κ steps the seed moves on and C is carried into the new projection,
                # C ← down_new(up_old(C)); then C ← β1·C + (1−β1)·down(u) with the current projection.
                seed = state["seed"]
                raw = update.clone()
                update = update * (1 - b1) + up(seed, rank, shape, state["exp_avg"]) * b1
                if state["step"] % group["kappa"] == 0:
                    new = next_seed(seed)
                    state["exp_avg"].copy_(down(new, rank, up(seed, rank, shape, state["exp_avg"])))
                    state["seed"] = seed = new
                state["exp_avg"].copy_(state["exp_avg"] * b1 + down(seed, rank, raw) * (1 - b1))
        update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if group["weight_decay"]:
            w.add_(w, alpha=-group["weight_decay"] * lr)
        w.add_(-update)
        if w is not p:
            p.copy_(w)


def flora_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> Flora:
    params, optim = method_cfg.get("params") or {}, method_cfg.get("optim") or {}
    return Flora([q for q in model.parameters() if q.requires_grad], lr=float(optim["lr"]),
                 rank=int(params["rank"]), kappa=int(params["kappa"]), beta1=float(params["beta1"]),
                 weight_decay=float(optim.get("weight_decay") or 0.0), seed=int(params.get("seed") or 0))


FLORA = register(MethodImpl(name="flora", apply=apply_all_trainable, optimizer=flora_optimizer))
