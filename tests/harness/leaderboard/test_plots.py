"""The leaderboard figures are well-formed, self-contained SVG that show what each figure promises: a
cell per finite rank, a label per method, a point per method with data, the frontier in crimson, and
every name escaped."""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard import plots
from harness.leaderboard.html import _figure

SVG = "{http://www.w3.org/2000/svg}"
NASTY = '<b>&"q"'  # a method name that breaks unescaped markup


def parse(svg: str) -> ET.Element:
    """The figure as XML, checked to be one self-contained, scalable <svg> element."""
    root = ET.fromstring(svg)  # raises on malformed markup (e.g. an unescaped name)
    assert root.tag == f"{SVG}svg"
    w, h = root.get("width"), root.get("height")
    assert float(w) > 0 and float(h) > 0 and root.get("viewBox") == f"0 0 {w} {h}"
    assert "<script" not in svg and "href" not in svg and svg.count("http") == 1  # the xmlns only
    return root


def group(root: ET.Element, cls: str) -> ET.Element:
    found = [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]
    assert len(found) == 1, f"{len(found)} <g class='{cls}'>"
    return found[0]


def texts(el: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in el.iter(f"{SVG}text")]


def children(el: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in el if c.tag == f"{SVG}{tag}"]


# ------------------------------------------------------------------------------------------------
# rank heatmap


@pytest.fixture()
def positions() -> pd.DataFrame:
    return pd.DataFrame({"mean": [1, 2, 3], "borda": [2, 1, np.nan], "kemeny": [np.nan] * 3},
                        index=["lora", NASTY, "ia3"])


def test_heatmap_one_cell_per_finite_rank(positions: pd.DataFrame) -> None:
    svg = plots.rank_heatmap(positions)
    root = parse(svg)
    cells = children(group(root, "cells"), "rect")
    assert len(cells) == int(positions.notna().sum().sum()) == 5
    assert texts(group(root, "ranks")) == ["1", "2", "2", "1", "3"]  # row by row; NaN cells blank
    assert texts(group(root, "methods")) == ["lora", NASTY, "ia3"]
    assert texts(group(root, "rules")) == ["mean", "borda", "kemeny"]
    assert "rank per rule (1 = best)" in texts(root)
    assert "&lt;b&gt;&amp;&quot;q&quot;" in svg and NASTY not in svg


def test_heatmap_colours_and_contrast(positions: pd.DataFrame) -> None:
    root = parse(plots.rank_heatmap(positions))
    fill = {"".join(t.itertext()): t.get("fill") for t in group(root, "ranks")}
    cells = {c.get("fill") for c in children(group(root, "cells"), "rect")}
    # reversed viridis: rank 1 = the yellow end, the worst possible rank (3 methods) = the purple end
    assert {"#fde725", "#440154"} <= cells
    assert fill["1"] == "#000000" and fill["3"] == "#ffffff"  # dark text on yellow, light on purple
    bands = children(group(root, "colour-bar")[0], "rect")
    assert [b.get("fill") for b in bands] == ["#fde725", plots._hex(plots._ramp(0.5)), "#440154"]


def test_heatmap_contrast_is_readable_everywhere() -> None:
    def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
        def lum(rgb: tuple[int, int, int]) -> float:
            lin = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
            return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
        hi, lo = sorted((lum(a), lum(b)), reverse=True)
        return (hi + 0.05) / (lo + 0.05)

    for t in np.linspace(0, 1, 101):
        bg = plots._ramp(float(t))
        ink = (0, 0, 0) if plots._ink_on(bg) == "#000000" else (255, 255, 255)
        assert contrast(bg, ink) >= 4.5  # WCAG AA for normal text


def test_heatmap_scales_with_methods_and_rules() -> None:
    def size(n_m: int, n_r: int) -> tuple[float, float]:
        df = pd.DataFrame(np.tile(np.arange(1, n_m + 1), (n_r, 1)).T, index=[f"m{i}" for i in range(n_m)],
                          columns=[f"rule{j}" for j in range(n_r)])
        root = parse(plots.rank_heatmap(df))
        return float(root.get("width")), float(root.get("height"))

    (w1, h1), (w2, h2) = size(4, 3), size(20, 12)
    assert w2 > w1 + 8 * 30 and h2 > h1 + 16 * 20


