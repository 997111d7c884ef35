"""The leaderboard page really renders: headless Chromium screenshots index.html, and the screenshot
shows the tables and the plots (not a blank page, nor inline SVG figures that failed to draw).

Needs Debian's `chromium` (the Makefile installs it for `make test`); skipped, saying so, without it.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.leaderboard import report
from tests.harness.leaderboard.test_report import board_a_records, board_b_records, write_records

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    """Pixels within `tol` (per channel, 0-255) of a colour."""
    return int((np.abs(img[..., :3].astype(int) - np.array(rgb)) <= tol).all(axis=-1).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install -y chromium)")
def test_index_html_renders_in_chromium(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    write_records(results, board_a_records() + board_b_records())
    assert report.main(["--results-dir", str(results), "--out", str(out), "--bootstrap", "20", "--no-wandb",
                        "--quiet"]) == 0
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
           (out / "index.html").as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), f"no screenshot (exit {res.returncode}): {res.stderr[-2000:]}"

    import matplotlib.image  # only to read the PNG: the figures themselves are SVG, not matplotlib

    img = matplotlib.image.imread(shot)  # float RGBA in [0, 1]
    assert img.shape[:2] == (3000, 1400)
    rgb = np.round(img[..., :3] * 255).astype(np.uint8)
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours = np.unique(packed)  # 1-D unique: unique(axis=0) on 4M rows takes seconds
    assert len(colours) > 200, f"only {len(colours)} distinct colours: blank page?"
    assert (rgb.min(axis=-1) < 200).mean() > 0.03, "almost nothing but background on the page"
    # the plots are drawn: viridis ends (rank heatmap), the Pareto frontier's crimson and its dominated
    # points' slate grey, the critical-difference bar's firebrick
    assert _near(rgb, (253, 231, 37)) > 500 and _near(rgb, (68, 1, 84)) > 500
    assert _near(rgb, (220, 20, 60), tol=20) > 50
    assert _near(rgb, (119, 136, 153)) > 50 and _near(rgb, (178, 34, 34)) > 50
    # the tables: the green of the winners' cells and the header blue-grey are on the page
    assert _near(rgb, (216, 240, 210), tol=3) > 500 and _near(rgb, (233, 238, 244), tol=3) > 500
    # the verdict box (its pale blue) is drawn, and above the first table's header row
    verdict_rows = np.flatnonzero((np.abs(rgb.astype(int) - (234, 242, 251)).max(axis=-1) <= 1).sum(axis=1) > 200)
    header_rows = np.flatnonzero((np.abs(rgb.astype(int) - (233, 238, 244)).max(axis=-1) <= 1).sum(axis=1) > 200)
    assert verdict_rows.size and header_rows.size
    assert verdict_rows[0] < header_rows[0], (verdict_rows[0], header_rows[0])
