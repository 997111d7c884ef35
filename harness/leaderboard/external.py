"""External records on boards, and boards over several criteria.

External records (``run.source: external``: results a publisher ran, imported by ``peftbench import``) form
boards of their own: their board budget is ``<budget>@<publisher>`` (peft_mc@huggingface-peft), so they never
share a board, a skip, a plan estimate or a ranking with runs made here under the same budget name.

A board over criteria (``peftbench leaderboard --criteria accuracy,memory,train_time``) makes each criterion a
voter with its own direction, as Vote'n'Rank (arXiv:2210.05769) applies social choice to multi-criteria
tables: ``accuracy`` is every task's primary metric (one voter per task, as on any board); the others are one
voter each, from each run's record. They are added to the long table as rows of their own (task = the
criterion), so aggregation over seeds, the rules, the bootstrap and every rendering treat them like tasks.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EXTERNAL_MARK = "@"
# the published rerun noise of peft's method comparison (LoRA r=32 on Llama-3.2-3B, GSM8K test accuracy)
PEFT_MC_RERUNS = (0.482, 0.491, 0.478)


def board_budget(run: Mapping[str, Any]) -> str:
    """The budget a record's rows carry on boards: its own, or ``<budget>@<publisher>`` for an external one."""
    budget = str(run["budget"])
    if run.get("source") == "external":
        publisher = str(run.get("publisher") or "external").replace("/", "-")
        return f"{budget}{EXTERNAL_MARK}{publisher}"
    return budget


def is_external_budget(budget: str) -> bool:
    return EXTERNAL_MARK in str(budget)


@dataclass(frozen=True)
class Criterion:
    """One voter of a multi-criteria board: where its value comes from, and its direction."""

    name: str
    direction: str           # max | min
    description: str
    columns: tuple[str, ...] = ()   # long-table cost columns, the first a run has (cost criteria)
    metric: str | None = None       # a non-primary metric of the record (forgetting)


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("accuracy", "max", "each task's primary metric (one voter per task)"),
    Criterion("memory", "min", "peak memory in MB: the GPU's allocated maximum, else the process's peak RSS",
              columns=("accelerator_max_mb", "peak_memory_mb")),
    Criterion("train_time", "min", "training time in seconds", columns=("train_time_s",)),
    Criterion("params", "min", "trainable parameters", columns=("trainable_params",)),
    Criterion("gpu_hours", "min", "GPU-hours (training time × GPUs)", columns=("gpu_hours",)),
    Criterion("forgetting", "min", "forgetting: cross-entropy on general text after training minus before "
              "(the record's eval metric 'forgetting')", metric="forgetting"),
)}


def parse_criteria(arg: str | None) -> list[str]:
    """Criteria names from ``--criteria a,b,c`` (ValueError naming the unknown ones and the known)."""
    if not arg:
        return []
    names = [c.strip() for c in arg.split(",") if c.strip()]
    unknown = [n for n in names if n not in CRITERIA]
    if unknown or not names:
        raise ValueError(f"unknown criteria {', '.join(unknown) or repr(arg)}; known: {', '.join(CRITERIA)}")
    return list(dict.fromkeys(names))


def criteria_rows(ok: pd.DataFrame, criteria: Sequence[str]) -> pd.DataFrame:
    """The long table (successful rows) with one primary row per run and criterion beside (or instead of)
    its tasks' primary rows: a board then has the criteria as its voters."""
    if ok.empty or not criteria:
        return ok
    prim = ok["primary"].astype(bool)
    frames = [ok.assign(primary=prim & ("accuracy" in criteria))]
    runs = ok[prim].drop_duplicates("signature")
    for name in criteria:
        c = CRITERIA[name]
        if name == "accuracy":
            continue
        if c.metric is not None:
            part = ok[(ok["metric"] == c.metric)].drop_duplicates("signature").copy()
            values = part["value"].to_numpy(dtype=float)
        else:
            part = runs.copy()
            values = np.full(len(part), np.nan)
            for col in reversed(c.columns):   # the first column a run has wins
                v = part[col].to_numpy(dtype=float)
                values = np.where(np.isfinite(v), v, values)
        part["task"], part["metric"], part["value"] = name, name, values
        part["direction"], part["primary"], part["subtask"] = c.direction, True, False
        for col in ("baseline", "n_outcomes", "outcome_sum", "outcome_key"):
            part[col] = np.nan
        part["baseline_kind"] = None
        frames.append(part[np.isfinite(values)])
    return pd.concat(frames, ignore_index=True)


