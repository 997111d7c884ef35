"""harness.lock: one live holder per signature; a dead, silent or earlier-attempt holder is taken over."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import lock as lockmod
from harness.lock import Busy, RunLock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(path: Path, **info: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": "theirs", **info}))


def test_second_holder_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    with RunLock(tmp_path / "sig") as first:
        assert json.loads(first.path.read_text())["pid"] == os.getpid()
        with pytest.raises(Busy, match=f"pid {os.getpid()}"):
            RunLock(tmp_path / "sig").acquire()
    assert not (tmp_path / "sig" / "lock").exists()   # released
    with RunLock(tmp_path / "sig"):                  # and free again
        pass


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path: Path) -> None:
    import socket

    _write(tmp_path / "sig" / "lock", host=socket.gethostname(), pid=_dead_pid(), slurm_job=None)
    with RunLock(tmp_path / "sig") as lk:
        assert lk.took_over and "is gone" in lk.took_over
        assert json.loads(lk.path.read_text())["token"] == lk.me["token"]
    assert not (tmp_path / "sig").exists()   # released, and the stale lock was not left aside


def test_a_silent_holder_elsewhere_is_taken_over_only_after_its_heartbeat_stops(tmp_path: Path) -> None:
    path = tmp_path / "sig" / "lock"
    _write(path, host="another-node", pid=1, slurm_job=None)
    with pytest.raises(Busy, match="another-node"):   # fresh: alive as far as anyone can tell
        RunLock(tmp_path / "sig").acquire()
    old = time.time() - lockmod.STALE_S - 5
    os.utime(path, (old, old))
    with RunLock(tmp_path / "sig") as lk:
        assert "no heartbeat" in lk.took_over


def test_an_earlier_attempt_of_the_same_slurm_job_is_taken_over(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    _write(tmp_path / "sig" / "lock", host="another-node", pid=1, slurm_job="4242")
    with RunLock(tmp_path / "sig") as lk:
        assert "earlier attempt" in lk.took_over
    _write(tmp_path / "sig" / "lock", host="another-node", pid=1, slurm_job="999")
    with pytest.raises(Busy, match="SLURM job 999"):
        RunLock(tmp_path / "sig").acquire()


def test_release_never_removes_a_lock_someone_else_holds(tmp_path: Path) -> None:
    lk = RunLock(tmp_path / "sig")
    lk.acquire()
    _write(lk.path, host="another-node", pid=1)   # e.g. taken over after our heartbeat was lost
    lk.release()
    assert json.loads(lk.path.read_text())["token"] == "theirs"


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockmod, "HEARTBEAT_S", 0.05)
    with RunLock(tmp_path / "sig") as lk:
        old = time.time() - 1000
        os.utime(lk.path, (old, old))
        deadline = time.monotonic() + 5
        while time.time() - lk.path.stat().st_mtime > 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert time.time() - lk.path.stat().st_mtime < 100


def _race(run_dir: str, barrier: object, out: object) -> None:
    barrier.wait()
    try:
        lk = RunLock(Path(run_dir))
        lk.acquire()
        out.put("won")
        time.sleep(0.5)   # hold it while the others try
        lk.release()
    except Busy:
        out.put("busy")


def test_simultaneous_launches_run_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "sig"), barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(out.get(timeout=5) for _ in procs) == ["busy", "busy", "busy", "won"]


def test_execute_reports_busy_and_does_not_train(tmp_overrides: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.train
    from harness.dispatch import execute
    from harness.spec import spec_from_config
    from tests.conftest import compose_dict

    spec = spec_from_config(compose_dict((*tmp_overrides, "method=lora", "task=glue/sst2", "seed=0")))
    monkeypatch.setattr(harness.train, "train", lambda *a, **k: pytest.fail("trained a job another launch holds"))
    with RunLock(spec.run_dir):
        summary = execute(spec)
    assert summary["status"] == "busy" and "already running" in summary["error"]
    assert not spec.record_path.exists()   # no record: the holder writes it
