"""peft's method comparison (huggingface/peft, method_comparison/MetaMathQA) read into peftbench.

Two directions, one translation:

- an experiment folder (``experiments/<method>/<variant>/``: ``adapter_config.json`` and an optional
  ``training_params.json`` over peft's defaults) becomes a peftbench method and its overrides under
  ``budget=peft_mc``, so the same experiment runs here (:func:`translate`, ``peftbench import peft-experiment``);
- a published result (``results/<method>--<variant>.json``) becomes an external record (``run.source:
  external``) under results/records/ (:func:`result_record`, ``peftbench import peft-results``), with its
  trainable count recounted on the model's config alone (:func:`recount`): the published count stays the
  record's, ``meta.recount`` says whether ours agrees and, where known, why not.

The translation never guesses: a peft type with no peftbench method, an option whose value the installed
peft's config class cannot take, an optimizer or training setting peftbench cannot express, each is one
problem naming it, and all of a folder's problems are raised together (:class:`PeftImportError`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec import ConfigError
from methods.catalog import zoo_blocks

PUBLISHER = "huggingface/peft"
PUBLISHER_SLUG = "huggingface-peft"
SOURCE_PATH = "method_comparison/MetaMathQA"
BUDGET = "peft_mc"
TASK = "math/metamathqa"
# peft's default_training_params.json (method_comparison/MetaMathQA): what conf/budget/peft_mc.yaml and the
# method's optim block say here; a training_params.json setting that differs from these must be expressible.
DEFAULT_TRAINING = {
    "model_id": "meta-llama/Llama-3.2-3B", "dtype": "bfloat16", "max_seq_length": 768, "batch_size": 4,
    "batch_size_eval": 50, "max_steps": 5000, "eval_steps": 250, "compile": False, "use_gc": False, "seed": 0,
    "grad_norm_clip": 1.0, "optimizer_type": "AdamW", "optimizer_kwargs": {"lr": 1e-4, "weight_decay": 0.1},
    "lr_scheduler": "cosine", "use_amp": False, "autocast_adapter_dtype": True, "attn_implementation": None,
    "generation_kwargs": {"max_length": 800, "max_new_tokens": 300},
    "query_template": "Question: {query} Think step by step.\nAnswer:", "init_kv_cache_prefix": None,
}
# training settings that change nothing computed (peft's plumbing): never a reason to refuse a folder
PLUMBING = {"batch_size_eval", "compile", "use_gc", "attn_implementation"}
# training settings and where they go here (a budget field); others that differ from the defaults are refused
BUDGET_FIELDS = {"max_steps": "steps", "batch_size": "batch_size", "max_seq_length": "max_seq_len",
                 "eval_steps": "eval_every", "grad_norm_clip": "grad_clip"}
# peft config keys that are bookkeeping, not the adapter: never translated
BOOKKEEPING = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
               "inference_mode"}
# peft's optimizer_type → the method's optim.name here (AdamW: none)
OPTIMIZERS = {"AdamW": None, "lora-fa": "lorafa"}
# peft config fields that training writes (AdaLoRA's final rank mask, its step count: the job's own callback sets
# them here), and prompt learning's fields that peft fills in from the base model's config: never settings
TRAINING_OUTPUT = {"adalora": {"rank_pattern", "total_step"}}
PROMPT_LEARNING = {"prompt_tuning", "prefix_tuning", "p_tuning"}
MODEL_DERIVED = {"num_layers", "token_dim", "num_attention_heads", "num_transformer_submodules"}
MODEL_ARGS = "model=hf model.hub_id=meta-llama/Llama-3.2-3B model.kind=decoder model.dtype=bfloat16"


class PeftImportError(ValueError):
    """Everything wrong with one folder or file, each problem naming what it is about."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.where, self.problems = where, list(problems)
        super().__init__(f"{where}: " + "; ".join(self.problems))


