"""IncreLoRA (arXiv:2308.12043, "IncreLoRA: Incremental Parameter Allocation Method for Parameter-Efficient
Fine-Tuning"): an SVD-form adapter ΔW = (α/n)·P·Λ·Q per layer that starts at a small rank n and grows: on a
schedule, the layers whose smoothed importance score is highest each get new rank-1 components, until the total
rank reaches the budget (r per layer on average). Rank is added where it matters instead of pruned where it does
not (AdaLoRA)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, adamw_known_to, svd_form_factors, wrap
from methods.elalora import _follow, _OrthPenalty

FACTORS = ("lora_A", "lora_E", "lora_B")   # Q (cap×in), Λ (cap), P (out×cap); the slot index is dim 0, 0, 1
SLOT_DIM = {"lora_A": 0, "lora_E": 0, "lora_B": 1}


class IncreLoraLinear(AdapterLinear):
    # the smoothed importance of the layer (sensitivity and uncertainty): a resumed run needs them
    training_state = ("ipt", "unc")

    def __init__(self, base: nn.Linear, slots: int, r_init: int, alpha: float, index: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule, the layer (arXiv:2308.12043, Sec. 3; the authors' loralib/increlora.py, SVDLinear and
        # loraW): ΔW = P·diag(Λ)·Q·α/n with n the layer's current rank (their ranknum, updated as it grows);
        # Q, P ~ N(0, 0.02²), Λ = 0 (W0 at init and at every growth: a new component starts with Λ = 0).
        # The tensors hold `slots` components, of which the first n are active; the rest are unallocated budget,
        # inert (outside the forward, no gradient): the layer's tensors, summed over layers, are the whole budget,
        # so the trainable-parameter count at apply is what the method ends with. A layer that grows past its
        # slots takes unallocated slots from another layer (rank is budget in the paper, not per layer).
        self.lora_A, self.lora_E, self.lora_B = svd_form_factors(slots, self.in_features, self.out_features, index, **f)
        self.alpha, self.index = alpha, index
        self.register_buffer("rank_active", torch.tensor(r_init, device=f["device"]))
        self.register_buffer("ipt", torch.zeros((), **f))
        self.register_buffer("unc", torch.zeros((), **f))
        self.n = r_init   # Python copy of rank_active (no device sync per forward)
        self.score: torch.Tensor | None = None   # this step's sensitivity, set by the backward hook
        self.tracking = True   # False once the budget is reached (the authors remove their hook)
        self.orth_weight = 0.0
        self.optimizer_ref: Any = None
        self.register_load_state_dict_post_hook(lambda module, _: module.loaded())

    @property
    def slots(self) -> int:
        return self.lora_E.shape[0]

    def loaded(self) -> None:
        self.n = int(self.rank_active)

    def delta(self) -> torch.Tensor:
        n = self.n
        a, e, b = self.lora_A[:n], self.lora_E[:n], self.lora_B[:, :n]
        if self.orth_weight and torch.is_grad_enabled():
            a = _OrthPenalty.apply(a, self.orth_weight, True)
            b = _OrthPenalty.apply(b, self.orth_weight, False)
        return b @ (a * e[:, None]) * (self.alpha / n)

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        # dense ΔW in the forward, as the authors' loraW module: its gradient ∂L/∂ΔW is the importance signal
        w = self.delta()
        if self.tracking and w.requires_grad:
            w.register_hook(self._score_hook(w.detach()))
        return x @ w.T

    def _score_hook(self, w: torch.Tensor) -> Any:
        def hook(grad: torch.Tensor) -> None:
            # the authors' backward_hook: s = Σ|ΔW ⊙ ∂L/∂ΔW| / √numel (accumulated over the step's backward calls)
            s = (w * grad).abs().sum() / math.sqrt(w.numel())
            self.score = s if self.score is None else self.score + s
        return hook

    @torch.no_grad()
    def update_importance(self, beta1: float, beta2: float) -> None:
        """The authors' update_ipt: Ī ← β1·Ī + (1−β1)·s, Ū ← β2·Ū + (1−β2)·|s − Ī|; the layer's score is Ī·Ū."""
        if self.score is None:
            return
        self.ipt.mul_(beta1).add_(self.score, alpha=1 - beta1)
        self.unc.mul_(beta2).add_((self.score - self.ipt).abs(), alpha=1 - beta2)
        self.score = None

    def set_rank(self, n: int) -> None:
        self.n = n
        self.rank_active.fill_(n)

    @torch.no_grad()
    def resize(self, keep: torch.Tensor, grow: int, generator: torch.Generator) -> None:
        """Keep the slots `keep` and append `grow` new ones (Q row, P column ~ N(0, 0.02²), Λ = 0); the optimizer's
        moments follow their slots (zero for new ones)."""
        f = self.factory
        new = {name: getattr(self, name).detach().index_select(SLOT_DIM[name], keep) for name in FACTORS}
        if grow:
            new["lora_A"] = torch.cat([new["lora_A"], (torch.randn(grow, self.in_features, generator=generator)
                                                        * 0.02).to(**f)])
            new["lora_E"] = torch.cat([new["lora_E"], torch.zeros(grow, **f)])
            new["lora_B"] = torch.cat([new["lora_B"], (torch.randn(self.out_features, grow, generator=generator)
                                                        * 0.02).to(**f)], dim=1)
        opt = self.optimizer_ref() if self.optimizer_ref is not None else None
        for name in FACTORS:
            p, dim = getattr(self, name), SLOT_DIM[name]
            state = opt.state.get(p, {}) if opt is not None else {}
            for k, v in list(state.items()):
                if torch.is_tensor(v) and v.shape == p.shape:
                    state[k] = _follow(v, keep, grow, dim)
            p.data = new[name].contiguous()
            p.grad = None

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        """Match a saved state's slot count (slots moved between layers in training): values follow."""
        if "lora_E" in shapes and shapes["lora_E"][0] != self.slots:
            k = int(shapes["lora_E"][0])
            with torch.no_grad():
                for name in FACTORS:
                    p = getattr(self, name)
                    shape = list(p.shape)
                    shape[SLOT_DIM[name]] = k
                    p.data = torch.zeros(shape, **self.factory)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        self.resize_for({k[len(prefix):]: v.shape for k, v in state_dict.items()
                         if k.startswith(prefix) and "." not in k[len(prefix):]})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def layers(model: nn.Module) -> list[IncreLoraLinear]:
    return [m for m in model.modules() if isinstance(m, IncreLoraLinear)]


