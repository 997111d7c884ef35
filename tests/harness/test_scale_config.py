"""Config of issue #19's knobs: budget.micro_batch_size and budget.gradient_checkpointing are plumbing (out
of the signature), budget.amp and model.dtype are semantic (in it, by one name for each precision), existing
budgets keep their signatures, and every bad value is reported before any compute, all at once."""
from __future__ import annotations

import pytest

from harness.spec import ConfigError, spec_from_config
from harness.validate import validate_config
from tests.conftest import compose_dict, conf_names

BASE = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "seed=0")


def _spec(*overrides: str):
    return spec_from_config(compose_dict((*BASE, *overrides)))


def _problems(*overrides: str) -> list[str]:
    return validate_config(compose_dict((*BASE, *overrides)))


# ------------------------------------------------------------------------------------- signature
@pytest.mark.parametrize("overrides", [["budget.micro_batch_size=2"], ["budget.micro_batch_size=auto"],
                                       ["budget.micro_batch_size=4"], ["budget.gradient_checkpointing=true"],
                                       ["budget.micro_batch_size=1", "budget.gradient_checkpointing=true"],
                                       ["budget.parallel=fsdp"], ["budget.parallel=ddp"], ["~budget.parallel"]])
def test_plumbing_fields_stay_out_of_the_signature(overrides: list[str]) -> None:
    assert _spec(*overrides).signature == _spec().signature
    assert _spec(*overrides).semantic() == _spec().semantic()


def test_short_and_long_dtype_names_are_one_experiment() -> None:
    assert _spec("model.dtype=bf16").signature == _spec("model.dtype=bfloat16").signature != _spec().signature
    assert _spec("model.dtype=fp32").signature == _spec("model.dtype=float32").signature == _spec().signature
    assert _spec("budget.amp=bf16").signature == _spec("budget.amp=bfloat16").signature


def test_amp_is_semantic_and_its_default_keeps_old_signatures() -> None:
    base = _spec().signature
    assert _spec("budget.amp=null").signature == base
    assert "amp" not in _spec().semantic()["budget"]
    assert _spec("budget.amp=bf16").signature != base
    assert _spec("budget.amp=bf16").signature != _spec("model.dtype=bf16").signature


def test_dtype_normalisation_leaves_the_callers_config_alone() -> None:
    cfg = compose_dict((*BASE, "model.dtype=bf16", "budget.amp=bf16"))
    spec = spec_from_config(cfg)
    assert (spec.model["dtype"], spec.budget["amp"]) == ("bfloat16", "bfloat16")
    assert (cfg["model"]["dtype"], cfg["budget"]["amp"]) == ("bf16", "bf16")


@pytest.mark.parametrize("budget", conf_names("budget"))
def test_every_budget_states_the_new_fields_at_their_defaults(budget: str) -> None:
    """Each conf/budget/*.yaml carries the fields (with a comment), at values that leave its signature as it
    was before they existed: the semantic block holds none of them."""
    b = compose_dict(("logger=none", f"budget={budget}"))["budget"]
    if budget in LATER_RECIPES:   # a published recipe that trains under autocast: amp is its semantic setting
        amp, micro = LATER_RECIPES[budget]
        assert (b["micro_batch_size"], b["gradient_checkpointing"], b["parallel"]) == (micro, False, "ddp")
        assert _spec(f"budget={budget}").semantic()["budget"]["amp"] == amp   # normalised: fp16 → float16
        return
    assert (b["micro_batch_size"], b["gradient_checkpointing"], b["amp"], b["parallel"]) == (None, False, None, "ddp")
    assert not {"micro_batch_size", "gradient_checkpointing", "amp", "parallel"} & set(
        _spec(f"budget={budget}").semantic()["budget"])


# budgets written after these fields existed, for a published recipe: (amp, micro_batch_size) as the recipe has them
LATER_RECIPES = {"llm_adapters": ("float16", "auto")}   # LLM-Adapters / DoRA train with the HF Trainer's fp16=True


