"""The debug (in-process) and local (a process per job) launchers, with what the SLURM one already has:
a progress line per finished job (n/N, job, status, primary metric, time since the sweep started), and a
note in the sweep's launch log of where each job runs (harness/sweeps.py), for `peftbench status` and
`peftbench cancel`. A job that dies without a return value is a `lost` result, never the sweep's end.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

POLL_S = 0.5


def value_of(ret: JobReturn) -> Any:
    """A job's return value, or None when it raised (never re-raises: one job never ends a sweep)."""
    return ret._return_value if ret.status == JobStatus.COMPLETED else None


def report(launcher: Any, n: int, job_id: str, overrides: Sequence[str], ret: JobReturn, *,
           num: int | None = None, total: int | None = None) -> None:
    """Print the progress line of the sweep's job `num` (its n-th to finish). A job that raised or died
    is shown with its record's status when it wrote one (a cancelled job writes it before it exits)."""
    from harness.sweeps import ended_status, progress_line

    value = value_of(ret)
    records = getattr(launcher, "sweep_records", None)
    if value is None and records and num is not None and num < len(records):
        sweep_dir = Path(str(launcher.config.hydra.sweep.dir)) if launcher.config is not None else None
        value = {"status": ended_status(records[num], sweep_dir)}
    total = getattr(launcher, "sweep_total", None) or total or n
    elapsed = max(0.0, time.monotonic() - getattr(launcher, "sweep_t0", time.monotonic()))
    varying = getattr(launcher, "sweep_varying", None)   # only what tells this job from the others
    shown = [o for o in filter_overrides(list(overrides)) if varying is None or o.split("=", 1)[0] in varying]
    print(progress_line(n, total, job_id, shown, value, elapsed), file=sys.stderr, flush=True)


class PeftbenchBasicLauncher(BasicLauncher):
    """Hydra's in-process launcher, one job at a time, a line after each."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from harness.sweeps import MANIFEST, note_launch

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        out = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            if (sweep_dir / MANIFEST).exists():
                note_launch(sweep_dir, {"launcher": "debug", "host": os.uname().nodename,
                                        "jobs": [{"num": num, "job_id": None, "pid": os.getpid()}]})
            ret = super().launch([overrides], num)[0]
            report(self, num + 1, "", overrides, ret, num=num, total=initial_job_idx + len(job_overrides))
            out.append(ret)
        return out


# Imported once by the fork server, so that every job process starts with them imported (seconds each).
PRELOAD = ["torch", "transformers", "peft", "hydra", "omegaconf", "harness.dispatch", "harness.train",
           "harness.evaluate", "tasks", "methods", "harness.warm"]
KILL_AFTER_TERM_S = 60.0


def _run_local_job(payload: bytes, overrides: list[str], num: int, log_path: str, result_path: str,
                   gpus: str | None, nproc: int = 1) -> None:
    """One job, in a process forked from the warm fork server: its output to its log, its JobReturn
    to a result file (atomically). With ``nproc`` > 1 the job is that many ranks (:func:`_run_ranks`)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    if nproc > 1:
        _run_ranks(payload, overrides, num, result_path, nproc)
        return
    _run_hydra_job(payload, overrides, num, result_path)


