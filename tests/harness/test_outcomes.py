"""Per-example outcomes: encoding round trips, sidecars and their sha256, the record's eval block,
and records written before outcomes existed."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.evaluate import SetResult, example_outcomes
from harness.outcomes import (
    INLINE_LIMIT,
    OutcomeError,
    Outcomes,
    correct_per_example,
    encode_outcomes,
    read_outcomes,
    record_outcomes,
)
from tasks.metrics import accuracy, exact_match


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 4099])
def test_correct_outcomes_round_trip_inline(n: int) -> None:
    bits = np.random.default_rng(n).integers(0, 2, n).astype(np.uint8)
    block = encode_outcomes(Outcomes("correct", "accuracy", bits))
    assert "data" in block and block["n"] == n and block["sum"] == bits.sum()
    back = read_outcomes(json.loads(json.dumps(block)))
    assert back is not None and back.kind == "correct" and back.metric == "accuracy"
    np.testing.assert_array_equal(back.values, bits)


def test_thousand_examples_stay_a_short_string() -> None:
    block = encode_outcomes(Outcomes("correct", "accuracy", np.ones(1000, np.uint8)))
    assert len(block["data"]) == 168


def test_regression_predictions_round_trip_with_references() -> None:
    rng = np.random.default_rng(0)
    pred, ref = rng.normal(size=50), rng.uniform(0, 5, 50)
    back = read_outcomes(encode_outcomes(Outcomes("prediction", "pearson", pred, ref)))
    assert back is not None
    np.testing.assert_allclose(back.values, pred.astype(np.float32))
    np.testing.assert_allclose(back.reference, ref.astype(np.float32))


def test_large_payload_goes_to_a_checked_sidecar(tmp_path: Path) -> None:
    n = INLINE_LIMIT * 8   # bits: over the inline limit once base64-encoded
    bits = (np.arange(n) % 3 == 0).astype(np.uint8)
    block = encode_outcomes(Outcomes("correct", "accuracy", bits), record_dir=tmp_path, stem="abc",
                            set_name="commonsense/piqa")
    assert "data" not in block and block["path"] == "outcomes/abc.commonsense_piqa.bin"
    assert (tmp_path / block["path"]).stat().st_size == block["bytes"] == n // 8
    np.testing.assert_array_equal(read_outcomes(block, record_dir=tmp_path).values, bits)
    with pytest.raises(OutcomeError, match="record's folder"):
        read_outcomes(block)
    raw = bytearray((tmp_path / block["path"]).read_bytes())
    raw[0] ^= 1
    (tmp_path / block["path"]).write_bytes(bytes(raw))
    with pytest.raises(OutcomeError, match="sha256"):
        read_outcomes(block, record_dir=tmp_path)


def test_bad_blocks_are_refused() -> None:
    good = encode_outcomes(Outcomes("correct", "accuracy", np.ones(9, np.uint8)))
    with pytest.raises(OutcomeError, match="bits"):
        read_outcomes({**good, "n": 17})
    with pytest.raises(OutcomeError, match="base64"):
        read_outcomes({**good, "data": "not base64!"})
    with pytest.raises(OutcomeError, match="format"):
        read_outcomes({**good, "format": 99})
    with pytest.raises(OutcomeError, match="0 or 1"):
        encode_outcomes(Outcomes("correct", "accuracy", np.array([0, 2])))


def test_correct_per_example_means_equal_the_metric() -> None:
    preds, refs = [1, 0, None, 2, 2], [1, 1, 0, 2, 0]
    name, c = correct_per_example(["accuracy", "f1"], preds, refs)
    assert name == "accuracy" and np.mean(c) == accuracy(preds, refs)
    preds, refs = ["1,080", "$18.00", None, "7", "0.50"], ["1080", "18", "3", "8", ".5"]
    name, c = correct_per_example(["exact_match"], preds, refs)
    assert name == "exact_match" and c == [1, 1, 0, 0, 1] and np.mean(c) == exact_match(preds, refs)


def test_example_outcomes_by_task_kind() -> None:
    reg = example_outcomes({"regression": True}, ["pearson"], [0.5, 1.0], [1.0, 2.0])
    assert reg.kind == "prediction" and reg.reference is not None
    cls = example_outcomes({}, ["accuracy"], [1, 0], [1, 1])
    assert cls.kind == "correct" and cls.values.tolist() == [1, 0]
    # CoLA: Matthews reads the whole confusion matrix, so the labels themselves are kept
    cola = example_outcomes({}, ["matthews", "accuracy"], [1, 0, 1], [1, 1, 0])
    assert cola.kind == "label" and cola.values.tolist() == [1, 0, 1] and cola.reference.tolist() == [1, 1, 0]
    # answer words (not integer labels) stay right/wrong even under F1
    words = example_outcomes({}, ["f1"], ["yes", "no"], ["yes", "yes"])
    assert words.kind == "correct"


@pytest.mark.parametrize("n", [1, 40, 3000])
def test_label_outcomes_round_trip(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    pred, gold = rng.integers(0, 3, n), rng.integers(0, 3, n)
    block = encode_outcomes(Outcomes("label", "matthews", pred, gold), record_dir=tmp_path, stem="s")
    assert block["sum"] == float((pred == gold).sum()) and block["n"] == n
    assert ("path" in block) == (n == 3000)   # 24 kB of int32 pairs: a sidecar
    back = read_outcomes(json.loads(json.dumps(block)), record_dir=tmp_path)
    assert back is not None and back.kind == "label" and back.metric == "matthews"
    np.testing.assert_array_equal(back.values, pred)
    np.testing.assert_array_equal(back.reference, gold)
    with pytest.raises(OutcomeError, match="reference"):
        Outcomes("label", "matthews", pred, None)


def _spec(tmp_path: Path) -> SimpleNamespace:
    task = {"name": "suite/a", "version": 1, "protocol": "classify",
            "metrics": [{"name": "accuracy", "direction": "max"}]}
    return SimpleNamespace(task=task, signature="f" * 40, record_path=tmp_path / "records" / ("f" * 40 + ".json"))


def _result(sets: list[SetResult]) -> SimpleNamespace:
    return SimpleNamespace(eval_history=[], final_eval={"metrics": sets[0].metrics, "n_examples": sets[0].n_examples,
                                                        "samples": [], "eval_time_s": 0.1, "sets": sets})


def _set(name: str, bits: list[int]) -> SetResult:
    return SetResult(name=name, split="test", metrics={"accuracy": float(np.mean(bits))}, n_examples=len(bits),
                     baseline={"kind": "majority", "metrics": {"accuracy": 0.5}, "detail": ""},
                     outcomes=Outcomes("correct", "accuracy", np.array(bits, np.uint8)))


def test_eval_block_keeps_outcomes_per_set_and_reads_back(tmp_path: Path) -> None:
    from harness.dispatch import eval_block

    spec = _spec(tmp_path)
    one = eval_block(spec, _result([_set("suite/a", [1, 0, 1])]))
    rec = {"run": {"task": "suite/a"}, "eval": json.loads(json.dumps(one))}
    assert record_outcomes(rec)["suite/a"].values.tolist() == [1, 0, 1]
    several = eval_block(spec, _result([_set("suite/a", [1, 0, 1]), _set("suite/b", [0, 0, 1, 1])]))
    rec = {"run": {"task": "suite/all"}, "eval": json.loads(json.dumps(several))}
    got = record_outcomes(rec)
    assert got["suite/a"].values.tolist() == [1, 0, 1] and got["suite/b"].values.tolist() == [0, 0, 1, 1]
    assert read_outcomes(rec["eval"]["outcomes"]).values.tolist() == [1, 0, 1]   # primary set at top level


def test_records_without_outcomes_keep_working() -> None:
    old = {"run": {"task": "suite/a", "status": "success"},
           "eval": {"metrics": {"accuracy": {"value": 0.5, "direction": "max"}}, "primary_metric": "accuracy"}}
    assert record_outcomes(old) == {}
    assert record_outcomes({"run": {"task": "suite/a", "status": "failed"}, "eval": None}) == {}
    assert read_outcomes(None) is None
