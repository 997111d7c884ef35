"""The record cache under <results>/leaderboards/.cache and the --jobs pool: both must be invisible in
the output (same bytes as a no-cache, single-process run), whatever happened to the files in between."""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from harness.leaderboard import cache, report
from harness.leaderboard.report import budget_seeds
from harness.leaderboard.table import LONG_COLUMNS, long_table
from harness.records import iter_records, write_record
from tests.harness.leaderboard.test_report import board_a_records, board_b_records, make_record, write_records

RULES = "mean,borda,copeland,kemeny"


def run(results: Path, out: Path, *extra: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = report.main(["--results-dir", str(results), "--out", str(out), "--bootstrap", "15", "--rules", RULES,
                          "--no-wandb", *extra])
    return rc, err.getvalue()


def outputs(out: Path) -> dict[str, str]:
    """Every written file's text; index.html without its generation timestamp."""
    files = {}
    for p in sorted(out.iterdir()):
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            if p.name == "index.html":
                text = re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated <t>", text)
            files[p.name] = text
    return files


def check_same_as_uncached(results: Path, tmp: Path, tag: str, **kw: str) -> None:
    rc, err = run(results, tmp / f"{tag}-cached", "--jobs", "1")
    assert rc == 0, err
    rc, err = run(results, tmp / f"{tag}-plain", "--no-cache", "--jobs", "1")
    assert rc == 0, err
    assert outputs(tmp / f"{tag}-cached") == outputs(tmp / f"{tag}-plain")
    rows, seeds = cache.read_rows(results, jobs=1)
    recs = list(iter_records(results))
    from harness.leaderboard.table import rows_frame

    a, b = rows_frame(rows), long_table(recs, include_failed=True)
    assert a.equals(b)
    assert seeds == budget_seeds(recs)
    # the long table the leaderboard reads: built from the cache's arrays, same values and dtypes
    frame, seeds2 = cache.read_frame(results, jobs=1)
    assert frame.equals(b) and list(frame.dtypes) == list(b.dtypes) and seeds2 == seeds


def test_cache_invalidation(tmp_path: Path) -> None:
    results = tmp_path / "results"
    recs = board_a_records() + board_b_records()
    write_records(results, recs)
    cpath = cache.cache_path(results)
    check_same_as_uncached(results, tmp_path, "first")
    assert cpath.is_file()
    stamp = cpath.stat().st_mtime_ns

    # unchanged records: the cache is used as is (not rewritten)
    check_same_as_uncached(results, tmp_path, "warm")
    assert cpath.stat().st_mtime_ns == stamp

    # a new record
    write_records(results, [make_record("ia3", "gsm8k/gsm8k", 0, 0.02, model="smollm2-135m")])
    check_same_as_uncached(results, tmp_path, "added")

    # a changed record, same size (0.90 → 0.95); the mtime moves as any rewrite's does
    target = next(p for p in sorted((results / "records").glob("*.json"))
                  if '"value": 0.9,' in p.read_text() and '"method": "lora"' in p.read_text())
    st = target.stat()
    target.write_text(target.read_text().replace('"value": 0.9,', '"value": 0.2,'))
    assert target.stat().st_size == st.st_size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    before = outputs(tmp_path / "added-cached")
    check_same_as_uncached(results, tmp_path, "changed")
    assert outputs(tmp_path / "changed-cached") != before

    # a removed record
    min((results / "records").glob("*.json")).unlink()
    check_same_as_uncached(results, tmp_path, "removed")

    # a corrupt cache, then a cache of the wrong shape, then an inconsistent one: ignored and rebuilt
    cpath.write_bytes(b"\x00{not an npz")
    check_same_as_uncached(results, tmp_path, "corrupt")
    assert cpath.read_bytes().startswith(b"PK")  # a fresh .npz (zip) again
    import json

    import numpy as np

    np.savez(cpath, meta=np.frombuffer(b'{"header": {"version": 1}, "files": []}', dtype=np.uint8))
    check_same_as_uncached(results, tmp_path, "shape")
    with np.load(cpath, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    desc = meta["columns"][2]  # method: string codes
    arrays["c2_code"] = arrays["c2_code"][:-1]  # one row short
    np.savez(cpath, **arrays)
    check_same_as_uncached(results, tmp_path, "entry")
    with np.load(cpath, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["c2_code"] = arrays["c2_code"] + len(desc["strings"]) + 5  # codes out of the string table
    np.savez(cpath, **arrays)
    check_same_as_uncached(results, tmp_path, "codes")


def test_merged_columns_change_kind_and_drop_strings(tmp_path: Path) -> None:
    """A few files parsed into a warm cache are merged with its encoded columns, not re-encoded with them:
    a column whose new rows are of another type (the first failed run: NaN beside ints; a first subtask
    record) becomes mixed, strings of removed records leave the tables, and every step reads as a cold
    parse of the same files does (rows, dtypes, seeds; the board files of a --no-cache run)."""
    results = tmp_path / "results"
    write_records(results, [r for r in board_a_records() if r["run"]["status"] == "success"])
    check_same_as_uncached(results, tmp_path, "start")
    state = cache._load_state(cache.cache_path(results))[0]
    assert state.descs[LONG_COLUMNS.index("trainable_params")]["kind"] == "int"   # successful runs only
    failed = make_record("vera", "glue/sst2", 0, None, status="failed", budget={"name": "other", "seeds": 2})
    write_records(results, [failed])
    check_same_as_uncached(results, tmp_path, "failed")
    state = cache._load_state(cache.cache_path(results))[0]
    assert state.descs[LONG_COLUMNS.index("trainable_params")]["kind"] == "mixed"   # ints and a NaN
    assert "vera" in state.descs[LONG_COLUMNS.index("method")]["strings"]
    rec = make_record("prompt", "glue/mnli", 0, 0.6, model="other-model")
    rec["eval"]["subtasks"] = {name: {"metrics": {"accuracy": {"value": v, "direction": "max"}},
                                      "primary_metric": "accuracy", "n_examples": 64, "split": "dev"}
                               for name, v in (("glue/mnli_m", 0.6), ("glue/mnli_mm", 0.61))}
    write_records(results, [rec])
    check_same_as_uncached(results, tmp_path, "subtasks")
    for r in (failed, rec):
        (results / "records" / f"{r['run']['signature']}.json").unlink()
    check_same_as_uncached(results, tmp_path, "removed")
    now = cache._load_state(cache.cache_path(results))[0]
    assert "vera" not in now.descs[LONG_COLUMNS.index("method")]["strings"]
    assert now.names == sorted(p.name for p in (results / "records").glob("*.json"))


def test_few_new_files_write_a_delta_not_the_whole_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few new, changed or removed files are written as a delta beside the whole cache (which is not
    rewritten); a delta grown past its share is folded into a new whole cache; a delta that names
    another whole cache, or does not load, is ignored. Every step reads as a cold parse does."""
    results = tmp_path / "results"
    write_records(results, board_a_records())
    check_same_as_uncached(results, tmp_path, "start")
    cpath = cache.cache_path(results)
    dpath = cache.delta_path(cpath)
    stamp = cpath.stat().st_mtime_ns
    assert not dpath.exists()
    write_records(results, [make_record("ia3", "gsm8k/gsm8k", 0, 0.02, model="smollm2-135m")])
    check_same_as_uncached(results, tmp_path, "added")
    assert dpath.is_file() and cpath.stat().st_mtime_ns == stamp
    target = min((results / "records").glob("*.json"))
    st = target.stat()
    target.write_text(target.read_text().replace('"seed": ', '"seed":'))   # changed in place: same name
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    check_same_as_uncached(results, tmp_path, "changed")
    max((results / "records").glob("*.json")).unlink()
    check_same_as_uncached(results, tmp_path, "removed")
    assert cpath.stat().st_mtime_ns == stamp
    delta = cache._load(dpath)
    assert delta is not None and delta.removed and target.name in delta.names
    dpath.write_bytes(b"not a zip")                           # a delta that does not load: ignored
    check_same_as_uncached(results, tmp_path, "corrupt-delta")
    good = dpath.read_bytes()
    monkeypatch.setattr(cache, "DELTA_SHARE", 10**9)          # any change now rewrites the whole cache
    monkeypatch.setattr(cache, "DELTA_MIN_ROWS", 0)
    write_records(results, [make_record("ia3", "gsm8k/gsm8k", 1, 0.03, model="smollm2-135m")])
    check_same_as_uncached(results, tmp_path, "folded")
    assert not dpath.exists() and cpath.stat().st_mtime_ns != stamp
    dpath.write_bytes(good)                                   # a delta of the former whole cache: ignored
    check_same_as_uncached(results, tmp_path, "stale-delta")


def test_cache_is_not_pickle(tmp_path: Path) -> None:
    """The record cache loads with allow_pickle=False: no object arrays in it."""
    import numpy as np

    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    cache.read_rows(results, jobs=1)
    with np.load(cache.cache_path(results), allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_jobs_1_and_2_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    write_records(results, board_a_records() + board_b_records())
    rc, err = run(results, tmp_path / "j1", "--jobs", "1", "--no-cache")
    assert rc == 0, err
    monkeypatch.setattr(cache, "POOL_MIN_FILES", 1)  # the cold read goes through the pool too
    rc, err = run(results, tmp_path / "j2", "--jobs", "2")
    assert rc == 0, err
    assert outputs(tmp_path / "j1") == outputs(tmp_path / "j2")
    assert any(name.endswith(".json") for name in outputs(tmp_path / "j2"))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_record_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: str) -> None:
    results = tmp_path / "results"
    write_records(results, board_a_records())
    assert run(results, tmp_path / "ok", "--jobs", jobs)[0] == 0  # cache written
    bad = results / "records" / "zz-bad.json"
    bad.write_text("{not json")
    monkeypatch.setattr(cache, "POOL_MIN_FILES", 1)
    rc, err = run(results, tmp_path / "o", "--jobs", jobs)
    assert rc == 2
    assert "zz-bad.json: not valid JSON" in err
    bad.unlink()
    assert run(results, tmp_path / "again", "--jobs", jobs)[0] == 0


def test_jobs_must_be_positive(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_record(results / "records" / "a.json", board_a_records()[0])
    assert run(results, tmp_path / "o", "--jobs", "0")[0] == 2


@pytest.mark.parametrize("values", [
    ["a", None, "b", "a", None],
    [1.5, -0.0, 2.25],
    [1, -(2**63), 2**63 - 1],
    [1, True, None, "x", 2.5, "y", "x", False, 0],
    [True, False, False, True],   # the `subtask` column: its own bool kind
    [],
])
def test_column_codec_round_trips_exact_python_values(values: list) -> None:
    from harness.leaderboard.cache import _decode, _encode

    col = np.empty(len(values), dtype=object)
    col[:] = values
    arrays: dict[str, np.ndarray] = {}
    desc = _encode(col, 0, arrays)
    back = _decode(desc, 0, arrays, len(values)).tolist()
    assert back == values and [type(v) for v in back] == [type(v) for v in values]


def test_column_codec_refuses_ints_beyond_64_bits() -> None:
    from harness.leaderboard.cache import _encode

    col = np.empty(3, dtype=object)
    col[:] = [1, "x", 2**70]
    with pytest.raises(TypeError, match="64 bits"):
        _encode(col, 0, {})
