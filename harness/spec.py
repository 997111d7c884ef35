"""JobSpec: one fully resolved, validated job, and its signature.

The signature is the identity of a result: sha1 over the *semantic* config only (method + hparams,
model + revision, task + version, budget, seed). Launcher, paths and logging never enter it, so the
same experiment run on a laptop or on SLURM lands on the same record and is skipped the second time.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hfmodel import is_open

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
SWEEPS_DIR = PROJECT_ROOT / "sweeps"

SEMANTIC_KEYS = ("method", "model", "task", "budget", "seed")
# Model fields that say *where* weights come from, not *which* weights: kept out of the signature
# so a hub load and a local copy of the same revision are one experiment.
# `target_widths` describes the weights (their shapes, for validation), it does not choose them.
_MODEL_LOCATION_KEYS = ("source", "package", "target_widths")
# An open block (conf/model/hf.yaml: any model by hub id or folder) is named by what it resolved to:
# see model_semantic.
_OPEN_MODEL_LOCATION_KEYS = ("path", "revision")
# Quantization of the base (nf4 | fp4 | int8, with its double_quant and compute_dtype) is semantic, but these
# fields came after records existed: a full-precision block (quantization null) leaves all three out, so it
# keeps its signature; a quantized one carries them resolved (harness.quantization.quant_settings).
_MODEL_QUANT_KEYS = ("quantization", "double_quant", "compute_dtype")
# Semantic fields added after records existed, out of the signature while null (the model's own behaviour):
# `dropout` overrides every dropout probability of the base and the classify head.
_MODEL_OPTIONAL_KEYS = ("dropout",)
# Method fields that describe, not configure (paper, mechanism, model kinds it applies to): editing a
# method's one-line description must not re-run its experiments.
_METHOD_INFO_KEYS = ("info",)
# Budget fields that steer reporting or plumbing, not training: how many seeds a fair comparison
# needs; how often to checkpoint (resuming is bit-identical, so the result does not depend on it);
# how an effective batch is split into micro-batches and whether activations are recomputed (equal
# results within float tolerance: tests/harness/test_accumulation.py; the record's meta says which ran).
_BUDGET_REPORTING_KEYS = ("seeds", "checkpoint_every", "micro_batch_size", "gradient_checkpointing", "parallel")
# Semantic budget fields added after records existed, left out of the signature at their default: a
# budget that does not use them is the experiment it was before, and its records keep their signature.
_BUDGET_NEW_DEFAULTS: dict[str, Any] = {"amp": None}
# Precision names: the long ones (torch's) are canonical; the short ones are accepted and normalised
# before the signature, so `bf16` and `bfloat16` are one experiment.
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Fields that are floats by meaning: `weight_decay=0` on the command line must hash like the YAML's
# 0.0, or a sweep re-runs the default experiment under a new signature.
FLOAT_FIELDS = {
    "method.optim": ("lr", "weight_decay"),
    "method.params": ("lora_alpha", "lora_dropout", "vera_dropout", "d_initial", "scale", "inactive_lr_scale"),
    "budget": ("warmup_ratio", "grad_clip", "time_limit_s", "memory_cap_mb"),
}


class ConfigError(ValueError):
    """Every problem found in a config, each naming the field and the allowed values."""

    def __init__(self, problems: list[str], *, context: str = "") -> None:
        self.problems = list(problems)
        head = f"invalid config{f' ({context})' if context else ''}: {len(self.problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems))


def model_semantic(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model block as the signature sees it: which weights, never where they were found.

    A named model (conf/model/<name>.yaml) is its block without the location fields (`source`,
    `package`) and without `target_widths` (shapes of the weights, for validation).

    An open block (one that declares `path`; harness.hfmodel resolves it in spec_from_config, before
    the signature exists) is named by its resolved identity:
    - from a local folder: `content_sha256`, the sha256 over the folder's files. The folder's path is
      plumbing: the same files copied elsewhere, or found through another mount, are the same
      experiment; one changed byte (other weights, another tokenizer) is another. `hub_id` is then
      only a label and stays out too (it may be absent, or name where the files once came from);
    - from the hub: `hub_id` + `commit`, the sha the revision resolved to. The revision as written
      (`main`, a tag, the sha itself) is plumbing: the commit says which bytes it meant on that day.
    Everything else the block holds (kind, dtype, pooling, target_modules, max_seq_len,
    trust_remote_code, name) chooses what is computed and stays in, derived values included.
    """
    drop = set(_MODEL_LOCATION_KEYS)
    if model.get("quantization") is None:
        drop |= set(_MODEL_QUANT_KEYS)
    drop |= {k for k in _MODEL_OPTIONAL_KEYS if model.get(k) is None}
    if "path" in model:
        drop |= set(_OPEN_MODEL_LOCATION_KEYS)
        if model.get("content_sha256"):
            drop.add("hub_id")
    return {k: v for k, v in model.items() if k not in drop}