# ------------------------------------------------------------------------------------------------
# critical-difference diagram


@pytest.fixture()
def friedman() -> dict:
    return {"avg_ranks": {"e": 5.0, NASTY: 1.5, "b": 2.0, "c": 3.25, "d": 3.5}, "cd": 2.1,
            "groups": [[NASTY, "b", "c", "d"], ["c", "d", "e"]], "alpha": 0.05, "pvalue": 0.01}


def test_cd_diagram_labels_groups_and_cd(friedman: dict) -> None:
    svg = plots.cd_diagram(friedman)
    root = parse(svg)
    labels = list(group(root, "labels"))
    # one label per method, best first; the better half on the left (anchored at their end), as usual
    assert [("".join(t.itertext()), t.get("text-anchor")) for t in labels] == [
        (f"{NASTY} (1.50)", "end"), ("b (2.00)", "end"), ("c (3.25)", "end"),
        ("(3.50) d", None), ("(5.00) e", None)]
    dots = children(group(root, "methods"), "circle")
    xs = [float(c.get("cx")) for c in dots]
    assert len(dots) == 5 and xs == sorted(xs)
    unit = (xs[-1] - xs[0]) / (5.0 - 1.5)  # px per rank
    bars = children(group(root, "groups"), "line")
    assert len(bars) == 2
    spans = [(float(b.get("x2")) - float(b.get("x1"))) / unit for b in bars]
    assert spans == pytest.approx([3.5 - 1.5 + 0.06, 5.0 - 3.25 + 0.06], abs=0.05)
    cd = group(root, "cd")
    assert texts(cd) == ["CD = 2.10"]
    bar = children(cd, "line")[0]
    assert (float(bar.get("x2")) - float(bar.get("x1"))) / unit == pytest.approx(2.1, abs=0.05)
    assert [str(t) for t in range(1, 6)] == [s for s in texts(root) if s.isdigit()]  # the axis ticks
    assert NASTY not in svg


def test_cd_diagram_without_groups_and_odd_count() -> None:
    root = parse(plots.cd_diagram({"avg_ranks": {"a": 1.0, "b": 2.0, "c": 3.0}, "cd": 5.0, "groups": []}))
    assert len(list(group(root, "labels"))) == 3
    assert list(group(root, "groups")) == []
    # a CD longer than the axis is clipped to it but still says its length
    assert texts(group(root, "cd")) == ["CD = 5.00"]


# ------------------------------------------------------------------------------------------------
# Pareto plots

COST = pd.Series({"lora": 3.3e5, "dora": 3.2e5, "full": 2.2e7, "ia3": 2e4, NASTY: 1e6, "nodata": np.nan})
SCORE = pd.Series({"lora": 0.84, "dora": 0.85, "full": 0.86, "ia3": 0.70, NASTY: 0.60, "nodata": 0.99})


def test_pareto_plot_points_frontier_and_labels() -> None:
    svg = plots.pareto_plot(COST, SCORE, cost_label="trainable parameters", score_label="accuracy")
    root = parse(svg)
    front = plots.pareto_front(COST, SCORE)
    assert sorted(front) == ["dora", "full", "ia3"]
    frontier, dominated = group(root, "frontier"), group(root, "dominated")
    assert frontier.get("fill") == "#dc143c"  # crimson
    assert len(children(frontier, "circle")) == 3 and len(children(dominated, "circle")) == 2
    line = [p for p in root.iter(f"{SVG}path") if p.get("class") == "frontier-line"]
    assert len(line) == 1 and line[0].get("stroke") == "#dc143c"
    tips = sorted("".join(c.itertext()).split(":")[0] for c in root.iter(f"{SVG}title"))
    assert tips == sorted(["lora", "dora", "full", "ia3", NASTY])  # one point per method with data
    assert sorted(texts(group(root, "labels"))) == tips
    all_text = texts(root)
    assert "trainable parameters (log scale)" in all_text and "accuracy" in all_text
    assert "score vs trainable parameters (1 method(s) without data left out)" in all_text
    assert NASTY not in svg
    # best score at the top: the frontier's costliest point (full, 0.86) is higher than ia3 (0.70)
    cy = {"".join(c.itertext()).split(":")[0]: float(c.get("cy")) for c in children(frontier, "circle")}
    assert cy["full"] < cy["dora"] < cy["ia3"]


