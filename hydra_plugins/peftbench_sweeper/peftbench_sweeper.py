"""Hydra sweeper: Hydra's basic grid sweep, plus what peftbench needs before any compute.

1. Compose and validate *every* job of the sweep first; if any is invalid, report all problems at
   once and launch nothing (a typo in job 37 must not surface after 36 jobs of GPU time).
   That includes the data: a task whose data neither a local copy nor the hub can provide (MNLI
   offline) is reported here, not after a model was loaded.
2. ``task=<suite>`` (glue, gsm8k, commonsense) expands to the suite's tasks (conf/suite/).
3. Skip jobs whose success record already exists (same signature), before submitting them, so a
   re-run sweep costs nothing for finished work — on SLURM it does not even queue them.
4. Write the sweep's manifest (harness/sweeps.py) before launching, for `peftbench status` and
   `cancel`; with ``plan_only`` print the plan (harness/plan.py) and launch nothing.
It lives under hydra_plugins/ because Hydra only instantiates plugins from that namespace.
"""

import copy
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

log = logging.getLogger("peftbench")


@dataclass
class PeftbenchSweeperConf:
    _target_: str = "hydra_plugins.peftbench_sweeper.peftbench_sweeper.PeftbenchSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    plan_only: bool = False   # `peftbench plan`: validate, print what would run and its estimated cost


ConfigStore.instance().store(group="hydra/sweeper", name="peftbench", node=PeftbenchSweeperConf,
                             provider="peftbench")


class FastComposer:
    """Every job of a grid composed for validation, at a fraction of Hydra's per-job cost.

    Hydra recomposes each job from scratch (reading every YAML, building the defaults tree): ~0.2 s a
    job, 20 s for a 100-job sweep. Jobs of a grid differ mostly in plain values (seed=0..99). Here the
    full compose runs once per distinct set of *defaults* overrides (method=..., task=...), split from
    the value overrides by Hydra's own rule (defaults_list.Overrides: a key naming a config group with
    a non-dict value selects a default); the job's value overrides are then applied to a copy with
    Hydra's own ``_apply_overrides_to_config``, in its order, as the full compose does after composing.
    The result is the job's config as the launcher will compose it (tests compare signatures); it is
    used to validate and plan, while every launched job is still composed by Hydra itself.
    """

    def __init__(self, loader: Any, master: Any, parser: Any) -> None:
        self.loader, self.master, self.parser = loader, master, parser
        self.bases: dict[tuple[str, ...], Any] = {}

    def _selects_default(self, override: Any) -> bool:
        return self.loader.repository.group_exists(override.key_or_group) and not isinstance(override.value(), dict)

    def __call__(self, job: list[str]) -> Any:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        parsed = self.parser.parse_overrides(list(job))
        defaults = tuple(o.input_line for o in parsed if self._selects_default(o))
        values = [o for o in parsed if not self._selects_default(o)]
        if defaults not in self.bases:
            self.bases[defaults] = self.loader.load_sweep_config(master_config=self.master,
                                                                 sweep_overrides=list(defaults))
        cfg = copy.deepcopy(self.bases[defaults])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        return cfg


class PeftbenchSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 plan_only: bool = False) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.plan_only = plan_only

    def sweep(self, arguments: list[str]) -> Any:
        import time

        from harness.records import success_exists
        from harness.spec import ConfigError, spec_from_config
        from harness.sweeps import cancel_requested, ended_status, varying_keys, write_manifest

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        from tasks import data_problems
        from tasks.suites import expand_override

        params_conf = [expand_override(o) for o in [*self._parse_config(), *arguments]]
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        jobs = [list(j) for j in self.split_arguments(parser.parse_overrides(params_conf), None)[0]]

        problems: list[str] = []
        todo: list[list[str]] = []
        planned: list[tuple[list[str], Any, str]] = []   # (overrides, spec, run | skip)
        skipped = 0
        data_checked: dict[tuple[Any, str], list[str]] = {}
        compose = FastComposer(loader, self.config, parser)
        for i, job in enumerate(jobs):
            where = f"job {i} [{' '.join(job)}]"
            try:
                cfg = compose(job)
            except (MissingConfigException, ConfigCompositionException) as exc:
                problems.append(f"{where}: {str(exc).strip()}")
                continue
            try:
                spec = spec_from_config(cfg)
            except ConfigError as exc:
                problems.extend(f"{where}: {p}" for p in exc.problems)
                continue
            task_key = (spec.data_dir, json.dumps(spec.task, sort_keys=True, default=str))
            if task_key not in data_checked:   # each distinct task once: a stat call or a hub probe
                data_checked[task_key] = data_problems(spec.task, spec.data_dir)
            problems.extend(f"{where}: {p}" for p in data_checked[task_key])
            if data_checked[task_key]:
                continue
            if not spec.force and success_exists(spec.record_path):
                skipped += 1
                planned.append((job, spec, "skip"))
            else:
                todo.append(job)
                planned.append((job, spec, "run"))
        if problems:
            print(str(ConfigError(problems, context=f"sweep of {len(jobs)} jobs; nothing was launched")),
                  file=sys.stderr)
            raise SystemExit(2)
        if self.plan_only:
            from harness.plan import plan_lines

            print("\n".join(plan_lines(planned, launcher=str(self.config.get("launcher_name", "?")),
                                       parallel=self._parallel(),
                                       launcher_params=OmegaConf.to_container(self.config.hydra.launcher,
                                                                              resolve=True))))
            return []
        print(f"peftbench: {len(jobs)} jobs; {skipped} already have a success record (skipped); "
              f"{len(todo)} to run", file=sys.stderr)
        if not todo:
            return []

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        runs = [(j, s) for j, s, action in planned if action == "run"]
        done = [(j, s) for j, s, action in planned if action == "skip"]
        write_manifest(sweep_dir, sweep_name=str(self.config.get("sweep_name", "adhoc")),
                       launcher=str(self.config.get("launcher_name", "?")), total=len(jobs), skipped=skipped,
                       jobs=[_manifest_job(i, j, s, action) for i, (j, s, action) in
                             enumerate([(j, s, "run") for j, s in runs] + [(j, s, "skip") for j, s in done])])
        # every launcher prints a line per finished job: n/N over the whole sweep, time since its start
        self.launcher.sweep_total = len(todo)   # type: ignore[attr-defined]
        self.launcher.sweep_t0 = time.monotonic()   # type: ignore[attr-defined]
        self.launcher.sweep_varying = varying_keys(todo)   # type: ignore[attr-defined]
        self.launcher.sweep_records = [str(s.record_path) for _, s in runs]   # type: ignore[attr-defined]
        size = self.max_batch_size or len(todo)
        returns: list[Sequence[Any]] = []
        counts: dict[str, int] = {}
        for start in range(0, len(todo), size):
            if cancel_requested(sweep_dir):   # `peftbench cancel`: launch nothing more
                counts["cancelled"] = counts.get("cancelled", 0) + len(todo) - start
                print(f"peftbench: sweep cancelled: {len(todo) - start} job(s) not launched", file=sys.stderr)
                break
            batch = todo[start: start + size]
            try:
                results = self.launcher.launch(batch, initial_job_idx=start)
            except Exception as exc:   # SubmissionError from our SLURM launcher; others re-raised
                if type(exc).__name__ != "SubmissionError":
                    raise
                print(f"peftbench: {exc}\npeftbench: nothing was submitted", file=sys.stderr)
                raise SystemExit(2) from None
            for k, r in enumerate(results):
                if r.status == JobStatus.COMPLETED:
                    value = r._return_value
                else:   # the job process itself died or raised: one lost job never ends the sweep
                    exc = r._return_value
                    log.error("%s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    # a job stopped by a signal wrote its record (cancelled, failed) before it exited
                    value = {"status": ended_status(runs[start + k][1].record_path, sweep_dir)}
                status = value.get("status", "?") if isinstance(value, dict) else "?"
                counts[status] = counts.get(status, 0) + 1
            returns.append(results)
        print("peftbench: sweep finished: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
              file=sys.stderr)
        return returns

    def _parallel(self) -> int:
        """How many of the sweep's jobs run at once under the configured launcher."""
        launcher = self.config.hydra.launcher
        if "array_parallelism" in launcher and launcher.array_parallelism:
            return int(launcher.array_parallelism)
        if "parallel" in launcher and launcher.parallel:   # launcher=local
            return int(launcher.parallel)
        return 1


def _manifest_job(num: int, overrides: list[str], spec: Any, action: str) -> dict[str, Any]:
    return {"num": num, "overrides": overrides, "label": spec.label, "signature": spec.signature,
            "record": str(spec.record_path), "run_dir": str(spec.run_dir), "action": action}
