"""MoRA (arXiv:2405.12130, "MoRA: High-Rank Updating for Parameter-Efficient Fine-Tuning"): one trainable
square matrix M (r̂×r̂) between non-parametric compression of the input and decompression of the output, so
the update can have rank up to r̂ for the parameter count of a rank-r LoRA: r̂ = ⌊√((d_in + d_out)·r)⌉."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, wrap

MORA_TYPES = (1, 6)


def mora_rank(r: int, in_features: int, out_features: int, mora_type: int) -> int:
    """r̂ with r̂² ≈ LoRA's r·(d_in + d_out) (the authors' rounding, peft-mora `update_layer`); the rotation
    variant needs an even r̂ (it rotates pairs of coordinates), so it is rounded down to even there."""
    r_hat = int(math.sqrt((in_features + out_features) * r) + 0.5)
    if mora_type == 6:
        r_hat -= r_hat % 2
    return max(r_hat, 2 if mora_type == 6 else 1)


class MoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, mora_type: int) -> None:
        super().__init__(base)
        f = self.factory
        self.mora_type = mora_type
        self.r_hat = r_hat = mora_rank(r, self.in_features, self.out_features, mora_type)
        self.n_chunks = math.ceil(self.in_features / r_hat)
        # Defining rule (arXiv:2405.12130, Sec. 3; authors' peft-mora `_apply_mora`): Δ(x) = f_decomp(M·f_comp(x))
        # with M zero at init (ΔW = 0) and the only trainable tensor.
        #   type 1 ("sharing", Eq. 6): f_comp sums the input's consecutive r̂-chunks (padded by wrapping around to
        #     the first features), f_decomp repeats the r̂ outputs to fill d_out.
        #   type 6 (RoPE-based, Eq. 9): each chunk i is rotated by position i (rotary angles i·θ_j) instead of
        #     summed, M acts on every chunk, and the chunk outputs are concatenated (then cut or repeated to d_out).
        self.lora_M = nn.Parameter(torch.zeros(r_hat, r_hat, **f))
        if mora_type == 6:
            inv_freq = 1.0 / (10000 ** (torch.arange(0, r_hat, 2, dtype=torch.float32) / r_hat))
            angles = torch.outer(torch.arange(self.n_chunks, dtype=torch.float32), inv_freq)
            emb = torch.cat((angles, angles), dim=-1)
            self.register_buffer("rot_cos", emb.cos().to(**f), persistent=False)
            self.register_buffer("rot_sin", emb.sin().to(**f), persistent=False)

    def _chunks(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.n_chunks * self.r_hat - self.in_features
        if pad:   # wrap around: the authors pad with the first features again
            reps = math.ceil(pad / self.in_features)
            x = torch.cat([x, *[x] * reps], dim=-1)[..., : self.n_chunks * self.r_hat]
        return x.reshape(*x.shape[:-1], self.n_chunks, self.r_hat)

    def _fill(self, y: torch.Tensor) -> torch.Tensor:
        """Cut or repeat the last dimension to d_out."""
        reps = math.ceil(self.out_features / y.shape[-1])
        return torch.cat([y] * reps, dim=-1)[..., : self.out_features] if reps > 1 else y[..., : self.out_features]

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = self._chunks(x)
        if self.mora_type == 1:
            return self._fill(chunks.sum(dim=-2) @ self.lora_M.T)
        half = self.r_hat // 2
        rotated = torch.cat((-chunks[..., half:], chunks[..., :half]), dim=-1)
        chunks = chunks * self.rot_cos + rotated * self.rot_sin
        out = chunks @ self.lora_M.T
        return self._fill(out.reshape(*out.shape[:-2], -1))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    mora_type = int(p["mora_type"])
    if mora_type not in MORA_TYPES:
        raise ValueError(f"mora: mora_type={mora_type} is not one of {MORA_TYPES}")
    return wrap(backbone, method_cfg, model_cfg, lambda i, hit, lin: MoraLinear(lin, int(p["r"]), mora_type))


MORA = register(MethodImpl(name="mora", apply=apply))
