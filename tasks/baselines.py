"""Trivial baselines, computed from the evaluated examples themselves, so a reader (and the
leaderboard) can tell learning from noise: a score at its baseline says the model learned nothing.

* ``majority``: always predict the most frequent gold label (ties: the first in label order) of the
  evaluated split, scored with every metric of the task (MRPC: accuracy 0.68 *and* F1 0.81; CoLA:
  Matthews 0, since a constant predictor has no correlation).
* ``chance``: the expected score of a uniform random pick among each example's options, i.e. the
  mean of 1/k over examples (ARC questions offer 3 to 5 options); for a regression task (STS-B) the
  correlation of a constant or random prediction, which is 0.
* ``zero``: open-ended answers (GSM8K): guessing never scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.metrics import compute_metrics


def baseline(task_cfg: Mapping[str, Any], examples: Sequence[Any], *, kind: str | None = None,
             metrics: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """{"kind", "metrics": {name: value}, "detail"} for the evaluated ``examples``."""
    from tasks import metrics_of

    kind = kind or str(task_cfg["baseline"])
    specs = list(metrics if metrics is not None else metrics_of(task_cfg))
    names = [str(m["name"]) for m in specs]
    if not examples:
        raise ValueError(f"task {task_cfg.get('name')}: no examples to compute a baseline on")
    if kind == "zero":
        return {"kind": kind, "metrics": dict.fromkeys(names, 0.0), "detail": "open-ended answers: 0"}
    if kind == "chance":
        if task_cfg.get("regression"):
            return {"kind": kind, "metrics": dict.fromkeys(names, 0.0),
                    "detail": "a constant or random prediction has no correlation with the gold scores"}
        default = list(task_cfg.get("choices") or [])
        ks = [len(e.choices) if e.choices else len(default) for e in examples]
        if not all(ks):
            raise ValueError(f"task {task_cfg.get('name')}: chance baseline needs the options of every example")
        value = sum(1.0 / k for k in ks) / len(ks)
        return {"kind": kind, "metrics": dict.fromkeys(names, value),
                "detail": f"uniform pick among {min(ks)}-{max(ks)} options" if min(ks) != max(ks)
                else f"uniform pick among {ks[0]} options"}
    if kind != "majority":
        raise ValueError(f"task {task_cfg.get('name')}: unknown baseline kind {kind!r}")
    golds = [e.label if e.label is not None else e.answer for e in examples]
    counts = Counter(golds)
    top = max(counts.values())
    majority = min((g for g, c in counts.items() if c == top), key=str)
    if task_cfg.get("protocol") == "loglik":   # lm-eval's acc and acc_norm of a constant answer
        value = top / len(golds)
        return {"kind": kind, "metrics": dict.fromkeys(names, value), "detail": f"always {majority!r}"}
    scored = compute_metrics({"name": task_cfg.get("name"), "metrics": specs}, [majority] * len(golds), golds)
    return {"kind": kind, "metrics": scored, "detail": f"always {majority!r} ({top} of {len(golds)})"}
