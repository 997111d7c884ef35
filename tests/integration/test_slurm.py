"""launcher=slurm against a live SLURM (scripts/slurm-local.sh up; `make test` starts it as root).

Everything here is real: sbatch, job arrays, `scontrol requeue`, `scancel --signal=USR2`, a time
limit, `scancel`, and a cluster without accounting. The jobs are tiny (MiniLM, SST-2, one core); those
that get signalled hold at known steps until SLURM's signal arrives (tests/integration/hooks.py).
Skipped, with the reason, where no SLURM node is up.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.spec import PROJECT_ROOT
from tests.integration.hooks import inject
from tests.integration.test_preempt import adapter, assert_same_result

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

BASE = ["task=glue/sst2", "logger=none", "budget=smoke", "budget.eval_size=64", "launcher=slurm_cpu"]
# 22 steps: the interrupted job holds after steps 2, 4 and 6 for its three signals, the preempted one
# after step 2; the last attempts train the rest
LONG = ["method=lora", "seed=0", "budget.tokens=1200", "budget.checkpoint_every=null"]
INTERRUPTS = (2, 4, 6)


def _no_cluster() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo); as root `scripts/slurm-local.sh up` installs and starts one"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return f"SLURM not reachable: {out.stderr.strip()} (scripts/slurm-local.sh up)"
    # completing: up, still cleaning up after a job that just ended (as it is between most tests here)
    if not {"idle", "mixed", "allocated", "completing"} & set(out.stdout.split()):
        return f"no usable SLURM node (states: {out.stdout.split()})"
    return None


# HOLD_S: how long a job holding at a step (tests/integration/hooks.py) waits for SLURM's signal. After each step
# listed in `hold` a job says so in its log ("[test] holding after step k") and holds that step until a signal
# reaches its SignalGuard; the test has SLURM signal it then: each interruption lands mid-run at a known step
# however fast or loaded the machine is, so the jobs can be short.
HOLD_S = 600


def _env(root: Path | None = None, hold: str = "") -> dict[str, str]:
    """The environment sbatch exports to the jobs; with `hold` (steps, "2,4") they hold there (hooks.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",   # the jobs import the same checkout
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))})
    if hold:
        assert root is not None
        env = inject(env, root, [int(s) for s in hold.split(",")], hold_s=HOLD_S, slurm_only=True)
    return env


class Driver:
    """`peftbench run -m ...` in the background: the launcher that submits and waits."""

    def __init__(self, root: Path, *args: str, name: str, options: tuple[str, ...] = (),
                 hold: str = "") -> None:
        self.root, self.log = root, root / f"{name}.driver.log"
        root.mkdir(parents=True, exist_ok=True)
        self.args = [*BASE, *args, f"results_dir={root / 'results'}", f"runs_dir={root / 'runs'}",
                     f"sweep_name={name}"]
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "-m", *options, *self.args],
                                     cwd=PROJECT_ROOT, env=_env(root, hold), stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))

    def job_id(self, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while not (m := re.search(r"submitted SLURM array (\d+)", self.log.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.2)
        return m.group(1)

    def job_log(self) -> str:
        return "".join(p.read_text() for p in sorted((self.root / "runs").rglob("*_log.err")))

    def wait_training(self, attempt: int, timeout: float = 240, text: str = "[peftbench] training") -> None:
        """Until the job's log shows its `attempt`-th training start (logs are appended across requeues)."""
        deadline = time.monotonic() + timeout
        while self.job_log().count(text) < attempt:
            assert self.proc.poll() is None, self.log.read_text()[-3000:] + self.job_log()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} #{attempt}:\n{self.job_log()[-3000:]}"
            time.sleep(0.2)

    def wait_held(self, n: int, timeout: float = 240) -> None:
        """Until the job (its tasks, its attempts) has reached its `n`-th hold."""
        self.wait_training(n, timeout, text="[test] holding after step")

    def finish(self, timeout: float = 420) -> str:
        self.proc.wait(timeout=timeout)
        text = self.log.read_text()
        assert self.proc.returncode == 0, text[-3000:]
        return text

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "results" / "records").glob("*.json"))]


