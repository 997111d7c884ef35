"""Dispatch costs: submitting a big sweep, and what the local launcher adds to every job.

Run:  python benchmarks/dispatch.py [--jobs 100] [--local-jobs 4] [--task glue/sst2] [--strict]

Issue #9 bars, printed in one run:

1. Composing, validating and submitting a 100-job sweep takes <= 10 s. Timed end to end as a user
   sees it: `peftbench run -m ... seed=0,...,99 launcher=slurm_cpu` in a fresh process (Python start-up,
   Hydra, every job composed and validated, the data check, the skip check, sbatch of one array), from
   the start of the process to its "submitted SLURM array" line. The array is submitted held (sbatch
   --hold, through the launcher's additional_parameters) and cancelled at once, so nothing runs.
   Baseline in the same run: `sbatch --hold --array=0-(N-1)` of a one-line script, the floor any tool
   on this cluster pays. Without a reachable SLURM the submission is not measured (said so); compose and
   validate are then timed through `peftbench plan`, the same code without the launch.
2. Per-job overhead of the local launcher over calling the job function directly <= 2 s. The same tiny
   real jobs (MiniLM, SST-2, a few hundred tokens) are run (a) in one warm process calling
   `harness.dispatch.execute(spec)` for each, and (b) through `peftbench run -m launcher=local` with one
   job at a time, once with 1 job and once with N: (T(N) - T(1)) / (N - 1) is the local launcher's time
   per job with the driver's fixed start-up cancelled out; minus the direct time per job, it is the
   overhead (a fresh Python process per job with its imports, submitit's pickling and polling).
Every job writes into a throw-away results/runs folder. --task swaps the tiny job's task (another classify task
with local data, e.g. glue/rte: a smaller training set to read, the same launch path). Exit code 0 (a report)
unless --strict and a bar is missed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUBMIT_TARGET_S = 10.0
OVERHEAD_TARGET_S = 2.0
TINY = ["method=lora", "task=glue/sst2", "budget=smoke", "budget.tokens=200", "budget.eval_size=16",
        "budget.max_seq_len=32", "logger=none"]


def tiny_job(task: str | None = None) -> list[str]:
    """TINY, with another task in place of SST-2 when one is given."""
    return [f"task={task}" if task and o.startswith("task=") else o for o in TINY]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PEFTBENCH_LOCAL_PARALLEL": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    return env


def slurm_reachable() -> str | None:
    if shutil.which("sbatch") is None:
        return "no sbatch"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if out.returncode != 0 or not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"no usable SLURM node ({(out.stderr or out.stdout).strip()[:80]})"
    return None


def sbatch_baseline(n: int, folder: Path) -> float:
    script = folder / "noop.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    t0 = time.perf_counter()
    out = subprocess.run(["sbatch", "--hold", "--parsable", f"--array=0-{n - 1}", "--output=/dev/null",
                          "--cpus-per-task=1", "--mem=1G", str(script)], capture_output=True, text=True, check=True)
    dt = time.perf_counter() - t0
    subprocess.run(["scancel", out.stdout.strip().split(";")[0]], check=False)
    return dt


def time_submission(n: int, folder: Path, tiny: list[str] = TINY) -> float:
    """Seconds from the driver's start to its 'submitted SLURM array' line; then cancel and stop it."""
    args = [sys.executable, "-m", "harness.cli", "run", "-m", *tiny, f"seed={','.join(map(str, range(n)))}",
            "launcher=slurm_cpu", "+hydra.launcher.additional_parameters.hold=true", "sweep_name=bench-dispatch",
            f"results_dir={folder / 'results'}", f"runs_dir={folder / 'runs'}"]
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "driver.log"
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        while not (m := re.search(r"submitted SLURM array (\d+)", log.read_text())):
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError(f"the sweep was not submitted:\n{log.read_text()[-2000:]}")
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        subprocess.run(["scancel", m.group(1)], check=False)
        return dt
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def time_plan(n: int, folder: Path, tiny: list[str] = TINY) -> float:
    args = [sys.executable, "-m", "harness.cli", "plan", *tiny, f"seed={','.join(map(str, range(n)))}",
            f"results_dir={folder / 'results'}", f"runs_dir={folder / 'runs'}"]
    t0 = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)
    return time.perf_counter() - t0


