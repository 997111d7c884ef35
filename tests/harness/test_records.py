"""Records: atomic writes that survive SIGKILL, schema versions, and the skip-if-done check."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.records import (
    SCHEMA_VERSION,
    STATUSES,
    RecordError,
    iter_records,
    read_record,
    success_exists,
    upgrade,
    write_record,
)
from harness.spec import PROJECT_ROOT


def _record(status: str = "success", **extra) -> dict:
    return {"run": {"status": status, "signature": "abc"}, "train": None, "eval": None, "meta": {}, **extra}


# ------------------------------------------------------------------------------------ atomic write
WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from harness.records import write_record

path = Path(sys.argv[1])
i = int(sys.argv[3])
print("ready", flush=True)   # imports done: the kill's random delay starts from here, not from exec
while True:
    i += 1
    # 20 MB per record: writing + fsync take about half of each iteration, so random kills often
    # land in the middle of a write (leaving a temp file behind).
    write_record(path, {"run": {"status": "success", "n": i}, "blob": f"{i}<" + "x" * 20_000_000 + f">{i}",
                        "n": i})
"""


def _check_complete(path: Path) -> int:
    """The record at path is complete and self-consistent; returns its generation."""
    rec = read_record(path)          # raises on partial JSON
    n = rec["n"]
    assert rec["schema_version"] == SCHEMA_VERSION
    assert rec["run"] == {"status": "success", "n": n}
    assert rec["blob"] == f"{n}<" + "x" * 20_000_000 + f">{n}"
    return n


