"""Config validation: collect every problem before any compute.

Each check appends a message naming the dotted field, the bad value and what is allowed, so one run
of the validator tells the user everything that is wrong with a config (or with a whole sweep).
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from harness.preempt import parse_interval

PARALLEL = ("ddp", "fsdp")   # budget.parallel: how N ranks share the model (plumbing: both compute the same)

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_SHORT = ("fp32", "bf16", "fp16")   # accepted too; harness.spec normalises them to DTYPES
AMP_DTYPES = ("bfloat16", "float16", "bf16", "fp16")   # budget.amp: autocast's dtype, or null (none)
MODEL_KINDS = ("encoder", "decoder")
MODEL_SOURCES = ("auto", "local", "hub")
POOLINGS = ("mean", "cls")
PROTOCOL_MODEL_KIND = {"classify": "encoder", "generate": "decoder", "loglik": "decoder"}
SCHEDULES = ("linear", "cosine", "constant")
CAPACITY_POLICIES = ("strict", "closest")   # harness.capacity: fail, or run at the closest setting and say so
DIRECTIONS = ("max", "min")
METHOD_KINDS = ("peft", "full", "custom")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, msg: str) -> None:
        self.problems.append(msg)

    def need(self, block: Mapping[str, Any], path: str, key: str) -> Any:
        if key not in block or block[key] is None:
            self.add(f"{path}.{key}: missing (required)")
            return None
        return block[key]

    def choice(self, block: Mapping[str, Any], path: str, key: str, allowed: tuple[str, ...] | list[str],
               *, optional: bool = False) -> Any:
        value = block.get(key)
        if value is None and optional:
            return None
        if value not in allowed:
            self.add(f"{path}.{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
            return None
        return value

    def number(self, block: Mapping[str, Any], path: str, key: str, *, integer: bool = False,
               positive: bool = False, nonneg: bool = False, optional: bool = False,
               upper: float | None = None, upper_open: bool = False) -> Any:
        value = block.get(key)
        if value is None:
            if not optional:
                self.add(f"{path}.{key}: missing (required)")
            return None
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            self.add(f"{path}.{key}: {value!r} is not {'an integer' if integer else 'a number'}")
            return None
        if positive and value <= 0:
            self.add(f"{path}.{key}: {value!r} must be > 0")
        elif nonneg and value < 0:
            self.add(f"{path}.{key}: {value!r} must be >= 0")
        elif upper is not None and (value >= upper if upper_open else value > upper):
            self.add(f"{path}.{key}: {value!r} must be {'<' if upper_open else '<='} {upper}")
        return value


def _check_method(c: _Checker, m: Mapping[str, Any]) -> None:
    from methods import METHOD_KINDS_REGISTRY, OPTIMIZER_NAMES, PEFT_CONFIGS, custom_names

    c.need(m, "method", "name")
    kind = c.choice(m, "method", "kind", METHOD_KINDS)
    # a method's version enters the signature with the rest of its block: bumped when its implementation
    # changes what it computes, so success records made by the old code are not skipped as current
    c.number(m, "method", "version", integer=True, positive=True, optional=True)
    params = m.get("params") or {}
    if not isinstance(params, Mapping):
        c.add("method.params: must be a mapping")
        params = {}
    if kind == "peft":
        ptype = m.get("peft_type")
        if ptype not in PEFT_CONFIGS:
            c.add(f"method.peft_type: {ptype!r} is not one of {', '.join(sorted(PEFT_CONFIGS))}")
        elif not PEFT_CONFIGS[ptype].has_fields(params):
            known = PEFT_CONFIGS[ptype].fields()
            for key in params:
                if key not in known:
                    close = difflib.get_close_matches(key, sorted(known), n=3)
                    hint = f"did you mean {', '.join(close)}? " if close else ""
                    c.add(f"method.params.{key}: not a field of {PEFT_CONFIGS[ptype].cls_name}; {hint}"
                          f"fields: {', '.join(sorted(known))}")
    elif kind == "custom" and m.get("name") not in (known := set(METHOD_KINDS_REGISTRY) | custom_names()):
        # the module names answer without importing the modules (they import torch)
        c.add(f"method.name: custom method {m.get('name')!r} has no implementation in methods/ "
              f"(known: {', '.join(sorted(known)) or 'none'})")
    if kind == "peft" and m.get("peft_type") == "poly" and params.get("n_tasks", 1) != 1:
        c.add(f"method.params.n_tasks: {params.get('n_tasks')!r} must be 1: a job trains one task, and every "
              "example is routed as task 0")
    for key in ("r",):
        if key in params:
            c.number(params, "method.params", key, integer=True, positive=True)
    for key in ("lora_alpha",):
        if key in params:
            c.number(params, "method.params", key, positive=True)
    for key in ("lora_dropout", "vera_dropout"):
        if key in params:
            c.number(params, "method.params", key, nonneg=True, upper=1.0, upper_open=True)
    calibration = m.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, Mapping):
            c.add("method.calibration: must be a mapping (batches: how many training batches a data-dependent "
                  "init reads before the adapter is built)")
        else:
            c.number(calibration, "method.calibration", "batches", integer=True, positive=True)
    knob = m.get("capacity_knob")
    if knob is not None and knob not in params:
        c.add(f"method.capacity_knob: {knob!r} is not a key of method.params "
              f"({', '.join(params) or 'empty'})")
    scales = m.get("capacity_scales")
    if scales is not None and (not isinstance(scales, list) or any(s not in params for s in scales)):
        c.add(f"method.capacity_scales: {scales!r} must list keys of method.params that keep their ratio to "
              f"the capacity knob ({', '.join(params) or 'empty'})")
    if m.get("peft_type") == "adalora" and isinstance(params.get("target_r"), int) \
            and isinstance(params.get("init_r"), int) and params["target_r"] > params["init_r"]:
        c.add(f"method.params.target_r: {params['target_r']} > init_r={params['init_r']}; AdaLoRA's budget "
              "shrinks from init_r to target_r (peft fails mid-training otherwise)")
    info = m.get("info") or {}
    if not isinstance(info, Mapping):
        c.add("method.info: must be a mapping (paper, mechanism, applies_to)")
    else:
        applies = info.get("applies_to")
        if applies is not None and (not isinstance(applies, list) or not applies
                                    or any(a not in MODEL_KINDS for a in applies)):
            c.add(f"method.info.applies_to: {applies!r} must be a non-empty list of {', '.join(MODEL_KINDS)}")
        qb = info.get("quantized_base")
        if qb is not None and not isinstance(qb, bool):
            c.add(f"method.info.quantized_base: {qb!r} must be true or false (can the method run on a "
                  "quantized base? false for one that rewrites the base weights)")
        trains_base = info.get("trains_base")
        if trains_base is not None and not isinstance(trains_base, bool):
            c.add(f"method.info.trains_base: {trains_base!r} must be true or false (does the method train "
                  "the base weights, as full-parameter methods such as GaLore do?)")
    optim = m.get("optim") or {}
    if not isinstance(optim, Mapping):
        c.add("method.optim: must be a mapping with lr and weight_decay")
        return
    c.number(optim, "method.optim", "lr", positive=True)
    c.number(optim, "method.optim", "weight_decay", nonneg=True, optional=True)
    c.choice(optim, "method.optim", "name", OPTIMIZER_NAMES, optional=True)
    if optim.get("name") == "lorafa" and (kind != "peft" or m.get("peft_type") != "lora"):
        c.add(f"method.optim.name: lorafa freezes LoRA's A and projects B's gradient through it, so it needs "
              f"a LoRA adapter (kind peft, peft_type lora), not {m.get('peft_type') or kind!r}")
    if optim.get("name") == "loraplus":
        if kind == "peft" and m.get("peft_type") != "lora":
            c.add(f"method.optim.name: loraplus sets B's learning rate apart from A's, so it needs a LoRA "
                  f"adapter (peft_type lora), not {m.get('peft_type')!r}")
        c.number(optim, "method.optim", "loraplus_lr_ratio", positive=True)


def _check_model(c: _Checker, m: Mapping[str, Any]) -> None:
    from harness.hfmodel import HUB_ID_RE, is_open

    c.need(m, "model", "name")
    c.choice(m, "model", "kind", MODEL_KINDS)
    open_block = is_open(m)   # conf/model/hf.yaml: any model by hub id or folder (harness.hfmodel)
    if not open_block:
        c.need(m, "model", "hub_id")
    source = c.choice(m, "model", "source", MODEL_SOURCES)
    c.choice(m, "model", "dtype", DTYPES + DTYPE_SHORT)
    pkg = m.get("package")
    if open_block:
        _check_open_model(c, m, source)
    elif source == "local" and not pkg:
        c.add("model.package: source=local needs a package block (spec, wheel_sha256, member, format)")
    if pkg:
        for key in ("spec", "wheel_sha256", "member", "format"):
            c.need(pkg, "model.package", key)
        c.choice(pkg, "model.package", "format", ("zip", "gguf", "dir"))
    hub_id = m.get("hub_id")
    if hub_id is not None and (not isinstance(hub_id, str) or not HUB_ID_RE.match(hub_id)):
        c.add(f"model.hub_id: {hub_id!r} is not a hub id (owner/name, e.g. Qwen/Qwen2.5-0.5B)")
    if m.get("kind") == "encoder":
        c.choice(m, "model", "pooling", POOLINGS)
    _check_quantization(c, m)
    _check_dropout(c, m)
    # an open block derives what is left null from the model's config (harness.hfmodel.resolve_block):
    # when that could not happen, the reason is already a problem of its own
    tm = m.get("target_modules")
    if not (open_block and tm is None) and (not isinstance(tm, list) or not tm
                                            or not all(isinstance(t, str) for t in tm)):
        c.add(f"model.target_modules: {tm!r} must be a non-empty list of module names")
    if not (open_block and m.get("max_seq_len") is None):
        c.number(m, "model", "max_seq_len", integer=True, positive=True)
    widths = m.get("target_widths")
    if widths is not None and (not isinstance(widths, Mapping) or not all(
            isinstance(w, list) and len(w) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                        for x in w) for w in widths.values())):
        c.add(f"model.target_widths: {widths!r} must map module names to [in_features, out_features] "
              "(positive integers)")


def _check_dropout(c: _Checker, m: Mapping[str, Any]) -> None:
    """model.dropout: null (the model's own) or a probability in [0, 1)."""
    c.number(m, "model", "dropout", nonneg=True, optional=True, upper=1.0, upper_open=True)


def _check_quantization(c: _Checker, m: Mapping[str, Any]) -> None:
    """model.quantization (null | nf4 | fp4 | int8), double_quant, compute_dtype (whether bitsandbytes is
    installed: _check_bitsandbytes, which also knows LoftQ's need)."""
    from harness.quantization import QUANTIZATIONS

    q = c.choice(m, "model", "quantization", QUANTIZATIONS, optional=True)
    dq = m.get("double_quant")
    if dq is not None and not isinstance(dq, bool):
        c.add(f"model.double_quant: {dq!r} must be true, false or null (default: true for nf4 and fp4)")
    c.choice(m, "model", "compute_dtype", DTYPES + DTYPE_SHORT, optional=True)
    if m.get("quantization") is None:
        for key in ("double_quant", "compute_dtype"):
            if m.get(key) is not None:
                c.add(f"model.{key}: {m[key]!r} applies to a quantized base only; set model.quantization "
                      f"({', '.join(QUANTIZATIONS)}) or leave it null")
    elif q == "int8":
        for key in ("double_quant", "compute_dtype"):
            if m.get(key) is not None:
                c.add(f"model.{key}: {m[key]!r} applies to 4-bit bases (nf4, fp4) only, not int8; leave it null")


def _check_bitsandbytes(c: _Checker, model: Mapping[str, Any], method: Mapping[str, Any]) -> None:
    """bitsandbytes installed where the job needs it (a quantized base, LoftQ's init), before any compute."""
    import importlib.util

    from harness.quantization import QUANT_EXTRA, bitsandbytes_users

    users = bitsandbytes_users(model, method)
    if users and importlib.util.find_spec("bitsandbytes") is None:
        for field in users:
            c.add(f"{field} needs bitsandbytes, which is not installed: pip install 'peftbench[{QUANT_EXTRA}]' "
                  "(or bitsandbytes>=0.47)")


def quantized_base_refusal(method: Mapping[str, Any]) -> str | None:
    """Why `method` cannot run on a quantized base, or None when it can. The one rule: a method that trains
    the base weights (kind full, info.trains_base: full fine-tuning, GaLore, LISA, ...) needs them in float;
    one that rewrites them at init (info.quantized_base: false: PiSSA's and OLoRA's residual W0 - BA, LoftQ,
    which quantizes a full-precision base itself) cannot write into bitsandbytes' packed weights."""
    info = method.get("info") if isinstance(method.get("info"), Mapping) else {}
    if method.get("kind") == "full" or info.get("trains_base") is True:
        return "trains the base weights, which a quantized base stores frozen in packed 4/8-bit form"
    if info.get("quantized_base") is False:
        return ("rewrites the base weights at init (method.info.quantized_base: false), which a quantized base "
                "stores in packed 4/8-bit form")
    return None


def _check_open_model(c: _Checker, m: Mapping[str, Any], source: str | None) -> None:
    """conf/model/hf.yaml's fields: a hub id or a folder (or both), what `source` may use, remote code."""
    path, hub_id = m.get("path"), m.get("hub_id")
    if not path and not hub_id:
        c.add("model.hub_id / model.path: set one: a hub id (model.hub_id=Qwen/Qwen2.5-0.5B) or a local folder "
              "holding config.json, tokenizer and safetensors (model.path=/models/llama-3.2-3b)")
    if path is not None and not isinstance(path, str):
        c.add(f"model.path: {path!r} must be a folder path")
    if source == "local" and not path:
        c.add("model.path: source=local loads from a folder: set model.path")
    if source == "hub" and not hub_id:
        c.add("model.hub_id: source=hub loads from the hub: set model.hub_id")
    if m.get("package"):
        c.add("model.package: a model by hub id or folder has no package block (null)")
    if not isinstance(m.get("trust_remote_code", False), bool):
        c.add(f"model.trust_remote_code: {m.get('trust_remote_code')!r} must be true or false (default false: "
              "a model whose config needs custom code fails unless set)")
    revision = m.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision):
        c.add(f"model.revision: {revision!r} must be a branch, tag or commit of model.hub_id")


