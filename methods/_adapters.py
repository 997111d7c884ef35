"""The shared layer under custom methods (kind: custom): wrap a model's target nn.Linear modules, and save
and load what a method trained.

A custom method (methods/<name>.py) subclasses `AdapterLinear` (a frozen nn.Linear plus the method's update
ΔW) and calls `wrap` with a factory; `wrap` freezes the whole backbone, finds the target modules the way peft
does (`target_modules` from the method's params, null → the model's defaults; a module matches when its name
is a target or ends with "." + target) and puts the wrapper in each one's place.

Saved layout (a directory, written by `save`, read back by `load`):

- `adapter.safetensors`: every tensor of the adapter that `load` cannot rebuild by re-applying the method:
  the trainable parameters, plus the persistent buffers a method registers for frozen factors that depend on
  more than the config (truncated-SVD factors of W0, a gradient-based init, frozen random factors drawn from
  the global RNG, a step counter), but not the buffers only a resumed run needs (`training_state`: ElaLoRA's
  importance averages; checkpoints carry those). A method whose ranks change in training (ElaLoRA) saves each
  layer at its final shape, so the tensor shapes below record its per-layer ranks. Keys are module paths
  relative to the backbone (`encoder.layer.0.attention.self.query.lora_R`); a tensor shared by several layers
  (Tied-LoRA's A, B) is
  stored once, under the first path that reaches it. Buffers a method rebuilds deterministically from the
  config (NOLA's seeded random bases) are non-persistent and not stored.
- `adapter_config.json`: {"format": "peftbench-adapter", "format_version": 1, "method": <the method block>,
  "model": <the model block>, "tensors": {key: {"shape": [...], "dtype": "...", "trainable": bool}}}.

`load(backbone, dir)` re-applies the method from the JSON to a fresh backbone, then copies every stored tensor
in place (it refuses a file whose keys or shapes do not match what the method builds).
"""
from __future__ import annotations

import json
import math
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "peftbench-adapter"
FORMAT_VERSION = 1
WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"


class AdapterLinear(nn.Module):
    """A frozen nn.Linear plus a method's update: y = base(x) + Δ(x), with Δ linear in x (ΔW·x).

    Subclasses implement `adapter_forward(x)` (x already in the adapter's dtype); `delta_weight()` (the dense
    ΔW, out×in) is derived from it by default, which is exact for any update linear in x. Adapter tensors are
    kept in float32 when the base weight is half precision (as peft does), so small updates are not lost.

    A method whose tensor shapes change during training (ElaLoRA moves rank between layers) overrides
    `resize_for`, which `load` calls with the saved shapes before it copies; `training_state` names persistent
    buffers only a resumed run needs (importance averages): checkpoints carry them, the saved adapter does not.
    """

    training_state: tuple[str, ...] = ()

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base_layer = base
        base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def factory(self) -> dict[str, Any]:
        """dtype/device for new adapter tensors of this layer."""
        w = self.base_layer.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        return {"dtype": dtype, "device": w.device}

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        """Take the shapes of a saved state (this layer's own tensors by name); the default: shapes never change."""

    def loaded(self) -> None:
        """Called once `load` has copied the saved tensors in (a method refreshes what it derives from them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        dtype = self.factory["dtype"]
        return out + self.adapter_forward(x.to(dtype)).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """ΔW (out×in) such that the layer computes (W0 + ΔW)·x + b."""
        eye = torch.eye(self.in_features, **self.factory)
        return self.adapter_forward(eye).T

    def merged_weight(self) -> torch.Tensor:
        return self.base_layer.weight.to(self.factory["dtype"]) + self.delta_weight()


# ------------------------------------------------------------------------------------------ wrap
def target_names(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> list[str]:
    targets = (method_cfg.get("params") or {}).get("target_modules")
    return list(model_cfg["target_modules"] if targets is None else targets)


def find_targets(model: nn.Module, targets: Iterable[str]) -> list[tuple[str, str, nn.Linear]]:
    """(module path, the target it matched, module) for every nn.Linear matching a target, in model order."""
    targets = list(targets)
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        hit = next((t for t in targets if name == t or name.endswith("." + t)), None)
        if hit is not None:
            found.append((name, hit, module))
    return found


def wrap(backbone: nn.Module, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any],
         make: Callable[[int, str, nn.Linear], AdapterLinear]) -> nn.Module:
    """Freeze the backbone and replace each target nn.Linear by make(index, matched target, linear)."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    targets = target_names(method_cfg, model_cfg)
    found = find_targets(backbone, targets)
    if not found:
        raise ValueError(f"method {method_cfg.get('name')!r}: no nn.Linear module matches target_modules "
                         f"{targets} in {type(backbone).__name__}")
    for i, (path, hit, linear) in enumerate(found):
        parent_path, _, attr = path.rpartition(".")
        parent = backbone.get_submodule(parent_path) if parent_path else backbone
        setattr(parent, attr, make(i, hit, linear))
    return backbone


def adapter_layers(model: nn.Module) -> list[tuple[str, AdapterLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdapterLinear)]


def kaiming_uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator | None = None,
                    **factory: Any) -> torch.Tensor:
    """nn.Linear's default init (kaiming_uniform with a=√5: U(±1/√fan_in)), optionally from a generator."""
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=generator, **factory) * 2 - 1) * bound


