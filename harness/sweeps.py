"""A sweep as its user watches it: the manifest it leaves, a progress line per job, `status` and `cancel`.

Before launching anything the sweeper writes ``<sweep dir>/jobs.json``: every job's number, overrides,
label, signature, record path and run directory, and whether it runs or is skipped. Each launcher appends
to ``launches.jsonl`` in the same folder where its jobs went (the SLURM array id and every task's log, or
the pid of each local job process). `peftbench status` reads only these, the records, and `squeue`: no
daemon, no database, and it works for a sweep launched from another shell, or by a driver that died.
`peftbench cancel` stops a sweep through the same files: `scancel` for an array, SIGTERM for local
processes (each checkpoints and records `cancelled`), and a marker that stops the driver launching more.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "jobs.json"
LAUNCHES = "launches.jsonl"
CANCELLED = "CANCELLED"
# squeue states that mean "not started yet" (the rest of what squeue lists is running or about to)
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "STOPPED"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------- writing
def write_manifest(sweep_dir: Path, *, sweep_name: str, launcher: str, jobs: list[dict[str, Any]],
                   total: int, skipped: int) -> Path:
    """The sweep's job list, before anything is launched (atomic: status never reads half a file)."""
    from harness.records import atomic_write

    sweep_dir.mkdir(parents=True, exist_ok=True)
    doc = {"sweep": sweep_name, "launcher": launcher, "created": _now(), "driver_pid": os.getpid(),
           "host": os.uname().nodename, "total": total, "skipped": skipped, "jobs": jobs}
    return atomic_write(sweep_dir / MANIFEST, json.dumps(doc, indent=1).encode())


def note_launch(sweep_dir: Path | str, entry: dict[str, Any]) -> None:
    """Append one line to the sweep's launch log (a single O_APPEND write: lines never interleave)."""
    line = (json.dumps({"at": _now(), **entry}) + "\n").encode()
    fd = os.open(Path(sweep_dir) / LAUNCHES, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def cancel_requested(sweep_dir: Path | str) -> bool:
    return (Path(sweep_dir) / CANCELLED).exists()


def progress_line(n: int, total: int, job_id: str, overrides: Sequence[str], value: Any, elapsed: float) -> str:
    """`[n/N] job overrides: status metric (elapsed)`: one line per finished job, for every launcher."""
    if isinstance(value, dict):
        status = value.get("status", "?")
        metric = next((f" {k}={v:.4f}" for k, v in value.items()
                       if k not in ("signature", "status", "record") and isinstance(v, float)), "")
    else:
        status, metric = "lost", ""
    job = f"{job_id} " if job_id else ""
    return f"peftbench: [{n}/{total}] {job}{' '.join(overrides)}: {status}{metric} ({elapsed:.0f} s)"


# ------------------------------------------------------------------------------------- reading
@dataclass
class JobState:
    num: int
    label: str
    overrides: list[str]
    state: str            # success | failed | cancelled | pruned | running | pending | interrupted | lost | not launched
    detail: str = ""      # failure reason, squeue's pending reason, ...
    log: str | None = None
    job_id: str | None = None


@dataclass
class Sweep:
    name: str
    dir: Path
    manifest: dict[str, Any]
    launches: list[dict[str, Any]]

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))


def sweep_dirs(runs_dir: Path) -> list[Path]:
    """Every folder holding a sweep manifest, oldest first (Hydra names them by launch time)."""
    root = Path(runs_dir) / "hydra"   # hydra.sweep.dir's default, and folders set beside it by hand
    found = {p.parent for pattern in (f"multirun/*/{MANIFEST}", f"*/{MANIFEST}", MANIFEST) for p in root.glob(pattern)}
    return sorted(found, key=lambda d: (d / MANIFEST).stat().st_mtime)


def load_sweep(path: Path) -> Sweep:
    manifest = json.loads((path / MANIFEST).read_text())
    launches = []
    if (path / LAUNCHES).exists():
        for line in (path / LAUNCHES).read_text().splitlines():
            try:
                launches.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut by a killed driver: the rest still count
                continue
    return Sweep(name=manifest.get("sweep", path.name), dir=path, manifest=manifest, launches=launches)


def find_sweeps(runs_dir: Path, name: str | None = None) -> list[Sweep]:
    """Sweeps by name (latest launch last); `name` may also be a sweep folder."""
    if name and (Path(name) / MANIFEST).exists():
        return [load_sweep(Path(name))]
    sweeps = [load_sweep(d) for d in sweep_dirs(runs_dir)]
    return [s for s in sweeps if name is None or s.name == name]


