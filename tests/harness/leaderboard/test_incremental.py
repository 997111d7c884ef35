"""The per-board output cache (<results>/leaderboards/.cache/boards): a board whose inputs did not change
is not recomputed, a board that gained a record is, and the files are those of a --no-cache run."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.leaderboard import report
from tests.harness.leaderboard.test_cache import outputs, run
from tests.harness.leaderboard.test_report import board_a_records, board_b_records, make_record, write_records


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Board keys the per-board worker computed (in-process: --jobs 1)."""
    calls: list[str] = []
    real = report.render_board_files

    def wrapped(board, *args):  # type: ignore[no-untyped-def]
        calls.append(board.key)
        return real(board, *args)

    monkeypatch.setattr(report, "render_board_files", wrapped)
    return calls


def test_unchanged_records_recompute_no_board(tmp_path: Path, spy: list[str]) -> None:
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    n_boards = len(spy)
    assert n_boards >= 2
    assert len(list(report.board_cache_dir(results).glob("*.json"))) == n_boards
    spy.clear()
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert spy == []
    assert outputs(tmp_path / "second") == outputs(tmp_path / "first")
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    assert len(spy) == n_boards  # --no-cache bypasses the board cache
    assert outputs(tmp_path / "second") == outputs(tmp_path / "plain")


def test_new_record_recomputes_only_its_board(tmp_path: Path, spy: list[str]) -> None:
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    keys = sorted(spy)
    spy.clear()
    # a new seed of an existing cell of one board
    new = make_record("lora", "glue/sst2", 7, 0.5)
    write_records(results, [new])
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert len(spy) == 1 and spy[0] in keys
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    assert outputs(tmp_path / "second") == outputs(tmp_path / "plain")
    assert outputs(tmp_path / "second") != outputs(tmp_path / "first")
    spy.clear()
    # other settings are other keys: a different bootstrap recomputes every board
    rc, _ = run(results, tmp_path / "b0", "--jobs", "1", "--bootstrap", "0")
    assert rc == 0 and sorted(spy) == keys


def test_corrupt_board_entry_is_recomputed(tmp_path: Path, spy: list[str]) -> None:
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    n = len(spy)
    spy.clear()
    entry = min(report.board_cache_dir(results).glob("*.json"))
    entry.write_text('{"md": 1}')
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert len(spy) == 1 and n > 1
    assert outputs(tmp_path / "second") == outputs(tmp_path / "first")


