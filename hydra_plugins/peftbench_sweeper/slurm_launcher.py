"""hydra-submitit-launcher's SLURM launcher, with what a user of a real cluster needs around it.

- SLURM's own refusal (bad partition, QOS, limits) is one clear message and exit 2, and the
  submission's files are removed, like every other config error.
- After submission: the array id, the job name and the log folder are printed.
- The wait: every task is waited for on its own; a failed, cancelled or lost task never ends the
  wait for the others. Whether a task is still alive comes from `squeue` (no accounting needed:
  submitit's sacct polling never sees a task cancelled without one and would wait forever); a task
  is over when its result file exists, or once squeue no longer lists it.
- A line per finished task (n/N, job, status, primary metric, time).
- Ctrl-C leaves the array running and says how to watch or cancel it.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.peftbench_sweeper.launchers import report

log = logging.getLogger("peftbench")
POLL_S = 2.0
# squeue may briefly not list a task whose result file is still being renamed into place
GONE_GRACE_S = 10.0
# squeue failing for this long in a row (slurmctld down, a broken client) ends the wait: a task that was
# cancelled or killed writes no result, so only squeue could tell, and the driver would wait forever
SQUEUE_GIVE_UP_S = 900.0


class SubmissionError(RuntimeError):
    """sbatch refused the array; the message is SLURM's own."""


def live_tasks(array_id: str) -> set[str] | None:
    """Task ids (ARRAY_TASK) squeue still lists for the array (pending, running, requeued, completing);
    None when squeue cannot be asked (then only the jobs' own files tell)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i"], capture_output=True,
                             text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # a finished array is "Invalid job id specified" once slurmctld forgot it: nothing is alive
        return set() if "Invalid job id" in out.stderr else None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


class PeftbenchSlurmLauncher(SlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """One job in its SLURM task's own process (submitit calls this once there; a requeue starts a new
        process): harness.cli.hydra_task may then keep bitsandbytes out when the job does not need it."""
        from harness.cli import ONE_JOB_ENV

        os.environ[ONE_JOB_ENV] = "1"
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        # submitit asks sacct for states; without accounting it warns on every poll: say it once, here
        logging.getLogger("submitit").setLevel(logging.ERROR)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                       Singleton.get_state()) for i, o in enumerate(job_overrides)]
        try:
            jobs = executor.map_array(self, *zip(*job_params, strict=True))
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as exc:
            shutil.rmtree(sweep_dir, ignore_errors=True)   # nothing left behind: this launch's folder,
            for parent in sweep_dir.parents[:2]:           # and hydra/multirun/ if it made them
                try:
                    parent.rmdir()
                except OSError:
                    break
            raise SubmissionError(_sbatch_message(exc)) from None
        array_id = jobs[0].job_id.split("_")[0]
        folder = Path(str(jobs[0].paths.folder)).parent
        from harness.sweeps import MANIFEST, note_launch

        if (sweep_dir / MANIFEST).exists():   # for `peftbench status` / `cancel` (harness/sweeps.py)
            note_launch(sweep_dir, {"launcher": "slurm", "array_id": array_id, "folder": str(folder), "jobs": [
                {"num": initial_job_idx + i, "job_id": j.job_id, "log": str(j.paths.stderr)}
                for i, j in enumerate(jobs)]})
        print(f"peftbench: submitted SLURM array {array_id} ({len(jobs)} jobs, name {params.get('name')}); "
              f"logs: {folder}/{array_id}_<task>/\n"
              f"peftbench: watch: squeue -j {array_id} · cancel: scancel {array_id}", file=sys.stderr, flush=True)
        try:
            return self._wait(jobs, job_overrides, array_id, initial_job_idx)
        except KeyboardInterrupt:
            print(f"\npeftbench: stopped waiting; SLURM array {array_id} keeps running.\n"
                  f"  watch:  squeue -j {array_id}   (logs: {folder})\n"
                  f"  cancel: scancel {array_id}\n"
                  "  collect: rerun the same command: finished jobs are skipped, the rest resume",
                  file=sys.stderr)
            raise SystemExit(130) from None

    def _wait(self, jobs: list[Any], overrides: Sequence[Sequence[str]], array_id: str,
              initial_job_idx: int = 0) -> list[JobReturn]:
        from submitit.core.utils import pickle_load

        results: dict[int, JobReturn] = {}
        gone_since: dict[int, float] = {}
        blind_since: float | None = None   # since when squeue has failed without a break
        while len(results) < len(jobs):
            alive = live_tasks(array_id)
            if alive is None:
                if blind_since is None:
                    blind_since = time.monotonic()
                    print("peftbench: squeue unavailable: waiting on the jobs' result files only", file=sys.stderr)
                elif time.monotonic() - blind_since >= SQUEUE_GIVE_UP_S:
                    # a cancelled or killed task writes no result: without squeue, waiting could never end
                    for i, job in enumerate(jobs):
                        if i not in results and not job.paths.result_pickle.exists():
                            results[i] = _failed(overrides[i], RuntimeError(
                                f"job {job.job_id}: SLURM could not be asked for {SQUEUE_GIVE_UP_S:.0f} s; stopped "
                                f"waiting (the array may still run: peftbench status, squeue -j {array_id})"))
                            report(self, initial_job_idx + len(results), job.job_id, overrides[i], results[i],
                                   num=initial_job_idx + i, total=initial_job_idx + len(jobs))
            else:
                blind_since = None
            for i, job in enumerate(jobs):
                if i in results:
                    continue
                ret: JobReturn | None = None
                if job.paths.result_pickle.exists():
                    try:
                        outcome, value = pickle_load(job.paths.result_pickle)
                    except Exception as exc:   # noqa: BLE001 - being renamed into place: next poll
                        log.debug("result of %s not readable yet: %s", job.job_id, exc)
                        continue
                    ret = value if outcome == "success" else _failed(overrides[i], RuntimeError(
                        f"job {job.job_id} raised:\n{value}"))
                elif alive is not None and job.job_id not in alive:
                    first = gone_since.setdefault(i, time.monotonic())
                    if time.monotonic() - first >= GONE_GRACE_S:
                        ret = _failed(overrides[i], RuntimeError(
                            f"job {job.job_id} left the queue without a result (cancelled, killed or failed "
                            f"to start); log: {job.paths.stderr}"))
                if ret is not None:
                    results[i] = ret
                    report(self, initial_job_idx + len(results), job.job_id, overrides[i], ret,
                           num=initial_job_idx + i, total=initial_job_idx + len(jobs))
            if len(results) < len(jobs):
                time.sleep(POLL_S)
        return [results[i] for i in range(len(jobs))]


def _failed(overrides: Sequence[str], exc: BaseException) -> JobReturn:
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc)


def _sbatch_message(exc: BaseException) -> str:
    """SLURM's words from a failed sbatch, without submitit's traceback around them."""
    text = str(getattr(exc, "output", b"") or exc)
    if isinstance(getattr(exc, "output", None), bytes):
        text = exc.output.decode(errors="replace")  # type: ignore[attr-defined]
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()] or [text.strip()]
    return "SLURM refused the job array: " + lines[-1].removeprefix("sbatch: error: ")
