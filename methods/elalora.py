"""ElaLoRA (arXiv:2504.00254, "ElaLoRA: Elastic & Learnable Low-Rank Adaptation for Efficient Model Fine-Tuning"):
an SVD-form adapter ΔW = P·Λ·Q per layer (AdaLoRA's) whose rank both shrinks and grows during training: every few
steps the least important singular components (importance from |w·∂L/∂w|, smoothed) are pruned and as many new
components are added to the layers whose components matter most, so the total rank budget stays r per layer on
average while it moves to where it helps."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from methods import MethodImpl, register
from methods._adapters import AdapterLinear, adamw_known_to, svd_form_factors, wrap

FACTORS = ("lora_A", "lora_E", "lora_B")   # Q (r×in), Λ (r), P (out×r); the rank is dim 0, 0, 1
RANK_DIM = {"lora_A": 0, "lora_E": 0, "lora_B": 1}


class ElaLoraLinear(AdapterLinear):
    # the smoothed importance (sensitivity and its uncertainty) of every element of A, E, B: a resumed run needs
    # them, the saved adapter does not
    training_state = tuple(f"{kind}_{name}" for name in FACTORS for kind in ("ipt", "unc"))

    def __init__(self, base: nn.Linear, r: int, alpha: float, index: int) -> None:
        super().__init__(base)
        f = self.factory
        # Defining rule (arXiv:2504.00254, Sec. 3; the authors' loralib/elalora.py, SVDLinear): W = W0 + P·Λ·Q
        # with Q = lora_A (r×in), Λ = diag(lora_E), P = lora_B (out×r); A, B ~ N(0, 0.02²), Λ = 0 (the model is
        # W0 at init); scale α/r with r the initial rank, kept when the rank changes (their ranknum is never
        # updated). P, Q are kept near-orthogonal by a regulariser (`orth_gradient`).
        self.lora_A, self.lora_E, self.lora_B = svd_form_factors(r, self.in_features, self.out_features, index, **f)
        self.scaling = alpha / r
        self.index = index
        for name in FACTORS:
            p = getattr(self, name)
            self.register_buffer(f"ipt_{name}", torch.zeros_like(p))
            self.register_buffer(f"unc_{name}", torch.zeros_like(p))
        self.orth_weight = 0.0   # set by apply: reg_orth_coef / number of regularised matrices
        self.optimizer_ref: Any = None   # set by the method's optimizer hook, so a resize can fix its state
        self.params: Mapping[str, Any] = {}

    @property
    def rank(self) -> int:
        return self.lora_E.shape[0]

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A, self.lora_B
        if self.orth_weight and torch.is_grad_enabled():
            a = _OrthPenalty.apply(a, self.orth_weight, True)
            b = _OrthPenalty.apply(b, self.orth_weight, False)
        return (x @ (a * self.lora_E[:, None]).T @ b.T) * self.scaling

    # ------------------------------------------------------------------------------------ importance
    @torch.no_grad()
    def update_importance(self, beta1: float, beta2: float) -> None:
        """The authors' update_ipt: s = |w·∂L/∂w| per element, Ī ← β1·Ī + (1−β1)·s, Ū ← β2·Ū + (1−β2)·|s − Ī|."""
        for name in FACTORS:
            p = getattr(self, name)
            if p.grad is None:
                continue
            s = (p * p.grad).abs()
            ipt, unc = getattr(self, f"ipt_{name}"), getattr(self, f"unc_{name}")
            ipt.mul_(beta1).add_(s, alpha=1 - beta1)
            unc.mul_(beta2).add_((s - ipt).abs(), alpha=1 - beta2)

    @torch.no_grad()
    def component_scores(self) -> torch.Tensor:
        """One score per singular component i: S(Λ_i) + mean_j S(Q_ij) + mean_o S(P_oi), S = Ī·Ū (AdaLoRA's)."""
        def score(name: str) -> torch.Tensor:
            return getattr(self, f"ipt_{name}") * getattr(self, f"unc_{name}")

        return score("lora_E") + score("lora_A").mean(dim=1) + score("lora_B").mean(dim=0)

    # ---------------------------------------------------------------------------------- prune / grow
    @torch.no_grad()
    def resize(self, keep: torch.Tensor, grow: int, generator: torch.Generator) -> None:
        """Keep the components `keep` (indices) and append `grow` new ones: Q rows and P columns random,
        orthogonalised against the kept ones and normalised, Λ = min(min|Λ|, 1e-13) so the model does not
        change (the authors' expansion). Importance averages follow their components (zero for new ones); so
        does the optimizer's state where the method's optimizer is known (zero moments for new components)."""
        f = self.factory
        old = {name: getattr(self, name).detach() for name in FACTORS}
        new = {name: old[name].index_select(RANK_DIM[name], keep) for name in FACTORS}
        for _ in range(grow):
            a, b = new["lora_A"], new["lora_B"]
            v = torch.randn(self.in_features, generator=generator).to(**f)
            v = v - a.T @ (a @ v)
            u = torch.randn(self.out_features, generator=generator).to(**f)
            u = u - b @ (b.T @ u)
            e = new["lora_E"]
            e_new = torch.clamp(e.abs().min(), max=1e-13) if e.numel() else torch.tensor(1e-13, **f)
            new["lora_A"] = torch.cat([a, (v / (v.norm() + 1e-6))[None]], dim=0)
            new["lora_B"] = torch.cat([b, (u / (u.norm() + 1e-6))[:, None]], dim=1)
            new["lora_E"] = torch.cat([new["lora_E"], e_new.reshape(1).to(**f)])
        opt = self.optimizer_ref() if self.optimizer_ref is not None else None
        for name in FACTORS:
            p, dim = getattr(self, name), RANK_DIM[name]
            state = opt.state.get(p, {}) if opt is not None else {}
            for k, v in list(state.items()):   # Adam's moments (not its scalar step count)
                if torch.is_tensor(v) and v.shape == p.shape:
                    state[k] = _follow(v, keep, grow, dim)
            for kind in ("ipt", "unc"):
                setattr(self, f"{kind}_{name}", _follow(getattr(self, f"{kind}_{name}"), keep, grow, dim))
            # the Parameter object stays (the optimizer and the harness's clipping list hold it); its shape
            # changes. Autograd caches a leaf's shape while a graph that used it is alive: the harness's callback
            # runs inside train_step, whose graph is gone before the next forward.
            p.data = new[name].contiguous()
            p.grad = None

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        """Match a saved state's rank (a checkpoint or a saved adapter whose ranks moved): values follow."""
        if "lora_E" in shapes and shapes["lora_E"][0] != self.rank:
            r = int(shapes["lora_E"][0])
            f = self.factory
            with torch.no_grad():
                for name in FACTORS:
                    p = getattr(self, name)
                    shape = list(p.shape)
                    shape[RANK_DIM[name]] = r
                    p.data = torch.zeros(shape, **f)
                    for kind in ("ipt", "unc"):
                        setattr(self, f"{kind}_{name}", torch.zeros(shape, **f))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        self.resize_for({k[len(prefix):]: v.shape for k, v in state_dict.items()
                         if k.startswith(prefix) and "." not in k[len(prefix):]})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def orth_gradient(m: torch.Tensor, weight: float, rows: bool) -> torch.Tensor:
    """∂/∂M of w·‖MMᵀ − I‖_F (A: rows orthonormal) or w·‖MᵀM − I‖_F (B: columns): 2w·(C − I)·M/‖C − I‖_F."""
    if rows:
        c = m @ m.T - torch.eye(m.shape[0], device=m.device, dtype=m.dtype)
        grad = 2 * c @ m
    else:
        c = m.T @ m - torch.eye(m.shape[1], device=m.device, dtype=m.dtype)
        grad = 2 * m @ c
    # C = I exactly gives grad = 0 whatever the clamp: no branch (a branch would sync the device every step)
    return grad * (weight / torch.linalg.matrix_norm(c).clamp_min(1e-12))


