"""The debug (in-process) and local (submitit subprocess) launchers, with what the SLURM one already has:
a progress line per finished job (n/N, job, status, primary metric, time since the sweep started), and a
note in the sweep's launch log of where each job runs (harness/sweeps.py), for `peftbench status` and
`peftbench cancel`. A job that dies without a return value is a `lost` result, never the sweep's end.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

POLL_S = 0.5


def value_of(ret: JobReturn) -> Any:
    """A job's return value, or None when it raised (never re-raises: one job never ends a sweep)."""
    return ret._return_value if ret.status == JobStatus.COMPLETED else None


def report(launcher: Any, n: int, job_id: str, overrides: Sequence[str], ret: JobReturn, *,
           num: int | None = None, total: int | None = None) -> None:
    """Print the progress line of the sweep's job `num` (its n-th to finish). A job that raised or died
    is shown with its record's status when it wrote one (a cancelled job writes it before it exits)."""
    from harness.sweeps import progress_line, record_status

    value = value_of(ret)
    records = getattr(launcher, "sweep_records", None)
    if value is None and records and num is not None and num < len(records):
        from harness.sweeps import cancel_requested

        sweep_dir = Path(str(launcher.config.hydra.sweep.dir)) if launcher.config is not None else None
        value = {"status": record_status(records[num])
                 or ("cancelled" if sweep_dir and cancel_requested(sweep_dir) else "lost")}
    total = getattr(launcher, "sweep_total", None) or total or n
    elapsed = max(0.0, time.monotonic() - getattr(launcher, "sweep_t0", time.monotonic()))
    varying = getattr(launcher, "sweep_varying", None)   # only what tells this job from the others
    shown = [o for o in filter_overrides(list(overrides)) if varying is None or o.split("=", 1)[0] in varying]
    print(progress_line(n, total, job_id, shown, value, elapsed), file=sys.stderr, flush=True)


class PeftbenchBasicLauncher(BasicLauncher):
    """Hydra's in-process launcher, one job at a time, a line after each."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from harness.sweeps import note_launch

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        out = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            if (sweep_dir / "jobs.json").exists():
                note_launch(sweep_dir, {"launcher": "debug", "host": os.uname().nodename,
                                        "jobs": [{"num": num, "job_id": None, "pid": os.getpid()}]})
            ret = super().launch([overrides], num)[0]
            report(self, num + 1, "", overrides, ret, num=num, total=initial_job_idx + len(job_overrides))
            out.append(ret)
        return out


class PeftbenchLocalLauncher(LocalLauncher):
    """submitit's local executor: each job in its own process; the wait reports each job as it ends."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from harness.sweeps import note_launch

        assert self.config is not None
        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="local", folder=params.pop("submitit_folder"))
        params.pop("max_num_timeout", None)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"local_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                       Singleton.get_state()) for i, o in enumerate(job_overrides)]
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        if (sweep_dir / "jobs.json").exists():
            note_launch(sweep_dir, {"launcher": "local", "host": os.uname().nodename, "jobs": [
                {"num": initial_job_idx + i, "job_id": j.job_id, "pid": int(j.job_id), "marker": "submitit",
                 "log": str(j.paths.stderr)} for i, j in enumerate(jobs)]})
        results: dict[int, JobReturn] = {}
        ended: dict[int, float] = {}
        while len(results) < len(jobs):
            for i, job in enumerate(jobs):
                if i in results or not job.done():
                    continue
                # a process that exited without its result file (killed by a signal, OOM) is lost at once;
                # submitit's results() would wait 15 s for the file first
                if not job.paths.result_pickle.exists() and time.monotonic() - ended.setdefault(i, time.monotonic()) < 1.0:
                    continue
                try:
                    if not job.paths.result_pickle.exists():
                        raise RuntimeError("no result file")
                    results[i] = job.results()[0]
                except Exception as exc:  # noqa: BLE001 - the process died (signal, OOM): a lost job
                    results[i] = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.FAILED,
                                           _return_value=RuntimeError(f"job {job.job_id} ended without a result "
                                                                      f"({str(exc).splitlines()[0][:200]}); "
                                                                      f"log: {job.paths.stderr}"))
                report(self, initial_job_idx + len(results), job.job_id, job_overrides[i], results[i],
                       num=initial_job_idx + i, total=initial_job_idx + len(jobs))
            if len(results) < len(jobs):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(jobs))]
