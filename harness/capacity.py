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


TOLERANCE = 0.10   # a count further than this from the target has not met it (the leaderboard marks it)
POLICIES = ("strict", "closest")


def _block(target: int, knob: str | None, value: Any, achieved: int, configured: Any,
           reason: str | None = None) -> dict[str, Any]:
    deviation = achieved / target - 1.0
    out = {"knob": knob, "value": value, "target": int(target), "adapter_params": int(achieved),
           "configured_value": configured, "deviation": round(deviation, 6),
           "met": abs(deviation) <= TOLERANCE}
    if reason:
        out["reason"] = reason
    return out


def solve_capacity(spec: Any, loaded: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Return (method config to use, a record block describing what was solved).

    `budget.capacity_policy` says what happens when the target cannot be met: `strict` (the default)
    fails the job; `closest` (a campaign over the whole zoo) runs the method at its closest setting —
    its configured values when it has no knob, knob=1 when even that exceeds the target — and the
    block says so (`met: false`, `reason`), so that the leaderboard can mark it."""
    target = spec.budget.get("trainable_params")
    knob = spec.method.get("capacity_knob")
    closest = spec.budget.get("capacity_policy", "strict") == "closest"
    if not target:
        return spec.method, {}
    configured = (spec.method.get("params") or {}).get(knob) if knob else None
    if not knob:
        if not closest:
            raise ValueError(f"budget.trainable_params={target} but method {spec.method['name']!r} has no "
                             "capacity_knob to solve for")
        return spec.method, _block(target, None, None, _trainable_for(spec, loaded, spec.method), None,
                                   "no capacity knob: ran at its configured values")
    lo, hi = 1, 1
    count_hi = _trainable_for(spec, loaded, _with_knob(spec.method, knob, hi))
    if count_hi > target:
        if not closest:
            raise ValueError(f"method {spec.method['name']!r}: even {knob}=1 trains {count_hi} parameters "
                             f"> budget.trainable_params={target}")
        return (_with_knob(spec.method, knob, 1),
                _block(target, knob, 1, count_hi, configured, f"even {knob}=1 exceeds the target"))
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
    block = _block(target, knob, lo, achieved, configured)
    if not block["met"]:
        block["reason"] = f"the largest {knob} within the target reaches {achieved}"
    return solved, block
