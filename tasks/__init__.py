"""Task registry: a task is one YAML under ``conf/task/<suite>/<name>.yaml`` plus a loader key.

Kept light to import (no torch / transformers / datasets): the harness validates configs before any
compute, and ``datasets`` is imported only when a task has to come from the hub.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
class EvalSet:
    """One evaluated set: most tasks have one; MNLI (matched, mismatched) and commonsense/all more.

    ``name`` is the leaderboard voter it becomes (the task's own name for single-set tasks).
    """

    name: str
    examples: list[Example]
    split: str  # the split as reported, e.g. "dev", "test", "validation (500 carved from train, seed 0)"
    choices: tuple[str, ...] | None = None  # multiple choice: the option words of this set


@dataclass(frozen=True)
class TaskData:
    """Training examples and every evaluated set, in file order (the harness shuffles with the seed)."""

    train: list[Example]
    evals: list[EvalSet]  # the first is primary
    source: str  # "local" | "hub"
    files: dict[str, str]  # split key -> absolute path of the file read (hub: the cache file)
    notes: list[str]  # honest caveats for the record
    # evaluated every budget.eval_every steps instead of the primary set (peft_mc: 50 GSM8K train questions)
    monitor: EvalSet | None = None
    # held-out general text whose cross-entropy with and without the adapter is the job's forgetting
    general_text: list[str] | None = None

    @property
    def eval(self) -> list[Example]:
        """The primary evaluated set's examples."""
        return self.evals[0].examples


Loader = Callable[[Mapping[str, Any], "str | None"], TaskData]
LOADERS: dict[str, Loader] = {}
# Optional per-loader step run when a JobSpec is made: fixes what "auto" means in the config (e.g.
# which training set commonsense uses), so the signature names the data actually trained on.
Resolver = Callable[[dict[str, Any], "str | None"], dict[str, Any]]
RESOLVERS: dict[str, Resolver] = {}

PROTOCOLS = ("classify", "generate", "loglik")
EVAL_SPLITS = ("reported", "validation")
DIRECTIONS = ("max", "min")
BASELINES = ("majority", "chance", "zero")


def register(key: str) -> Callable[[Loader], Loader]:
    """Register a loader under the YAML ``loader`` key; a duplicate key is a programming error."""

    def deco(fn: Loader) -> Loader:
        if key in LOADERS:
            raise ValueError(f"task loader {key!r} registered twice")
        LOADERS[key] = fn
        return fn

    return deco


def protocols_of(task_cfg: Mapping[str, Any]) -> list[str]:
    """The protocols a task supports (``protocols``; the configured ``protocol`` alone by default)."""
    return [str(p) for p in (task_cfg.get("protocols") or [])]


def metrics_of(task_cfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The metric specs the job reports, in order (the first is primary): lm-eval's keys (acc,
    acc_norm) under ``protocol=loglik``, the task's ``metrics`` otherwise."""
    if task_cfg.get("protocol") == "loglik":
        return list((task_cfg.get("loglik") or {}).get("metrics") or [])
    return list(task_cfg.get("metrics") or [])


def eval_set_names(task_cfg: Mapping[str, Any]) -> list[str]:
    """Leaderboard voters of one job: one per evaluated set (just the task under eval_split=validation)."""
    if task_cfg.get("eval_split", "reported") == "validation" or not task_cfg.get("evals"):
        return [str(task_cfg.get("name"))]
    return [str(k) for k in task_cfg["evals"]]


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def task_config_problems(task_cfg: Mapping[str, Any]) -> list[str]:
    """Every schema problem of a task config (empty when valid), for an all-at-once ConfigError."""
    problems: list[str] = []
    name = task_cfg.get("name", "<unnamed>")

    def bad(field: str, why: str) -> None:
        problems.append(f"task {name}: {field}: {why}")

    for field in ("name", "suite", "version", "protocol", "protocols", "loader", "source", "splits", "metrics",
                  "validation", "baseline"):
        if field not in task_cfg or task_cfg[field] is None:
            bad(field, "required")
    if not isinstance(task_cfg.get("name"), str) or "/" not in str(task_cfg.get("name", "")):
        bad("name", "must be '<suite>/<name>', the path under conf/task/")
    elif task_cfg.get("suite") is not None and str(task_cfg["name"]).split("/")[0] != task_cfg["suite"]:
        bad("suite", f"must equal the first part of name ({str(task_cfg['name']).split('/')[0]!r})")
    version = task_cfg.get("version")
    if version is not None and not _is_int(version, 1):
        bad("version", "a positive integer")
    protocol = task_cfg.get("protocol")
    supported = protocols_of(task_cfg)
    bad_protocols = [p for p in supported if p not in PROTOCOLS]
    if bad_protocols:
        bad("protocols", f"{bad_protocols} not in {list(PROTOCOLS)}")
    if protocol is not None and protocol not in supported:
        bad("protocol", f"{protocol!r} is not one this task supports: {', '.join(supported)}")
        protocol = None   # its protocol-specific checks would only repeat this
    loader = task_cfg.get("loader")
    if loader is not None and loader not in LOADERS:
        bad("loader", f"{loader!r} not in {sorted(LOADERS)}")
    source = task_cfg.get("source")
    if isinstance(source, Mapping):
        if not source.get("local") and not source.get("hub") and not task_cfg.get("evals"):
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
    evals = task_cfg.get("evals")
    if evals is not None and (not isinstance(evals, Mapping) or not evals
                              or not all(isinstance(v, Mapping) for v in evals.values())):
        bad("evals", "a non-empty mapping: voter name -> the evaluated set's settings")
    eval_split = task_cfg.get("eval_split", "reported")
    if eval_split not in EVAL_SPLITS:
        bad("eval_split", f"{eval_split!r} is not one of {', '.join(EVAL_SPLITS)}")
    val = task_cfg.get("validation")
    if val is not None and (not isinstance(val, Mapping) or not _is_int(val.get("size"), 1)
                            or not _is_int(val.get("seed"), 0)):
        bad("validation", "a mapping {size: examples carved from train (>= 1), seed: >= 0}")
    if task_cfg.get("baseline") is not None and task_cfg.get("baseline") not in BASELINES:
        bad("baseline", f"{task_cfg.get('baseline')!r} is not one of {', '.join(BASELINES)}")
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
        if task_cfg.get("regression"):
            if n != 1:
                bad("num_labels", "1 for a regression task (one real-valued output)")
        elif not _is_int(n, 2):
            bad("num_labels", "an integer >= 2 for classify")
        names = task_cfg.get("label_names")
        if names is not None and (not isinstance(n, int) or len(names) != n):
            bad("label_names", f"must list num_labels ({n}) names")
        if not isinstance(task_cfg.get("fields"), Mapping) or not task_cfg["fields"].get("text_a"):
            bad("fields.text_a", "required for classify")
    if protocol in ("generate", "loglik"):
        if not isinstance(task_cfg.get("prompt"), str) or not task_cfg.get("prompt"):
            bad("prompt", f"a template string for {protocol}")
        if not isinstance(task_cfg.get("target"), str):
            bad("target", f"a template string for {protocol} (the training text)")
    if protocol == "generate":
        parser = task_cfg.get("answer_parser")
        if parser not in ANSWER_PARSERS:
            bad("answer_parser", f"{parser!r} not in {sorted(ANSWER_PARSERS)}")
        if parser == "choice" and not task_cfg.get("choices") and not (
                isinstance(evals, Mapping) and evals and all(isinstance(v, Mapping) and v.get("choices")
                                                             for v in evals.values())):
            bad("choices", "required by answer_parser: choice (on the task or on every evals entry)")
        mnt = task_cfg.get("max_new_tokens")
        if not _is_int(mnt, 1):
            bad("max_new_tokens", "a positive integer for generate")
        stop = task_cfg.get("stop")
        if stop is not None and (isinstance(stop, str) or not isinstance(stop, Sequence)
                                 or not all(isinstance(x, str) and x for x in stop)):
            bad("stop", "a list of non-empty stop strings")
    shots = task_cfg.get("num_fewshot", 0)
    if not _is_int(shots, 0):
        bad("num_fewshot", "an integer >= 0")
    elif shots and protocol != "generate":
        bad("num_fewshot", f"few-shot prompts apply to protocol generate, not {protocol!r}")
    if "loglik" in supported and protocol is not None:
        block = task_cfg.get("loglik")
        if not isinstance(block, Mapping) or "{choice}" not in str(block.get("continuation", "")):
            bad("loglik.continuation", "a template with {choice}: the text scored for each option")
        ll_metrics = (block or {}).get("metrics") if isinstance(block, Mapping) else None
        if not ll_metrics or not all(isinstance(m, Mapping) and m.get("name") in ("acc", "acc_norm")
                                     and m.get("direction") in DIRECTIONS for m in ll_metrics):
            bad("loglik.metrics", "a list of lm-eval metrics {name: acc|acc_norm, direction: max}")
    return problems


def build_evals(task_cfg: Mapping[str, Any], by_key: Mapping[str, list[Example]]) -> list[EvalSet]:
    """The evaluated sets from examples per split key: ``evals`` (voter -> {split: key}) when the
    task reports several sets, else the one ``eval`` split under the task's own name."""
    splits = task_cfg["splits"]
    evals = task_cfg.get("evals") or {str(task_cfg["name"]): {"split": "eval"}}
    out = []
    for voter, spec in evals.items():
        key = str(spec.get("split", "eval"))
        out.append(EvalSet(str(voter), by_key[key], str(splits.get(key, key))))
    return out


# loader -> the data sets a job of that loader reads: (dir under the data root, file names, hub kwargs,
# what to call it). Only stat calls and, without a local copy, one hub probe: cheap enough to check
# every task of a sweep before anything is launched.
Need = tuple["str | None", list[str], "Mapping[str, Any] | None", str]
DATA_NEEDS: dict[str, Callable[[Mapping[str, Any], str | None], list[Need]]] = {}


def data_problems(task_cfg: Mapping[str, Any], data_dir: str | None) -> list[str]:
    """One message per data set of this task that neither a local copy nor the hub can provide."""
    from tasks.data import availability_problem

    needs = DATA_NEEDS.get(str(task_cfg.get("loader")))
    if needs is None:
        return []
    out = []
    for rel, names, hub, what in needs(task_cfg, data_dir):
        problem = availability_problem(rel, names, hub, data_dir, what=what)
        if problem:
            out.append(f"task {task_cfg.get('name')}: {problem}")
    return out


def source_needs(ext: str) -> Callable[[Mapping[str, Any], str | None], list[Need]]:
    """DATA_NEEDS entry for a loader that reads every split from ``source`` (GLUE, GSM8K)."""

    def needs(task_cfg: Mapping[str, Any], data_dir: str | None) -> list[Need]:
        source = task_cfg.get("source") or {}
        names = sorted({f"{v}{ext}" for v in (task_cfg.get("splits") or {}).values() if v})
        return [(source.get("local"), names, source.get("hub"), f"data of {task_cfg.get('name')}")]

    return needs


def resolve_task(task_cfg: Mapping[str, Any], data_dir: str | None) -> dict[str, Any]:
    """The task config with its loader's "auto" choices fixed (see RESOLVERS); others unchanged."""
    cfg = dict(task_cfg)
    resolver = RESOLVERS.get(str(cfg.get("loader")))
    return resolver(cfg, data_dir) if resolver is not None else cfg


def load_task(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """Load the training set and every evaluated set, then apply ``eval_split`` and ``num_fewshot``.

    The local → hub fallback is done by each loader (through ``tasks.data`` helpers) because only
    the loader knows how to turn hub rows into Examples. The validation carve and few-shot prompts
    are done here, once, for every task.
    """
    problems = task_config_problems(task_cfg)
    if problems:
        raise ValueError("invalid task config:\n  " + "\n  ".join(problems))
    data = LOADERS[task_cfg["loader"]](task_cfg, data_dir)
    if task_cfg.get("eval_split", "reported") == "validation":
        data = carve_validation(task_cfg, data)
    if task_cfg.get("num_fewshot"):
        data = with_fewshot(task_cfg, data)
    return data


def carve_validation(task_cfg: Mapping[str, Any], data: TaskData) -> TaskData:
    """A deterministic validation set carved from train and removed from it, so that tuning (a
    search) never sees the reported split and never trains on what it is scored on."""
    size, seed = int(task_cfg["validation"]["size"]), int(task_cfg["validation"]["seed"])
    n = len(data.train)
    if size >= n:
        raise ValueError(f"task {task_cfg['name']}: validation.size={size} leaves nothing to train on "
                         f"({n} training examples)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:size])
    val = [e for i, e in enumerate(data.train) if i in held]
    train = [e for i, e in enumerate(data.train) if i not in held]
    note = (f"{task_cfg['name']}: eval_split=validation: {size} examples carved from train (seed {seed}) "
            f"and excluded from training; the reported split was not used")
    return replace(data, train=train, evals=[EvalSet(str(task_cfg["name"]), val, "validation")],
                   notes=[*data.notes, note])


def with_fewshot(task_cfg: Mapping[str, Any], data: TaskData) -> TaskData:
    """k-shot evaluation prompts: k exemplars (prompt + target) drawn from train with a fixed seed
    (the same for every method and seed), joined by a blank line as lm-eval does, before each
    evaluated prompt. Training prompts stay zero-shot."""
    k, seed = int(task_cfg["num_fewshot"]), int(task_cfg.get("fewshot_seed", 1234))
    if k > len(data.train):
        raise ValueError(f"task {task_cfg['name']}: num_fewshot={k} > {len(data.train)} training examples")
    shots = random.Random(seed).sample(data.train, k)
    prefix = "".join(f"{e.prompt}{e.target}\n\n" for e in shots)
    evals = [replace(s, examples=[replace(e, prompt=prefix + (e.prompt or "")) for e in s.examples])
             for s in data.evals]
    note = f"{task_cfg['name']}: {k}-shot prompts (exemplars drawn from train with seed {seed})"
    return replace(data, evals=evals, notes=[*data.notes, note])


def parse_answer(task_cfg: Mapping[str, Any], generation: str,
                 choices: Sequence[str] | None = None) -> str | None:
    """The normalized answer in a generation (comparable to ``Example.answer``), or None.

    ``choices`` (an example's own options) take precedence over the task's ``choices``.
    """
    parser = task_cfg.get("answer_parser")
    if parser not in ANSWER_PARSERS:
        raise ValueError(
            f"task {task_cfg.get('name')!r} has answer_parser {parser!r}; known: {sorted(ANSWER_PARSERS)}"
        )
    if not choices and not task_cfg.get("choices"):   # a single-set task keeps its options on the set
        sets = [v for v in (task_cfg.get("evals") or {}).values() if v.get("choices")]
        choices = sets[0]["choices"] if len(sets) == 1 else None
    cfg = {**task_cfg, "choices": list(choices)} if choices else task_cfg
    return ANSWER_PARSERS[parser](generation, cfg)


__all__ = [
    "LOADERS",
    "METRICS",
    "DataFormatError",
    "DataNotFoundError",
    "EvalSet",
    "Example",
    "TaskData",
    "compute_metrics",
    "data_problems",
    "data_roots",
    "load_task",
    "metrics_of",
    "parse_answer",
    "protocols_of",
    "register",
    "resolve_local",
    "resolve_task",
    "task_config_problems",
]

# Loader modules register themselves; imported last because they import ``register`` from here.
from tasks import commonsense, glue, gsm8k, metamathqa  # noqa: F401
