"""One job per signature at a time: a lock file in the job's run directory.

Two launches of the same sweep at once (two shells, a relaunch while the first is still queued) would
otherwise train the same job twice, on the same checkpoint. The lock is a file created with O_EXCL (atomic
on local and NFS filesystems), holding who holds it. A holder that died must not keep it forever, so a
lock is stale, and taken over, when:

- its holder ran on this host and that process is gone (a crash, SIGKILL, OOM kill);
- it was held by an earlier attempt of this same SLURM job (a requeue or preemption restarts the job,
  possibly on another node, after the previous attempt was killed);
- its heartbeat stopped: a live holder touches the file every HEARTBEAT_S seconds from a daemon thread,
  so a holder on another node that vanished is recognised after STALE_S.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

from harness.records import pid_alive

HEARTBEAT_S = 30.0
STALE_S = 150.0   # five missed heartbeats


def _holder() -> dict[str, Any]:
    from harness.preempt import slurm_job

    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job": slurm_job(), "since": time.time()}


def stale_reason(info: dict[str, Any], age_s: float, me: dict[str, Any]) -> str | None:
    """Why a lock held as `info` (file untouched for `age_s`) may be taken over by `me`, else None."""
    if info.get("host") == me["host"] and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
        return f"its holder (pid {info['pid']}) is gone"
    if me.get("slurm_job") and info.get("slurm_job") == me["slurm_job"]:
        return f"held by an earlier attempt of this SLURM job {me['slurm_job']}"
    if age_s > STALE_S:
        return f"no heartbeat for {age_s:.0f} s"
    return None


class Busy(RuntimeError):
    """The signature is being run by another live process; `holder` says which."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.holder = holder
        where = f"{holder.get('host')} pid {holder.get('pid')}"
        if holder.get("slurm_job"):
            where += f", SLURM job {holder['slurm_job']}"
        super().__init__(f"already running ({where}; lock {path})")


class RunLock:
    """`with RunLock(run_dir):` holds the signature's lock for the block, or raises Busy."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "lock"
        self.me = _holder()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.took_over: str | None = None

    def _read(self, path: Path) -> tuple[dict[str, Any], float] | None:
        try:
            text, mtime = path.read_text(), path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:   # a holder killed between create and write: judged by age alone
            info = {}
        return info, time.time() - mtime

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                seen = self._read(self.path)
                if seen is None:
                    continue   # released meanwhile: try again
                info, age = seen
                why = stale_reason(info, age, self.me)
                if why is None:
                    raise Busy(self.path, info) from None
                self._take_over(info, why)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.me, fh)
            self._beat = threading.Thread(target=self._heartbeat, name="peftbench-lock", daemon=True)
            self._beat.start()
            return
        raise Busy(self.path, (self._read(self.path) or ({}, 0.0))[0])

    def _take_over(self, info: dict[str, Any], why: str) -> None:
        """Move the stale lock aside; if another process replaced it meanwhile, put theirs back."""
        aside = self.path.with_name(f"lock.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        moved = self._read(aside)
        if moved is not None and moved[0].get("token") != info.get("token"):
            try:
                os.link(aside, self.path)   # someone's fresh lock: restore it (fails if a third took it)
            except FileExistsError:
                pass
        else:
            self.took_over = why
        aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        seen = self._read(self.path)
        if seen is not None and seen[0].get("token") == self.me["token"]:
            self.path.unlink(missing_ok=True)
            try:
                self.path.parent.rmdir()   # a job that failed before writing anything leaves no empty folder
            except OSError:
                pass

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
