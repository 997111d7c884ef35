"""What a running job tells its Optuna study: intermediate validation scores, and whether to stop.

A job imports this, never the search driver (harness/search.py): the driver puts a `trial` link in
the JobSpec (plumbing, outside the signature) naming the storage, the study, the trial and the pruner;
the job reopens that storage, wherever it runs (in-process, a local subprocess, a SLURM node sharing
the filesystem), reports each periodic evaluation and raises :class:`TrialPruned` when the pruner
says so. Dispatch turns that into a record with status ``pruned``; the driver tells Optuna PRUNED.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PRUNERS = ("none", "median", "hyperband")


class TrialPruned(Exception):
    """The study's pruner stopped this job at a periodic evaluation (not a failure of the job)."""


def make_pruner(name: str, args: Mapping[str, Any] | None = None) -> Any:
    """The pruner by config name; the driver and every job build the same one from the same config."""
    import optuna

    args = dict(args or {})
    if name == "median":
        return optuna.pruners.MedianPruner(**args)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**args)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner {name!r} is not one of {', '.join(PRUNERS)}")


def is_url(storage: str) -> bool:
    """An RDB URL (postgresql://, sqlite:///, mysql://) rather than a journal file path."""
    return "://" in storage


def open_storage(storage: str) -> Any:
    """A journal file (safe on shared filesystems: appends under a lock file) or an RDB URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if is_url(storage):
        return optuna.storages.RDBStorage(storage)
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


@functools.lru_cache(maxsize=4)
def _study(storage: str, study_name: str, pruner: str, pruner_args: str) -> Any:
    """One study handle per job process (reopening a journal replays it)."""
    import json

    import optuna

    return optuna.load_study(study_name=study_name, storage=open_storage(storage),
                             pruner=make_pruner(pruner, json.loads(pruner_args)),
                             sampler=optuna.samplers.RandomSampler())   # never asked to sample here


def report_trial(link: Mapping[str, Any] | None, step: int, metrics: Mapping[str, float]) -> None:
    """Report the objective metric at `step` to the job's trial; raise TrialPruned if the pruner stops it.

    No link (every job outside a search) or a multi-objective study (Optuna cannot prune those): nothing.
    """
    if not link or not link.get("report") or link["metric"] not in metrics:
        return
    import json

    import optuna

    study = _study(str(link["storage"]), str(link["study"]), str(link.get("pruner") or "none"),
                   json.dumps(link.get("pruner_args") or {}, sort_keys=True))
    trial = optuna.trial.Trial(study, int(link["trial_id"]))
    value = float(metrics[link["metric"]])
    trial.report(value, step)
    if trial.should_prune():
        raise TrialPruned(f"pruned by the {link.get('pruner')} pruner at step {step}: "
                          f"{link['metric']}={value:.4f}")
