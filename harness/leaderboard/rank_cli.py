"""`peftbench rank`: rank the systems of any score table with every social-choice rule.

Example (the public GLUE leaderboard; `Score` is GLUE's own average, so leave it out; AX is a
diagnostic set, weight 0)::

    peftbench rank glue_systems.csv --index Model \\
        --columns CoLA,SST-2,MRPC-a,MRPC-b,STS-B-a,STS-B-b,QQP-a,QQP-b,MNLI-m,MNLI-mm,QNLI,RTE,WNLI,AX \\
        --weights glue_weights.yaml --format md

with ``glue_weights.yaml`` (the two-metric tasks count half per metric)::

    {AX: 0, MRPC-a: 0.5, MRPC-b: 0.5, STS-B-a: 0.5, STS-B-b: 0.5, QQP-a: 0.5, QQP-b: 0.5}

Instead of ``--columns``, ``Score: 0`` in the weights file drops the aggregate as well.

``--convention votenrank`` ranks as Vote'n'Rank does (arXiv:2210.05769) for every rule it implements
(e.g. Borda gives a point per system strictly beaten, ties score nothing) and adds its threshold
rule; the default, ``peftbench``, averages tied positions as pref_voting does. See
:mod:`harness.leaderboard.votenrank` for the rule-by-rule differences.

Any malformed input ends with one error line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.rules import RULES, Ranking, condorcet_winner, profile
from harness.leaderboard.stats import kendall_tau_agreement, rank_positions
from harness.leaderboard.votenrank import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    DEFAULT_GAMMA,
    VOTENRANK_ONLY,
    rank_with,
    rules_for,
)

PROG = "peftbench rank"


class RankInputError(Exception):
    """A problem with the user's table, options or weights file (reported as one line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise RankInputError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Rank systems (rows) over tasks (columns) with social-choice rules.")
    p.add_argument("table", help="CSV file: one row per system, one column per task score")
    p.add_argument("--index", help="column holding the system names (default: the first column)")
    p.add_argument("--columns", help="comma-separated task columns (default: every numeric column)")
    p.add_argument("--weights", help="JSON or YAML file mapping column -> weight (default 1; 0 drops it)")
    p.add_argument("--lower-is-better", default="", help="comma-separated columns where lower scores win")
    p.add_argument("--rules", default="all", help=f"'all' or a comma-separated subset of: {', '.join(RULES)} "
                   f"(and, under --convention votenrank, {', '.join(VOTENRANK_ONLY)})")
    p.add_argument("--convention", default=DEFAULT_CONVENTION, choices=list(CONVENTIONS),
                   help="tie conventions: peftbench (tied systems share their average position, as pref_voting) "
                        "or votenrank (Vote'n'Rank's, for every rule it implements)")
    p.add_argument("--gamma", type=float, default=None,
                   help=f"votenrank only: the optimality-gap target (default {DEFAULT_GAMMA:g}, for scores in percent)")
    p.add_argument("--format", default="md", choices=["md", "csv", "json"], help="output format")
    p.add_argument("--out", help="write here instead of stdout")
    return p


@dataclass(frozen=True)
class RankInput:
    """The validated table (higher is better everywhere), weights and rule list."""

    scores: pd.DataFrame
    weights: dict[str, float]
    rules: list[str]
    index_name: str
    convention: str = DEFAULT_CONVENTION
    gamma: float = DEFAULT_GAMMA


def _split(arg: str | None) -> list[str]:
    return [s.strip() for s in (arg or "").split(",") if s.strip()]


