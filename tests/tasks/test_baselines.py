"""Trivial baselines: hand-computed on small example sets, and on the real reported splits where the
literature states them (WNLI's 56.3% majority, BoolQ's 62.2%)."""
from __future__ import annotations

import pytest

from tasks import Example
from tasks.baselines import baseline

MRPC = {"name": "glue/mrpc", "protocol": "classify", "baseline": "majority",
        "metrics": [{"name": "accuracy", "direction": "max"}, {"name": "f1", "direction": "max"}]}


def test_majority_scores_every_metric_of_the_task() -> None:
    ex = [Example(text_a="x", label=y) for y in (1, 1, 1, 0, 0)]
    out = baseline(MRPC, ex)
    assert out["kind"] == "majority" and "always 1" in out["detail"]
    # always 1: accuracy 3/5; tp 3, fp 2, fn 0: F1 = 6/8
    assert out["metrics"] == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(0.75)}


def test_majority_tie_takes_the_first_label_and_mcc_is_zero() -> None:
    cola = {"name": "glue/cola", "protocol": "classify", "baseline": "majority",
            "metrics": [{"name": "matthews", "direction": "max"}, {"name": "accuracy", "direction": "max"}]}
    out = baseline(cola, [Example(text_a="x", label=y) for y in (0, 1, 1, 0)])
    assert out["metrics"] == {"matthews": 0.0, "accuracy": 0.5} and "always 0" in out["detail"]


def test_chance_is_the_mean_of_one_over_the_options() -> None:
    arc = {"name": "commonsense/arc_easy", "protocol": "generate", "baseline": "chance",
           "metrics": [{"name": "accuracy", "direction": "max"}]}
    ex = [Example(prompt="p", answer="answer1", choices=("answer1", "answer2", "answer3", "answer4")),
          Example(prompt="p", answer="answer1", choices=("answer1", "answer2", "answer3", "answer4", "answer5")),
          Example(prompt="p", answer="answer2", choices=("answer1", "answer2", "answer3"))]
    out = baseline(arc, ex)
    assert out["metrics"]["accuracy"] == pytest.approx((1 / 4 + 1 / 5 + 1 / 3) / 3)
    assert out["detail"] == "uniform pick among 3-5 options"
    loglik = {**arc, "protocol": "loglik", "loglik": {"metrics": [{"name": "acc", "direction": "max"},
                                                                  {"name": "acc_norm", "direction": "max"}]}}
    assert set(baseline(loglik, ex)["metrics"]) == {"acc", "acc_norm"}


def test_regression_chance_and_open_answers_zero() -> None:
    stsb = {"name": "glue/stsb", "protocol": "classify", "regression": True, "baseline": "chance",
            "metrics": [{"name": "pearson", "direction": "max"}, {"name": "spearman", "direction": "max"}]}
    assert baseline(stsb, [Example(text_a="a", label=1.5)])["metrics"] == {"pearson": 0.0, "spearman": 0.0}
    gsm = {"name": "gsm8k/gsm8k", "protocol": "generate", "baseline": "zero",
           "metrics": [{"name": "exact_match", "direction": "max"}]}
    assert baseline(gsm, [Example(prompt="q", answer="3")])["metrics"] == {"exact_match": 0.0}
    with pytest.raises(ValueError, match="no examples"):
        baseline(gsm, [])


@pytest.mark.integration
@pytest.mark.parametrize(("task", "metric", "expected"), [
    ("glue/wnli", "accuracy", 40 / 71),            # the 56.3% every WNLI paper mentions
    ("glue/rte", "accuracy", 146 / 277),
    ("glue/mrpc", "f1", 0.8122270742358079),       # 279 positives of 408: F1 of always-positive
    ("commonsense/boolq", "accuracy", 2033 / 3270),  # 62.2%, BoolQ's majority baseline
])
def test_baselines_on_the_real_reported_splits(task: str, metric: str, expected: float,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks
    from tests.conftest import compose_dict

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tasks.resolve_task(compose_dict([f"task={task}"])["task"], None)
    if tasks.data_problems(cfg, None):
        pytest.skip("shared data not available")
    data = tasks.load_task(cfg, None)
    kind = (cfg.get("evals") or {}).get(task, {}).get("baseline")
    assert baseline(cfg, data.eval, kind=kind)["metrics"][metric] == pytest.approx(expected)