def time_local(n: int, folder: Path, first_seed: int, tiny: list[str] = TINY) -> float:
    seeds = ",".join(str(first_seed + i) for i in range(n))
    args = [sys.executable, "-m", "harness.cli", "run", "-m", *tiny, f"seed={seeds}", "launcher=local",
            f"results_dir={folder / 'results'}", f"runs_dir={folder / 'runs'}"]
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if out.returncode != 0 or f"sweep finished: {n} success" not in out.stderr:
        raise RuntimeError(f"local sweep failed:\n{out.stderr[-2000:]}")
    return dt


def time_direct(n: int, folder: Path, first_seed: int, tiny: list[str] = TINY) -> list[float]:
    """Each job's `execute(spec)` in this (warm) process, as a launcher's worker calls it."""
    os.environ.update({k: v for k, v in _env().items() if k in ("HF_HUB_OFFLINE",)})
    import harness.train  # noqa: F401 - imports paid before timing: the direct caller is warm
    from harness.dispatch import execute
    from harness.spec import compose, spec_from_config

    times = []
    for i in range(n):
        spec = spec_from_config(compose([*tiny, f"seed={first_seed + i}", "threads=1",
                                         f"results_dir={folder / 'results'}", f"runs_dir={folder / 'runs'}"]))
        t0 = time.perf_counter()
        summary = execute(spec)
        times.append(time.perf_counter() - t0)
        if summary["status"] != "success":
            raise RuntimeError(f"direct job failed: {summary}")
    return times


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100, help="jobs in the submitted sweep")
    ap.add_argument("--local-jobs", type=int, default=4, help="N for the local launcher's per-job time")
    ap.add_argument("--task", default=None, help="the tiny job's task (default glue/sst2)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a bar is missed")
    args = ap.parse_args(argv)
    tiny = tiny_job(args.task)
    ok = True
    with tempfile.TemporaryDirectory(prefix="peftbench-bench-dispatch-") as tmp:
        folder = Path(tmp)
        why = slurm_reachable()
        if why is None:
            base = sbatch_baseline(args.jobs, folder)
            submit = time_submission(args.jobs, folder / "submit", tiny)
            print(f"sbatch alone ({args.jobs}-task held array): {base:.2f} s")
            print(f"peftbench compose + validate + submit of {args.jobs} jobs: {submit:.2f} s "
                  f"({submit / base:.1f}x sbatch alone)")
            print(f"sweep_submit_s = {submit:.2f} (target <= {SUBMIT_TARGET_S:g}): {verdict(submit <= SUBMIT_TARGET_S)}")
            ok &= submit <= SUBMIT_TARGET_S
        else:
            plan = time_plan(args.jobs, folder / "plan", tiny)
            print(f"SLURM not reachable ({why}): submission not measured")
            print(f"peftbench compose + validate of {args.jobs} jobs (peftbench plan): {plan:.2f} s")
            print(f"sweep_submit_s = n/a (compose + validate {plan:.2f} s; target <= {SUBMIT_TARGET_S:g} with sbatch)")

        n = max(2, args.local_jobs)
        direct = time_direct(n, folder / "direct", first_seed=0, tiny=tiny)
        one = time_local(1, folder / "local1", first_seed=100, tiny=tiny)
        many = time_local(n, folder / "localn", first_seed=200, tiny=tiny)
        per_job = (many - one) / (n - 1)
        overhead = per_job - statistics.mean(direct)
        print(f"direct execute(spec), warm process: {statistics.mean(direct):.2f} s per job "
              f"(median {statistics.median(direct):.2f}, n={n})")
        print(f"launcher=local, one job at a time: {one:.1f} s for 1 job, {many:.1f} s for {n}: "
              f"{per_job:.2f} s per job")
        print(f"local_overhead_per_job_s = {overhead:.2f} (target <= {OVERHEAD_TARGET_S:g}): "
              f"{verdict(overhead <= OVERHEAD_TARGET_S)}")
        ok &= overhead <= OVERHEAD_TARGET_S
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