def _job_pids(job_id: str) -> list[int]:
    """The job's Python process(es) on this node (the one running submitit's _submit)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and b"submitit.core._submit" in (proc / "cmdline").read_bytes()
                    and f"SLURM_JOB_ID={job_id}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    reason = _no_cluster()
    if reason:
        print(f"\nSLURM tests skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    # the two long jobs first (one core each), then the array, one task at a time (array_parallelism=1) on
    # the core the cancelled job frees: the interrupted job, requeued three times, finds its core free each
    # time instead of queueing behind array tasks
    job = Driver(root / "interrupted", *LONG, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=0",
                 name="interrupted", hold=",".join(map(str, INTERRUPTS)))
    cancel = Driver(root / "cancel", *LONG, name="cancel", hold="1")
    job_id, cancel_id = job.job_id(), cancel.job_id()
    drivers = {"interrupted": job, "cancel": cancel,
               "array": Driver(root / "array", "method=lora", "seed=0,1", "budget.tokens=400",
                                "hydra.launcher.array_parallelism=1", name="array")}
    # the uninterrupted reference, outside SLURM, meanwhile
    ref_root = root / "reference"
    ref = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", *BASE[:-1], *LONG, "threads=1",
                            f"results_dir={ref_root / 'results'}", f"runs_dir={ref_root / 'runs'}"],
                           cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # interrupted: scontrol requeue → USR2 → time limit → finish, each while held mid-run; cancel: scancel
    job.wait_held(1)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    cancel.wait_held(1)
    subprocess.run(["scancel", cancel_id], check=True)
    job.wait_held(2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    job.wait_held(3)
    # stop the held job until its one-minute limit: SLURM then sends SIGCONT + SIGTERM (a real time limit)
    pids = _job_pids(job_id)
    assert pids, "the job's python process was not found"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    (ref_path,) = (ref_root / "results" / "records").glob("*.json")
    yield {"drivers": drivers, "reference": (json.loads(ref_path.read_text()), ref_root),
           "job_id": job_id, "cancel_id": cancel_id}
    for d in drivers.values():   # a failed test must not leave jobs queued or drivers waiting
        if d.proc.poll() is None:
            d.proc.kill()
    subprocess.run(["scancel", job_id, cancel_id, *re.findall(r"submitted SLURM array (\d+)",
                                                            drivers["array"].log.read_text())], check=False)


def test_sweep_runs_as_one_array_with_slurm_ids(cluster: dict) -> None:
    array = cluster["drivers"]["array"]
    out = array.finish()
    assert "peftbench: sweep finished: 2 success" in out
    array_id = re.search(r"submitted SLURM array (\d+) \(2 jobs, name peftbench-array\)", out).group(1)
    assert re.search(r"\[2/2\] \d+_\d .*: success accuracy=", out)   # a progress line per job
    recs = array.records()
    assert len(recs) == 2 and {r["run"]["status"] for r in recs} == {"success"}
    assert {r["run"]["slurm"]["SLURM_ARRAY_JOB_ID"] for r in recs} == {array_id}
    assert sorted(r["run"]["slurm"]["SLURM_ARRAY_TASK_ID"] for r in recs) == ["0", "1"]
    assert all(r["run"]["launcher"] == "slurm" and r["meta"]["torch"]["threads"] == 1 for r in recs)
    # the submitit folder lives under runs_dir, not under the current directory
    (sbatch,) = (array.root / "runs" / "hydra").rglob("*_submission.sh")
    assert "--job-name=peftbench-array" in sbatch.read_text()


def test_rerun_of_a_finished_sweep_submits_nothing(cluster: dict) -> None:
    array = cluster["drivers"]["array"]
    array.proc.wait(timeout=420)
    again = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-m", *array.args], cwd=PROJECT_ROOT,
                           env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already have a success record (skipped); 0 to run" in again.stderr
    assert "submitted" not in again.stderr


def test_scancel_leaves_a_cancelled_record(cluster: dict) -> None:
    cancel = cluster["drivers"]["cancel"]
    out = cancel.finish()
    assert "1 cancelled" in out
    (rec,) = cancel.records()
    assert rec["run"]["status"] == "cancelled" and "SIGTERM at step" in rec["run"]["error"]
    assert rec["run"]["slurm"]["SLURM_JOB_ID"] == cluster["cancel_id"]
    (run_dir,) = (cancel.root / "runs").glob("[0-9a-f]" * 40)
    assert (run_dir / "checkpoint.pt").exists()   # rerunning resumes it


def test_bad_partition_is_one_clear_message_and_leaves_nothing(tmp_path: Path) -> None:
    reason = _no_cluster()
    if reason:
        pytest.skip(reason)
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", "-m", *BASE, "method=lora", "seed=0,1",
                          "hydra.launcher.partition=nosuchpartition", f"results_dir={tmp_path / 'results'}",
                          f"runs_dir={tmp_path / 'runs'}"], cwd=PROJECT_ROOT, env=_env(), capture_output=True,
                         text=True, timeout=300, check=False)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "invalid partition" in res.stderr.lower() and "Traceback" not in res.stderr
    # sbatch's own two lines, then one of ours; no traceback
    assert len(res.stderr.strip().splitlines()) <= 5, res.stderr
    assert "peftbench: SLURM refused the job array" in res.stderr and "nothing was submitted" in res.stderr
    assert not list((tmp_path / "runs").rglob("*"))


def test_search_trials_run_as_slurm_jobs(tmp_path: Path) -> None:
    """`peftbench search launcher=slurm_cpu`: trials are SLURM jobs (two in flight), their records carry
    the SLURM job ids and run.search, and they evaluate only the validation split."""
    if (why := _no_cluster()) is not None:
        pytest.skip(why)
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "search", "method=lora", *BASE, "budget.tokens=150",
         "budget.max_seq_len=32", "budget.eval_size=32", "task.validation.size=32",
         f"results_dir={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}", "search.n_trials=2",
         "search.parallelism=2", "search.sampler=random"],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 trial(s) (2 complete)" in out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "records").glob("*.json"))]
    assert len(records) == 2
    for rec in records:
        assert rec["run"]["status"] == "success" and rec["run"]["launcher"] == "slurm"
        assert rec["run"]["slurm"]["SLURM_JOB_ID"] and rec["run"]["search"]["trial"] in (0, 1)
        assert rec["eval"]["eval_split"] == "validation"


def test_a_slurm_trial_is_pruned_from_its_own_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pruning from SLURM jobs: the job reports its periodic validation scores to the study's journal
    file (on the shared filesystem) and stops when the median pruner says so; the trial is told PRUNED."""
    if (why := _no_cluster()) is not None:
        pytest.skip(why)
    import optuna

    from harness.records import read_record
    from harness.search import Driver as SearchDriver
    from harness.search import open_study, plan

    for key, value in _env().items():
        monkeypatch.setenv(key, value)   # what sbatch exports to the trial jobs
    search = plan(["method=lora", *BASE, "budget.tokens=400", "budget.max_seq_len=32", "budget.eval_size=32",
                   "task.validation.size=32", "budget.eval_every=2", f"results_dir={tmp_path / 'results'}",
                   f"runs_dir={tmp_path / 'runs'}", "search.n_trials=3", "search.pruner=median",
                   "+search.pruner_args.n_startup_trials=2"])
    study = open_study(search)
    dists = {p.path: p.distribution() for p in search.params}
    good = {"method.optim.lr": 5e-3, "method.params.r": 8, "method.params.lora_alpha": 16,
            "method.params.lora_dropout": 0.0}
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(params=good, distributions=dists, value=0.99,
                                                  intermediate_values={s: 0.99 for s in range(2, 40, 2)}))
    study.enqueue_trial({**good, "method.optim.lr": 1e-5})
    result = SearchDriver(search).run()
    assert result.states == {"COMPLETE": 2, "PRUNED": 1}
    rec = read_record(Path(study.trials[2].user_attrs["record"]))
    assert rec["run"]["status"] == "pruned" and rec["run"]["slurm"]["SLURM_JOB_ID"]
    assert "pruned by the median pruner at step 2" in rec["run"]["error"]


