"""End to end on the real embedded models and real data: sweep → records → W&B → leaderboard.

Marked `integration` (slower: real training on CPU) but part of `make test` and CI.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.spec import PROJECT_ROOT
from tests.conftest import run_record

pytestmark = pytest.mark.integration

TOKENS, EVAL_SIZE = 600, 32   # ~11 optimizer steps and 32 dev sentences per job: seconds of CPU
TINY = ["budget=smoke", "budget.steps=null", f"budget.tokens={TOKENS}", f"budget.eval_size={EVAL_SIZE}"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_SILENT": "true",
                "PYTHONUNBUFFERED": "1"})
    env.pop("WANDB_MODE", None)
    return env


def peftbench(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=PROJECT_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "records").glob("*.json"))]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real multirun through the submitit *local* launcher: two methods that work and one job
    that fails at run time (its memory cap is broken at the first step), to show failure isolation."""
    root = tmp_path_factory.mktemp("e2e")
    results, runs = root / "results", root / "runs"
    args = ["run", "-m", "method=lora,full", "task=glue/sst2", "seed=0", "launcher=local",
            "logger=wandb", f"results_dir={results}", f"runs_dir={runs}", "sweep_name=e2e-test",
            f"hydra.sweep.dir={runs}/hydra", *TINY]
    first = peftbench(*args)
    bad = peftbench("run", "-m", "method=lora", "task=glue/sst2", "budget.memory_cap_mb=1",
                    "seed=0", "launcher=local", "logger=none",
                    f"results_dir={results}", f"runs_dir={runs}", f"hydra.sweep.dir={runs}/hydra-bad", *TINY)
    return {"root": root, "results": results, "runs": runs, "args": args, "first": first, "bad": bad}


def test_sweep_writes_one_record_per_job(sweep: dict) -> None:
    assert sweep["first"].returncode == 0, sweep["first"].stderr[-3000:]
    recs = [r for r in records(sweep["results"]) if r["run"]["status"] == "success"]
    assert sorted(r["run"]["method"] for r in recs) == ["full", "lora"]
    for r in recs:
        assert r["schema_version"] == 1
        assert r["run"]["launcher"] == "local" and r["run"]["sweep"] == "e2e-test"
        assert r["train"]["trainable_params"] > 0 and r["train"]["total_params"] > r["train"]["trainable_params"] \
            or r["run"]["method"] == "full"
        assert r["train"]["tokens"] >= TOKENS and r["train"]["stopped_by"] == "tokens"
        assert 0.0 <= r["eval"]["metrics"]["accuracy"]["value"] <= 1.0
        assert r["eval"]["n_examples"] == EVAL_SIZE
        assert r["meta"]["model"]["source"] == "local"
        assert len(r["meta"]["model"]["weights_sha256"]["model.safetensors"]) == 64
        assert r["meta"]["data"]["files"]["eval"]["sha256"]
        assert r["meta"]["git"]["sha"]
        assert r["meta"]["torch"]["threads"] == 1   # the local launcher's cpus_per_task
    full = next(r for r in recs if r["run"]["method"] == "full")
    assert full["train"]["trainable_params"] == full["train"]["total_params"]


def test_failing_job_is_isolated_and_recorded(sweep: dict) -> None:
    assert sweep["bad"].returncode == 0, sweep["bad"].stderr[-3000:]
    failed = [r for r in records(sweep["results"]) if r["run"]["status"] == "failed"]
    assert len(failed) == 1
    run = failed[0]["run"]
    assert "BudgetExceeded" in run["error"] and "memory_cap_mb=1" in run["error"] and run["traceback"]
    assert failed[0]["train"] is None and failed[0]["eval"] is None