def _check_task(c: _Checker, t: Mapping[str, Any]) -> None:
    """The task schema is owned by the task registry (tasks.task_config_problems)."""
    from tasks import task_config_problems

    for problem in task_config_problems(t):
        c.add(problem)


def _check_budget(c: _Checker, b: Mapping[str, Any]) -> None:
    c.need(b, "budget", "name")
    if b.get("steps") is None and b.get("tokens") is None:
        c.add("budget.steps / budget.tokens: set one of them (an optimizer-step or a token budget)")
    c.number(b, "budget", "steps", integer=True, positive=True, optional=True)
    c.number(b, "budget", "tokens", integer=True, positive=True, optional=True)
    c.number(b, "budget", "batch_size", integer=True, positive=True)
    c.number(b, "budget", "max_seq_len", integer=True, positive=True)
    c.number(b, "budget", "time_limit_s", positive=True, optional=True)
    c.number(b, "budget", "warmup_ratio", nonneg=True, upper=1.0)
    c.choice(b, "budget", "schedule", SCHEDULES)
    c.number(b, "budget", "grad_clip", positive=True, optional=True)
    c.number(b, "budget", "train_size", integer=True, positive=True, optional=True)
    c.number(b, "budget", "eval_every", integer=True, nonneg=True)
    c.number(b, "budget", "eval_size", integer=True, positive=True, optional=True)
    c.number(b, "budget", "eval_size_generate", integer=True, positive=True, optional=True)
    c.number(b, "budget", "eval_batch_size", integer=True, positive=True)
    c.number(b, "budget", "max_new_tokens", integer=True, positive=True, optional=True)
    c.number(b, "budget", "seeds", integer=True, positive=True)
    c.number(b, "budget", "trainable_params", integer=True, positive=True, optional=True)
    c.choice(b, "budget", "capacity_policy", CAPACITY_POLICIES, optional=True)
    c.number(b, "budget", "memory_cap_mb", positive=True, optional=True)
    _check_scale(c, b)
    try:
        parse_interval(b.get("checkpoint_every"))
    except ValueError as exc:
        c.add(str(exc))


