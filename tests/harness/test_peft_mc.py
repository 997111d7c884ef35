"""peft's method comparison through peftbench (issue #21): its 63 published results as external records and
their board, the recount of trainable parameters on Llama-3.2-3B's config alone, boards over criteria, and
its experiment folders as peftbench methods.

The data are peft's own files (benchmarks/external/peft_mc/, with their source commit in its README): every
test reads them offline.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import peft_mc
from harness.leaderboard.external import board_budget, criteria_rows, parse_criteria
from harness.leaderboard.report import generate
from harness.spec import PROJECT_ROOT, ConfigError
from methods.catalog import zoo_blocks

DATA = PROJECT_ROOT / "benchmarks" / "external" / "peft_mc"
RESULTS = sorted((DATA / "results").glob("*.json"))
EXPERIMENTS = DATA / "experiments"
LLAMA_3B = Path(__file__).resolve().parent / "fixtures" / "llama-3.2-3b"
BOARD = "peft_mc@huggingface-peft__meta-llama-Llama-3.2-3B__math"
RULES = ["borda", "copeland", "plurality"]


@pytest.fixture(scope="module")
def zoo() -> dict[str, dict[str, Any]]:
    return zoo_blocks()


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory, zoo: dict[str, Any]) -> Path:
    results = tmp_path_factory.mktemp("peft_mc")
    report = peft_mc.import_results(RESULTS, results, counter=None, zoo=zoo)
    assert len(report.written) == 63 and not report.unchanged
    return results


def test_all_63_published_results_import_as_external_records(imported: Path, zoo: dict[str, Any]) -> None:
    assert len(RESULTS) == 63
    files = sorted((imported / "records").glob("*.json"))
    assert len(files) == 63
    rec = next(json.loads(f.read_text()) for f in files
               if json.loads(f.read_text())["run"]["experiment"] == "lora/llama-3.2-3B-rank32")
    run, train, ev, meta = rec["run"], rec["train"], rec["eval"], rec["meta"]
    assert (run["source"], run["publisher"], run["method"], run["budget"]) == \
        ("external", "huggingface/peft", "lora/rank32", "peft_mc")
    assert run["peft_config"]["r"] == 32 and run["train_config"]["max_steps"] == 5000
    assert ev["metrics"]["accuracy"]["value"] == pytest.approx(0.4783927217589083)
    assert ev["metrics"]["forgetting"] == {"value": pytest.approx(0.04995572566986084), "direction": "min"}
    assert train["loss"] == pytest.approx(0.6068399169445038) and train["trainable_params"] == 9175040
    assert train["total_params"] == 3221924864 and train["adapter_bytes"] == 36715216
    assert train["memory"]["allocated_max_mb"] == pytest.approx(22292725760 / 2**20, abs=0.1)
    assert train["memory"]["reserved_p99_mb"] == pytest.approx(20120076288 / 2**20, abs=0.1)
    assert train["train_time_s"] == pytest.approx(941.959, abs=1e-3)
    ext = meta["external"]
    assert ext["peft_commit"] == "d787f51bbaa196862733ed53c1b7def75b49ab29" and ext["accelerator"] == "NVIDIA L40S"
    assert ext["torch_version"] == "2.13.0+cu130" and ext["peft_version"] == "0.19.2.dev0"
    assert meta["translation"]["method"] == "lora" and meta["translation"]["problems"] == []
    # re-importing changes nothing: no file is written again
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    again = peft_mc.import_results(RESULTS, imported, counter=None, zoo=zoo)
    assert not again.written and len(again.unchanged) == 63
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted((imported / "records").glob("*.json"))} == before


def test_their_board_ranks_lily_first_in_markdown_json_and_html(imported: Path, tmp_path: Path) -> None:
    own = json.loads(next((imported / "records").glob("*.json")).read_text())
    assert board_budget(own["run"]) == "peft_mc@huggingface-peft"
    assert board_budget({**own["run"], "source": None}) == "peft_mc", "our own peft_mc runs keep their budget"
    _, _, reports = generate(imported, tmp_path, RULES, n_boot=0, jobs=1, use_cache=False)
    assert [r.board.key for r in reports] == [BOARD]
    rep = reports[0]
    for rule in RULES:
        assert rep.rankings[rule].winners == ["lily/rank140-mlp-a2-b2-s8.0"], rule
    md = (tmp_path / f"{BOARD}.md").read_text()
    assert md.index("lily/rank140-mlp-a2-b2-s8.0") < md.index("hira/rank32-lr4.5e-3")
    assert "External results published by huggingface/peft (63 runs" in md
    assert "within the published rerun noise" in md and "0.482, 0.491, 0.478" in md
    doc = json.loads((tmp_path / f"{BOARD}.json").read_text())
    assert doc["board"]["budget"] == "peft_mc@huggingface-peft"
    html = (tmp_path / "index.html").read_text()
    assert "lily/rank140-mlp-a2-b2-s8.0" in html and "Pareto GPU memory max (MB)" in html


def test_a_board_over_criteria_votes_with_each_and_says_so(imported: Path, tmp_path: Path) -> None:
    criteria = parse_criteria("accuracy,memory,train_time")
    _, _, reports = generate(imported, tmp_path, RULES, n_boot=0, jobs=1, use_cache=False, criteria=criteria)
    board = reports[0].board
    assert list(board.scores.columns) == ["math/metamathqa", "memory", "train_time"]
    assert board.directions == {"math/metamathqa": "max", "memory": "min", "train_time": "min"}
    assert board.score_columns == ["math/metamathqa"]
    lora = board.scores.loc["lora/rank32"]
    assert lora["memory"] == pytest.approx(22292725760 / 2**20, abs=0.1)
    assert lora["train_time"] == pytest.approx(941.959, abs=1e-3)
    assert reports[0].verdict[0] == "Ranked over 3 criteria, each a voter: accuracy, memory, train_time."
    # the cheapest-and-good beat the most accurate once memory and time vote too
    assert reports[0].rankings["borda"].winners != ["lily/rank140-mlp-a2-b2-s8.0"]
    with pytest.raises(ValueError, match="unknown criteria speed; known: accuracy, memory"):
        parse_criteria("accuracy,speed")


def test_forgetting_is_a_criterion_read_from_the_records(imported: Path, tmp_path: Path) -> None:
    from harness.leaderboard.cache import read_frame

    long, _ = read_frame(imported, use_cache=False)
    rows = criteria_rows(long[long["status"] == "success"], ["forgetting"])
    forgetting = rows[rows["primary"].astype(bool)].set_index("method")
    assert set(forgetting["task"]) == {"forgetting"} and len(forgetting) == 63
    assert forgetting.loc["lora/rank32", "value"] == pytest.approx(0.04995572566986084)


RECOUNT = ["lora--llama-3.2-3B-rank32.json", "lora--llama-3.2-3B-rank32-lorafa.json",
           "lora--llama-3.2-3B-rank32-dora.json", "hira--llama-3.2-3B-rank32-lr4.5e-3.json",
           "prefixtuning--llama-3.2-3B-tokens50-init_prefix-lr_0.005.json", "ia3--llama-3.2-3B-default.json"]


def test_the_recount_on_llama_3b_config_matches_and_the_board_lists_mismatches(tmp_path: Path,
                                                                                 zoo: dict[str, Any]) -> None:
    """Counted on Llama-3.2-3B's config.json alone (meta device): peftbench's methods (LoRA, LoRA-FA, DoRA, IA³,
    prefix tuning) and, for a type with no peftbench method (HiRA), peft's own config of it, all equal the
    published counts. A result whose published count is off by one is listed as a mismatch on the board."""
    src = tmp_path / "src"
    src.mkdir()
    for name in RECOUNT:
        shutil.copy(DATA / "results" / name, src / name)
    doc = json.loads((src / RECOUNT[0]).read_text())
    doc["run_info"]["experiment_name"] = "lora/llama-3.2-3B-rank32-doctored"
    doc["train_info"]["num_trainable_params"] += 1
    (src / "doctored.json").write_text(json.dumps(doc))
    counter = peft_mc.Recounter.from_config_dir(LLAMA_3B)
    report = peft_mc.import_results(sorted(src.glob("*.json")), tmp_path / "results", counter=counter, zoo=zoo)
    by = {r["run"]["experiment"]: r["meta"]["recount"] for r in report.records}
    for name in RECOUNT:
        exp = json.loads((src / name).read_text())["run_info"]["experiment_name"]
        assert by[exp]["match"] is True, (exp, by[exp])
    assert "peft's own hira config" in by["hira/llama-3.2-3B-rank32-lr4.5e-3"]["how"]
    assert by["lora/llama-3.2-3B-rank32-doctored"] == {**by["lora/llama-3.2-3B-rank32"], "match": False}
    _, _, reports = generate(tmp_path / "results", tmp_path / "boards", ["borda"], n_boot=0, jobs=1,
                             use_cache=False)
    notes = " ".join(reports[0].board.notes)
    assert "6 of 7 counted match the published count" in notes
    assert "Recount mismatches: lora/rank32-doctored: published 9,175,041, counted 9,175,040" in notes


def test_a_malformed_file_is_one_error_and_nothing_is_written(tmp_path: Path, zoo: dict[str, Any]) -> None:
    good = DATA / "results" / RECOUNT[0]
    bad_json = tmp_path / "truncated.json"
    bad_json.write_text(good.read_text()[:500])
    doc = json.loads(good.read_text())
    del doc["train_info"]
    no_train = tmp_path / "no_train.json"
    no_train.write_text(json.dumps(doc))
    doc = json.loads(good.read_text())
    doc["train_info"]["status"] = "finished"
    doc["train_info"]["num_trainable_params"] = "9M"
    bad_values = tmp_path / "bad_values.json"
    bad_values.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        peft_mc.import_results([good, bad_json, no_train, bad_values], tmp_path / "results", counter=None, zoo=zoo)
    text = str(err.value)
    assert f"{bad_json}: not a JSON file" in text
    assert f"{no_train}: train_info: missing" in text
    assert f"{bad_values}: train_info.status: 'finished' is not one of success, failed, cancelled; " \
           "train_info.num_trainable_params: '9M' is not a count" in text
    assert str(good) not in text
    assert not (tmp_path / "results" / "records").exists() or not any((tmp_path / "results" / "records").iterdir())


def test_an_experiment_folder_becomes_a_peftbench_method_and_overrides(zoo: dict[str, Any]) -> None:
    adapter, training, problems = peft_mc.read_experiment(EXPERIMENTS / "lora" / "llama-3.2-3B-rank32")
    assert not problems
    t = peft_mc.translate(adapter, training, experiment="lora/llama-3.2-3B-rank32", zoo=zoo).check()
    assert t.method == "lora" and t.budget == "peft_mc" and not t.budget_overrides
    params, optim = t.block["params"], t.block["optim"]
    assert (params["r"], params["lora_alpha"], params["lora_dropout"]) == (32, 64, 0.0)
    assert params["target_modules"] == ["q_proj", "v_proj"]
    assert optim == {**zoo["lora"]["optim"], "lr": 1e-4, "weight_decay": 0.1}
    expected = {"dora": "lora/llama-3.2-3B-rank32-dora", "lorafa": "lora/llama-3.2-3B-rank32-lorafa",
                "rslora": "lora/llama-3.2-3B-rank64-rslora", "mica": "lora/llama-3.2-3B-rank32-mica",
                "kasa": "lora/llama-3.2-3B-rank32-kasa", "full": "full-finetuning/llama-3.2-3B-lr_0.00001"}
    for method, exp in expected.items():
        adapter, training, _ = peft_mc.read_experiment(EXPERIMENTS / exp)
        assert peft_mc.translate(adapter, training, experiment=exp, zoo=zoo).check().method == method, exp


@pytest.mark.parametrize(("folder", "named"), [
    ("hira/llama-3.2-3B-rank32-lr4.5e-3", "peft type HIRA: peftbench has no method for it"),
    ("lora/llama-3.2-3B-rank32-riemannian", "optimizer_type 'riemannian': peftbench has no such optimizer"),
    ("prefixtuning/llama-3.2-3B-tokens50-init_prefix-lr_0.005", "training_params init_kv_cache_prefix="),
    ("osf/llama-3.2-3B-rank128", "training_params autocast_adapter_dtype=false"),
])
def test_what_peftbench_cannot_express_is_one_error_per_folder_naming_it(
        folder: str, named: str, capsys: pytest.CaptureFixture[str]) -> None:
    ok = "lora/llama-3.2-3B-rank64"
    code = peft_mc.main(["peft-experiment", str(EXPERIMENTS / folder), str(EXPERIMENTS / ok)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and f"({folder})" in lines[0] and named in lines[0], err
    assert "peftbench run method=lora " in out and "method.params.r=64" in out and "budget=peft_mc" in out


# ------------------------------------------------------------------------- the task and budget, shrunk
def _metamathqa_file(data: Path) -> None:
    """A tiny MetaMathQA-format file (query, response, type, original_question), one row too long for the filter."""
    rows = [{"query": f"What is {a} plus {b}?", "response": f"{a} plus {b} is {a + b}. The answer is: {a + b}",
             "type": "GSM_AnsAug", "original_question": f"What is {a} plus {b}?"} for a, b in
            [(2, 3), (4, 5), (7, 1), (6, 6), (9, 2), (3, 8), (5, 5), (1, 9)]]
    rows.append({"query": "x" * 1200, "response": "y" * 100, "type": "MATH_SV", "original_question": "too long"})
    (data / "metamathqa").mkdir(parents=True)
    (data / "metamathqa" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


SHRUNK = ("method=lora", "model=smollm2-135m", "task=math/metamathqa", "budget=peft_mc", "budget.steps=2",
          "budget.batch_size=2", "budget.max_seq_len=64", "budget.eval_every=2", "budget.eval_size_generate=2",
          "budget.max_new_tokens=4", "task.monitor.size=2", "task.forgetting.sentences=6", "task.forgetting.per_text=3",
          "method.optim.lr=1e-3", "method.optim.weight_decay=0.1", "logger=none")


@pytest.mark.integration
def test_the_shrunk_metamathqa_job_on_smollm2_records_forgetting(tmp_path: Path) -> None:
    """task=math/metamathqa at budget=peft_mc, shrunk to 2 steps: it trains on the filtered MetaMathQA rows (the
    1,300-character row is dropped), monitors 2 GSM8K train questions at step 2, reports GSM8K test and records
    forgetting on the MRPC news sentences, adapter on minus off."""
    from tests.conftest import run_record

    _metamathqa_file(tmp_path / "data")
    rec = run_record(tmp_path, *SHRUNK, f"data_dir={tmp_path / 'data'}")
    ev = rec["eval"]
    assert rec["train"]["steps"] == 2 and ev["split"] == "test" and ev["primary_metric"] == "exact_match"
    assert any("8 MetaMathQA rows kept, 1 longer than 1300" in n for n in rec["meta"]["data"]["notes"])
    assert [h["step"] for h in ev["history"]] == [2, 2]   # the monitor set at step 2, then the test set
    f = ev["forgetting"]
    assert ev["metrics"]["forgetting"] == {"value": pytest.approx(f["after"] - f["before"]), "direction": "min"}
    assert f["texts"] == 2 and f["tokens"] > 40 and 0 < f["before"] < 20 and f["value"] != 0.0


def test_the_imported_lora_rank32_experiment_is_a_job_that_plan_shows(tmp_path: Path, zoo: dict[str, Any],
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """experiments/lora/llama-3.2-3B-rank32 → method=lora, r=32, α=64, q_proj/v_proj, dropout 0, AdamW lr 1e-4 and
    weight decay 0.1 under budget=peft_mc; `peftbench plan` validates that job and lists it (the model from its
    config alone: Llama-3.2-3B's config.json, no weights; a one-row MetaMathQA file stands in for the data)."""
    from harness.cli import main
    from harness.spec import compose, spec_from_config

    adapter, training, _ = peft_mc.read_experiment(EXPERIMENTS / "lora" / "llama-3.2-3B-rank32")
    t = peft_mc.translate(adapter, training, experiment="lora/llama-3.2-3B-rank32", zoo=zoo).check()
    (tmp_path / "data" / "metamathqa").mkdir(parents=True)
    (tmp_path / "data" / "metamathqa" / "train.jsonl").write_text('{"query": "1+1?", "response": "The answer is: 2"}\n')
    args = [f"method={t.method}", *t.overrides, "model=hf", f"model.path={LLAMA_3B}", "model.kind=decoder",
            "model.dtype=bfloat16", f"task={peft_mc.TASK}", f"budget={t.budget}", "seed=0",
            f"data_dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}"]
    spec = spec_from_config(compose(args))
    assert spec.method["name"] == "lora"
    assert spec.method["params"] == {"r": 32, "lora_alpha": 64, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    assert spec.method["optim"]["lr"] == 1e-4 and spec.method["optim"]["weight_decay"] == 0.1
    b = spec.budget
    assert (b["name"], b["steps"], b["batch_size"], b["max_seq_len"], b["schedule"], b["warmup_ratio"], b["grad_clip"],
            b["eval_every"], b["max_new_tokens"]) == ("peft_mc", 5000, 4, 768, "cosine", 0.1, 1.0, 250, 300)
    assert main(["plan", *args]) == 0
    out = capsys.readouterr().out
    assert "1 to run" in out and "lora|hf|math/metamathqa|peft_mc|s0" in out


def test_the_monitor_questions_are_the_ones_peft_draws() -> None:
    """peft: np.random.seed(0); np.random.shuffle(np.arange(len(gsm8k_train))); the first 50."""
    import numpy as np

    from tasks.metamathqa import monitor_indices

    np.random.seed(0)
    idx = np.arange(7473)
    np.random.shuffle(idx)
    assert monitor_indices(7473, 50, 0) == idx[:50].tolist()


def test_the_committed_peft_mc_sweep_is_what_the_import_writes(zoo: dict[str, Any]) -> None:
    """conf/peft_mc/*.yaml and sweeps/peft_mc.yaml are `peftbench import peft-experiment --write-conf` over every
    folder of peft's experiments/ that peftbench can express (58 of 71), byte for byte; an experiment composes to
    the method block its translation gives."""
    from harness.spec import CONF_DIR, SWEEPS_DIR, compose, spec_from_config

    written = {}
    for folder in sorted(p for p in EXPERIMENTS.glob("*/*") if p.is_dir()):
        adapter, training, problems = peft_mc.read_experiment(folder)
        t = peft_mc.translate(adapter, training, experiment=peft_mc.experiment_name(folder), zoo=zoo)
        if not problems and not t.problems and t.method:
            written[peft_mc.conf_name(t.experiment)] = (t, peft_mc.experiment_yaml(t))
    committed = {p.stem: p.read_text() for p in (CONF_DIR / "peft_mc").glob("*.yaml")}
    assert len(written) == 58 and committed == {k: v for k, (_, v) in written.items()}
    assert (SWEEPS_DIR / "peft_mc.yaml").read_text() == peft_mc.sweep_yaml(sorted(written))
    t = written["lily-rank140-mlp-a2-b2-s8_0"][0]
    spec = spec_from_config(compose(["+peft_mc=lily-rank140-mlp-a2-b2-s8_0", "model=smollm2-135m", "task=gsm8k/gsm8k",
                                     "logger=none"]))
    assert spec.method["name"] == "lily" and spec.method["params"] == t.block["params"]
    assert spec.method["params"]["r"] == 140 and spec.method["optim"]["lr"] == 1e-4


def test_the_dora_cs_sweep_is_lora_and_dora_at_the_llm_adapters_recipe(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """sweeps/dora_cs.yaml: LoRA (lr 3e-4) and DoRA (lr 1e-4), r=32, α=64, dropout 0.05 on q/k/v/up/down, 3 epochs of
    commonsense_170k at batch 16 (31,932 steps), cutoff 256, 100 warmup steps; both jobs validate and plan (the
    model from a Llama config alone; a two-item commonsense_170k file stands in for the training set)."""
    from harness.cli import main
    from harness.spec import compose, spec_from_config

    data = tmp_path / "data" / "commonsense" / "commonsense_170k"
    data.mkdir(parents=True)
    boolq = PROJECT_ROOT.parent / "shared" / "data" / "commonsense" / "boolq" / "train.json"
    if not boolq.exists():
        pytest.skip(f"the offline commonsense data is not at {boolq}")
    rows = json.loads(boolq.read_text())
    (data / "train.json").write_text(json.dumps(rows[:2]))
    common = [f"model.path={LLAMA_3B}", f"data_dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}",
              f"runs_dir={tmp_path / 'runs'}", "launcher=debug", "logger=none"]
    targets = ["down_proj", "k_proj", "q_proj", "up_proj", "v_proj"]
    for name, method, lr in (("lora_r32", "lora", 3e-4), ("dora_r32", "dora", 1e-4)):
        spec = spec_from_config(compose([f"+dora_cs={name}", "model=hf", "model.kind=decoder", "model.dtype=float16",
                                         "task=commonsense/all", "task.train_set=commonsense_170k",
                                         "budget=llm_adapters", *common[:2]]))
        p = spec.method["params"]
        assert spec.method["name"] == method and spec.method["optim"]["lr"] == lr
        assert (p["r"], p["lora_alpha"], p["lora_dropout"], p["target_modules"]) == (32, 64, 0.05, targets)
        assert p.get("use_dora", False) is (method == "dora")
        b = spec.budget
        assert (b["steps"], b["batch_size"], b["max_seq_len"], round(b["warmup_ratio"] * b["steps"])) == \
            (31932, 16, 256, 100)
        assert spec.task["train_set"] == "commonsense_170k"
    assert main(["plan", "dora_cs", *common]) == 0
    out = capsys.readouterr().out
    assert "lora|hf|commonsense/all|llm_adapters|s0" in out and "dora|hf|commonsense/all|llm_adapters|s0" in out
    assert "2 to run" in out