class _OrthPenalty(torch.autograd.Function):
    """Identity on a factor whose backward adds the orthogonality penalty's gradient: the authors add
    reg_orth_coef·mean over the A, B matrices of ‖AAᵀ − I‖_F, ‖BᵀB − I‖_F to the loss; adding the gradient of
    that term where the factor enters the graph is the same update, with no loss hook in the harness (the loss
    the harness logs is the task loss alone)."""

    @staticmethod
    def forward(ctx: Any, m: torch.Tensor, weight: float, rows: bool) -> torch.Tensor:
        ctx.save_for_backward(m)
        ctx.weight, ctx.rows = weight, rows
        return m.view_as(m)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (m,) = ctx.saved_tensors
        return grad + orth_gradient(m.detach(), ctx.weight, ctx.rows), None, None


def _follow(t: torch.Tensor, keep: torch.Tensor, grow: int, dim: int) -> torch.Tensor:
    """A tensor indexed like a factor, after the factor kept `keep` and grew `grow` components (zeros)."""
    kept = t.index_select(dim, keep.to(t.device))
    shape = list(kept.shape)
    shape[dim] = grow
    return torch.cat([kept, kept.new_zeros(shape)], dim=dim).contiguous()


def layers(model: nn.Module) -> list[ElaLoraLinear]:
    return [m for m in model.modules() if isinstance(m, ElaLoraLinear)]