def _check_scale(c: _Checker, b: Mapping[str, Any]) -> None:
    """Micro-batches, activation checkpointing and autocast (harness.train.train_step)."""
    micro, batch = b.get("micro_batch_size"), b.get("batch_size")
    if micro is not None and micro != "auto":
        if isinstance(micro, bool) or not isinstance(micro, int) or micro <= 0:
            c.add(f"budget.micro_batch_size: {micro!r} must be a positive integer, auto (the largest that fits in "
                  "memory) or null (the whole batch_size at once)")
        elif isinstance(batch, int) and not isinstance(batch, bool) and batch > 0:
            if micro > batch:
                c.add(f"budget.micro_batch_size: {micro} > batch_size={batch}; batch_size is the effective batch "
                      "of one optimizer step, split into micro-batches of at most that size")
            elif batch % micro:
                c.add(f"budget.micro_batch_size: {micro} does not divide batch_size={batch}; use a divisor "
                      f"({', '.join(str(d) for d in range(1, batch + 1) if batch % d == 0)}) or auto")
    checkpointing = b.get("gradient_checkpointing", False)
    if not isinstance(checkpointing, bool):
        c.add(f"budget.gradient_checkpointing: {checkpointing!r} must be true or false")
    c.choice(b, "budget", "amp", AMP_DTYPES, optional=True)
    c.choice(b, "budget", "parallel", PARALLEL, optional=True)
    if b.get("parallel") == "fsdp" and micro == "auto":
        c.add("budget.micro_batch_size: auto with budget.parallel=fsdp: a rank that halves its micro-batch after "
              "running out of memory makes more forward calls than the others, and FSDP's every forward is a "
              "collective; give a number")


