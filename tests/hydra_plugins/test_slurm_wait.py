"""The SLURM launcher's wait, without a cluster: every task is waited for on its own, a task that left
the queue without a result is failed (not waited for forever), and a squeue that keeps failing ends
the wait instead of hanging it. (The live-cluster behaviour is in tests/integration/test_slurm.py.)"""
from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from hydra.core.utils import JobReturn, JobStatus
from submitit.core.utils import cloudpickle_dump

from hydra_plugins.peftbench_sweeper import slurm_launcher as sl


def _jobs(tmp_path: Path, n: int) -> list[Any]:
    return [types.SimpleNamespace(job_id=f"7_{i}", paths=types.SimpleNamespace(
        result_pickle=tmp_path / f"{i}_result.pkl", stderr=tmp_path / f"{i}.err")) for i in range(n)]


def _finish(job: Any, accuracy: float) -> None:
    ret = JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value={"status": "success", "accuracy": accuracy})
    cloudpickle_dump(("success", ret), job.paths.result_pickle)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sl, "POLL_S", 0.01)
    monkeypatch.setattr(sl, "GONE_GRACE_S", 0.05)
    monkeypatch.setattr(sl, "SQUEUE_GIVE_UP_S", 0.3)


def test_a_task_that_left_the_queue_is_failed_and_the_others_still_waited_for(
        tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = _jobs(tmp_path, 3)
    polls = {"n": 0}

    def squeue(array_id: str) -> set[str]:
        polls["n"] += 1
        if polls["n"] == 5:
            _finish(jobs[2], 0.75)   # finishes late, after task 1 is already gone
        return {"7_2"} if polls["n"] < 5 else set()

    _finish(jobs[0], 0.5)
    monkeypatch.setattr(sl, "live_tasks", squeue)
    rets = sl.PeftbenchSlurmLauncher()._wait(jobs, [["seed=0"], ["seed=1"], ["seed=2"]], "7")
    assert [r.status for r in rets] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert "left the queue without a result" in str(rets[1]._return_value)
    assert rets[2]._return_value["accuracy"] == 0.75
    err = capsys.readouterr().err
    assert "[1/3] 7_0 seed=0: success accuracy=0.5000 (0 s)" in err
    assert "7_2 seed=2: success accuracy=0.7500" in err and "7_1 seed=1: lost" in err


def test_a_squeue_that_keeps_failing_ends_the_wait(tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    jobs = _jobs(tmp_path, 2)
    _finish(jobs[0], 0.5)
    monkeypatch.setattr(sl, "live_tasks", lambda array_id: None)
    rets = sl.PeftbenchSlurmLauncher()._wait(jobs, [["seed=0"], ["seed=1"]], "7")
    assert rets[0].status == JobStatus.COMPLETED and rets[1].status == JobStatus.FAILED
    assert "could not be asked" in str(rets[1]._return_value) and "squeue -j 7" in str(rets[1]._return_value)
    assert "squeue unavailable" in capsys.readouterr().err


def test_a_squeue_that_recovers_keeps_waiting(tmp_path: Path, fast: None, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs(tmp_path, 1)
    polls = {"n": 0}

    def flaky(array_id: str) -> set[str] | None:
        polls["n"] += 1
        if polls["n"] == 60:
            _finish(jobs[0], 0.9)
        return None if polls["n"] % 2 else {"7_0"}   # fails every other poll, for longer than the give-up

    monkeypatch.setattr(sl, "live_tasks", flaky)
    (ret,) = sl.PeftbenchSlurmLauncher()._wait(jobs, [["seed=0"]], "7")
    assert ret.status == JobStatus.COMPLETED and polls["n"] >= 60