def test_requeue_usr2_and_time_limit_each_resume_exactly(cluster: dict) -> None:
    # after the search tests, not right after the fixture: the minute or more its job sits held until the
    # time limit (one core idle) runs them
    job = cluster["drivers"]["interrupted"]
    out = job.finish()
    assert "1 success" in out, out[-3000:]
    (rec,) = job.records()
    ref, ref_root = cluster["reference"]
    assert_same_result(rec, ref, job.root, ref_root)
    assert adapter(job.root)
    train = rec["train"]
    ended = [a["ended_by"] for a in train["attempt_log"]]
    assert ended[:3] == ["SIGTERM", "SIGUSR2", "SIGTERM"] and ended[-1] == "finished", ended
    steps = train["resumed_from_steps"]
    assert len(steps) == len(ended) - 1 and tuple(steps[:3]) == INTERRUPTS and steps[2] < train["steps"]
    assert train["attempts"] == len(ended) >= 4 and train["requeues"] == len(ended) - 1
    assert rec["run"]["slurm"]["SLURM_JOB_ID"] == cluster["job_id"]
    assert train["train_time_s"] == pytest.approx(sum(a["train_time_s"] for a in train["attempt_log"]), abs=0.01)
    assert train["wall_time_s"] >= 60   # the attempt held until its time limit counts too
    assert "DUE TO TIME LIMIT" in job.job_log() and "DUE TO JOB REQUEUE" in job.job_log()