def squeue_states(array_ids: Iterable[str]) -> dict[str, tuple[str, str]] | None:
    """job id (`<array>_<task>`) → (state, reason) of what squeue lists; None without squeue."""
    ids = sorted(set(array_ids))
    if not ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%R"],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def _pid_alive(pid: int, marker: bytes | None = None) -> bool:
    """True while `pid` runs (and, with a marker, is still the process it was: pids get reused)."""
    from harness.records import pid_alive

    if not pid_alive(pid):
        return False
    if marker is None:
        return True
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True   # no /proc: trust kill(0)


def _record(path: str) -> dict[str, Any] | None:
    from harness.records import RecordError, read_record

    try:
        return read_record(path)
    except (OSError, RecordError):
        return None


def record_status(path: str | Path) -> str | None:
    """The status of the record at path, or None when there is none (or it cannot be read)."""
    rec = _record(str(path))
    return (rec or {}).get("run", {}).get("status")


def ended_status(record_path: str | Path, sweep_dir: Path | str | None) -> str:
    """What a job that ended without a return value (killed, signalled) came to: its record's status when
    it wrote one (a cancelled job does, before it exits), else cancelled if its sweep was, else lost."""
    return record_status(record_path) or ("cancelled" if sweep_dir and cancel_requested(sweep_dir) else "lost")


