"""Validation: every problem names its field and the allowed values, all problems come at once, and
an invalid config (one job or one job of a sweep) stops the CLI with exit code 2 before anything runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.spec import ConfigError, spec_from_config
from harness.validate import validate_config
from tests.conftest import compose_dict, conf_names

METHODS = conf_names("method")


# pinned, so a change of config.yaml's defaults does not move these tests
BASE = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke")


def _problems(*overrides: str) -> list[str]:
    return validate_config(compose_dict((*BASE, *overrides)))


# (overrides, the field the message must name, fragments naming what is allowed)
BAD = [
    (["method.kind=bogus"], "method.kind", ["'bogus'", "peft", "full", "custom"]),
    (["method.peft_type=nope"], "method.peft_type", ["'nope'", "lora", "vera"]),
    (["+method.params.rank=4"], "method.params.rank", ["LoraConfig", "r", "lora_alpha", "target_modules"]),
    (["method.params.r=0"], "method.params.r", ["0", "> 0"]),
    (["method.params.r=2.5"], "method.params.r", ["2.5", "integer"]),
    (["method.params.lora_alpha=-2"], "method.params.lora_alpha", ["-2", "> 0"]),
    (["method.params.lora_dropout=1.0"], "method.params.lora_dropout", ["1.0", "< 1.0"]),
    (["method.capacity_knob=rank"], "method.capacity_knob", ["'rank'", "r", "lora_alpha"]),
    (["method.optim.lr=-1e-3"], "method.optim.lr", ["> 0"]),
    (["method.optim.weight_decay=-0.1"], "method.optim.weight_decay", [">= 0"]),
    (["model.source=cloud"], "model.source", ["'cloud'", "auto", "local", "hub"]),
    (["model.dtype=int8"], "model.dtype", ["'int8'", "float32", "bfloat16", "float16"]),
    (["model.pooling=max"], "model.pooling", ["'max'", "mean", "cls"]),
    (["model.package.format=tar"], "model.package.format", ["'tar'", "zip", "gguf", "dir"]),
    (["model.target_modules=[]"], "model.target_modules", ["non-empty list of module names"]),
    (["model.max_seq_len=0"], "model.max_seq_len", ["> 0"]),
    (["model.source=local", "model.package=null"], "model.package",
     ["spec", "wheel_sha256", "member", "format"]),
    (["task.protocol=rank"], "protocol", ["'rank'", "supports: classify"]),
    (["task=commonsense/piqa", "model=smollm2-135m", "task.protocol=classify"], "protocol",
     ["'classify'", "supports: generate, loglik"]),
    (["task.eval_split=test"], "eval_split", ["'test'", "reported", "validation"]),
    (["task.loader=nope"], "loader", ["'nope'", "glue", "gsm8k", "commonsense"]),
    (["task.metrics.0.name=bleu"], "metrics[0].name", ["accuracy", "f1"]),
    (["task.metrics.0.direction=up"], "metrics[0].direction", ["max", "min"]),
    (["task.version=0"], "version", ["positive integer"]),
    (["budget.schedule=step"], "budget.schedule", ["'step'", "linear", "cosine", "constant"]),
    (["budget.batch_size=0"], "budget.batch_size", ["> 0"]),
    (["budget.warmup_ratio=1.5"], "budget.warmup_ratio", ["<= 1.0"]),
    (["budget.steps=null", "budget.tokens=null"], "budget.steps",
     ["budget.tokens", "set one of them"]),
    (["budget.steps=1.5"], "budget.steps", ["integer"]),
    (["budget.eval_every=-1"], "budget.eval_every", [">= 0"]),
    (["method=full", "budget.trainable_params=1000"], "budget.trainable_params", ["full", "capacity knob"]),
    (["method=galore", "budget.trainable_params=1000"], "budget.trainable_params", ["galore", "capacity knob"]),
    (["method=adalora", "method.params.target_r=16"], "method.params.target_r", ["16 > init_r=12"]),
    (["+method.capacity_scales=[rank]"], "method.capacity_scales", ["keys of method.params"]),
    (["+method.version=0"], "method.version", ["> 0"]),
    (["+budget.capacity_policy=nearest"], "budget.capacity_policy", ["'nearest'", "strict", "closest"]),
    (["method=galore", "method.name=nosuch"], "method.name", ["'nosuch'", "no implementation", "galore", "lisa"]),
    (["method=vera", "+method.optim.name=lorafa"], "method.optim.name", ["lorafa", "peft_type lora", "'vera'"]),
    (["method=corda", "method.calibration.batches=0"], "method.calibration.batches", ["> 0"]),
    (["method=c3a", "method.params.block_size=100"], "method.params.block_size",
     ["100", "query in_features=384", "out_features=384", "must divide in_features and out_features"]),
    (["method=oft", "method.params.oft_block_size=100"], "method.params.oft_block_size",
     ["query in_features=384", "must divide in_features"]),
    (["method=vblora", "model=smollm2-135m", "task=gsm8k/gsm8k", "method.params.vector_length=36"],
     "method.params.vector_length", ["v_proj out_features=192", "must divide in_features and out_features"]),
    (["model.target_widths.query=[384]"], "model.target_widths", ["[in_features, out_features]"]),
    (["method=poly", "method.params.n_tasks=3"], "method.params.n_tasks", ["3", "must be 1"]),
    (["method=lisa", "method.info.trains_base=yes"], "method.info.trains_base", ["'yes'", "true or false"]),
    (["seed=-1"], "seed", ["-1", "integer >= 0"]),
    (["seed=abc"], "seed", ["'abc'", "integer >= 0"]),
    (["device=tpu"], "device", ["'tpu'", "auto", "cpu", "cuda", "cuda:N", "mps"]),
    (["threads=0"], "threads", ["positive integer or null"]),
    (["logger.name=mlflow"], "logger.name", ["'mlflow'", "wandb", "none"]),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode",
     ["'sometimes'", "offline", "online", "disabled"]),
]


@pytest.mark.parametrize(("overrides", "field", "allowed"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_problem_names_field_and_allowed_values(overrides: list[str], field: str, allowed: list[str]) -> None:
    problems = _problems(*overrides)
    # method/model/budget problems start with the dotted field; task problems read "task NAME: field: ..."
    named = [p for p in problems
             if field in p.split(":")[0] or (p.startswith("task ") and f": {field}:" in p)]
    assert named, f"no problem names {field!r}: {problems}"
    msg = named[0]
    for fragment in allowed:
        assert fragment in msg, f"{fragment!r} missing from {msg!r}"
    with pytest.raises(ConfigError) as info:
        spec_from_config(compose_dict((*BASE, *overrides)))
    assert msg in info.value.problems and msg in str(info.value)


def test_misspelled_peft_param_names_the_intended_field() -> None:
    problems = _problems("+method.params.use_rsloar=true")
    assert len(problems) == 1 and problems[0].startswith("method.params.use_rsloar")
    assert "use_rslora" in problems[0]


def test_valid_default_config_has_no_problems() -> None:
    assert _problems() == []


@pytest.mark.parametrize("method", ["full", "galore", "ia3", "lora"])
def test_closest_capacity_policy_accepts_every_method(method: str) -> None:
    """budget=zoo (policy closest) runs methods without a knob as they are: validation lets them through."""
    assert _problems(f"method={method}", "budget=zoo") == []


def test_all_problems_are_reported_at_once() -> None:
    overrides = ["method.params.r=0", "method.optim.lr=-1", "model.dtype=int8", "task.loader=nope",
                 "budget.schedule=step", "budget.batch_size=0", "seed=-3", "device=tpu", "threads=0"]
    fields = ["method.params.r", "method.optim.lr", "model.dtype", "loader", "budget.schedule",
              "budget.batch_size", "seed", "device", "threads"]
    with pytest.raises(ConfigError) as info:
        spec_from_config(compose_dict((*BASE, *overrides)))
    problems = info.value.problems
    assert len(problems) == len(fields), problems
    for field in fields:
        assert any(field in p for p in problems), (field, problems)
    text = str(info.value)
    assert f"{len(fields)} problem(s)" in text
    assert all(p in text for p in problems)


def test_missing_sections_are_all_reported() -> None:
    problems = validate_config({"seed": 0, "logger": {"name": "none"}})
    for section in ("method", "model", "task", "budget"):
        assert any(p.startswith(f"{section}:") and f"{section}=NAME" in p for p in problems), problems


def test_non_mapping_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        spec_from_config(["not", "a", "mapping"])


# ------------------------------------------------------------------------------------------- CLI
# Each CLI call pays the torch/peft import (~5 s of CPU), so all of them are started at once in a
# module fixture and each test waits for its own.
def _peftbench() -> list[str]:
    script = Path(sys.executable).with_name("peftbench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "harness.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PEFTBENCH_", "WANDB_", "HYDRA_", "SLURM_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


BAD_VALUES = ["method=lora", "budget=smoke", "method.params.r=0", "budget.schedule=step", "seed=-1"]
CLI_CASES = {
    "validate_bad": lambda d: ["validate", *BAD_VALUES, "logger=none"],
    "validate_unknown_method": lambda d: ["validate", "method=nosuchmethod", "logger=none"],
    "run_bad": lambda d: ["run", *BAD_VALUES, *d],
    "run_unknown_method": lambda d: ["run", "method=nosuchmethod", *d],
    "multirun_unknown_method": lambda d: ["run", "-m", "method=lora,nosuchmethod", "launcher=debug", *d],
    "multirun_bad_values": lambda d: ["run", "-m", "method=lora", "method.params.r=8,0", "seed=0,-1",
                                        "launcher=debug", *d],
}


class CliRun:
    def __init__(self, root: Path, proc: subprocess.Popen) -> None:
        self.root, self.proc = root, proc
        self.cwd, self.results, self.runs, self.cache = (root / n for n in
                                                         ("cwd", "results", "runs", "cache"))
        self._done: tuple[int, str, str] | None = None

    def wait(self) -> tuple[int, str, str]:
        if self._done is None:
            out, err = self.proc.communicate(timeout=180)
            self._done = (self.proc.returncode, out, err)
        return self._done

    def written(self) -> list[Path]:
        """Everything the command left in its cwd and in the dirs it was pointed at."""
        return [p for d in (self.cwd, self.results, self.runs, self.cache) for p in d.rglob("*")]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    runs: dict[str, CliRun] = {}
    for name, argv in CLI_CASES.items():
        root = tmp_path_factory.mktemp(name)
        for sub in ("cwd", "results", "runs", "cache"):
            (root / sub).mkdir()
        dirs = [f"results_dir={root / 'results'}", f"runs_dir={root / 'runs'}", f"cache_dir={root / 'cache'}",
                "logger=none"]
        proc = subprocess.Popen([*_peftbench(), *argv(dirs)], cwd=root / "cwd", env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[name] = CliRun(root, proc)
    yield runs
    for run in runs.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


def _assert_lists_problems(err: str) -> None:
    assert "method.params.r: 0 must be > 0" in err
    assert "budget.schedule: 'step' is not one of linear, cosine, constant" in err
    assert "seed: -1 must be an integer >= 0" in err


def test_cli_validate_invalid_exits_2_with_problems_on_stderr(cli) -> None:
    rc, out, err = cli["validate_bad"].wait()
    assert rc == 2, err
    assert "invalid config: 3 problem(s)" in err
    _assert_lists_problems(err)
    assert "# signature" not in out and "Traceback" not in err
    assert cli["validate_bad"].written() == []


def test_cli_validate_unknown_method_exits_2_listing_methods(cli) -> None:
    rc, _out, err = cli["validate_unknown_method"].wait()
    assert rc == 2, err
    assert "Traceback" not in err
    assert "nosuchmethod" in err and all(m in err for m in METHODS)


def test_cli_run_invalid_exits_2_and_writes_nothing(cli) -> None:
    run = cli["run_bad"]
    rc, _out, err = run.wait()
    assert rc == 2, err
    _assert_lists_problems(err)
    assert "Traceback" not in err
    assert run.written() == []


def test_cli_run_unknown_method_exits_2(cli) -> None:
    run = cli["run_unknown_method"]
    rc, _out, err = run.wait()
    assert run.written() == []
    assert "nosuchmethod" in err and all(m in err for m in METHODS)
    assert rc == 2, err


def test_cli_multirun_with_one_bad_job_launches_nothing(cli) -> None:
    run = cli["multirun_unknown_method"]
    rc, _out, err = run.wait()
    assert rc == 2, err
    assert "nothing was launched" in err and "sweep of 2 jobs" in err
    assert "job 1 [method=nosuchmethod" in err
    assert all(m in err for m in METHODS), err      # the allowed method names
    assert "job 0" not in err                       # the good job is not a problem ...
    assert "to run" not in err and "sweep finished" not in err   # ... and was not launched
    assert run.written() == []                      # no record, no run dir, no hydra sweep dir in cwd


def test_cli_multirun_reports_every_bad_job(cli) -> None:
    run = cli["multirun_bad_values"]
    rc, _out, err = run.wait()
    assert rc == 2, err
    # jobs: (r=8, seed=0) good; (8, -1) bad seed; (0, 0) bad r; (0, -1) both: 4 problems in 3 jobs
    assert "sweep of 4 jobs; nothing was launched): 4 problem(s)" in err
    lines = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("- job ")]
    assert len(lines) == 4, err
    assert sum("method.params.r: 0 must be > 0" in ln for ln in lines) == 2
    assert sum("seed: -1 must be an integer >= 0" in ln for ln in lines) == 2
    assert {ln.split()[2] for ln in lines} == {"1", "2", "3"}
    assert not any(ln.startswith("- job 0 ") for ln in lines)
    assert run.written() == []


def test_block_size_check_reads_only_widths_it_knows() -> None:
    """Divisible sizes pass; targets whose widths the model does not list are left to load time."""
    assert _problems("method=c3a", "method.params.block_size=64") == []   # 384 = 6·64
    assert _problems("method=c3a", "method.params.block_size=100", "method.params.target_modules=[key]") == []
    assert len(_problems("method=vblora", "model=smollm2-135m", "task=gsm8k/gsm8k",
                         "method.params.vector_length=36")) == 1   # q_proj 576 = 16·36 is fine, v_proj is not


@pytest.mark.parametrize("model", conf_names("model"))
def test_model_target_widths_match_the_architecture(model: str) -> None:
    """model.target_widths ([in, out] per default target) is what the real architecture builds: checked
    on the model's config (meta device: no weights) where a copy of it is cached."""
    import torch
    from transformers import AutoConfig, AutoModel

    from harness.spec import PROJECT_ROOT

    cfg = compose_dict(("logger=none", f"model={model}"))["model"]
    local = Path(os.environ.get("PEFTBENCH_CACHE", PROJECT_ROOT / ".cache")) / "models" / model / "hf"
    if not (local / "config.json").exists():
        pytest.skip(f"no cached copy of {model} (peftbench fetch-models)")
    with torch.device("meta"):
        net = AutoModel.from_config(AutoConfig.from_pretrained(local))
    assert set(cfg["target_widths"]) == set(cfg["target_modules"])
    for target, (n_in, n_out) in cfg["target_widths"].items():
        layers = [m for n, m in net.named_modules() if n.endswith(f".{target}")]
        assert layers, target
        assert {(m.in_features, m.out_features) for m in layers} == {(n_in, n_out)}, target
