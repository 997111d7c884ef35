"""Metrics and answer parsers, in plain Python so that scoring needs no heavy imports.

Every metric maps (predictions, references) to one float; scores are fractions in [0, 1] (accuracy,
f1, exact_match) or coefficients in [-1, 1] (matthews, pearson, spearman), never percentages.
``None`` predictions (an unparsable generation) count as wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any

# --------------------------------------------------------------------------------------------------
# Numbers


_NUMBER = re.compile(
    r"""
    (?<![\w.])                       # not the tail of a word or of another number
    [-\u2212]?(?:\$\s?)?[-\u2212]?  # sign right before or after a dollar: -$5, $-5, $ 5
    (?:\d{1,3}(?:,\d{3})+|\d+)?      # integer part, thousands groups only (so "1,2" is two numbers)
    (?:\.\d+)?                       # decimals
    %?
    """,
    re.VERBOSE,
)


def normalize_number(text: Any) -> str | None:
    """Canonical decimal string ("1,080" → "1080", "$18.00" → "18", "-0.50" → "-0.5"), or None.

    Strips ``$``, ``,``, ``%`` and spaces and compares as Decimal, so formatting never decides
    correctness. "50%" and "50" are the same answer, as GSM8K answers are bare numbers.
    """
    if text is None or isinstance(text, bool):
        return None
    s = str(text).strip().replace("\u2212", "-")
    for ch in "$,% ":
        s = s.replace(ch, "")
    s = s.rstrip(".")
    if not s:
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == 0:
        return "0"  # also folds -0
    # normalize() rounds to the context's precision (28 digits by default): give it enough for every
    # digit, or two different long numbers would read as one
    return format(value.normalize(Context(prec=max(28, len(s) + 2))), "f")


def _numbers(text: str) -> list[tuple[int, str]]:
    """(position, normalized) of every number in ``text``, in order."""
    found = []
    for m in _NUMBER.finditer(text):
        if not re.search(r"\d", m.group()):
            continue
        norm = normalize_number(m.group())
        if norm is not None:
            found.append((m.start(), norm))
    return found


_ANCHORS = (re.compile(r"####"), re.compile(r"answer\s+is", re.IGNORECASE))
_ANCHOR_GAP = " \t\r\n:=*\"'("


def parse_number(generation: str) -> str | None:
    """The model's numeric answer, normalized; None when the text holds no number.

    Order: the first number after the first ``####`` (the GSM8K reference format); else after the
    first "the answer is"; else the last number in the text (lm-eval's flexible extract and the
    LLM-Adapters math evaluation). First anchor, not last: text after the first answer is usually
    a run-on continuation (a new invented question), not a correction.
    """
    if not generation:
        return None
    for anchor in _ANCHORS:
        for m in anchor.finditer(generation):
            rest = generation[m.end() :]
            gap = len(rest) - len(rest.lstrip(_ANCHOR_GAP))
            nums = _numbers(rest)
            # the number must follow the anchor directly ("The answer is: **$1,080**."), otherwise
            # "the answer is that 9 * 2 = 18" would read 9
            if nums and nums[0][0] == gap:
                return nums[0][1]
    nums = _numbers(generation)
    return nums[-1][1] if nums else None


def parse_choice(generation: str, choices: Sequence[Any]) -> str | None:
    """The choice word that appears first in the generation (case-insensitive), or None.

    As the LLM-Adapters / DoRA commonsense evaluation (``re.findall('true|false')[0]``), except
    that matching is case-insensitive and whole-word, so "True" counts and "untrue" does not.
    """
    if not generation:
        return None
    words = [choice_word(c) for c in choices]
    # longest first so that e.g. "answer10" is not read as "answer1"
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    m = re.search(rf"(?<![A-Za-z0-9_])(?:{alternatives})(?![A-Za-z0-9_])", generation, re.IGNORECASE)
    if m is None:
        return None
    hit = m.group().lower()
    return next(w for w in words if w.lower() == hit)


def choice_word(choice: Any) -> str:
    """YAML/OmegaConf turn unquoted true/false into booleans; map them back to the words."""
    if isinstance(choice, bool):
        return "true" if choice else "false"
    return str(choice)


AnswerParser = Callable[[str, Mapping[str, Any]], "str | None"]
ANSWER_PARSERS: dict[str, AnswerParser] = {
    "number": lambda gen, cfg: parse_number(gen),
    "choice": lambda gen, cfg: parse_choice(gen, cfg["choices"]),
}


# --------------------------------------------------------------------------------------------------
# Metrics


def _check(predictions: Sequence, references: Sequence) -> int:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if len(references) == 0:
        raise ValueError("no references to score")
    return len(references)


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of exact matches (labels or parsed answer words)."""
    n = _check(predictions, references)
    return sum(p is not None and p == r for p, r in zip(predictions, references)) / n


