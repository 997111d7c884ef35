"""Method registry: every conf/method/*.yaml resolves, applies to tiny models, trains, and its capacity
knob can be solved for a trainable-parameter target. Tiny models are built from config (milliseconds).
"""
from __future__ import annotations

import copy
import types
from typing import Any

import pytest
import torch

import methods
from harness.capacity import _trainable_for, _with_knob, solve_capacity
from harness.spec import CONF_DIR
from methods import MethodImpl
from methods.catalog import zoo_blocks
from tests.conftest import compose_dict, conf_names

METHODS = conf_names("method")

TINY_ENCODER_CFG = {"name": "tiny-bert", "kind": "encoder", "hub_id": "none/tiny-bert", "dtype": "float32",
                    "pooling": "mean", "target_modules": ["query", "value"], "max_seq_len": 16}
TINY_DECODER_CFG = {"name": "tiny-llama", "kind": "decoder", "hub_id": "none/tiny-llama", "dtype": "float32",
                    "pooling": None, "target_modules": ["q_proj", "v_proj"], "max_seq_len": 16}


def tiny_bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, vocab_size=100, max_position_embeddings=32))


def tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                        max_position_embeddings=32))


MODELS = {"encoder": (tiny_bert, TINY_ENCODER_CFG), "decoder": (tiny_llama, TINY_DECODER_CFG)}


def method_cfg(name: str) -> dict[str, Any]:
    """The method block as composed by Hydra (defaults such as dora → lora are merged; a fresh copy). From
    methods.catalog.zoo_blocks: the whole zoo in one Hydra session, half the cost of a full compose per method,
    paid once per process at collection (KNOB_METHODS) rather than again per test."""
    return copy.deepcopy(zoo_blocks()[name])


WITH_DEFAULTS = [m for m in METHODS if "defaults:" in (CONF_DIR / "method" / f"{m}.yaml").read_text()]


@pytest.mark.parametrize("name", WITH_DEFAULTS)
def test_the_zoo_composes_each_method_as_a_job_does(name: str) -> None:
    """method_cfg's one-session compose gives a job's own method block, for every method built on another."""
    assert method_cfg(name) == compose_dict(("logger=none", f"method={name}"))["method"]


def _forward_backward(model: torch.nn.Module, kind: str) -> torch.Tensor:
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if kind == "encoder":
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = out.pow(2).mean()
    else:
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    return loss


@pytest.mark.parametrize("name", METHODS)
def test_method_resolves_to_an_implementation(name: str) -> None:
    cfg = method_cfg(name)
    assert cfg["name"] == name, f"conf/method/{name}.yaml: name must equal the file name"
    impl = methods.resolve(cfg)
    assert isinstance(impl, MethodImpl) and callable(impl.apply)
    if cfg["kind"] == "peft":
        assert cfg["peft_type"] in methods.PEFT_CONFIGS


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", METHODS)
def test_method_applies_and_trains_on_tiny_model(name: str, kind: str) -> None:
    build, model_cfg = MODELS[kind]
    cfg = method_cfg(name)
    if kind not in cfg["info"]["applies_to"]:
        pytest.skip(f"{name} applies to {cfg['info']['applies_to']} only (validation rejects it on this kind)")
    backbone = build()
    base = {id(p): n for n, p in backbone.named_parameters()}
    base_total = sum(p.numel() for p in backbone.parameters())
    model = methods.resolve(cfg).apply(backbone, cfg, model_cfg)

    params = dict(model.named_parameters())
    trainable = {n: p for n, p in params.items() if p.requires_grad}
    n_trainable = sum(p.numel() for p in trainable.values())
    n_total = sum(p.numel() for p in params.values())
    assert n_trainable > 0
    if cfg["kind"] == "full":
        assert n_trainable == n_total == base_total
    elif cfg["info"].get("trains_base"):   # a full-parameter method (GaLore, LISA): declared in its YAML
        assert n_total == base_total and 0 < n_trainable <= n_total
        assert all(id(p) in base for p in trainable.values()), f"{name}: trains_base adds no parameters"
    else:
        assert n_trainable < n_total
        still_base = [n for n, p in params.items() if id(p) in base and p.requires_grad]
        assert still_base == [], f"{name}: base weights left trainable: {still_base[:5]}"
        if "target_modules" in cfg["params"] and cfg["params"]["target_modules"] is None:
            # the adapter sits on the model's default target modules (method target_modules: null)
            targets = tuple(model_cfg["target_modules"])
            assert all(any(t in n for t in targets) for n in trainable), list(trainable)[:5]
        if cfg["kind"] == "peft":   # our count is peft's own count
            assert n_trainable == model.get_nb_trainable_parameters()[0]

    model.train()
    _forward_backward(model, kind)
    grads = {n: p.grad for n, p in params.items() if p.requires_grad}
    assert any(g is not None and g.abs().sum() > 0 for g in grads.values()), f"{name}: no gradient reached"
    assert all(p.grad is None for p in params.values() if not p.requires_grad)


