"""JobSpec and its signature: stable across processes, blind to plumbing, sensitive to semantics.

Also: every method × model × task in conf/ composes and validates, and the one mismatch the
protocols forbid (encoder/decoder vs classify/generate) is reported as exactly one problem.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.spec import ConfigError, JobSpec, canonical_json, signature_of, spec_from_config
from harness.validate import validate_config
from tests.conftest import compose_dict, conf_names

METHODS = conf_names("method")
MODELS = conf_names("model")
TASKS = conf_names("task")
BUDGETS = conf_names("budget")
# DESIGN.md: classify = encoder + head (GLUE); generate = decoder, parse the answer; loglik = a decoder
# scoring choices by log-likelihood.
EXPECTED_KIND = {"classify": "encoder", "generate": "decoder", "loglik": "decoder"}


# The base job is pinned here, so a change of config.yaml's defaults does not move these tests.
BASE = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "seed=0")


def _spec(*overrides: str) -> JobSpec:
    return spec_from_config(compose_dict((*BASE, *overrides)))


# ------------------------------------------------------------------------------- golden signature
# A fixed literal semantic config. If this test fails, the hashing scheme changed: every existing
# record's signature is orphaned (skip-if-done stops working, old results no longer match). Change
# the pins only together with a migration of results/records/.
GOLDEN_SEMANTIC = {
    "method": {"name": "lora", "kind": "peft", "peft_type": "lora",
               "params": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": None},
               "optim": {"lr": 0.002, "weight_decay": 0.0}},
    "model": {"name": "minilm-l6", "kind": "encoder", "revision": "main", "dtype": "float32",
              "target_modules": ["query", "value"]},
    "task": {"name": "glue/sst2", "version": 1, "protocol": "classify"},
    "budget": {"name": "smoke", "steps": 60, "batch_size": 16, "warmup_ratio": 0.1},
    "seed": 0,
}
GOLDEN_CANONICAL = (
    '{"budget":{"batch_size":16,"name":"smoke","steps":60,"warmup_ratio":0.1},'
    '"method":{"kind":"peft","name":"lora","optim":{"lr":0.002,"weight_decay":0.0},'
    '"params":{"lora_alpha":16,"lora_dropout":0.0,"r":8,"target_modules":null},"peft_type":"lora"},'
    '"model":{"dtype":"float32","kind":"encoder","name":"minilm-l6","revision":"main",'
    '"target_modules":["query","value"]},"seed":0,'
    '"task":{"name":"glue/sst2","protocol":"classify","version":1}}'
)
GOLDEN_SIGNATURE = "02bbc6d9ae6d132982902ccfa0cb945d6fb1de84"


def test_golden_signature_is_pinned() -> None:
    assert canonical_json(GOLDEN_SEMANTIC) == GOLDEN_CANONICAL
    assert hashlib.sha1(GOLDEN_CANONICAL.encode()).hexdigest() == GOLDEN_SIGNATURE
    assert signature_of(GOLDEN_SEMANTIC) == GOLDEN_SIGNATURE


def test_jobspec_signature_is_the_semantic_hash() -> None:
    spec = JobSpec(method=GOLDEN_SEMANTIC["method"], model={**GOLDEN_SEMANTIC["model"], "source": "hub",
                                                            "package": None},
                   task=GOLDEN_SEMANTIC["task"], budget=GOLDEN_SEMANTIC["budget"], seed=0,
                   results_dir=Path("/nowhere"), sweep_name="x", launcher="slurm", device="cpu", threads=3)
    assert spec.signature == GOLDEN_SIGNATURE
    assert spec.record_path == Path("/nowhere") / "records" / f"{GOLDEN_SIGNATURE}.json"


# ------------------------------------------------------------------------------------- key order
def _reverse_keys(obj):
    if isinstance(obj, dict):
        return {k: _reverse_keys(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [_reverse_keys(v) for v in obj]
    return obj


def test_key_order_does_not_matter() -> None:
    reordered = _reverse_keys(GOLDEN_SEMANTIC)
    assert list(reordered) != list(GOLDEN_SEMANTIC)
    assert list(reordered["method"]["params"]) != list(GOLDEN_SEMANTIC["method"]["params"])
    assert signature_of(reordered) == GOLDEN_SIGNATURE


def test_key_order_does_not_matter_in_a_composed_spec() -> None:
    spec = _spec()
    flipped = JobSpec(method=_reverse_keys(spec.method), model=_reverse_keys(spec.model),
                      task=_reverse_keys(spec.task), budget=_reverse_keys(spec.budget), seed=spec.seed)
    assert flipped.signature == spec.signature


def test_list_order_does_matter() -> None:
    # target_modules order is kept as written: lists are sequences, not sets.
    swapped = {**GOLDEN_SEMANTIC, "model": {**GOLDEN_SEMANTIC["model"], "target_modules": ["value", "query"]}}
    assert signature_of(swapped) != GOLDEN_SIGNATURE


# ---------------------------------------------------------------------------- across processes
def test_same_signature_in_another_process(tmp_path: Path) -> None:
    """`peftbench validate` in a fresh interpreter (other hash seed, other cwd, other plumbing)."""
    plumbing = [f"results_dir={tmp_path / 'r'}", f"runs_dir={tmp_path / 'u'}", f"cache_dir={tmp_path / 'c'}",
                "logger=wandb", "launcher=slurm", "sweep_name=elsewhere", "device=cpu", "threads=2",
                "model.source=hub"]
    overrides = ["method=dora", "method.params.r=4", "task=glue/rte", "seed=3"]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "validate", *overrides, *plumbing],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("# signature: ")]
    assert len(lines) == 1, proc.stdout
    there = lines[0].removeprefix("# signature: ").strip()
    here = _spec(*overrides)
    assert there == here.signature
    assert f"# record: {tmp_path / 'r' / 'records' / (there + '.json')}" in proc.stdout
    assert list(tmp_path.iterdir()) == []   # validate writes nothing


# -------------------------------------------------------------------------------- plumbing vs semantics
PLUMBING = [
    ["results_dir=/tmp/peftbench-elsewhere/results"],
    ["runs_dir=/tmp/peftbench-elsewhere/runs"],
    ["cache_dir=/tmp/peftbench-elsewhere/cache"],
    ["data_dir=/tmp/peftbench-elsewhere/data"],
    ["logger=wandb"],
    ["logger=wandb", "logger.mode=online", "logger.project=other"],
    ["launcher=local"],
    ["launcher=slurm"],
    ["sweep_name=some_sweep"],
    ["device=cpu"],
    ["device=cuda:1"],
    ["threads=4"],
    ["force=true"],
    ["model.source=hub"],
    ["model.package=null"],
    ["model.source=hub", "model.package=null"],
    ["model.target_widths=null"],   # describes the weights' shapes (for validation), does not choose them
]


@pytest.mark.parametrize("overrides", PLUMBING, ids=lambda o: " ".join(o))
def test_plumbing_does_not_change_the_signature(overrides: list[str]) -> None:
    base = _spec()
    other = _spec(*overrides)
    assert other.signature == base.signature
    assert other.semantic() == base.semantic()


def test_semantic_holds_no_plumbing() -> None:
    sem = _spec().semantic()
    assert set(sem) == {"method", "model", "task", "budget", "seed"}
    assert "source" not in sem["model"] and "package" not in sem["model"]


def test_restating_a_default_keeps_the_signature() -> None:
    base = _spec()
    keys = [("method", "params", "r"), ("method", "optim", "lr"), ("budget", "batch_size"),
            ("budget", "warmup_ratio"), ("task", "version")]
    restated = []
    for key in keys:
        block = base.semantic()
        for part in key:
            block = block[part]
        restated.append(f"{'.'.join(key)}={block!r}")
    assert _spec(*restated, f"seed={base.seed}").signature == base.signature


# values chosen to differ from any plausible YAML default
SEMANTIC = [
    ["method.params.r=13"],
    ["method.params.lora_alpha=37"],
    ["method.params.lora_dropout=0.13"],
    ["method.optim.lr=3.3e-4"],
    ["method.optim.weight_decay=0.037"],
    ["method=dora"],
    ["method=full"],
    ["model.revision=0123abcd"],
    ["model.dtype=bfloat16"],
    ["model.max_seq_len=48"],
    ["model=roberta-base"],
    ["task.version=7"],
    ["task=glue/rte"],
    ["budget.steps=12345"],
    ["budget.tokens=54321"],
    ["budget.batch_size=7"],
    ["budget.warmup_ratio=0.37"],
    ["budget=small"],
    ["seed=11"],
    ["seed=12"],
]


@pytest.mark.parametrize("overrides", SEMANTIC, ids=lambda o: " ".join(o))
def test_semantic_fields_change_the_signature(overrides: list[str]) -> None:
    assert _spec(*overrides).signature != _spec().signature


def test_semantic_changes_give_pairwise_distinct_signatures() -> None:
    sigs = [_spec(*o).signature for o in SEMANTIC] + [_spec().signature]
    assert len(set(sigs)) == len(sigs)


def test_int_and_float_spelling_of_one_value_share_a_signature() -> None:
    # conf/method/lora.yaml writes `weight_decay: 0.0`; a sweep override writes 0
    assert _spec("method.optim.weight_decay=0").signature == _spec("method.optim.weight_decay=0.0").signature


# ----------------------------------------------------------------- every combination in conf/
# conf/model/hf.yaml (any model by hub id or folder) names no model until given one: here the Llama-3.2-3B
# config fixture, a decoder (harness.hfmodel resolves it from its config.json alone)
OPEN_MODEL = ("model.kind=decoder", f"model.path={Path(__file__).resolve().parent / 'fixtures' / 'llama-3.2-3b'}")


def _blocks(group: str, name: str) -> dict:
    """The group's block of a composed config, a fresh copy of that block alone (5,800 combinations below)."""
    extra = OPEN_MODEL if (group, name) == ("model", "hf") else ()
    return compose_dict((*BASE, f"{group}={name}", *extra), part=group)