def budget_b(p: Mapping[str, Any], step: int, total_steps: int) -> int:
    """Components pruned (and as many added) this round: b, or with the rank scheduler b·(1 − progress³) rounded,
    progress going 0 → 1 between the two warm-ups (the authors' _b_scheduler)."""
    b = int(p["b"])
    if not p["rank_scheduler"]:
        return b
    init, final = warmups(p, total_steps)
    progress = min(max((step - init) / max(1, total_steps - final - init), 0.0), 1.0)
    return round(b * (1 - progress**3))


def warmups(p: Mapping[str, Any], total_steps: int) -> tuple[int, int]:
    return round(float(p["init_warmup"]) * total_steps), round(float(p["final_warmup"]) * total_steps)


@torch.no_grad()
def reallocate(found: list[ElaLoraLinear], b: int, k: int, step: int) -> None:
    """One round (the authors' mask_to_target_rank): each layer offers its min(k, rank − 1) least important
    components; of all offered, the b least important are pruned from their layers, and each of the b most
    important offered scores adds one new component to its layer (a layer whose weakest components still matter
    most is where rank is missing). b out, b in: the total rank is unchanged."""
    offered, owner = [], []
    for i, m in enumerate(found):
        n = min(k, m.rank - 1)
        if n > 0:
            offered.append(torch.topk(m.component_scores(), n, largest=False).values.float().cpu())
            owner += [i] * n
    if not offered:
        return
    scores = torch.cat(offered)
    owner_t = torch.tensor(owner)
    b = min(b, scores.numel())
    # stable order on ties: lowest index first for pruning, so the choice is deterministic
    order = torch.argsort(scores, stable=True)
    prune = torch.bincount(owner_t[order[:b]], minlength=len(found))
    grow = torch.bincount(owner_t[order.flip(0)[:b]] if b else owner_t[:0], minlength=len(found))
    for i, m in enumerate(found):
        if not prune[i] and not grow[i]:
            continue
        if m.rank - int(prune[i]) + int(grow[i]) > min(m.in_features, m.out_features):
            grow[i] = min(m.in_features, m.out_features) - m.rank + int(prune[i])
        drop = set(torch.topk(m.component_scores(), int(prune[i]), largest=False).indices.tolist())
        keep = torch.tensor([j for j in range(m.rank) if j not in drop], dtype=torch.long, device=m.lora_E.device)
        g = torch.Generator().manual_seed(step * 1_000_003 + m.index)
        m.resize(keep, int(grow[i]), g)


def elalora_callback(model: nn.Module, step: int, total_steps: int) -> None:
    """After optimizer step `step` (0-based), while its gradients exist (the authors' update_and_mask): until the
    final warm-up, update the importance averages; after the initial warm-up, every mask_interval steps, move
    b components (b shrinking to 0 with the rank scheduler)."""
    found = layers(model)
    if not found:
        return
    p = found[0].params
    init, final = warmups(p, total_steps)
    if step >= total_steps - final:
        return
    for m in found:
        m.update_importance(float(p["beta1"]), float(p["beta2"]))
    interval = max(1, round(float(p["mask_interval"]) * total_steps))
    b = budget_b(p, step, total_steps)
    if step > init and (step - init) % interval == 0 and b > 0:
        reallocate(found, b, int(p["k"]), step)


def make_optimizer(model: nn.Module, method_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The harness's AdamW on what trains, made known to the layers: a resize keeps each surviving component's
    moments and starts new components at zero (the authors rebuild the optimizer after each round, meaning to
    keep the unchanged tensors' state; a method-side optimizer is how a callback reaches that state here)."""
    return adamw_known_to(model, method_cfg, layers(model))


def apply(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> nn.Module:
    p = dict(method_cfg["params"])
    r = int(p["r"])
    for key in ("init_warmup", "final_warmup"):
        if not 0 <= float(p[key]) < 1:
            raise ValueError(f"elalora: {key}={p[key]} must be a fraction of the job's steps in [0, 1)")
    if float(p["init_warmup"]) + float(p["final_warmup"]) >= 1 or not 0 < float(p["mask_interval"]) <= 1:
        raise ValueError("elalora: init_warmup + final_warmup must leave steps to reallocate in, and "
                         "mask_interval must be a fraction in (0, 1]")
    model = wrap(backbone, method_cfg, model_cfg,
                 lambda i, hit, lin: ElaLoraLinear(lin, r, float(p["lora_alpha"]), i))
    found = layers(model)
    for m in found:   # the authors' loss term: reg_orth_coef · mean over the A and B matrices of their norms
        m.orth_weight = float(p["reg_orth_coef"]) / (2 * len(found))
        m.params = p
    return model

ELALORA = register(MethodImpl(name="elalora", apply=apply, optimizer=make_optimizer, callback=elalora_callback))