def _confusion(predictions: Sequence, references: Sequence) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with label 1 as the positive class."""
    tp = fp = fn = tn = 0
    for p, r in zip(predictions, references):
        pos_p, pos_r = p == 1, r == 1
        if pos_p and pos_r:
            tp += 1
        elif pos_p:
            fp += 1
        elif pos_r:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def f1(predictions: Sequence, references: Sequence) -> float:
    """Binary F1 of class 1 (GLUE's MRPC/QQP convention); 0.0 when there is nothing to score."""
    _check(predictions, references)
    tp, fp, fn, _ = _confusion(predictions, references)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


def matthews(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation (CoLA), multi-class form; 0.0 for a constant predictor, as sklearn."""
    n = _check(predictions, references)
    labels = sorted({*(str(x) for x in references), *(str(x) for x in predictions)})
    idx = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    conf = [[0] * k for _ in range(k)]
    for p, r in zip(predictions, references):
        conf[idx[str(r)]][idx[str(p)]] += 1
    t = [sum(row) for row in conf]  # true counts per class
    p = [sum(conf[i][j] for i in range(k)) for j in range(k)]  # predicted counts per class
    c = sum(conf[i][i] for i in range(k))
    num = c * n - sum(ti * pi for ti, pi in zip(t, p))
    den = math.sqrt((n * n - sum(pi * pi for pi in p)) * (n * n - sum(ti * ti for ti in t)))
    return num / den if den else 0.0


def pearson(predictions: Sequence, references: Sequence) -> float:
    """Pearson r (STS-B); NaN when either side is constant (undefined, reported as such)."""
    n = _check(predictions, references)
    xs = [float(x) for x in predictions]
    ys = [float(y) for y in references]
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get their average rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for m in range(i, j + 1):
            ranks[order[m]] = avg
        i = j + 1
    return ranks


def spearman(predictions: Sequence, references: Sequence) -> float:
    """Spearman rho = Pearson r of the tie-averaged ranks."""
    _check(predictions, references)
    return pearson(_ranks([float(x) for x in predictions]), _ranks([float(y) for y in references]))


def exact_match(predictions: Sequence, references: Sequence) -> float:
    """Fraction of answers equal as numbers (Decimal, after stripping $ , %) or else as strings."""
    n = _check(predictions, references)
    hits = 0
    for p, r in zip(predictions, references):
        if p is None:
            continue
        np_, nr = normalize_number(p), normalize_number(r)
        if np_ is not None and nr is not None:
            hits += Decimal(np_) == Decimal(nr)
        else:
            hits += str(p).strip() == str(r).strip()
    return hits / n


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
    "exact_match": exact_match,
}


def compute_metrics(
    task_cfg: Mapping[str, Any], predictions: Sequence, references: Sequence
) -> dict[str, float]:
    """Every metric the task lists, in YAML order (the first is the primary metric)."""
    out: dict[str, float] = {}
    for spec in task_cfg["metrics"]:
        name = spec["name"]
        if name not in METRICS:
            raise KeyError(
                f"task {task_cfg.get('name')!r}: unknown metric {name!r}; known: {sorted(METRICS)}"
            )
        out[name] = float(METRICS[name](predictions, references))
    return out