def test_custom_method_that_is_not_implemented_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="nosuch"):
        methods.resolve({"name": "nosuch", "kind": "custom"})


# ------------------------------------------------------------------------------------- capacity
def _setup(name: str, target: int | None) -> tuple[Any, Any]:
    cfg = method_cfg(name)
    build, model_cfg = MODELS[cfg["info"]["applies_to"][0]]
    spec = types.SimpleNamespace(budget={"name": "t", "trainable_params": target}, method=cfg, model=model_cfg)
    loaded = types.SimpleNamespace(backbone=build())
    return spec, loaded


KNOB_METHODS = [m for m in METHODS if method_cfg(m).get("capacity_knob")]


def test_knob_methods_found() -> None:
    assert "lora" in KNOB_METHODS and "full" not in KNOB_METHODS


@pytest.mark.parametrize("name", KNOB_METHODS)
def test_solve_capacity_meets_the_target(name: str) -> None:
    spec, loaded = _setup(name, None)
    knob = spec.method["capacity_knob"]

    def count(value: int) -> int:
        return _trainable_for(spec, loaded, _with_knob(spec.method, knob, value))

    # a target strictly between the counts of knob=5 and knob=6: the answer must be 5
    c5, c6 = count(5), count(6)
    assert c5 < c6, f"{name}: trainable params not increasing in {knob}"
    spec.budget["trainable_params"] = target = (c5 + c6) // 2 if c6 - c5 > 1 else c5
    solved, info = solve_capacity(spec, loaded)
    value = solved["params"][knob]
    assert value == 5
    assert info["knob"] == knob and info["value"] == value and info["target"] == target
    assert info["adapter_params"] == count(value) <= target
    assert count(value + 1) > target
    assert info["configured_value"] == spec.method["params"][knob]
    assert spec.method["params"][knob] == info["configured_value"]   # the input config is not mutated

    # solving leaves the real backbone untouched (counts are made on copies)
    assert all(p.requires_grad for p in loaded.backbone.parameters())
    assert not any("lora" in n or "vera" in n for n, _ in loaded.backbone.named_parameters())


@pytest.mark.parametrize("name", KNOB_METHODS)
def test_solve_capacity_target_exactly_reachable(name: str) -> None:
    spec, loaded = _setup(name, None)
    knob = spec.method["capacity_knob"]
    exact = _trainable_for(spec, loaded, _with_knob(spec.method, knob, 3))
    spec.budget["trainable_params"] = exact
    solved, info = solve_capacity(spec, loaded)
    assert solved["params"][knob] == 3 and info["adapter_params"] == exact


def test_solve_capacity_without_target_returns_the_method_unchanged() -> None:
    spec, loaded = _setup("lora", None)
    solved, info = solve_capacity(spec, loaded)
    assert solved is spec.method and info == {}


def test_solve_capacity_target_below_knob_1_is_an_error() -> None:
    spec, loaded = _setup("lora", 10)
    with pytest.raises(ValueError, match="r=1 trains .* > budget.trainable_params=10"):
        solve_capacity(spec, loaded)


def test_solve_capacity_without_knob_is_an_error() -> None:
    spec, loaded = _setup("full", 1000)
    with pytest.raises(ValueError, match="no capacity_knob"):
        solve_capacity(spec, loaded)


@pytest.mark.parametrize("name", ["full", "ia3"])
def test_closest_policy_runs_a_method_without_knob_as_it_is_and_says_so(name: str) -> None:
    spec, loaded = _setup(name, 1000)
    spec.budget["capacity_policy"] = "closest"
    solved, info = solve_capacity(spec, loaded)
    count = _trainable_for(spec, loaded, spec.method)
    assert solved is spec.method
    assert info["knob"] is None and info["value"] is None and info["target"] == 1000
    assert info["adapter_params"] == count and info["deviation"] == pytest.approx(count / 1000 - 1, abs=1e-6)
    assert info["met"] is (abs(count / 1000 - 1) <= 0.10) and "no capacity knob" in info["reason"]


def test_closest_policy_takes_knob_1_when_even_that_exceeds_the_target() -> None:
    spec, loaded = _setup("lora", 10)
    spec.budget["capacity_policy"] = "closest"
    solved, info = solve_capacity(spec, loaded)
    assert solved["params"]["r"] == 1 and info["value"] == 1 and info["met"] is False
    assert info["adapter_params"] == _trainable_for(spec, loaded, solved) > 10
    assert "r=1 exceeds" in info["reason"]


