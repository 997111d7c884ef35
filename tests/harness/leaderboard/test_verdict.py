"""The verdict and the baselines on boards of known structure: a clear winner, no difference, tasks at
their trivial baseline. Records are real-schema files (with eval.baseline and per-example outcomes)
read by `peftbench leaderboard` itself."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.leaderboard import report
from harness.outcomes import Outcomes, encode_outcomes
from tests.harness.leaderboard.test_report import make_record, write_records

METHODS = ["alpha", "beta", "gamma", "delta"]
N_EX = 400


def _record(method: str, task: str, seed: int, acc: float, *, model: str, base: float | None,
            trainable: int = 10_000, outcomes: bool = True) -> dict[str, Any]:
    rec = make_record(method, task, seed, acc, model=model, trainable=trainable)
    rng = np.random.default_rng(list(f"{method}|{task}|{seed}|{model}".encode()))
    bits = np.zeros(N_EX, np.uint8)
    bits[rng.choice(N_EX, round(acc * N_EX), replace=False)] = 1
    rec["eval"]["metrics"]["accuracy"]["value"] = float(bits.mean())
    rec["eval"]["n_examples"] = N_EX
    if base is not None:
        rec["eval"]["baseline"] = {"kind": "majority", "metrics": {"accuracy": base}, "detail": "always 0"}
    if outcomes:
        rec["eval"]["outcomes"] = encode_outcomes(Outcomes("correct", "accuracy", bits))
    return rec


def _board(model: str, scores: dict[str, dict[str, float]], bases: dict[str, float], *, seeds: int = 2,
           params: dict[str, int] | None = None, outcomes: bool = True) -> list[dict[str, Any]]:
    recs = []
    for task, by_method in scores.items():
        for method, acc in by_method.items():
            for seed in range(seeds):
                recs.append(_record(method, task, seed, acc + 0.005 * seed, model=model, base=bases.get(task),
                                    trainable=(params or {}).get(method, 10_000), outcomes=outcomes))
    return recs


def _generate(tmp_path: Path, recs: list[dict[str, Any]], **kw: Any) -> tuple[str, dict[str, dict[str, Any]]]:
    results = tmp_path / "results"
    write_records(results, recs)
    text, _, reps = report.generate(results, results / "leaderboards", n_boot=kw.get("n_boot", 30), html=kw.get(
        "html", False), jobs=1, use_cache=False)
    docs = {r.board.model: json.loads((results / "leaderboards" / f"{r.board.key}.json").read_text()) for r in reps}
    return text, docs


CLEAR = {f"glue/t{j}": {"alpha": 0.90, "beta": 0.70, "gamma": 0.69, "delta": 0.68} for j in range(6)}
NOISE_RNG = np.random.default_rng(7)
FLAT = {f"glue/t{j}": {m: float(0.7 + NOISE_RNG.normal(0, 0.01)) for m in METHODS} for j in range(5)}
AT_BASE = {"glue/t0": {m: 0.50 for m in METHODS}, "glue/t1": {m: 0.60 for m in METHODS},
           "glue/t2": {"alpha": 0.85, "beta": 0.80, "gamma": 0.75, "delta": 0.70}}


def test_verdicts_of_boards_with_known_structure(tmp_path: Path) -> None:
    recs = (_board("clear", CLEAR, {t: 0.5 for t in CLEAR}, params={"alpha": 10_600, "beta": 10_000})
            + _board("flat", FLAT, {t: 0.5 for t in FLAT})
            + _board("atbase", AT_BASE, {"glue/t0": 0.5, "glue/t1": 0.6, "glue/t2": 0.5}))
    text, docs = _generate(tmp_path, recs)

    clear = " ".join(docs["clear"]["verdict"])
    f = docs["clear"]["friedman"]
    assert f["significant"]
    assert f"Methods differ significantly over these tasks (Friedman p {report_p(f['pvalue'])}, 6 tasks, 2 seeds)" \
        in clear
    assert "`alpha` is significantly ahead of" in clear and "`delta`" in clear
    assert "`alpha` ranks first under 16 of 16 rules" in clear
    boot = docs["clear"]["bootstrap"]["rules"]
    lose = sorted(1 - b["p_win"]["alpha"] for b in boot.values())
    span = f"in {lose[0]:.0%}" if f"{lose[0]:.0%}" == f"{lose[-1]:.0%}" else f"in {lose[0]:.0%} ("
    assert f"it loses first place {span}" in clear and "of 30 bootstrap resamples over seeds" in clear
    atbase_boot = docs["atbase"]["bootstrap"]["rules"]
    worst = max(1 - b["p_win"]["alpha"] for b in atbase_boot.values() if "alpha" in b["winners"])
    assert f"to {worst:.0%} (" in " ".join(docs["atbase"]["verdict"])
    assert "Every method clears the trivial baseline on all 6 tasks" in clear
    assert "`alpha` beats the runner-up `beta` on 6 of 6 tasks, at 6% more trainable parameters" in clear
    # the same pair on the same examples (two seeds: the sign-flip test of per-example means)
    assert ("On the same examples, `alpha` is significantly ahead of `beta` on 6 of 6 tasks (paired sign-flip "
            "permutation tests, p < 0.05).") in clear
    paired = docs["clear"]["paired"]
    assert paired["reference"] == "alpha" and set(paired["tasks"]) == set(CLEAR)
    for per in paired["tasks"].values():
        assert set(per) == {"beta", "gamma", "delta"}
        assert all(v["test"] == "paired_permutation" and v["n"] == N_EX and v["pvalue"] < 0.01 for v in per.values())

    flat = " ".join(docs["flat"]["verdict"])
    pf = docs["flat"]["friedman"]["pvalue"]
    assert pf >= 0.05
    assert flat.startswith(f"No method is significantly better than another on these 5 tasks (Friedman p "
                           f"{report_p(pf)}, 2 seeds).")

    atbase = " ".join(docs["atbase"]["verdict"])
    assert "On 2 of 3 tasks no method clears the trivial baseline (glue/t0, glue/t1)." in atbase
    cells = docs["atbase"]["intervals"]
    assert all(cells[m]["glue/t0"]["below_baseline"] and cells[m]["glue/t1"]["below_baseline"] for m in METHODS)
    assert not cells["alpha"]["glue/t2"]["below_baseline"]
    assert cells["alpha"]["glue/t2"]["interval_from"] == "examples"
    lo, hi = cells["alpha"]["glue/t2"]["lo"], cells["alpha"]["glue/t2"]["hi"]
    assert lo < 0.8525 < hi and 0.04 < hi - lo < 0.12   # ~2 × 1.96 × sqrt(.85 × .15 / 800) plus the seeds
    assert docs["atbase"]["baseline"]["glue/t1"] == {"value": 0.6, "kind": "majority"}

    # the printed summary opens with the verdicts; every board's Markdown opens with its own
    head = text.split("\n")
    assert head[0] == "# peftbench leaderboard" and head[2] == "## Verdicts"
    summary = "\n".join(head[:head.index("", 4)]).replace("\n  ", " ")   # the verdict list, lines unwrapped
    assert "- **budget=smoke · model=flat · suite=glue**: No method is significantly" in summary
    md = (tmp_path / "results" / "leaderboards" / "smoke__atbase__glue.md").read_text().splitlines()
    assert md[2].startswith("**Verdict.** ")
    base_row = next(line for line in md if line.startswith("| *baseline*"))
    assert "| 0.600 |" in base_row and "glue/t1 0.6000 (majority)" in "\n".join(md)
    alpha = next(line for line in md if line.startswith("| alpha |"))
    assert alpha.count(report.BELOW_MARK) == 2


def report_p(p: float) -> str:
    from harness.leaderboard.verdict import _p

    return _p(p)


def test_without_outcomes_the_interval_is_over_seeds_and_one_seed_judges_the_mean(tmp_path: Path) -> None:
    """Older records (no outcomes): seeds give the interval; one seed marks a cell at or under baseline."""
    recs = (_board("seeds", AT_BASE, {"glue/t0": 0.5, "glue/t1": 0.6, "glue/t2": 0.5}, outcomes=False)
            + _board("one", AT_BASE, {"glue/t0": 0.5, "glue/t1": 0.6, "glue/t2": 0.5}, seeds=1, outcomes=False))
    _, docs = _generate(tmp_path, recs)
    seeds = docs["seeds"]["intervals"]["alpha"]["glue/t2"]
    assert seeds["interval_from"] == "seeds" and seeds["lo"] < 0.8525 < seeds["hi"]
    one = docs["one"]["intervals"]
    assert one["alpha"]["glue/t2"]["interval_from"] is None and not one["alpha"]["glue/t2"]["below_baseline"]
    assert one["alpha"]["glue/t0"]["below_baseline"]   # 0.50 at a 0.50 baseline
    assert "with one seed per cell, resampling seeds cannot test that" in " ".join(docs["one"]["verdict"])


def test_a_board_without_baselines_says_nothing_about_them(tmp_path: Path) -> None:
    _, docs = _generate(tmp_path, _board("nobase", CLEAR, {}))
    assert not any("baseline" in s for s in docs["nobase"]["verdict"])
    assert docs["nobase"]["baseline"] == {}


@pytest.mark.parametrize("html", [True])
def test_html_puts_the_verdict_above_the_tables(tmp_path: Path, html: bool) -> None:
    _generate(tmp_path, _board("atbase", AT_BASE, {"glue/t0": 0.5, "glue/t1": 0.6, "glue/t2": 0.5}), html=html)
    page = (tmp_path / "results" / "leaderboards" / "index.html").read_text()
    section = page[page.index("<section"):]
    assert section.index("class='verdict'") < section.index("<table")
    assert re.search(r"<p class='verdict'><b>Verdict\.</b> .*On 2 of 3 tasks no method clears", section)
    assert "<i>trivial baseline</i>" in section and "class='below'" in section


def test_printed_markdown_fits_120_columns_for_8_tasks(tmp_path: Path) -> None:
    """Eight long task names, twelve-character method names: every line of leaderboard.md fits."""
    names = ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "social_i_qa", "winogrande"]
    rng = np.random.default_rng(3)
    scores = {f"commonsense/{t}": {f"method-{i:05d}": float(rng.uniform(0.3, 0.9)) for i in range(6)} for t in names}
    text, _ = _generate(tmp_path, _board("smollm2-135m", scores, {t: 0.25 for t in scores}))
    long = [line for line in text.splitlines() if len(line) > 120 and not line.startswith("Generated from")]
    assert not long, long
    # compact table, full per-cell table, cost table, rank table; the paired tests: every method but the winner
    assert sum(line.startswith("| method-") for line in text.splitlines()) == 6 + 6 * 8 + 6 + 6 + 5


def _bits(rec: dict[str, Any]) -> np.ndarray:
    from harness.outcomes import read_outcomes

    return read_outcomes(rec["eval"]["outcomes"]).values.astype(bool)


def test_paired_tests_on_a_one_seed_board_are_exact_mcnemar(tmp_path: Path) -> None:
    """One seed per cell: each pair's p is scipy's exact binomial test on the discordant examples, recounted
    here from the records' own bits; the verdict cites the winner against the runner-up."""
    from scipy.stats import binomtest

    scores = {"glue/t0": {"alpha": 0.80, "beta": 0.74, "gamma": 0.60},
              "glue/t1": {"alpha": 0.70, "beta": 0.69, "gamma": 0.50},
              "glue/t2": {"alpha": 0.75, "beta": 0.60, "gamma": 0.55}}
    recs = _board("mc", scores, {}, seeds=1)
    _, docs = _generate(tmp_path, recs, html=True)
    doc = docs["mc"]
    assert doc["paired"]["reference"] == "alpha"
    bits = {(r["run"]["method"], r["run"]["task"]): _bits(r) for r in recs}
    ahead = 0
    for task, per in doc["paired"]["tasks"].items():
        for m, got in per.items():
            a, b = bits["alpha", task], bits[m, task]
            a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
            assert (got["test"], got["a_only"], got["b_only"]) == ("mcnemar", a_only, b_only)
            assert got["pvalue"] == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-12)
            assert got["diff"] == pytest.approx(a.mean() - b.mean())
        ahead += per["beta"]["pvalue"] < 0.05 and per["beta"]["diff"] > 0
    assert (f"On the same examples, `alpha` is significantly ahead of `beta` on {ahead} of 3 tasks (paired McNemar "
            "tests, p < 0.05).") in " ".join(doc["verdict"])
    md = (tmp_path / "results" / "leaderboards" / "smoke__mc__glue.md").read_text()
    assert "**Paired tests on the same examples**: `alpha` against each method" in md
    gamma_row = next(line for line in md.splitlines() if line.startswith("| gamma | +0."))
    assert gamma_row.count("**") == 3   # 0.2 and more ahead of gamma on 400 examples: p < 0.01 on every task
    page = (tmp_path / "results" / "leaderboards" / "index.html").read_text()
    assert "<h3>Paired tests on the same examples</h3>" in page and "(p = " in page
    # the instance-level rule from the same bits: examples → tasks → overall
    from harness.leaderboard.instance import two_level

    methods = list(doc["systems"])
    overall, counts = two_level({t: np.stack([bits[m, t] for m in methods], axis=1).astype(float) for t in scores})
    ins = doc["instance_level"]
    assert ins["skipped"] is None and ins["scores"] == pytest.approx(dict(zip(methods, overall.tolist())))
    assert ins["task_borda"]["glue/t0"] == pytest.approx(dict(zip(methods, counts["glue/t0"].tolist())))
    assert ins["winners"] == ["alpha"] and "- **instance_borda** (every example a voter" in md
    assert "<b>instance_borda</b>" in page


