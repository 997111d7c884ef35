"""Equal trainable-parameter budgets: solve each method's capacity knob to meet a target.

Fair comparison means equal capacity. When `budget.trainable_params` is set, the method's
`capacity_knob` (usually the rank r) is chosen as the largest value whose adapter stays within the
target, or, when that one is more than TOLERANCE short, the next value up if it is within TOLERANCE
above. The count is measured by actually building the adapter on the real backbone (no formula to
drift out of date); it is monotone in the knob, so a bisection from the configured value needs a few
builds. Each build copies the backbone (a method may rewrite W0 at init), seconds per build for some
methods (NOLA's random bases), so the solved block is kept in the model cache keyed by everything it
depends on: a campaign's jobs that differ only in task or seed solve it once.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

MAX_KNOB = 1 << 20   # large knobs exist (FourierFT n_frequency); doubling stops at the target
UNBUILDABLE = 1 << 62   # the count of a knob value the method cannot build: beyond every target


def _trainable_for(spec: Any, loaded: Any, method: Mapping[str, Any]) -> int:
    return count_trainable(loaded.backbone, method, spec.model)[0]


def _build_count(backbone: Any, method: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> int:
    import methods

    for p in backbone.parameters():
        p.requires_grad_(False)
    model = methods.resolve(method).apply(backbone, method, model_cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_trainable(backbone: Any, method: Mapping[str, Any], model_cfg: Mapping[str, Any], *,
                    extrapolate: bool = True) -> tuple[int, str]:
    """(trainable parameters `method` puts on a frozen copy of `backbone`, how they were counted).

    A backbone with weights is adapted and counted ("weights"). A backbone on the meta device (built from a
    config alone: harness.hfmodel.meta_backbone) is counted from shapes:
      "meta"        the adapter built on the meta device too: no storage, no arithmetic;
      "random weights on <targets>"   when that fails (a method that reads a value at init: LoLDU's LU pivots,
                    DyLoRA's sampled rank, SHiRA's mask), the targeted layers get random values, one tensor per
                    distinct shape shared by all its layers, and the adapter is built off the meta device: its
                    count is the same for any values. The method's own init then runs on every targeted layer
                    (on Llama-3.2-3B, SHiRA's 56 permutations of 9.4M indices and LoLDU's 56 LU factorisations:
                    40 s of CPU, 10 minutes for a capacity solve on Llama-3-8B), so when the targets all sit in
                    a stack of identical blocks (same types, same parameter shapes) it is built on the first 1, 2
                    and 3 blocks only, and when those three counts grow by the same amount per block the count is
                    the 1-block count plus that amount per further block; otherwise on every block.
    A ValueError is the method refusing the setting from shapes alone (a rank beyond the layer's): raised at
    once, as the solver's unbuildable rule expects. Otherwise a RuntimeError says what each way ran into."""
    import torch

    if not any(p.is_meta for p in backbone.parameters()):
        return _build_count(copy.deepcopy(backbone), method, model_cfg), "weights"
    try:
        with torch.device("meta"):
            return _build_count(copy.deepcopy(backbone), method, model_cfg), "meta"
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - a method that reads values: give its targets some
        on_meta = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
    hit = _target_matcher(method, model_cfg)
    try:
        stack = _identical_stack(backbone, hit) if extrapolate else None
        if stack is not None:
            name, depth = stack
            try:
                built = [_materialized_count(_truncated(backbone, name, k), method, model_cfg, hit) for k in (1, 2, 3)]
            except ValueError:   # refused at a depth the model does not have: the whole model decides
                built = []
            counts = [c for c, _ in built]
            if built and counts[2] - counts[1] == counts[1] - counts[0]:
                step = counts[1] - counts[0]
                return counts[0] + (depth - 1) * step, (f"random weights on {', '.join(built[0][1])}; built on 1-3 "
                                                        f"of {depth} identical blocks, +{step:,} per block")
        count, names = _materialized_count(copy.deepcopy(backbone), method, model_cfg, hit)
        return count, f"random weights on {', '.join(names)}"
    except ValueError:
        raise
    except Exception as exc:   # reported with the meta failure: the method says why it has no count
        raise RuntimeError(f"cannot count it without the real weights (meta device: {on_meta}; random weights on "
                           f"its targets: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})") from exc


def _target_matcher(method: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """name → does the method target this module (its target_modules, else the model's; peft's matching rule)."""
    import re

    targets = (method.get("params") or {}).get("target_modules")
    if targets is None:
        targets = list(model_cfg.get("target_modules") or [])
    if isinstance(targets, str):
        return lambda name: re.fullmatch(targets, name) is not None
    return lambda name: any(name == t or name.endswith("." + t) for t in targets)


def _identical_stack(backbone: Any, hit: Any) -> tuple[str, int] | None:
    """(path, depth) of the longest ModuleList of at least 4 blocks of one type and identical parameter shapes
    that holds every targeted module, or None."""
    import torch

    lists = [(n, m) for n, m in backbone.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) >= 4]
    if not lists:
        return None
    name, stack = max(lists, key=lambda nm: len(nm[1]))

    def shape(block: Any) -> tuple[Any, ...]:
        return (type(block), tuple((n, tuple(p.shape), p.dtype) for n, p in block.named_parameters()))

    first = shape(stack[0])
    if any(shape(b) != first for b in stack[1:]):
        return None
    targeted = [n for n, _ in backbone.named_modules() if hit(n)]
    if not targeted or any(not n.startswith(name + ".") for n in targeted):
        return None
    return name, len(stack)


def _truncated(backbone: Any, stack: str, depth: int) -> Any:
    """A copy of the backbone keeping the first `depth` blocks of `stack` (its config says so too)."""
    copied = copy.deepcopy(backbone)
    del copied.get_submodule(stack)[depth:]
    config = getattr(copied, "config", None)
    if config is not None and isinstance(getattr(config, "num_hidden_layers", None), int):
        config.num_hidden_layers = depth
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:depth]
    return copied


