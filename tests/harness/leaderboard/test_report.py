"""`peftbench leaderboard` end to end on real-schema record files written to a temporary results dir.

Records are built with the same run/train/eval/meta blocks harness/dispatch.py writes and stored with
the real atomic writer, so the leaderboard reads exactly what a sweep would leave behind.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd
import pytest

from harness.leaderboard import rank_cli, report
from harness.leaderboard.plots import pareto_front
from harness.leaderboard.rules import RULES, rank_all
from harness.records import SCHEMA_VERSION, write_record

SMOKE = {"name": "smoke", "steps": 20, "seeds": 3, "batch_size": 8}


def make_record(method: str, task: str, seed: int, value: float | None, *, metric: str = "accuracy",
                direction: str = "max", model: str = "minilm-l6", budget: dict[str, Any] = SMOKE,
                trainable: int = 10_000, memory_mb: float = 900.0, train_time_s: float = 30.0,
                status: str = "success") -> dict[str, Any]:
    """A record as harness/dispatch.execute writes it (run_block / train_block / eval_block / meta_block)."""
    suite = task.split("/")[0]
    semantic = {"method": {"name": method, "params": {}}, "model": {"name": model},
                "task": {"name": task, "suite": suite, "version": 1,
                         "metrics": [{"name": metric, "direction": direction}]},
                "budget": dict(budget), "seed": seed}
    sig = hashlib.sha1(json.dumps(semantic, sort_keys=True).encode()).hexdigest()
    run = {"signature": sig, "status": status, "method": method, "model": model, "task": task, "suite": suite,
           "budget": budget["name"], "seed": seed, "spec": semantic, "sweep": "test", "launcher": "debug",
           "error": None if status == "success" else "RuntimeError: boom",
           "traceback": None if status == "success" else "Traceback ...\nRuntimeError: boom",
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
           "host": "test", "slurm": None}
    meta = {"git": {"sha": "0" * 40, "dirty": False}, "packages": {}, "torch": {}, "hardware": {"host": "test"}}
    if status != "success":
        return {"run": run, "train": None, "eval": None, "meta": meta}
    train = {"steps": 20, "tokens": 4000, "examples": 160, "stopped_by": "steps", "wall_time_s": train_time_s + 1,
             "train_time_s": train_time_s, "peak_memory_mb": memory_mb, "peak_accelerator_mb": None,
             "trainable_params": trainable, "total_params": 22_713_986, "adapter_bytes": 4 * trainable,
             "loss_curve": [[1, 0.7], [20, 0.5]], "resumed_from_step": None}
    ev = {"metrics": {metric: {"value": value, "direction": direction}}, "primary_metric": metric,
          "n_examples": 64, "split": "dev", "task_version": 1, "protocol": "classify", "eval_time_s": 1.0,
          "history": [{"step": 20, metric: value}], "samples": []}
    return {"run": run, "train": train, "eval": ev, "meta": meta}


def write_records(results: Path, records: list[dict[str, Any]]) -> None:
    for rec in records:
        write_record(results / "records" / f"{rec['run']['signature']}.json", rec)


# Board A (smoke · minilm-l6 · glue): 4 methods × 3 tasks × 3 seeds; glue/loss is lower-is-better.
COST = {"lora": (300_000, 950.0, 40.0), "dora": (320_000, 1100.0, 55.0), "full": (22_713_986, 1900.0, 90.0),
        "ia3": (20_000, 900.0, 35.0)}
BASE = {"glue/sst2": {"lora": 0.90, "dora": 0.91, "full": 0.92, "ia3": 0.85},
        "glue/mrpc": {"lora": 0.80, "dora": 0.83, "full": 0.79, "ia3": 0.75},
        "glue/loss": {"lora": 0.30, "dora": 0.25, "full": 0.20, "ia3": 0.50}}
SEED_NOISE = [0.0, 0.01, -0.012]


def board_a_records() -> list[dict[str, Any]]:
    recs = []
    for task, by_method in BASE.items():
        metric, direction = ("loss", "min") if task == "glue/loss" else ("accuracy", "max")
        for method, base in by_method.items():
            p, mem, t = COST[method]
            for seed, eps in enumerate(SEED_NOISE):
                recs.append(make_record(method, task, seed, base + eps, metric=metric, direction=direction,
                                        trainable=p, memory_mb=mem, train_time_s=t))
    recs.append(make_record("lora", "glue/sst2", 7, None, status="failed"))       # counted, not ranked
    recs.append(make_record("broken", "glue/mrpc", 0, None, status="cancelled"))  # never succeeded
    return recs


def board_a_matrix() -> pd.DataFrame:
    """The method × task means computed by hand, oriented higher-is-better (glue/loss negated)."""
    noise = sum(SEED_NOISE) / len(SEED_NOISE)
    df = pd.DataFrame({t: {m: v + noise for m, v in by.items()} for t, by in BASE.items()}).sort_index()
    df["glue/loss"] = -df["glue/loss"]
    return df[["glue/sst2", "glue/mrpc", "glue/loss"]]  # the glue suite's voters in its order, then the rest


def board_b_records() -> list[dict[str, Any]]:
    """smoke · smollm2-135m · gsm8k: one seed per cell, 2 methods, one missing cell."""
    m = "smollm2-135m"
    return [make_record("lora", "gsm8k/gsm8k", 0, 0.12, model=m),
            make_record("dora", "gsm8k/gsm8k", 0, 0.10, model=m),
            make_record("lora", "gsm8k/gsm8k-hard", 0, 0.05, model=m)]


KEY_A = "smoke__minilm-l6__glue"
KEY_B = "smoke__smollm2-135m__gsm8k"


@pytest.fixture(scope="module")
def board_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lb")
    results, out = root / "results", root / "boards"
    write_records(results, board_a_records() + board_b_records())
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = report.main(["--results-dir", str(results), "--out", str(out), "--bootstrap", "40", "--no-wandb"])
    return {"rc": rc, "out": out, "results": results, "stdout": buf.getvalue()}


def test_writes_every_output(board_run: dict[str, Any]) -> None:
    assert board_run["rc"] == 0
    out = board_run["out"]
    for key in (KEY_A, KEY_B):
        for ext in ("md", "csv", "json"):
            assert (out / f"{key}.{ext}").is_file(), f"{key}.{ext}"
    assert (out / "index.html").is_file() and (out / "leaderboard.md").is_file() and (out / "cells.csv").is_file()
    assert "2 failed/cancelled run(s) not ranked" in board_run["stdout"]


def test_default_rules_are_all_registered_rules(board_run: dict[str, Any]) -> None:
    doc = json.loads((board_run["out"] / f"{KEY_A}.json").read_text())
    assert list(doc["rules"]) == list(RULES)
    for r, block in doc["rules"].items():
        assert set(block) == {"ranking", "scores", "winners", "skipped"}, r
        if block["skipped"] is None:
            assert block["winners"] == block["ranking"][0]


def test_json_matches_rank_all_and_rank_cli(board_run: dict[str, Any], tmp_path: Path) -> None:
    doc = json.loads((board_run["out"] / f"{KEY_A}.json").read_text())
    matrix = board_a_matrix()
    assert doc["systems"] == list(matrix.index) and doc["tasks"] == list(matrix.columns)
    expected = rank_all(matrix)
    for r, rk in expected.items():
        assert doc["rules"][r]["ranking"] == rk.groups, r
        assert doc["rules"][r]["winners"] == rk.winners, r
    # the same matrix through `peftbench rank --format json`: the shared builder gives the same blocks
    raw = matrix.copy()
    raw["glue/loss"] = -raw["glue/loss"]
    raw.index.name = "method"
    raw.to_csv(tmp_path / "m.csv")
    assert rank_cli.main([str(tmp_path / "m.csv"), "--format", "json", "--lower-is-better", "glue/loss",
                          "--out", str(tmp_path / "m.json")]) == 0
    cli = json.loads((tmp_path / "m.json").read_text())
    shared = {k: doc[k] for k in cli}
    assert set(cli) <= set(doc)
    assert shared["condorcet_winner"] == cli["condorcet_winner"]
    for r, block in cli["rules"].items():  # scores differ in the last bits: the CSV round-trips floats
        mine = shared["rules"][r]
        assert (mine["ranking"], mine["winners"], mine["skipped"]) == (block["ranking"], block["winners"],
                                                                       block["skipped"]), r
        assert mine["scores"] == pytest.approx(block["scores"], nan_ok=True), r
    assert shared["agreement"].keys() == cli["agreement"].keys()


def test_lower_is_better_metric_is_negated(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_records(results, [make_record(m, "glue/loss", s, v + 0.001 * s, metric="loss", direction="min")
                            for m, v in {"a": 0.9, "b": 0.1, "c": 0.5}.items() for s in range(2)])
    assert report.main(["--results-dir", str(results), "--out", str(tmp_path / "o"), "--rules", "mean,borda",
                        "--bootstrap", "0", "--no-wandb", "--quiet"]) == 0
    doc = json.loads((tmp_path / "o" / f"{KEY_A}.json").read_text())
    assert doc["board"]["directions"] == {"glue/loss": "min"}
    assert doc["rules"]["mean"]["ranking"] == [["b"], ["c"], ["a"]]  # lowest loss first
    assert doc["cells"]["b"]["glue/loss"]["mean"] == pytest.approx(0.1005)  # raw, not negated, in the table
    csv = pd.read_csv(tmp_path / "o" / f"{KEY_A}.csv", index_col="method")
    assert csv.loc["b", "rank:mean"] == 1 and csv.loc["a", "rank:borda"] == 3


def test_markdown_and_csv(board_run: dict[str, Any]) -> None:
    md = (board_run["out"] / f"{KEY_A}.md").read_text()
    assert md.startswith("## budget=smoke · model=minilm-l6 · suite=glue")
    for m in ("lora", "dora", "full", "ia3"):
        assert f"| {m} |" in md
    assert "broken" not in md                       # failed-only method is not ranked
    assert "2 failed/cancelled run(s) on this board" in md
    assert "(n=3)" in md and "(n=4)" not in md      # the failed lora seed does not count as a seed
    assert "**Condorcet winner**" in md and "Friedman χ²" in md and "**Uncertainty**" in md
    csv = pd.read_csv(board_run["out"] / f"{KEY_A}.csv", index_col="method")
    assert set(csv.index) == {"lora", "dora", "full", "ia3"}
    assert {f"rank:{r}" for r in ("mean", "borda", "kemeny", "schulze")} <= set(csv.columns)
    doc = json.loads((board_run["out"] / f"{KEY_A}.json").read_text())
    for r, block in doc["rules"].items():
        if block["skipped"] is None:
            pos = report.position_of(report.Ranking(block["ranking"], {}, block["winners"]))
            assert csv[f"rank:{r}"].to_dict() == {m: pos[m] for m in csv.index}, r


def test_missing_cells_and_single_seed_board(board_run: dict[str, Any]) -> None:
    doc = json.loads((board_run["out"] / f"{KEY_B}.json").read_text())
    assert doc["systems"] == ["dora", "lora"]
    assert doc["cells"]["dora"]["gsm8k/gsm8k-hard"]["mean"] is None
    assert "missing cell" in doc["rules"]["borda"]["skipped"]       # positional rules need full ballots
    assert doc["rules"]["mean"]["skipped"] is None                   # imputing rules still rank
    assert doc["rules"]["copeland"]["winners"] == ["lora"]
    assert "degenerate" in doc["bootstrap"]["note"] and doc["bootstrap"]["rules"] == {}
    assert "needs >= 3 systems" in doc["friedman"]["skipped"]
    md = (board_run["out"] / f"{KEY_B}.md").read_text()
    assert "| dora | gsm8k/gsm8k | 0.1000 (n=1) |" in md and "| dora | gsm8k/gsm8k-hard | — |" in md
    assert "- **borda**: skipped — needs every system scored" in md
    assert "degenerate" in md


def test_bootstrap_block(board_run: dict[str, Any]) -> None:
    doc = json.loads((board_run["out"] / f"{KEY_A}.json").read_text())
    boot = doc["bootstrap"]
    assert boot["n_boot"] == 40 and boot["note"] is None
    live = [r for r, b in doc["rules"].items() if b["skipped"] is None]
    assert list(boot["rules"]) == live
    for r, b in boot["rules"].items():
        assert set(b["rank_interval"]) == set(doc["systems"])
        lo, hi = b["rank_interval"][doc["rules"][r]["winners"][0]]
        assert 1 <= lo <= hi <= len(doc["systems"])
        assert sum(b["p_win"].values()) >= 1 - 1e-9
        assert b["summary"].startswith(f"{r}: ") and ("stable" in b["summary"] or "could change" in b["summary"])
    md = (board_run["out"] / f"{KEY_A}.md").read_text()
    assert "bootstrap over seeds, 40 resamples" in md and "mean: " in md


def test_html_page(board_run: dict[str, Any]) -> None:
    page = (board_run["out"] / "index.html").read_text()
    assert page.count("<section") == 2
    assert "budget=smoke · model=minilm-l6 · suite=glue" in page
    # A: heatmap + CD diagram + 3 Pareto plots; B: heatmap + 3 Pareto plots (no CD diagram), each an
    # inline SVG that parses as XML and is announced as one image with its alt text
    svgs = re.findall(r"<figure>(<svg .*?</svg>)<figcaption>", page)
    assert len(svgs) == page.count("<figure>") == 5 + 4 and "data:image" not in page
    alts = []
    for svg in svgs:
        root = ElementTree.fromstring(svg)
        assert root.get("role") == "img" and root.get("viewBox")
        alts.append(root.get("aria-label"))
    pareto = ["Pareto trainable parameters", "Pareto peak memory (MB)", "Pareto train time (s)"]
    assert alts == ["rank heatmap", "critical difference diagram", *pareto, "rank heatmap", *pareto]
    assert "Critical-difference diagram" in page
    assert "No critical-difference diagram: Friedman/Nemenyi test not run" in page
    assert "Condorcet winner" in page and "Kendall τ-b" in page and "would the winner change?" in page
    assert "0.9193 ± 0.0110 (n=3)" in page                                        # a mean ± std cell
    assert not re.search(r"(src|href)=['\"]https?:", page)             # nothing fetched from the network
    assert "<script" not in page


def test_rules_option(tmp_path: Path, board_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--results-dir", str(board_run["results"]), "--bootstrap", "0", "--no-wandb", "--quiet"]
    assert report.main([*args, "--out", str(tmp_path / "x"), "--rules", "mean,nope"]) == 2
    assert "unknown rule(s) nope" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert report.main([*args, "--out", str(tmp_path / "y"), "--rules", "kemeny,mean"]) == 0
    doc = json.loads((tmp_path / "y" / f"{KEY_A}.json").read_text())
    assert list(doc["rules"]) == ["kemeny", "mean"]
    assert doc["bootstrap"]["note"] == "bootstrap disabled (--bootstrap 0)"


def test_cli_entry_point_exit_code(board_run: dict[str, Any]) -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "harness.cli", "leaderboard", "--results-dir",
                          str(board_run["results"]), "--rules", "bogus"], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 2 and "unknown rule(s) bogus" in res.stderr


def test_wandb_offline_run(tmp_path: Path, board_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.tracking import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("PEFTBENCH_RUNS", str(tmp_path / "runs"))
    assert report.main(["--results-dir", str(board_run["results"]), "--out", str(tmp_path / "o"),
                        "--rules", "mean,borda", "--bootstrap", "5", "--quiet"]) == 0
    run_dirs = list((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    run = read_offline_run(run_dirs[0])
    assert run.job_type == "leaderboard" and run.project == "peftbench" and run.exit_code == 0
    logged = {k for row in run.history for k in row}
    assert {f"{KEY_A}/scores", f"{KEY_A}/ranks", f"{KEY_A}/bootstrap", f"{KEY_B}/scores"} <= logged
    assert run.summary[f"{KEY_A}/winner/mean"] == "full"


def test_wandb_failure_only_warns(tmp_path: Path, board_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import harness.tracking

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(harness.tracking, "start_run", boom)
    with pytest.warns(RuntimeWarning, match="no wandb today"):
        rc = report.main(["--results-dir", str(board_run["results"]), "--out", str(tmp_path / "o"),
                          "--rules", "mean", "--bootstrap", "0", "--quiet"])
    assert rc == 0 and (tmp_path / "o" / "index.html").is_file()
    assert "W&B logging of the leaderboard failed" in capsys.readouterr().err


def test_pareto_front() -> None:
    cost = pd.Series({"a": 1.0, "b": 2.0, "c": 3.0, "d": 2.0, "e": float("nan")})
    score = pd.Series({"a": 0.5, "b": 0.7, "c": 0.6, "d": 0.7, "e": 0.99})
    assert pareto_front(cost, score) == ["a", "b", "d"]          # c is dominated by b; e has no cost
    assert pareto_front(cost, -score, higher_is_better=False) == ["a", "b", "d"]


def test_schema_version_written(board_run: dict[str, Any]) -> None:
    rec = json.loads(next((board_run["results"] / "records").glob("*.json")).read_text())
    assert rec["schema_version"] == SCHEMA_VERSION and set(rec) == {"schema_version", "run", "train", "eval", "meta"}


def test_gpu_costs_reach_the_board_tables_and_pareto_plots(tmp_path: Path) -> None:
    """Records from a GPU carry peft's memory figures and throughputs (harness.costs): the board's cost table
    gets their columns (medians over runs), its JSON and CSV carry them, and the HTML page draws their Pareto
    plots. A board of records without them (CPU runs, older records) keeps its old table."""
    results = tmp_path / "results"
    recs = []
    for method, (mem, p99, tps) in {"lora": (5000.0, 6000.0, 900.0), "dora": (6500.0, 7200.0, 700.0)}.items():
        for seed in range(2):
            rec = make_record(method, "glue/sst2", seed, 0.9 - 0.01 * seed)
            rec["train"].update(memory={"device": "cuda", "steps_sampled": 20, "at_start_mb": 1000.0,
                                        "allocated_max_mb": mem + seed, "allocated_avg_mb": mem / 2,
                                        "allocated_p99_mb": mem - 1, "reserved_max_mb": p99 + 100,
                                        "reserved_avg_mb": p99 - 500, "reserved_p99_mb": p99},
                                tokens_per_s=tps, accelerator={"name": "NVIDIA H100", "count": 1},
                                gpus=4 if method == "dora" else 1, gpu_hours=(4 if method == "dora" else 1) * 30.0 / 3600)
            rec["eval"]["tokens_per_s"] = 10 * tps
            recs.append(rec)
    recs.append(make_record("ia3", "glue/sst2", 0, 0.8))   # no GPU figures: dashes, not zeros
    write_records(results, recs)
    out = tmp_path / "o"
    assert report.main(["--results-dir", str(results), "--out", str(out), "--rules", "mean", "--bootstrap", "0",
                        "--no-wandb", "--quiet"]) == 0
    md = (out / f"{KEY_A}.md").read_text()
    assert "| GPU mem max (MB) | GPU reserved avg (MB) | GPU reserved p99 (MB) | train tok/s | eval tok/s | GPU-hours |" in md
    # lora's allocated max is the median of 5000 and 5001 (printed to the MB); then reserved avg and p99, tok/s
    assert "| 10,000 | 900 | 30.0 | 5000 | 5500 | 6000 | 900 | 9000 | 0.0083 |" in md.split("| lora | 0.8950")[1]
    assert "| 6500 | 6700 | 7200 | 700 | 7000 | 0.0333 |" in md   # dora's 30 s on 4 GPUs: 4x lora's GPU-hours
    assert "| ia3 | 0.8000 (n=1) | 10,000 | 900 | 30.0 | — | — | — | — | — | — |" in md
    doc = json.loads((out / f"{KEY_A}.json").read_text())
    assert doc["cost"]["dora"]["accelerator_reserved_p99_mb"] == 7200.0
    assert doc["cost"]["lora"]["eval_tokens_per_s"] == 9000.0
    csv = pd.read_csv(out / f"{KEY_A}.csv", index_col="method")
    assert csv.loc["lora", "accelerator_max_mb"] == 5000.5 and pd.isna(csv.loc["ia3", "train_tokens_per_s"])
    page = (out / "index.html").read_text()
    assert "Pareto GPU memory max (MB)" in page and "Pareto GPU memory reserved, 99th percentile (MB)" in page
    assert "GPU reserved p99 (MB)</th>" in page
    plain = tmp_path / "plain"
    write_records(plain, [make_record("lora", "glue/sst2", 0, 0.9)])
    assert report.main(["--results-dir", str(plain), "--out", str(tmp_path / "p"), "--rules", "mean",
                        "--bootstrap", "0", "--no-wandb", "--quiet"]) == 0
    assert "GPU mem" not in (tmp_path / "p" / f"{KEY_A}.md").read_text()