def varying_keys(jobs: Iterable[Sequence[str]]) -> set[str]:
    """The override keys whose values differ between jobs: what tells one job's line from another's."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for o in job:
            values.setdefault(o.split("=", 1)[0], set()).add(o)
    return {k for k, v in values.items() if len(v) > 1}


def _first_line(text: Any) -> str:
    return str(text or "").strip().splitlines()[0][:300] if str(text or "").strip() else ""


def job_states(sweep: Sweep) -> list[JobState]:
    """Where each job of a sweep stands: its record if final, else what the launcher and squeue say."""
    where: dict[int, dict[str, Any]] = {}
    arrays: set[str] = set()
    for entry in sweep.launches:
        for job in entry.get("jobs", []):
            where[int(job["num"])] = {**job, "launcher": entry.get("launcher"), "host": entry.get("host"),
                                      "at": entry.get("at")}
            if entry.get("launcher") == "slurm":
                arrays.add(str(job["job_id"]).split("_")[0])
    live = squeue_states(arrays) if arrays else {}
    host = os.uname().nodename
    driver = int(sweep.manifest.get("driver_pid") or 0)
    driver_alive = bool(driver) and sweep.manifest.get("host") == host and _pid_alive(driver)
    out = []
    for job in sweep.manifest.get("jobs", []):
        num = int(job["num"])
        st = JobState(num=num, label=job.get("label", ""), overrides=list(job.get("overrides", [])), state="")
        w = where.get(num)
        if w:
            st.job_id, st.log = w.get("job_id"), w.get("log")
        rec = _record(job["record"])
        status = (rec or {}).get("run", {}).get("status")
        if status == "success":
            st.state = "success"
            out.append(st)
            continue
        running = None
        # a final record written since this launch is the job's end, even while squeue or the process
        # table still lists it for a moment; an older one (an earlier launch) yields to what runs now
        ended_here = bool(status and w and str(rec["run"].get("finished_at") or "") >= str(w.get("at") or ""))
        if ended_here:
            pass
        elif w and w.get("launcher") == "slurm" and live is not None:
            # a task that wrote its record and is completing is over, as far as its user is concerned
            if st.job_id in live and not (status and live[st.job_id][0] == "COMPLETING"):
                state, reason = live[st.job_id]
                reason = reason.strip("()")
                pending = state in _PENDING
                detail = (reason if pending and reason not in ("None", "") else "") if state in ("RUNNING", "PENDING") \
                    else state.lower()
                running = ("pending" if pending else "running", detail)
        elif w and w.get("pid") and w.get("host") in (None, host) \
                and _pid_alive(int(w["pid"]), (w.get("marker") or "").encode() or None):
            running = ("running", "")
        elif not w and job.get("action") == "run" and driver_alive and not cancel_requested(sweep.dir):
            running = ("pending", "the driver has not launched it yet")
        if running:
            st.state, st.detail = running
        elif status:
            st.state, st.detail = status, _first_line(rec["run"].get("error"))
        elif job.get("action") == "skip":
            st.state, st.detail = "lost", "skipped at launch as done, but its success record is gone"
        elif (Path(job["run_dir"]) / "checkpoint.pt").exists():
            st.state, st.detail = "interrupted", f"checkpoint in {job['run_dir']}: relaunching resumes it"
        elif w and cancel_requested(sweep.dir):
            st.state, st.detail = "cancelled", "cancelled before it wrote a record (or before it started)"
        elif w:
            st.state, st.detail = "lost", "no record and no longer running (killed, or failed to start): see its log"
        elif cancel_requested(sweep.dir):
            st.state, st.detail = "cancelled", "never launched: the sweep was cancelled"
        else:
            st.state, st.detail = "not launched", "the driver stopped before launching it"
        out.append(st)
    return out


ORDER = ("success", "running", "pending", "interrupted", "failed", "cancelled", "pruned", "lost", "not launched")


def status_lines(runs_dir: Path, name: str | None = None, *, verbose: bool = False) -> list[str]:
    """`peftbench status [SWEEP]`: one line per sweep (its latest launch), then, for a named sweep, one
    line per job that is not done, with the reason and the log."""
    sweeps = find_sweeps(runs_dir, name)
    if not sweeps:
        where = Path(runs_dir) / "hydra"
        return [f"no sweep {name!r} under {where}" if name else f"no sweeps under {where}"]
    latest: dict[str, Sweep] = {}
    for s in sweeps:
        latest[s.name] = s
    lines = []
    for s in latest.values():
        states = job_states(s)
        counts = Counter(j.state for j in states)
        summary = ", ".join(f"{counts[k]} {k}" for k in ORDER if counts.get(k))
        launchers = sorted({e.get('launcher', '?') for e in s.launches}) or [s.manifest.get("launcher", "?")]
        arrays = sorted({str(j.get("job_id", "")).split("_")[0] for e in s.launches if e.get("launcher") == "slurm"
                         for j in e.get("jobs", [])})
        extra = f", SLURM array {', '.join(arrays)}" if arrays else ""
        lines.append(f"{s.name}: {len(states)} jobs: {summary or 'none'}  "
                     f"[{'/'.join(launchers)}{extra}, launched {s.created}; {s.dir}]")
        if name or verbose:
            for j in states:
                if j.state == "success" and not verbose:
                    continue
                bits = [f"  #{j.num} {j.label} {j.state}"]
                if j.job_id:
                    bits.append(f"(job {j.job_id})")
                if j.detail:
                    bits.append(f"- {j.detail}")
                lines.append(" ".join(bits))
                if j.log and j.state not in ("success", "pending"):
                    lines.append(f"      log: {j.log}")
    return lines


def cancel(runs_dir: Path, name: str) -> list[str]:
    """Stop every job of the sweep that still runs or waits; the driver launches nothing more."""
    sweeps = find_sweeps(runs_dir, name)
    if not sweeps:
        raise LookupError(f"no sweep {name!r} under {Path(runs_dir) / 'hydra'}")
    said = []
    host = os.uname().nodename
    for s in sweeps:
        states = {j.num: j for j in job_states(s)}
        waiting = [j for j in states.values() if j.state in ("running", "pending")]
        if not waiting:
            continue
        (s.dir / CANCELLED).write_text(_now() + "\n")
        arrays = sorted({str(j.job_id).split("_")[0] for j in waiting if j.job_id and "_" in str(j.job_id)})
        for array in arrays:
            subprocess.run(["scancel", array], check=False, capture_output=True, text=True, timeout=60)
            said.append(f"scancel {array} ({s.dir.name})")
        for entry in s.launches:
            if entry.get("launcher") == "slurm" or entry.get("host") not in (None, host):
                continue
            for job in entry.get("jobs", []):
                j = states.get(int(job["num"]))
                if j and j.state == "running" and job.get("pid"):
                    try:
                        os.kill(int(job["pid"]), signal.SIGTERM)   # checkpoints, then records `cancelled`
                        said.append(f"SIGTERM pid {job['pid']} ({j.label})")
                    except ProcessLookupError:
                        pass
        said.append(f"{s.name}: the driver launches nothing more ({s.dir / CANCELLED})")
    return said or [f"{name}: nothing to cancel (no job is running or pending)"]
