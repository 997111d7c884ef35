"""Boards from records: the hardware a run's costs were measured on, and the note when a board mixes it."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.leaderboard import report
from harness.leaderboard.table import aggregate, boards, hardware_by_board, hardware_label, long_table
from tests.harness.leaderboard.test_report import make_record, write_records

H100 = {"device": "cuda", "hardware": {"cpu": "Xeon", "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA A100"]}}


@pytest.mark.parametrize(("meta", "label"), [
    (H100, "cuda: NVIDIA H100 80GB HBM3"),
    ({**H100, "device": "cuda:1"}, "cuda: NVIDIA A100"),
    ({**H100, "device": "cuda:7"}, "cuda"),
    ({"device": "cpu", "hardware": {"cpu": "AMD EPYC 9654"}}, "cpu: AMD EPYC 9654"),
    ({"device": "cpu", "hardware": {}}, "cpu"),
    ({"device": "mps"}, "mps"),
    ({"hardware": {"cpu": "x"}}, None),   # an old record that does not say
    (None, None),
])
def test_hardware_label(meta, label):
    assert hardware_label(meta) == label


def _records(devices: list[dict]) -> list[dict]:
    out = []
    for i, meta in enumerate(devices):
        for method, v in (("lora", 0.8), ("dora", 0.7)):
            rec = make_record(method, "glue/sst2", i, v + 0.01 * i)
            rec["meta"].update(meta)
            out.append(rec)
    return out


def test_board_notes_a_hardware_mix_and_only_then():
    cpu = {"device": "cpu", "hardware": {"cpu": "AMD EPYC 9654"}}
    same = long_table(_records([H100, H100]))
    (board,) = boards(aggregate(same), hardware=hardware_by_board(same))
    assert not any("hardware" in n for n in board.notes)

    mixed = long_table(_records([H100, cpu, cpu, {}]))  # the record without a device is not counted
    assert hardware_by_board(mixed) == {("smoke", "minilm-l6", "glue"): {
        "cpu: AMD EPYC 9654": 4, "cuda: NVIDIA H100 80GB HBM3": 2}}
    (board,) = boards(aggregate(mixed), hardware=hardware_by_board(mixed))
    (note,) = [n for n in board.notes if "hardware" in n]
    assert "cpu: AMD EPYC 9654 (4 runs)" in note and "cuda: NVIDIA H100 80GB HBM3 (2 runs)" in note
    assert "train time and peak memory" in note


def test_leaderboard_page_and_markdown_carry_the_note(tmp_path: Path):
    results = tmp_path / "results"
    write_records(results, _records([H100, {"device": "cpu", "hardware": {"cpu": "AMD EPYC 9654"}}]))
    assert report.main(["--results-dir", str(results), "--no-wandb", "--quiet", "--bootstrap", "0",
                        "--jobs", "1"]) == 0
    out = results / "leaderboards"
    md = next(out.glob("smoke__minilm-l6__glue.md")).read_text()
    assert "runs measured on different hardware" in md
    assert "runs measured on different hardware" in (out / "index.html").read_text()


def _capacity_records(counts: dict[str, int | None], target: int = 73_728) -> list[dict]:
    """One record per method and seed; a count of None: a record from a budget without a target."""
    recs = []
    for i, (method, count) in enumerate(counts.items()):
        for seed in (0, 1):
            rec = make_record(method, "glue/sst2", seed, 0.8 + 0.01 * i)
            if count is not None:
                rec["meta"]["capacity"] = {"knob": "r", "value": 8, "target": target, "adapter_params": count,
                                           "deviation": count / target - 1, "met": abs(count / target - 1) <= 0.1}
            recs.append(rec)
    return recs


def test_board_marks_methods_that_ran_off_the_capacity_target(tmp_path: Path):
    # lora meets it exactly, dora 7% under (within ±10%), ia3 and full far off
    counts = {"lora": 73_728, "dora": 69_120, "ia3": 16_128, "full": 22_565_376}
    long = long_table(_capacity_records(counts))
    (board,) = boards(aggregate(long))
    assert board.cost.loc["dora", "capacity_params"] == 69_120 and board.cost.loc["lora", "capacity_target"] == 73_728
    (note,) = [n for n in board.notes if "capacity target" in n]
    assert note.startswith("2 of 4 methods ran off the capacity target of 73,728 adapter parameters by more than ±10%")
    assert "full 22,565,376" in note and "ia3 16,128" in note and "dora" not in note and "lora" not in note

    # without a target (any ordinary budget) there is nothing to mark
    (board,) = boards(aggregate(long_table(_capacity_records(dict.fromkeys(counts)))))
    assert not any("capacity" in n for n in board.notes)


def test_markdown_and_page_mark_the_methods_off_the_capacity_target(tmp_path: Path):
    results = tmp_path / "results"
    write_records(results, _capacity_records({"lora": 73_728, "ia3": 16_128}))
    assert report.main(["--results-dir", str(results), "--no-wandb", "--quiet", "--bootstrap", "0",
                        "--jobs", "1"]) == 0
    out = results / "leaderboards"
    md = next(out.glob("smoke__minilm-l6__glue.md")).read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith(("| ia3 ", "| lora "))]
    assert any(r.startswith("| ia3 ") and "‡" in r for r in rows)
    assert all("‡" not in r for r in rows if r.startswith("| lora "))
    assert "‡: the method's adapter count is more than ±10% off the capacity target of 73,728" in " ".join(md.split())
    assert "class='capacity'" in (out / "index.html").read_text()