def _read_table(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise RankInputError(f"table file not found: {path}") from None
    except pd.errors.EmptyDataError:
        raise RankInputError(f"table {path} is empty") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise RankInputError(f"cannot read table {path}: {type(e).__name__}: {msg}") from None


def _numeric_column(raw: pd.Series, col: str, names: pd.Series) -> tuple[pd.Series | None, str | None]:
    """Parse a column as numbers; return (values, None) or (None, the first offending cell)."""
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.astype("string").str.strip()
    bad = values.isna() & raw.notna() & (text != "")
    if bad.any():
        i = int(np.nonzero(bad.to_numpy())[0][0])
        return (
            None,
            (
                f"column {col!r} has a non-numeric cell {str(raw.iloc[i])!r} "
                f"(system {names.iloc[i]!r}, line {i + 2})"
            ),
        )
    return values.astype(float), None


def _load_weights(path: str) -> dict:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise RankInputError(f"cannot read weights file {path}: {e.strerror or e}") from None
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise RankInputError(f"weights file {path} is not valid JSON: {e}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml  # only needed for YAML weights

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RankInputError(
                f"weights file {path} is not valid YAML: {' '.join(str(e).split())}"
            ) from None
    else:
        raise RankInputError(f"weights file {path} must end in .json, .yaml or .yml")
    if isinstance(data, dict) and set(data) == {"weights"} and isinstance(data["weights"], dict):
        data = data["weights"]  # also accept {weights: {...}}
    if not isinstance(data, dict):
        raise RankInputError(f"weights file {path} must hold a mapping column -> weight")
    return data


def prepare(args: argparse.Namespace) -> RankInput:
    """Turn the command line into a validated table; raise RankInputError naming the first problem."""
    raw = _read_table(args.table)
    if raw.shape[1] < 2:
        raise RankInputError(f"table {args.table} needs a system column and at least one score column")
    raw.columns = [str(c).strip() for c in raw.columns]
    index = args.index.strip() if args.index else raw.columns[0]
    if index not in raw.columns:
        raise RankInputError(f"--index {index!r} is not a column; columns: {', '.join(raw.columns)}")
    names = raw[index].astype("string").str.strip()
    if names.isna().any() or (names == "").any():
        i = int(np.nonzero((names.isna() | (names == "")).to_numpy())[0][0])
        raise RankInputError(f"system column {index!r} has an empty name on line {i + 2}")
    dups = sorted(set(names[names.duplicated()]))
    if dups:
        raise RankInputError(f"duplicate system names in column {index!r} (after stripping spaces): {dups}")

    others = [c for c in raw.columns if c != index]
    if args.columns:
        cols = _split(args.columns)
        unknown = [c for c in cols if c not in raw.columns]
        if unknown:
            raise RankInputError(f"--columns names unknown column(s) {unknown}; columns: {', '.join(others)}")
        if index in cols:
            raise RankInputError(f"--columns includes the system column {index!r}")
        if len(set(cols)) != len(cols):
            raise RankInputError("--columns lists a column twice")
        table = {}
        for c in cols:
            values, problem = _numeric_column(raw[c], c, names)
            if problem:
                raise RankInputError(problem)
            table[c] = values
    else:
        table = {}
        for c in others:
            values, problem = _numeric_column(raw[c], c, names)
            if values is not None:
                if values.notna().any():
                    table[c] = values
            elif pd.to_numeric(raw[c], errors="coerce").notna().any():
                raise RankInputError(problem)  # mostly numbers with a stray cell: malformed, say so
            # a column with no number at all (e.g. a URL or team column) is simply not a task
        if not table:
            raise RankInputError(f"table {args.table} has no numeric score column besides {index!r}")
    scores = pd.DataFrame(table)
    scores.index = pd.Index(list(names), name=index)
    if scores.shape[1] == 0:
        raise RankInputError("no task column selected")

    lower = _split(args.lower_is_better)
    bad = [c for c in lower if c not in scores.columns]
    if bad:
        raise RankInputError(
            f"--lower-is-better names column(s) {bad} that are not ranked; ranked: {list(scores.columns)}"
        )
    for c in lower:
        scores[c] = -scores[c]

    weights = {c: 1.0 for c in scores.columns}
    if args.weights:
        for k, v in _load_weights(args.weights).items():
            k = str(k)
            if k not in weights:
                raise RankInputError(
                    f"weights file {args.weights} gives a weight for unknown column {k!r}; "
                    f"ranked: {list(scores.columns)}"
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise RankInputError(f"weight for column {k!r} must be a finite number >= 0, got {v!r}")
            weights[k] = float(v)
        if not any(v > 0 for v in weights.values()):
            raise RankInputError("every weight is 0: nothing to rank on")

    convention = getattr(args, "convention", DEFAULT_CONVENTION)
    gamma = getattr(args, "gamma", None)
    if gamma is not None and convention != "votenrank":
        raise RankInputError("--gamma sets Vote'n'Rank's optimality-gap target: use it with --convention votenrank")
    if gamma is not None and not math.isfinite(gamma):
        raise RankInputError(f"--gamma must be a finite number, got {gamma}")
    registry = rules_for(convention)
    if args.rules.strip() == "all":
        rules = list(registry)
    else:
        rules = _split(args.rules)
        unknown = [r for r in rules if r not in registry]
        if unknown or not rules:
            only = [r for r in unknown if r in VOTENRANK_ONLY]
            hint = f" ({', '.join(only)}: only with --convention votenrank)" if only else ""
            raise RankInputError(
                f"unknown rule(s) {unknown or [args.rules]}; allowed: all, {', '.join(registry)}{hint}"
            )
    return RankInput(scores, weights, rules, index, convention, DEFAULT_GAMMA if gamma is None else gamma)


def _clean(v: Any) -> Any:
    """JSON-safe, recursively: NaN/inf → None, numpy scalars → Python, tuples → lists."""
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def ranking_document(
    systems: Sequence[str],
    tasks: Sequence[str],
    weights: dict[str, float],
    results: dict[str, Ranking],
    agreement: pd.DataFrame,
    cw: str | None,
    convention: str = DEFAULT_CONVENTION,
) -> dict:
    """The JSON-ready ranking report; `peftbench rank --format json` and the leaderboard share it."""
    return {
        "convention": convention,
        "systems": list(systems),
        "tasks": list(tasks),
        "weights": {k: _clean(v) for k, v in weights.items()},
        "condorcet_winner": cw,
        "rules": {
            r: {
                "ranking": [list(g) for g in rk.groups],
                "scores": {s: _clean(v) for s, v in rk.scores.items()},
                "winners": list(rk.winners),
                "skipped": rk.skipped,
                # only where a searching rule ran out of time: what it returned instead of the exact result
                **({"fallback": rk.fallback} if rk.fallback else {}),
            }
            for r, rk in results.items()
        },
        "agreement": {
            a: {b: _clean(v) for b, v in zip(agreement.columns, row)}
            for a, row in zip(agreement.index, agreement.to_numpy())
        },
    }


def rank_table(
    scores: pd.DataFrame, weights: dict[str, float] | None, rules: Sequence[str], *,
    convention: str = DEFAULT_CONVENTION, gamma: float = DEFAULT_GAMMA,
) -> tuple[dict[str, Ranking], pd.DataFrame, str | None]:
    """Every requested rule (under ``convention``), the rules' Kendall agreement and the Condorcet
    winner of one table."""
    registry = rules_for(convention, gamma=gamma)
    unknown = [r for r in rules if r not in registry]
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown} under the {convention} convention; allowed: {', '.join(registry)}")
    p = profile(scores, weights)
    results = rank_with(p, registry, list(rules))
    cw = condorcet_winner(scores, weights)
    return results, kendall_tau_agreement(results), cw


def to_json(inp: RankInput, results: dict[str, Ranking], agreement: pd.DataFrame, cw: str | None) -> str:
    doc = ranking_document(inp.scores.index, inp.scores.columns, inp.weights, results, agreement, cw,
                           inp.convention)
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _positions(results: dict[str, Ranking]) -> pd.DataFrame:
    return pd.DataFrame({r: rank_positions(rk) for r, rk in results.items() if rk.skipped is None})


def to_csv(inp: RankInput, results: dict[str, Ranking]) -> str:
    pos = _positions(results).reindex(index=inp.scores.index)
    out = pd.DataFrame(index=inp.scores.index)
    for r in results:
        out[r] = pos[r].astype("Int64") if r in pos.columns else pd.array([pd.NA] * len(out), dtype="Int64")
    out.index.name = inp.index_name
    buf = io.StringIO()
    out.to_csv(buf)
    return buf.getvalue()


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def _convention_line(inp: RankInput) -> str:
    if inp.convention == "votenrank":
        return ("**Convention:** Vote'n'Rank's (arXiv:2210.05769) for the rules it implements: ties score "
                "nothing under Borda and plurality, take the best position under Dowdall; minimax by winning "
                f"votes; optimality gap below gamma = {inp.gamma:g}")
    return "**Convention:** peftbench's: tied systems share the average of their positions (as pref_voting)"


def to_markdown(inp: RankInput, results: dict[str, Ranking], agreement: pd.DataFrame, cw: str | None) -> str:
    live = [r for r, rk in results.items() if rk.skipped is None]
    pos = _positions(results).reindex(index=inp.scores.index)
    tied = {r: {s for g in results[r].groups if len(g) > 1 for s in g} for r in live}
    order = sorted(
        range(len(inp.scores.index)),
        key=lambda i: (float(pos.iloc[i][live].mean()) if live else 0.0, i),
    )
    lines = [
        f"# Ranking of {len(inp.scores.index)} systems over {len(inp.scores.columns)} tasks",
        "",
        "Tasks (weight): " + ", ".join(f"{c} ({inp.weights[c]:g})" for c in inp.scores.columns),
        "",
        _convention_line(inp),
        "",
        "**Condorcet winner:** "
        + (cw if cw is not None else "none (no system beats every other by pairwise majority)"),
        "",
        "Rank per rule (1 = best, `=` marks a tie); rows sorted by mean rank over the rules.",
        "",
        "| " + " | ".join(["System", *live]) + " |",
        "|" + "---|" * (len(live) + 1),
    ]
    for i in order:
        s = inp.scores.index[i]
        cells = [f"{int(pos.iloc[i][r])}{'=' if s in tied[r] else ''}" for r in live]
        lines.append("| " + " | ".join([_md_cell(s), *cells]) + " |")
    lines += ["", "## Winners", ""]
    for r, rk in results.items():
        if rk.skipped is None:
            lines.append(f"- **{r}**: {', '.join(_md_cell(w) for w in rk.winners)}"
                         + (f" (not exact: {_md_cell(rk.fallback)})" if rk.fallback else ""))
        else:
            lines.append(f"- **{r}**: skipped - {rk.skipped}")
    if len(agreement):
        lines += ["", "## Agreement between rules (Kendall tau-b)", ""]
        lines.append("| | " + " | ".join(agreement.columns) + " |")
        lines.append("|" + "---|" * (len(agreement.columns) + 1))
        for a in agreement.index:
            vals = ["" if pd.isna(v) else f"{v:.2f}" for v in agreement.loc[a]]
            lines.append(f"| {a} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None) -> str:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    inp = prepare(args)
    try:
        results, agreement, cw = rank_table(inp.scores, inp.weights, inp.rules, convention=inp.convention,
                                            gamma=inp.gamma)
    except ValueError as e:  # the rules' own validation: report as an input error
        raise RankInputError(str(e)) from None
    if args.format == "json":
        text = to_json(inp, results, agreement, cw)
    elif args.format == "csv":
        text = to_csv(inp, results)
    else:
        text = to_markdown(inp, results, agreement, cw)
    if args.out:
        try:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as e:
            raise RankInputError(f"cannot write {args.out}: {e.strerror or e}") from None
        return ""
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 on success, 2 on any input problem (one line on stderr)."""
    try:
        text = run(argv)
    except RankInputError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if text:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