@dataclass
class Translation:
    """A peft experiment as a peftbench job: a conf/method name and the overrides that make its block.

    ``problems``: every setting peftbench cannot express (the job cannot run here while there is one).
    ``method`` is None when no conf/method entry has the peft type; ``block`` is then peft's own config of
    that type (when methods.PEFT_CONFIGS has it), enough to count its parameters but not a method to run."""

    experiment: str
    method: str | None
    overrides: list[str] = field(default_factory=list)
    block: dict[str, Any] = field(default_factory=dict)   # the method block those overrides give
    budget: str = BUDGET
    budget_overrides: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self) -> Translation:
        """This translation, or PeftImportError naming every setting peftbench cannot express."""
        if self.problems:
            raise PeftImportError(self.experiment, self.problems)
        return self

    def command(self, model: str = MODEL_ARGS) -> str:
        """The `peftbench run` line of this experiment."""
        import shlex

        return " ".join(["peftbench run", f"method={self.method}", *map(shlex.quote, self.overrides), model,
                         f"task={TASK}", f"budget={self.budget}", *map(shlex.quote, self.budget_overrides), "seed=0"])


# ----------------------------------------------------------------------------------------- translation
def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _norm(key: str, value: Any) -> Any:
    """A value as compared and written: target lists sorted (peft stores a set: its order means nothing),
    tuples as lists, enums as their values."""
    if hasattr(value, "value") and not isinstance(value, (int, float, str, bool)):
        value = value.value
    if isinstance(value, (set, frozenset)) or (key in ("target_modules", "modules_to_save") and
                                               isinstance(value, (list, tuple))):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _default_targets(peft_type: str, model_type: str) -> list[str] | None:
    """peft's own default target modules for this peft type on this architecture (what `null` means to peft)."""
    from peft.utils import constants

    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{peft_type.upper()}_TARGET_MODULES_MAPPING", None)
    if table is None:
        table = constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    targets = table.get(model_type)
    return sorted(targets) if targets else None


