"""Leaderboard figures as self-contained inline SVG (no matplotlib, no JavaScript, no network).

Each figure function returns one ``<svg>`` element as a string, sized in CSS pixels and carrying a
``viewBox`` so the page can scale it down; html.py wraps it in a ``<figure>`` with its alt text.

Hand-written rather than drawn with matplotlib: rendering PNGs through Agg took ~1.7 s per board and
`peftbench leaderboard` renders every board, which alone broke the "regenerate in <= 5 s" bar; building
the markup takes milliseconds. Layout needs text widths before a browser ever sees the text, so they
are estimated from Arial/Liberation Sans glyph widths (rounded up: a wider fallback font still fits).
Every piece of text (method, rule, task names) is escaped; the markup is well-formed XML, so a figure
can also be saved on its own as an .svg file.
"""

from __future__ import annotations

import functools
import html as _html
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["cd_diagram", "pareto_front", "pareto_plot", "rank_heatmap"]

FONT = "Helvetica, Arial, sans-serif"
INK = "#1d2430"          # text and axes, the page's text colour
GRID = "#e4e8ee"
CRIMSON = "#dc143c"      # the Pareto frontier
DOMINATED = "#778899"    # lightslategray: the dominated methods
CD_RED = "#b22222"       # firebrick: the critical-difference bar
ELBOW = "#696969"        # dimgray: the CD diagram's lines from a method to its label

# viridis (the matplotlib colormap, perceptually uniform and colour-blind safe) sampled at 0, 1/8, ..., 1;
# piecewise-linear interpolation between these stops is within a few RGB units of the full table.
VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
_VIRIDIS_RGB = tuple(tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in VIRIDIS)

# Glyph advance widths in em (Arial metrics); anything not listed counts as 0.6 em, East Asian wide 1 em.
_EM: dict[str, float] = {}
for _chars, _w in (("ijl'|", 0.23), (".,:;!", 0.28), (" ftI[]/\\", 0.28), ("r()-`", 0.34), ('"', 0.36),
                   ("*^", 0.39), ("Jcksvxyz", 0.5), ("0123456789abdeghnopqu_$#?+=<>~", 0.56),
                   ("FTZL", 0.61), ("ABEKPSVXY&", 0.67), ("CDHNRUw", 0.72), ("GOQ", 0.78), ("mM", 0.83),
                   ("%", 0.89), ("W@", 0.95)):
    _EM.update(dict.fromkeys(_chars, _w))
_SLACK = 1.06  # widths are estimates: leave room for a fallback font a little wider than Arial


def _text_w(s: str, size: float) -> float:
    """Estimated rendered width in px of `s` at font size `size`."""
    em = 0.0
    for ch in s:
        w = _EM.get(ch)
        if w is None:
            w = 1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.6
        em += w
    return em * size * _SLACK


def _e(s: object) -> str:
    return _html.escape(str(s), quote=True)


def _n(v: float) -> str:
    """A coordinate: one decimal is sub-pixel enough and keeps the markup small."""
    return f"{v:.1f}".removesuffix(".0")


def _svg(width: float, height: float, body: Iterable[str]) -> str:
    w, h = math.ceil(width), math.ceil(height)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'font-family="{FONT}" fill="{INK}">' + "".join(body) + "</svg>")


def _text(x: float, y: float, s: str, *, size: float = 11, anchor: str = "start", fill: str | None = None,
          middle: bool = True, rotate: float | None = None, bold: bool = False) -> str:
    """A text element; `middle` centres it vertically on y (else y is the baseline)."""
    attrs = [f'x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}"']
    if anchor != "start":
        attrs.append(f'text-anchor="{anchor}"')
    if middle:
        attrs.append('dy=".35em"')
    if fill:
        attrs.append(f'fill="{fill}"')
    if bold:
        attrs.append('font-weight="bold"')
    if rotate is not None:
        attrs.append(f'transform="rotate({_n(rotate)} {_n(x)} {_n(y)})"')
    return f"<text {' '.join(attrs)}>{_e(s)}</text>"