def _until_mid_write(records: Path, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until the writer is inside a write (its temp file exists), it exits, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while (time.monotonic() < deadline and proc.poll() is None
           and not any(records.glob(f".sig.*-{proc.pid}.*.tmp"))):
        time.sleep(0.002)


def test_sigkill_mid_write_never_leaves_a_partial_record(tmp_path: Path) -> None:
    records = tmp_path / "results" / "records"
    path = records / "sig.json"
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    last_seen = kills = mid_write = 0
    attempt = 0
    # at least 6 kills, and keep going (up to 30) until one provably landed mid-write
    while attempt < 6 or (mid_write == 0 and attempt < 30):
        tmp_before = len(list(records.glob(".*.tmp"))) if records.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(PROJECT_ROOT), str(last_seen)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # on a loaded machine the interpreter's start-up alone can outlast the delay: time from "ready"
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
            # the first attempt may die before its first write completes; later ones overwrite a
            # complete file, which must survive any kill
            deadline = time.monotonic() + (rng.uniform(0.0, 0.5) if attempt == 0 else rng.uniform(0.3, 1.2))
            while time.monotonic() < deadline:
                if path.exists():
                    last_seen = max(last_seen, _check_complete(path))   # a concurrent reader never fails
                time.sleep(rng.uniform(0.0, 0.03))
                assert proc.poll() is None, proc.stderr.read().decode()
            if attempt >= 6 and mid_write == 0:
                # 6 random kills all missed the writes: on a busy CPU (a parallel test run) the writer spends
                # most of its time serialising, and a random kill lands mid-write only a few percent of the
                # time (0 of 30 happened). Aim the later kills at a write in progress instead.
                _until_mid_write(records, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            proc.stdout.close()
        kills += proc.returncode == -signal.SIGKILL
        if path.exists():
            n = _check_complete(path)
            assert n >= last_seen, f"seed {seed}: record went back in time"
            last_seen = n
        else:
            assert last_seen == 0, f"seed {seed}: a complete record disappeared after a kill"
        # leftovers of a killed write may stay, but never look like records
        leftovers = [p for p in records.iterdir() if p != path] if records.exists() else []
        assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in leftovers), leftovers
        mid_write += len(leftovers) > tmp_before
        assert len(list(iter_records(tmp_path / "results"))) == (1 if path.exists() else 0)
        attempt += 1
    assert kills == attempt
    assert last_seen >= 1, "the writer never completed a record; the test proved nothing"
    assert mid_write >= 1, f"seed {seed}: no kill landed mid-write in {attempt} tries"


def test_failed_write_keeps_the_previous_record_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "records" / "x.json"
    write_record(path, _record(n=1))
    with pytest.raises(ValueError):
        write_record(path, _record(loss=math.nan))   # allow_nan=False: not valid JSON
    with pytest.raises(TypeError):
        write_record(path, _record(obj=object()))
    with pytest.raises(ValueError, match="run.status"):
        write_record(path, _record(status="running"))
    assert read_record(path)["n"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_write_creates_parent_dirs_and_serializes_paths_and_scalars(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "a" / "b" / "records" / "x.json"
    write_record(path, _record(where=tmp_path, score=np.float32(0.5), count=np.int64(3)))
    rec = read_record(path)
    assert rec["where"] == str(tmp_path) and rec["score"] == 0.5 and rec["count"] == 3


# ---------------------------------------------------------------------------------- schema version
def test_schema_version_is_written_first(tmp_path: Path) -> None:
    path = write_record(tmp_path / "x.json", _record())
    raw = json.loads(path.read_text())
    assert next(iter(raw)) == "schema_version"
    assert raw["schema_version"] == SCHEMA_VERSION and isinstance(SCHEMA_VERSION, int)


@pytest.mark.parametrize("status", STATUSES)
def test_roundtrip(tmp_path: Path, status: str) -> None:
    rec = _record(status)
    path = write_record(tmp_path / "x.json", rec)
    assert read_record(path) == {"schema_version": SCHEMA_VERSION, **rec}


def _raw(tmp_path: Path, obj, name: str = "x.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_every_older_version_is_readable(tmp_path: Path) -> None:
    for version in range(1, SCHEMA_VERSION + 1):
        rec = {"schema_version": version, **_record()}
        assert read_record(_raw(tmp_path, rec, f"v{version}.json"))["run"]["status"] == "success"
        assert upgrade(dict(rec))["run"] == rec["run"]


def test_newer_version_is_refused_naming_file_and_remedy(tmp_path: Path) -> None:
    path = _raw(tmp_path, {"schema_version": SCHEMA_VERSION + 1, **_record()})
    with pytest.raises(RecordError) as info:
        read_record(path)
    msg = str(info.value)
    assert str(path) in msg and "newer" in msg and "upgrade peftbench" in msg


@pytest.mark.parametrize("version", [None, 0, -1, "1", 1.5])
def test_missing_or_malformed_version_is_refused(tmp_path: Path, version) -> None:
    rec = _record() if version is None else {"schema_version": version, **_record()}
    path = _raw(tmp_path, rec)
    with pytest.raises(RecordError, match="schema_version"):
        read_record(path)


def test_unreadable_files_raise_record_error_naming_the_file(tmp_path: Path) -> None:
    partial = tmp_path / "partial.json"
    partial.write_text('{"schema_version": 1, "run": {"status": "succ')
    with pytest.raises(RecordError, match=r"partial\.json: not valid JSON \(line 1"):
        read_record(partial)
    with pytest.raises(RecordError, match="no 'run' block"):
        read_record(_raw(tmp_path, {"schema_version": 1}, "norun.json"))
    with pytest.raises(RecordError, match="not a peftbench record"):
        read_record(_raw(tmp_path, [1, 2], "list.json"))


def test_iter_records_reads_only_json_records_in_order(tmp_path: Path) -> None:
    records = tmp_path / "records"
    for name in ("b", "a", "c"):
        write_record(records / f"{name}.json", _record(name=name))
    (records / ".a.123.tmp").write_text('{"schema_version": 1, "run": {"stat')   # a killed write
    assert [r["name"] for r in iter_records(tmp_path)] == ["a", "b", "c"]


# -------------------------------------------------------------------------------- success_exists
def test_success_exists_true_only_for_readable_success(tmp_path: Path) -> None:
    assert success_exists(write_record(tmp_path / "ok.json", _record("success")))
    assert not success_exists(write_record(tmp_path / "failed.json", _record("failed")))
    assert not success_exists(write_record(tmp_path / "cancelled.json", _record("cancelled")))
    assert not success_exists(tmp_path / "missing.json")


@pytest.mark.parametrize("content", [
    '{"schema_version": 1, "run": {"status": "success"',     # truncated
    "",                                                        # empty
    "not json at all",
    "[]",
    '{"schema_version": 1}',                                   # no run block
    '{"schema_version": 1, "run": {}}',                        # no status
    f'{{"schema_version": {SCHEMA_VERSION + 1}, "run": {{"status": "success"}}}}',   # newer: unreadable
    '{"run": {"status": "success"}}',                          # no version
], ids=["truncated", "empty", "garbage", "list", "no-run", "no-status", "newer-version", "no-version"])
def test_success_exists_false_for_corrupt_records(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    assert success_exists(path) is False


def test_success_exists_false_for_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.json").mkdir()
    assert success_exists(tmp_path / "x.json") is False


def test_success_exists_false_when_run_block_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"schema_version": 1, "run": null}')
    assert success_exists(path) is False


def test_success_exists_false_for_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b'{"schema_version": 1, "run": {"status": "\xff\xfe"}}')
    assert success_exists(path) is False


def test_record_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_record(tmp_path / "x.json", _record())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
