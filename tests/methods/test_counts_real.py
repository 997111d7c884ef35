"""Every method's trainable-parameter count on both embedded real models (MiniLM-L6 encoder, SmolLM2-135M
decoder), checked against an independent count (issue #10):

- peft-native methods (kind: peft): peft's own count (PeftModel.get_nb_trainable_parameters).
- custom adapters (kind: custom): a closed-form formula in the real target widths (conf/model/*.yaml
  target_widths) and the model's number of layers (HF config num_hidden_layers): FORMULAS below. A custom
  method without an entry fails here, so a new method adds one (its tiny-model formula in test_custom.py is
  checked against it at 32×32 without loading any model).
- full-parameter methods (kind: full, info.trains_base): every parameter of the backbone (FULL, GaLore, FRUGAL),
  or LISA's sampled share of it: FULL_PARAM below, which a new trains_base method must join.

Every count is made three ways, which must agree: the model training builds (harness.train.build_model, counted
by count_params as the record's `train.trainable_params`), the capacity solver's count (harness.capacity
._trainable_for: a frozen copy of the backbone, adapter only), and the independent count above.

What a record counts: the classification head (harness.train.EncoderClassifier: hidden × num_labels + num_labels,
always trainable) is part of `train.trainable_params` for every method on an encoder (classify) task; the
capacity solver and the formulas count the method's own parameters, without the head. A decoder has no extra
head (SmolLM2's lm_head is tied to its embeddings, frozen by every adapter). Counts are made when the model is
built: a data-dependent `init` hook (EVA, LoRA-SB) runs later, and train.py counts again after it; here it is run
on a batch of text and peft's count must still match (EVA's rank redistribution changes the count).

Whether the counts agree does not depend on how much data a hook saw, so the hooks get as little as they accept:
a prepare hook (CorDA, LoRA-GA) calibrates on 2 batches, an init hook gets 1 (LoRA-SB reads 1; EVA cycles its data
until its SVD converges, on one batch within a few passes, and still moves rank between layers, which is checked).
Several distinct batches cost EVA 10-50 s of SmolLM2 forwards before it converges; 8 cost CorDA and LoRA-GA seconds.
"""
from __future__ import annotations

import copy
import math
import os
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import methods
from harness.spec import PROJECT_ROOT
from tests.conftest import compose_dict, conf_names
from tests.methods.test_registry import method_cfg

REAL_MODELS = ("minilm-l6", "smollm2-135m")
NUM_LABELS = 2   # the head a record counts on a two-class task (GLUE SST-2)

# --------------------------------------------------------------------------------------------- formulas
# name → count(params, d_in, d_out, n_layers): trainable parameters the method puts on ONE target kind
# (query, value, q_proj, ...) whose n_layers modules are d_in → d_out; the model's count is the sum over its
# target kinds. `params` is the method's composed YAML params (its defaults).


def _mora_rank(p: Mapping[str, Any], d_in: int, d_out: int) -> int:
    """r̂ = ⌊√((d_in + d_out)·r)⌉, even for the RoPE variant (type 6), at least 2 (type 6) or 1."""
    r_hat = math.floor(math.sqrt((d_in + d_out) * p["r"]) + 0.5)
    if p["mora_type"] == 6:
        r_hat -= r_hat % 2
    return max(r_hat, 2 if p["mora_type"] == 6 else 1)


