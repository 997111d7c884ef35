"""harness.sweeps: a sweep's manifest and launch log → `peftbench status` / `cancel`, without a cluster
(SLURM's side is exercised on the live cluster in tests/integration/test_slurm.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.records import write_record
from harness.sweeps import (
    CANCELLED,
    cancel,
    job_states,
    load_sweep,
    note_launch,
    progress_line,
    status_lines,
    write_manifest,
)

# a process that looks like a submitit local job (its command line names submitit) and exits 15 on SIGTERM
SLEEPER = ("import signal, sys, time  # submitit\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(15))\n"
           "time.sleep(120)\n")


def _job(root: Path, num: int, action: str = "run") -> dict:
    sig = f"{num:040x}"
    return {"num": num, "overrides": [f"seed={num}"], "label": f"lora|m|t|smoke|s{num}", "signature": sig,
            "record": str(root / "results" / "records" / f"{sig}.json"), "run_dir": str(root / "runs" / sig),
            "action": action}


def _record(job: dict, status: str, error: str | None = None) -> None:
    write_record(Path(job["record"]), {"run": {"status": status, "signature": job["signature"], "error": error},
                                       "train": None, "eval": None, "meta": {}})


def _driver_pid(sweep_dir: Path, pid: int) -> None:
    doc = json.loads((sweep_dir / "jobs.json").read_text())
    (sweep_dir / "jobs.json").write_text(json.dumps({**doc, "driver_pid": pid}))


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "hydra" / "multirun" / "2026-01-01_00-00-00_demo"


def test_every_state_is_told_apart(tmp_path: Path, sweep_dir: Path) -> None:
    jobs = [_job(tmp_path, i) for i in range(6)] + [_job(tmp_path, 6, "skip")]
    write_manifest(sweep_dir, sweep_name="demo", launcher="local", jobs=jobs, total=7, skipped=1)
    _record(jobs[0], "success")
    _record(jobs[1], "failed", "FloatingPointError: loss is nan at step 3\nTraceback ...")
    _record(jobs[6], "success")
    Path(jobs[3]["run_dir"]).mkdir(parents=True)
    (Path(jobs[3]["run_dir"]) / "checkpoint.pt").write_bytes(b"x")
    live = subprocess.Popen([sys.executable, "-c", SLEEPER])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _driver_pid(sweep_dir, dead.pid)   # the driver is gone: job 5 will never be launched
    try:
        note_launch(sweep_dir, {"launcher": "local", "host": os.uname().nodename, "jobs": [
            {"num": 0, "job_id": "1", "pid": dead.pid, "log": "/logs/0.err"},
            {"num": 1, "job_id": "2", "pid": dead.pid, "log": "/logs/1.err"},
            {"num": 2, "job_id": str(live.pid), "pid": live.pid, "marker": "submitit", "log": "/logs/2.err"},
            {"num": 3, "job_id": "4", "pid": dead.pid, "log": "/logs/3.err"},
            {"num": 4, "job_id": "5", "pid": dead.pid, "log": "/logs/4.err"}]})
        states = {j.num: j for j in job_states(load_sweep(sweep_dir))}
        assert {n: s.state for n, s in states.items()} == {
            0: "success", 1: "failed", 2: "running", 3: "interrupted", 4: "lost", 5: "not launched", 6: "success"}
        assert states[1].detail == "FloatingPointError: loss is nan at step 3" and states[1].log == "/logs/1.err"
        assert "relaunching resumes" in states[3].detail
        _driver_pid(sweep_dir, os.getpid())   # a live driver: what it has not launched yet is pending
        assert {j.num: j.state for j in job_states(load_sweep(sweep_dir))}[5] == "pending"
        _driver_pid(sweep_dir, dead.pid)
        lines = status_lines(tmp_path / "runs", "demo")
        assert lines[0].startswith("demo: 7 jobs: 2 success, 1 running, 1 interrupted, 1 failed, 1 lost, 1 not launched")
        assert any("#1 lora|m|t|smoke|s1 failed (job 2) - FloatingPointError" in ln for ln in lines)
        assert "      log: /logs/1.err" in lines
        assert not any("#0 " in ln for ln in lines)   # finished jobs only with -v
        assert any("#0 " in ln for ln in status_lines(tmp_path / "runs", "demo", verbose=True))
    finally:
        live.kill()
        live.wait()


def test_a_reused_pid_is_not_taken_for_the_job(tmp_path: Path, sweep_dir: Path) -> None:
    """A pid that now belongs to another program (no `submitit` in its command line) is not the job."""
    jobs = [_job(tmp_path, 0)]
    write_manifest(sweep_dir, sweep_name="demo", launcher="local", jobs=jobs, total=1, skipped=0)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        note_launch(sweep_dir, {"launcher": "local", "jobs": [{"num": 0, "job_id": "x", "pid": other.pid,
                                                                "marker": "submitit"}]})
        (state,) = job_states(load_sweep(sweep_dir))
        assert state.state == "lost"
    finally:
        other.kill()
        other.wait()


def test_cancel_stops_running_jobs_and_the_driver(tmp_path: Path, sweep_dir: Path) -> None:
    jobs = [_job(tmp_path, 0), _job(tmp_path, 1)]
    write_manifest(sweep_dir, sweep_name="demo", launcher="local", jobs=jobs, total=2, skipped=0)
    live = subprocess.Popen([sys.executable, "-c", SLEEPER])
    time.sleep(0.5)   # its SIGTERM handler is installed
    note_launch(sweep_dir, {"launcher": "local", "host": os.uname().nodename,
                            "jobs": [{"num": 0, "job_id": str(live.pid), "pid": live.pid, "marker": "submitit"}]})
    said = cancel(tmp_path / "runs", "demo")
    assert live.wait(30) == 15   # it got SIGTERM (a real job checkpoints and records `cancelled`)
    assert any(f"SIGTERM pid {live.pid}" in s for s in said)
    assert (sweep_dir / CANCELLED).exists()
    states = {j.num: j.state for j in job_states(load_sweep(sweep_dir))}
    assert states == {0: "cancelled", 1: "cancelled"}   # 0: stopped (a real job also records it); 1: never launched
    assert cancel(tmp_path / "runs", "demo") == ["demo: nothing to cancel (no job is running or pending)"]


def test_cli_status_and_cancel(tmp_path: Path, sweep_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = str(tmp_path / "runs")
    assert main(["status", "--runs-dir", runs]) == 0
    assert "no sweeps under" in capsys.readouterr().out
    write_manifest(sweep_dir, sweep_name="demo", launcher="debug", jobs=[_job(tmp_path, 0)], total=1, skipped=0)
    _record(_job(tmp_path, 0), "success")
    assert main(["status", "--runs-dir", runs]) == 0
    assert capsys.readouterr().out.startswith("demo: 1 jobs: 1 success  [debug")
    assert main(["status", "nosuch", "--runs-dir", runs]) == 1
    assert main(["status", str(sweep_dir)]) == 0            # a sweep folder works as well as its name
    assert "demo: 1 jobs: 1 success" in capsys.readouterr().out
    assert main(["cancel", "nosuch", "--runs-dir", runs]) == 1
    assert "no sweep 'nosuch'" in capsys.readouterr().err


def test_progress_line() -> None:
    line = progress_line(3, 8, "77_2", ["method=dora", "seed=1"], {"status": "success", "signature": "ab",
                                                                    "accuracy": 0.8125}, 61.4)
    assert line == "peftbench: [3/8] 77_2 method=dora seed=1: success accuracy=0.8125 (61 s)"
    assert progress_line(1, 2, "", ["seed=0"], None, 2).endswith("seed=0: lost (2 s)")


def test_a_cut_launch_line_does_not_hide_the_others(tmp_path: Path, sweep_dir: Path) -> None:
    write_manifest(sweep_dir, sweep_name="demo", launcher="local", jobs=[_job(tmp_path, 0)], total=1, skipped=0)
    note_launch(sweep_dir, {"launcher": "local", "jobs": [{"num": 0, "job_id": "9", "pid": 1, "marker": "nope"}]})
    with (sweep_dir / "launches.jsonl").open("a") as fh:
        fh.write('{"launcher": "lo')   # a driver killed mid-write
    assert len(load_sweep(sweep_dir).launches) == 1
    assert json.loads((sweep_dir / "jobs.json").read_text())["sweep"] == "demo"



def test_a_record_written_since_the_launch_ends_the_job_while_it_still_looks_alive(tmp_path: Path,
                                                                                   sweep_dir: Path) -> None:
    """Between writing its record and leaving squeue (or exiting) a job still looks alive: its record,
    written after this launch, decides; a record from an earlier launch does not."""
    jobs = [_job(tmp_path, 0), _job(tmp_path, 1)]
    write_manifest(sweep_dir, sweep_name="demo", launcher="local", jobs=jobs, total=2, skipped=0)
    live = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        note_launch(sweep_dir, {"launcher": "local", "host": os.uname().nodename, "jobs": [
            {"num": n, "job_id": str(live.pid), "pid": live.pid, "marker": "submitit"} for n in (0, 1)]})
        for job, finished in ((jobs[0], "2999-01-01T00:00:00+00:00"), (jobs[1], "2000-01-01T00:00:00+00:00")):
            write_record(Path(job["record"]), {"run": {"status": "failed", "signature": job["signature"],
                                                       "error": "boom", "finished_at": finished},
                                               "train": None, "eval": None, "meta": {}})
        states = {j.num: j.state for j in job_states(load_sweep(sweep_dir))}
        assert states == {0: "failed", 1: "running"}
    finally:
        live.kill()
        live.wait()