# What a method may add to the loop that reads or edits its parameters outside a forward call: under FSDP those
# are shards (DTensors), which these hooks were not written for.
FSDP_REFUSED_HOOKS = {"callback": "a per-step callback", "regularizer": "a loss regularizer",
                      "optimizer": "its own optimizer", "eval_variants": "evaluation variants"}


def fsdp_refusal(method: Mapping[str, Any]) -> str | None:
    """Why FSDP cannot run this method, or None: hooks that work on whole parameters, or what its YAML's
    ``info.fsdp`` says (found by tests/harness/test_distributed.py, which runs every other method under FSDP)."""
    import methods

    info = method.get("info") if isinstance(method.get("info"), Mapping) else {}
    if info.get("fsdp"):
        return str(info["fsdp"])
    try:
        impl = methods.resolve(method)
    except Exception:  # noqa: BLE001 - an unknown method is _check_method's message
        return None
    hooks = [why for hook, why in FSDP_REFUSED_HOOKS.items() if getattr(impl, hook, None) is not None]
    return f"it has {' and '.join(hooks)} that work on whole parameters, not FSDP's shards" if hooks else None


def _check_fsdp_method(c: _Checker, method: Mapping[str, Any]) -> None:
    why = fsdp_refusal(method)
    if why:
        c.add(f"budget.parallel: fsdp with method {method.get('name')!r}: {why}; use budget.parallel=ddp")