FAULTY = {  # test-only method YAMLs (a --config-dir), composed like any user's own method
    "lora_nan": "defaults: [lora, _self_]\nname: lora_nan\noptim:\n  lr: 1.0e+30\n",
    "lora_crash": "defaults: [lora, _self_]\nname: lora_crash\nparams:\n  target_modules: [no_such_module]\n",
}


def _faulty_conf(root: Path) -> Path:
    conf = root / "conf"
    (conf / "method").mkdir(parents=True, exist_ok=True)
    for name, text in FAULTY.items():
        (conf / "method" / f"{name}.yaml").write_text(text)
    return conf


def _peftbench(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=PROJECT_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_a_crashing_and_a_nan_job_fail_alone_and_status_says_why(tmp_path: Path) -> None:
    """Failure isolation on SLURM: of four array tasks, the one that crashes and the one whose loss turns
    NaN end `failed` with their reason; the other two succeed; `peftbench status` shows the array."""
    if (why := _no_cluster()) is not None:
        pytest.skip(why)
    drv = Driver(tmp_path, "method=lora,lora_nan,lora_crash,dora", "seed=0", "budget.tokens=400", name="faults",
                 options=("--config-dir", str(_faulty_conf(tmp_path))))
    out = drv.finish()
    assert "peftbench: sweep finished: 2 failed, 2 success" in out, out[-3000:]
    by_method = {r["run"]["method"]: r["run"] for r in drv.records()}
    assert {m: r["status"] for m, r in by_method.items()} == {
        "lora": "success", "dora": "success", "lora_nan": "failed", "lora_crash": "failed"}
    assert "FloatingPointError: loss is nan" in by_method["lora_nan"]["error"]
    assert "no_such_module" in by_method["lora_crash"]["error"]
    array_id = drv.job_id()
    st = _peftbench("status", "faults", "--runs-dir", str(tmp_path / "runs"))
    assert st.stdout.startswith(f"faults: 4 jobs: 2 success, 2 failed  [slurm, SLURM array {array_id}"), st.stdout
    assert re.search(rf"lora_nan\|.* failed \(job {array_id}_\d\) - FloatingPointError", st.stdout), st.stdout
    assert f"log: {tmp_path}/runs/hydra" in st.stdout


def test_cancelling_one_task_or_the_sweep(tmp_path: Path) -> None:
    """`scancel ARRAY_0` ends one task (a `cancelled` record) and the launcher keeps waiting for the rest;
    `peftbench cancel NAME` then stops the others, running or pending, and the driver ends with a summary."""
    if (why := _no_cluster()) is not None:
        pytest.skip(why)
    # each task holds after its first step (hold) until its signal: only the cancels end these tasks, however
    # slow the CLI calls in between are on a loaded machine (and the budget is ~15 min of training anyway)
    drv = Driver(tmp_path, "method=lora", "seed=0,1,2", "budget.tokens=400000", "budget.checkpoint_every=null",
                 name="cancels", hold="1")
    array_id = drv.job_id()
    try:
        _cancel_one_then_the_sweep(drv, array_id, tmp_path)
    finally:   # a failed assertion must not leave the long tasks holding the node for later tests
        subprocess.run(["scancel", array_id], check=False)
        if drv.proc.poll() is None:
            drv.proc.kill()


def _cancel_one_then_the_sweep(drv: Driver, array_id: str, tmp_path: Path) -> None:
    drv.wait_held(1)
    subprocess.run(["scancel", f"{array_id}_0"], check=True)
    deadline = time.monotonic() + 120
    while "[1/3]" not in drv.log.read_text():
        assert drv.proc.poll() is None, drv.log.read_text()[-3000:]   # one task's end is not the sweep's
        assert time.monotonic() < deadline, drv.log.read_text()[-3000:]
        time.sleep(0.5)
    assert re.search(rf"\[1/3\] {array_id}_0 seed=0: cancelled", drv.log.read_text()), drv.log.read_text()[-2000:]
    st = _peftbench("status", "cancels", "--runs-dir", str(tmp_path / "runs"))
    assert "1 cancelled" in st.stdout.splitlines()[0] and ("running" in st.stdout or "pending" in st.stdout), st.stdout
    said = _peftbench("cancel", "cancels", "--runs-dir", str(tmp_path / "runs"))
    assert said.returncode == 0 and f"scancel {array_id}" in said.stdout, said.stdout + said.stderr
    out = drv.finish(timeout=300)
    assert "peftbench: sweep finished: 3 cancelled" in out, out[-3000:]
    st = _peftbench("status", "cancels", "--runs-dir", str(tmp_path / "runs"))
    assert st.stdout.startswith("cancels: 3 jobs: 3 cancelled"), st.stdout
    # nothing left in the queue but tasks completing (CG: slurmd still cleaning up a cancelled step, which on
    # a loaded machine outlasts the records by seconds), and those leave it too
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["squeue", "-h", "-j", array_id, "-o", "%i %t"], capture_output=True, text=True,
                             check=False).stdout
        left = [line.split() for line in out.splitlines() if line.strip()]
        if not left:
            break
        assert all(state == "CG" for _, state in left), left
        assert time.monotonic() < deadline, left
        time.sleep(1.0)


