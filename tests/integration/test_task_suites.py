"""One short real job per protocol and per new task shape, on the embedded models and real data:
regression (STS-B), several evaluated sets (MNLI on a small local copy made here; commonsense/all on
the shared data), generate, loglik through lm-eval, and the validation split. Whole suites are
campaign runs, not tests."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.dispatch import execute
from harness.spec import PROJECT_ROOT, spec_from_config
from tests.conftest import compose_dict

pytestmark = pytest.mark.integration

TINY = ["budget=smoke", "budget.steps=null", "budget.tokens=1200", "budget.eval_size=48",
        "budget.eval_size_generate=4", "budget.eval_batch_size=8"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def run_job(tmp_overrides: list[str], *overrides: str) -> dict[str, Any]:
    # the project's model cache: the decoder's one-time GGUF conversion is not what these tests test
    spec = spec_from_config(compose_dict([*tmp_overrides, f"cache_dir={PROJECT_ROOT / '.cache'}", *TINY, *overrides]))
    summary = execute(spec)
    record = json.loads(Path(summary["record"]).read_text())
    assert record["run"]["status"] == "success", record["run"].get("traceback")
    return record


def test_stsb_trains_a_regression_head(tmp_overrides: list[str]) -> None:
    rec = run_job(tmp_overrides, "task=glue/stsb", "model=minilm-l6")
    ev = rec["eval"]
    assert list(ev["metrics"]) == ["pearson", "spearman"] and ev["primary_metric"] == "pearson"
    # a real-valued head that learned something: a positive, defined correlation after 1.2k tokens
    assert ev["metrics"]["pearson"]["value"] is not None and -1 <= ev["metrics"]["pearson"]["value"] <= 1
    assert ev["baseline"] == {"kind": "chance", "metrics": {"pearson": 0.0, "spearman": 0.0},
                              "detail": "a constant or random prediction has no correlation with the gold scores"}
    assert all(isinstance(s["prediction"], float) for s in ev["samples"])
    assert ev["eval_split"] == "reported" and ev["split"] == "dev"
    # the head started at the mean training score (2.7 on STS-B's train split), so after 1.2k tokens its
    # predictions sit around it, on the gold scale, not around the 0 an untouched nn.Linear gives
    preds = [s["prediction"] for s in ev["samples"]]
    assert 1.5 < sum(preds) / len(preds) < 4.0


def _tsv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["index\tsentence1\tsentence2\tgold_label", *(f"{i}\t{a}\t{b}\t{y}" for i, (a, b, y) in enumerate(rows))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_mnli_reports_matched_and_mismatched(tmp_path: Path, tmp_overrides: list[str]) -> None:
    """MNLI is hub-only here; a small local copy in the GLUE layout (made from SST-2 sentences, so
    this is plumbing, not an MNLI result) shows one job evaluated on two sets, each a voter."""
    from tasks import load_task

    sst = load_task(compose_dict(["task=glue/sst2"])["task"], None)
    labels = ["entailment", "neutral", "contradiction"]
    rows = [(e.text_a, sst.train[i + 1].text_a, labels[i % 3]) for i, e in enumerate(sst.train[:300])]
    mnli = tmp_path / "data" / "glue" / "MNLI"
    mnli.mkdir(parents=True)
    _tsv(mnli / "train.tsv", rows[:200])
    _tsv(mnli / "dev_matched.tsv", rows[200:250])
    _tsv(mnli / "dev_mismatched.tsv", rows[250:])
    rec = run_job(tmp_overrides, "task=glue/mnli", f"data_dir={tmp_path / 'data'}")
    subs = rec["eval"]["subtasks"]
    assert list(subs) == ["glue/mnli-m", "glue/mnli-mm"]
    assert subs["glue/mnli-m"]["split"] == "dev_matched" and subs["glue/mnli-mm"]["split"] == "dev_mismatched"
    assert subs["glue/mnli-m"]["n_examples"] == 48 and subs["glue/mnli-mm"]["n_examples"] == 48
    assert rec["eval"]["metrics"] == subs["glue/mnli-m"]["metrics"]
    assert set(rec["meta"]["data"]["files"]) == {"train", "eval", "eval_mm"}


def test_commonsense_all_is_one_job_with_eight_voters(tmp_overrides: list[str]) -> None:
    # one optimizer step and one generated answer per set: what is tested is the job's data and its eight
    # evaluated sets, each a voter with its own baseline, not what the model learns or scores
    rec = run_job(tmp_overrides, "task=commonsense/all", "model=smollm2-135m", "budget.steps=1",
                  "budget.eval_size_generate=1", "budget.max_new_tokens=12")
    assert rec["train"]["steps"] == 1
    subs = rec["eval"]["subtasks"]
    assert list(subs) == ["commonsense/boolq", "commonsense/piqa", "commonsense/siqa", "commonsense/hellaswag",
                          "commonsense/winogrande", "commonsense/arc_easy", "commonsense/arc_challenge",
                          "commonsense/openbookqa"]
    for name, sub in subs.items():
        assert sub["n_examples"] == 1 and 0.0 <= sub["metrics"]["accuracy"]["value"] <= 1.0
        assert sub["baseline"]["kind"] == ("majority" if name.endswith("boolq") else "chance")
    assert subs["commonsense/piqa"]["baseline"]["metrics"]["accuracy"] == 0.5
    assert rec["run"]["spec"]["task"]["train_set"] == "local_union"
    assert any("NOT on commonsense_170k" in n for n in rec["meta"]["data"]["notes"])
    assert sum(k.startswith("eval:") for k in rec["meta"]["data"]["files"]) == 8


def test_loglik_protocol_goes_through_lm_eval(tmp_overrides: list[str]) -> None:
    # one optimizer step: the scoring through lm-eval is what is tested, not what the model learned
    rec = run_job(tmp_overrides, "task=commonsense/piqa", "task.protocol=loglik", "model=smollm2-135m",
                  "budget.steps=1")
    assert rec["train"]["steps"] == 1
    ev = rec["eval"]
    assert ev["protocol"] == "loglik" and list(ev["metrics"]) == ["acc", "acc_norm"]
    assert ev["n_examples"] == 4 and all(0.0 <= m["value"] <= 1.0 for m in ev["metrics"].values())
    info = ev["lm_eval"]["commonsense/piqa"]
    assert info["lm_eval_version"] and info["task"]
    assert ev["baseline"]["metrics"] == {"acc": 0.5, "acc_norm": 0.5}


def test_validation_split_never_touches_the_reported_split(tmp_overrides: list[str]) -> None:
    rec = run_job(tmp_overrides, "task=glue/rte", "task.eval_split=validation")
    ev = rec["eval"]
    assert ev["eval_split"] == "validation" and ev["split"] == "validation" and ev["n_examples"] == 48
    assert any("carved from train" in n for n in rec["meta"]["data"]["notes"])
    assert rec["run"]["spec"]["task"]["eval_split"] == "validation"


def test_a_suite_sweep_is_checked_whole_before_launch(tmp_path: Path) -> None:
    """task=glue expands to the nine tasks; offline, MNLI, QQP and QNLI have no data: the sweep stops
    before launching anything, with one message naming each, exit 2, nothing written."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-m", "task=glue", "logger=none",
                          f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "sweep of 9 jobs; nothing was launched" in out.stderr
    for task in ("glue/qqp", "glue/mnli", "glue/qnli"):
        assert f"task {task}: data of {task}: needs the Hugging Face hub" in out.stderr
    assert "glue/sst2: data" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_no_nan_reaches_a_record() -> None:
    """An undefined correlation is stored as null (JSON has no NaN)."""
    from types import SimpleNamespace

    from harness.dispatch import eval_block

    result = SimpleNamespace(eval_history=[], final_eval={"metrics": {"pearson": math.nan, "spearman": 0.1},
                                                          "n_examples": 3, "samples": [], "eval_time_s": 0.1,
                                                          "sets": []})

    spec = spec_from_config(compose_dict(["task=glue/stsb", "logger=none"]))
    block = eval_block(spec, result)
    assert block["metrics"]["pearson"]["value"] is None and block["metrics"]["spearman"]["value"] == 0.1
