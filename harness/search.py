"""Hyperparameter search with Optuna, beside dispatch: a trial is just a job on the validation split.

    peftbench search method=lora task=glue/rte search.n_trials=20 search.parallelism=4 launcher=local
    peftbench tune -m method=lora,vera,full task=glue/rte search.n_trials=20
    peftbench studies [STUDY]                  (also: peftbench search --status [STUDY])

The driver asks Optuna for a trial, turns its sampled values into a JobSpec (the composed config with
those values set and ``task.eval_split=validation``: the same validation and signature as any job),
submits ``dispatch.execute`` through a submitit executor (debug | local | slurm, the launcher's own
parameters) and tells Optuna the record's score. Up to ``search.parallelism`` trials are in flight; a
finished one is told and the next asked at once (no batch barrier). Jobs report intermediate scores to
the study themselves (harness/trial_report.py) so pruning works from subprocesses and SLURM too.

Identity: the study's name is derived from what it searches, so rerunning a command continues its
study. Trials left RUNNING by a killed driver are reconciled on restart: from their record if the job
finished, by waiting for the job if it is still running, else by running the same trial again.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import RecordError, read_record, write_record
from harness.spec import ConfigError, JobSpec, canonical_json, signature_of, spec_from_config
from harness.trial_report import PRUNERS, make_pruner, open_storage

log = logging.getLogger("peftbench")

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsgaii")
PARAM_TYPES = ("float", "int", "categorical")
SECOND_OBJECTIVES = ("trainable_params", "peak_memory_mb")
# What a space may search: the method (its knobs and optimizer) and the budget's training-recipe knobs.
# Never the model, the task or the budget's size: those define the comparison, not a method's tuning.
SEARCHABLE_BUDGET = ("batch_size", "warmup_ratio", "schedule", "grad_clip")
POLL_S = 0.05


# ----------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class Param:
    """One searched value: a dotted config path and its distribution."""

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def extremes(self) -> list[Any]:
        """The values whose configs must validate before any trial runs (every value between them
        is then valid for the checks the validator makes: bounds, positivity)."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def grid(self) -> list[Any] | None:
        """Every value, for the grid sampler; None for a continuous range without a step."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step:
            n = math.floor((float(self.high) - float(self.low)) / float(self.step) + 1e-9)
            return [float(self.low) + i * float(self.step) for i in range(n + 1)]
        return None

    def describe(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.step:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Search:
    """A validated search: the base job config, the space, and how to run it."""

    base: dict[str, Any]                 # composed job config (no search/hydra), eval_split=validation
    base_spec: JobSpec
    space: str
    params: tuple[Param, ...]
    sampler: str
    seed: int
    pruner: str
    pruner_args: dict[str, Any]
    n_trials: int
    parallelism: int
    storage: str
    metric: str
    direction: str                       # maximize | minimize
    second: str | None
    launcher: str
    launcher_params: dict[str, Any] = field(default_factory=dict)
    study_name: str = ""

    @property
    def directions(self) -> list[str]:
        return [self.direction, "minimize"] if self.second else [self.direction]

    def describe(self) -> dict[str, Any]:
        """The searched space as the tuning block records it."""
        return {"name": self.space, "params": {p.path: p.describe() for p in self.params},
                "sampler": self.sampler, "seed": self.seed, "pruner": self.pruner,
                "objective": {"metric": self.metric, "direction": self.direction, "second": self.second,
                              "split": "validation"}}


def _get(cfg: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(cfg: dict[str, Any], path: str, value: Any) -> None:
    *head, last = path.split(".")
    node = cfg
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value


def _known_path(cfg: Mapping[str, Any], path: str) -> str | None:
    """None if `path` may be searched in this config, else why not."""
    root = path.split(".")[0]
    if root == "budget":
        if path.split(".", 1)[-1] not in SEARCHABLE_BUDGET:
            return f"only the budget's training recipe may be searched ({', '.join(SEARCHABLE_BUDGET)})"
    elif root != "method":
        return "only method.* and the budget's training recipe may be searched"
    found, _ = _get(cfg, path)
    if found:
        return None
    if path.startswith("method.params.") and path.count(".") == 2:
        from methods import PEFT_CONFIGS

        ptype = cfg["method"].get("peft_type")
        if ptype in PEFT_CONFIGS and path.rsplit(".", 1)[1] in PEFT_CONFIGS[ptype].fields():
            return None
        return f"not a parameter of method {cfg['method'].get('name')!r} (nor a field of its peft config)"
    return f"not a parameter of this config (method {cfg['method'].get('name')!r})"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_params(block: Any, cfg: Mapping[str, Any]) -> tuple[list[Param], list[str]]:
    """The space's params, and every problem with them (unknown path, bad type, empty range, log ≤ 0)."""
    problems: list[str] = []
    params: list[Param] = []
    if not isinstance(block, Mapping) or not block:
        return [], ["search.params: a non-empty mapping of dotted config paths to distributions"]
    for path, d in block.items():
        where = f"search.params.{path}"
        why = _known_path(cfg, str(path))
        if why:
            problems.append(f"{where}: {why}")
        if not isinstance(d, Mapping):
            problems.append(f"{where}: a mapping {{type: float|int|categorical, ...}}")
            continue
        kind = d.get("type")
        if kind not in PARAM_TYPES:
            problems.append(f"{where}.type: {kind!r} is not one of {', '.join(PARAM_TYPES)}")
            continue
        if kind == "categorical":
            choices = d.get("choices")
            if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
                problems.append(f"{where}.choices: a non-empty list")
                continue
            params.append(Param(str(path), kind, choices=tuple(choices)))
            continue
        low, high, is_log, step = d.get("low"), d.get("high"), bool(d.get("log", False)), d.get("step")
        bad = False
        for key, v in (("low", low), ("high", high)):
            if not _is_num(v) or (kind == "int" and not float(v).is_integer()):
                problems.append(f"{where}.{key}: {v!r} is not {'an integer' if kind == 'int' else 'a number'}")
                bad = True
        if bad:
            continue
        if low >= high:
            problems.append(f"{where}: empty range: low={low!r} must be < high={high!r}")
        if is_log and low <= 0:
            problems.append(f"{where}: a log range must be > 0 (low={low!r} includes 0 or negatives)")
        if step is not None and (not _is_num(step) or step <= 0 or (is_log and step)):
            problems.append(f"{where}.step: {step!r} must be a positive number, and not with log: true")
        params.append(Param(str(path), kind, low=low, high=high, log=is_log, step=step))
    return params, problems


