"""`peftbench tasks [--format md|json]`: every task with its suite, protocols, metrics and directions,
split sizes, and where its data was found (or why not) — before a user launches anything.

Configs are composed through Hydra exactly as a job composes them (commonsense tasks share
``commonsense/_base.yaml``), then each task's data is located and, where found, loaded to count it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TASK_DIR = Path(__file__).resolve().parent.parent / "conf" / "task"


def task_names() -> list[str]:
    """Every task config under conf/task (files starting with _ are shared parts, not tasks)."""
    return sorted(p.relative_to(TASK_DIR).with_suffix("").as_posix() for p in TASK_DIR.rglob("*.yaml")
                  if not p.name.startswith("_"))


def compose_task(name: str) -> dict[str, Any]:
    """The task block as a job sees it (Hydra composition, interpolations resolved)."""
    from harness.spec import compose_block

    return compose_block("task", name)


def describe(name: str, data_dir: str | None) -> dict[str, Any]:
    """One task's catalogue entry; loads its data where available to report real split sizes."""
    from tasks import data_problems, load_task, metrics_of, protocols_of, resolve_task

    cfg = resolve_task(compose_task(name), data_dir)
    metrics = {p: [{"name": m["name"], "direction": m["direction"]}
                   for m in metrics_of({**cfg, "protocol": p})] for p in protocols_of(cfg)}
    entry: dict[str, Any] = {
        "name": name, "suite": cfg["suite"], "version": cfg["version"], "protocols": protocols_of(cfg),
        "default_protocol": cfg["protocol"], "metrics": metrics[cfg["protocol"]],
        "metrics_by_protocol": metrics, "baseline": cfg.get("baseline"),
        "voters": list((cfg.get("evals") or {name: {}}).keys()),
        "validation": dict(cfg.get("validation") or {}),
    }
    if cfg.get("train_set"):
        entry["train_set"] = cfg["train_set"]
    problems = data_problems(cfg, data_dir)
    if problems:
        entry["data"] = {"available": False, "why": problems}
        return entry
    try:
        data = load_task(cfg, data_dir)
    except Exception as exc:  # noqa: BLE001 - a malformed file is reported, not raised, in a catalogue
        entry["data"] = {"available": False, "why": [f"{type(exc).__name__}: {exc}"]}
        return entry
    entry["data"] = {"available": True, "source": data.source, "files": data.files,
                     "splits": {"train": len(data.train), **{s.name: len(s.examples) for s in data.evals}},
                     "notes": data.notes}
    return entry


def markdown(entries: list[dict[str, Any]]) -> str:
    """A table a person reads: one row per task."""
    lines = ["| task | suite | protocols | metrics (first = primary) | train | evaluated | data |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        metrics = ", ".join(f"{m['name']} ({m['direction']})" for m in e["metrics"])
        data = e["data"]
        if data["available"]:
            sizes = data["splits"]
            train = f"{sizes['train']:,}"
            evaluated = ", ".join(f"{k.split('/')[-1]} {v:,}" for k, v in sizes.items() if k != "train")
            where = data["source"]
        else:
            train = evaluated = "—"
            where = "unavailable: needs the hub or a local copy" if any(
                "hub" in w for w in data["why"]) else "unavailable"
        lines.append(f"| {e['name']} | {e['suite']} | {', '.join(e['protocols'])} | {metrics} | {train} | "
                     f"{evaluated} | {where} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peftbench tasks", description=__doc__.split("\n")[0])
    ap.add_argument("--format", choices=("md", "json"), default="md")
    ap.add_argument("--data-dir", default=None, help="data root to search first (default: the usual chain)")
    ap.add_argument("names", nargs="*", help="tasks to describe (default: all)")
    args = ap.parse_args(argv)
    known = task_names()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"peftbench tasks: unknown task(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    entries = [describe(n, args.data_dir) for n in (args.names or known)]
    if args.format == "json":
        print(json.dumps({"tasks": entries}, indent=2, default=str))
    else:
        print(markdown(entries), end="")
    return 0