def svd_form_factors(rank: int, in_features: int, out_features: int, index: int,
                     **factory: Any) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """AdaLoRA's SVD-form adapter at init (arXiv:2303.10512; ElaLoRA and IncreLoRA inherit it): Q = lora_A
    (rank×in) and P = lora_B (out×rank) ~ N(0, 0.02²) from a generator seeded by the layer's index, Λ = lora_E
    = 0, so ΔW = P·diag(Λ)·Q is 0 and the model is W0 at init."""
    g = torch.Generator().manual_seed(index)
    a = nn.Parameter((torch.randn(rank, in_features, generator=g) * 0.02).to(**factory))
    e = nn.Parameter(torch.zeros(rank, **factory))
    b = nn.Parameter((torch.randn(out_features, rank, generator=g) * 0.02).to(**factory))
    return a, e, b


def adamw_known_to(model: nn.Module, method_cfg: Mapping[str, Any], found: Iterable[nn.Module]) -> torch.optim.Optimizer:
    """The harness's AdamW on what trains, with a weak reference to it in each of `found`: layers whose
    rank changes during training (ElaLoRA, IncreLoRA) carry the moments of the components they keep."""
    optim_cfg = method_cfg.get("optim") or {}
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=float(optim_cfg["lr"]),
                            weight_decay=float(optim_cfg.get("weight_decay") or 0.0))
    for m in found:
        m.optimizer_ref = weakref.ref(opt)
    return opt


# ------------------------------------------------------------------------------------ save / load
def adapter_state(model: nn.Module, *, training_state: bool = False) -> dict[str, torch.Tensor]:
    """The live tensors `save` stores: each adapter layer's parameters and persistent buffers (its frozen base
    layer excluded), each shared tensor once under the first path that reaches it; with `training_state`, also
    the buffers only a resumed run needs (a checkpoint's view)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for path, layer in adapter_layers(model):
        for key, tensor in layer.state_dict(keep_vars=True).items():
            if key.startswith("base_layer.") or (not training_state and key in layer.training_state):
                continue
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            out[f"{path}.{key}" if path else key] = tensor
    return out


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, AdapterLinear) for m in model.modules())


def save(model: nn.Module, out_dir: Path, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], *,
         state: Mapping[str, torch.Tensor] | None = None) -> int:
    """Write the adapter of `model` (the backbone the method was applied to); returns the bytes written.
    `state`: the tensors' whole values by state-dict name, where the model holds only shards of them (FSDP)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    live = adapter_state(model)
    if state is not None:
        absent = [k for k in live if k not in state]
        if absent:
            raise KeyError(f"adapter tensors missing from the gathered state: {absent[:5]}")
    tensors = {k: (v if state is None else state[k]).detach().cpu().contiguous() for k, v in live.items()}
    state = live
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": _plain(method_cfg),
            "model": _plain(model_cfg),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch."),
                            "trainable": bool(getattr(v, "requires_grad", False))} for k, v in state.items()}}
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return (out_dir / WEIGHTS_FILE).stat().st_size + (out_dir / CONFIG_FILE).stat().st_size


def load(backbone: nn.Module, adapter_dir: Path, model_cfg: Mapping[str, Any] | None = None) -> nn.Module:
    """Apply the saved method to a fresh `backbone` and restore the saved tensors into it."""
    from safetensors.torch import load_file

    import methods

    adapter_dir = Path(adapter_dir)
    meta = json.loads((adapter_dir / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{adapter_dir / CONFIG_FILE}: not a {FORMAT} v<={FORMAT_VERSION} adapter")
    method_cfg = meta["method"]
    model = methods.resolve(method_cfg).apply(backbone, method_cfg, model_cfg or meta["model"])
    saved = load_file(str(adapter_dir / WEIGHTS_FILE))
    for path, layer in adapter_layers(model):   # ranks that moved in training (ElaLoRA): take the saved shapes
        prefix = f"{path}." if path else ""
        layer.resize_for({k[len(prefix):]: v.shape for k, v in saved.items()
                          if k.startswith(prefix) and "." not in k[len(prefix):]})
    live = adapter_state(model)
    problems = [f"missing {k}" for k in sorted(set(live) - set(saved))]
    problems += [f"unexpected {k}" for k in sorted(set(saved) - set(live))]
    problems += [f"{k}: shape {tuple(saved[k].shape)} != {tuple(live[k].shape)}"
                 for k in sorted(set(saved) & set(live)) if saved[k].shape != live[k].shape]
    if problems:
        raise ValueError(f"{adapter_dir}: adapter does not match method {method_cfg.get('name')!r} on this "
                         f"backbone: {'; '.join(problems[:8])}")
    with torch.no_grad():
        for key, tensor in live.items():
            tensor.copy_(saved[key].to(tensor.device, tensor.dtype))
    for _, layer in adapter_layers(model):
        layer.loaded()
    return model


def _plain(obj: Any) -> Any:
    """A JSON-able copy of a config (Mappings and sequences of plain values)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------ data
def batch_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of one harness batch, for data-dependent inits: token labels (same shape as the
    input ids) go to the causal LM, which returns its loss; sequence labels belong to a classification head
    (cross-entropy, or MSE for a real-valued target)."""
    labels = batch.get("labels")
    if labels is not None and labels.shape == batch["input_ids"].shape:
        return model(**batch).loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    if labels.is_floating_point():
        return nn.functional.mse_loss(logits.squeeze(-1), labels)
    return nn.functional.cross_entropy(logits, labels)
