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