def _override(key: str, value: Any, present: bool) -> str:
    text = _quote(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{'' if present else '+'}{key}={text}"


def _quote(text: str) -> str:
    plain = text.replace("_", "").replace("-", "").replace(".", "").isalnum()
    return text if plain else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def translate(peft_config: Mapping[str, Any] | None, training: Mapping[str, Any] | None, *, experiment: str,
              zoo: Mapping[str, Mapping[str, Any]], model_type: str = "llama") -> Translation:
    """The peftbench method and overrides that build `peft_config` and train as `training` says (peft's
    training_params over its defaults); what peftbench cannot express is listed in ``problems``.

    The method is the conf/method entry of the same peft type whose own flags (what it sets beyond the type's
    base entry: dora's use_dora, lorafa's optimizer) the experiment has, the most specific one winning; every
    other adapter setting that differs from the chosen block is an override of method.params."""
    problems: list[str] = []
    training = dict(training or {})
    optim_name, optim_kwargs = _optimizer(training, problems)
    budget_over = _budget_overrides(training, problems)
    if peft_config is None:   # peft's full fine-tuning: no adapter
        block = dict(zoo["full"])
        overrides = _optim_overrides(block, optim_kwargs, problems)
        if optim_name:
            problems.append(f"optimizer_type {training.get('optimizer_type')!r} needs an adapter")
        return Translation(experiment, "full", overrides, _apply(block, overrides), BUDGET, budget_over, problems)
    from methods import PEFT_CONFIGS

    ptype = str(peft_config.get("peft_type", "")).lower()
    if ptype not in PEFT_CONFIGS:
        problems.append(f"peft type {ptype.upper() or '(none)'}: peftbench cannot build it (peft types it "
                        f"builds: {', '.join(sorted(t.upper() for t in PEFT_CONFIGS))})")
        return Translation(experiment, None, [], {}, BUDGET, budget_over, problems)
    cls = PEFT_CONFIGS[ptype].load()
    defaults = _defaults(cls)
    ignored = BOOKKEEPING | TRAINING_OUTPUT.get(ptype, set()) | (MODEL_DERIVED if ptype in PROMPT_LEARNING else set())
    wanted: dict[str, Any] = {}
    for key, value in peft_config.items():
        if key in ignored:
            continue
        if key not in defaults:
            if value not in (None, {}, [], False):
                problems.append(f"option {key}={json.dumps(value)} is not a field of peft's {cls.__name__} "
                                "(installed peft): peftbench cannot build it")
            continue
        wanted[key] = _norm(key, value)
    if "target_modules" in defaults and wanted.get("target_modules") is None:
        wanted["target_modules"] = _default_targets(ptype, model_type)
    candidates = {n: b for n, b in zoo.items() if b.get("kind") == "peft" and b.get("peft_type") == ptype}
    name = _pick(ptype, candidates, wanted, defaults, optim_name) if candidates else None
    if name is None:
        if candidates:
            problems.append(f"optimizer_type {training.get('optimizer_type')!r} with peft type {ptype.upper()}: "
                            "no peftbench method of that type trains with it")
        else:
            problems.append(f"peft type {ptype.upper()}: peftbench has no method for it (conf/method has none "
                            "of that type)")
        # peft's own config of the type: enough to count its parameters (harness.capacity), not a method to run
        params = {k: v for k, v in wanted.items() if v != _norm(k, defaults.get(k))}
        block = {"name": f"peft-{ptype}", "kind": "peft", "peft_type": ptype, "capacity_knob": None,
                 "params": params, "optim": {"lr": float(optim_kwargs.get("lr", 1e-4)), "weight_decay": 0.0},
                 "info": {"applies_to": ["decoder"]}}
        return Translation(experiment, None, [], block, BUDGET, budget_over, problems)
    block = candidates[name]
    params = block.get("params") or {}
    overrides: list[str] = []
    for key in sorted(wanted):
        value = wanted[key]
        if key in params:
            if _norm(key, params[key]) != value:
                overrides.append(_override(f"method.params.{key}", value, True))
        elif value != _norm(key, defaults.get(key)):
            overrides.append(_override(f"method.params.{key}", value, False))
    overrides += _optim_overrides(block, optim_kwargs, problems, lorafa=optim_name == "lorafa", params=wanted)
    return Translation(experiment, name, overrides, _apply(block, overrides), BUDGET, budget_over, problems)


def _pick(ptype: str, candidates: Mapping[str, Mapping[str, Any]], wanted: Mapping[str, Any],
          defaults: Mapping[str, Any], optim_name: str | None) -> str | None:
    """The most specific candidate whose own flags the experiment has (None: none trains with its optimizer)."""
    base = candidates.get(ptype) or min(candidates.values(), key=lambda b: len(b.get("params") or {}))
    base_params = base.get("params") or {}
    best, best_size = None, -1
    for name, block in sorted(candidates.items()):
        if (block.get("optim") or {}).get("name") != optim_name:
            continue
        flags = {k: v for k, v in (block.get("params") or {}).items()
                 if name != base["name"] and (k not in base_params or v != base_params.get(k))}
        if any(wanted.get(k, _norm(k, defaults.get(k))) != _norm(k, v) for k, v in flags.items()):
            continue
        if len(flags) > best_size:
            best, best_size = name, len(flags)
    return best


def _optimizer(training: Mapping[str, Any], problems: list[str]) -> tuple[str | None, dict[str, Any]]:
    kind = training.get("optimizer_type", DEFAULT_TRAINING["optimizer_type"])
    if kind not in OPTIMIZERS:
        problems.append(f"optimizer_type {kind!r}: peftbench has no such optimizer (it has: "
                        f"{', '.join(OPTIMIZERS)})")
    kwargs = {**DEFAULT_TRAINING["optimizer_kwargs"], **(training.get("optimizer_kwargs") or {})}
    return OPTIMIZERS.get(kind), kwargs


def _optim_overrides(block: Mapping[str, Any], kwargs: Mapping[str, Any], problems: list[str], *,
                     lorafa: bool = False, params: Mapping[str, Any] | None = None) -> list[str]:
    optim = block.get("optim") or {}
    out = []
    for key, value in sorted(kwargs.items()):
        if key in ("lr", "weight_decay"):
            if float(optim.get(key) or 0.0) != float(value):
                out.append(_override(f"method.optim.{key}", float(value), key in optim))
        elif lorafa and key in ("r", "lora_alpha") and (params or {}).get(key) == value:
            continue   # peft's LoRA-FA optimizer repeats the adapter's r and α: the same values, nothing to set
        else:
            problems.append(f"optimizer_kwargs.{key}={json.dumps(value)}: peftbench's optimizer has no such setting")
    return out


def _budget_overrides(training: Mapping[str, Any], problems: list[str]) -> list[str]:
    out = []
    for key, value in sorted(training.items()):
        if key in ("optimizer_type", "optimizer_kwargs") or key in PLUMBING:
            continue
        if key not in DEFAULT_TRAINING:
            problems.append(f"training_params {key}: not one of peft's training settings")
        elif value != DEFAULT_TRAINING[key]:
            if key in BUDGET_FIELDS:
                out.append(f"budget.{BUDGET_FIELDS[key]}={json.dumps(value)}")
            else:
                problems.append(f"training_params {key}={json.dumps(value)}: peftbench's peft_mc budget cannot "
                                f"express it (peft's default: {json.dumps(DEFAULT_TRAINING[key])})")
    return out


def _apply(block: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The method block with `method.params.*` / `method.optim.*` overrides applied (JSON values)."""
    out = json.loads(json.dumps(block))
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        _, group, leaf = key.split(".", 2)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value[1:-1].replace("\\'", "'") if value.startswith("'") else value
        out.setdefault(group, {})[leaf] = parsed
    return out


# ------------------------------------------------------------------------------------------- recount
@dataclass
class Recounter:
    """Counts a method block's trainable parameters on one model's config alone (one meta backbone, built
    once: every count deep-copies it)."""

    model_cfg: dict[str, Any]
    backbone: Any
    described: str
    timeout_s: float | None = 60.0   # per count: a method whose init runs on its targets' values may take minutes

    @classmethod
    def from_config_dir(cls, path: Path, name: str = "llama-3.2-3b") -> Recounter:
        from transformers import AutoConfig

        from harness.hfmodel import meta_backbone

        config = AutoConfig.from_pretrained(str(path))
        model_cfg = {"name": name, "kind": "decoder", "target_modules": None, "target_widths": None,
                     "max_seq_len": getattr(config, "max_position_embeddings", None), "dtype": "float32"}
        return cls(model_cfg, meta_backbone(config, "decoder"), f"{name} config.json ({path.name}), meta device")

    @classmethod
    def from_hub(cls, hub_id: str) -> Recounter:
        """The config.json of a hub model (no weights), read through transformers' cache."""
        from transformers import AutoConfig

        from harness.hfmodel import meta_backbone

        config = AutoConfig.from_pretrained(hub_id)
        model_cfg = {"name": hub_id, "kind": "decoder", "target_modules": None, "target_widths": None,
                     "max_seq_len": getattr(config, "max_position_embeddings", None), "dtype": "float32"}
        return cls(model_cfg, meta_backbone(config, "decoder"), f"{hub_id} config.json, meta device")

    def count(self, block: Mapping[str, Any]) -> tuple[int, str]:
        from harness.capacity import count_trainable

        if block.get("kind") == "full":
            return sum(p.numel() for p in self.backbone.parameters()), "every parameter of the backbone"
        return _within(self.timeout_s, lambda: count_trainable(self.backbone, block, self.model_cfg))


class CountTimeout(BaseException):
    """A count past its time limit (a BaseException: count_trainable's own fallbacks must not swallow it)."""


def _within(seconds: float | None, fn: Any) -> Any:
    """fn() stopped by SIGALRM after `seconds` (main thread only; elsewhere, or None, no limit)."""
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        return fn()

    def stop(signum: int, frame: Any) -> None:
        raise CountTimeout(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def recount(translation: Translation, published: int | None, counter: Recounter | None) -> dict[str, Any]:
    """meta.recount: {counted, match, reason, how, model}. counted None: no count (the reason says why).

    The count is of the block the translation gives: the peftbench method with the experiment's overrides, or,
    for a peft type with no peftbench method, peft's own config of that type (``how`` says which)."""
    out: dict[str, Any] = {"counted": None, "match": None, "reason": None, "how": None,
                           "model": counter.described if counter else None}
    if counter is None:
        out["reason"] = "no model config to count on"
        return out
    if not translation.block:
        out["reason"] = "; ".join(translation.problems)
        return out
    try:
        counted, how = counter.count(translation.block)
    except CountTimeout as exc:
        out["reason"] = (f"not counted: {exc.args[0]} (its init runs on the targets' values even from a config: "
                         "raise --recount-timeout to count it)")
        return out
    except Exception as exc:  # noqa: BLE001 - a count that fails is recorded with its reason, never fatal
        out["reason"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        return out
    via = (f"method={translation.method}" if translation.method
           else f"peft's own {translation.block['peft_type']} config (no peftbench method)")
    out.update(counted=counted, match=published is not None and counted == published, how=f"{via}; {how}")
    if not out["match"]:
        out["reason"] = known_reason(translation, counted, published)
    return out


def known_reason(translation: Translation, counted: int, published: int | None) -> str | None:
    """Why a recount differs from the published count, where the difference is understood (None: unknown)."""
    if published is None:
        return "the result publishes no trainable count"
    return None


# -------------------------------------------------------------------------------------- result files
STATUS = {"success": "success", "failed": "failed", "cancelled": "cancelled"}
MiB = 2**20


def method_label(experiment: str) -> str:
    """A board row's name: the experiment without the model in its variant (lily/rank140-mlp-a2-b2-s8.0)."""
    method, _, variant = experiment.partition("/")
    for prefix in ("llama-3.2-3B-", "llama-3.2-3B"):
        if variant.startswith(prefix) and len(variant) > len(prefix):
            variant = variant[len(prefix):]
            break
    return f"{method}/{variant}" if variant else method


def parse_result(data: bytes, source: str) -> dict[str, Any]:
    """A peft results JSON, checked: every block and field the record is made of, or PeftImportError
    naming each one that is missing or of the wrong type (one error for the file)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeftImportError(source, [f"not a JSON file ({exc})"]) from None
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise PeftImportError(source, ["not a JSON object (peft's results have run_info, train_info, meta_info)"])
    need = {"run_info": ("experiment_name", "train_config", "peft_config"),
            "train_info": ("status", "num_trainable_params", "num_total_params", "train_time", "metrics"),
            "meta_info": ("package_info", "system_info")}
    for block, keys in need.items():
        if not isinstance(doc.get(block), dict):
            problems.append(f"{block}: missing (or not an object)")
            continue
        problems += [f"{block}.{k}: missing" for k in keys if k not in doc[block]]
    if problems:
        raise PeftImportError(source, problems)
    ri, ti = doc["run_info"], doc["train_info"]
    if not isinstance(ri["experiment_name"], str) or "/" not in ri["experiment_name"]:
        problems.append(f"run_info.experiment_name: {ri['experiment_name']!r} is not <method>/<variant>")
    if not isinstance(ri["train_config"], dict):
        problems.append("run_info.train_config: not an object")
    if ri["peft_config"] is not None and not (isinstance(ri["peft_config"], dict) and "peft_type" in ri["peft_config"]):
        problems.append("run_info.peft_config: neither null (full fine-tuning) nor an object with a peft_type")
    if ti["status"] not in STATUS:
        problems.append(f"train_info.status: {ti['status']!r} is not one of {', '.join(STATUS)}")
    for key in ("num_trainable_params", "num_total_params"):
        if not isinstance(ti[key], int) or isinstance(ti[key], bool) or ti[key] < 0:
            problems.append(f"train_info.{key}: {ti[key]!r} is not a count")
    if not isinstance(ti["train_time"], (int, float)):
        problems.append(f"train_info.train_time: {ti['train_time']!r} is not a number")
    if not isinstance(ti["metrics"], list) or not all(isinstance(m, dict) for m in ti["metrics"]):
        problems.append("train_info.metrics: not a list of objects")
    elif ti["status"] == "success":
        final = [m for m in ti["metrics"] if "test accuracy" in m]
        if not final:
            problems.append("train_info.metrics: a successful run without a 'test accuracy' entry")
        elif not isinstance(final[-1]["test accuracy"], (int, float)):
            problems.append(f"train_info.metrics: test accuracy {final[-1]['test accuracy']!r} is not a number")
    if problems:
        raise PeftImportError(source, problems)
    return doc


def result_record(doc: Mapping[str, Any], sha256: str, source_name: str, translation: Translation,
                  recounted: Mapping[str, Any]) -> dict[str, Any]:
    """The external record of one parsed peft result (:func:`parse_result`)."""
    ri, ti, mi = doc["run_info"], doc["train_info"], doc["meta_info"]
    experiment = ri["experiment_name"]
    status = STATUS[ti["status"]]
    metrics = ti["metrics"]
    final = next((m for m in reversed(metrics) if "test accuracy" in m), {})
    evals = [m for m in metrics if "valid accuracy" in m]
    pkg, sysinfo = mi.get("package_info") or {}, mi.get("system_info") or {}
    accelerator = sysinfo.get("accelerator")
    signature = hashlib.sha1(f"external|{PUBLISHER}|{experiment}|{sha256}".encode()).hexdigest()
    train_time = float(ti["train_time"])
    run: dict[str, Any] = {
        "signature": signature, "status": status, "source": "external", "publisher": PUBLISHER,
        "experiment": experiment, "method": method_label(experiment), "model": ri["train_config"].get("model_id")
        or DEFAULT_TRAINING["model_id"], "task": TASK, "suite": "math", "budget": BUDGET,
        "seed": ri["train_config"].get("seed", 0), "train_config": ri["train_config"], "peft_config": ri["peft_config"],
        "started_at": ri.get("created_at"), "error": ri.get("error_msg") or None}
    rec: dict[str, Any] = {"run": run, "train": {
        "steps": ri["train_config"].get("max_steps"), "train_time_s": round(train_time, 3),
        "wall_time_s": ri.get("total_time"), "peak_memory_mb": None,
        "trainable_params": ti["num_trainable_params"], "total_params": ti["num_total_params"],
        "adapter_bytes": ti.get("file_size"), "tokens": final.get("train total tokens"),
        "loss": final.get("train loss"),
        "loss_curve": [[m["step"], m["train loss"]] for m in metrics if "train loss" in m and "step" in m],
        "memory": {"device": "cuda", "allocated_max_mb": _mb(ti.get("accelerator_memory_max")),
                   "reserved_avg_mb": _mb(ti.get("accelerator_memory_reserved_avg")),
                   "reserved_p99_mb": _mb(ti.get("accelerator_memory_reserved_99th"))},
        "accelerator": {"name": accelerator, "count": 1} if accelerator else None,
        "gpus": 1 if accelerator else 0, "gpu_hours": round(train_time / 3600, 6) if accelerator else None}}
    if status == "success":
        rec["eval"] = {
            "metrics": {"accuracy": {"value": float(final["test accuracy"]), "direction": "max"},
                        **({"forgetting": {"value": float(final["forgetting"]), "direction": "min"}}
                           if isinstance(final.get("forgetting"), (int, float)) else {})},
            "primary_metric": "accuracy", "n_examples": 1319, "split": "test", "eval_split": "reported",
            "task_version": 1, "protocol": "generate",
            "history": [{"step": m["step"], "valid_accuracy": m["valid accuracy"]} for m in evals]}
    rec["meta"] = {
        "external": {"publisher": PUBLISHER, "path": f"{SOURCE_PATH}/results/{source_name}", "sha256": sha256,
                     "peft_version": pkg.get("peft-version"), "peft_commit": pkg.get("peft-commit-hash"),
                     "transformers_version": pkg.get("transformers-version"), "torch_version": pkg.get("torch-version"),
                     "accelerator": accelerator, "created_at": ri.get("created_at"),
                     "model_sha": (mi.get("model_info") or {}).get("sha"), "datasets": mi.get("dataset_info")},
        "device": "cuda:0" if accelerator else None,
        "hardware": {"gpus": [accelerator]} if accelerator else {},
        "translation": {"method": translation.method, "overrides": translation.overrides,
                        "budget_overrides": translation.budget_overrides, "problems": translation.problems},
        "recount": dict(recounted)}
    return rec


def _mb(v: Any) -> float | None:
    return None if not isinstance(v, (int, float)) else round(float(v) / MiB, 1)


@dataclass
class ImportReport:
    """What one `peftbench import peft-results` did: per file, written | unchanged."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)


def import_results(files: Sequence[Path], results_dir: Path, *, counter: Recounter | None,
                   zoo: Mapping[str, Mapping[str, Any]] | None = None) -> ImportReport:
    """Every file parsed and checked first: any malformed one raises ConfigError listing each (one line per
    file) and nothing is written. A file already imported (a record with its sha256) is left as it is, so
    re-importing changes nothing; the rest are translated, recounted (``counter``; None: not recounted) and
    written atomically."""
    from harness.records import read_record, write_record

    parsed, problems = [], []
    for path in files:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror})")
            continue
        try:
            parsed.append((path, data, parse_result(data, str(path))))
        except PeftImportError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems)
    report = ImportReport()
    records_dir = Path(results_dir) / "records"
    for path, data, doc in parsed:
        sha = sha256_of(data)
        signature = hashlib.sha1(f"external|{PUBLISHER}|{doc['run_info']['experiment_name']}|{sha}"
                                 .encode()).hexdigest()
        target = records_dir / f"{signature}.json"
        if target.exists():
            report.unchanged.append(target)
            report.records.append(read_record(target))
            continue
        zoo = zoo if zoo is not None else zoo_blocks()   # read-only: translate copies what it changes
        translation = translate(doc["run_info"]["peft_config"], doc["run_info"]["train_config"],
                                experiment=doc["run_info"]["experiment_name"], zoo=zoo)
        recounted = (recount(translation, doc["train_info"]["num_trainable_params"], counter) if counter
                     else {"counted": None, "match": None, "reason": "not recounted (--no-recount)", "how": None,
                           "model": None})
        rec = result_record(doc, sha, path.name, translation, recounted)
        write_record(target, rec)
        report.written.append(target)
        report.records.append(rec)
    return report


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- CLI
def read_experiment(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any], list[str]]:
    """(adapter_config or None for full fine-tuning, training_params, problems) of one experiment folder."""
    problems: list[str] = []
    out: list[Any] = []
    for name, required in (("adapter_config.json", False), ("training_params.json", False)):
        f = path / name
        if not f.exists():
            out.append(None if name == "adapter_config.json" else {})
            continue
        try:
            value = json.loads(f.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{name}: not readable JSON ({exc})")
            value = None if name == "adapter_config.json" else {}
        if not isinstance(value, dict) and value is not None:
            problems.append(f"{name}: not a JSON object")
            value = None if name == "adapter_config.json" else {}
        out.append(value)
    if not path.is_dir():
        problems.append("not a folder")
    elif out[0] is None and not (path / "training_params.json").exists():
        problems.append("neither adapter_config.json nor training_params.json: not a peft experiment folder")
    return out[0], out[1] or {}, problems


def experiment_name(path: Path) -> str:
    """<method>/<variant> from the folder's last two parts (peft's own naming)."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}"


CONF_GROUP = "peft_mc"   # conf/peft_mc/<experiment>.yaml: one experiment each, as a delta over the primary config


def conf_name(experiment: str) -> str:
    """The conf/peft_mc option of an experiment: its board label with / and . as - and _ (lora-rank32)."""
    return method_label(experiment).replace("/", "-").replace(".", "_")


def experiment_yaml(t: Translation) -> str:
    """One experiment as a global delta (`+peft_mc=<name>`): the method it selects and its settings."""
    import yaml

    delta: dict[str, Any] = {"method": _apply({}, t.overrides)}
    for o in t.budget_overrides:
        key, _, value = o.partition("=")
        delta.setdefault("budget", {})[key.split(".", 1)[1]] = json.loads(value)
    body = yaml.safe_dump(delta, sort_keys=True, default_flow_style=None, width=110) if delta else ""
    return (f"# @package _global_\n# peftbench run +{CONF_GROUP}={conf_name(t.experiment)} {MODEL_ARGS} task={TASK} "
            f"budget={t.budget}\n# peft experiment {t.experiment} ({PUBLISHER} {SOURCE_PATH}/experiments), written "
            f"by peftbench import peft-experiment --write-conf\ndefaults:\n  - override /method: {t.method}\n{body}")


def sweep_yaml(names: Sequence[str]) -> str:
    """sweeps/peft_mc.yaml: every written experiment, once, at peft's setting."""
    return "\n".join([
        f"# peftbench sweep {CONF_GROUP}      (written by peftbench import peft-experiment --write-conf)",
        "# peft's method comparison (huggingface/peft method_comparison/MetaMathQA): each experiment folder peftbench",
        f"# can express (conf/{CONF_GROUP}/), on Llama-3.2-3B with a bf16 base, MetaMathQA → GSM8K, budget={BUDGET},",
        "# seed 0: one job per experiment, the same method settings as the folder (a GPU per job: about 20 min on an",
        "# L40S each, as peft reports).",
        "defaults:", "  - config", f"  - override budget: {BUDGET}", f"  - override task: {TASK}", "  - override model: hf",
        "  - override launcher: local", "  - _self_", "", f"sweep_name: {CONF_GROUP}",
        "model: {hub_id: meta-llama/Llama-3.2-3B, kind: decoder, dtype: bfloat16}",
        "hydra:", "  sweeper:", "    params:", f"      +{CONF_GROUP}: {','.join(names)}", ""])


def main(argv: list[str] | None = None) -> int:
    """`peftbench import peft-results FILE...` | `peftbench import peft-experiment DIR...`."""
    import argparse
    import sys

    from harness.spec import PROJECT_ROOT, _path_or

    ap = argparse.ArgumentParser(prog="peftbench import", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    res = sub.add_parser("peft-results", help="peft results JSONs → external records under results/records/")
    res.add_argument("files", nargs="+")
    res.add_argument("--results-dir", default=None, help="default: $PEFTBENCH_RESULTS or <project>/results")
    res.add_argument("--model-config", default=None, metavar="DIR",
                     help="a folder with the model's config.json to recount trainable parameters on (meta device, "
                          "no weights); default: meta-llama/Llama-3.2-3B's config from the hub")
    res.add_argument("--no-recount", action="store_true", help="do not recount the trainable parameters")
    res.add_argument("--recount-timeout", type=float, default=60.0, metavar="S",
                     help="seconds per recount (default 60; FRoD's init decomposes its targets: minutes)")
    exp = sub.add_parser("peft-experiment", help="peft experiment folders → peftbench method + overrides")
    exp.add_argument("dirs", nargs="+")
    exp.add_argument("--write-conf", action="store_true",
                     help=f"write conf/{CONF_GROUP}/<experiment>.yaml for each and sweeps/{CONF_GROUP}.yaml running them all")
    args = ap.parse_args(argv)
    if args.what == "peft-experiment":
        zoo = zoo_blocks()
        done, errors = [], []
        for d in args.dirs:
            adapter, training, problems = read_experiment(Path(d))
            name = experiment_name(Path(d))
            if problems:
                errors.append(str(PeftImportError(f"{d} ({name})", problems)))
                continue
            t = translate(adapter, training, experiment=name, zoo=zoo)
            if t.problems or t.method is None:
                errors.append(str(PeftImportError(f"{d} ({name})", t.problems)))
                continue
            done.append(t)
        for t in done:
            print(f"# {t.experiment}\n{t.command()}")
        if args.write_conf and done:
            from harness.spec import CONF_DIR, SWEEPS_DIR

            (CONF_DIR / CONF_GROUP).mkdir(exist_ok=True)
            for t in done:
                (CONF_DIR / CONF_GROUP / f"{conf_name(t.experiment)}.yaml").write_text(experiment_yaml(t))
            names = sorted(p.stem for p in (CONF_DIR / CONF_GROUP).glob("*.yaml"))
            (SWEEPS_DIR / f"{CONF_GROUP}.yaml").write_text(sweep_yaml(names))
            print(f"# wrote {len(done)} experiment(s) to conf/{CONF_GROUP}/ and sweeps/{CONF_GROUP}.yaml "
                  f"({len(names)} experiments): peftbench sweep {CONF_GROUP}")
        for e in errors:
            print(f"peftbench import peft-experiment: {e}", file=sys.stderr)
        return 1 if errors else 0
    results = _path_or(args.results_dir, "PEFTBENCH_RESULTS", PROJECT_ROOT / "results")
    counter = None
    if not args.no_recount:
        try:
            counter = (Recounter.from_config_dir(Path(args.model_config)) if args.model_config
                       else Recounter.from_hub(DEFAULT_TRAINING["model_id"]))
            counter.timeout_s = args.recount_timeout
        except Exception as exc:  # noqa: BLE001 - no config: say so and import without a recount
            print(f"peftbench import peft-results: no model config to recount on ({type(exc).__name__}: "
                  f"{str(exc)[:200]}); pass --model-config DIR or --no-recount", file=sys.stderr)
            return 2
    try:
        report = import_results([Path(f) for f in args.files], results, counter=counter)
    except ConfigError as exc:
        print(f"peftbench import peft-results: nothing written.\n{exc}", file=sys.stderr)
        return 2
    rc = [r["meta"]["recount"] for r in report.records]
    counted = [x for x in rc if x.get("counted") is not None]
    print(f"{len(report.written)} record(s) written, {len(report.unchanged)} unchanged (already imported) under "
          f"{results / 'records'}" + (f"; recount matches {sum(bool(x.get('match')) for x in counted)} of "
                                      f"{len(counted)} counted" if counter else ""))
    return 0