# ------------------------------------------------------------------------------------------- plan
def _compose(overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job config with the search block, the launcher's submitit parameters) as Hydra composes them."""
    from omegaconf import OmegaConf

    from harness.spec import compose

    cfg = compose(overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True) if "launcher" in cfg.hydra else {}
    keys = [k for k in cfg if k != "hydra"]
    job = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    return job, dict(launcher or {})


def space_for(method: str) -> str | None:
    """The conf/search/ space whose `methods` lists this method."""
    import yaml

    from harness.spec import CONF_DIR

    for path in sorted((CONF_DIR / "search").glob("*.yaml")):
        if method in (yaml.safe_load(path.read_text()) or {}).get("methods", []):
            return path.stem
    return None


def _with_space(overrides: list[str]) -> list[str]:
    """Add search=<the method's family> unless the command chose a space."""
    if any(o.split("=", 1)[0].lstrip("+") == "search" for o in overrides):
        return overrides
    method = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "method"), "lora")
    space = space_for(method)
    return [*overrides, f"search={space}"] if space else overrides


def plan(overrides: Sequence[str]) -> Search:
    """Compose, validate everything (space, objective, sampler, pruner, the job at the space's
    extremes, the task's data) and name the study. Raises one ConfigError; writes nothing."""
    from tasks import data_problems, metrics_of

    cfg, launcher = _compose(_with_space([*overrides, "task.eval_split=validation"]))
    problems: list[str] = []
    block = cfg.pop("search", None)
    if not isinstance(block, Mapping):
        from harness.spec import CONF_DIR

        spaces = sorted(p.stem for p in (CONF_DIR / "search").glob("*.yaml"))
        raise ConfigError([(f"search: no space for method {cfg.get('method', {}).get('name')!r}; "
                            f"choose one with search=NAME ({', '.join(spaces)})")])
    try:
        base_spec = spec_from_config(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.problems, context="the searched job; nothing was run") from None
    params, more = parse_params(block.get("params"), cfg)
    problems += more
    for p in params:
        if any(q.startswith((f"search.params.{p.path}:", f"search.params.{p.path}.")) for q in more):
            continue   # its own problem is reported; its extremes would only repeat it
        for value in p.extremes():
            trial_cfg = copy.deepcopy(cfg)
            _set(trial_cfg, p.path, value)
            try:
                spec_from_config(trial_cfg)
            except ConfigError as exc:
                problems += [f"search.params.{p.path}={value!r}: {q}" for q in exc.problems]
    sampler, pruner = block.get("sampler"), block.get("pruner") or "none"
    if sampler not in SAMPLERS:
        problems.append(f"search.sampler: {sampler!r} is not one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        problems.append(f"search.pruner: {pruner!r} is not one of {', '.join(PRUNERS)}")
    elif pruner != "none":
        try:
            make_pruner(pruner, block.get("pruner_args"))
        except (TypeError, ValueError) as exc:
            problems.append(f"search.pruner_args: {exc}")
    if sampler == "grid":
        loose = [p.path for p in params if p.grid() is None]
        if loose:
            problems.append(f"search.sampler: grid needs categorical, int or stepped float params; "
                            f"{', '.join(loose)} are continuous")
    for key, low in (("n_trials", 1), ("parallelism", 1), ("seed", 0)):
        v = block.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            problems.append(f"search.{key}: {v!r} must be an integer >= {low}")
    objective = block.get("objective") or {}
    metrics = {m["name"]: m["direction"] for m in metrics_of(base_spec.task)}
    metric = objective.get("metric") or next(iter(metrics), None)
    if metric not in metrics:
        problems.append(f"search.objective.metric: {metric!r} is not a metric task {base_spec.task['name']} "
                        f"produces ({', '.join(metrics)})")
    direction = objective.get("direction") or metrics.get(metric, "max")
    if direction not in ("max", "min"):
        problems.append(f"search.objective.direction: {direction!r} is not one of max, min")
    second = objective.get("second")
    if second is not None and second not in SECOND_OBJECTIVES:
        problems.append(f"search.objective.second: {second!r} is not one of null, {', '.join(SECOND_OBJECTIVES)}")
    if second is not None and pruner != "none":
        problems.append("search.pruner: Optuna cannot prune a multi-objective study; use pruner=none "
                        "or drop search.objective.second")
    storage = block.get("storage")
    if storage is not None and not isinstance(storage, str):
        problems.append(f"search.storage: {storage!r} must be null (a journal file), a path or an RDB URL")
    launcher_name = str(cfg.get("launcher_name") or "debug")
    problems += data_problems(base_spec.task, base_spec.data_dir)
    if problems:
        raise ConfigError(problems, context="search; nothing was run or written")
    search = Search(base=cfg, base_spec=base_spec, space=str(block.get("name") or "custom"), params=tuple(params),
                    sampler=str(sampler), seed=int(block["seed"]), pruner=str(pruner),
                    pruner_args=dict(block.get("pruner_args") or {}), n_trials=int(block["n_trials"]),
                    parallelism=int(block["parallelism"]), storage="", metric=str(metric),
                    direction="maximize" if direction == "max" else "minimize", second=second,
                    launcher=launcher_name, launcher_params=launcher)
    name = study_name(search)
    path = storage or str(base_spec.results_dir / "studies" / f"{name}.journal")
    return dataclasses.replace(search, study_name=name, storage=path)


def study_name(search: Search) -> str:
    """Derived from what is searched: method, model, task, budget (the whole base job, searched values
    removed), the space, the sampler and its seed, the objective. Not n_trials, parallelism, storage
    or the pruner: raising n_trials or resuming continues the same study."""
    semantic = copy.deepcopy(search.base_spec.semantic())
    for p in search.params:
        *head, last = p.path.split(".")
        node: Any = semantic
        for part in head:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    ident = {"job": semantic, "space": search.describe() | {"pruner": None}}
    s = search.base_spec
    slug = f"{s.method['name']}.{s.model['name']}.{s.task['name'].replace('/', '-')}.{s.budget['name']}"
    return f"{slug}.{search.space}.{search.sampler}-{signature_of(ident)[:10]}"


# ------------------------------------------------------------------------------------------ study
def make_sampler(search: Search, trial_number: int) -> Any:
    """The sampler, seeded by (seed, trial number): a resumed driver draws what an uninterrupted one
    would have drawn at that trial (given the same finished trials), not the first trial's values."""
    import optuna

    seed = (search.seed * 1_000_003 + trial_number) % (2**31 - 1)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        return optuna.samplers.GridSampler({p.path: p.grid() for p in search.params}, seed=seed)
    if search.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if search.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def open_study(search: Search, storage: Any = None) -> Any:
    import optuna

    study = optuna.create_study(study_name=search.study_name, storage=storage or open_storage(search.storage),
                                directions=search.directions, load_if_exists=True,
                                pruner=make_pruner(search.pruner, search.pruner_args),
                                sampler=make_sampler(search, 0))
    study.set_user_attr("space", search.describe())
    study.set_user_attr("job", search.base_spec.semantic())
    return study


def grid_size(search: Search) -> int:
    return math.prod(len(p.grid() or []) for p in search.params)


def trial_spec(search: Search, params: Mapping[str, Any], *, number: int, trial_id: int) -> JobSpec:
    """The trial's job: the base config with the sampled values set (validated like any job)."""
    cfg = copy.deepcopy(search.base)
    for path, value in params.items():
        _set(cfg, path, value)
    spec = spec_from_config(cfg)
    link = {"study": search.study_name, "number": number, "trial_id": trial_id, "params": dict(params),
            "storage": search.storage, "metric": search.metric, "pruner": search.pruner,
            "pruner_args": search.pruner_args, "report": search.second is None}
    return dataclasses.replace(spec, trial=link, sweep_name=search.study_name, force=False)


def objective_values(search: Search, record: Mapping[str, Any]) -> list[float]:
    """The study's objective(s) from a trial's success record (which must be on the validation split)."""
    ev = record["eval"]
    if ev.get("eval_split") != "validation":
        raise RuntimeError(f"trial record {record['run']['signature']} was evaluated on "
                           f"{ev.get('eval_split')!r}, not the validation split")
    values = [float(ev["metrics"][search.metric]["value"])]
    if search.second:
        values.append(float(record["train"][search.second]))
    return values


# -------------------------------------------------------------------------------------- executors
def make_executor(launcher: str, params: Mapping[str, Any], folder: Path) -> Any:
    """A submitit executor with the launcher's own parameters (conf/launcher/*.yaml)."""
    import submitit

    if launcher == "debug":
        return submitit.DebugExecutor(folder=folder)
    cluster = "slurm" if launcher == "slurm" else "local"
    if cluster == "slurm":
        # submitit asks sacct for job states and, on clusters without accounting, warns on every poll
        # (twice); the driver tracks trials through their records and futures, so keep errors only
        import logging

        logging.getLogger("submitit").setLevel(logging.ERROR)
    # `parallel` is launcher=local's own (jobs at once); a search has search.parallelism for that.
    # `nproc_per_job` is launcher=local's too (ranks per job, forked by peftbench's launcher, not submitit's)
    if int(params.get("nproc_per_job") or 1) > 1:
        raise ValueError("hydra.launcher.nproc_per_job: a search runs its trials through submitit, one process each "
                         "under launcher=local; run several ranks per trial with launcher=slurm "
                         "(hydra.launcher.tasks_per_node), or drop nproc_per_job")
    params = {k: v for k, v in params.items()
              if k not in ("_target_", "submitit_folder", "parallel", "nproc_per_job") and v is not None}
    init = {f"{cluster}_max_num_timeout": params.pop("max_num_timeout")} if "max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **init)
    generic = executor._valid_parameters()
    executor.update_parameters(**{k if k in generic else f"{cluster}_{k}": v for k, v in params.items()})
    return executor


class WatchedJob:
    """A job a killed driver left running (local pid or SLURM id): done when it has exited."""

    def __init__(self, launcher: str, job_id: str, folder: str) -> None:
        self.launcher, self.job_id, self.folder = launcher, job_id, folder
        self._slurm: Any = None
        if launcher == "slurm":
            import submitit

            self._slurm = submitit.SlurmJob(folder=folder, job_id=job_id)

    def alive(self) -> bool:
        if self._slurm is not None:
            return not self._slurm.done()
        try:
            os.kill(int(self.job_id), 0)
        except (OSError, ValueError):
            return False
        try:   # a pid of ours that exited but was not reaped (the killed driver's child) is a zombie
            with open(f"/proc/{int(self.job_id)}/stat") as fh:
                return fh.read().split(") ", 1)[1][:1] != "Z"
        except OSError:
            return True

    def done(self) -> bool:
        return not self.alive()

    def result(self) -> dict[str, Any]:
        return {"status": "watched"}


@dataclass
class InFlight:
    number: int
    trial_id: int
    spec: JobSpec
    job: Any
    submitted: float


# ------------------------------------------------------------------------------------------ drive
@dataclass
class SearchResult:
    study: str
    storage: str
    n_trials: int
    states: dict[str, int]
    best: list[dict[str, Any]]
    busy_s: float = 0.0
    wall_s: float = 0.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Driver:
    """Asks, dispatches and tells, keeping up to `parallelism` trials in flight (no batch barrier)."""

    def __init__(self, search: Search, *, executor: Any = None, log_fn: Callable[[str], None] | None = None,
                 job: Callable[[JobSpec], dict[str, Any]] | None = None) -> None:
        from harness.dispatch import execute

        self.search = search
        self.job = job or execute   # what runs a trial: dispatch.execute (benchmarks pass a no-op)
        folder = search.base_spec.runs_dir / "search" / search.study_name
        self.executor = executor or make_executor(search.launcher, search.launcher_params, folder / "%j")
        # in-process jobs run one at a time whatever the setting
        self.parallelism = 1 if search.launcher == "debug" else search.parallelism
        self.say = log_fn or (lambda msg: print(f"peftbench search: {msg}", file=sys.stderr, flush=True))
        self.busy_s = 0.0
        self.storage = open_storage(search.storage)

    def trial_id(self, study: Any, number: int) -> int:
        study_id = self.storage.get_study_id_from_name(study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    # -- one trial
    def submit(self, study: Any, number: int, trial_id: int, params: Mapping[str, Any]) -> InFlight:
        spec = trial_spec(self.search, params, number=number, trial_id=trial_id)
        job = self.executor.submit(self.job, spec)
        self.storage.set_trial_system_attr(trial_id, "peftbench_job", {
            "launcher": self.search.launcher, "job_id": str(job.job_id), "signature": spec.signature,
            "folder": str(getattr(job, "paths", None) and job.paths.folder or ""), "submitted_at": _now()})
        return InFlight(number, trial_id, spec, job, time.perf_counter())

    def finish(self, study: Any, fl: InFlight) -> bool:
        """Tell the study what the trial's job ended with. False: the job left no verdict (killed
        without a record): the caller runs the trial again."""
        from optuna.trial import TrialState

        try:
            summary = fl.job.result()
            error = None
        except Exception as exc:   # noqa: BLE001 - the job process itself died: the trial failed
            summary, error = {"status": "crashed"}, f"{type(exc).__name__}: {exc}"
        self.busy_s += time.perf_counter() - fl.submitted
        try:
            record = read_record(fl.spec.record_path)
        except (RecordError, OSError):
            record = None
        status = record["run"]["status"] if record else None
        if summary.get("status") == "watched" and status not in ("success", "pruned", "failed"):
            return False
        self.storage.set_trial_user_attr(fl.trial_id, "signature", fl.spec.signature)
        self.storage.set_trial_user_attr(fl.trial_id, "record", str(fl.spec.record_path))
        if summary.get("status") == "skipped":
            self.storage.set_trial_user_attr(fl.trial_id, "reused_record", True)
        if status == "success":
            values = objective_values(self.search, record)
            study.tell(fl.number, values)
            self.say(f"trial {fl.number} complete: {self.search.metric}={values[0]:.4f} {dict(fl.spec.trial['params'])}")
        elif status == "pruned":
            study.tell(fl.number, state=TrialState.PRUNED)
            self.say(f"trial {fl.number} pruned: {record['run']['error']}")
        else:
            why = error or (record["run"].get("error") if record else "no record")
            self.storage.set_trial_user_attr(fl.trial_id, "error", str(why))
            study.tell(fl.number, state=TrialState.FAIL)
            self.say(f"trial {fl.number} failed: {why}")
        return True

    # -- resume
    def reconcile(self, study: Any) -> list[InFlight]:
        """Trials a killed driver left RUNNING: told from their record, watched, or run again."""
        from optuna.trial import TrialState

        out: list[InFlight] = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if set(t.params) != {p.path for p in self.search.params}:   # killed while sampling it
                t = self.complete_sampling(study, t.number)
            spec = trial_spec(self.search, t.params, number=t.number, trial_id=self.trial_id(study, t.number))
            info = t.system_attrs.get("peftbench_job") or {}
            if info.get("launcher") in ("local", "slurm") and info.get("job_id"):
                watched = WatchedJob(info["launcher"], info["job_id"], info.get("folder", ""))
                if watched.alive():
                    self.say(f"trial {t.number}: job {info['job_id']} still running; waiting for its record")
                    out.append(InFlight(t.number, self.trial_id(study, t.number), spec, watched, time.perf_counter()))
                    continue
            fl = InFlight(t.number, self.trial_id(study, t.number), spec, WatchedJob("local", "0", ""), time.perf_counter())
            if self.finish(study, fl):
                self.say(f"trial {t.number}: reconciled from its record")
                continue
            self.say(f"trial {t.number}: its job left no record; running it again")
            out.append(self.submit(study, t.number, self.trial_id(study, t.number), t.params))
        return out

    def complete_sampling(self, study: Any, number: int) -> Any:
        """Sample the values a killed driver had not yet drawn for this trial (the same trial number:
        no trial is lost or duplicated), and return it refreshed."""
        import optuna

        study.sampler = make_sampler(self.search, number)
        trial = optuna.trial.Trial(study, self.trial_id(study, number))
        for p in self.search.params:
            d = p.distribution()
            if p.type == "categorical":
                trial.suggest_categorical(p.path, d.choices)
            elif p.type == "int":
                trial.suggest_int(p.path, d.low, d.high, step=d.step, log=d.log)
            else:
                trial.suggest_float(p.path, d.low, d.high, step=d.step, log=d.log)
        return self.storage.get_trial(self.trial_id(study, number))

    # -- the loop
    def run(self) -> SearchResult:
        from optuna.trial import TrialState

        search = self.search
        study = open_study(search, self.storage)
        target = min(search.n_trials, grid_size(search)) if search.sampler == "grid" else search.n_trials
        t0 = time.perf_counter()
        in_flight = self.reconcile(study)
        # enqueued (WAITING) trials are not asked yet: they count once the loop asks for them
        asked = sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))
        self.say(f"study {search.study_name}: {asked} trial(s) so far, target {target}, "
                 f"parallelism {self.parallelism}, storage {search.storage}")
        while in_flight or asked < target:
            while len(in_flight) < self.parallelism and asked < target:
                study.sampler = make_sampler(search, asked)
                trial = study.ask({p.path: p.distribution() for p in search.params})
                asked += 1
                in_flight.append(self.submit(study, trial.number, self.trial_id(study, trial.number), trial.params))
            done = self._wait(in_flight)
            for fl in done:
                in_flight.remove(fl)
                if not self.finish(study, fl):
                    in_flight.append(self.submit(study, fl.number, fl.trial_id, fl.spec.trial["params"]))
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = [{"number": t.number, "values": t.values, "params": t.params} for t in
                (study.best_trials if complete else [])]
        return SearchResult(search.study_name, search.storage, len(study.trials), states, best,
                            busy_s=self.busy_s, wall_s=time.perf_counter() - t0)

    def _wait(self, in_flight: list[InFlight]) -> list[InFlight]:
        """The trials whose jobs have finished, as soon as there is one (debug jobs run here)."""
        if self.search.launcher == "debug":
            return [in_flight[0]]   # a DebugJob runs when its result is asked for
        while True:
            done = [fl for fl in in_flight if fl.job.done()]
            if done:
                return done
            time.sleep(POLL_S)


