"""The static leaderboard page: results/leaderboards/index.html, one section per board.

Self-contained on purpose: figures are inline SVG (harness.leaderboard.plots) and styling is one <style>
block, so the page opens from a file:// URL, an archived CI artifact or an air-gapped cluster with no CDN
to reach.
Every piece of text from records (method, task, model names) is escaped.
"""
from __future__ import annotations

import datetime as dt
import html as _html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard import plots
from harness.leaderboard.board_report import BoardReport
from harness.leaderboard.cells import (
    BELOW_MARK,
    CAPACITY_MARK,
    _baseline_cell,
    _fmt,
    _fmt_float,
    _fmt_int,
    _rows,
    average_cell,
    average_header,
    board_title,
    paired_cell,
)
from harness.leaderboard.table import DEVICE_COST_HEADERS, capacity_misses, shown_device_costs

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1d2430;
       max-width: 1500px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #2f5d8a; padding-bottom: 4px; margin-top: 40px; }
h3 { margin: 22px 0 6px; color: #2f5d8a; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #c9d1db; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #e9eef4; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f7f9fb; }
td.win { background: #d8f0d2 !important; font-weight: 600; }
.scroll { overflow-x: auto; } .muted { color: #5b6675; } .note { background: #fff6dc; padding: 6px 10px;
       border-left: 4px solid #e0b43a; margin: 6px 0; }
.figs { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.figs figure { margin: 0; max-width: 100%; } figcaption { font-size: 12px; color: #5b6675; max-width: 520px; }
.figs svg { display: block; max-width: 100%; height: auto; }
nav a { margin-right: 14px; } ul { margin: 4px 0; }
.verdict { background: #eaf2fb; border-left: 4px solid #2f5d8a; padding: 8px 12px; margin: 8px 0 12px;
           font-size: 15px; }
td.below { color: #8a3b2f; } tr.baseline td { font-style: italic; background: #f1f1f1 !important; }
"""


def _e(s: object) -> str:
    return _html.escape(str(s), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, win: Sequence[Sequence[bool]] | None = None,
           raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (pre-built markup)."""
    out = ["<div class='scroll'><table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        out.append("<tr>")
        for j, cell in enumerate(row):
            cls = " class='win'" if win is not None and win[i][j] else ""
            out.append(f"<td{cls}>{cell if raw else _e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figure(svg: str, alt: str, caption: str) -> str:
    """An inline ``<svg>`` from plots.py in a ``<figure>``: announced as one image whose accessible name
    (``aria-label``, and a ``<title>`` that also shows as a tooltip) is the alt text."""
    # plots.py's opening tag carries only numeric and fixed attributes, so its first '>' closes it
    head, _, rest = svg.partition(">")
    if not head.startswith("<svg"):
        raise ValueError(f"expected an <svg> element, got {svg[:40]!r}")
    return (f"<figure>{head} role='img' aria-label='{_e(alt)}'><title>{_e(alt)}</title>{rest}"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def verdict_html(rep: BoardReport) -> str:
    """The verdict paragraph, first in a board's section; `name` (Markdown code) becomes <code>."""
    if not rep.verdict:
        return ""
    text = _e(" ".join(rep.verdict))
    parts = text.split("`")
    body = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    return f"<p class='verdict'><b>Verdict.</b> {body}</p>"


def _anchor(rep: BoardReport) -> str:
    return "board-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in rep.board.key)


def pareto_score(rep: BoardReport) -> tuple[pd.Series, str, bool]:
    """The y of the Pareto plots: mean primary metric over tasks when that is meaningful (one
    direction, no missing cell), else the mean per-task rank (1 = best), which always is."""
    b = rep.board
    cols = b.score_columns   # on a board over criteria: its tasks only (cost criteria are the plots' x axes)
    scores = b.scores[cols]
    dirs = {b.directions[c] for c in cols}
    if len(dirs) == 1 and not scores.isna().to_numpy().any():
        metrics = sorted({b.metrics[c] for c in cols})
        label = f"mean {metrics[0] if len(metrics) == 1 else 'primary metric'} over {scores.shape[1]} task(s)"
        return scores.mean(axis=1), label + (" ↑" if dirs == {"max"} else " ↓"), dirs == {"max"}
    ranks = b.oriented()[cols].rank(axis=0, ascending=False, method="average")
    return ranks.mean(axis=1), "mean rank over tasks (1 = best)", False


def _scores_table(rep: BoardReport) -> str:
    b = rep.board
    tasks = list(b.scores.columns)
    avg = b.average
    device_cols = shown_device_costs(b.cost)
    head = ["method", *[f"{t} ({b.metrics[t]} {'↑' if b.directions[t] == 'max' else '↓'})" for t in tasks],
            *([average_header(avg)] if avg is not None else []), "trainable params", "peak mem (MB)",
            "train time (s)", *(DEVICE_COST_HEADERS[c][0] for c in device_cols)]
    order = rep.order()
    # whole frames to arrays once: a pandas .at/.loc per cell made these tables cost more than the
    # board's figures (~10 ms for 20 × 8)
    mean, std, n = (_rows(b, f) for f in (b.scores, b.std, b.n_seeds))
    cost = b.cost.loc[order, ["trainable_params", "peak_memory_mb", "train_time_s"]].to_numpy(dtype=float)
    device = b.cost.loc[order, device_cols].to_numpy(dtype=float)
    below = _rows(b, rep.below_baseline.astype(float)) if rep.below_baseline is not None else None
    missed = capacity_misses(b.cost)
    rows = []
    for i, m in enumerate(order):
        params, mem, secs = cost[i].tolist()
        cells = []
        for j in range(len(tasks)):
            text = _e(_fmt(mean[m][j], std[m][j], n[m][j]))
            if below is not None and below[m][j] == 1:
                cells.append(f"<span class='below' title='does not clear the trivial baseline'>{text} "
                             f"{BELOW_MARK}</span>")
            else:
                cells.append(text)
        rows.append([_e(m), *cells, *([_e(average_cell(avg, m))] if avg is not None else []),
                     _e(_fmt_int(params)) + (f" <span class='capacity' title='more than ±10% off the capacity "
                                             f"target {missed[m][0]:,.0f}: ran at its closest setting'>"
                                             f"{CAPACITY_MARK}</span>" if m in missed else ""),
                     _e(_fmt_float(mem, 0)), _e(_fmt_float(secs, 1)),
                     *(_e(_fmt_float(v, DEVICE_COST_HEADERS[c][1])) for c, v in zip(device_cols, device[i].tolist()))])
    if b.baseline:
        rows.append(["<i>trivial baseline</i>", *[_e(_baseline_cell(b, t)) for t in tasks],
                     *[""] * (len(head) - 1 - len(tasks))])
    table = _table(head, rows, raw=True)
    if b.baseline and below is not None and rep.below_baseline.to_numpy().any():
        table += (f"<p class='muted'>{BELOW_MARK}: the cell's 95% interval (over examples where the runs kept "
                  "per-example outcomes, else over seeds) does not clear the task's trivial baseline.</p>")
    if avg is not None:
        table += f"<p class='muted'>{_e(avg.label)}: {_e(avg.description)}</p>"
    return table


def _ranks_table(rep: BoardReport) -> str:
    order = rep.order()
    pos = rep.positions().loc[order, list(rep.live)].to_numpy(dtype=float).tolist()  # see _scores_table
    winners = [set(rep.rankings[r].winners) for r in rep.live]
    rows, win = [], []
    for m, ranks in zip(order, pos, strict=True):
        rows.append([m, *["—" if math.isnan(v) else f"{int(v)}" for v in ranks]])
        win.append([False, *[m in w for w in winners]])
    return _table(["method", *rep.live], rows, win=win)


def _winners(rep: BoardReport) -> str:
    items = []
    for r, rk in rep.rankings.items():
        if rk.skipped:
            items.append(f"<li><b>{_e(r)}</b>: <span class='muted'>skipped — {_e(rk.skipped)}</span></li>")
        else:
            approx = f" <span class='muted'>(not exact: {_e(rk.fallback)})</span>" if rk.fallback else ""
            items.append(f"<li><b>{_e(r)}</b>: {_e(', '.join(rk.winners))}{approx}</li>")
    if rep.instance is not None:
        ins = rep.instance
        what = (_e(", ".join(ins.winners)) if not ins.skipped
                else f"<span class='muted'>skipped — {_e(ins.skipped)}</span>")
        items.append(f"<li><b>instance_borda</b> (every example a voter: examples → tasks → overall, Colombo et "
                     f"al. 2022; not among the rules above): {what}</li>")
    cw = rep.condorcet or "none (no method beats every other by pairwise majority)"
    return f"<p><b>Condorcet winner:</b> {_e(cw)}</p><ul>{''.join(items)}</ul>"


def _agreement(rep: BoardReport) -> str:
    a = rep.agreement
    if a.empty:
        return "<p class='muted'>No two rules produced a ranking.</p>"
    rows = [[r, *["" if pd.isna(v) else f"{v:.2f}" for v in a.loc[r]]] for r in a.index]
    return _table(["", *a.columns], rows)


def _uncertainty(rep: BoardReport) -> str:
    parts = []
    if rep.bootstrap_note:
        parts.append(f"<p class='note'>{_e(rep.bootstrap_note)}</p>")
    if not rep.bootstrap:
        return "".join(parts)
    parts.append(f"<p class='muted'>{rep.n_boot} bootstrap resamples of the seeds of every cell; per rule and "
                 "method: 95% interval of the rank position, and P(win) = share of resamples in which the "
                 "method is among the winners.</p>")
    parts.append("<ul>" + "".join(f"<li>{_e(br.summary)}</li>" for br in rep.bootstrap.values()) + "</ul>")
    rules = list(rep.bootstrap)
    rows, win = [], []
    for m in rep.order():
        row, w = [m], [False]
        for r in rules:
            br = rep.bootstrap[r]
            lo, hi = br.rank_interval.get(m, (np.nan, np.nan))
            p = br.p_win.get(m, np.nan)
            if math.isnan(lo):
                row.append("—")
            else:
                span = f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"
                row.append(f"{span} · {p:.0%}")
            w.append(m in br.winners)
        rows.append(row)
        win.append(w)
    parts.append(_table(["method (rank interval · P(win))", *rules], rows, win=win))
    return "".join(parts)


def _paired(rep: BoardReport) -> str:
    """The paired tests of the consensus winner against each method, per task: Δ with stars, and p."""
    if not rep.paired:
        return ""
    tasks = [t for t in rep.board.scores.columns if t in rep.paired]
    methods = [m for m in rep.order() if any(m in rep.paired[t] for t in tasks)]
    head = (f"<h3>Paired tests on the same examples</h3><p class='muted'>{_e(rep.paired_reference or '')} against each "
            "method, per task: Δ = its score − the method's, per example; McNemar when both ran one seed with "
            "right/wrong outcomes, else the sign-flip permutation test of per-example means over seeds; "
            "* p &lt; 0.05, ** p &lt; 0.01.</p>")
    rows = []
    for m in methods:
        cells = []
        for t in tasks:
            pt = rep.paired[t].get(m)
            cells.append(paired_cell(pt) + (f" (p = {pt.pvalue:.2g})" if pt is not None else ""))
        rows.append([m, *cells])
    return head + _table(["method", *tasks], rows)


def _figures(rep: BoardReport) -> str:
    b = rep.board
    figs = []
    pos = rep.positions()
    if not pos.empty:
        figs.append(_figure(plots.rank_heatmap(pos.loc[rep.order()]), "rank heatmap",
                            "Rank of each method (rows) under each rule (columns); skipped rules are left out."))
    if rep.friedman is not None:
        f = rep.friedman
        sig = "significant" if f["significant"] else "not significant"
        cap = (f"Critical-difference diagram (Nemenyi, α = {f['alpha']}): average rank over {f['n_tasks']} task(s); "
               f"thick bars join methods not significantly different. Friedman p = {f['pvalue']:.3g} ({sig}).")
        if f.get("note"):
            cap += " " + f["note"]
        figs.append(_figure(plots.cd_diagram(f), "critical difference diagram", cap))
    score, label, higher = pareto_score(rep)
    for col, name in (("trainable_params", "trainable parameters"), ("peak_memory_mb", "peak memory (MB)"),
                      ("train_time_s", "train time (s)"), ("accelerator_max_mb", "GPU memory max (MB)"),
                      ("accelerator_reserved_p99_mb", "GPU memory reserved, 99th percentile (MB)")):
        if col not in b.cost:
            continue
        cost = b.cost[col].reindex(score.index)
        if cost.notna().any():
            figs.append(_figure(plots.pareto_plot(cost, score, cost_label=name, score_label=label,
                                                  higher_is_better=higher),
                                f"Pareto {name}", f"Pareto frontier (red): no other method is both cheaper in "
                                                  f"{name} and better in score."))
    out = "<div class='figs'>" + "".join(figs) + "</div>"
    if rep.friedman is None and rep.friedman_note:
        out = f"<p class='note'>No critical-difference diagram: {_e(rep.friedman_note)}</p>" + out
    return out


def render_board(rep: BoardReport) -> str:
    b = rep.board
    meta = [f"{b.scores.shape[0]} method(s) × {b.scores.shape[1]} task(s)"]
    if rep.n_failed:
        meta.append(f"{rep.n_failed} failed/cancelled run(s) not ranked")
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in b.notes)
    return "".join([
        f"<section id='{_anchor(rep)}'><h2>{_e(board_title(b))}</h2>",
        verdict_html(rep), f"<p class='muted'>{_e(' · '.join(meta))}</p>", notes,
        "<h3>Scores (mean ± std over seeds, n = seeds) and cost</h3>", _scores_table(rep),
        "<h3>Rank per rule</h3><p class='muted'>1 = best; shaded cells are the rule's winners.</p>",
        _ranks_table(rep),
        "<h3>Winners</h3>", _winners(rep),
        "<h3>Agreement between rules (Kendall τ-b)</h3>", _agreement(rep),
        _paired(rep),
        "<h3>Plots</h3>", _figures(rep),
        "<h3>Uncertainty: would the winner change?</h3>", _uncertainty(rep),
        "</section>",
    ])


def render_index(reports: Sequence[BoardReport], *, n_runs: int, n_failed: int, records_dir: Path,
                 sections: Sequence[str] | None = None) -> str:
    """The whole page: header, a link per board, then one section per board (``sections``: the
    boards' :func:`render_board` output when already rendered, e.g. by worker processes)."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f"<a href='#{_anchor(r)}'>{_e(board_title(r.board))}</a>" for r in reports)
    head = (f"Generated {when} from {n_runs} successful run record(s) in {records_dir}"
            + (f"; {n_failed} failed/cancelled run(s) not ranked." if n_failed else "."))
    body = "".join(sections if sections is not None else (render_board(r) for r in reports)) or "<p class='note'>No successful run record yet.</p>"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>peftbench leaderboard</title><style>{_CSS}</style></head><body>"
            f"<h1>peftbench leaderboard</h1><p class='muted'>{_e(head)} Tasks are the voters; each board "
            "ranks methods on the same budget, model and suite.</p>"
            f"<nav>{nav}</nav>{body}</body></html>\n")
