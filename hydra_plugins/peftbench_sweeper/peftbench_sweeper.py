"""Hydra sweeper: Hydra's basic grid sweep, plus what peftbench needs before any compute.

1. Compose and validate *every* job of the sweep first; if any is invalid, report all problems at
   once and launch nothing (a typo in job 37 must not surface after 36 jobs of GPU time).
   That includes the data: a task whose data neither a local copy nor the hub can provide (MNLI
   offline) is reported here, not after a model was loaded.
2. ``task=<suite>`` (glue, gsm8k, commonsense) expands to the suite's tasks (conf/suite/).
3. Skip jobs whose success record already exists (same signature), before submitting them, so a
   re-run sweep costs nothing for finished work — on SLURM it does not even queue them.
It lives under hydra_plugins/ because Hydra only instantiates plugins from that namespace.
"""

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
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

log = logging.getLogger("peftbench")


@dataclass
class PeftbenchSweeperConf:
    _target_: str = "hydra_plugins.peftbench_sweeper.peftbench_sweeper.PeftbenchSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="peftbench", node=PeftbenchSweeperConf,
                             provider="peftbench")


class PeftbenchSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from harness.records import success_exists
        from harness.spec import ConfigError, spec_from_config

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        from tasks import data_problems
        from tasks.suites import expand_override

        params_conf = [expand_override(o) for o in [*self._parse_config(), *arguments]]
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        jobs = [list(j) for j in self.split_arguments(parser.parse_overrides(params_conf), None)[0]]

        problems: list[str] = []
        todo: list[list[str]] = []
        skipped = 0
        data_checked: dict[tuple[Any, str], list[str]] = {}
        for i, job in enumerate(jobs):
            where = f"job {i} [{' '.join(job)}]"
            try:
                cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(job))
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
            else:
                todo.append(job)
        if problems:
            print(str(ConfigError(problems, context=f"sweep of {len(jobs)} jobs; nothing was launched")),
                  file=sys.stderr)
            raise SystemExit(2)
        print(f"peftbench: {len(jobs)} jobs; {skipped} already have a success record (skipped); "
              f"{len(todo)} to run", file=sys.stderr)
        if not todo:
            return []

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or len(todo)
        returns: list[Sequence[Any]] = []
        counts: dict[str, int] = {}
        for start in range(0, len(todo), size):
            batch = todo[start: start + size]
            try:
                results = self.launcher.launch(batch, initial_job_idx=start)
            except Exception as exc:   # SubmissionError from our SLURM launcher; others re-raised
                if type(exc).__name__ != "SubmissionError":
                    raise
                print(f"peftbench: {exc}\npeftbench: nothing was submitted", file=sys.stderr)
                raise SystemExit(2) from None
            for r in results:
                try:
                    value = r.return_value   # re-raises if the job process itself died
                except Exception as exc:  # noqa: BLE001 - one lost job never ends the sweep
                    log.error("%s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    value = {"status": "lost"}
                status = value.get("status", "?") if isinstance(value, dict) else "?"
                counts[status] = counts.get(status, 0) + 1
            returns.append(results)
        print("peftbench: sweep finished: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
              file=sys.stderr)
        return returns