# peft methods whose trainable tensors peft keeps in the base's dtype (not tuner layers, so autocast_adapter_dtype
# does not upcast them): adaption_prompt's prompts and gates, ln_tuning's LayerNorm copies.
PEFT_BASE_DTYPE_TRAINABLES = ("adaption_prompt", "ln_tuning")


def _check_float16_trainables(c: _Checker, method: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """A float16 base needs a loss scaler, and a scaler cannot unscale float16 gradients: a method that
    trains tensors in the base's dtype cannot run on it."""
    if model.get("dtype") not in ("float16", "fp16"):
        return
    info = method.get("info") if isinstance(method.get("info"), Mapping) else {}
    if method.get("kind") == "full" or info.get("trains_base") is True:
        why = "trains the base weights, in the base's dtype"
    elif method.get("kind") == "peft" and method.get("peft_type") in PEFT_BASE_DTYPE_TRAINABLES:
        why = f"trains {method.get('peft_type')} tensors peft keeps in the base's dtype"
    else:
        return
    c.add(f"model.dtype: {model['dtype']!r} with method {method.get('name')!r}, which {why}: float16 needs a loss "
          "scaler, which cannot unscale float16 gradients; use bfloat16 (or float32 with budget.amp=fp16)")


def _check_half_on_cpu(c: _Checker, cfg: Mapping[str, Any]) -> None:
    """float16 needs a loss scaler and fast half kernels, which a CPU lacks: say so before any compute."""
    device = str(cfg.get("device") or "auto")
    if device != "cpu":   # auto on a machine without a GPU: harness.train says so at the start of the job
        return
    budget, model = cfg.get("budget"), cfg.get("model")
    if isinstance(budget, Mapping) and budget.get("amp") in ("float16", "fp16"):
        c.add(f"budget.amp: {budget['amp']!r} on device=cpu: float16 autocast needs a CUDA device; on a CPU use "
              "bf16 (or null)")
    if isinstance(model, Mapping) and model.get("dtype") in ("float16", "fp16"):
        c.add(f"model.dtype: {model['dtype']!r} on device=cpu: a float16 base needs a CUDA device; on a CPU use "
              "bfloat16 or float32")


# Block sizes that must divide a target layer's width, by peft_type: (param, widths it must divide, why).
# peft raises on some of these only once the model is loaded, and silently changes OFT's block size.
DIVIDES_WIDTHS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "c3a": [("block_size", ("in", "out"), "C3A's circulant blocks tile ΔW (out×in)")],
    "vblora": [("vector_length", ("in", "out"), "VB-LoRA's A and B rows are cut into bank vectors of this length")],
    "oft": [("oft_block_size", ("in",),
             "OFT's block-diagonal rotation acts on the input features (peft would silently pick another size)")],
    "boft": [("boft_block_size", ("in",), "BOFT's butterfly blocks act on the input features"),
             ("boft_block_num", ("in",), "BOFT's butterfly blocks act on the input features")],
}


