"""Suites on the leaderboard: records that evaluate several sets (eval.subtasks), one value per cell and
seed, and the suite's conventional average (GLUE score, commonsense Avg.) checked on the real public
GLUE leaderboard and by hand."""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.leaderboard import cache, report
from harness.leaderboard.suites import suite_average, unit_scores
from harness.leaderboard.table import aggregate, boards, long_table, one_value_per_seed
from harness.records import iter_records
from harness.spec import PROJECT_ROOT
from tasks.suites import SUITE_DIR, load_suites
from tests.harness.leaderboard.test_cache import outputs, run
from tests.harness.leaderboard.test_report import make_record, write_records

GLUE_CSV = PROJECT_ROOT.parent / "shared" / "data" / "leaderboards" / "glue_systems.csv"
# the public leaderboard's columns as (voter, metric): -a/-b are F1/accuracy (MRPC, QQP), Pearson/Spearman (STS-B)
GLUE_COLUMNS = {"CoLA": ("glue/cola", "matthews"), "SST-2": ("glue/sst2", "accuracy"),
                "MRPC-a": ("glue/mrpc", "f1"), "MRPC-b": ("glue/mrpc", "accuracy"),
                "STS-B-a": ("glue/stsb", "pearson"), "STS-B-b": ("glue/stsb", "spearman"),
                "QQP-a": ("glue/qqp", "f1"), "QQP-b": ("glue/qqp", "accuracy"),
                "MNLI-m": ("glue/mnli-m", "accuracy"), "MNLI-mm": ("glue/mnli-mm", "accuracy"),
                "QNLI": ("glue/qnli", "accuracy"), "RTE": ("glue/rte", "accuracy"), "WNLI": ("glue/wnli", "accuracy")}
COMMONSENSE = ["commonsense/boolq", "commonsense/piqa", "commonsense/siqa", "commonsense/hellaswag",
               "commonsense/winogrande", "commonsense/arc_easy", "commonsense/arc_challenge",
               "commonsense/openbookqa"]


def glue_suite(tmp_path: Path, *, cola_matthews_only: bool = True) -> Any:
    """The real conf/suite/glue.yaml (which names CoLA's one averaged metric), or without that line."""
    raw = yaml.safe_load((SUITE_DIR / "glue.yaml").read_text())
    assert raw["average"]["task_metrics"] == {"glue/cola": ["matthews"]}
    if not cola_matthews_only:
        del raw["average"]["task_metrics"]
    d = tmp_path / f"suites-{cola_matthews_only}"  # load_suites caches per directory
    d.mkdir(exist_ok=True)
    (d / "glue.yaml").write_text(yaml.safe_dump(raw))
    return load_suites(str(d))["glue"]


# ------------------------------------------------------------------------------------------------
# The averaging function on its own
# ------------------------------------------------------------------------------------------------


def test_glue_score_reproduces_the_public_leaderboard(tmp_path: Path) -> None:
    if not GLUE_CSV.is_file():
        pytest.skip(f"{GLUE_CSV} not present")
    table = pd.read_csv(GLUE_CSV)
    scores = table[list(GLUE_COLUMNS)].astype(float)
    scores.columns = pd.MultiIndex.from_tuples(list(GLUE_COLUMNS.values()), names=["task", "metric"])
    # CoLA also records accuracy; the GLUE score must not count it (task_metrics: Matthews only)
    scores[("glue/cola", "accuracy")] = 99.0
    avg = suite_average(scores, glue_suite(tmp_path))
    assert avg.notna().all()
    close = (avg - table["Score"]).abs() <= 0.05 + 1e-9
    assert int(close.sum()) >= 101, table.loc[~close, ["Model", "Score"]].assign(ours=avg[~close])
    # the AX diagnostic is not a GLUE task: adding it changes nothing
    with_ax = scores.copy()
    with_ax[("glue/ax", "matthews")] = table["AX"]
    pd.testing.assert_series_equal(suite_average(with_ax, glue_suite(tmp_path)), avg)


