"""Equal trainable-parameter budgets: solve each method's capacity knob to meet a target.

Fair comparison means equal capacity. When `budget.trainable_params` is set, the method's
`capacity_knob` (usually the rank r) is chosen as the largest value whose adapter stays within the
target. The count is measured by actually building the adapter on the real backbone (no formula to
drift out of date); it is monotone in the knob, so a bisection needs ~log2(range) builds.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MAX_KNOB = 1 << 20   # large knobs exist (FourierFT n_frequency); doubling stops at the target


def _trainable_for(spec: Any, loaded: Any, method: Mapping[str, Any]) -> int:
    import methods

    backbone = copy.deepcopy(loaded.backbone)
    for p in backbone.parameters():
        p.requires_grad_(False)
    model = methods.resolve(method).apply(backbone, method, spec.model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _with_knob(method: Mapping[str, Any], knob: str, value: int) -> dict[str, Any]:
    out = copy.deepcopy(dict(method))
    out["params"] = dict(out.get("params") or {})
    out["params"][knob] = value
    return out


def solve_capacity(spec: Any, loaded: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Return (method config to use, a record block describing what was solved)."""
    target = spec.budget.get("trainable_params")
    knob = spec.method.get("capacity_knob")
    if not target:
        return spec.method, {}
    if not knob:
        raise ValueError(f"budget.trainable_params={target} but method {spec.method['name']!r} has no "
                         "capacity_knob to solve for")
    lo, hi = 1, 1
    count_hi = _trainable_for(spec, loaded, _with_knob(spec.method, knob, hi))
    if count_hi > target:
        raise ValueError(f"method {spec.method['name']!r}: even {knob}=1 trains {count_hi} parameters "
                         f"> budget.trainable_params={target}")
    while count_hi <= target and hi < MAX_KNOB:
        lo, hi = hi, hi * 2
        count_hi = _trainable_for(spec, loaded, _with_knob(spec.method, knob, hi))
    if count_hi <= target:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _trainable_for(spec, loaded, _with_knob(spec.method, knob, mid)) <= target:
            lo = mid
        else:
            hi = mid
    solved = _with_knob(spec.method, knob, lo)
    achieved = _trainable_for(spec, loaded, solved)
    return solved, {"knob": knob, "value": lo, "target": int(target), "adapter_params": achieved,
                    "configured_value": (spec.method.get("params") or {}).get(knob)}
