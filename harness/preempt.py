"""Stopping a job cleanly: catch SLURM's signals, checkpoint at a step boundary, then requeue or stop.

Why not let submitit handle it: submitit ignores SIGTERM (so `scancel`, `scontrol requeue`, a time
limit and SIGTERM-only preemption kill the job after KillWait with nothing saved), and on USR2 it
exits from inside the signal handler, wherever training happens to be. Here a signal only sets a
flag; the training loop looks at it after each optimizer step, saves an atomic checkpoint, and
raises `Interrupted`. `execute` then asks `outcome()` what the signal meant:

  requeued   SLURM is requeueing the job itself (scontrol requeue, preemption with PreemptMode=REQUEUE):
             exit without a record; the next attempt resumes the checkpoint.
  requeue    a warning signal (USR2: submitit's --signal before the time limit, or a preemption with
             preempt_send_user_signal) or a time limit: requeue the job (submitit's own handler does
             it when present, so `max_num_timeout` still caps timeouts), then exit.
  cancelled  scancel, or a signal outside SLURM: write a `cancelled` record; rerunning resumes.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Self

log = logging.getLogger("peftbench")

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


class Interrupted(Exception):
    """Raised at a step boundary after the checkpoint for a caught signal was written."""

    def __init__(self, signum: int, step: int, *, previous: Any = None,
                 attempts: list[dict[str, Any]] | None = None) -> None:
        self.signum = signum
        self.step = step
        self.previous = previous   # the handler the guard displaced (submitit's requeue, in a SLURM job)
        self.attempts = list(attempts or [])   # every attempt's costs so far, this one included
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint saved")


class SignalGuard:
    """Within `with SignalGuard() as guard:`, USR2 and SIGTERM only set `guard.pending`.

    The previous handlers (submitit's, in a SLURM job) are kept in `previous` and restored on exit.
    Outside the main thread signal handlers cannot be installed; the guard is then inert.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.previous: dict[int, Any] = {}

    def _catch(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum
            # stderr, not logging: a handler must not take logging's lock (it may be held mid-write)
            os.write(2, f"[peftbench] caught {signal.Signals(signum).name}: checkpoint at the next "
                        f"step boundary\n".encode())

    def __enter__(self) -> Self:
        try:
            for sig in SIGNALS:
                self.previous[sig] = signal.signal(sig, self._catch)
        except ValueError:   # not the main thread
            self.previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------- interval
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)\s*$")


def parse_interval(value: Any) -> tuple[int | None, float | None]:
    """budget.checkpoint_every → (steps, seconds): 50 → every 50 steps; "300s", "5min", "1h" → time."""
    if value in (None, 0, ""):
        return None, None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value, None
    m = _SECONDS.match(str(value))
    if not m:
        raise ValueError(f"budget.checkpoint_every: {value!r} is not a step count (50) or a duration "
                         "(300s, 5min, 1h)")
    factor = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    return None, float(m.group(1)) * factor


class CheckpointClock:
    """When the periodic checkpoint is due: it bounds the work a hard kill (SIGKILL, node loss) loses."""

    def __init__(self, every: Any) -> None:
        self.steps, self.seconds = parse_interval(every)
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.steps and step % self.steps == 0:
            return True
        return bool(self.seconds) and time.monotonic() - self.last >= float(self.seconds or 0)

    def saved(self) -> None:
        self.last = time.monotonic()


# ----------------------------------------------------------------------------------- outcome
def slurm_job() -> str | None:
    """This job's id as scontrol names it (array tasks as ARRAY_TASK), or None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def job_fields(job: str) -> dict[str, str]:
    """`scontrol show job` as a dict; empty when SLURM cannot be asked (no accounting is needed)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def outcome(signum: int) -> str:
    """What a caught signal means for this job: requeued | requeue | cancelled (see the module doc)."""
    job = slurm_job()
    if job is None:
        return "cancelled"
    if signum == signal.SIGUSR2:
        return "requeue"
    fields = job_fields(job)
    restarts = int(fields.get("Restarts", "0") or 0)
    if restarts > int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0):
        return "requeued"     # scontrol requeue / preemption: SLURM counted the restart already
    if fields.get("Reason") == "TimeLimit" or fields.get("JobState") == "TIMEOUT":
        return "requeue"
    if fields.get("JobState") in ("PREEMPTED",):
        return "requeue"
    return "cancelled"


def requeue(previous: Callable[..., Any] | int | None, signum: int) -> None:
    """Requeue this SLURM job and exit the process (SystemExit: submitit writes no result, so the
    launcher keeps waiting for the next attempt).

    submitit's own USR2 handler is preferred when it is the one we displaced: it re-pickles the job
    with one timeout fewer and raises submitit's UncompletedJobError once `max_num_timeout` timeouts
    are used up (the caller records `failed`).
    """
    if callable(previous) and getattr(previous, "__name__", "") == "checkpoint_and_try_requeue":
        previous(signal.SIGUSR2, None)   # requeues, then sys.exit(-1); or raises UncompletedJobError
    job = slurm_job()
    if job is not None:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        log.info("requeued %s (%s)", job, signal.Signals(signum).name)
    raise SystemExit(-1)
