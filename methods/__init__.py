"""Method registry.

A method is a YAML in conf/method/. peft-native methods (kind: peft) need nothing else: their
`peft_type` names a peft config class below and `params` are its fields. A method peft lacks is
one file methods/<name>.py that calls `register(MethodImpl(...))`, plus its YAML (kind: custom); the
shared adapter layer under those files, with the saved-adapter format, is methods/_adapters.py.
Importing this package stays cheap (no torch/peft) so configs validate in milliseconds.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class PeftConfigEntry:
    """A peft config class, named lazily so validation does not import torch."""

    cls_name: str

    def load(self) -> type:
        return getattr(importlib.import_module("peft"), self.cls_name)

    def fields(self) -> set[str]:
        return _fields(self.cls_name)

    def has_fields(self, names: Iterable[str]) -> bool:
        """True when every name is a field. Answered from peft's source without importing it
        (peft imports torch: seconds) whenever that suffices; the import settles the rest."""
        names = set(names)
        return names <= _source_fields(self.cls_name) or names <= _fields(self.cls_name)


@cache
def _fields(cls_name: str) -> set[str]:
    cls = getattr(importlib.import_module("peft"), cls_name)
    return {f.name for f in dataclasses.fields(cls)}


@cache
def _peft_classes() -> dict[str, tuple[list[str], set[str]]]:
    """class name → (base class names, annotated field names), read from peft's config modules."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("peft")
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = Path(next(iter(spec.submodule_search_locations)))
    classes: dict[str, tuple[list[str], set[str]]] = {}
    for path in [root / "config.py", *sorted(root.glob("tuners/*/config.py"))]:
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                names = {st.target.id for st in node.body
                         if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)}
                classes.setdefault(node.name, (bases, names))
    return classes


def _source_fields(cls_name: str) -> set[str]:
    """Fields of a peft config class and its bases as written in peft's source (may under-count)."""
    classes, out, todo = _peft_classes(), set(), [cls_name]
    while todo:
        bases, names = classes.get(todo.pop(), ([], set()))
        out |= names
        todo += bases
    return out


# peft_type (YAML) → peft config class. LoRA-family variants (rsLoRA, DoRA, PiSSA, OLoRA, EVA,
# LoRA-GA, ...) are all `lora` with different LoraConfig flags.
PEFT_CONFIGS: dict[str, PeftConfigEntry] = {
    "lora": PeftConfigEntry("LoraConfig"),
    "vera": PeftConfigEntry("VeraConfig"),
    "adalora": PeftConfigEntry("AdaLoraConfig"),
    "randlora": PeftConfigEntry("RandLoraConfig"),
    "miss": PeftConfigEntry("MissConfig"),
    "gralora": PeftConfigEntry("GraloraConfig"),
    "c3a": PeftConfigEntry("C3AConfig"),
    "loha": PeftConfigEntry("LoHaConfig"),
    "lokr": PeftConfigEntry("LoKrConfig"),
    "ia3": PeftConfigEntry("IA3Config"),
    "boft": PeftConfigEntry("BOFTConfig"),
    "oft": PeftConfigEntry("OFTConfig"),
    "fourierft": PeftConfigEntry("FourierFTConfig"),
    "vblora": PeftConfigEntry("VBLoRAConfig"),
    "hra": PeftConfigEntry("HRAConfig"),
    "shira": PeftConfigEntry("ShiraConfig"),
    "ln_tuning": PeftConfigEntry("LNTuningConfig"),
    "road": PeftConfigEntry("RoadConfig"),
    "waveft": PeftConfigEntry("WaveFTConfig"),
    "delora": PeftConfigEntry("DeloraConfig"),
    "tinylora": PeftConfigEntry("TinyLoraConfig"),
    "glora": PeftConfigEntry("GloraConfig"),
    "lily": PeftConfigEntry("LilyConfig"),
    "pvera": PeftConfigEntry("PveraConfig"),
    "unilora": PeftConfigEntry("UniLoraConfig"),
    "beft": PeftConfigEntry("BeftConfig"),
    "supertuning": PeftConfigEntry("SupertuningConfig"),
    "peanut": PeftConfigEntry("PeanutConfig"),
    "poly": PeftConfigEntry("PolyConfig"),
    "osf": PeftConfigEntry("OSFConfig"),
    # prompt learning: virtual tokens / prefixes, decoders only (method info.applies_to)
    "prompt_tuning": PeftConfigEntry("PromptTuningConfig"),
    "prefix_tuning": PeftConfigEntry("PrefixTuningConfig"),
    "p_tuning": PeftConfigEntry("PromptEncoderConfig"),
    "adaption_prompt": PeftConfigEntry("AdaptionPromptConfig"),
    # peft types with no conf/method entry yet: peft's method comparison publishes results for them, and
    # `peftbench import peft-results` recounts their trainable parameters through these (harness.peft_mc)
    "adamss": PeftConfigEntry("AdamssConfig"),
    "deft": PeftConfigEntry("DeftConfig"),
    "frod": PeftConfigEntry("FrodConfig"),
    "hira": PeftConfigEntry("HiraConfig"),
    "psoft": PeftConfigEntry("PsoftConfig"),
    "trainable_tokens": PeftConfigEntry("TrainableTokensConfig"),
}