Formula = Callable[[Mapping[str, Any], int, int, int], int]
FORMULAS: dict[str, Formula] = {
    "lora_xs": lambda p, i, o, n: n * p["r"] ** 2,                        # R (r×r); B, A frozen SVD factors
    "ffa_lora": lambda p, i, o, n: n * o * p["r"],                        # B (out×r); A frozen
    "allora": lambda p, i, o, n: n * p["r"] * (i + o),                    # A (r×in) + B (out×r)
    # A, B tied across the layers of one kind + per-layer u (r) and v (out)
    "tied_lora": lambda p, i, o, n: p["r"] * (i + o) + n * (p["r"] + o),
    "nola": lambda p, i, o, n: n * 2 * p["num_basis"],                    # α, β (k each); bases frozen
    "lamda": lambda p, i, o, n: n * (p["r"] ** 2 + o * p["r"]),           # S (r×r) + B until it freezes
    "lora_sb": lambda p, i, o, n: n * p["r"] ** 2,                        # R (r×r); B, A frozen
    "singlora": lambda p, i, o, n: n * max(i, o) * p["r"],                # one A (max(in, out)×r)
    "mora": lambda p, i, o, n: n * _mora_rank(p, i, o) ** 2,              # M (r̂×r̂)
    "dylora": lambda p, i, o, n: n * p["r"] * (i + o),                    # A + B at the full rank r
    "elalora": lambda p, i, o, n: n * p["r"] * (i + o + 1),               # Q, Λ, P at the initial rank
    "sora": lambda p, i, o, n: n * p["r"] * (i + o + 1),                  # A, B and the gate g
    "lora_pro": lambda p, i, o, n: n * p["r"] * (i + o),                  # LoRA's A, B (gradients differ)
    "coto": lambda p, i, o, n: n * p["r"] * (i + o),                      # LoRA's A, B
    "increlora": lambda p, i, o, n: n * p["r"] * (i + o + 1),             # P, Λ, Q slots of the full budget
    "loldu": lambda p, i, o, n: n * (p["r"] + 1),                         # the diagonal z and the scalar σ
    "svfit": lambda p, i, o, n: n * p["r"],                               # the top-r singular values
    "edora": lambda p, i, o, n: n * (p["r"] ** 2 + o),                    # R (r×r) + the magnitude (d_out)
    "bora": lambda p, i, o, n: n * (p["r"] * (i + o) + i + o),            # A, B + row and column magnitudes
    "delta_lora": lambda p, i, o, n: n * p["r"] * (i + o),                # A, B (W moves without a gradient)
}


def _lisa(backbone: torch.nn.Module, p: Mapping[str, Any]) -> int:
    """Everything outside the transformer blocks (embeddings, norms, pooler) + γ whole blocks."""
    blocks = _blocks(backbone)
    per_block = sum(q.numel() for q in blocks[0].parameters())
    return _total(backbone) - (len(blocks) - min(int(p["n_layers"]), len(blocks))) * per_block


# full-parameter methods: name → count(unadapted backbone, params)
FULL_PARAM: dict[str, Callable[[torch.nn.Module, Mapping[str, Any]], int]] = {
    "full": lambda b, p: _total(b),
    "galore": lambda b, p: _total(b),    # every weight; the projection is in the optimizer
    "frugal": lambda b, p: _total(b),
    "flora": lambda b, p: _total(b),     # every weight; momentum compressed by random projections
    "lisa": _lisa,                       # the current period's share; every weight trains over a run
}


def _total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())   # shared (tied) tensors once, as count_params


def _blocks(backbone: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks, by the model's own attribute path (not methods._fullparam's search)."""
    return backbone.encoder.layer if hasattr(backbone, "encoder") else backbone.model.layers


# --------------------------------------------------------------------------------------------- registry
METHODS = conf_names("method")
CUSTOM = [m for m in METHODS if method_cfg(m)["kind"] == "custom" and not method_cfg(m)["info"].get("trains_base")]
FULL_KIND = [m for m in METHODS if method_cfg(m)["kind"] == "full" or method_cfg(m)["info"].get("trains_base")]


def model_cfg(name: str) -> dict[str, Any]:
    return compose_dict(("logger=none", f"model={name}"))["model"]


CASES = [pytest.param(m, name, id=f"{m}-{name}") for name in REAL_MODELS for m in METHODS
         if model_cfg(name)["kind"] in method_cfg(m)["info"]["applies_to"]]


def test_every_custom_adapter_has_a_width_formula() -> None:
    assert CUSTOM, "no custom adapter method found"
    missing = sorted(set(CUSTOM) - set(FORMULAS))
    assert not missing, f"add a width-aware count formula to FORMULAS in {__name__}: {missing}"
    assert sorted(FORMULAS) == CUSTOM, "FORMULAS has entries for methods that are gone"


def test_every_full_parameter_method_says_what_it_counts() -> None:
    assert sorted(FULL_PARAM) == FULL_KIND


def test_width_formulas_agree_with_the_tiny_model_formulas() -> None:
    """On the tiny models of test_custom.py (2 layers × 2 target kinds, all 32×32) both tables must agree."""
    from tests.methods import test_custom

    for name, (params, tiny) in test_custom.FORMULAS.items():
        if name not in FORMULAS:
            continue   # test_every_custom_adapter_has_a_width_formula reports it
        p = {**method_cfg(name)["params"], **params}
        assert 2 * FORMULAS[name](p, test_custom.D, test_custom.D, 2) == tiny(params), name


# --------------------------------------------------------------------------------------------- real models
class RealModels:
    """The embedded models, each loaded once per module (on first use). Tests adapt `backbone_copy`s, whose
    parameters share the loaded weights' storage: a 540 MB deep copy per method would cost seconds, and a count
    depends on shapes and flags only. A method that writes into W0 in place (peft's OLoRA subtracts B·A from
    it) changes the shared weights: `restore` puts back the loaded values (kept once, as loaded) after each
    test, so no method sees another's changes."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self._pristine: dict[str, list[torch.Tensor]] = {}

    def __call__(self, name: str) -> Any:
        if name not in self._loaded:
            from harness.models import load

            cache = (Path(os.environ["PEFTBENCH_CACHE"]) if os.environ.get("PEFTBENCH_CACHE")
                     else PROJECT_ROOT / ".cache")
            loaded = load(model_cfg(name), cache)
            loaded.backbone.eval()
            self._loaded[name] = loaded
            self._pristine[name] = [p.detach().clone() for p in loaded.backbone.parameters()]
        return self._loaded[name]

    def restore(self, name: str) -> bool:
        """Put the loaded values and flags back; True when a method had changed them."""
        changed = False
        with torch.no_grad():
            for p, keep in zip(self._loaded[name].backbone.parameters(), self._pristine[name], strict=True):
                if not p.requires_grad:
                    p.requires_grad_(True)
                    changed = True
                if not torch.equal(p, keep):
                    p.copy_(keep)
                    changed = True
        return changed


