"""The `loglik` protocol: multiple choice scored by log-likelihood, through lm-eval itself.

Why lm-eval rather than a loop of our own: "scored exactly as the literature scores them" means
lm-eval's own request building, continuation tokenization, batching and ``acc`` / ``acc_norm``.
The project only writes what lm-eval reads -- a JSONL of the evaluated examples and a task YAML
pointing at it (``dataset_path: json``) -- and hands lm-eval the trained in-memory model (peft
adapter applied) wrapped in its HF class, so nothing is saved, merged or reloaded.

What is scored: each example is one multiple-choice doc whose context is the instruction prompt
(``Example.prompt``, e.g. the Alpaca template ending in "### Response:\\n") and whose candidates are
``task.loglik.continuation`` filled with each option word ("the correct answer is answer1", ...),
with no delimiter in between. The adapter was trained to emit exactly that response, so loglik
scores the same answer format as `generate`, minus the parsing.

lm-eval detail worth knowing: it moves the context's trailing whitespace (the final "\\n") to the
front of every continuation. That adds the same log-probability to every choice, so ``acc`` is
unchanged; per-choice logliks include that term. ``acc_norm`` divides by the continuation's byte
length, so it is unchanged too where the options have equal length (answer1..5, solution1/2,
ending1..4, option1/2), and nearly so for true/false.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml

N_SAMPLES = 5                      # predictions kept for the record, as in harness.evaluate
LOGLIK_METRICS = ("acc", "acc_norm")   # lm-eval's multiple_choice metrics this protocol reports
TASK_PREFIX = "peftbench_"


@dataclass
class LoglikResult:
    """lm-eval's metrics (its own keys, filter suffix stripped) plus per-example outcomes."""

    metrics: dict[str, float]
    n_examples: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[int] = field(default_factory=list)   # 1 right / 0 wrong by the primary metric, input order
    info: dict[str, Any] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)   # each metric's per-example value, input order


@dataclass(frozen=True)
class LoglikTaskFiles:
    """What `write_task` wrote: lm-eval task name and the two files lm-eval reads."""

    name: str
    directory: Path
    yaml_path: Path
    docs_path: Path


def lm_eval_task_name(task_name: str) -> str:
    """A unique, valid lm-eval task name for a peftbench task ("commonsense/piqa" ->
    "peftbench_commonsense_piqa"); the prefix keeps it clear of lm-eval's built-in names."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", str(task_name)).strip("_").lower()
    if not slug:
        raise ValueError(f"task name {task_name!r} has no letters or digits")
    return TASK_PREFIX + slug


def _continuation(task_cfg: Mapping[str, Any]) -> str:
    block = task_cfg.get("loglik")
    template = block.get("continuation") if isinstance(block, Mapping) else None
    if not isinstance(template, str) or "{choice}" not in template:
        raise ValueError(f"task {task_cfg.get('name')}: loglik.continuation, a template with {{choice}}, "
                         "is required for protocol loglik")
    return template


def _metric_specs(task_cfg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    _continuation(task_cfg)
    specs = list(task_cfg["loglik"].get("metrics") or [{"name": "acc", "direction": "max"}])
    for i, spec in enumerate(specs):
        if spec.get("name") not in LOGLIK_METRICS or spec.get("direction") != "max":
            raise ValueError(f"task {task_cfg.get('name')}: loglik.metrics[{i}] must be "
                             f"{{name: one of {list(LOGLIK_METRICS)}, direction: max}}, got {dict(spec)}")
    return specs


def build_docs(examples: Sequence[Any], task_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One lm-eval doc per example: prompt, the filled continuations, gold index, option words.

    An example without its own ``choices`` falls back to the task's fixed label space
    (``task.choices``, e.g. true/false), the words the `generate` protocol parses for.
    """
    from tasks.metrics import choice_word

    template = _continuation(task_cfg)
    default = tuple(choice_word(c) for c in task_cfg.get("choices") or ())
    docs = []
    for i, ex in enumerate(examples):
        words = tuple(ex.choices) if ex.choices else default
        if not ex.prompt:
            raise ValueError(f"example {i}: empty prompt")
        if len(words) < 2:
            raise ValueError(f"example {i}: needs at least two choices, got {list(words)}")
        if ex.answer not in words:
            raise ValueError(f"example {i}: answer {ex.answer!r} is not among its choices {list(words)}")
        docs.append({"index": i, "prompt": ex.prompt, "words": list(words),
                     "choices": [template.format(choice=w) for w in words], "gold": words.index(ex.answer)})
    return docs