def test_without_task_metrics_cola_accuracy_would_be_averaged_in(tmp_path: Path) -> None:
    """Why glue.yaml needs ``task_metrics``: under ``metrics: all`` alone CoLA's accuracy counts."""
    one = {("glue/cola", "matthews"): 0.5, ("glue/cola", "accuracy"): 0.9}
    plain = glue_suite(tmp_path, cola_matthews_only=False)
    named = glue_suite(tmp_path)
    assert unit_scores(one, plain)["glue/cola"].iloc[0] == pytest.approx(0.7)
    assert unit_scores(one, named)["glue/cola"].iloc[0] == pytest.approx(0.5)
    assert math.isnan(unit_scores({("glue/cola", "accuracy"): 0.9}, named)["glue/cola"].iloc[0])


def test_commonsense_average_is_the_mean_of_eight_primary_accuracies() -> None:
    suite = load_suites()["commonsense"]
    acc = [0.70, 0.80, 0.75, 0.60, 0.65, 0.85, 0.55, 0.62]
    scores = {(t, "accuracy"): a for t, a in zip(COMMONSENSE, acc)}
    scores[("commonsense/boolq", "loss")] = 9.0  # not the primary metric: ignored
    primary = {t: "accuracy" for t in COMMONSENSE}
    assert suite_average(scores, suite, primary=primary) == pytest.approx(5.52 / 8)
    assert [u for u, _ in suite.units()] == COMMONSENSE


@pytest.mark.parametrize(("units", "expected"), [
    (None, float("nan")),                                                 # a unit missing: no score
    (("commonsense/boolq", "commonsense/piqa"), (0.7 + 0.8) / 2),         # asked for the covered units
])
def test_partial_coverage(units: tuple[str, ...] | None, expected: float) -> None:
    suite = load_suites()["commonsense"]
    got = suite_average({("commonsense/boolq", "accuracy"): 0.7, ("commonsense/piqa", "accuracy"): 0.8}, suite,
                        units=units)
    assert got == pytest.approx(expected, nan_ok=True)


def test_a_group_needs_all_its_voters(tmp_path: Path) -> None:
    suite = glue_suite(tmp_path)
    both = unit_scores({("glue/mnli-m", "accuracy"): 0.8, ("glue/mnli-mm", "accuracy"): 0.7}, suite)
    half = unit_scores({("glue/mnli-m", "accuracy"): 0.8}, suite)
    assert both["glue/mnli"].iloc[0] == pytest.approx(0.75) and math.isnan(half["glue/mnli"].iloc[0])
    assert list(both.columns) == [u for u, _ in suite.units()] and "glue/mnli-m" not in both.columns