@pytest.fixture(scope="module")
def real() -> Iterator[RealModels]:
    """One torch thread for the module: the adapters' many small SVD/QR inits (OLoRA, PiSSA, TinyLoRA, LoRA-XS)
    run several times faster single-threaded on a shared CPU than with threads waiting on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield RealModels()
    torch.set_num_threads(threads)


def backbone_copy(backbone: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of the backbone (its own modules and Parameter objects, so apply may wrap, freeze and replace
    whatever it likes) whose parameters share the original's storage (see RealModels)."""
    memo = {id(p): torch.nn.Parameter(p.data, requires_grad=p.requires_grad) for p in backbone.parameters()}
    return copy.deepcopy(backbone, memo)


TEXT = ("The quick brown fox jumps over the lazy dog while the farmer counts his sheep in the evening light. "
        "A film that is funny, moving and far too long; the critics loved it and the audience left early. ") * 8


def _batches(tokenizer: Any, kind: str, n: int, seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Training-like batches for prepare/init hooks (CorDA, LoRA-GA, EVA, LoRA-SB): windows of English text (real
    activations, as a hook sees in training), a two-class label (classify) or the tokens themselves (generate).
    2 × 16 tokens: EVA needs at least r·rho = 16 rows per batch."""
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        starts = torch.randint(0, len(ids) - 16, (2,), generator=g)
        batch = torch.stack([ids[i:i + 16] for i in starts.tolist()])
        labels = torch.randint(0, NUM_LABELS, (2,), generator=g) if kind == "encoder" else batch
        yield {"input_ids": batch, "attention_mask": torch.ones_like(batch), "labels": labels}


@pytest.mark.integration
@pytest.mark.parametrize("name", REAL_MODELS)
def test_target_widths_match_the_real_model(name: str, real: RealModels) -> None:
    """conf/model target_widths (what the formulas read) are the real modules' shapes, one per layer."""
    cfg, backbone = model_cfg(name), real(name).backbone
    n_layers = int(backbone.config.num_hidden_layers)
    assert len(_blocks(backbone)) == n_layers
    assert sorted(cfg["target_widths"]) == sorted(cfg["target_modules"])
    for target, (d_in, d_out) in cfg["target_widths"].items():
        found = [m for n, m in backbone.named_modules() if n.endswith("." + target)]
        assert len(found) == n_layers, (target, len(found))
        assert all(isinstance(m, torch.nn.Linear) and (m.in_features, m.out_features) == (d_in, d_out)
                   for m in found), target


def _expected(name: str, cfg: Mapping[str, Any], mcfg: Mapping[str, Any], backbone: torch.nn.Module) -> int:
    """The closed-form count of a custom adapter or a full-parameter method on this real model."""
    if name in FULL_PARAM:
        return FULL_PARAM[name](backbone, cfg["params"])
    assert name in FORMULAS, f"{name}: no width-aware count formula in FORMULAS (tests/methods/test_counts_real.py)"
    n_layers = int(backbone.config.num_hidden_layers)
    return sum(FORMULAS[name](cfg["params"], d_in, d_out, n_layers)
               for d_in, d_out in (mcfg["target_widths"][t] for t in mcfg["target_modules"]))


@pytest.mark.integration
@pytest.mark.parametrize(("name", "model"), CASES)
def test_trainable_count_on_real_model(name: str, model: str, real: RealModels,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import capacity

    # the capacity solver's deep copy shares the loaded weights' storage too (RealModels)
    monkeypatch.setattr(capacity, "copy", types.SimpleNamespace(deepcopy=backbone_copy))
    try:
        _check_counts(name, model, real)
    finally:
        real.restore(model)


def _check_counts(name: str, model: str, real: RealModels) -> None:
    from harness.capacity import _trainable_for
    from harness.train import EncoderClassifier, build_model, count_params

    cfg, mcfg, loaded = method_cfg(name), model_cfg(model), real(model)
    kind = mcfg["kind"]
    spec = types.SimpleNamespace(method=cfg, model=mcfg, budget={"trainable_params": None},
                                 task={"protocol": "classify" if kind == "encoder" else "generate"})
    impl = methods.resolve(cfg)

    # what the capacity solver counts: the method alone, on a frozen deep copy of the backbone
    solver = _trainable_for(spec, loaded, cfg)
    real.restore(model)

    # what training builds and the record reports (train.trainable_params): a prepare hook (CorDA, LoRA-GA)
    # calibrates on training batches first, and an encoder gets its classification head on top
    torch.manual_seed(0)
    job = types.SimpleNamespace(backbone=backbone_copy(loaded.backbone), tokenizer=loaded.tokenizer)
    built = build_model(spec, job, NUM_LABELS if kind == "encoder" else None,
                        batches=_batches(loaded.tokenizer, kind, 2))
    adapted = built.encoder if isinstance(built, EncoderClassifier) else built
    own = count_params(adapted)[0]
    hidden = int(loaded.backbone.config.hidden_size)
    head = hidden * NUM_LABELS + NUM_LABELS if kind == "encoder" else 0
    assert isinstance(built, EncoderClassifier) == (kind == "encoder")
    if kind == "encoder":
        assert (built.classifier.in_features, built.classifier.out_features) == (hidden, NUM_LABELS)
        assert all(p.requires_grad for p in built.classifier.parameters()), "the task head always trains"
    assert count_params(built)[0] == own + head, f"{name}: the record counts the method's {own} + the head's {head}"
    assert own == solver, f"{name}: training builds {own} trainable parameters, the capacity solver counts {solver}"
    assert own > 0

    if cfg["kind"] == "peft":
        assert own == _peft_count(adapted), f"{name}: peft counts differently"
    else:
        expected = _expected(name, cfg, mcfg, loaded.backbone)
        assert own == expected, f"{name} on {model}: {own} trainable, formula {expected} ({own - expected:+d})"
        if name in FULL_PARAM:
            assert count_params(adapted)[1] == _total(loaded.backbone), f"{name} adds no parameters"

    if impl.init is not None:
        # a data-dependent init may replace parameters (EVA redistributes rank between layers) and train.py counts
        # again after it: the record's count must still be peft's, and the one the capacity solver saw (EVA keeps
        # it here: q and v of a layer read the same input, so they get the same rank, and the total rank is kept)
        impl.init(built, _batches(loaded.tokenizer, kind, 1, seed=1))
        after = count_params(adapted)[0]
        if (cfg.get("params") or {}).get("init_lora_weights") == "eva":
            assert len(_lora_ranks(adapted)) > 1, f"{name}: EVA left every layer at rank r: the recount checks nothing"
        assert count_params(built)[0] == after + head
        if cfg["kind"] == "peft":
            assert after == _peft_count(adapted), f"{name}: peft counts differently after the init hook"
        assert after == own, f"{name}: the init hook changed the count ({own} → {after})"


def _lora_ranks(adapted: torch.nn.Module) -> set[int]:
    """The distinct ranks of the adapter's LoRA layers (EVA's redistribution leaves several)."""
    from peft.tuners.lora import LoraLayer

    return {r for m in adapted.modules() if isinstance(m, LoraLayer) for r in m.r.values()}


def _peft_count(adapted: torch.nn.Module) -> int:
    from methods.peft_native import peft_model_of

    return int(peft_model_of(adapted).get_nb_trainable_parameters()[0])