def _check_block_sizes(c: _Checker, method: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """A method's block size must divide every targeted width (model.target_widths: [in, out])."""
    rules = DIVIDES_WIDTHS.get(method.get("peft_type")) if method.get("kind") == "peft" else None
    widths = model.get("target_widths")
    params = method.get("params") or {}
    if not rules or not isinstance(widths, Mapping) or not isinstance(params, Mapping):
        return
    if "target_modules" not in params:   # peft's own per-architecture choice: known only at load
        return
    targets = params["target_modules"]
    if targets is None:   # null → the model's default targets, whose widths the model YAML gives
        targets = model.get("target_modules") or []
    if not isinstance(targets, list):   # a regex or 'all-linear': which layers it hits is known only at load
        return
    for key, sides, why in rules:
        size = params.get(key)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            continue
        bad = []
        for t in targets:
            w = widths.get(t)
            if isinstance(w, list) and len(w) == 2:
                bad += [f"{t} {side}_features={w[i]}" for i, side in ((0, "in"), (1, "out"))
                        if side in sides and isinstance(w[i], int) and w[i] % size]
        if bad:
            c.add(f"method.params.{key}: {size} does not divide the width of model {model.get('name')!r}'s "
                  f"target layers: {', '.join(bad)}; {why}, so it must divide "
                  f"{' and '.join(f'{s}_features' for s in sides)}")


def _section(c: _Checker, cfg: Mapping[str, Any], key: str, check: Callable[[_Checker, Mapping], None]) -> bool:
    block = cfg.get(key)
    if not isinstance(block, Mapping):
        c.add(f"{key}: missing or not a mapping (choose one with {key}=NAME)")
        return False
    check(c, block)
    return True


def validate_config(cfg: Mapping[str, Any]) -> list[str]:
    """Return every problem in a composed job config (empty list = valid)."""
    c = _Checker()
    ok = {key: _section(c, cfg, key, fn) for key, fn in
          (("method", _check_method), ("model", _check_model), ("task", _check_task),
           ("budget", _check_budget))}
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        c.add(f"seed: {seed!r} must be an integer >= 0")
    if ok["model"] and ok["task"]:
        protocol = cfg["task"].get("protocol")
        need = PROTOCOL_MODEL_KIND.get(protocol) if protocol in (cfg["task"].get("protocols") or []) else None
        kind = cfg["model"].get("kind")
        if need and kind in MODEL_KINDS and kind != need:   # a missing or unknown kind is its own problem
            c.add(f"model: task {cfg['task'].get('name')!r} has protocol {protocol!r}, which needs an "
                  f"{need} model; model {cfg['model'].get('name')!r} is a {cfg['model'].get('kind')}")
    if ok["method"] and ok["model"]:
        applies = (cfg["method"].get("info") or {}).get("applies_to") if isinstance(
            cfg["method"].get("info"), Mapping) else None
        kind = cfg["model"].get("kind")
        if isinstance(applies, list) and kind in MODEL_KINDS and kind not in applies:
            c.add(f"method: {cfg['method'].get('name')!r} applies to {' and '.join(applies)} models only "
                  f"(method.info.applies_to); model {cfg['model'].get('name')!r} is {'an' if kind == 'encoder' else 'a'} "
                  f"{kind}"
                  + (f" and task protocol {cfg['task'].get('protocol')!r} needs one"
                     if ok["task"] and PROTOCOL_MODEL_KIND.get(cfg["task"].get("protocol")) == kind else ""))
    if ok["method"] and ok["model"]:
        _check_block_sizes(c, cfg["method"], cfg["model"])
        _check_float16_trainables(c, cfg["method"], cfg["model"])
        q = cfg["model"].get("quantization")
        _check_bitsandbytes(c, cfg["model"], cfg["method"])
        why = quantized_base_refusal(cfg["method"]) if q is not None else None
        if why:
            c.add(f"model.quantization: {q!r} with method {cfg['method'].get('name')!r}, which {why}; use a "
                  "method that trains an adapter on a frozen base (lora: QLoRA), or model.quantization=null")
    if ok["method"] and ok["budget"] and cfg["budget"].get("trainable_params"):
        info = cfg["method"].get("info") if isinstance(cfg["method"].get("info"), Mapping) else {}
        strict = cfg["budget"].get("capacity_policy", "strict") == "strict"
        if strict and (cfg["method"].get("kind") == "full" or info.get("trains_base") is True):
            c.add(f"budget.trainable_params: method {cfg['method'].get('name')!r} trains every weight and has "
                  "no capacity knob; use a budget without a trainable-parameter target (or "
                  "budget.capacity_policy=closest, which runs it as it is and says so)")
    if ok["method"] and ok["budget"] and cfg["budget"].get("parallel") == "fsdp":
        _check_fsdp_method(c, cfg["method"])
    _check_half_on_cpu(c, cfg)
    device = str(cfg.get("device") or "auto")
    if not _DEVICE_RE.match(device):
        c.add(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        c.add(f"threads: {threads!r} must be a positive integer or null")
    logger = cfg.get("logger") or {}
    if logger.get("name") not in ("wandb", "none"):
        c.add(f"logger.name: {logger.get('name')!r} is not one of wandb, none")
    elif logger.get("name") == "wandb" and logger.get("mode") not in ("offline", "online", "disabled"):
        c.add(f"logger.mode: {logger.get('mode')!r} is not one of offline, online, disabled")
    return c.problems