def test_task_metrics_is_validated(tmp_path: Path) -> None:
    raw = yaml.safe_load((SUITE_DIR / "glue.yaml").read_text())
    raw["average"]["task_metrics"] = {"glue/nope": ["f1"], "glue/cola": []}
    (tmp_path / "glue.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as err:
        load_suites(str(tmp_path))
    assert "average.task_metrics.glue/nope" in str(err.value) and "average.task_metrics.glue/cola" in str(err.value)


# ------------------------------------------------------------------------------------------------
# Records with eval.subtasks
# ------------------------------------------------------------------------------------------------


def multi_record(method: str, task: str, seed: int, sets: dict[str, dict[str, float]], *, primary: str = "accuracy",
                 model: str = "smollm2-135m", salt: str = "") -> dict[str, Any]:
    """A record of one job evaluated on several sets, as harness/dispatch.eval_block writes it: the
    top-level metrics repeat the first set's."""
    first = next(iter(sets))
    rec = make_record(method, task, seed, sets[first][primary], metric=primary, model=model)
    rec["run"]["signature"] = hashlib.sha1(f"{method}{task}{seed}{model}{salt}".encode()).hexdigest()
    ev = rec["eval"]
    ev["metrics"] = {k: {"value": v, "direction": "max"} for k, v in sets[first].items()}
    ev["baseline"] = {"kind": "majority", "metrics": {primary: 0.5}}
    ev["subtasks"] = {name: {"metrics": {k: {"value": v, "direction": "max"} for k, v in ms.items()},
                             "primary_metric": primary, "n_examples": 100, "split": "test",
                             "baseline": {"kind": "majority", "metrics": {primary: 0.5}}}
                      for name, ms in sets.items()}
    return rec


def commonsense_sets(base: float) -> dict[str, dict[str, float]]:
    return {t: {"accuracy": base + 0.01 * i} for i, t in enumerate(COMMONSENSE)}


def test_a_multi_set_record_gives_one_row_set_per_subtask() -> None:
    long = long_table([multi_record("lora", "commonsense/all", 0, commonsense_sets(0.5))])
    assert list(long["task"]) == COMMONSENSE and long["subtask"].all() and long["primary"].all()
    assert long["value"].tolist() == pytest.approx([0.5 + 0.01 * i for i in range(8)])
    assert "commonsense/all" not in set(long["task"])
    old = long_table([make_record("lora", "glue/sst2", 0, 0.9)])  # a record without subtasks: as before
    assert old["task"].tolist() == ["glue/sst2"] and not old["subtask"].any()


def test_dedicated_record_wins_over_the_multi_set_one() -> None:
    recs = [multi_record("lora", "commonsense/all", 0, commonsense_sets(0.5)),
            make_record("lora", "commonsense/piqa", 0, 0.9, model="smollm2-135m"),
            multi_record("lora", "commonsense/all", 1, commonsense_sets(0.6))]
    agg = aggregate(long_table(recs))
    piqa = agg[agg["task"] == "commonsense/piqa"].iloc[0]
    # seed 0: the dedicated 0.9 (not 0.51); seed 1: 0.61 → two seeds, not three values
    assert (piqa["n_seeds"], piqa["mean"]) == (2, pytest.approx((0.9 + 0.61) / 2))
    boolq = agg[agg["task"] == "commonsense/boolq"].iloc[0]
    assert (boolq["n_seeds"], boolq["mean"]) == (2, pytest.approx(0.55))


@pytest.mark.parametrize("failed_first", [False, True])
def test_two_multi_set_records_on_one_seed_count_once_as_their_mean(failed_first: bool) -> None:
    recs = [multi_record("lora", "commonsense/all", 0, commonsense_sets(0.5)),
            multi_record("lora", "commonsense/all", 0, commonsense_sets(0.7), salt="r16")]
    if failed_first:  # a failed row before them: the kept rows' positions shift
        recs.insert(0, make_record("dora", "commonsense/all", 0, None, model="smollm2-135m", status="failed"))
    long = one_value_per_seed(long_table(recs, include_failed=True), success_only=True)
    assert len(long) == 8 and long["value"].tolist() == pytest.approx([0.6 + 0.01 * i for i in range(8)])
    assert (long["status"] == "success").all()
    agg = aggregate(long_table(recs))
    assert (agg["n_seeds"] == 1).all() and agg["std"].isna().all()


def test_no_subtask_no_change() -> None:
    long = long_table([make_record("lora", "glue/sst2", 0, 0.9), make_record("lora", "glue/sst2", 0, 0.8)])
    assert one_value_per_seed(long) is long  # duplicates among plain records are left as they were


# ------------------------------------------------------------------------------------------------
# The boards: voters, the average column, caches
# ------------------------------------------------------------------------------------------------


def commonsense_records() -> list[dict[str, Any]]:
    """Two methods × two seeds of commonsense/all; a third method with only commonsense/piqa."""
    out = []
    for method, base in (("lora", 0.50), ("dora", 0.55)):
        for seed, eps in enumerate((0.0, 0.02)):
            out.append(multi_record(method, "commonsense/all", seed, commonsense_sets(base + eps)))
    out.append(make_record("vera", "commonsense/piqa", 0, 0.4, model="smollm2-135m"))
    return out


KEY_CS = "smoke__smollm2-135m__commonsense"


def test_commonsense_board_has_eight_voters_and_the_average(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_records(results, commonsense_records())
    rc, err = run(results, tmp_path / "out", "--jobs", "1")
    assert rc == 0, err
    doc = json.loads((tmp_path / "out" / f"{KEY_CS}.json").read_text())
    assert doc["tasks"] == COMMONSENSE  # the suite's order, not alphabetical
    avg = doc["average"]
    assert avg["name"] == "Avg. accuracy" and avg["label"] == "Avg. accuracy" and avg["units"] == COMMONSENSE
    mean_offsets = np.mean([0.01 * i for i in range(8)])
    lora = avg["cells"]["lora"]
    assert lora["mean"] == pytest.approx(0.51 + mean_offsets) and lora["n_seeds"] == 2
    assert lora["std"] == pytest.approx(np.std([0.50 + mean_offsets, 0.52 + mean_offsets], ddof=1))
    assert avg["cells"]["vera"]["mean"] is None and avg["cells"]["vera"]["lacking"] == [
        t for t in COMMONSENSE if t != "commonsense/piqa"]
    md = (tmp_path / "out" / f"{KEY_CS}.md").read_text()
    assert "| Avg. accuracy ↑ |" in md and "Avg. accuracy left blank for 1 method(s)" in md
    assert "vera (no commonsense/boolq" in md
    vera_row = next(line for line in md.splitlines() if line.startswith("| vera |"))
    assert vera_row.split(" | ")[9] == "—"  # method, 8 voters, then the average
    csv = pd.read_csv(tmp_path / "out" / f"{KEY_CS}.csv", index_col="method")
    assert csv.loc["dora", "Avg. accuracy"] == pytest.approx(0.56 + mean_offsets)
    assert csv.loc["dora", "Avg. accuracy:tasks"] == 8 and pd.isna(csv.loc["vera", "Avg. accuracy"])
    assert "Avg. accuracy ↑</th>" in (tmp_path / "out" / "index.html").read_text()
    # the average is reported, never a voter of the rules
    assert "Avg. accuracy" not in doc["tasks"] and avg["ranked"] is False


def glue_records(*, with_cola: bool) -> list[dict[str, Any]]:
    """MNLI as one job with two sets, MRPC with two metrics, SST-2, and optionally CoLA (two metrics)."""
    out = []
    for method, d in (("lora", 0.0), ("dora", 0.1)):
        for seed, eps in enumerate((0.0, 0.04)):
            out.append(multi_record(method, "glue/mnli", seed, {"glue/mnli-m": {"accuracy": 0.80 + d + eps},
                                                                 "glue/mnli-mm": {"accuracy": 0.78 + d + eps}},
                                    model="minilm-l6"))
            mrpc = make_record(method, "glue/mrpc", seed, 0.70 + d + eps)
            mrpc["eval"]["metrics"]["f1"] = {"value": 0.60 + d + eps, "direction": "max"}
            out.append(mrpc)
            out.append(make_record(method, "glue/sst2", seed, 0.90 + d + eps))
            if with_cola:
                cola = make_record(method, "glue/cola", seed, 0.40 + d + eps, metric="matthews")
                cola["eval"]["metrics"]["accuracy"] = {"value": 0.99, "direction": "max"}
                out.append(cola)
    return out


def test_glue_board_mnli_columns_partial_average_and_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "known_suites", lambda names=None: {"glue": glue_suite(tmp_path)})
    results = tmp_path / "results"
    write_records(results, glue_records(with_cola=True))
    rc, err = run(results, tmp_path / "out", "--jobs", "1")
    assert rc == 0, err
    doc = json.loads((tmp_path / "out" / "smoke__minilm-l6__glue.json").read_text())
    assert doc["tasks"] == ["glue/cola", "glue/sst2", "glue/mrpc", "glue/mnli-m", "glue/mnli-mm"]
    avg = doc["average"]
    assert avg["label"] == "GLUE score over 4 of 9 tasks"
    assert avg["units"] == ["glue/cola", "glue/sst2", "glue/mrpc", "glue/mnli"]
    # lora, by hand: cola (Matthews only) 0.42, sst2 0.92, mrpc mean(0.72, 0.62), mnli mean(0.82, 0.80)
    assert avg["cells"]["lora"]["mean"] == pytest.approx((0.42 + 0.92 + 0.67 + 0.81) / 4)
    per_seed = [(0.40 + 0.90 + 0.65 + 0.79) / 4, (0.44 + 0.94 + 0.69 + 0.83) / 4]
    assert avg["cells"]["lora"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    md = (tmp_path / "out" / "smoke__minilm-l6__glue.md").read_text()
    assert "GLUE score over 4 of 9 tasks ↑" in md
    assert "no complete score on glue/stsb, glue/qqp, glue/qnli, glue/rte, glue/wnli" in " ".join(md.split())  # prose is wrapped


def test_record_cache_serves_subtask_rows_and_its_version_changed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_records(results, commonsense_records())
    expected = long_table(list(iter_records(results)), include_failed=True)
    for _ in range(2):  # cold, then from the cache file
        frame, _seeds = cache.read_frame(results, jobs=1)
        assert frame.equals(expected)
    assert cache.CACHE_VERSION >= 4  # 3 cached records without their subtask rows


def test_board_cache_sees_a_changed_suite_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conf/suite lies outside the code digest: the average enters the board key itself."""
    results = tmp_path / "results"
    write_records(results, glue_records(with_cola=True))
    monkeypatch.setattr(report, "known_suites", lambda names=None: {"glue": glue_suite(tmp_path)})
    assert run(results, tmp_path / "a", "--jobs", "1")[0] == 0
    first = outputs(tmp_path / "a")
    changed = copy.deepcopy(glue_suite(tmp_path, cola_matthews_only=False))
    monkeypatch.setattr(report, "known_suites", lambda names=None: {"glue": changed})
    assert run(results, tmp_path / "b", "--jobs", "1")[0] == 0
    assert outputs(tmp_path / "b")["smoke__minilm-l6__glue.md"] != first["smoke__minilm-l6__glue.md"]
    assert run(results, tmp_path / "c", "--jobs", "1", "--no-cache")[0] == 0
    assert outputs(tmp_path / "b") == outputs(tmp_path / "c")


def test_unknown_suite_keeps_alphabetical_voters_and_no_average() -> None:
    recs = [make_record(m, f"mysuite/{t}", 0, v) for m, v in (("a", 0.5), ("b", 0.6)) for t in ("zeta", "alpha")]
    (board,) = boards(aggregate(long_table(recs)), voter_order={"glue": ["glue/sst2"]})
    assert list(board.scores.columns) == ["mysuite/alpha", "mysuite/zeta"] and board.average is None


@pytest.mark.parametrize(("names", "loads"), [
    (["suite0", "mysuite", ""], False),    # ad-hoc suites: nothing loaded
    (["glue", "mysuite"], True),           # one known: every suite of conf/suite
    (None, True),
])
def test_known_suites_loads_only_when_a_board_needs_it(names: list[str] | None, loads: bool) -> None:
    from harness.leaderboard.suites import known_suites

    got = known_suites(names)
    assert set(got) == (set(load_suites()) if loads else set())
    assert not loads or {"glue", "commonsense", "gsm8k"} <= set(got)


def test_a_superseded_multi_set_run_still_counts_as_a_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    recs = [multi_record("lora", "commonsense/all", 0, commonsense_sets(0.5))]
    recs += [make_record("lora", t, 0, 0.9, model="smollm2-135m") for t in COMMONSENSE]
    write_records(results, recs)
    assert run(results, tmp_path / "out", "--jobs", "1")[0] == 0
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "Generated from 9 successful run record(s)" in text
    doc = json.loads((tmp_path / "out" / f"{KEY_CS}.json").read_text())
    assert doc["cells"]["lora"]["commonsense/piqa"] == {"mean": 0.9, "std": None, "n_seeds": 1.0}