def _run_ranks(payload: bytes, overrides: list[str], num: int, result_path: str, nproc: int) -> None:
    """hydra.launcher.nproc_per_job ranks of one job on this machine, as torchrun would start them: each a fork
    of this process (which, like the fork server, has computed nothing) with RANK, WORLD_SIZE, LOCAL_RANK and a
    free MASTER_PORT set; harness.distributed reads them, rank 0 writes the result file. When a rank ends badly
    the others are ended too (SIGTERM, then SIGKILL), rather than left waiting in a collective; a SIGTERM to
    this process (the launcher's time limit) is passed to every rank, which checkpoint at one step."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pids: list[int] = []
    for rank in range(nproc):
        pid = os.fork()
        if pid == 0:   # a rank
            code = 1
            try:
                os.environ.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                                  LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
                _run_hydra_job(payload, overrides, num, result_path if rank == 0 else None)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    signal.signal(signal.SIGTERM, lambda signum, frame: [_kill(p, signal.SIGTERM) for p in pids])
    alive, failed, deadline = set(pids), False, math.inf
    while alive:
        for p in list(alive):
            done, status = os.waitpid(p, os.WNOHANG)
            if done == 0:
                continue
            alive.discard(p)
            if os.waitstatus_to_exitcode(status) != 0 and not failed:
                failed, deadline = True, time.monotonic() + KILL_AFTER_TERM_S
                for q in alive:
                    _kill(q, signal.SIGTERM)
        if failed and time.monotonic() > deadline:
            for q in alive:
                _kill(q, signal.SIGKILL)
        time.sleep(0.1)
    if failed:
        os._exit(1)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _run_hydra_job(payload: bytes, overrides: list[str], num: int, result_path: str | None) -> None:
    import cloudpickle
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    hydra_context, task_function, config, singleton_state = cloudpickle.loads(payload)
    Singleton.set_state(singleton_state)
    setup_globals()
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config.hydra.job):
        sweep_config.hydra.job.id = str(os.getpid())
        sweep_config.hydra.job.num = num
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    ret.hydra_cfg = None   # what the driver needs is the status and return value
    if result_path is None:   # a rank other than 0
        return
    tmp = f"{result_path}.tmp"
    with open(tmp, "wb") as fh:
        cloudpickle.dump(ret, fh)
    os.replace(tmp, result_path)


class PeftbenchLocalLauncher(Launcher):
    """Each job in its own process on this machine, `parallel` at a time, a line as each ends.

    Job processes are forked from a fork server that imported torch, transformers, peft and the harness
    once (multiprocessing's forkserver with a preload list), so a job starts in milliseconds instead of
    paying a fresh interpreter's imports (seconds) every time; each job is still its own process, so a
    crash, an OOM kill or a signal ends only that job. The server itself never computes (no threads, no
    CUDA), which is what makes forking it safe.
    """

    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import multiprocessing as mp

        import cloudpickle

        from harness.sweeps import MANIFEST, cancel_requested, note_launch

        assert self.config is not None
        setup_globals()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        payload = cloudpickle.dumps((self.hydra_context, self.task_function, self.config, Singleton.get_state()))
        parallel = max(1, int(self.params.get("parallel") or 1))
        gpus_per_job = int(self.params.get("gpus_per_node") or 0)
        nproc = max(1, int(self.params.get("nproc_per_job") or 1))   # ranks per job (harness.distributed)
        timeout_s = 60.0 * float(self.params.get("timeout_min") or 0) or math.inf
        folder_pattern = str(self.params.get("submitit_folder") or sweep_dir / ".local" / "%j")
        manifest = (sweep_dir / MANIFEST).exists()

        todo = list(range(len(job_overrides)))
        running: dict[int, tuple[Any, str, float, int]] = {}   # i -> (process, result path, start, slot)
        results: dict[int, JobReturn] = {}
        free_slots = list(range(parallel))
        while len(results) < len(job_overrides):
            while todo and free_slots and not cancel_requested(sweep_dir):
                i = todo.pop(0)
                num = initial_job_idx + i
                folder = Path(folder_pattern.replace("%j", str(num)))
                folder.mkdir(parents=True, exist_ok=True)
                log_path, result_path = folder / f"{num}_log.err", folder / f"{num}_result.pkl"
                result_path.unlink(missing_ok=True)
                slot = free_slots.pop(0)
                gpus = ",".join(str(g) for g in range(slot * gpus_per_job, (slot + 1) * gpus_per_job)) \
                    if gpus_per_job else None
                proc = ctx.Process(target=_run_local_job, name=f"peftbench-job-{num}",
                                   args=(payload, list(job_overrides[i]), num, str(log_path), str(result_path), gpus,
                                         nproc))
                proc.start()
                running[i] = (proc, str(result_path), time.monotonic(), slot)
                if manifest:
                    note_launch(sweep_dir, {"launcher": "local", "host": os.uname().nodename, "jobs": [
                        {"num": num, "job_id": str(proc.pid), "pid": proc.pid, "marker": "forkserver",
                         "log": str(log_path)}]})
            if todo and cancel_requested(sweep_dir):   # `peftbench cancel`: launch nothing more
                for i in todo:
                    results[i] = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.COMPLETED,
                                           _return_value={"status": "cancelled"})
                    report(self, initial_job_idx + len(results), "-", job_overrides[i], results[i],
                           num=initial_job_idx + i, total=initial_job_idx + len(job_overrides))
                todo = []
            for i, (proc, result_path, started, slot) in list(running.items()):
                if proc.is_alive():
                    age = time.monotonic() - started
                    if age > timeout_s:
                        os.kill(proc.pid, signal.SIGTERM if age < timeout_s + KILL_AFTER_TERM_S else signal.SIGKILL)
                    continue
                proc.join()
                results[i] = _local_result(job_overrides[i], proc, result_path)
                del running[i]
                free_slots.append(slot)
                report(self, initial_job_idx + len(results), str(proc.pid), job_overrides[i], results[i],
                       num=initial_job_idx + i, total=initial_job_idx + len(job_overrides))
            if len(results) < len(job_overrides):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(job_overrides))]


def _local_result(overrides: Sequence[str], proc: Any, result_path: str) -> JobReturn:
    import cloudpickle

    try:
        with open(result_path, "rb") as fh:
            return cloudpickle.load(fh)
    except (OSError, EOFError, cloudpickle.pickle.UnpicklingError):
        how = f"signal {-proc.exitcode}" if proc.exitcode and proc.exitcode < 0 else f"exit code {proc.exitcode}"
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                         _return_value=RuntimeError(f"job process {proc.pid} ended without a result ({how})"))