def _combo(method: str, model: str, task: str) -> dict:
    cfg = compose_dict(BASE)
    cfg["method"], cfg["model"], cfg["task"] = _blocks("method", method), _blocks("model", model), \
        _blocks("task", task)
    return cfg


def test_conf_groups_are_found() -> None:
    assert {"lora", "full"} <= set(METHODS)
    assert {"minilm-l6", "smollm2-135m"} <= set(MODELS)
    assert "glue/sst2" in TASKS and all("/" in t for t in TASKS)


@pytest.mark.parametrize(("method", "model", "task"),
                         [("dora", "smollm2-135m", "gsm8k/gsm8k"), ("full", "minilm-l6", "glue/rte"),
                          ("vera", "minilm-l6", "commonsense/boolq")])
def test_assembled_combination_equals_full_composition(method: str, model: str, task: str) -> None:
    # The parametrized checks below assemble group blocks composed one at a time (composition costs
    # ~0.1 s); this pins that assembling equals composing the combination in one go.
    assert _combo(method, model, task) == compose_dict((*BASE, f"method={method}", f"model={model}",
                                                        f"task={task}"))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_every_combination_validates_or_reports_the_kind_mismatch(method: str, model: str, task: str) -> None:
    cfg = _combo(method, model, task)
    protocol, kind = cfg["task"]["protocol"], cfg["model"]["kind"]
    assert protocol in EXPECTED_KIND, f"task {task}: protocol {protocol!r} untested"
    problems = validate_config(cfg)
    applies = cfg["method"]["info"]["applies_to"]
    if kind not in applies:   # e.g. prompt tuning on an encoder: the method says so, naming itself
        assert problems, problems
        mine = [p for p in problems if p.startswith("method:")]
        assert len(mine) == 1 and repr(method) in mine[0] and kind in mine[0], problems
        with pytest.raises(ConfigError):
            spec_from_config(cfg)
        problems = [p for p in problems if p not in mine]
        cfg["method"] = {**cfg["method"], "info": {**cfg["method"]["info"], "applies_to": [kind]}}
        if EXPECTED_KIND[protocol] == kind:
            assert problems == []
            return
    if EXPECTED_KIND[protocol] == kind:
        assert problems == []
        spec = spec_from_config(cfg)
        assert spec.method["name"] == cfg["method"]["name"] and spec.task["name"] == task
        assert len(spec.signature) == 40
    else:
        assert len(problems) == 1, problems
        msg = problems[0]
        assert msg.startswith("model:")
        for part in (repr(task), repr(protocol), EXPECTED_KIND[protocol], repr(cfg["model"]["name"]), kind):
            assert part in msg
        with pytest.raises(ConfigError) as info:
            spec_from_config(cfg)
        assert info.value.problems == problems


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_budget_validates(budget: str) -> None:
    spec = _spec(f"budget={budget}")
    assert spec.budget["name"] == budget


def test_spec_from_dictconfig_matches_plain_dict() -> None:
    from tests.conftest import compose_dictconfig

    dc = compose_dictconfig([*BASE, "method=rslora"])
    assert spec_from_config(dc).signature == _spec("method=rslora").signature


def test_label_names_the_job() -> None:
    spec = _spec("method=pissa", "seed=7")
    assert spec.label == "pissa|minilm-l6|glue/sst2|smoke|s7"
