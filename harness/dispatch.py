"""Job execution: skip if done → train → record (success or failure) → W&B mirror.

`execute` is what every launcher runs for one job (in-process, submitit local, SLURM). It never
raises for a job's own failure: it writes a `failed` record and returns, so one broken job cannot
take a sweep down. Only Ctrl-C propagates (after writing a `cancelled` record).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import traceback
from typing import Any

from harness.lock import Busy, RunLock
from harness.preempt import Interrupted, SignalGuard, outcome, requeue, slurm_job
from harness.records import success_exists, write_record
from harness.spec import JobSpec
from harness.trial_report import TrialPruned

log = logging.getLogger("peftbench")
TRACEBACK_TAIL = 4000


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_block(spec: JobSpec, status: str, started: str, *, error: str | None = None,
              tb: str | None = None) -> dict[str, Any]:
    import socket

    from harness.provenance import slurm_env

    return {
        "signature": spec.signature, "status": status,
        "method": spec.method["name"], "model": spec.model["name"], "task": spec.task["name"],
        "suite": spec.task.get("suite"), "budget": spec.budget["name"], "seed": spec.seed,
        "spec": spec.semantic(), "sweep": spec.sweep_name, "launcher": spec.launcher,
        "error": error, "traceback": tb[-TRACEBACK_TAIL:] if tb else None,
        "started_at": started, "finished_at": _now(), "host": socket.gethostname(),
        "slurm": slurm_env() or None,
        "search": search_block(spec),
    }


def search_block(spec: JobSpec) -> dict[str, Any] | None:
    """run.search of a search trial: which study and trial, and the values the sampler chose."""
    link = spec.trial
    return None if not link else {"study": link["study"], "trial": link["number"], "params": link["params"]}


def meta_block(spec: JobSpec, result: Any | None) -> dict[str, Any]:
    from harness.provenance import file_sha256, git_info, hardware, package_versions, torch_build

    meta: dict[str, Any] = {"git": git_info(), "packages": package_versions(), "torch": torch_build(),
                            "hardware": hardware()}
    if result is not None:
        data = result.data
        meta["model"] = result.model_source
        meta["data"] = {"source": data.source,
                        "files": {split: {"path": p, "sha256": file_sha256(p)} for split, p in data.files.items()},
                        "notes": list(data.notes)}
        meta["device"] = result.device
        if result.execution:   # plumbing that does not change the result: micro-batches, checkpointing, kernel
            meta["execution"] = result.execution
        if result.capacity:
            meta["capacity"] = result.capacity
    else:   # a failed or cancelled job: still say where it was meant to run
        from harness.train import pick_device

        try:
            meta["device"] = str(pick_device(spec.device))
        except Exception:   # noqa: BLE001 - an unusable device string may be the failure itself
            meta["device"] = str(spec.device)
    return meta


def train_block(result: Any) -> dict[str, Any]:
    return {
        "steps": result.steps, "tokens": result.tokens, "examples": result.examples,
        "stopped_by": result.stopped_by, "wall_time_s": round(result.wall_time_s, 3),
        "train_time_s": round(result.train_time_s, 3), "peak_memory_mb": round(result.peak_memory_mb, 1),
        "peak_accelerator_mb": result.peak_accelerator_mb,
        # throughput over every attempt's training time; memory sampled per step (harness.costs: peft's
        # accelerator_memory_max / _reserved_avg / _reserved_99th, or the RSS off a GPU)
        "tokens_per_s": round(result.tokens / result.train_time_s, 1) if result.train_time_s > 0 else None,
        "memory": result.memory or None, "accelerator": result.accelerator,
        # what the GPUs cost together: a 4-GPU run must not look 4x cheaper than a 1-GPU run of the same work
        "gpus": getattr(result, "gpus", 0),
        "gpu_hours": (round(result.train_time_s * result.gpus / 3600, 5) if getattr(result, "gpus", 0) else None),
        "trainable_params": result.trainable_params, "total_params": result.total_params,
        "adapter_bytes": result.adapter_bytes, "loss_curve": result.loss_curve,
        "resumed_from_step": result.resumed_from_step,
        # every attempt (a requeue, a preemption, a rerun after a cancel) adds up in the costs above
        "attempts": len(result.attempts) or 1,
        "requeues": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
        "resumed_from_steps": [a["resumed_from_step"] for a in result.attempts
                               if a.get("resumed_from_step") is not None],
        "attempt_log": result.attempts,
        # N ranks: each one's host and peak memory (the costs above are the largest)
        **({"ranks": result.ranks} if getattr(result, "ranks", None) else {}),
    }


def eval_block(spec: JobSpec, result: Any) -> dict[str, Any]:
    """The record's eval block. Top level: the primary (first) evaluated set, as older readers expect;
    ``subtasks``: every set by its leaderboard voter name when the job evaluated several (MNLI m/mm,
    commonsense/all); ``baseline``: the trivial baseline on the same examples; ``variants``: the same trained
    model evaluated in each form its method names (MethodImpl.eval_variants; DyLoRA: "r=1", "r=2", ...), each
    with its own metrics, while the top level stays the model as trained."""
    from tasks import metrics_of

    specs = metrics_of(spec.task)
    directions = {m["name"]: m["direction"] for m in specs}
    primary = specs[0]["name"]
    final = result.final_eval
    sets = final.get("sets") or []

    def metrics(values: dict[str, float]) -> dict[str, Any]:
        # an undefined score (the correlation of a constant prediction) is null, never a made-up 0
        return {k: {"value": v if math.isfinite(v) else None, "direction": directions.get(k, "max")}
                for k, v in values.items()}

    block: dict[str, Any] = {
        "metrics": metrics(final["metrics"]), "primary_metric": primary,
        "n_examples": final["n_examples"],
        "split": sets[0].split if sets else spec.task.get("splits", {}).get("eval"),
        "eval_split": spec.task.get("eval_split", "reported"),
        "task_version": spec.task["version"], "protocol": spec.task["protocol"],
        "eval_time_s": round(final["eval_time_s"], 3), "tokens": final.get("tokens"),
        "tokens_per_s": (round(final["tokens"] / final["eval_time_s"], 1)
                         if final.get("tokens") and final["eval_time_s"] > 0 else None),
        "history": result.eval_history,
        "samples": final["samples"],
    }
    # forgetting: general text's cross-entropy after training, adapter on minus off (lower is better)
    if (final.get("forgetting") or {}).get("value") is not None:
        block["metrics"]["forgetting"] = {"value": final["forgetting"]["value"], "direction": "min"}
    if final.get("forgetting"):
        block["forgetting"] = final["forgetting"]
    if sets:
        block["baseline"] = sets[0].baseline
        if getattr(sets[0], "outcomes", None) is not None:   # the primary set's, as its metrics above
            block["outcomes"] = outcomes_block(spec, sets[0])
    if len(sets) > 1:
        block["subtasks"] = {s.name: {"metrics": metrics(s.metrics), "primary_metric": primary,
                                      "n_examples": s.n_examples, "split": s.split, "baseline": s.baseline,
                                      "samples": s.samples[:2]} for s in sets}
        for s in sets[1:]:
            if getattr(s, "outcomes", None) is not None:
                block["subtasks"][s.name]["outcomes"] = outcomes_block(spec, s)
        if "outcomes" in block:   # the primary set's under its own name too: readers look outcomes up by set
            block["subtasks"][sets[0].name]["outcomes"] = block["outcomes"]
    infos = {s.name: s.info for s in sets if s.info}
    if infos:
        block["lm_eval"] = infos
    if final.get("variants"):   # the same model evaluated in other forms (MethodImpl.eval_variants)
        block["variants"] = {name: {"metrics": metrics(v["metrics"]), "n_examples": v["n_examples"],
                                    "eval_time_s": round(v["eval_time_s"], 3),
                                    **({"subtasks": {k: metrics(m) for k, m in v["subtasks"].items()}}
                                       if v.get("subtasks") else {})}
                             for name, v in final["variants"].items()}
    return block


def _after_signal(spec: JobSpec, stop: Interrupted, started: str, tracker: Any) -> dict[str, Any]:
    """The checkpoint is saved; requeue the job (exits the process) or record it as cancelled."""
    what = outcome(stop.signum)
    log.info("job %s: %s -> %s", spec.label, stop, what)
    if what in ("requeued", "requeue"):
        tracker.finish(failed=True)
        try:
            if what == "requeue":
                requeue(stop.previous, stop.signum)   # raises SystemExit once requeued
            raise SystemExit(-1)   # SLURM requeues it itself; no result, the launcher keeps waiting
        except Exception as exc:  # noqa: BLE001 - e.g. submitit's "timed-out too many times"
            return {"run": run_block(spec, "failed", started, error=f"not requeued: {type(exc).__name__}: {exc}",
                                     tb=traceback.format_exc()),
                    "train": None, "eval": None, "meta": meta_block(spec, None)}
    error = f"cancelled by {stop}; rerunning resumes from it"
    return {"run": run_block(spec, "cancelled", started, error=error), "train": partial_train_block(stop),
            "eval": None, "meta": meta_block(spec, None)}


def partial_train_block(stop: Interrupted) -> dict[str, Any] | None:
    """What a cancelled job had spent when it stopped (every attempt so far): its costs stay on record,
    and a rerun that resumes it adds up from there."""
    if not stop.attempts:
        return None
    log_ = stop.attempts
    return {"completed": False, "steps": stop.step, "attempts": len(log_),
            "train_time_s": round(sum(a.get("train_time_s") or 0.0 for a in log_), 3),
            "wall_time_s": round(sum(a.get("wall_time_s") or 0.0 for a in log_), 3),
            "peak_memory_mb": max((a.get("peak_memory_mb") or 0.0 for a in log_), default=None),
            "resumed_from_steps": [a["resumed_from_step"] for a in log_ if a.get("resumed_from_step") is not None],
            "attempt_log": log_}


def outcomes_block(spec: JobSpec, s: Any) -> dict[str, Any]:
    """One set's per-example outcomes (harness.outcomes): inline while small, else a sidecar file in
    <records>/outcomes/ named after the signature and the set, referenced by path and sha256."""
    from harness.outcomes import encode_outcomes

    return encode_outcomes(s.outcomes, record_dir=spec.record_path.parent, stem=spec.signature, set_name=s.name)


def execute(spec: JobSpec) -> dict[str, Any]:
    """Run one job to a record. Returns a short summary (also what Hydra's JobReturn holds).

    Under torchrun or srun with several ranks (harness.distributed) every rank calls this: see
    :func:`_execute_ranks`."""
    from harness.distributed import export_slurm_world, world_from_env

    export_slurm_world()   # srun with several tasks: the rank variables from SLURM's (submitit's helper)
    world = world_from_env()
    if world.distributed:
        return _execute_ranks(spec, world)
    decision, lock = _claim(spec)
    if lock is None:
        return _skipped(spec, decision)
    try:
        with SignalGuard() as guard:   # USR2/SIGTERM: checkpoint at a step boundary (harness/preempt.py)
            return _execute(spec, guard)
    finally:
        lock.release()


def _claim(spec: JobSpec) -> tuple[str, RunLock | None]:
    """Whether this launch runs the job: ("run", the job's lock, held), or ("skipped" | "busy: why", None).

    Two launches of one signature at once run it once (harness/lock.py); a success record skips it, also one
    that the holder we waited out wrote meanwhile."""
    if not spec.force and success_exists(spec.record_path):
        return "skipped", None
    lock = RunLock(spec.run_dir)
    try:
        lock.acquire()
    except Busy as exc:
        return f"busy: {exc}", None
    if lock.took_over:
        log.info("job %s: took over its lock (%s)", spec.label, lock.took_over)
    if not spec.force and success_exists(spec.record_path):
        lock.release()
        return "skipped", None
    return "run", lock


def _skipped(spec: JobSpec, decision: str) -> dict[str, Any]:
    status, _, why = decision.partition(": ")
    log.info("skip %s (%s): %s", spec.label, spec.signature[:12], why or "success record exists")
    out = {"signature": spec.signature, "status": status, "record": str(spec.record_path)}
    return {**out, "error": why} if why else out


def _execute_ranks(spec: JobSpec, world: Any) -> dict[str, Any]:
    """One rank of an N-rank job (issue #20). Rank 0 decides for all (skip: a success record exists; busy:
    another launch holds the job's lock; run), holds the lock, and alone writes the record, the checkpoints,
    the adapter and W&B; the other ranks train and evaluate their shares. A rank that fails writes the
    `failed` record naming itself and its error, unless another rank's failure was recorded first (the
    ranks it leaves behind fail next, on a closed connection, which is not the cause), then exits non-zero:
    torchrun, or SLURM, ends the others instead of letting them hang."""
    from harness.distributed import broadcast_object, device_for, init, shutdown
    from harness.train import pick_device

    init(world, device_for(world, pick_device(spec.device)))
    decision, lock = _claim(spec) if world.main else ("run", None)
    if lock is not None:
        (spec.run_dir / FAILURE_CLAIM).unlink(missing_ok=True)   # a claim left by an earlier attempt
    decision = broadcast_object(decision, world)
    try:
        if decision != "run":
            return _skipped(spec, decision)
        with SignalGuard() as guard:
            if world.main:
                return _execute(spec, guard, world)
            return _execute_worker(spec, guard, world)
    finally:
        if lock is not None:
            lock.release()
        shutdown(world)


FAILURE_CLAIM = "failed-rank"   # created once, by the first rank that fails: its error is the record's


def claim_failure(spec: JobSpec, world: Any) -> bool:
    """True for the first failing rank of a job (an exclusive create); one process always claims."""
    if not world.distributed:
        return True
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(spec.run_dir / FAILURE_CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(str(world.rank))
    return True


def _execute_worker(spec: JobSpec, guard: SignalGuard, world: Any) -> dict[str, Any]:
    """A rank other than 0: its share of training and evaluation; a record only when it is the one that failed."""
    from harness.train import train

    started = _now()
    try:
        train(spec, guard=guard)
    except Interrupted as stop:   # rank 0 checkpointed at the same step, and records or requeues the job
        raise SystemExit(128 + stop.signum if slurm_job() is None else 0) from None
    except Exception as exc:
        log.error("job %s failed on rank %d: %s: %s", spec.label, world.rank, type(exc).__name__, exc)
        if claim_failure(spec, world):
            write_record(spec.record_path, {
                "run": run_block(spec, "failed", started, error=f"rank {world.rank}: {type(exc).__name__}: {exc}",
                                 tb=traceback.format_exc()),
                "train": None, "eval": None, "meta": meta_block(spec, None)})
        raise SystemExit(1) from exc
    return {"signature": spec.signature, "status": "rank", "rank": world.rank, "record": str(spec.record_path)}


def _execute(spec: JobSpec, guard: SignalGuard, world: Any = None) -> dict[str, Any]:
    from harness.distributed import World
    from harness.tracking import start_run

    world = world or World()

    started = _now()
    tracker = start_run(spec.logger, name=spec.label, group=spec.sweep_name,
                        config={**spec.semantic(), "signature": spec.signature},
                        root_dir=spec.runs_dir)
    record: dict[str, Any]
    signum: int | None = None
    try:
        from harness.train import train

        result = train(spec, log=tracker.log, guard=guard)
        record = {"run": run_block(spec, "success", result.started_at or started), "train": train_block(result),
                  "eval": eval_block(spec, result), "meta": meta_block(spec, result)}
    except KeyboardInterrupt:
        record = {"run": run_block(spec, "cancelled", started, error="KeyboardInterrupt"),
                  "train": None, "eval": None, "meta": meta_block(spec, None)}
        write_record(spec.record_path, record)
        tracker.finish(failed=True)
        raise
    except Interrupted as stop:
        record = _after_signal(spec, stop, started, tracker)
        signum = stop.signum
    except TrialPruned as exc:   # the study stopped it: a verdict, not a failure
        log.info("pruned %s: %s", spec.label, exc)
        record = {"run": run_block(spec, "pruned", started, error=f"TrialPruned: {exc}"),
                  "train": None, "eval": None, "meta": meta_block(spec, None)}
    except Exception as exc:
        log.error("job %s failed: %s: %s", spec.label, type(exc).__name__, exc)
        where = f"rank {world.rank}: " if world.distributed else ""
        record = {"run": run_block(spec, "failed", started, error=f"{where}{type(exc).__name__}: {exc}",
                                   tb=traceback.format_exc()),
                  "train": None, "eval": None, "meta": meta_block(spec, None)}
        if not claim_failure(spec, world):   # another rank failed first: its error is the cause, on record
            tracker.finish(failed=True)
            raise SystemExit(1) from exc
    if spec.tuning:
        record["tuning"] = spec.tuning
    if tracker.run_dir is not None:
        record["run"]["wandb_dir"] = str(tracker.run_dir)
    write_record(spec.record_path, record)
    ok = record["run"]["status"] == "success"
    if ok:
        tracker.summary({f"eval/{k}": v["value"] for k, v in record["eval"]["metrics"].items()}
                        | {"trainable_params": record["train"]["trainable_params"],
                           "train_time_s": record["train"]["train_time_s"],
                           "peak_memory_mb": record["train"]["peak_memory_mb"]})
    tracker.finish(failed=not ok)
    summary = {"signature": spec.signature, "status": record["run"]["status"], "record": str(spec.record_path)}
    if ok:
        primary = record["eval"]["primary_metric"]
        summary[primary] = record["eval"]["metrics"][primary]["value"]
        log.info("done %s: %s=%s", spec.label, primary, "undefined" if summary[primary] is None
                 else f"{summary[primary]:.4f}")
    if signum is not None and slurm_job() is None:
        raise SystemExit(128 + signum)   # outside SLURM a signal stops the process (and a debug sweep)
    return summary