def run_search(overrides: Sequence[str], *, log_fn: Callable[[str], None] | None = None) -> SearchResult:
    return Driver(plan(overrides), log_fn=log_fn).run()


# ------------------------------------------------------------------------------------------- tune
def _expand(overrides: Sequence[str], keys: Iterable[str] = ("method", "task")) -> list[list[str]]:
    """method=a,b task=x,y → one override list per (method, task), in command order."""
    import itertools

    fixed, axes = [], []
    for o in overrides:
        key, _, value = o.partition("=")
        if key in keys and "," in value:
            axes.append([f"{key}={v}" for v in value.split(",") if v])
        else:
            fixed.append(o)
    return [[*fixed, *combo] for combo in itertools.product(*axes)] if axes else [list(fixed)]


def tune(overrides: Sequence[str], *, log_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The same number of trials for every method, then each method's best config on the reported split
    with the budget's seeds. Every study is planned (validated) before any trial runs."""
    say = log_fn or (lambda msg: print(f"peftbench tune: {msg}", file=sys.stderr, flush=True))
    cells = _expand(overrides)
    plans: list[Search] = []
    problems: list[str] = []
    for cell in cells:
        try:
            plans.append(plan(cell))
        except ConfigError as exc:
            problems += [f"[{' '.join(c for c in cell if c.startswith(('method=', 'task=')))}] {p}"
                         for p in exc.problems]
    for s in plans:
        if s.second:
            problems.append(f"{s.study_name}: tune needs one objective (drop search.objective.second)")
    trials = {s.n_trials for s in plans}
    if len(trials) > 1:
        problems.append(f"search.n_trials differs between methods ({sorted(trials)}): tune gives every "
                        f"method the same search budget")
    if problems:
        raise ConfigError(problems, context=f"tune of {len(cells)} studies; nothing was run or written")
    finals: list[JobSpec] = []
    for s in plans:
        result = Driver(s, log_fn=say).run()
        if not result.best:
            say(f"{s.study_name}: no complete trial; its method has no tuned run")
            continue
        finals += final_specs(s, result)
    executor = make_executor(plans[0].launcher, plans[0].launcher_params,
                             plans[0].base_spec.runs_dir / "search" / "tune" / "%j")
    summaries = dispatch_all(executor, finals, parallelism=1 if plans[0].launcher == "debug"
                             else plans[0].parallelism)
    for spec, summary in zip(finals, summaries):
        if summary.get("status") == "skipped":   # an identical run existed: say how it was chosen
            annotate(spec)
        write_tuned_pointer(spec)
    return {"studies": [s.study_name for s in plans], "finals": summaries}


def final_specs(search: Search, result: SearchResult) -> list[JobSpec]:
    """The best config, on the task's reported split, once per budget seed, carrying the tuning block."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=search.study_name, storage=open_storage(search.storage))
    best = study.best_trial
    counted = [t for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    tuning = {"study": search.study_name, "storage": search.storage, "trials": len(counted),
              "n_trials": search.n_trials, "best_trial": best.number, "best_value": best.value,
              "metric": search.metric, "split": "validation", "params": dict(best.params),
              "space": search.describe()}
    cfg = copy.deepcopy(search.base)
    cfg["task"] = dict(cfg["task"], eval_split="reported")
    for path, value in best.params.items():
        _set(cfg, path, value)
    specs = []
    for seed in range(int(search.base_spec.budget["seeds"])):
        spec = spec_from_config({**cfg, "seed": seed})
        specs.append(dataclasses.replace(spec, tuning=tuning, sweep_name=f"tune:{search.study_name}"))
    return specs


def dispatch_all(executor: Any, specs: Sequence[JobSpec], *, parallelism: int) -> list[dict[str, Any]]:
    """Run jobs with at most `parallelism` in flight; summaries in the order of `specs`."""
    from harness.dispatch import execute

    out: list[dict[str, Any] | None] = [None] * len(specs)
    pending = list(enumerate(specs))
    running: list[tuple[int, Any]] = []
    while pending or running:
        while pending and len(running) < parallelism:
            i, spec = pending.pop(0)
            running.append((i, executor.submit(execute, spec)))
        done = [r for r in running if isinstance(executor, _debug_types()) or r[1].done()]
        if not done:
            time.sleep(POLL_S)
            continue
        for r in done[:1] if isinstance(executor, _debug_types()) else done:
            running.remove(r)
            try:
                out[r[0]] = r[1].result()
            except Exception as exc:   # noqa: BLE001 - one lost job must not lose the others' results
                out[r[0]] = {"status": "crashed", "error": f"{type(exc).__name__}: {exc}"}
    return [o or {} for o in out]


def _debug_types() -> tuple[type, ...]:
    import submitit

    return (submitit.DebugExecutor,)


def annotate(spec: JobSpec) -> None:
    """Add the tuning block to an existing success record of the same experiment (it was reused)."""
    try:
        record = read_record(spec.record_path)
    except (RecordError, OSError):
        return
    if record["run"]["status"] == "success" and record.get("tuning") != spec.tuning:
        record["tuning"] = spec.tuning
        write_record(spec.record_path, record)


def tuned_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "studies" / "tuned"


def write_tuned_pointer(spec: JobSpec) -> None:
    """results/studies/tuned/<signature>.json: which final records are tuned, so the leaderboard can
    state the search budget per board without rereading every record (the record holds the truth)."""
    from harness.records import atomic_write

    t = spec.tuning or {}
    data = {"signature": spec.signature, "method": spec.method["name"], "model": spec.model["name"],
            "task": spec.task["name"], "suite": spec.task.get("suite") or "", "budget": spec.budget["name"],
            "seed": spec.seed, "study": t.get("study"), "trials": t.get("trials"), "split": t.get("split")}
    atomic_write(tuned_dir(spec.results_dir) / f"{spec.signature}.json", canonical_json(data).encode())


# ---------------------------------------------------------------------------------------- studies
def study_storages(results_dir: Path, storage: str | None = None) -> list[str]:
    if storage:
        return [storage]
    return [str(p) for p in sorted((Path(results_dir) / "studies").glob("*.journal"))]


def status_lines(results_dir: Path, study: str | None = None, *, storage: str | None = None) -> list[str]:
    """`peftbench studies`: every study (trials by state, best so far), or one study's trials."""
    import optuna

    lines: list[str] = []
    for url in study_storages(results_dir, storage):
        st = open_storage(url)
        for summary in optuna.get_all_study_summaries(st, include_best_trial=False):
            if study and summary.study_name != study:
                continue
            s = optuna.load_study(study_name=summary.study_name, storage=st)
            trials = s.get_trials(deepcopy=False)
            states: dict[str, int] = {}
            for t in trials:
                states[t.state.name] = states.get(t.state.name, 0) + 1
            complete = [t for t in trials if t.state.name == "COMPLETE"]
            best = s.best_trials if complete else []
            lines.append(f"{summary.study_name}: {len(trials)} trial(s) "
                         f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(states.items()))}); storage {url}")
            for b in best:
                lines.append(f"  best: trial {b.number} values={_fmt(b.values)} params={_fmt(b.params)}")
            if study:
                for t in trials:
                    lines.append(f"  trial {t.number:>3} {t.state.name:<8} values={_fmt(t.values)} "
                                 f"params={_fmt(t.params)}")
    if study and not lines:
        lines.append(f"no study named {study!r} under {Path(results_dir) / 'studies'}")
    return lines


def _fmt(obj: Any) -> str:
    return json.dumps(obj, default=lambda v: float(v) if hasattr(v, "__float__") else str(v),
                      separators=(",", ":"))