@dataclass(frozen=True)
class JobSpec:
    """A job, frozen. Semantic blocks are plain dicts; plumbing is kept apart."""

    method: dict[str, Any]
    model: dict[str, Any]
    task: dict[str, Any]
    budget: dict[str, Any]
    seed: int
    sweep_name: str = "adhoc"
    results_dir: Path = PROJECT_ROOT / "results"
    runs_dir: Path = PROJECT_ROOT / "runs"
    cache_dir: Path = PROJECT_ROOT / ".cache"
    data_dir: str | None = None
    logger: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    device: str = "auto"
    threads: int | None = None
    force: bool = False
    launcher: str = "debug"
    # Set by `peftbench search` / `tune` only (plumbing, never in the signature): `trial` links a trial's
    # job to its study (the record's run.search; where to report for pruning), `tuning` says how a
    # final run's config was chosen (the record's tuning block).
    trial: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None

    def semantic(self) -> dict[str, Any]:
        model = model_semantic(self.model)
        budget = {k: v for k, v in self.budget.items() if k not in _BUDGET_REPORTING_KEYS
                  and not (k in _BUDGET_NEW_DEFAULTS and v == _BUDGET_NEW_DEFAULTS[k])}
        method = {k: v for k, v in self.method.items() if k not in _METHOD_INFO_KEYS}
        return {"method": method, "model": model, "task": self.task, "budget": budget,
                "seed": self.seed}

    @property
    def signature(self) -> str:
        return signature_of(self.semantic())

    @property
    def label(self) -> str:
        """Human-readable job name (W&B run name, log lines)."""
        return (f"{self.method['name']}|{self.model['name']}|{self.task['name']}|"
                f"{self.budget['name']}|s{self.seed}")

    @property
    def max_len(self) -> int:
        """Token cap per example: the budget's, never beyond what the model takes."""
        return min(int(self.budget["max_seq_len"]), int(self.model["max_seq_len"]))

    @property
    def record_path(self) -> Path:
        return self.results_dir / "records" / f"{self.signature}.json"

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.signature


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: the byte string that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def signature_of(semantic: Mapping[str, Any]) -> str:
    return hashlib.sha1(canonical_json(semantic).encode()).hexdigest()


def compose(overrides: list[str], *, return_hydra_config: bool = False) -> Any:
    """The primary config composed as Hydra's CLI composes it (a DictConfig); an unknown option or a bad
    override becomes a ConfigError. One place for every entry point that composes without running."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides),
                                 return_hydra_config=return_hydra_config)
    except (MissingConfigException, ConfigCompositionException, OverrideParseException) as exc:
        raise ConfigError([str(exc).strip()]) from None


def compose_block(group: str, name: str) -> dict[str, Any]:
    """One group's block (``method``, ``task``, ...) as a job sees it: composed through its defaults
    (dora pulls in lora, commonsense tasks their _base), interpolations resolved."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose([f"{group}={name}", "logger=none"])[group], resolve=True)