def _line(x1: float, y1: float, x2: float, y2: float, *, stroke: str = INK, width: float = 1,
          extra: str = "") -> str:
    return (f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
            f'stroke-width="{_n(width)}"{extra}/>')


# ------------------------------------------------------------------------------------------------
# colours


def _ramp(t: float) -> tuple[int, int, int]:
    """viridis at t in [0, 1] (0 = dark purple, 1 = yellow)."""
    t = min(1.0, max(0.0, t)) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    f = t - i
    a, b = _VIRIDIS_RGB[i], _VIRIDIS_RGB[i + 1]
    return round(a[0] + f * (b[0] - a[0])), round(a[1] + f * (b[1] - a[1])), round(a[2] + f * (b[2] - a[2]))


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@functools.lru_cache(maxsize=4096)
def _rank_colour(v: float, vmax: float) -> tuple[int, int, int]:
    """Reversed viridis over ranks 1..vmax: rank 1 (best) yellow, rank vmax dark purple."""
    return _ramp(1.0 - (v - 1.0) / (vmax - 1.0))


@functools.lru_cache(maxsize=1024)
def _ink_on(rgb: tuple[int, int, int]) -> str:
    """Black or white, whichever has the higher WCAG contrast ratio against the background `rgb`."""
    lin = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#ffffff"


# ------------------------------------------------------------------------------------------------
# rank heatmap


def rank_heatmap(positions: pd.DataFrame) -> str:
    """Methods × rules, cell = rank position (1 = best); NaN (rule skipped/unranked) left blank.

    One row per method in the frame's order, one column per rule, rule names rotated 45°, the rank
    written in each cell in black or white (whichever contrasts more), and a colour bar."""
    n_m, n_r = positions.shape
    data = positions.to_numpy(dtype=float).tolist()
    vmax = float(max(2, n_m))
    rows, cols = [str(i) for i in positions.index], [str(c) for c in positions.columns]
    cw, ch, fs = 44.0, 24.0, 12.0
    diag = math.sqrt(0.5)  # a label rotated 45° spans width·cos45 across and down
    col_w = [_text_w(c, fs) * diag for c in cols]
    row_w = max((_text_w(r, fs) for r in rows), default=0.0)
    left = max(row_w + 16, 40.0, *(w - (j + 0.5) * cw + 10 for j, w in enumerate(col_w)))
    top = 40.0
    gw, gh = n_r * cw, max(n_m, 1) * ch
    bar_x, bar_w = left + gw + 20, 14.0
    tick_w = _text_w(str(int(vmax)), 11)
    title = "rank per rule (1 = best)"
    width = max(bar_x + bar_w + 8 + tick_w + 12, left + _text_w(title, 13) + 12)
    height = top + gh + max(col_w, default=0.0) + 24

    out = [_text(left + gw / 2, 20, title, size=13, anchor="middle")]
    cells = ['<g class="cells" stroke="#ffffff" stroke-width="1">']
    nums = ['<g class="ranks" font-size="11" text-anchor="middle">']
    for i in range(n_m):
        y = top + i * ch
        for j in range(n_r):
            v = data[i][j]
            if not math.isfinite(v):
                continue
            x = left + j * cw
            rgb = _rank_colour(v, vmax)
            cells.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(cw)}" height="{_n(ch)}" '
                         f'fill="{_hex(rgb)}"/>')
            nums.append(f'<text x="{_n(x + cw / 2)}" y="{_n(y + ch / 2)}" dy=".35em" fill="{_ink_on(rgb)}">'
                        f"{_e(f'{v:g}')}</text>")
    out += [*cells, "</g>", *nums, "</g>"]
    out.append(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(gw)}" height="{_n(gh)}" fill="none" '
               f'stroke="{INK}" stroke-width="1"/>')
    out.append('<g class="methods">')
    out += [_text(left - 8, top + (i + 0.5) * ch, r, size=fs, anchor="end") for i, r in enumerate(rows)]
    out.append('</g><g class="rules">')
    ly = top + gh + 8
    out += [_text(left + (j + 0.5) * cw, ly, c, size=fs, anchor="end", rotate=-45)
            for j, c in enumerate(cols)]
    out.append("</g>")
    out.append(_colour_bar(bar_x, top, bar_w, gh, vmax))
    return _svg(width, height, out)


