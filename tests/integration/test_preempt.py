"""Checkpoint on signal, for real: a training subprocess gets USR2 / SIGTERM / SIGKILL mid-run and is
started again; the final record and adapter must equal an uninterrupted run's, bit for bit (CPU),
and the costs must add up over the attempts. No SLURM needed (tests/integration/test_slurm.py does
the same through a live SLURM, whose own signals reach the jobs from outside).
Here the job signals itself after a given optimizer step (tests/integration/hooks.py), so each attempt stops where
the test says, however fast the machine trains, and the job can be short. Only the attempts that get a
signal need a process of their own: the last attempt and the uninterrupted reference run in this one
(harness.dispatch.execute, what the CLI runs; tests.conftest.run_record), which saves their start-up."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.spec import PROJECT_ROOT
from tests.integration.hooks import inject

pytestmark = pytest.mark.integration

# 27 optimizer steps: the signals below come at steps 5, 12 and 15, a couple of seconds of CPU
JOB = ["method=lora", "task=glue/sst2", "seed=0", "logger=none", "threads=1", "budget=smoke",
       "budget.tokens=1500", "budget.eval_size=64", "budget.checkpoint_every=null"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    return env


def start(root: Path, *extra: str,
          signal_at: tuple[signal.Signals, int] | None = None) -> tuple[subprocess.Popen, Path]:
    """The job in a subprocess; with `signal_at` = (sig, step) it sends itself `sig` after that step."""
    log = root / f"attempt-{time.monotonic_ns()}.log"
    env = _env()
    if signal_at is not None:   # a real signal, caught (or not) like one from outside
        env = inject(env, root, signal_at[1], signal_=signal_at[0])
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *JOB, f"results_dir={root / 'results'}",
                             f"runs_dir={root / 'runs'}", *extra], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    return proc, log


def interrupt(root: Path, sig: signal.Signals, step: int, *extra: str) -> tuple[int, Path]:
    """Run the job until it gets `sig` after optimizer step `step`; returns the exit code and the log."""
    proc, log = start(root, *extra, signal_at=(sig, step))
    rc = proc.wait(timeout=300)
    assert rc != 0 or sig == signal.SIGKILL, f"finished before {sig.name}:\n{log.read_text()[-2000:]}"
    return rc, log


def finish(root: Path, *extra: str) -> dict:
    """The job to its end, in this process: it resumes whatever checkpoint the attempts before left."""
    from tests.conftest import run_record

    rec = run_record(root, *JOB, *extra)
    assert len(list((root / "results" / "records").glob("*.json"))) == 1   # the attempts' one record
    return rec


def adapter(root: Path) -> dict:
    from safetensors.torch import load_file

    (run,) = (root / "runs").glob("[0-9a-f]" * 40)   # runs/<signature>/ (runs/hydra/ is the launcher's)
    return {p.name: load_file(p) for p in sorted((run / "adapter").glob("*.safetensors"))}


def assert_same_result(rec: dict, ref: dict, root: Path, ref_root: Path) -> None:
    import torch

    assert rec["run"]["status"] == "success", rec["run"]["error"]
    assert rec["eval"]["metrics"] == ref["eval"]["metrics"]
    assert rec["train"]["loss_curve"] == ref["train"]["loss_curve"]
    for key in ("steps", "tokens", "examples", "stopped_by"):
        assert rec["train"][key] == ref["train"][key], key
    got, want = adapter(root), adapter(ref_root)
    assert got.keys() == want.keys() and got
    for name in want:
        assert want[name].keys() == got[name].keys()
        assert all(torch.equal(got[name][k], want[name][k]) for k in want[name])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("uninterrupted")
    rec = finish(root)
    assert rec["train"]["attempts"] == 1 and rec["train"]["resumed_from_steps"] == []
    return rec, root


def test_usr2_then_sigterm_then_forced_rerun_resume_exactly(reference: tuple[dict, Path], tmp_path: Path) -> None:
    """Two signals, three attempts; the third with force=true still resumes its own checkpoint."""
    ref, ref_root = reference
    rc, log = interrupt(tmp_path, signal.SIGUSR2, 5)
    assert rc == 128 + signal.SIGUSR2, log.read_text()[-3000:]
    (path,) = (tmp_path / "results" / "records").glob("*.json")
    first_rec = json.loads(path.read_text())
    cancelled = first_rec["run"]
    assert cancelled["status"] == "cancelled" and "SIGUSR2 at step" in cancelled["error"]
    assert (tmp_path / "runs" / ref["run"]["signature"] / "checkpoint.pt").exists()
    # what the stopped attempt cost is on record (not lost with the job): steps, time, the attempt log
    spent = first_rec["train"]
    assert spent["completed"] is False and spent["attempts"] == 1 and spent["steps"] == 5
    assert spent["attempt_log"][0]["ended_by"] == "SIGUSR2" and spent["train_time_s"] > 0
    rc, log = interrupt(tmp_path, signal.SIGTERM, 12)
    assert rc == 128 + signal.SIGTERM, log.read_text()[-3000:]
    second = json.loads(path.read_text())["train"]
    assert second["attempts"] == 2 and second["steps"] == 12
    assert second["train_time_s"] > spent["train_time_s"]
    rec = finish(tmp_path, "force=true")
    assert_same_result(rec, ref, tmp_path, ref_root)

    train = rec["train"]
    first, second = train["resumed_from_steps"]
    assert (first, second) == (5, 12) and second < train["steps"]
    assert train["attempts"] == 3 and train["requeues"] == 0
    log = train["attempt_log"]
    assert [a["ended_by"] for a in log] == ["SIGUSR2", "SIGTERM", "finished"]
    assert [a["end_step"] for a in log] == [first, second, train["steps"]]
    # costs cover every attempt: the sums of the attempts, more than the last attempt alone
    assert train["train_time_s"] == pytest.approx(sum(a["train_time_s"] for a in log), abs=0.01)
    assert train["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in log), abs=0.01)
    assert train["wall_time_s"] > log[-1]["wall_time_s"] + log[0]["wall_time_s"] * 0.99
    assert train["peak_memory_mb"] == max(a["peak_memory_mb"] for a in log)
    assert rec["run"]["started_at"] == log[0]["started_at"] < log[-1]["started_at"]
    assert not (tmp_path / "runs" / ref["run"]["signature"] / "checkpoint.pt").exists()


def test_hard_kill_loses_at_most_the_checkpoint_interval(reference: tuple[dict, Path], tmp_path: Path) -> None:
    """SIGKILL cannot be caught: budget.checkpoint_every bounds the loss, and the result is still exact."""
    ref, ref_root = reference
    ckpt = tmp_path / "runs" / ref["run"]["signature"] / "checkpoint.pt"
    rc, log = interrupt(tmp_path, signal.SIGKILL, 15, "budget.checkpoint_every=10")   # 5 steps after one
    assert rc == -signal.SIGKILL and ckpt.exists(), log.read_text()[-3000:]
    assert not list((tmp_path / "results").rglob("*.json"))   # killed: no record at all, not half of one
    rec = finish(tmp_path, "budget.checkpoint_every=10")
    assert_same_result(rec, ref, tmp_path, ref_root)
    (resumed,) = rec["train"]["resumed_from_steps"]
    assert resumed == 10   # steps 11-15 were lost with the kill, no more
    assert rec["run"]["signature"] == ref["run"]["signature"]   # checkpoint_every is not semantic


_KILLED_MID_WRITE = """
import os, signal, sys
from pathlib import Path
from harness.records import atomic_write