def _materialized_count(backbone: Any, method: Mapping[str, Any], model_cfg: Mapping[str, Any],
                        hit: Any) -> tuple[int, list[str]]:
    """Give the targeted layers of `backbone` (a copy) random values, then build and count; their target names."""
    import torch

    layers = [(n, m) for n, m in backbone.named_modules()
              if hit(n) and any(p.is_meta for p in m.parameters(recurse=False))]
    if not layers:
        raise RuntimeError("no targeted layer to give values to")
    # one random tensor per distinct shape, shared by every layer of that shape (a frozen base weight is only
    # read): Llama-3-8B's 64 targets cost two matrices, not 2.7 GB
    gen = torch.Generator().manual_seed(0)
    values: dict[tuple[Any, ...], torch.Tensor] = {}
    for _, module in layers:
        for name, p in list(module.named_parameters(recurse=False)):
            key = (tuple(p.shape), p.dtype)
            if key not in values:
                values[key] = torch.randn(p.shape, generator=gen).mul_(0.02).to(p.dtype)
            setattr(module, name, torch.nn.Parameter(values[key], requires_grad=p.requires_grad))
    return _build_count(backbone, method, model_cfg), sorted({n.rsplit(".", 1)[-1] for n, _ in layers})


def _with_knob(method: Mapping[str, Any], knob: str, value: int) -> dict[str, Any]:
    """The method block with its knob at `value`; the params its YAML names in `capacity_scales` keep their
    configured ratio to the knob (AdaLoRA's target_r to init_r: a final budget above the initial rank
    has no meaning, and peft fails on it mid-training)."""
    out = copy.deepcopy(dict(method))
    params = out["params"] = dict(out.get("params") or {})
    configured = params.get(knob)
    for name in out.get("capacity_scales") or []:
        if isinstance(configured, int) and configured > 0 and isinstance(params.get(name), int):
            params[name] = max(1, min(value, round(params[name] * value / configured)))
    params[knob] = value
    return out


TOLERANCE = 0.10   # a count further than this from the target has not met it (the leaderboard marks it)


def _block(target: int, knob: str | None, value: Any, achieved: int, configured: Any,
           reason: str | None = None) -> dict[str, Any]:
    deviation = achieved / target - 1.0
    out = {"knob": knob, "value": value, "target": int(target), "adapter_params": int(achieved),
           "configured_value": configured, "deviation": round(deviation, 6),
           "met": abs(deviation) <= TOLERANCE}
    if reason:
        out["reason"] = reason
    return out


def _cache_file(spec: Any, policy: str) -> Path | None:
    """Where this solve is kept: it depends on the method block, the model block (architecture and
    targets), the target, the policy and the packages that build adapters; None without a cache dir."""
    cache_dir = getattr(spec, "cache_dir", None)
    if not cache_dir:
        return None
    from harness.provenance import package_versions

    versions = {k: v for k, v in package_versions().items() if k in ("torch", "transformers", "peft")}
    key = json.dumps({"method": spec.method, "model": spec.model, "target": spec.budget.get("trainable_params"),
                      "policy": policy, "versions": versions, "code": _methods_code()}, sort_keys=True, default=str)
    return Path(cache_dir) / "capacity" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