def test_cached_report_reads_its_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A board-cache hit gives a report rebuilt from the board's JSON (e.g. for W&B), not re-analysed."""
    results = tmp_path / "results"
    write_records(results, board_a_records())
    _, _, cold = report.generate(results, tmp_path / "o1", ["mean", "borda", "copeland"], n_boot=10, jobs=1)

    def no_analysis(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("re-analysed")

    monkeypatch.setattr(report, "analyze_board", no_analysis)
    _, _, warm = report.generate(results, tmp_path / "o2", ["mean", "borda", "copeland"], n_boot=10, jobs=1)
    assert warm and all(isinstance(r, report.CachedBoardReport) for r in warm)
    for c, w in zip(cold, warm):
        assert w.board.key == c.board.key
        assert w.rankings.keys() == c.rankings.keys()
        for r in c.rankings:
            assert (w.rankings[r].groups, w.rankings[r].winners, w.rankings[r].skipped) == \
                (c.rankings[r].groups, c.rankings[r].winners, c.rankings[r].skipped)
        assert w.condorcet == c.condorcet and w.n_failed == c.n_failed and w.n_boot == c.n_boot
        assert w.live == c.live and w.order() == c.order()
        assert w.positions().equals(c.positions())
        assert (w.bootstrap or {}).keys() == (c.bootstrap or {}).keys()
        for r, br in (c.bootstrap or {}).items():
            assert w.bootstrap[r].p_win == br.p_win and w.bootstrap[r].summary == br.summary
        assert report.board_markdown(w.board, w.rankings, w) == report.board_markdown(c.board, c.rankings, c)


def test_one_board_on_two_processes_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --jobs 2 and a single board to redo, its bootstrap runs beside its figures (render_board_split)."""
    calls: list[str] = []
    real = report.render_board_split

    def wrapped(board, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(board.key)
        return real(board, *args, **kw)

    monkeypatch.setattr(report, "render_board_split", wrapped)
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    assert run(results, tmp_path / "first", "--jobs", "2")[0] == 0
    assert calls == []
    write_records(results, [make_record("dora", "glue/mrpc", 9, 0.6)])
    assert run(results, tmp_path / "second", "--jobs", "2")[0] == 0
    assert len(calls) == 1
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    assert outputs(tmp_path / "second") == outputs(tmp_path / "plain")


def test_changed_leaderboard_code_recomputes_every_board(tmp_path: Path, spy: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached boards are keyed by a digest of the leaderboard package's source: after an upgrade or
    an edit of the rules or figures, nothing stale is served."""
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    keys = sorted(spy)
    spy.clear()
    assert report._code_digest() == report._code_digest.__wrapped__()  # the digest of the files on disk
    monkeypatch.setattr(report, "_code_digest", lambda: "0" * 64)
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert sorted(spy) == keys


def _paired(out: Path) -> dict[str, object]:
    import json

    return {p.name: json.loads(p.read_text()).get("paired") for p in sorted(out.glob("*.json"))}


def test_boards_recomputed_from_the_record_cache_keep_their_paired_tests(
        tmp_path: Path, spy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The record cache holds no outcome bits, only a digest per run: a board recomputed while every record
    comes from that cache reads its runs' bits from their files again, and gives the paired tests of a
    --no-cache run. Rewriting a run's bits with the same totals changes its digest, so its board (and only
    it) is recomputed and its tests change."""
    import numpy as np

    from harness.leaderboard import cache
    from harness.outcomes import Outcomes, encode_outcomes
    from tests.harness.leaderboard.test_verdict import CLEAR, _board

    results = tmp_path / "results"
    recs = _board("one", CLEAR, {}, seeds=1) + _board("two", CLEAR, {}, seeds=2)
    write_records(results, recs)
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    first = _paired(tmp_path / "first")
    assert all(v and v["reference"] == "alpha" for v in first.values()) and len(first) == 2
    parsed: list[int] = []
    real_parse = cache._parse_chunk
    monkeypatch.setattr(cache, "_parse_chunk", lambda items: parsed.append(len(items)) or real_parse(items))
    for f in report.board_cache_dir(results).glob("*.json"):
        f.unlink()
    spy.clear()
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert parsed == [] and len(spy) == 2   # every record from the cache, every board recomputed
    assert _paired(tmp_path / "second") == first
    assert outputs(tmp_path / "second") == outputs(tmp_path / "first")

    # one run of board "one": the same number right, on other examples
    target = next(r for r in recs if r["run"]["model"] == "one" and r["run"]["method"] == "beta"
                  and r["run"]["task"] == "glue/t0")
    from harness.outcomes import read_outcomes

    bits = read_outcomes(target["eval"]["outcomes"]).values
    target["eval"]["outcomes"] = encode_outcomes(Outcomes("correct", "accuracy", bits[::-1].copy()))
    assert float(bits[::-1].sum()) == target["eval"]["outcomes"]["sum"]
    write_records(results, [target])
    spy.clear()
    assert run(results, tmp_path / "third", "--jobs", "1")[0] == 0
    assert parsed == [1] and len(spy) == 1 and "one" in spy[0]
    third = _paired(tmp_path / "third")
    key = next(k for k in third if "__one__" in k)
    was, now = first[key]["tasks"]["glue/t0"]["beta"], third[key]["tasks"]["glue/t0"]["beta"]
    assert (was["a_only"], was["b_only"]) != (now["a_only"], now["b_only"]) and was["diff"] == now["diff"]
    assert np.isclose(now["diff"], 0.9 - 0.7)
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    assert outputs(tmp_path / "third") == outputs(tmp_path / "plain")


def test_one_board_with_outcomes_on_two_processes_gives_the_same_bytes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The split path (bootstrap in a second process) with per-example outcomes: paired tests, the instance
    rule and the intervals over examples come out as in a one-process --no-cache run."""
    from tests.harness.leaderboard.test_verdict import CLEAR, _board

    calls: list[str] = []
    real = report.render_board_split

    def wrapped(board, *args, **kw):  # type: ignore[no-untyped-def]
        calls.append(board.key)
        return real(board, *args, **kw)

    monkeypatch.setattr(report, "render_board_split", wrapped)
    results = tmp_path / "results"
    write_records(results, _board("one", CLEAR, {}, seeds=2) + _board("two", CLEAR, {}, seeds=1))
    assert run(results, tmp_path / "first", "--jobs", "2")[0] == 0
    extra = _board("one", {"glue/t0": {"alpha": 0.9}}, {}, seeds=3)[-1]   # a third seed of one cell
    write_records(results, [extra])
    assert run(results, tmp_path / "second", "--jobs", "2")[0] == 0
    assert len(calls) == 1 and "__one__" in calls[0]
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    second = outputs(tmp_path / "second")
    assert second == outputs(tmp_path / "plain")
    assert "Paired tests on the same examples" in second["index.html"]


def test_unchanged_output_files_are_left_alone_and_edited_ones_rewritten(tmp_path: Path) -> None:
    """Regenerating into the same folder writes only the files whose bytes differ: an unchanged board's
    files keep their mtime, and a file edited in between (same size, or another) gets its content back."""
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    out = tmp_path / "out"
    assert run(results, out, "--jobs", "1")[0] == 0
    first = outputs(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and p.name != "index.html"}
    assert run(results, out, "--jobs", "1")[0] == 0
    assert outputs(out) == first
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps
    md = next(p for p in sorted(out.glob("*.md")) if p.name != "leaderboard.md")
    text = md.read_text()
    assert "lora" in text
    md.write_text(text.replace("lora", "LORA"))              # same size, other bytes
    (out / "cells.csv").write_text("stale\n")               # another size
    assert run(results, out, "--jobs", "1")[0] == 0
    assert outputs(out) == first


def test_recomputed_board_reads_only_new_or_changed_outcomes(tmp_path: Path, spy: list[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-board outcomes cache (record file → its inline outcome blocks, keyed by size and mtime): a
    board recomputed later parses only the records added or changed since; a changed, an added and a
    removed record give the files of a --no-cache run."""
    from harness.outcomes import Outcomes, encode_outcomes, read_outcomes
    from tests.harness.leaderboard.test_verdict import CLEAR, _board

    fresh: list[str] = []
    real = report._inline_outcome_blocks
    monkeypatch.setattr(report, "_inline_outcome_blocks",
                        lambda rec: fresh.append(rec["run"]["signature"]) or real(rec))
    results = tmp_path / "results"
    recs = _board("one", CLEAR, {}, seeds=2) + _board("two", CLEAR, {}, seeds=1)
    write_records(results, recs)
    assert run(results, tmp_path / "first", "--jobs", "1")[0] == 0
    assert len(fresh) == len(recs) and len(list((results / "leaderboards" / ".cache" / "outcomes").glob("*.json"))) == 2
    for f in report.board_cache_dir(results).glob("*.json"):   # every board recomputed: no record parsed again
        f.unlink()
    fresh.clear()
    spy.clear()
    assert run(results, tmp_path / "second", "--jobs", "1")[0] == 0
    assert fresh == [] and len(spy) == 2
    assert outputs(tmp_path / "second") == outputs(tmp_path / "first")

    target = next(r for r in recs if r["run"]["model"] == "one" and r["run"]["method"] == "beta")
    bits = read_outcomes(target["eval"]["outcomes"]).values
    target["eval"]["outcomes"] = encode_outcomes(Outcomes("correct", "accuracy", bits[::-1].copy()))
    added = _board("one", {"glue/t0": {"alpha": 0.9}}, {}, seeds=3)[-1]
    write_records(results, [target, added])
    gone = next(r for r in recs if r["run"]["model"] == "one" and r["run"]["method"] == "alpha")
    (results / "records" / f"{gone['run']['signature']}.json").unlink()
    fresh.clear()
    spy.clear()
    assert run(results, tmp_path / "third", "--jobs", "1")[0] == 0
    assert sorted(fresh) == sorted([target["run"]["signature"], added["run"]["signature"]]) and len(spy) == 1
    assert run(results, tmp_path / "plain", "--jobs", "1", "--no-cache")[0] == 0
    assert outputs(tmp_path / "third") == outputs(tmp_path / "plain")
    assert outputs(tmp_path / "third") != outputs(tmp_path / "second")