def criteria_note(criteria: Sequence[str]) -> str:
    return ("Ranked over criteria, each a voter with its direction (Vote'n'Rank, arXiv:2210.05769): "
            + "; ".join(f"{n} ({'higher' if CRITERIA[n].direction == 'max' else 'lower'} is better: "
                        f"{CRITERIA[n].description})" for n in criteria) + ".")


def seed_noise_note(board: Any) -> str | None:
    """On a peft_mc board where every method has one seed: how far apart two methods must be to mean anything."""
    n = board.n_seeds.to_numpy(dtype=float)
    if not str(board.budget).startswith("peft_mc") or not np.isfinite(n).any() or np.nanmax(n) > 1:
        return None
    runs = ", ".join(f"{v:.3f}" for v in PEFT_MC_RERUNS)
    return (f"One seed per method: a difference of ±1 point (0.01 accuracy) is within the published rerun noise "
            f"(peft's LoRA r=32 on Llama-3.2-3B scored {runs} across reruns); read close ranks as ties.")


def add_external_notes(boards: list[Any], results_dir: Path, ok: pd.DataFrame) -> list[Any]:
    """Every external board's provenance and recount notes (read from its records), and every peft_mc board's
    seed-noise note."""
    for board in boards:
        note = seed_noise_note(board)
        if note:
            board.notes.append(note)
    ext = [b for b in boards if is_external_budget(b.budget)]
    if not ext or ok.empty:
        return boards
    records_dir = Path(results_dir) / "records"
    for board in ext:
        part = ok[(ok["budget"] == board.budget) & (ok["model"] == board.model) & (ok["suite"] == board.suite)]
        recs = []
        for sig in sorted(set(part["signature"].astype(str))):
            try:
                recs.append(json.loads((records_dir / f"{sig}.json").read_text("utf-8")))
            except (OSError, ValueError):
                continue
        board.notes += external_notes(recs)
    return boards


def external_notes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Provenance (publisher, commits, accelerators) and the recount's agreement, for one board's records."""
    if not records:
        return []
    ext = [r.get("meta", {}).get("external") or {} for r in records]
    publishers = sorted({str(r["run"].get("publisher")) for r in records})
    commits = sorted({str(e.get("peft_commit"))[:12] for e in ext if e.get("peft_commit")})
    accel = sorted({str(e.get("accelerator")) for e in ext if e.get("accelerator")})
    out = [(f"External results published by {', '.join(publishers)} ({len(records)} runs; peft commit(s) "
            f"{', '.join(commits) or 'not stated'}; {', '.join(accel) or 'accelerator not stated'}): imported, "
            "not run here; they never share a board with peftbench's own runs.")]
    rc = [(r["run"]["method"], r["train"].get("trainable_params"), r.get("meta", {}).get("recount") or {})
          for r in records]
    counted = [x for x in rc if x[2].get("counted") is not None]
    if not counted:
        reasons = sorted({str(x[2].get("reason")) for x in rc})
        out.append(f"Trainable counts not recounted ({'; '.join(reasons)[:200]}).")
        return out
    model = next((x[2].get("model") for x in counted if x[2].get("model")), "the model's config")
    agree = sum(1 for x in counted if x[2].get("match"))
    out.append(f"Recount of trainable parameters on {model}: {agree} of {len(counted)} counted match the "
               "published count.")
    differ = [x for x in counted if not x[2].get("match")]
    if differ:
        out.append("Recount mismatches: " + "; ".join(
            f"{m}: published {pub:,}, counted {x['counted']:,}" + (f" ({x['reason']})" if x.get("reason") else
                                                                  " (reason unknown)")
            for m, pub, x in sorted(differ, key=lambda t: str(t[0]))) + ".")
    missing = [x for x in rc if x[2].get("counted") is None]
    if missing:
        out.append("Not recounted: " + "; ".join(f"{m} ({str(x.get('reason'))[:160]})"
                                                for m, _, x in sorted(missing, key=lambda t: str(t[0]))) + ".")
    return out