def test_pareto_plot_lower_is_better_puts_the_best_on_top() -> None:
    root = parse(plots.pareto_plot(pd.Series({"a": 10.0, "b": 20.0, "c": 30.0}),
                                   pd.Series({"a": 3.0, "b": 2.0, "c": 1.0}), cost_label="time (s)",
                                   score_label="mean rank", higher_is_better=False))
    cy = {"".join(c.itertext()).split(":")[0]: float(c.get("cy")) for c in root.iter(f"{SVG}circle")
          if len(c)}
    assert cy["c"] < cy["b"] < cy["a"]
    assert "time (s)" in texts(root)  # a factor of 3: linear axis
    assert len(children(group(root, "frontier"), "circle")) == 3


def test_pareto_plot_without_data_still_draws() -> None:
    root = parse(plots.pareto_plot(pd.Series({"a": np.nan}), pd.Series({"a": 1.0}), cost_label="x",
                                   score_label="y"))
    assert list(group(root, "frontier")) == [] and list(group(root, "dominated")) == []


def test_pareto_labels_do_not_overlap() -> None:
    rng = np.random.default_rng(0)
    names = [f"method{i:02d}" for i in range(20)]
    cost = pd.Series(10 ** rng.uniform(4, 7.5, 20), index=names)
    score = pd.Series(rng.uniform(1, 20, 20), index=names)
    root = parse(plots.pareto_plot(cost, score, cost_label="c", score_label="s", higher_is_better=False))
    boxes = []
    for t in group(root, "labels"):
        w, x = plots._text_w(t.text, 10), float(t.get("x"))
        x0 = {"start": x, "end": x - w, "middle": x - w / 2}[t.get("text-anchor") or "start"]
        boxes.append((x0, float(t.get("y")) - 5.5, x0 + w, float(t.get("y")) + 5.5))
    clashes = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if plots._crowding(a[0], a[1], a[2] - a[0], a[3] - a[1], [b]) > 1]
    assert len(boxes) == 20 and not clashes


@pytest.mark.parametrize("higher", [True, False])
def test_vectorised_frontier_matches_the_dominance_definition(higher: bool) -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        idx = [f"m{i}" for i in range(n)]
        c = pd.Series(rng.integers(0, 5, n).astype(float), index=idx)  # small ranges: many ties
        s = pd.Series(rng.integers(0, 5, n).astype(float), index=idx)
        better = (lambda a, b: a > b) if higher else (lambda a, b: a < b)
        expected = [m for m in idx if not any(  # m is dominated: cheaper-or-equal and at least as good
            c[o] <= c[m] and (s[o] == s[m] or better(s[o], s[m])) and (c[o] < c[m] or better(s[o], s[m]))
            for o in idx)]
        mask = plots._front_mask(c.to_numpy(), s.to_numpy() if higher else -s.to_numpy())
        got = [m for m, f in zip(idx, mask, strict=True) if f]
        assert got == expected
        assert plots.pareto_front(c, s, higher_is_better=higher) == expected


def test_log_axis_ticks() -> None:
    labelled, minor = plots._log_ticks(math.log10(5e3), math.log10(4e7))
    assert [p for p, _ in labelled] == [4.0, 5.0, 6.0, 7.0] and len(minor) > 20
    labelled, _ = plots._log_ticks(math.log10(20), math.log10(300))  # under two decades: 2× and 5× too
    assert [lab for _, lab in labelled] == ["20", "50", "100", "200"]


# ------------------------------------------------------------------------------------------------
# the page's <figure>


def test_figure_embeds_the_svg_with_its_alt_text(positions: pd.DataFrame) -> None:
    fig = _figure(plots.rank_heatmap(positions), 'rank "heatmap" <1>', "a caption & more")
    assert fig.startswith("<figure><svg ")
    assert fig.endswith("</svg><figcaption>a caption &amp; more</figcaption></figure>")
    root = parse(fig[len("<figure>"):fig.index("<figcaption>")])
    assert root.get("role") == "img" and root.get("aria-label") == 'rank "heatmap" <1>'
    assert root[0].tag == f"{SVG}title" and root[0].text == 'rank "heatmap" <1>'
    with pytest.raises(ValueError, match="expected an <svg>"):
        _figure("data:image/png;base64,AAAA", "x", "y")
