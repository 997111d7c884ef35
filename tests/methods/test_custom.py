"""Custom methods (kind: custom, methods/<name>.py on methods/_adapters.py): each one's trainable-parameter
count by formula on both tiny models, the saved adapter's round trip, and the shared layer's contracts."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import methods
from methods import _adapters
from tests.conftest import conf_names
from tests.methods.test_properties import outputs, randomize
from tests.methods.test_registry import MODELS, method_cfg

# custom *adapters*; a full-parameter custom method (GaLore, LISA: info.trains_base) adds no adapter layer
CUSTOM = [m for m in conf_names("method")
          if method_cfg(m)["kind"] == "custom" and not method_cfg(m)["info"].get("trains_base")]
LAYERS = 4          # 2 blocks × 2 targets (query/value, q_proj/v_proj), every one 32×32 on both tiny models
D = 32


def _count(name: str, kind: str, **params: Any) -> int:
    build, model_cfg = MODELS[kind]
    cfg = method_cfg(name)
    cfg["params"] = {**cfg["params"], **params}
    model = methods.resolve(cfg).apply(build(), cfg, model_cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# name → (params for the check, trainable count on either tiny model: 4 adapted 32×32 layers)
FORMULAS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], int]]] = {
    "lora_xs": ({"r": 5}, lambda p: LAYERS * p["r"] ** 2),
    "ffa_lora": ({"r": 5}, lambda p: LAYERS * D * p["r"]),
    "allora": ({"r": 5}, lambda p: LAYERS * 2 * D * p["r"]),
    # one (A, B) per target kind (2 kinds) + (u, v) per layer
    "tied_lora": ({"r": 5}, lambda p: 2 * 2 * D * p["r"] + LAYERS * (p["r"] + D)),
    "nola": ({"num_basis": 7, "r": 3}, lambda p: LAYERS * 2 * p["num_basis"]),
    "lamda": ({"r": 5}, lambda p: LAYERS * (p["r"] ** 2 + D * p["r"])),   # S + B (B until it freezes)
    "lora_sb": ({"r": 5}, lambda p: LAYERS * p["r"] ** 2),
    "singlora": ({"r": 5}, lambda p: LAYERS * D * p["r"]),
    # r̂ = ⌊√((32 + 32)·5)⌉ = 18 (even, as the rotation type needs): r̂² per layer
    "mora": ({"r": 5, "mora_type": 6}, lambda p: LAYERS * 18**2),
    "dylora": ({"r": 5}, lambda p: LAYERS * 2 * D * p["r"]),   # A (r×32) + B (32×r), all r components
    "elalora": ({"r": 5}, lambda p: LAYERS * p["r"] * (2 * D + 1)),   # Q, Λ, P at the initial rank
    "sora": ({"r": 5}, lambda p: LAYERS * p["r"] * (2 * D + 1)),      # A, B and the gate g at the maximum rank
    "lora_pro": ({"r": 5}, lambda p: LAYERS * 2 * D * p["r"]),        # LoRA's A, B (only the gradients differ)
    "coto": ({"r": 5}, lambda p: LAYERS * 2 * D * p["r"]),            # LoRA's A, B
    # the whole budget, r slots per layer (Q, Λ, P), allocated at apply; r_init of them active at first
    "increlora": ({"r": 5, "r_init": 2}, lambda p: LAYERS * p["r"] * (2 * D + 1)),
    "loldu": ({"r": 5}, lambda p: LAYERS * (p["r"] + 1)),             # the diagonal z and the scalar σ
    "svfit": ({"r": 5}, lambda p: LAYERS * p["r"]),                   # the top-r singular values
    "edora": ({"r": 5}, lambda p: LAYERS * (p["r"] ** 2 + D)),        # R (r×r) + the magnitude (d_out)
    "bora": ({"r": 5}, lambda p: LAYERS * (2 * D * p["r"] + 2 * D)),  # A, B + row and column magnitudes
    "delta_lora": ({"r": 5}, lambda p: LAYERS * 2 * D * p["r"]),      # A, B (W moves without a gradient)
}


def test_every_custom_method_has_a_count_formula() -> None:
    assert CUSTOM, "no custom method YAML found"
    assert sorted(FORMULAS) == CUSTOM


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_trainable_count_formula(name: str, kind: str) -> None:
    params, formula = FORMULAS[name]
    assert _count(name, kind, **params) == formula(params)


def test_custom_modules_register_their_own_names() -> None:
    """Validation lists methods/<name>.py without importing it: each module must register exactly its name."""
    methods._discover()
    assert methods.custom_names() == set(methods.METHOD_KINDS_REGISTRY)
    assert set(CUSTOM) <= methods.custom_names()


def test_validating_a_custom_method_does_not_import_torch() -> None:
    from harness.spec import PROJECT_ROOT

    code = ("import sys; from tests.conftest import compose_dictconfig; "
            "from harness.spec import spec_from_config; "
            f"spec_from_config(compose_dictconfig(['method={CUSTOM[0]}'])); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_validation_rejects_a_custom_method_without_a_module() -> None:
    from harness.validate import _check_method, _Checker

    c = _Checker()
    _check_method(c, {"name": "nosuch", "kind": "custom", "params": {}, "optim": {"lr": 1e-3}})
    assert any("nosuch" in p and "no implementation" in p for p in c.problems), c.problems


# ------------------------------------------------------------------------------------ save / load
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", CUSTOM)
def test_saved_custom_adapter_reloads_onto_a_fresh_backbone(name: str, kind: str, tmp_path: Path) -> None:
    """A trained custom adapter saved by methods/_adapters.save gives the same predictions after `load` onto
    a fresh backbone: trainable tensors and the buffers the method cannot rebuild are in the file."""
    build, model_cfg = MODELS[kind]
    cfg = method_cfg(name)
    torch.manual_seed(123)   # frozen random factors come from the global RNG: the reload must not depend on it
    impl = methods.resolve(cfg)
    model = impl.apply(build(), cfg, model_cfg)
    if impl.init is not None:   # data-dependent frozen factors (LoRA-SB) are part of what is saved
        ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(4))
        if kind == "encoder":
            from harness.train import EncoderClassifier

            head = EncoderClassifier(model, 32, 2, "mean")
            impl.init(head, iter([{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                   "labels": torch.tensor([0, 1])}]))
        else:
            impl.init(model, iter([{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}]))
    randomize(model, 0.3)
    if impl.callback is not None:   # per-step state (SingLoRA's ramp) is part of what is saved
        impl.callback(model, 9, 100)
    expected = outputs(model)
    nbytes = _adapters.save(model, tmp_path / "adapter", cfg, model_cfg)
    assert nbytes > 0 and (tmp_path / "adapter" / _adapters.WEIGHTS_FILE).exists()
    meta = json.loads((tmp_path / "adapter" / _adapters.CONFIG_FILE).read_text())
    assert meta["format"] == _adapters.FORMAT and meta["method"]["name"] == name
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= set(meta["tensors"])
    assert all(meta["tensors"][n]["trainable"] for n in trainable)

    torch.manual_seed(999)
    reloaded = _adapters.load(build(), tmp_path / "adapter")
    torch.testing.assert_close(outputs(reloaded), expected)
    if name == "dylora":   # the sampler continues from the saved seed and rank, not from the reloading job's
        for (_, a), (_, b) in zip(_adapters.adapter_layers(model), _adapters.adapter_layers(reloaded), strict=True):
            assert (b.seed, b.train_rank) == (a.seed, a.train_rank)
    assert not torch.allclose(outputs(build()), expected, atol=1e-4)   # the adapter matters


def test_load_refuses_an_adapter_that_does_not_match(tmp_path: Path) -> None:
    build, model_cfg = MODELS["encoder"]
    cfg = method_cfg("lora_xs")
    model = methods.resolve(cfg).apply(build(), cfg, model_cfg)
    _adapters.save(model, tmp_path / "a", cfg, model_cfg)
    meta = json.loads((tmp_path / "a" / _adapters.CONFIG_FILE).read_text())
    meta["method"]["params"]["r"] = cfg["params"]["r"] + 1
    (tmp_path / "a" / _adapters.CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape"):
        _adapters.load(build(), tmp_path / "a")


def test_wrap_without_a_matching_module_is_an_error() -> None:
    build, model_cfg = MODELS["encoder"]
    cfg = method_cfg("lora_xs")
    cfg["params"]["target_modules"] = ["no_such_module"]
    with pytest.raises(ValueError, match="no_such_module"):
        methods.resolve(cfg).apply(build(), cfg, model_cfg)


@pytest.mark.parametrize("name", CUSTOM)
def test_adapter_keeps_float32_tensors_on_a_bfloat16_base(name: str) -> None:
    """A half-precision backbone (the decoders' bf16) keeps the adapter in float32; its hooks run too."""
    build, model_cfg = MODELS["decoder"]
    cfg = method_cfg(name)
    impl = methods.resolve(cfg)
    model = impl.apply(build().to(torch.bfloat16), cfg, model_cfg)
    ids = torch.randint(0, 100, (2, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    if impl.init is not None:
        impl.init(model, iter([batch]))
    out = model(**batch)
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    if impl.callback is not None:
        impl.callback(model, 0, 10)


def test_training_saves_a_custom_adapter_beside_the_classifier_head(tmp_path: Path) -> None:
    """harness.train._save_adapter saves a custom adapter generically (no method names in train.py)."""
    from harness.train import EncoderClassifier, _save_adapter

    build, model_cfg = MODELS["encoder"]
    cfg = method_cfg("ffa_lora")
    encoder = methods.resolve(cfg).apply(build(), cfg, model_cfg)
    randomize(encoder, 0.05)
    clf = EncoderClassifier(encoder, 32, 2, "mean")
    nbytes = _save_adapter(clf, tmp_path / "adapter", 123, method=cfg, model_cfg=model_cfg)
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == sorted([_adapters.CONFIG_FILE, _adapters.WEIGHTS_FILE, "classifier.safetensors"])
    assert nbytes == sum(p.stat().st_size for p in (tmp_path / "adapter").glob("*.safetensors"))
    torch.testing.assert_close(outputs(_adapters.load(build(), tmp_path / "adapter")), outputs(encoder))
    # full fine-tuning (no adapter layers) is only measured
    assert _save_adapter(build(), tmp_path / "full", 123, method=method_cfg("full"), model_cfg=model_cfg) == 123
    assert not (tmp_path / "full").exists()


def test_checkpoint_resumes_a_custom_adapter_with_its_buffers(tmp_path: Path) -> None:
    """A preempted run resumes a custom adapter exactly: trainable tensors and persistent buffers (SingLoRA's
    ramp position, LoRA-SB's data-dependent factors) are in the checkpoint."""
    from harness.train import StepState, load_checkpoint, save_checkpoint

    build, model_cfg = MODELS["encoder"]
    for name in ("singlora", "lora_sb", "dylora", "elalora"):
        cfg = method_cfg(name)
        impl = methods.resolve(cfg)

        def state(model: torch.nn.Module) -> StepState:
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
            return StepState(model=model, optimizer=opt, scheduler=sched, trainable=[], protocol="classify",
                             device=torch.device("cpu"), total_steps=10)

        model = impl.apply(build(), cfg, model_cfg)
        randomize(model, 0.3)
        with torch.no_grad():   # stand-ins for what an init or a callback set
            for _, lyr in _adapters.adapter_layers(model):
                for key, buf in lyr.named_buffers():
                    if not key.startswith("base_layer") and key in lyr.state_dict():
                        buf.copy_(torch.rand_like(buf) + 3 if buf.is_floating_point() else buf + 2)
        st = state(model)
        st.step = 3
        save_checkpoint(tmp_path / f"{name}.pt", st, eval_history=[], attempts=[])
        fresh = impl.apply(build(), cfg, model_cfg)
        load_checkpoint(tmp_path / f"{name}.pt", state(fresh))
        for key, tensor in _adapters.adapter_state(model).items():
            assert torch.equal(_adapters.adapter_state(fresh)[key], tensor.detach()), (name, key)
        torch.testing.assert_close(outputs(fresh), outputs(model))
        if name == "dylora":   # the rank the next step trains at is back in effect, not only in its buffer
            assert all(lyr.train_rank == int(lyr.rank_b) for _, lyr in _adapters.adapter_layers(fresh))


CALLBACK_METHODS = [m for m in CUSTOM if methods.resolve(method_cfg(m)).callback is not None]


@pytest.mark.parametrize("name", CALLBACK_METHODS)
def test_interrupted_training_resumes_bit_for_bit(name: str, tmp_path: Path) -> None:
    """The harness's own step (train_step: forward, backward, clip, optimizer, schedule, the method's callback)
    for 8 steps equals 4 steps, a checkpoint, a fresh process-like rebuild (new model, optimizer, schedule from the
    same seed) and 4 more steps, bit for bit: whatever a callback keeps (DyLoRA's rank sampler, SingLoRA's ramp,
    LaMDA's frozen columns) is in the checkpoint."""
    from harness import train as loop

    build, model_cfg = MODELS["decoder"]
    cfg = method_cfg(name)
    impl = methods.resolve(cfg)
    budget = {"warmup_ratio": 0.25, "schedule": "linear"}
    total, cut = 12, 6
    batches = []
    g = torch.Generator().manual_seed(11)
    for _ in range(total):
        ids = torch.randint(0, 100, (2, 8), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})

    def fresh() -> loop.StepState:
        loop.set_seed(0)
        model = impl.apply(build(), cfg, model_cfg)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = loop.make_optimizer(model, trainable, {**cfg, "optim": {**cfg["optim"], "lr": 1e-2}}, impl)
        return loop.StepState(model=model, optimizer=opt, scheduler=loop.make_scheduler(opt, budget, total),
                              trainable=trainable, protocol="generate", device=torch.device("cpu"), total_steps=total,
                              grad_clip=1.0, callback=impl.callback)

    whole = fresh()
    for batch in batches:
        loop.train_step(whole, batch)
    first = fresh()
    for batch in batches[:cut]:
        loop.train_step(first, batch)
    loop.save_checkpoint(tmp_path / "ckpt.pt", first, eval_history=[], attempts=[])
    resumed = fresh()
    loop.load_checkpoint(tmp_path / "ckpt.pt", resumed)
    for batch in batches[cut:]:
        loop.train_step(resumed, batch)
    if name == "elalora":   # ranks had moved before the cut and moved again after it
        from methods.elalora import layers

        at_cut = [m.rank for m in layers(first.model)]
        assert at_cut != [cfg["params"]["r"]] * 4 and [m.rank for m in layers(resumed.model)] != at_cut
    assert [v for _, v in resumed.losses] == [v for _, v in whole.losses]
    expected = _adapters.adapter_state(whole.model)
    got = _adapters.adapter_state(resumed.model)
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), (name, key)
