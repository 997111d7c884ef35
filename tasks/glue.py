"""GLUE-style sentence(-pair) classification from the GLUE tsv layout (or the hub).

Columns are named by the YAML ``fields`` (header names, or column indexes for header-less files
such as CoLA with ``source.header: false``); labels may be written as words (RTE) or as integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tasks import DATA_NEEDS, Example, TaskData, build_evals, register, source_needs
from tasks.data import DataFormatError, RawRow, fetch_splits, read_tsv, require_fields


def label_index(value: Any, task_cfg: Mapping[str, Any], origin: str, line: int | None) -> int | float:
    """Map a label cell to 0..num_labels-1: a label name maps to its position, else an integer.
    A regression task (STS-B) keeps the cell as a finite float score."""
    if task_cfg.get("regression"):
        try:
            score = float(str(value).strip())
        except ValueError:
            score = float("nan")
        if not math.isfinite(score):
            raise DataFormatError(origin, line, f"a real-valued score, got {str(value).strip()!r}")
        return score
    names = [str(n) for n in (task_cfg.get("label_names") or [])]
    n = int(task_cfg["num_labels"])
    text = str(value).strip()
    if text in names:
        return names.index(text)
    try:
        idx = int(text)
    except ValueError:
        idx = -1
    if 0 <= idx < n and not isinstance(value, bool):
        return idx
    raise DataFormatError(origin, line, f"a label in {names or []} or an integer in [0, {n}), got {text!r}")


def _example(raw: RawRow, fields: Mapping[str, Any], task_cfg: Mapping[str, Any]) -> Example:
    cols = {k: str(v) for k, v in fields.items() if v is not None and k in ("text_a", "text_b", "label")}
    require_fields(raw.row, list(cols.values()), raw.origin, raw.line)
    text_a = str(raw.row[cols["text_a"]])
    text_b = str(raw.row[cols["text_b"]]) if "text_b" in cols else None
    label = label_index(raw.row[cols["label"]], task_cfg, raw.origin, raw.line)
    return Example(text_a=text_a, text_b=text_b, label=label)


@register("glue")
def load_glue(task_cfg: Mapping[str, Any], data_dir: str | None) -> TaskData:
    """Train and eval splits of a GLUE classification task, in file order."""
    source = task_cfg.get("source") or {}
    fields = {"label": "label", **dict(task_cfg["fields"])}
    header = bool(source.get("header", True))
    min_cols = 1 + max((v for v in fields.values() if isinstance(v, int)), default=-1)

    def read(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
        return read_tsv(path, header=header, min_columns=max(min_cols, 1))

    raw = fetch_splits(task_cfg, data_dir, ext=".tsv", read=read)
    if raw.source == "hub":
        fields = {"label": "label", **dict(source.get("hub_fields") or task_cfg["fields"])}
    # header-less files are keyed by column index as a string
    fields = {k: (str(v) if v is not None else None) for k, v in fields.items()}
    split = {key: [_example(r, fields, task_cfg) for r in rows] for key, rows in raw.rows.items()}
    notes = [*raw.notes, *(task_cfg.get("notes") or [])]
    if raw.source == "local":
        notes += list(source.get("local_notes") or [])
    return TaskData(split["train"], build_evals(task_cfg, split), raw.source, raw.files, [str(n) for n in notes])


DATA_NEEDS["glue"] = source_needs(".tsv")