def test_boards_without_outcomes_have_no_paired_tests(tmp_path: Path) -> None:
    _, docs = _generate(tmp_path, _board("old", CLEAR, {}, outcomes=False))
    assert "paired" not in docs["old"]
    assert not any("same examples" in s for s in docs["old"]["verdict"])


def test_a_matthews_primary_gets_an_interval_over_examples(tmp_path: Path) -> None:
    """CoLA-like: the primary metric (Matthews) is no mean of right/wrong; runs keep their labels and the
    cell's interval is the bootstrap of Matthews itself over examples (and seeds). The paired tests and
    the instance rule read the same labels as right/wrong."""
    from tasks.metrics import matthews

    recs = []
    for method, p_right in (("alpha", 0.85), ("beta", 0.70)):
        for seed in range(2):
            rng = np.random.default_rng(list(f"{method}|{seed}".encode()))
            gold = rng.integers(0, 2, 500)
            pred = np.where(rng.random(500) < p_right, gold, 1 - gold)
            rec = make_record(method, "glue/cola", seed, matthews(pred.tolist(), gold.tolist()), metric="matthews",
                              model="mcc")
            rec["eval"]["n_examples"] = 500
            rec["eval"]["outcomes"] = encode_outcomes(Outcomes("label", "matthews", pred, gold))
            recs.append(rec)
    _, docs = _generate(tmp_path, recs)
    doc = docs["mcc"]
    for m in ("alpha", "beta"):
        cell = doc["intervals"][m]["glue/cola"]
        mean = doc["cells"][m]["glue/cola"]["mean"]
        assert cell["interval_from"] == "examples" and cell["lo"] < mean < cell["hi"]
        assert 0.05 < cell["hi"] - cell["lo"] < 0.25   # ~±2 × 0.035 for 2 × 500 examples, plus the seeds
    assert doc["paired"]["tasks"]["glue/cola"]["beta"]["pvalue"] < 0.01
    assert doc["instance_level"]["winners"] == ["alpha"]


@pytest.mark.parametrize(("alpha_params", "phrase"), [
    (10_600, "at 6% more trainable parameters"),
    (9_000, "at 10% fewer trainable parameters"),
    (3_000, "with 3.3× fewer trainable parameters"),
    (33, "with 303× fewer trainable parameters"),   # a share would read "100% fewer"
    (19_000, "at 90% more trainable parameters"),
    (25_000, "with 2.5× more trainable parameters"),
    (3_030_000, "with 303× more trainable parameters"),   # a share would read "30200% more"
])
def test_the_winner_s_parameter_count_is_said_plainly(tmp_path: Path, alpha_params: int, phrase: str) -> None:
    recs = _board("clear", CLEAR, {t: 0.5 for t in CLEAR}, params={"alpha": alpha_params, "beta": 10_000})
    _, docs = _generate(tmp_path, recs, n_boot=0)
    assert f"`alpha` beats the runner-up `beta` on 6 of 6 tasks, {phrase}." in " ".join(docs["clear"]["verdict"])