def schedule(p: Mapping[str, Any], n_layers: int, total_steps: int) -> tuple[int, int, int, int]:
    """(first growth step, interval, top_h, add_r). The authors give init_warmup and incre_interval in steps and
    choose them so the budget is reached in time; here the interval is derived: the rounds needed to grow from
    r_init to r per layer (top_h layers × add_r components per round) are spread from init_warmup to grow_until
    (fractions of the job's steps)."""
    r, r_init = int(p["r"]), int(p["r_init"])
    add_r = int(p["add_r"]) if p.get("add_r") is not None else max(1, r // 2)   # the authors' rank_dic: r/2
    top_h = int(p["top_h"]) if p.get("top_h") is not None else max(1, round(n_layers / 10))
    rounds = max(1, math.ceil((r - r_init) * n_layers / (top_h * add_r)))
    init = round(float(p["init_warmup"]) * total_steps)
    window = max(1, round(float(p["grow_until"]) * total_steps) - init)
    return init, max(1, window // rounds), top_h, add_r


@torch.no_grad()
def grow(found: list[IncreLoraLinear], chosen: list[int], add_r: int, budget: int, step: int) -> None:
    """Give each chosen layer add_r more active components while the total stays within the budget; a layer out
    of unallocated slots takes one from the layer with the most (ties: the lowest index)."""
    for i in chosen:
        m = found[i]
        for _ in range(add_r):
            if sum(x.n for x in found) >= budget:
                return
            if m.n == m.slots:
                donor = max((j for j, x in enumerate(found) if x.slots > x.n), key=lambda j: (found[j].slots
                                                                                              - found[j].n, -j))
                d = found[donor]
                d.resize(torch.arange(d.slots - 1, device=d.lora_E.device), 0, torch.Generator())
                m.resize(torch.arange(m.slots, device=m.lora_E.device), 1,
                         torch.Generator().manual_seed(step * 1_000_003 + m.index))
            m.set_rank(m.n + 1)


def increlora_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step` (0-based), while the budget is not reached (the authors' update_and_increase):
    update every layer's importance; after the warm-up, every interval steps, the top_h layers by Ī·Ū get add_r
    new components each."""
    found = layers(model)
    if not found:
        return
    p = found[0].params
    budget = int(p["r"]) * len(found)
    if sum(m.n for m in found) >= budget:
        for m in found:
            m.tracking, m.score = False, None
        return
    for m in found:
        m.update_importance(float(p["beta1"]), float(p["beta2"]))
    init, interval, top_h, add_r = schedule(p, len(found), total_steps)
    if step > init and (step - init) % interval == 0:
        scores = torch.stack([(m.ipt * m.unc).float().cpu() for m in found])
        # stable order: the highest scores first, the lowest index first on ties
        order = sorted(range(len(found)), key=lambda i: (-float(scores[i]), i))
        grow(found, order[:top_h], add_r, budget, step)


def make_optimizer(model: nn.Module, method_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW on what trains, known to the layers so that moving slots carries their moments (ElaLoRA's)."""
    return adamw_known_to(model, method_cfg, layers(model))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = dict(method_cfg["params"])
    r, r_init = int(p["r"]), int(p["r_init"])
    if not 1 <= r_init <= r:
        raise ValueError(f"increlora: r_init={r_init} must be in [1, r={r}]")
    if not 0 <= float(p["init_warmup"]) < float(p["grow_until"]) <= 1:
        raise ValueError("increlora: need 0 <= init_warmup < grow_until <= 1 (fractions of the job's steps)")
    model = wrap(backbone, method_cfg, model_cfg,
                 lambda i, hit, lin: IncreLoraLinear(lin, r, r_init, float(p["lora_alpha"]), i))
    found = layers(model)
    for m in found:   # AdaLoRA's orthogonality penalty on P and Q, as the authors train with (reg_orth_coef)
        m.orth_weight = float(p["reg_orth_coef"]) / (2 * len(found))
        m.params = p
    return model


INCRELORA = register(MethodImpl(name="increlora", apply=apply, optimizer=make_optimizer,
                                callback=increlora_callback))
