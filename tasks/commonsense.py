"""Commonsense-8 in the LLM-Adapters format (arXiv:2304.01933), as used by DoRA (arXiv:2402.09353).

Records are ``{instruction, input, output, answer}``; the model sees the Alpaca-style template,
trains on ``output`` ("the correct answer is answer2") and is scored on the first option word it
generates (``generate``) or on the log-likelihood of each option's response (``loglik``, through
lm-eval). The original repo's templates carry stray source indentation (and, in finetune.py, a
"# noqa: E501") inside the string literal; we use the clean Alpaca template and say so in the notes.

The literature's protocol trains ONE adapter on the union of the eight training sets
(commonsense_170k) and evaluates it on each test set. Every commonsense task here trains on that
union: ``commonsense/all`` evaluates on all eight (one job, eight leaderboard voters), a single task
on its own test set. ``train_set: auto`` is fixed when the job is made (see :func:`resolve`): a local
copy of commonsense_170k, else the hub's, else — offline — the union of the train files that exist
locally (BoolQ, ARC-Easy, ARC-Challenge, OpenBookQA), and the record's notes say so. The resolved
name enters the signature, so runs on different training sets never share a record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tasks import DATA_NEEDS, RESOLVERS, EvalSet, Example, TaskData, register
from tasks.data import (
    DataFormatError,
    RawRow,
    availability_problem,
    fetch_splits,
    read_json_records,
    require_fields,
)
from tasks.gsm8k import fill
from tasks.metrics import choice_word

TRAIN_SETS = ("auto", "commonsense_170k", "local_union")
_FORMAT = re.compile(r"Answer format:\s*([A-Za-z0-9_]+(?:\s*/\s*[A-Za-z0-9_]+)+)\s*$")


def _from_hub_row(row: Mapping[str, Any], spec: Mapping[str, Any], task_cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """Rebuild an LLM-Adapters record from a raw hub row (e.g. google/boolq: question + bool answer).

    Uses the set's ``hub_instruction`` with ``{question}``; rows that already are LLM-Adapters
    records (commonsense_170k) pass through.
    """
    if "instruction" in row:
        return row
    template = spec.get("hub_instruction")
    if not template or "question" not in row or "answer" not in row:
        return row  # require_fields will report what is missing
    answer = choice_word(row["answer"]).lower()
    question = str(row["question"]).strip()
    return {
        "instruction": fill(str(template), {"question": question}, task_cfg),
        "input": "",
        "output": f"the correct answer is {answer}",
        "answer": answer,
    }


def options_of(instruction: str, allowed: list[str] | None) -> tuple[str, ...] | None:
    """The option words an item offers, from its "Answer format: a/b/c" line (ARC items have 3 to 5)."""
    m = _FORMAT.search(instruction.strip())
    if m is None:
        return tuple(allowed) if allowed else None
    words = tuple(w.strip() for w in m.group(1).split("/"))
    if allowed:
        canon = {c.lower(): c for c in allowed}
        if not all(w.lower() in canon for w in words):
            return tuple(allowed)
        return tuple(canon[w.lower()] for w in words)
    return words


def _example(raw: RawRow, spec: Mapping[str, Any], task_cfg: Mapping[str, Any], choices: list[str] | None) -> Example:
    row = _from_hub_row(raw.row, spec, task_cfg) if raw.origin.startswith("hub:") else raw.row
    require_fields(row, ["instruction", "output", "answer"], raw.origin, raw.line)
    answer = str(row["answer"]).strip()
    options = options_of(str(row["instruction"]), choices)
    if choices is not None:
        canon = {c.lower(): c for c in choices}
        if answer.lower() not in canon:
            raise DataFormatError(raw.origin, raw.line, f"'answer' in {choices}, got {answer!r}")
        answer = canon[answer.lower()]
    if options is not None and answer not in options:
        raise DataFormatError(raw.origin, raw.line, f"'answer' among the item's options {list(options)}, got {answer!r}")
    values = {k: str(v) for k, v in row.items() if v is not None}
    values.setdefault("input", "")
    template = task_cfg["prompt"]
    if values["input"].strip():
        template = task_cfg.get("prompt_with_input")
        if not template:
            raise DataFormatError(raw.origin, raw.line, "an empty 'input' (task has no prompt_with_input)")
    return Example(prompt=fill(template, values, task_cfg), target=fill(task_cfg["target"], values, task_cfg),
                   answer=answer, choices=options)


def _split_name(task_cfg: Mapping[str, Any], key: str) -> str:
    return str(task_cfg["splits"][key])


def resolve(task_cfg: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """Fix ``train_set: auto``: commonsense_170k where a local copy or the hub has it, else local_union."""
    if task_cfg.get("train_set", "auto") != "auto":
        return task_cfg
    spec = (task_cfg.get("train_sets") or {}).get("commonsense_170k") or {}
    name = _split_name(task_cfg, "train")
    missing = availability_problem(spec.get("local"), [f"{name}.json"], spec.get("hub"), data_dir,
                                   what="commonsense_170k")
    return {**task_cfg, "train_set": "local_union" if missing else "commonsense_170k"}


RESOLVERS["commonsense"] = resolve


def _train(task_cfg: Mapping[str, Any], data_dir: str | None) -> tuple[list[Example], dict[str, str], list[str], str]:
    """(examples, files, notes, source) of the training set the config names."""
    train_set = task_cfg.get("train_set", "auto")
    if train_set == "auto":
        train_set = resolve(dict(task_cfg), data_dir)["train_set"]
    sets = task_cfg.get("train_sets") or {}
    splits = {"train": _split_name(task_cfg, "train")}
    if train_set == "commonsense_170k":
        spec = sets.get("commonsense_170k") or {}
        raw = fetch_splits(task_cfg, data_dir, ext=".json", read=read_json_records, splits=splits, source=spec)
        rows = raw.rows["train"]
        notes = list(raw.notes)
        return ([_example(r, spec, task_cfg, None) for r in rows], {"train": raw.files["train"]}, notes, raw.source)
    if train_set != "local_union":
        raise ValueError(f"task {task_cfg['name']}: train_set {train_set!r} is not one of {', '.join(TRAIN_SETS)}")
    examples: list[Example] = []
    files: dict[str, str] = {}
    counts = []
    for rel in sets.get("local_union") or []:
        raw = fetch_splits(task_cfg, data_dir, ext=".json", read=read_json_records, splits=splits,
                           source={"local": rel})
        part = [_example(r, {}, task_cfg, None) for r in raw.rows["train"]]
        examples += part
        files[f"train:{rel}"] = raw.files["train"]
        counts.append(f"{rel.rsplit('/', 1)[-1]} {len(part):,}")
    note = (f"{task_cfg['name']}: trained on the union of the local train files ({', '.join(counts)}; "
            f"{len(examples):,} examples), NOT on commonsense_170k (the literature's 170k-example training "
            "set, not available here): scores are not comparable with published commonsense-8 numbers")
    return examples, files, [note], "local"


@register("commonsense")
def load_commonsense(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """The training union and every test set the task evaluates (``evals``), in file order."""
    train, files, notes, source = _train(task_cfg, data_dir)
    evals: list[EvalSet] = []
    eval_split = {"eval": _split_name(task_cfg, "eval")}
    for voter, spec in (task_cfg.get("evals") or {}).items():
        choices = [choice_word(c) for c in (spec.get("choices") or task_cfg.get("choices") or [])] or None
        raw = fetch_splits(task_cfg, data_dir, ext=".json", read=read_json_records, splits=eval_split,
                           source=spec)
        examples = [_example(r, spec, task_cfg, choices) for r in raw.rows["eval"]]
        evals.append(EvalSet(str(voter), examples, eval_split["eval"], tuple(choices) if choices else None))
        files[f"eval:{voter}"] = raw.files["eval"]
        notes += list(raw.notes)
    notes += [str(n) for n in task_cfg.get("notes") or []]
    return TaskData(train, evals, source, files, notes)


def needs(task_cfg: Mapping[str, Any], data_dir: str | None) -> list[tuple[Any, list[str], Any, str]]:
    """The training set the config resolves to, and every evaluated test set."""
    sets = task_cfg.get("train_sets") or {}
    train_file, eval_file = f"{_split_name(task_cfg, 'train')}.json", f"{_split_name(task_cfg, 'eval')}.json"
    if resolve(dict(task_cfg), data_dir)["train_set"] == "commonsense_170k":
        spec = sets.get("commonsense_170k") or {}
        out = [(spec.get("local"), [train_file], spec.get("hub"), "training set commonsense_170k")]
    else:
        out = [(rel, [train_file], None, f"training file of {rel}") for rel in sets.get("local_union") or []]
    return out + [(spec.get("local"), [eval_file], spec.get("hub"), f"test set of {voter}")
                  for voter, spec in (task_cfg.get("evals") or {}).items()]


DATA_NEEDS["commonsense"] = needs