# ------------------------------------------------------------------------------------ validation
BAD = [
    (["budget.micro_batch_size=8"], "budget.micro_batch_size", ["8 > batch_size=4", "effective batch"]),
    (["budget.batch_size=6", "budget.micro_batch_size=4"], "budget.micro_batch_size",
     ["4 does not divide batch_size=6", "1, 2, 3, 6", "auto"]),
    (["budget.micro_batch_size=0"], "budget.micro_batch_size", ["0", "positive integer", "auto", "null"]),
    (["budget.micro_batch_size=most"], "budget.micro_batch_size", ["'most'", "auto"]),
    (["budget.gradient_checkpointing=maybe"], "budget.gradient_checkpointing", ["'maybe'", "true or false"]),
    (["budget.amp=fp8"], "budget.amp", ["'fp8'", "bfloat16", "float16", "bf16", "fp16"]),
    (["budget.amp=fp16", "device=cpu"], "budget.amp", ["'fp16'", "device=cpu", "CUDA", "bf16"]),
    (["model.dtype=fp16", "device=cpu"], "model.dtype", ["'fp16'", "device=cpu", "CUDA", "bfloat16"]),
    (["model.dtype=int8"], "model.dtype", ["'int8'", "float32", "bfloat16", "float16", "bf16"]),
    (["model.dtype=float16", "method=full"], "model.dtype", ["'float16'", "'full'", "base weights", "bfloat16"]),
    (["model.dtype=fp16", "method=galore"], "model.dtype", ["'galore'", "base weights"]),
    (["budget.parallel=tp"], "budget.parallel", ["'tp'", "ddp", "fsdp"]),
    (["budget.parallel=fsdp", "budget.micro_batch_size=auto"], "budget.micro_batch_size",
     ["auto", "fsdp", "collective"]),
]


@pytest.mark.parametrize(("overrides", "field", "fragments"), BAD, ids=lambda x: x if isinstance(x, str) else None)
def test_a_bad_scale_field_is_named_with_what_is_allowed(overrides: list[str], field: str,
                                                          fragments: list[str]) -> None:
    problems = _problems(*overrides)
    mine = [p for p in problems if p.startswith(field + ":")]
    assert len(mine) == 1, problems
    for frag in fragments:
        assert frag in mine[0], (frag, mine[0])


def test_float16_is_fine_on_a_gpu_and_for_adapters() -> None:
    assert _problems("budget.amp=fp16", "device=cuda") == []
    assert _problems("model.dtype=fp16", "device=auto") == []   # auto: train() checks where it runs
    assert _problems("model.dtype=float32", "method=full", "budget.amp=float16", "device=cuda") == []


def test_every_bad_scale_field_at_once() -> None:
    overrides = ("budget.micro_batch_size=3", "budget.gradient_checkpointing=2", "budget.amp=fp8",
                 "model.dtype=half", "budget.warmup_ratio=2.0")
    with pytest.raises(ConfigError) as info:
        _spec(*overrides)
    fields = [p.split(":")[0] for p in info.value.problems]
    for field in ("budget.micro_batch_size", "budget.gradient_checkpointing", "budget.amp", "model.dtype",
                  "budget.warmup_ratio"):
        assert field in fields, info.value.problems


@pytest.mark.parametrize("method", conf_names("method"))
def test_fsdp_takes_a_method_unless_it_touches_whole_parameters_outside_a_forward(method: str) -> None:
    """Under FSDP a parameter is a shard outside its block's forward: a method whose per-step callback,
    regularizer, optimizer or evaluation variants work on parameters is refused by name; every other method
    validates as it does under DDP."""
    import methods
    from harness.validate import FSDP_REFUSED_HOOKS

    cfg = compose_dict(("logger=none", f"method={method}", "model=minilm-l6", "task=glue/sst2", "budget=smoke"))
    if validate_config(cfg):
        pytest.skip(f"{method} does not validate on this model/task to begin with")
    impl = methods.resolve(cfg["method"])
    hooks = [h for h in FSDP_REFUSED_HOOKS if getattr(impl, h, None) is not None] + \
        (["info.fsdp"] if cfg["method"]["info"].get("fsdp") else [])
    cfg["budget"]["parallel"] = "fsdp"
    problems = validate_config(cfg)
    if hooks:
        assert len(problems) == 1 and problems[0].startswith("budget.parallel:") and method in problems[0], problems
        assert "budget.parallel=ddp" in problems[0]
    else:
        assert problems == []