def write_task(examples: Sequence[Any], task_cfg: Mapping[str, Any], workdir: Path, *,
               name: str | None = None) -> LoglikTaskFiles:
    """Write ``<workdir>/<lm-eval task>/{docs.jsonl,<task>.yaml}``: a local-file lm-eval task.

    One folder per task so that several tasks can share a workdir; the datasets cache goes inside
    it too (never the repo or ~/.cache) and is cleared first, so a rewritten docs.jsonl is reread.
    ``name`` (default ``task_cfg["name"]``) names the evaluated set when a task evaluates several.
    """
    source = name or str(task_cfg["name"])
    name = lm_eval_task_name(source)
    specs = _metric_specs(task_cfg)
    docs = build_docs(examples, task_cfg)
    folder = Path(workdir).resolve() / name
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "hf_datasets"
    shutil.rmtree(cache, ignore_errors=True)
    docs_path = folder / "docs.jsonl"
    with open(docs_path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs_path)}, "cache_dir": str(cache)},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",      # column names: lm-eval reads the field, no Jinja templating
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metric_list": [{"metric": s["name"], "aggregation": "mean", "higher_is_better": True} for s in specs],
        "metadata": {"version": int(task_cfg.get("version") or 1),
                     "peftbench_task": source},
    }
    yaml_path = folder / f"{name}.yaml"
    yaml_path.write_text(f"# written by peftbench (harness/loglik.py) for {source}\n"
                         + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return LoglikTaskFiles(name=name, directory=folder, yaml_path=yaml_path, docs_path=docs_path)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval logs every step at INFO and warns that it was handed a model object (intended
    here), and datasets draws a bar for reading a few-kB JSONL: keep both out of the job log, for
    the call only. lm-eval's own request progress bar stays (useful on a long evaluation)."""
    import datasets

    logger = logging.getLogger("lm_eval")
    level = logger.level
    bars_were_on = not datasets.are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """lm-eval returns results only where LOCAL_RANK is 0 (its tensor-parallel rule); a rank of a peftbench job
    scores its own examples with its own lm-eval, a single process as far as lm-eval is concerned."""
    import os

    saved = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = saved


def make_hflm(model: Any, tokenizer: Any, *, batch_size: int, device: torch.device) -> Any:
    """lm-eval's HF model class around an in-memory model (plain or peft-wrapped).

    ``add_bos_token=False``: prompts are tokenized without special tokens, as in training.
    lm-eval uses the model where it already is (``device`` is passed for the record only).
    """
    from lm_eval.models.huggingface import HFLM

    with _quiet_lm_eval():
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size), device=str(device),
                    add_bos_token=False)


def _strip_filter(key: str) -> str:
    return key.split(",", 1)[0]


def evaluate_loglik(model: Any, tokenizer: Any, examples: Sequence[Any], task_cfg: Mapping[str, Any], *,
                    batch_size: int, device: torch.device, workdir: Path,
                    name: str | None = None) -> LoglikResult:
    """Score ``examples`` with lm-eval (0-shot, acc / acc_norm) on the given in-memory model.

    ``name``: the evaluated set's name when it is not ``task_cfg["name"]`` (a task that evaluates
    several sets, e.g. commonsense/all), so each set gets its own lm-eval task name and folder.
    Seeds are left alone (lm-eval would reseed python, numpy and torch globally, mid-job), and
    the model's train/eval mode is restored afterwards (lm-eval switches it to eval).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not examples:
        raise ValueError(f"task {name or task_cfg.get('name')}: no examples to evaluate")
    specs = _metric_specs(task_cfg)
    files = write_task(examples, task_cfg, workdir, name=name)
    was_training = model.training
    try:
        lm = make_hflm(model, tokenizer, batch_size=batch_size, device=device)
        with _quiet_lm_eval(), _one_process():
            manager = TaskManager(include_path=str(files.directory), include_defaults=False)
            out = lm_eval.simple_evaluate(
                model=lm, tasks=[files.name], task_manager=manager, num_fewshot=0, log_samples=True,
                random_seed=None, numpy_random_seed=None, torch_random_seed=None)
    finally:
        model.train(was_training)
    if out is None:
        raise RuntimeError("lm-eval returned no results (not rank 0?)")
    raw = out["results"][files.name]
    values = {_strip_filter(k): v for k, v in raw.items() if "," in k}
    metrics = {s["name"]: float(values[s["name"]]) for s in specs}
    logged = sorted(out["samples"][files.name], key=lambda s: s["doc_id"])
    if [s["doc"]["index"] for s in logged] != list(range(len(examples))):
        raise RuntimeError(f"lm-eval logged {len(logged)} samples for {len(examples)} examples")
    primary = specs[0]["name"]   # outcomes follow the primary metric (the record's first)
    outcomes = [1 if s[primary] == 1.0 else 0 for s in logged]
    samples = []
    for s in logged[:N_SAMPLES]:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        words = s["doc"]["words"]
        samples.append({"prompt": s["doc"]["prompt"][-300:], "choices": words, "gold": words[s["doc"]["gold"]],
                        "prediction": words[max(range(len(lls)), key=lls.__getitem__)], "loglik": lls})
    stderr = {}
    for s in specs:
        err = values.get(f"{s['name']}_stderr")
        stderr[s["name"]] = float(err) if isinstance(err, (int, float)) else None
    info = {"lm_eval_version": version("lm_eval"),
            "task": files.name, "task_version": out.get("versions", {}).get(files.name), "stderr": stderr}
    return LoglikResult(metrics=metrics, n_examples=len(examples), samples=samples, outcomes=outcomes,
                        info=info, values={s["name"]: [float(x[s["name"]]) for x in logged] for s in specs})


def merge_loglik(parts: Sequence[LoglikResult]) -> LoglikResult:
    """The result of contiguous shards of one set, scored apart (one per rank), as if scored at once: lm-eval's
    acc and acc_norm are means over examples (of 0/1 values, so the sum is exact in any order), and their
    stderr is the sample standard deviation over sqrt(n) (lm-eval's mean_stderr), recomputed on the whole."""
    import math

    names = list(parts[0].values)
    values = {k: [v for p in parts for v in p.values[k]] for k in names}
    n = len(values[names[0]])
    metrics = {k: sum(v) / n for k, v in values.items()}

    def stderr(v: list[float]) -> float | None:
        if n < 2:
            return None
        mu = sum(v) / n
        return math.sqrt(sum((x - mu) ** 2 for x in v) / (n - 1)) / math.sqrt(n)

    info = {**parts[0].info, "stderr": {k: stderr(v) for k, v in values.items()}, "shards": len(parts)}
    return LoglikResult(metrics=metrics, n_examples=n, samples=[x for p in parts for x in p.samples][:N_SAMPLES],
                        outcomes=[o for p in parts for o in p.outcomes], info=info, values=values)