def test_rerun_skips_finished_jobs(sweep: dict) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (sweep["results"] / "records").glob("*.json")}
    again = peftbench(*sweep["args"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already have a success record (skipped); 0 to run" in again.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (sweep["results"] / "records").glob("*.json")}
    assert before == after


def test_progress_status_and_plan_of_a_local_sweep(sweep: dict) -> None:
    """A line per finished job while it runs; afterwards `status` from the sweep's manifest, and a
    `plan` of the same sweep that would skip both jobs."""
    lines = [ln for ln in sweep["first"].stderr.splitlines() if re.match(r"peftbench: \[\d/2\] \d+ method=", ln)]
    assert len(lines) == 2 and all(": success accuracy=" in ln for ln in lines), sweep["first"].stderr[-3000:]
    out = peftbench("status", "e2e-test", "--runs-dir", str(sweep["runs"]))
    assert out.returncode == 0 and out.stdout.startswith("e2e-test: 2 jobs: 2 success  [local"), out.stdout
    bad = peftbench("status", str(sweep["runs"] / "hydra-bad"))
    assert "1 jobs: 1 failed" in bad.stdout and "BudgetExceeded" in bad.stdout, bad.stdout
    assert re.search(r"log: .*hydra-bad/\.local/0/0_log\.err", bad.stdout), bad.stdout
    plan = peftbench("plan", *sweep["args"][1:])
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert plan.stdout.count(" skip ") == 2 and "total: 0 to run (0 resume a checkpoint), 2 skipped" in plan.stdout


def test_a_killed_local_job_is_lost_alone(tmp_path: Path) -> None:
    """launcher=local: each job is its own process (forked from the warm server); SIGKILL one mid-run and
    only that one is lost, the other finishes and the sweep ends with its summary."""
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "harness.cli", "run", "-m", "method=lora", "task=glue/sst2", "seed=0",
            "budget.tokens=300,30000", "budget.eval_size=16", "launcher=local", "logger=none", "sweep_name=kill",
            f"results_dir={tmp_path / 'results'}", f"runs_dir={runs}"]
    driver = subprocess.Popen(args, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 300
    victim = None
    while victim is None:
        assert driver.poll() is None and time.monotonic() < deadline
        for log in runs.glob("hydra/multirun/*_kill/launches.jsonl"):
            jobs = [j for line in log.read_text().splitlines() for j in json.loads(line)["jobs"]]
            victim = next((j for j in jobs if j["num"] == 1), None)
        time.sleep(0.2)
    # mid-run: killed once its log says it trains (not some seconds after its start, maybe still loading)
    log = Path(victim["log"])
    while not (log.exists() and "[peftbench] training" in log.read_text()):
        assert driver.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(victim["pid"], 9)
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    assert "sweep finished: 1 lost, 1 success" in err, err[-3000:]
    assert re.search(rf"\[\d/2\] {victim['pid']} budget.tokens=30000: lost", err), err[-3000:]
    out = peftbench("status", "kill", "--runs-dir", str(runs)).stdout
    assert out.startswith("kill: 2 jobs: 1 success, 1 lost") and "ended" not in out, out
    assert f"log: {victim['log']}" in out


def test_wandb_offline_run_mirrors_the_record(sweep: dict) -> None:
    from harness.tracking import read_offline_run

    rec = next(r for r in records(sweep["results"]) if r["run"]["method"] == "lora" and r["run"]["status"] == "success")
    run = read_offline_run(Path(rec["run"]["wandb_dir"]))
    assert run.group == "e2e-test"
    assert run.config["signature"] == rec["run"]["signature"]
    assert run.config["method"]["name"] == "lora"
    losses = {h["_step"]: h["train/loss"] for h in run.history if "train/loss" in h}
    assert len(losses) == rec["train"]["steps"]
    for step, loss in rec["train"]["loss_curve"]:
        assert losses[int(step)] == pytest.approx(loss, rel=1e-6)
    assert run.summary["eval/accuracy"] == pytest.approx(rec["eval"]["metrics"]["accuracy"]["value"])
    assert run.exit_code == 0


def test_leaderboard_from_records(sweep: dict) -> None:
    out = sweep["root"] / "boards"
    res = peftbench("leaderboard", "--results-dir", str(sweep["results"]), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "budget=smoke · model=minilm-l6 · suite=glue" in res.stdout
    assert "1 failed/cancelled run(s) not ranked" in res.stdout
    md = (out / "smoke__minilm-l6__glue.md").read_text()
    assert "| lora |" in md and "| full |" in md
    import pandas as pd

    csv = pd.read_csv(out / "smoke__minilm-l6__glue.csv", index_col="method")
    assert set(csv.index) == {"lora", "full"}
    assert {"rank:mean", "rank:borda"} <= set(csv.columns)


def test_same_seed_same_metrics_on_cpu(tmp_path: Path) -> None:
    """Determinism: the same seed on CPU reproduces loss curve and metrics exactly; another seed differs."""
    from harness.spec import spec_from_config
    from harness.train import train
    from tests.conftest import compose_dictconfig

    def run(seed: int):
        cfg = compose_dictconfig(["method=lora", "task=glue/sst2", f"seed={seed}", "logger=none", "threads=1",
                                  f"results_dir={tmp_path}", f"runs_dir={tmp_path / str(seed)}", *TINY])
        return train(spec_from_config(cfg), progress=False)

    a, b, c = run(0), run(0), run(1)
    assert a.loss_curve == b.loss_curve
    assert a.final_eval["metrics"] == b.final_eval["metrics"]
    assert a.loss_curve != c.loss_curve


@pytest.mark.parametrize("task", ["gsm8k/gsm8k", "commonsense/boolq"])
def test_generate_protocol_on_the_embedded_decoder(task: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder path: SmolLM2 (GGUF → cached safetensors) trains on target tokens and is scored
    by generating and parsing the answer. In-process (dispatch.execute, what the CLI runs): the job is what
    is tested here, the CLI and its launchers are the sweep's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    rec = run_record(tmp_path, "method=lora", "model=smollm2-135m", f"task={task}", "logger=none", "budget=smoke",
                     "budget.steps=2", "budget.batch_size=2", "budget.max_seq_len=96",
                     "budget.eval_size_generate=4", "budget.eval_batch_size=4", "budget.max_new_tokens=12")
    assert len(records(tmp_path / "results")) == 1
    assert rec["eval"]["protocol"] == "generate" and rec["eval"]["n_examples"] == 4
    metric = rec["eval"]["primary_metric"]
    assert 0.0 <= rec["eval"]["metrics"][metric]["value"] <= 1.0
    assert rec["eval"]["samples"] and "generation" in rec["eval"]["samples"][0]
    assert rec["meta"]["model"]["payload"].endswith(".gguf")
    assert rec["train"]["steps"] == 2
