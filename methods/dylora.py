"""DyLoRA (arXiv:2210.07558, "DyLoRA: Parameter-Efficient Tuning of Pretrained Models using Dynamic Search-Free
Low Rank Adaptation"): one LoRA of rank r trained so that every truncation to its first b components is itself
a good rank-b LoRA: each training step samples a rank b and uses only A[:b], B[:, :b]. One run serves every rank
b ≤ r; the harness evaluates the trained adapter at each of them (the `eval_variants` hook)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, kaiming_uniform, wrap


class DyLoraLinear(AdapterLinear):
    def __init__(self, base: nn.Linear, r: int, r_min: int, alpha: float, seed: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2210.07558, Sec. 3; the authors' loralib/DyLoRA.py `dynamic` and run_glue.py, in
        # huawei-noah/Efficient-NLP): LoRA's A (kaiming) and B (zero), r components. A training step samples b
        # uniformly from {r_min, ..., r} (the authors: torch.randint over 0..r-1, i.e. b ∈ 1..r, one b for the
        # whole model) and computes ΔW_b = (α/b)·B[:, :b]·A[:b] (their √(r/b) on each factor times α/r). The
        # authors train in their "frozen" mode (set_rank(b, frozen=True)): the first b-1 components are cut from
        # the graph, so the step's gradient reaches only the b-th row of A and column of B (their gradient is
        # zero, not absent: AdamW's momentum still moves them, as in the authors' runs). Evaluation uses ΔW_b
        # for the rank under test, r by default.
        self.lora_A = nn.Parameter(kaiming_uniform((r, self.in_features), self.in_features, **f))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **f))
        self.r, self.r_min, self.alpha = r, r_min, alpha
        # the rank the next training forward uses, drawn by `sample_callback` (persistent: a resumed run continues
        # with the rank its interrupted step would have used), and the sampler's seed
        self.register_buffer("rank_b", torch.tensor(sample_rank(seed, 0, r_min, r), device=f["device"]))
        self.register_buffer("sampler_seed", torch.tensor(seed, dtype=torch.long, device=f["device"]))
        self.train_rank, self.seed = int(self.rank_b), seed   # Python copies: no device sync per step
        self.eval_rank: int | None = None    # set by an evaluation variant; None: the full rank r
        self.register_load_state_dict_post_hook(lambda module, _: module.loaded())   # a checkpoint's

    def loaded(self) -> None:
        """Refresh the Python copies of the training rank and seed from their buffers (after a load)."""
        self.train_rank, self.seed = int(self.rank_b), int(self.sampler_seed)

    def set_train_rank(self, b: int) -> None:
        self.train_rank = b
        self.rank_b.fill_(b)

    def factors(self, b: int, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """A[:b] and B[:, :b]; `frozen` cuts the first b-1 components from the graph (the authors' frozen mode)."""
        a, b_mat = self.lora_A[:b], self.lora_B[:, :b]
        if frozen and b > 1:
            a = torch.cat([a[: b - 1].detach(), a[b - 1:]], dim=0)
            b_mat = torch.cat([b_mat[:, : b - 1].detach(), b_mat[:, b - 1:]], dim=1)
        return a, b_mat

    def rank(self) -> int:
        """The rank this forward uses: the sampled one in training, the variant's (or r) in evaluation."""
        return self.train_rank if self.training else (self.eval_rank or self.r)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.rank()
        a, b_mat = self.factors(b, frozen=self.training)
        return (x @ a.T @ b_mat.T) * (self.alpha / b)


def sample_rank(seed: int, step: int, r_min: int, r: int) -> int:
    """The rank of optimizer step `step` (0-based): uniform on {r_min, ..., r}, drawn from a generator seeded by
    (seed, step) alone, so a run is reproducible and a resumed run draws what the uninterrupted one would have
    (the sampler's whole state is the seed and the step count, both in the checkpoint)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))
    return r_min + int(torch.randint(r - r_min + 1, (1,), generator=g))


def layers(model: nn.Module) -> list[DyLoraLinear]:
    return [m for m in model.modules() if isinstance(m, DyLoraLinear)]


def sample_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step`: draw the rank of step + 1, the same for every layer (as the authors do)."""
    found = layers(model)
    if found:
        first = found[0]
        b = sample_rank(first.seed, step + 1, first.r_min, first.r)
        for m in found:
            m.set_train_rank(b)


@contextmanager
def _at_rank(model: nn.Module, b: int) -> Iterator[None]:
    found = layers(model)
    for m in found:
        m.eval_rank = b
    try:
        yield
    finally:
        for m in found:
            m.eval_rank = None


def eval_variants(model: nn.Module, method_cfg: Mapping[str, Any]) -> list[tuple[str, AbstractContextManager]]:
    """The adapter truncated to each rank b < r (rank r is the primary evaluation): "r=1", "r=2", ..."""
    p = method_cfg["params"]
    r, r_min = int(p["r"]), int(p["r_min"])
    return [(f"r={b}", _at_rank(model, b)) for b in range(r_min, r)]


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = method_cfg["params"]
    r, r_min = int(p["r"]), int(p["r_min"])
    if not 1 <= r_min <= r:
        raise ValueError(f"dylora: r_min={r_min} must be in [1, r={r}]")
    # the sampler's seed: the YAML's, or else the job's (the harness seeds torch with it right before it applies
    # the method), so different seeds of a job also sample different rank sequences
    seed = int(p["sampler_seed"]) if p.get("sampler_seed") is not None else torch.initial_seed() % 2**62
    return wrap(backbone, method_cfg, model_cfg,
                lambda i, hit, lin: DyLoraLinear(lin, r, r_min, float(p["lora_alpha"]), seed))


DYLORA = register(MethodImpl(name="dylora", apply=apply, callback=sample_callback, eval_variants=eval_variants))