@cache
def _methods_code() -> str:
    """A digest of the method implementations (methods/*.py) and of this solver: a custom method whose code
    changes its parameter count, or a change of the solving rule, must not reuse a solve made by the old code."""
    import methods

    h = hashlib.sha256()
    for f in [*sorted(Path(methods.__file__).parent.glob("*.py")), Path(__file__)]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _cached(path: Path | None) -> dict[str, Any] | None:
    try:
        block = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) and "adapter_params" in block else None


def _keep(path: Path | None, block: dict[str, Any]) -> None:
    if path is None:
        return
    from harness.records import atomic_write

    try:   # atomic: two jobs solving at once both write the same block
        atomic_write(path, json.dumps(block).encode("utf-8"))
    except OSError:
        pass   # a read-only cache only costs the next job the solve


def solve_capacity(spec: Any, loaded: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Return (method config to use, a record block describing what was solved).

    `budget.capacity_policy` says what happens when the target cannot be met: `strict` (the default)
    fails the job; `closest` (a campaign over the whole zoo) runs the method at its closest setting —
    its configured values when it has no knob, knob=1 when even that exceeds the target — and the
    block says so (`met: false`, `reason`), so that the leaderboard can mark it."""
    target = spec.budget.get("trainable_params")
    if not target:
        return spec.method, {}
    policy = spec.budget.get("capacity_policy", "strict")
    knob = spec.method.get("capacity_knob")
    path = _cache_file(spec, policy)
    block = _cached(path)
    if block is None:
        block = _solve(spec, loaded, int(target), knob, policy == "closest")
        _keep(path, block)
    method = _with_knob(spec.method, knob, block["value"]) if knob and block.get("value") is not None else spec.method
    return method, block


def _solve(spec: Any, loaded: Any, target: int, knob: str | None, closest: bool) -> dict[str, Any]:
    configured = (spec.method.get("params") or {}).get(knob) if knob else None
    if not knob:
        if not closest:
            raise ValueError(f"budget.trainable_params={target} but method {spec.method['name']!r} has no "
                             "capacity_knob to solve for")
        return _block(target, None, None, _trainable_for(spec, loaded, spec.method), None,
                      "no capacity knob: ran at its configured values")
    counts: dict[int, int] = {}
    unbuildable: dict[int, str] = {}

    def count(value: int) -> int:
        """The count at `value`; a value the method refuses to build (LoLDU's or SVFit's r beyond the
        layer's rank) counts as beyond any target, so the solve settles on the largest one it can build."""
        if value not in counts:
            try:
                counts[value] = _trainable_for(spec, loaded, _with_knob(spec.method, knob, value))
            except ValueError as exc:
                if value == 1:
                    raise
                unbuildable[value] = str(exc).splitlines()[0]
                counts[value] = UNBUILDABLE
        return counts[value]

    # bracket the answer from the configured value (usually near it), doubling up or halving down
    start = configured if isinstance(configured, int) and not isinstance(configured, bool) \
        and 1 <= configured <= MAX_KNOB else 1
    lo = hi = start
    if count(start) <= target:
        while count(hi) <= target and hi < MAX_KNOB:
            lo, hi = hi, min(hi * 2, MAX_KNOB)
        if count(hi) <= target:
            lo = hi
    else:
        while lo > 1 and count(lo) > target:
            hi, lo = lo, lo // 2
        if count(lo) > target:   # lo == 1
            if not closest:
                raise ValueError(f"method {spec.method['name']!r}: even {knob}=1 trains {count(1)} parameters "
                                 f"> budget.trainable_params={target}")
            return _block(target, knob, 1, count(1), configured, f"even {knob}=1 exceeds the target")
    while hi - lo > 1:   # count(lo) <= target < count(hi)
        mid = (lo + hi) // 2
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid
    block = _block(target, knob, lo, count(lo), configured)
    if not block["met"] and hi not in unbuildable:
        # the largest value within the target misses ±TOLERANCE (coarse steps, or r=8 a few parameters over
        # LoRA's count): the next value up is taken when it is within the tolerance above, so a method is never
        # held an eighth short of a target it can meet
        above = _block(target, knob, hi, count(hi), configured)
        if above["met"]:
            return above
    if not block["met"]:
        block["reason"] = (f"the largest {knob} within the target reaches {count(lo)}" if hi not in unbuildable
                           else f"the largest {knob} the method can build reaches {count(lo)} ({knob}={hi}: "
                                f"{unbuildable[hi]})")
    return block
