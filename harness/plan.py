"""`peftbench plan`: what a sweep would do and roughly what it would cost, before anything is submitted.

Every job is composed and validated exactly as the sweeper does for a launch (it *is* the sweeper, told
not to launch). Each job is listed as `skip` (a success record exists), `resume` (a checkpoint waits in its
run directory) or `run`, with an estimate of its training time from similar past success records:

1. the same method, model, task and budget (preferably measured on this machine's hardware);
2. else other methods on the same model, task and budget;
3. else anything on the same model and budget.
The estimate is the median of those records' training time (evaluation comes on top), and the basis is
printed beside it so a reader can judge it; a job with no similar record says so, it is never guessed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _history(results_dirs: set[Path]) -> Any:
    """One row per past success record (signature, method, model, task, budget, train_time_s, hardware,
    peak_memory_mb), read through the leaderboard's record cache (fast on 100k records)."""
    import pandas as pd

    from harness.leaderboard.cache import read_frame

    frames = []
    for d in sorted(results_dirs):
        if (d / "records").is_dir():
            frame, _ = read_frame(d)
            frames.append(frame)
    cols = ["signature", "method", "model", "task", "budget", "train_time_s", "hardware", "peak_memory_mb"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["status"] == "success") & df["train_time_s"].notna()]
    return df.drop_duplicates("signature")[cols]   # a multi-set record has a row per evaluated set


def _this_hardware(device: str) -> str | None:
    """This machine's hardware label for the jobs' device (as records label theirs)."""
    from harness.leaderboard.table import hardware_label
    from harness.provenance import hardware
    from harness.train import pick_device

    try:
        return hardware_label({"hardware": hardware(), "device": str(pick_device(device))})
    except Exception:  # noqa: BLE001 - a label is a preference, never a reason to fail a plan
        return None


def estimate(spec: Any, history: Any, here: str | None) -> tuple[float | None, str]:
    """(median training seconds, what it is based on) for one job."""
    m, mo, t, b = spec.method["name"], spec.model["name"], spec.task["name"], spec.budget["name"]
    tiers = [((history.method == m) & (history.model == mo) & (history.task == t) & (history.budget == b),
              "same method/model/task/budget"),
             ((history.model == mo) & (history.task == t) & (history.budget == b),
              "other methods, same model/task/budget"),
             ((history.model == mo) & (history.budget == b), "same model/budget, other tasks")]
    for mask, what in tiers:
        rows = history[mask]
        if len(rows) == 0:
            continue
        same_hw = rows[rows.hardware == here] if here else rows.iloc[0:0]
        if len(same_hw):
            rows, where = same_hw, "this hardware"
        else:
            where = "other hardware: " + ", ".join(sorted({str(h) for h in rows.hardware.dropna()}))[:60]
        return float(rows.train_time_s.median()), f"{what}, n={len(rows)}, {where}"
    return None, "no similar record"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def job_resources(launcher: str, params: Mapping[str, Any], spec: Any) -> tuple[int, int, int]:
    """(ranks, nodes, GPUs) one job of this launcher takes (issue #20): launcher=slurm gives it nodes ×
    tasks_per_node ranks and gpus_per_node GPUs on each node; launcher=local nproc_per_job ranks on this machine
    and gpus_per_node GPUs (CUDA_VISIBLE_DEVICES by slot); the others one process. A CPU job uses no GPU."""
    def num(key: str, default: int) -> int:
        value = params.get(key)
        return int(value) if value not in (None, "") else default

    if launcher.startswith("slurm"):
        nodes = max(1, num("nodes", 1))
        ranks, gpus = nodes * max(1, num("tasks_per_node", 1)), nodes * num("gpus_per_node", 0)
    elif launcher == "local":
        nodes, ranks, gpus = 1, max(1, num("nproc_per_job", 1)), num("gpus_per_node", 0)
    else:
        nodes, ranks, gpus = 1, 1, 0
    if str(spec.device) == "cpu":
        gpus = 0
    elif str(spec.device).startswith("cuda") and gpus == 0:
        gpus = ranks   # one GPU per rank, wherever the launcher leaves them visible
    return ranks, nodes, gpus


def _shape(ranks: int, nodes: int, gpus: int, parallel: str) -> str:
    where = f"{ranks} rank{'s' if ranks > 1 else ''}" + (f" {parallel}" if ranks > 1 else "")
    if nodes > 1:
        where += f" on {nodes} nodes"
    return f"{where}, {gpus} GPU{'s' if gpus != 1 else ''}"


def plan_lines(planned: Sequence[tuple[list[str], Any, str]], *, launcher: str, parallel: int,
               launcher_params: Mapping[str, Any] | None = None) -> list[str]:
    """The plan as printed: one line per job (with the ranks and GPUs it takes), then the totals (with
    GPU-hours, training time × GPUs, where the jobs take GPUs)."""
    from hydra.core.utils import filter_overrides

    from harness.sweeps import varying_keys

    history = _history({Path(spec.results_dir) for _, spec, _ in planned})
    # jobs on a cluster run on its nodes, not here: then no hardware is preferred
    here = _this_hardware(planned[0][1].device) if planned and not launcher.startswith("slurm") else None
    lines = [(f"plan: {len(planned)} job(s), launcher {launcher}; estimates are training time from similar "
             f"success records (median; evaluation comes on top)")]
    total, gpu_s, unknown, counts = 0.0, 0.0, 0, {"run": 0, "resume": 0, "skip": 0}
    width = max((len(spec.label) for _, spec, _ in planned), default=0)
    # the overrides that tell the jobs apart (the ones every job shares are noise on every line)
    varying = varying_keys(filter_overrides(list(overrides)) for overrides, _, _ in planned)
    for i, (overrides, spec, action) in enumerate(planned):
        if action == "run" and (Path(spec.run_dir) / "checkpoint.pt").exists():
            action = "resume"
        counts[action] += 1
        if action == "skip":
            lines.append(f"  {i:>4} skip   {spec.label:<{width}}  success record {spec.signature[:12]}")
            continue
        secs, basis = estimate(spec, history, here)
        ranks, nodes, gpus = job_resources(launcher, launcher_params or {}, spec)
        if secs is None or not math.isfinite(secs):
            unknown += 1
            est = "?"
        else:
            total += secs
            gpu_s += secs * gpus
            est = _duration(secs)
        extra = " ".join(o for o in filter_overrides(list(overrides)) if o.split("=", 1)[0] in varying)
        shape = _shape(ranks, nodes, gpus, str(spec.budget.get("parallel") or "ddp"))
        lines.append(f"  {i:>4} {action:<6} {spec.label:<{width}}  {shape}  ~{est} ({basis})"
                     + (f"  [{extra}]" if extra else ""))
    todo = counts["run"] + counts["resume"]
    cost = (f"estimated training {_duration(total)} of compute" if unknown < todo else "no estimate")
    lines.append(f"total: {todo} to run ({counts['resume']} resume a checkpoint), {counts['skip']} skipped; {cost}"
                 + (f" + {unknown} job(s) with no similar record" if unknown and unknown < todo else "")
                 + (f"; about {_duration(total / max(1, min(parallel, todo)))} of wall time at {parallel} at once"
                    if todo and total else "")
                 + (f"; {gpu_s / 3600:.2f} GPU-hours" if gpu_s else ""))
    lines.append("nothing was submitted; launch with the same arguments: peftbench run -m ... (or sweep NAME ...)")
    return lines
