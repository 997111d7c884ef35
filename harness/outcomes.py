"""Per-example outcomes of an evaluated set, stored compactly in the record (or beside it).

Why: a set's score is one number per run, so one seed gives one sample per (method, task) and no
interval. The individual examples are many samples that every method answered: kept in the record,
they give example-level bootstrap intervals and paired tests between methods on the *same* examples
(McNemar), with no model and no data at hand.

Two kinds, both in the evaluated set's file order (the same for every method, see
``harness.evaluate.eval_subset``):

* ``correct``: 1 right / 0 wrong per example (``metric`` says by which metric: ``accuracy`` for
  labels, ``exact_match`` for parsed numbers, lm-eval's ``acc`` for loglik), stored as a bit string
  (``numpy.packbits``, big-endian bit order within each byte, padded with zeros) in base64 —
  1,000 examples are 168 characters.
* ``prediction``: a regression task's output per example, with the gold score beside it
  (``reference``) so a correlation can be recomputed on any resample; float32 little-endian in base64.
* ``label``: a classification task scored by a metric of the whole confusion matrix (Matthews, F1):
  the predicted and the gold label per example (integers), so that metric can be recomputed on any
  resample; int32 little-endian in base64, predictions then references. ``sum`` = examples right.

The block (``eval.outcomes``, and ``eval.subtasks[name].outcomes``)::

    {"format": 1, "kind": "correct", "metric": "accuracy", "n": 1000, "sum": 731.0,
     "data": "<base64>"}                                   # inline
    {"format": 1, "kind": "correct", ..., "path": "outcomes/<signature>.<set>.bin",
     "sha256": "<hex>", "bytes": 1250}                     # sidecar, path relative to the record's folder

A payload over :data:`INLINE_LIMIT` base64 characters goes to the sidecar file (the raw bytes the
``data`` string would decode to; for ``prediction``: predictions then references), so a record
stays small to parse: the leaderboard reads every record file on a cold build. ``sum`` (number right,
or sum of predictions) lets a reader check a decoded vector without the metric code. Records written
before outcomes existed simply have no block: :func:`read_outcomes` returns None for them.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
INLINE_LIMIT = 16_384   # base64 characters: ~98k binary outcomes, or ~1.5k regression predictions
KINDS = ("correct", "prediction", "label")
BINARY_KINDS = ("correct", "label")   # right/wrong per example (label: predicted == gold)
SIDECAR_DIR = "outcomes"   # beside the record files; iter_records reads only *.json of the folder itself


class OutcomeError(ValueError):
    """An outcomes block that cannot be read (bad encoding, missing sidecar, sha256 mismatch)."""


@dataclass(frozen=True)
class Outcomes:
    """Decoded outcomes of one evaluated set: ``values`` are 0/1 (``correct``) or predictions."""

    kind: str
    metric: str | None
    values: np.ndarray
    reference: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise OutcomeError(f"outcome kind {self.kind!r} is not one of {KINDS}")
        if self.kind in ("prediction", "label") and (self.reference is None
                                                     or len(self.reference) != len(self.values)):
            raise OutcomeError(f"{self.kind} outcomes need a reference of the same length")

    @property
    def n(self) -> int:
        return len(self.values)


def correct_per_example(metrics: Sequence[str], predictions: Sequence[Any], references: Sequence[Any]) -> tuple[
        str, list[int]]:
    """(metric, 1/0 per example): right or wrong as the task's own metric decides one example.

    ``exact_match`` (numbers compared as numbers) when the task scores with it, else ``accuracy``
    (label or answer-word equality); the metric functions themselves score each example, so a
    vector's mean equals the reported metric of that name."""
    from tasks.metrics import METRICS

    name = "exact_match" if "exact_match" in metrics else "accuracy"
    fn = METRICS[name]
    return name, [int(fn([p], [r]) == 1.0) for p, r in zip(predictions, references, strict=True)]


def _payload(out: Outcomes) -> bytes:
    if out.kind == "correct":
        bits = np.asarray(out.values, dtype=np.uint8)
        if bits.size and bits.max() > 1:
            raise OutcomeError("correct outcomes must be 0 or 1")
        return np.packbits(bits).tobytes()
    assert out.reference is not None
    dtype = "<i4" if out.kind == "label" else "<f4"
    return np.asarray(out.values, dtype=dtype).tobytes() + np.asarray(out.reference, dtype=dtype).tobytes()