def _colour_bar(x: float, y: float, w: float, h: float, vmax: float) -> str:
    """Vertical bar, rank 1 at the top: one band per integer rank (ranks are discrete), or 64 bands
    sampling the ramp when there are more ranks than that."""
    n = int(vmax) if vmax <= 64 else 64
    bh = h / n
    out = ['<g class="colour-bar"><g shape-rendering="crispEdges">']
    for b in range(n):
        v = 1 + (vmax - 1) * b / (n - 1)
        out.append(f'<rect x="{_n(x)}" y="{_n(y + b * bh)}" width="{_n(w)}" height="{_n(bh + 0.5)}" '
                   f'fill="{_hex(_rank_colour(v, vmax))}"/>')
    out.append("</g>")
    out.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="none" stroke="{INK}"/>')
    discrete = vmax <= 64

    def at(v: float) -> float:
        return y + ((v - 0.5) / vmax * h if discrete else (v - 1) / (vmax - 1) * h)

    step = _nice_step(vmax - 1, 6) if vmax > 7 else 1.0
    step = max(1.0, round(step))
    ticks = sorted({1.0, vmax, *np.arange(step, vmax, step)})
    if len(ticks) > 2 and ticks[-1] - ticks[-2] < step / 2:  # vmax too close to the last round tick
        ticks.pop(-2)
    for v in ticks:
        ty = at(v)
        out.append(_line(x + w, ty, x + w + 4, ty))
        out.append(_text(x + w + 7, ty, f"{v:g}", size=11))
    out.append("</g>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# critical-difference diagram


def cd_diagram(result: Mapping) -> str:
    """Critical-difference diagram (Demšar, JMLR 2006) from :func:`stats.friedman_nemenyi`'s output.

    Average ranks on an axis (1 = best, on the left), each method joined to its label by an elbow
    line, the CD as a bar of that length, and a thick bar under every group whose average ranks
    differ by less than the CD (not significantly different)."""
    avg = {str(s): float(v) for s, v in dict(result["avg_ranks"]).items()}
    names = sorted(avg, key=lambda s: avg[s])
    k = len(names)
    cd = float(result["cd"])
    groups: Sequence[Sequence[str]] = result.get("groups") or []
    half = math.ceil(k / 2)
    fs = 12.0
    left_labels = [f"{s} ({avg[s]:.2f})" for s in names[:half]]
    right_labels = [f"({avg[s]:.2f}) {s}" for s in names[half:]]
    lw = max((_text_w(t, fs) for t in left_labels), default=0.0)
    rw = max((_text_w(t, fs) for t in right_labels), default=0.0)
    lo, hi = 1, max(k, 2)
    axis_len = max(420.0, 24.0 * (hi - lo))  # 24 px per rank still fits a two-digit tick label
    x0 = 12 + lw + 14 + 10
    unit = axis_len / (hi - lo)

    def x(r: float) -> float:
        return x0 + (r - lo) * unit

    axis_y, row_h = 62.0, 20.0
    gy0, g_step = axis_y + 12, 8.0
    label_top = gy0 + g_step * len(groups) + 12
    rows = max(half, k - half)
    width = x(hi) + 10 + 14 + rw + 12
    height = label_top + row_h * max(rows - 1, 0) + 16

    out: list[str] = []
    if math.isfinite(cd) and cd > 0:  # the CD bar above the axis, from rank 1, clipped at the axis end
        cd_end = min(float(hi), lo + cd)
        out.append('<g class="cd">')
        out.append(_line(x(lo), 24, x(cd_end), 24, stroke=CD_RED, width=2))
        out += [_line(xx, 19, xx, 29, stroke=CD_RED) for xx in (x(lo), x(cd_end))]
        out.append(_text((x(lo) + x(cd_end)) / 2, 14, f"CD = {cd:.2f}", size=11, anchor="middle",
                         fill=CD_RED))
        out.append("</g>")
    # elbows first, so that the axis and the dots are drawn over them
    elbows, labels = [], ['<g class="labels">']
    for i, s in enumerate(names):
        if i < half:
            y = label_top + row_h * i
            elbows.append(f"M{_n(x(avg[s]))} {_n(axis_y)}V{_n(y)}H{_n(x(lo) - 10)}")
            labels.append(_text(x(lo) - 14, y, left_labels[i], size=fs, anchor="end"))
        else:
            y = label_top + row_h * (k - 1 - i)
            elbows.append(f"M{_n(x(avg[s]))} {_n(axis_y)}V{_n(y)}H{_n(x(hi) + 10)}")
            labels.append(_text(x(hi) + 14, y, right_labels[i - half], size=fs))
    out += [*labels, "</g>"]
    out.append(f'<path class="elbows" d="{"".join(elbows)}" fill="none" stroke="{ELBOW}" '
               'stroke-width="1"/>')
    out.append(_line(x(lo), axis_y, x(hi), axis_y, width=1.2))
    ticks = []
    for t in range(lo, hi + 1):
        ticks.append(f"M{_n(x(t))} {_n(axis_y)}V{_n(axis_y - 7)}")
        out.append(_text(x(t), axis_y - 11, str(t), size=11, anchor="middle", middle=False))
    ticks += [f"M{_n(x(t + 0.5))} {_n(axis_y)}V{_n(axis_y - 4)}" for t in range(lo, hi)]
    out.append(f'<path d="{"".join(ticks)}" stroke="{INK}" stroke-width="1"/>')
    out.append('<g class="groups">')
    for gi, g in enumerate(groups):
        xs = [avg[str(s)] for s in g if str(s) in avg]
        if xs:
            gy = gy0 + g_step * gi
            out.append(_line(x(min(xs) - 0.03), gy, x(max(xs) + 0.03), gy, width=5,
                             extra=' stroke-linecap="round"'))
    out.append('</g><g class="methods">')
    out += [f'<circle cx="{_n(x(avg[s]))}" cy="{_n(axis_y)}" r="3"/>' for s in names]
    out.append("</g>")
    return _svg(width, height, out)


# ------------------------------------------------------------------------------------------------
# Pareto plots


def pareto_front(cost: pd.Series, score: pd.Series, *, higher_is_better: bool = True) -> list[str]:
    """Methods no other method dominates (cost ≤ and score at least as good, one strictly better).

    Methods with a missing cost or score are not candidates."""
    ok = cost.notna() & score.notna()
    s = score[ok].to_numpy(dtype=float)
    mask = _front_mask(cost[ok].to_numpy(dtype=float), s if higher_is_better else -s)
    return [str(m) for m, f in zip(cost[ok].index, mask) if f]


def _front_mask(c: np.ndarray, s: np.ndarray) -> np.ndarray:
    """:func:`pareto_front` on arrays (s oriented higher-is-better, no NaN), vectorised over all pairs:
    the plot calls it directly, three plots per board."""
    ci, cj, si, sj = c[:, None], c[None, :], s[:, None], s[None, :]  # [i, j]: does j dominate i?
    return ~((cj <= ci) & (sj >= si) & ((cj < ci) | (sj > si))).any(axis=1)


def _nice_step(span: float, n: int) -> float:
    """A 1-2-2.5-5 × 10^k step giving about `n` intervals over `span`."""
    raw = span / max(n, 1)
    if not raw > 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw * (1 - 1e-9):
            return m * mag
    return 10 * mag


def _linear_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    step = _nice_step(hi - lo, 5)
    d = next((d for d in range(10) if abs(round(step, d) - step) <= 1e-9 * step), 9)
    big = max(abs(lo), abs(hi)) >= 1e6
    out = []
    t = math.ceil(lo / step - 1e-9) * step
    while t <= hi + 1e-9 * step:
        v = round(t, d) + 0.0  # + 0.0 turns -0.0 into 0.0
        out.append((v, f"{v:.3g}" if big else f"{v:.{d}f}"))
        t += step
    return out


def _power(mant: int, e: int, *, plain: bool) -> str:
    """SVG text content for mant·10^e: plain digits, or 10 with a superscript exponent."""
    if plain:
        return _e(f"{mant * 10.0 ** e:g}")
    head = "10" if mant == 1 else f"{mant}×10"
    return f'{head}<tspan dy="-5" font-size="8">{e}</tspan>'


def _log_ticks(lo: float, hi: float) -> tuple[list[tuple[float, str]], list[float]]:
    """Labelled and unlabelled ticks on a log10 axis spanning 10^lo .. 10^hi (arguments in decades).

    Decades are labelled 10^e (every other one, or sparser, past 7); when fewer than two decades fall
    in the range, 2× and 5× are labelled too, and short numbers are then written out plainly."""
    decades = [e for e in range(math.floor(lo), math.ceil(hi) + 1) if lo - 1e-9 <= e <= hi + 1e-9]
    every = max(1, math.ceil(len(decades) / 7))
    labelled = [(float(e), 1, e) for e in decades if e % every == 0]
    mantissas = (2, 5) if len(decades) < 2 else ()
    minor = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in range(2, 10):
            p = e + math.log10(m)
            if lo <= p <= hi:
                if m in mantissas:
                    labelled.append((p, m, e))
                else:
                    minor.append(p)
    plain = bool(mantissas) and all(-2 <= e <= 3 for _, _, e in labelled)
    return sorted((p, _power(m, e, plain=plain)) for p, m, e in labelled), minor


# Where a point's label may go, in order of preference: the text box's left edge as a multiple of the
# gap g (marker radius + 2) and the text width w, its top edge as a multiple of g and the text height h
# (offsets from the point), and the text-anchor that puts the text there.
_SPOTS = (  # (gap·, width·, extra px) for x; (gap·, height·, extra px) for y; anchor
    ((1, 0, 0), (0, -1, -1), "start"), ((1, 0, 0), (0, 0, 1), "start"),            # right, above / below
    ((-1, -1, 0), (0, -1, -1), "end"), ((-1, -1, 0), (0, 0, 1), "end"),            # left, above / below
    ((1, 0, 1), (0, -0.5, 0), "start"), ((-1, -1, -1), (0, -0.5, 0), "end"),       # right / left, level
    ((0, -0.5, 0), (-1, -1, 0), "middle"), ((0, -0.5, 0), (1, 0, 0), "middle"),    # over / under
)


def _crowding(x0: float, y0: float, w: float, h: float,
              boxes: Iterable[tuple[float, float, float, float]]) -> float:
    """Total area the box (x0, y0, w, h) shares with `boxes` (x0, y0, x1, y1). Plain Python: for a few
    dozen boxes it beats numpy's per-call overhead, and most labels take their first spot."""
    x1, y1 = x0 + w, y0 + h
    total = 0.0
    for bx0, by0, bx1, by1 in boxes:
        if bx0 < x1 and x0 < bx1 and by0 < y1 and y0 < by1:
            total += (min(x1, bx1) - max(x0, bx0)) * (min(y1, by1) - max(y0, by0))
    return total


def _place_labels(points: list[tuple[float, float, str, float]], box: tuple[float, float, float, float],
                  size: float) -> list[str]:
    """Greedy label placement: try the spots around each point in turn, keep the first free one (else
    the least crowded), so that labels overlap neither each other nor the markers nor leave the plot.

    `points`: (px, py, label, marker radius) in placement priority order."""
    h = size * 1.1
    taken = [(px - r, py - r, px + r, py + r) for px, py, _, r in points]  # markers, then placed labels
    out = []
    for px, py, label, r in points:
        w, g = _text_w(label, size), r + 2
        best = None
        for (gx, wx, ex), (gy, hy, ey), anchor in _SPOTS:
            x0, y0 = px + gx * g + wx * w + ex, py + gy * g + hy * h + ey
            outside = w * h - _crowding(x0, y0, w, h, [box])
            cost = _crowding(x0, y0, w, h, taken) + 3 * outside
            if best is None or cost < best[0] - 1e-9:
                best = (cost, x0, y0, anchor)
                if cost <= 1e-6:
                    break
        _, lx, ly, anchor = best
        taken.append((lx, ly, lx + w, ly + h))
        tx = {"start": lx, "end": lx + w, "middle": lx + w / 2}[anchor]
        out.append(_text(tx, ly + h / 2, label, size=size, anchor=anchor))
    return out


def pareto_plot(cost: pd.Series, score: pd.Series, *, cost_label: str, score_label: str,
                higher_is_better: bool = True) -> str:
    """Score vs one cost per method; the Pareto frontier highlighted and joined by a step line.

    The x axis is logarithmic when every cost is positive and they span at least a factor of 10
    (trainable parameters do: 10^4 for LoRA vs 10^8 for full fine-tuning). The best score is at the
    top whatever the score's direction."""
    c_all = pd.to_numeric(cost, errors="coerce").astype(float)
    s_all = pd.to_numeric(score, errors="coerce").astype(float).reindex(c_all.index)
    ok = np.isfinite(c_all) & np.isfinite(s_all)
    c, s = c_all[ok], s_all[ok]
    c.index = s.index = c.index.map(str)  # pareto_front names methods by str
    mask = _front_mask(c.to_numpy(), s.to_numpy() if higher_is_better else -s.to_numpy())
    front = [m for m, f in zip(c.index, mask, strict=True) if f]
    log_x = bool(len(c)) and bool((c > 0).all()) and float(c.max()) >= 10 * float(c.min())
    xv = np.log10(c.to_numpy()) if log_x else c.to_numpy()
    yv = s.to_numpy()

    def limits(v: np.ndarray, margin: float) -> tuple[float, float]:
        if not len(v):
            return 0.0, 1.0
        lo, hi = float(v.min()), float(v.max())
        span = hi - lo if hi > lo else (abs(lo) * 0.1 or 1.0)
        return lo - margin * span, hi + margin * span

    xlo, xhi = limits(xv, 0.12)  # room for the labels of the extreme points
    ylo, yhi = limits(yv, 0.1)
    fs = 11.0
    if log_x:
        xticks, xminor = _log_ticks(xlo, xhi)
    else:
        xticks, xminor = _linear_ticks(xlo, xhi), []
    yticks = _linear_ticks(ylo, yhi)
    ytick_w = max((_text_w(lab, fs) for _, lab in yticks), default=0.0)
    x_label = cost_label + (" (log scale)" if log_x else "")
    dropped = int((~ok).sum())
    title = f"score vs {cost_label}" + (f" ({dropped} method(s) without data left out)" if dropped else "")
    pw = 430.0
    ph = min(560.0, max(250.0, 14.0 * len(c) + 40, _text_w(score_label, fs) + 10))
    left, top = 20 + ytick_w + 10, 56.0
    width = max(left + pw + 16, _text_w(title, 12) + 24, _text_w(x_label, fs) + left + 16)
    pw = width - left - 16
    height = top + ph + 48

    def px(v: float) -> float:
        return left + (v - xlo) / (xhi - xlo) * pw

    def py(v: float) -> float:
        frac = (yhi - v) / (yhi - ylo) if higher_is_better else (v - ylo) / (yhi - ylo)
        return top + frac * ph

    out = [_text(left + pw / 2, 16, title, size=12, anchor="middle")]
    grid, tick = [], []
    bottom = top + ph
    for v, lab in xticks:
        gx = px(v)
        grid.append(f"M{_n(gx)} {_n(top)}V{_n(bottom)}")
        tick.append(f"M{_n(gx)} {_n(bottom)}v5")
        out.append(f'<text x="{_n(gx)}" y="{_n(bottom + 19)}" font-size="{_n(fs)}" text-anchor="middle">'
                   f"{lab}</text>")
    tick += [f"M{_n(px(v))} {_n(bottom)}v3" for v in xminor]
    for v, lab in yticks:
        gy = py(v)
        grid.append(f"M{_n(left)} {_n(gy)}H{_n(left + pw)}")
        tick.append(f"M{_n(left)} {_n(gy)}h-5")
        out.append(_text(left - 8, gy, lab, size=fs, anchor="end"))
    out.insert(0, f'<path d="{"".join(grid)}" stroke="{GRID}" stroke-width="1"/>')
    out.append(f'<path d="{"".join(tick)}" stroke="{INK}" stroke-width="1"/>')
    out.append(f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(pw)}" height="{_n(ph)}" fill="none" '
               f'stroke="{INK}" stroke-width="1"/>')
    out.append(_text(left + pw / 2, bottom + 38, x_label, size=fs, anchor="middle"))
    out.append(_text(12, top + ph / 2, score_label, size=fs, anchor="middle", rotate=-90))
    # legend, above the plot area so it never hides a point
    out.append(f'<circle cx="{_n(left + 6)}" cy="38" r="4" fill="{DOMINATED}"/>')
    out.append(_text(left + 14, 38, "dominated", size=fs))
    lx = left + 14 + _text_w("dominated", fs) + 16
    out.append(f'<circle cx="{_n(lx + 6)}" cy="38" r="5" fill="{CRIMSON}" stroke="#000000" '
               'stroke-width=".6"/>')
    out.append(_text(lx + 14, 38, "Pareto frontier", size=fs))

    pos = {m: (px(x), py(y)) for m, x, y in zip(c.index, xv, yv, strict=True)}
    cost_of = dict(zip(c.index, c.tolist(), strict=True))
    score_of = dict(zip(s.index, s.tolist(), strict=True))
    on_front = set(front)
    chain = sorted(front, key=cost_of.__getitem__)
    if len(chain) > 1:  # a "post" step line: a frontier score holds from its cost up to the next one's
        x_first, y_first = pos[chain[0]]
        d = [f"M{_n(x_first)} {_n(y_first)}"]
        d += [f"H{_n(pos[m][0])}V{_n(pos[m][1])}" for m in chain[1:]]
        out.append(f'<path class="frontier-line" d="{"".join(d)}" fill="none" stroke="{CRIMSON}" '
                   'stroke-width="1.3" stroke-opacity=".75"/>')

    def dot(m: str, r: float) -> str:  # a tooltip names the point: labels in a crowd can be ambiguous
        return (f'<circle cx="{_n(pos[m][0])}" cy="{_n(pos[m][1])}" r="{_n(r)}"><title>{_e(m)}: '
                f"{_e(cost_label)} {cost_of[m]:.4g}, score {score_of[m]:.4g}</title></circle>")

    out.append(f'<g class="dominated" fill="{DOMINATED}">')
    out += [dot(m, 4) for m in pos if m not in on_front]
    out.append(f'</g><g class="frontier" fill="{CRIMSON}" stroke="#000000" stroke-width=".6">')
    out += [dot(m, 5) for m in chain]
    out.append('</g><g class="labels">')
    order = chain + [m for m in pos if m not in on_front]
    out += _place_labels([(*pos[m], m, 5.0 if m in on_front else 4.0) for m in order],
                         (left, top, left + pw, bottom), 10.0)
    out.append("</g>")
    return _svg(width, height, out)