# Optimizers a method may name in `optim.name` (peft-native hooks in methods/peft_native.py).
OPTIMIZER_NAMES = ("adamw", "loraplus", "lorafa")
MODEL_KINDS = ("encoder", "decoder")


@dataclass(frozen=True)
class MethodImpl:
    """What a method can provide beyond a peft config (see DESIGN.md, extension points).

    apply:     (backbone, method_cfg, model_cfg) -> module whose trainable params are the method's.
    init:      optional data-dependent init (model, batches) run before the optimizer is built (EVA,
               LoRA-GA, LoRA-SB): it may replace adapter parameters.
    optimizer: optional (model, method_cfg) -> torch optimizer (LoRA+, GaLore; ElaLoRA's AdamW, known to its
               layers so that a rank change carries the moments of the components it keeps).
    callback:  optional per-step hook (model, step, total_steps), called after optimizer.step() while the
               step's gradients still exist (AdaLoRA's and ElaLoRA's importance scores need them; LISA sampling;
               SingLoRA's ramp and LaMDA's freezing schedule count steps with it; DyLoRA samples the next rank).
    prepare:   optional data-dependent preparation of the *bare* backbone before apply, for inits that
               peft computes before get_peft_model (CorDA's covariances, LoRA-GA's gradients):
               (backbone, method_cfg, model_cfg, batches, loss). `batches` iterates training batches on
               the model's device; `loss(batch)` is the loss training will use (a classify task's head
               included). apply must still work on an unprepared backbone (capacity counting builds
               adapters without data) and build the same parameters there.
    regularizer: optional (model) -> scalar tensor added to the training loss at every step (KaSA's
               singular-value and orthogonality penalties); the logged loss stays the task loss.
    eval_variants: optional (model, method_cfg) -> [(name, context manager)]: further evaluations of one
               trained model, each inside a context that puts the model in that variant and restores it on
               exit (DyLoRA: the adapter truncated to every rank b ≤ r). The harness evaluates the model as it
               is (the primary result) and then once per variant, recorded under eval.variants[name].
    """

    name: str
    apply: Callable[[Any, Mapping[str, Any], Mapping[str, Any]], Any]
    init: Callable[[Any, Any], None] | None = None
    optimizer: Callable[[Any, Mapping[str, Any]], Any] | None = None
    callback: Callable[[Any, int, int], None] | None = None
    prepare: Callable[[Any, Mapping[str, Any], Mapping[str, Any], Iterator[Any], Callable[[Any], Any]], None] | None = None
    regularizer: Callable[[Any], Any] | None = None
    eval_variants: Callable[[Any, Mapping[str, Any]], list[tuple[str, AbstractContextManager]]] | None = None


# Custom methods (kind: custom) by YAML name; filled by methods/<name>.py on import.
METHOD_KINDS_REGISTRY: dict[str, MethodImpl] = {}


def register(impl: MethodImpl) -> MethodImpl:
    if impl.name in METHOD_KINDS_REGISTRY:
        raise ValueError(f"method {impl.name!r} registered twice")
    METHOD_KINDS_REGISTRY[impl.name] = impl
    return impl


_BUILTIN_MODULES = {"peft_native", "full", "catalog"}


def custom_names() -> set[str]:
    """Names of the custom methods (methods/<name>.py, each registering its own name), listed without
    importing them: validation stays free of torch."""
    return {info.name for info in pkgutil.iter_modules(__path__)
            if info.name not in _BUILTIN_MODULES and not info.name.startswith("_")}


def _discover() -> None:
    """Import every methods/<name>.py so custom methods register themselves."""
    for name in sorted(custom_names()):
        importlib.import_module(f"{__name__}.{name}")


def resolve(method_cfg: Mapping[str, Any]) -> MethodImpl:
    """The implementation behind a method YAML."""
    kind = method_cfg["kind"]
    if kind == "peft":
        from methods.peft_native import impl_for

        return impl_for(method_cfg)
    if kind == "full":
        from methods.full import FULL

        return FULL
    _discover()
    try:
        return METHOD_KINDS_REGISTRY[method_cfg["name"]]
    except KeyError:
        raise KeyError(f"custom method {method_cfg['name']!r} is not implemented in methods/ "
                       f"(known: {', '.join(sorted(METHOD_KINDS_REGISTRY)) or 'none'})") from None
