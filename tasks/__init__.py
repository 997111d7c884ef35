"""Task registry: a task is one YAML under ``conf/task/<suite>/<name>.yaml`` plus a loader key.

Kept light to import (no torch / transformers / datasets): the harness validates configs before any
compute, and ``datasets`` is imported only when a task has to come from the hub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.data import DataFormatError, DataNotFoundError, data_roots, resolve_local
from tasks.metrics import ANSWER_PARSERS, METRICS, compute_metrics


@dataclass(frozen=True)
class Example:
    """One example. classify: text_a, text_b (or None), label (int class; float for regression).
    generate / loglik: prompt, target (training text, appended directly to prompt), answer
    (normalized gold), choices (multiple choice: the option words this example offers, in order).
    """

    text_a: str | None = None
    text_b: str | None = None
    label: int | float | None = None
    prompt: str | None = None
    target: str | None = None
    answer: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskData:
    """Both splits in file order (the harness shuffles with the seed) plus provenance."""

    train: list[Example]
    eval: list[Example]
    source: str  # "local" | "hub"
    files: dict[str, str]  # split -> absolute path of the file read (hub: the cache file)
    notes: list[str]  # honest caveats for the record


Loader = Callable[[Mapping[str, Any], "str | None"], TaskData]
LOADERS: dict[str, Loader] = {}

PROTOCOLS = ("classify", "generate")
DIRECTIONS = ("max", "min")


def register(key: str) -> Callable[[Loader], Loader]:
    """Register a loader under the YAML ``loader`` key; a duplicate key is a programming error."""

    def deco(fn: Loader) -> Loader:
        if key in LOADERS:
            raise ValueError(f"task loader {key!r} registered twice")
        LOADERS[key] = fn
        return fn

    return deco


def task_config_problems(task_cfg: Mapping[str, Any]) -> list[str]:
    """Every schema problem of a task config (empty when valid), for an all-at-once ConfigError."""
    problems: list[str] = []
    name = task_cfg.get("name", "<unnamed>")

    def bad(field: str, why: str) -> None:
        problems.append(f"task {name}: {field}: {why}")

    for field in ("name", "suite", "version", "protocol", "loader", "source", "splits", "metrics"):
        if field not in task_cfg or task_cfg[field] is None:
            bad(field, "required")
    if not isinstance(task_cfg.get("name"), str) or "/" not in str(task_cfg.get("name", "")):
        bad("name", "must be '<suite>/<name>', the path under conf/task/")
    elif task_cfg.get("suite") is not None and str(task_cfg["name"]).split("/")[0] != task_cfg["suite"]:
        bad("suite", f"must equal the first part of name ({str(task_cfg['name']).split('/')[0]!r})")
    version = task_cfg.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        bad("version", "a positive integer")
    protocol = task_cfg.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        bad("protocol", f"{protocol!r} not in {list(PROTOCOLS)}")
    loader = task_cfg.get("loader")
    if loader is not None and loader not in LOADERS:
        bad("loader", f"{loader!r} not in {sorted(LOADERS)}")
    source = task_cfg.get("source")
    if isinstance(source, Mapping):
        if not source.get("local") and not source.get("hub"):
            bad("source", "needs 'local' (dir under the data root) and/or 'hub' (load_dataset kwargs)")
        if source.get("hub") is not None and not isinstance(source.get("hub"), Mapping):
            bad("source.hub", "a mapping of datasets.load_dataset keyword arguments")
    elif source is not None:
        bad("source", "a mapping")
    splits = task_cfg.get("splits")
    if isinstance(splits, Mapping):
        for key in ("train", "eval"):
            if not splits.get(key):
                bad(f"splits.{key}", "required")
    elif splits is not None:
        bad("splits", "a mapping with train and eval")
    metrics = task_cfg.get("metrics")
    if metrics is not None:
        if not metrics:
            bad("metrics", "at least one (the first is primary)")
        for i, spec in enumerate(metrics or []):
            if not isinstance(spec, Mapping) or spec.get("name") not in METRICS:
                bad(f"metrics[{i}].name", f"one of {sorted(METRICS)}")
            elif spec.get("direction") not in DIRECTIONS:
                bad(f"metrics[{i}].direction", f"one of {list(DIRECTIONS)}")
    if protocol == "classify":
        n = task_cfg.get("num_labels")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            bad("num_labels", "an integer >= 2 for classify")
        names = task_cfg.get("label_names")
        if names is not None and (not isinstance(n, int) or len(names) != n):
            bad("label_names", f"must list num_labels ({n}) names")
        if not isinstance(task_cfg.get("fields"), Mapping) or not task_cfg["fields"].get("text_a"):
            bad("fields.text_a", "required for classify")
    if protocol == "generate":
        if not isinstance(task_cfg.get("prompt"), str) or not task_cfg.get("prompt"):
            bad("prompt", "a template string for generate")
        if not isinstance(task_cfg.get("target"), str):
            bad("target", "a template string for generate (the training text)")
        parser = task_cfg.get("answer_parser")
        if parser not in ANSWER_PARSERS:
            bad("answer_parser", f"{parser!r} not in {sorted(ANSWER_PARSERS)}")
        if parser == "choice" and not task_cfg.get("choices"):
            bad("choices", "required by answer_parser: choice")
        mnt = task_cfg.get("max_new_tokens")
        if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt < 1:
            bad("max_new_tokens", "a positive integer for generate")
    return problems


def load_task(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """Load both splits: local files first, else the hub, else DataNotFoundError naming both.

    The local → hub fallback is done by each loader (through ``tasks.data`` helpers) because only
    the loader knows how to turn hub rows into Examples.
    """
    problems = task_config_problems(task_cfg)
    if problems:
        raise ValueError("invalid task config:\n  " + "\n  ".join(problems))
    return LOADERS[task_cfg["loader"]](task_cfg, data_dir)


def parse_answer(task_cfg: Mapping[str, Any], generation: str) -> str | None:
    """The normalized answer in a generation (comparable to ``Example.answer``), or None."""
    parser = task_cfg.get("answer_parser")
    if parser not in ANSWER_PARSERS:
        raise ValueError(
            f"task {task_cfg.get('name')!r} has answer_parser {parser!r}; known: {sorted(ANSWER_PARSERS)}"
        )
    return ANSWER_PARSERS[parser](generation, task_cfg)


__all__ = [
    "LOADERS",
    "METRICS",
    "DataFormatError",
    "DataNotFoundError",
    "Example",
    "TaskData",
    "compute_metrics",
    "data_roots",
    "load_task",
    "parse_answer",
    "register",
    "resolve_local",
    "task_config_problems",
]

# Loader modules register themselves; imported last because they import ``register`` from here.
from tasks import commonsense, glue, gsm8k  # noqa: F401
