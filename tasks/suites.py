"""Task suites: which tasks form GLUE, GSM8K and commonsense-8, and how each suite averages.

A suite is ``conf/suite/<name>.yaml``:

* ``expand``: the task configs that ``task=<suite>`` launches in a multirun;
* ``voters``: the leaderboard columns the suite's records produce (a task evaluated on several sets,
  such as MNLI matched/mismatched or ``commonsense/all``, produces one column per set);
* ``average``: the suite's conventional single number (the GLUE score, the commonsense "Avg."):
  ``metrics: all|primary`` (does a task count as the mean of all its metrics, or its primary one)
  and ``groups`` (voters that count together as one task, e.g. MNLI-m and MNLI-mm); optional
  ``task_metrics`` names a voter's metrics where the convention takes fewer than all it records (CoLA
  records accuracy beside Matthews correlation; the GLUE score counts Matthews only).

Plain YAML read with ``yaml.safe_load``: no Hydra, no torch, so the sweeper and the leaderboard can
read it in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SUITE_DIR = Path(__file__).resolve().parent.parent / "conf" / "suite"
AVERAGE_METRICS = ("all", "primary")


@dataclass(frozen=True)
class Suite:
    name: str
    expand: tuple[str, ...]
    voters: tuple[str, ...]
    average_name: str
    average_metrics: str                              # "all" | "primary"
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)   # task -> voters averaged first
    task_metrics: dict[str, tuple[str, ...]] = field(default_factory=dict)  # voter -> the metrics it averages

    def units(self) -> list[tuple[str, tuple[str, ...]]]:
        """The averaging units in order: (task, its voters). A voter outside every group is its own unit."""
        grouped = {v: g for g, vs in self.groups.items() for v in vs}
        out: list[tuple[str, tuple[str, ...]]] = []
        for voter in self.voters:
            if voter in grouped:
                if all(u[0] != grouped[voter] for u in out):
                    out.append((grouped[voter], self.groups[grouped[voter]]))
            else:
                out.append((voter, (voter,)))
        return out


def suite_problems(name: str, raw: Any) -> list[str]:
    """Every schema problem of one suite file (empty when valid)."""
    where = f"conf/suite/{name}.yaml"
    if not isinstance(raw, Mapping):
        return [f"{where}: a mapping with name, expand, voters, average"]
    problems: list[str] = []
    if raw.get("name") != name:
        problems.append(f"{where}: name: {raw.get('name')!r} must equal the file name {name!r}")
    for key in ("expand", "voters"):
        value = raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and "/" in v for v in value):
            problems.append(f"{where}: {key}: a non-empty list of '<suite>/<task>' names")
    avg = raw.get("average")
    if not isinstance(avg, Mapping):
        problems.append(f"{where}: average: a mapping with name, metrics, groups")
    else:
        if not isinstance(avg.get("name"), str):
            problems.append(f"{where}: average.name: a string")
        if avg.get("metrics") not in AVERAGE_METRICS:
            problems.append(f"{where}: average.metrics: {avg.get('metrics')!r} is not one of {', '.join(AVERAGE_METRICS)}")
        groups = avg.get("groups") or {}
        voters = set(raw.get("voters") or [])
        if not isinstance(groups, Mapping):
            problems.append(f"{where}: average.groups: a mapping task -> [voters]")
        else:
            for task, members in groups.items():
                if not isinstance(members, list) or not set(members) <= voters:
                    problems.append(f"{where}: average.groups.{task}: a list of voters of this suite")
        task_metrics = avg.get("task_metrics") or {}
        if not isinstance(task_metrics, Mapping):
            problems.append(f"{where}: average.task_metrics: a mapping voter -> [metric names]")
        else:
            for voter, names in task_metrics.items():
                if voter not in voters or not isinstance(names, list) or not names \
                        or not all(isinstance(n, str) for n in names):
                    problems.append(f"{where}: average.task_metrics.{voter}: a voter of this suite -> a "
                                    "non-empty list of metric names")
    return problems


@cache
def load_suites(suite_dir: str | None = None) -> dict[str, Suite]:
    """Every suite under conf/suite, validated; a bad file raises ValueError naming every problem."""
    import yaml

    root = Path(suite_dir) if suite_dir else SUITE_DIR
    out: dict[str, Suite] = {}
    problems: list[str] = []
    for path in sorted(root.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        found = suite_problems(path.stem, raw)
        if found:
            problems += found
            continue
        avg = raw["average"]
        out[path.stem] = Suite(
            name=path.stem, expand=tuple(raw["expand"]), voters=tuple(raw["voters"]),
            average_name=str(avg["name"]), average_metrics=str(avg["metrics"]),
            groups={str(k): tuple(v) for k, v in (avg.get("groups") or {}).items()},
            task_metrics={str(k): tuple(v) for k, v in (avg.get("task_metrics") or {}).items()})
    if problems:
        raise ValueError("invalid suite config:\n  " + "\n  ".join(problems))
    return out


def expand_tasks(values: Sequence[str]) -> list[str]:
    """``task=`` values with every suite name replaced by the tasks it launches (order kept, no repeats)."""
    suites = load_suites()
    out: list[str] = []
    for value in values:
        for task in (suites[value].expand if value in suites else (value,)):
            if task not in out:
                out.append(task)
    return out


def expand_override(override: str) -> str:
    """A ``task=a,b`` sweep override with suite names expanded (``task=glue`` -> its nine tasks);
    any other override, or a sweep function such as ``choice(...)``, is returned unchanged."""
    key, sep, value = override.partition("=")
    if not sep or key.lstrip("+~") != "task" or "(" in value or "[" in value:
        return override
    values = [v.strip() for v in value.split(",") if v.strip()]
    return f"{key}={','.join(expand_tasks(values))}" if any(v in load_suites() for v in values) else override
