"""GSM8K (arXiv:2110.14168): grade-school math word problems, generate-then-parse a number.

Training target = the reference solution with the ``<<a*b=c>>`` calculator annotations removed
(they are tool-use markup for the original paper's calculator, not text a model should learn),
followed by the YAML ``target`` template's answer line (``#### N`` by default, the dataset's own
format and lm-eval's strict-match anchor).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tasks import DATA_NEEDS, Example, TaskData, build_evals, register, source_needs
from tasks.data import DataFormatError, RawRow, fetch_splits, read_jsonl, require_fields
from tasks.metrics import normalize_number

_CALC = re.compile(r"<<[^\n]*?>>")


def split_solution(answer: str, origin: str, line: int | None) -> tuple[str, str]:
    """(reasoning without annotations, final answer as written) from a GSM8K ``answer`` field."""
    if "####" not in answer:
        raise DataFormatError(origin, line, "an 'answer' ending in '#### <number>'")
    body, final = answer.rsplit("####", 1)
    final = final.strip()
    if normalize_number(final) is None:
        raise DataFormatError(origin, line, f"a number after '####', got {final!r}")
    return _CALC.sub("", body).strip(), final


def fill(template: str, values: Mapping[str, str], task_cfg: Mapping[str, Any]) -> str:
    """``str.format`` with a clear error naming the task and the placeholders it may use."""
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"task {task_cfg.get('name')!r}: template {template!r} uses an unknown placeholder or "
            f"stray brace ({exc!r}); available: {sorted('{' + k + '}' for k in values)}"
        ) from exc


def _example(raw: RawRow, task_cfg: Mapping[str, Any]) -> Example:
    require_fields(raw.row, ["question", "answer"], raw.origin, raw.line)
    question = str(raw.row["question"])
    solution, final = split_solution(str(raw.row["answer"]), raw.origin, raw.line)
    values = {"question": question, "solution": solution, "answer": final}
    return Example(
        prompt=fill(task_cfg["prompt"], values, task_cfg),
        target=fill(task_cfg["target"], values, task_cfg),
        answer=normalize_number(final),
    )


@register("gsm8k")
def load_gsm8k(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """GSM8K train and test in file order; the gold answer is the normalized final number."""
    raw = fetch_splits(task_cfg, data_dir, ext=".jsonl", read=read_jsonl)
    split = {key: [_example(r, task_cfg) for r in rows] for key, rows in raw.rows.items()}
    notes = [*raw.notes, *(str(n) for n in task_cfg.get("notes") or [])]
    return TaskData(split["train"], build_evals(task_cfg, split), raw.source, raw.files, notes)


DATA_NEEDS["gsm8k"] = source_needs(".jsonl")