def _path_or(value: Any, env: str, default: Path) -> Path:
    if value not in (None, ""):
        return Path(str(value)).expanduser().resolve()
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser().resolve()
    return default


def _normalize_floats(cfg: dict[str, Any]) -> None:
    for dotted, keys in FLOAT_FIELDS.items():
        block: Any = cfg
        for part in dotted.split("."):
            block = block.get(part) if isinstance(block, Mapping) else None
        if not isinstance(block, dict):
            continue
        for key in keys:
            value = block.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                block[key] = float(value)


def _normalize_dtypes(cfg: dict[str, Any]) -> None:
    """model.dtype and budget.amp by their canonical (long) names; the blocks are copied, not edited."""
    for block, key in (("model", "dtype"), ("model", "compute_dtype"), ("budget", "amp")):
        value = cfg.get(block).get(key) if isinstance(cfg.get(block), Mapping) else None
        if isinstance(value, str) and value in DTYPE_ALIASES:
            cfg[block] = {**cfg[block], key: DTYPE_ALIASES[value]}


def _resolve_quantization(cfg: dict[str, Any]) -> None:
    """A quantized model block carries its settings resolved (double_quant, compute_dtype defaults), so the
    signature and the record name what ran; a full-precision block is left as it is."""
    from harness.quantization import quant_settings

    q = quant_settings(cfg["model"])
    if q is not None:
        model = {k: v for k, v in cfg["model"].items() if k not in ("double_quant", "compute_dtype")}
        cfg["model"] = {**model, **q}


def spec_from_config(cfg: Any) -> JobSpec:
    """Validate a composed config (DictConfig or plain mapping) and freeze it into a JobSpec.

    Raises ConfigError listing *all* problems; nothing has been computed or written by then.
    """
    from harness.validate import validate_config

    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        # Hydra's own node is not ours to resolve (hydra.job.num is unset while sweeping).
        keys = [k for k in cfg if k != "hydra"]
        cfg = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    if not isinstance(cfg, Mapping):
        raise ConfigError([f"config: expected a mapping, got {type(cfg).__name__}"])
    cfg = dict(cfg)
    cfg.pop("hydra", None)
    _normalize_dtypes(cfg)   # before an open model block is resolved: it builds the model in that dtype
    cache_dir = _path_or(cfg.get("cache_dir"), "PEFTBENCH_CACHE", PROJECT_ROOT / ".cache")
    problems: list[str] = []
    if isinstance(cfg.get("model"), Mapping) and is_open(cfg["model"]):
        # any model by hub id or folder: its identity (commit / content sha256), default targets and widths
        # come from its config (meta device, no weights), so they are known to validation and the signature;
        # a model that cannot be had is one more problem, naming every place tried
        from harness.hfmodel import resolve_block

        cfg["model"], problems = resolve_block(cfg["model"], cache_dir)
    problems += validate_config(cfg)
    if problems:
        raise ConfigError(problems)
    _normalize_floats(cfg)
    _resolve_quantization(cfg)
    from tasks import resolve_task

    return JobSpec(
        method=dict(cfg["method"]),
        model=dict(cfg["model"]),
        task=resolve_task(cfg["task"], cfg.get("data_dir")),
        budget=dict(cfg["budget"]),
        seed=int(cfg["seed"]),
        sweep_name=str(cfg.get("sweep_name") or "adhoc"),
        results_dir=_path_or(cfg.get("results_dir"), "PEFTBENCH_RESULTS", PROJECT_ROOT / "results"),
        runs_dir=_path_or(cfg.get("runs_dir"), "PEFTBENCH_RUNS", PROJECT_ROOT / "runs"),
        cache_dir=cache_dir,
        data_dir=cfg.get("data_dir"),
        logger=dict(cfg.get("logger") or {"name": "none"}),
        device=str(cfg.get("device") or "auto"),
        threads=cfg.get("threads"),
        force=bool(cfg.get("force", False)),
        launcher=str(cfg.get("launcher_name") or "debug"),
    )
