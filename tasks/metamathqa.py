"""MetaMathQA → GSM8K (arXiv:2309.12284 data, arXiv:2110.14168 test), as peft's method comparison runs it.

Train on MetaMathQA rows whose ``f"{query} {response}"`` is at most ``char_limit`` characters (peft's
method_comparison/MetaMathQA/data.py: 1,300, "a proxy for tokens that is the same for every tokenizer"), test
on GSM8K test, and monitor training on ``monitor.size`` GSM8K train questions drawn as peft draws them
(``np.random.seed(seed)``, then a shuffle of the indices). The prompt is the task's ``prompt`` with
``{query}``; a MetaMathQA response (ending "The answer is: N") is appended to it as is.

Forgetting (``forgetting`` in the task YAML): the general text the job's cross-entropy is measured on, after
training, with and without the adapter (harness.forgetting). peft uses 100 rows of HuggingFaceFW/finewiki,
which is not offline; here the news sentences of the MSR Paraphrase Corpus (GLUE MRPC dev, first column), which
ship with the offline data and load from the hub (nyu-mll/glue, mrpc) elsewhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks import DATA_NEEDS, EvalSet, Example, TaskData, register
from tasks.data import RawRow, fetch_splits, read_jsonl, read_tsv, require_fields
from tasks.gsm8k import fill, split_solution
from tasks.metrics import normalize_number


def _gsm8k_example(raw: RawRow, task_cfg: Mapping[str, Any]) -> Example:
    require_fields(raw.row, ["question", "answer"], raw.origin, raw.line)
    _, final = split_solution(str(raw.row["answer"]), raw.origin, raw.line)
    return Example(prompt=fill(task_cfg["prompt"], {"query": str(raw.row["question"])}, task_cfg),
                   answer=normalize_number(final))


def monitor_indices(n: int, size: int, seed: int) -> list[int]:
    """peft's validation questions: the first `size` of arange(n) shuffled by numpy's global RNG at `seed`."""
    import numpy as np

    rng = np.random.RandomState(seed)   # np.random.seed(seed); np.random.shuffle(...) draws the same
    idx = np.arange(n)
    rng.shuffle(idx)
    return idx[:size].tolist()


@register("metamathqa")
def load_metamathqa(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """MetaMathQA (filtered) to train; GSM8K test to report; GSM8K train questions to monitor."""
    mm = fetch_splits(task_cfg, data_dir, ext=".jsonl", read=read_jsonl, splits={"train": "train"})
    gsm = fetch_splits(task_cfg, data_dir, ext=".jsonl", read=read_jsonl,
                       splits={"train": "train", "eval": "test"}, source=task_cfg["gsm8k"])
    limit = int(task_cfg.get("char_limit") or 0)
    train, dropped = [], 0
    for raw in mm.rows["train"]:
        require_fields(raw.row, ["query", "response"], raw.origin, raw.line)
        query, response = str(raw.row["query"]), str(raw.row["response"])
        if limit and len(f"{query} {response}") > limit:
            dropped += 1
            continue
        values = {"query": query, "response": response}
        train.append(Example(prompt=fill(task_cfg["prompt"], values, task_cfg),
                             target=fill(task_cfg["target"], values, task_cfg)))
    test = [_gsm8k_example(r, task_cfg) for r in gsm.rows["eval"]]
    evals = [EvalSet(str(task_cfg["name"]), test, str(task_cfg["splits"]["eval"]))]
    mon = task_cfg.get("monitor") or {}
    monitor = None
    if mon.get("size"):
        rows = gsm.rows["train"]
        picked = monitor_indices(len(rows), int(mon["size"]), int(mon.get("seed", 0)))
        monitor = EvalSet(str(task_cfg["name"]), [_gsm8k_example(rows[i], task_cfg) for i in picked],
                          f"GSM8K train: {len(picked)} questions (numpy seed {mon.get('seed', 0)})")
    kept = (f"{task_cfg['name']}: {len(train)} MetaMathQA rows kept, {dropped} longer than {limit} characters "
            "(query + response) dropped")
    notes = [*mm.notes, *gsm.notes, kept, *(str(n) for n in task_cfg.get("notes") or [])]
    files = {"train": mm.files["train"], "eval": gsm.files["eval"], "monitor": gsm.files["train"]}
    return TaskData(train, evals, mm.source if mm.source == gsm.source else f"{mm.source}+{gsm.source}", files,
                    notes, monitor=monitor, general_text=general_text(task_cfg, data_dir))


def general_text(task_cfg: Mapping[str, Any], data_dir: str | None) -> list[str] | None:
    """The held-out general text forgetting is measured on: ``forgetting.sentences`` news sentences, joined
    ``forgetting.per_text`` to a passage (None when the task does not measure forgetting)."""
    cfg = task_cfg.get("forgetting")
    if not cfg:
        return None
    source = {"local": cfg["local"], "hub": cfg.get("hub"), "hub_splits": cfg.get("hub_splits")}
    raw = fetch_splits(task_cfg, data_dir, ext=".tsv", read=read_tsv, splits={"text": cfg["split"]}, source=source)
    column = str(cfg["column"] if raw.source == "local" else cfg.get("hub_column", cfg["column"]))
    sentences = []
    for r in raw.rows["text"][: int(cfg["sentences"])]:
        require_fields(r.row, [column], r.origin, r.line)
        sentences.append(str(r.row[column]).strip())
    k = int(cfg.get("per_text") or 10)
    return [" ".join(sentences[i:i + k]) for i in range(0, len(sentences), k)]


def needs(task_cfg: Mapping[str, Any], data_dir: str | None) -> list[tuple[Any, list[str], Any, str]]:
    source, gsm, forget = task_cfg.get("source") or {}, task_cfg.get("gsm8k") or {}, task_cfg.get("forgetting")
    out = [(source.get("local"), ["train.jsonl"], source.get("hub"), "MetaMathQA (training set)"),
           (gsm.get("local"), ["train.jsonl", "test.jsonl"], gsm.get("hub"), "GSM8K (test and monitor sets)")]
    if forget:
        out.append((forget.get("local"), [f"{forget['split']}.tsv"], forget.get("hub"), "general text (forgetting)"))
    return out


DATA_NEEDS["metamathqa"] = needs