def half_then_die(fh):
    fh.write(b'{"half": ')
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(Path(sys.argv[1]), half_then_die, fsync=True)
"""


@pytest.mark.parametrize("name", ["record.json", "checkpoint.pt"])
def test_killed_while_writing_leaves_the_old_file_whole(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    target.write_bytes(b"old and complete")
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(target)], cwd=PROJECT_ROOT,
                          env=_env(), check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old and complete"
    # the half-written temp file is hidden (.name.*.tmp): no reader globs it; the next write sweeps it
    assert [p.name for p in tmp_path.iterdir() if p != target and not p.name.startswith(".")] == []
    from harness.records import atomic_write

    atomic_write(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


class _SignalAfterTraining:
    """A guard whose signal arrives during the last optimizer step: the loop reads `pending` once per step
    and sees nothing; only the check after the loop does."""

    def __init__(self, steps: int) -> None:
        self.reads, self.steps, self.previous = 0, steps, {}

    @property
    def pending(self) -> int | None:
        self.reads += 1
        return signal.SIGTERM if self.reads > self.steps else None


def test_a_signal_in_the_last_step_checkpoints_before_the_final_evaluation(tmp_path: Path) -> None:
    from harness.preempt import Interrupted, SignalGuard
    from harness.spec import spec_from_config
    from harness.train import train
    from tests.conftest import compose_dict

    spec = spec_from_config(compose_dict((*JOB, "budget.steps=3", "budget.tokens=null", "budget.eval_size=16",
                                          f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}")))
    with pytest.raises(Interrupted) as stop:
        train(spec, guard=_SignalAfterTraining(steps=3))
    assert stop.value.step == 3 and stop.value.attempts[-1]["ended_by"] == "SIGTERM"
    assert (spec.run_dir / "checkpoint.pt").exists()
    with SignalGuard() as guard:   # the rerun resumes at the end of training: it only evaluates
        res = train(spec, guard=guard)
    assert res.resumed_from_step == 3 and res.steps == 3 and res.final_eval["n_examples"] == 16
    assert [a["ended_by"] for a in res.attempts] == ["SIGTERM", "finished"]