def _slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip("_") or "set"


def encode_outcomes(out: Outcomes, *, record_dir: str | os.PathLike[str] | None = None, stem: str = "outcomes",
                    set_name: str = "", inline_limit: int = INLINE_LIMIT) -> dict[str, Any]:
    """The record's block for ``out``: inline base64 up to ``inline_limit`` characters, else the raw
    payload written (atomically) to ``<record_dir>/outcomes/<stem>.<set>.bin`` (``record_dir``: the
    folder of the record file; ``stem``: the run's signature) and referenced by that relative path and
    its sha256. Without a ``record_dir`` the payload is always inline."""
    from harness.records import atomic_write

    raw = _payload(out)
    total = (np.sum(np.asarray(out.values) == np.asarray(out.reference)) if out.kind == "label"
             else np.sum(np.asarray(out.values, dtype=np.float64)))
    block: dict[str, Any] = {"format": FORMAT, "kind": out.kind, "metric": out.metric, "n": out.n, "sum": float(total)}
    if record_dir is None or (len(raw) + 2) // 3 * 4 <= inline_limit:
        block["data"] = base64.b64encode(raw).decode("ascii")
        return block
    name = f"{_slug(stem)}.{_slug(set_name)}.bin" if set_name else f"{_slug(stem)}.bin"
    atomic_write(Path(record_dir) / SIDECAR_DIR / name, raw, fsync=True)
    block.update(path=f"{SIDECAR_DIR}/{name}", sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    return block


def read_outcomes(block: Mapping[str, Any] | None, *, record_dir: str | os.PathLike[str] | None = None
                  ) -> Outcomes | None:
    """Decode an outcomes block; None when there is none (records older than outcomes).

    A sidecar path is resolved against ``record_dir`` (the folder of the record file) and its sha256
    checked: a stale or swapped sidecar must not pass for the run's outcomes."""
    if not block:
        return None
    if block.get("format") != FORMAT:
        raise OutcomeError(f"outcomes format {block.get('format')!r} is not {FORMAT}")
    kind, n = str(block.get("kind")), int(block["n"])
    if "data" in block:
        try:
            raw = base64.b64decode(block["data"], validate=True)
        except (ValueError, TypeError) as exc:
            raise OutcomeError(f"outcomes data is not base64: {exc}") from exc
    elif "path" in block:
        if record_dir is None:
            raise OutcomeError(f"outcomes are in a sidecar ({block['path']}): pass the record's folder")
        path = Path(record_dir) / str(block["path"])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise OutcomeError(f"outcomes sidecar {path}: {exc.strerror or exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        if digest != block.get("sha256"):
            raise OutcomeError(f"outcomes sidecar {path}: sha256 {digest[:12]}… does not match the record's "
                               f"{str(block.get('sha256'))[:12]}…")
    else:
        raise OutcomeError("outcomes block has neither 'data' nor 'path'")
    if kind == "correct":
        if len(raw) != (n + 7) // 8:
            raise OutcomeError(f"outcomes: {len(raw)} bytes cannot hold {n} bits")
        values = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n)
        return Outcomes(kind, block.get("metric"), values)
    if kind in ("prediction", "label"):
        if len(raw) != 8 * n:
            raise OutcomeError(f"outcomes: {len(raw)} bytes are not {n} predictions + {n} references")
        if kind == "label":
            lab = np.frombuffer(raw, dtype="<i4").astype(np.int64)
            return Outcomes(kind, block.get("metric"), lab[:n], lab[n:])
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        return Outcomes(kind, block.get("metric"), arr[:n], arr[n:])
    raise OutcomeError(f"outcome kind {kind!r} is not one of {KINDS}")


def record_outcomes(record: Mapping[str, Any], *, record_dir: str | os.PathLike[str] | None = None
                    ) -> dict[str, Outcomes]:
    """Every evaluated set's outcomes of a record, by the task name the leaderboard uses (the run's task,
    or each ``subtasks`` key); {} for a failed run or a record older than outcomes."""
    ev = record.get("eval") or {}
    subtasks = ev.get("subtasks")
    if subtasks:
        found = {name: read_outcomes(sub.get("outcomes"), record_dir=record_dir) for name, sub in subtasks.items()}
    else:
        found = {record["run"]["task"]: read_outcomes(ev.get("outcomes"), record_dir=record_dir)}
    return {k: v for k, v in found.items() if v is not None}