def test_closest_policy_marks_a_solved_count_short_of_the_target() -> None:
    """lora's counts come in steps of one rank (r=2 is twice r=1): a target midway solves to r=1, a third
    short, because r=2 is as far above; the block says so."""
    spec, loaded = _setup("lora", None)
    r1, r2 = (_trainable_for(spec, loaded, _with_knob(spec.method, "r", v)) for v in (1, 2))
    spec.budget.update(trainable_params=(r1 + r2) // 2, capacity_policy="closest")
    _, info = solve_capacity(spec, loaded)
    assert info["value"] == 1 and info["adapter_params"] == r1 and info["met"] is False
    assert info["reason"].startswith("the largest r within the target")
    spec.budget["trainable_params"] = r1
    assert solve_capacity(spec, loaded)[1]["met"] is True and "reason" not in solve_capacity(spec, loaded)[1]


@pytest.mark.parametrize("policy", ["strict", "closest"])
def test_a_value_just_over_the_target_is_taken_when_the_one_within_falls_short(policy: str) -> None:
    """A target one parameter under r=2's count: r=1 is half of it, r=2 a hair over, so the solve takes r=2
    (met) rather than hold the method at half the target. (AdaLoRA, SoRA, KaSA, … at LoRA r=8's count: their
    r=8 is a few parameters over, and r=7 is 12% short.)"""
    spec, loaded = _setup("lora", None)
    r2 = _trainable_for(spec, loaded, _with_knob(spec.method, "r", 2))
    spec.budget.update(trainable_params=r2 - 1, capacity_policy=policy)
    solved, info = solve_capacity(spec, loaded)
    assert solved["params"]["r"] == 2 and info["value"] == 2 and info["adapter_params"] == r2
    assert info["met"] is True and 0 < info["deviation"] <= 0.10 and "reason" not in info


@pytest.mark.parametrize("peft_type", sorted(__import__("methods").PEFT_CONFIGS))
def test_source_read_fields_never_claim_a_non_field(peft_type: str) -> None:
    """The no-import fast path may under-count a config's fields, never over-count them."""
    import methods

    entry = methods.PEFT_CONFIGS[peft_type]
    assert methods._source_fields(entry.cls_name) <= entry.fields()
    assert entry.has_fields(entry.fields())
    assert not entry.has_fields({"no_such_field_xyz"})


def test_validating_a_peft_method_does_not_import_torch() -> None:
    """Config validation must stay cheap: a valid peft method is checked from peft's source."""
    import subprocess
    import sys

    from harness.spec import PROJECT_ROOT

    code = ("import sys; from tests.conftest import compose_dictconfig; "
            "from harness.spec import spec_from_config; "
            "spec_from_config(compose_dictconfig(['method=dora', 'method.params.r=4'])); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_solve_is_kept_in_the_cache_and_reused(tmp_path, monkeypatch) -> None:
    """A campaign's jobs that differ in task or seed solve once; another target or method block solves anew."""
    from harness import capacity

    spec, loaded = _setup("lora", None)
    r3 = _trainable_for(spec, loaded, _with_knob(spec.method, "r", 3))
    spec.budget["trainable_params"] = r3
    spec.cache_dir = tmp_path
    solved, block = solve_capacity(spec, loaded)
    assert solved["params"]["r"] == 3 and len(list((tmp_path / "capacity").glob("*.json"))) == 1

    def no_build(*a, **k):
        raise AssertionError("the cached solve was not used")

    monkeypatch.setattr(capacity, "_trainable_for", no_build)
    again, block2 = solve_capacity(spec, loaded)
    assert again == solved and block2 == block
    spec.budget["trainable_params"] = r3 + 1       # another target: solved anew
    with pytest.raises(AssertionError, match="not used"):
        solve_capacity(spec, loaded)
    spec.budget["trainable_params"] = r3
    spec.method = {**spec.method, "params": {**spec.method["params"], "lora_dropout": 0.3}}   # another block
    with pytest.raises(AssertionError, match="not used"):
        solve_capacity(spec, loaded)


@pytest.mark.parametrize("configured", [1, 3, 64])
def test_solve_from_any_configured_value_finds_the_same_answer(configured: int) -> None:
    spec, loaded = _setup("lora", None)
    spec.method["params"]["r"] = configured
    spec.budget["trainable_params"] = _trainable_for(spec, loaded, _with_knob(spec.method, "r", 5)) + 1
    assert solve_capacity(spec, loaded)[0]["params"]["r"] == 5


def test_solve_settles_on_the_largest_value_the_method_can_build() -> None:
    """SVFit trains r singular values per layer and cannot take r beyond the layer's rank (32 on the tiny
    models): a target it cannot reach solves to that rank, and the closest policy says why."""
    spec, loaded = _setup("svfit", 10_000)
    spec.budget["capacity_policy"] = "closest"
    solved, info = solve_capacity(spec, loaded)
    assert solved["params"]["r"] == 32 and info["met"] is False
    assert info["reason"].startswith("the largest r the method can build reaches") and "(r=33: " in info["reason"]


def test_adalora_target_r_keeps_its_ratio_to_the_solved_init_r() -> None:
    """init_r is AdaLoRA's knob; target_r follows it (capacity_scales) so the final budget stays below it."""
    spec, _ = _setup("adalora", None)
    assert spec.method["capacity_scales"] == ["target_r"]
    six = _with_knob(spec.method, "init_r", 6)["params"]
    assert six["init_r"] == 6 and six["target_r"] == 4          # 8/12 of 6
    assert _with_knob(spec.method, "init_r", 1)["params"]["target_r"] == 1
    assert _with_knob(spec.method, "init_r", 24)["params"]["target_r"] == 16