def test_a_job_preempted_by_a_higher_priority_partition_resumes_exactly(cluster: dict, tmp_path: Path) -> None:
    """Real preemption: a job in the `urgent` partition (PriorityTier 2, PreemptMode=REQUEUE) needs the
    whole node; the running `debug` job gets its signal, checkpoints, is requeued, and ends with the
    uninterrupted run's metrics and adapter."""
    drv = Driver(tmp_path, *LONG, name="preempted", hold="2")
    job_id = drv.job_id()
    drv.wait_held(1)
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0]
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", f"--cpus-per-task={cpus}", "--mem=500M",
                             "--output=/dev/null", "--wrap", "sleep 5"], env=_env(), capture_output=True,
                            text=True, check=True).stdout.strip()
    drv.wait_training(2, timeout=420)
    out = drv.finish()
    assert "1 success" in out, out[-3000:]
    (rec,) = drv.records()
    ref, ref_root = cluster["reference"]
    assert_same_result(rec, ref, tmp_path, ref_root)
    ended = [a["ended_by"] for a in rec["train"]["attempt_log"]]
    assert ended[0] in ("SIGUSR2", "SIGTERM") and ended[-1] == "finished", ended
    assert rec["train"]["resumed_from_steps"][0] == 2 and rec["run"]["slurm"]["SLURM_JOB_ID"] == job_id
    assert "PREEMPTION" in drv.job_log() or rec["train"]["requeues"] >= 1, drv.job_log()[-2000:]
    subprocess.run(["scancel", urgent], check=False)


def test_a_two_task_job_trains_ddp_and_a_requeue_resumes_exactly(tmp_path: Path) -> None:
    """launcher=slurm with hydra.launcher.tasks_per_node=2 (issue #20): one array task of two SLURM tasks, one core
    each; submitit's TorchDistributedEnvironment gives each its rank, they train with DDP over gloo and land one
    success record of world size 2. `scontrol requeue` mid-training: both tasks checkpoint at one step and the
    requeued job resumes, bit for bit, to the uninterrupted 2-rank run (torchrun, outside SLURM), which in turn
    equals the one-process run within DDP's float tolerance (tests/integration/test_ddp.py)."""
    from tests.conftest import run_record
    from tests.integration.test_ddp import ENCODER, assert_same_job, only_record, torchrun

    if reason := _no_cluster():
        pytest.skip(reason)
    job = (*ENCODER, "budget.steps=12")
    drv = Driver(tmp_path / "slurm", *(o for o in job if o.split("=")[0] not in
                                       ("logger", "task", "budget", "threads", "device", "budget.eval_size")),
                 "hydra.launcher.tasks_per_node=2", name="ddp", hold="4")
    job_id = drv.job_id()
    drv.wait_held(2, timeout=420)   # both ranks hold after step 4
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    # meanwhile, outside SLURM: the uninterrupted 2-rank run and the one-process run
    two = torchrun(tmp_path / "two", *job)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_record(tmp_path / "one", *job)
    drv.wait_training(4, timeout=420)
    out = drv.finish()
    assert "1 success" in out, out[-3000:]
    (rec,) = drv.records()
    ex = rec["meta"]["execution"]
    assert (ex["world_size"], ex["parallel"], ex["nodes"]) == (2, "ddp", 1)
    assert [r["rank"] for r in rec["train"]["ranks"]] == [0, 1]
    assert rec["run"]["slurm"]["SLURM_JOB_ID"] == job_id
    assert rec["train"]["resumed_from_steps"] == [4], rec["train"]["attempt_log"]   # of 12 steps
    assert_same_result(rec, only_record(tmp_path / "two"), tmp_path / "slurm", tmp_path / "two")
    assert_same_job(rec, one, tmp_path / "slurm", tmp_path / "one")
