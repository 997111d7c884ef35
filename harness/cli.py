"""`peftbench` console script: thin entry points over the harness.

  peftbench --version                      the version every record carries (meta.packages.peftbench)
  peftbench run [-m] [hydra overrides]     one job, or a multirun sweep (-m)
  peftbench sweep NAME [overrides]         a named sweep from sweeps/NAME.yaml
  peftbench leaderboard [options]          regenerate results/leaderboards/ from results/records/
  peftbench rank TABLE.csv [options]       social-choice ranking of any score table
  peftbench fetch-models [NAME ...]        local copies of the embedded models
  peftbench validate [overrides]           compose + validate a job config, print it, run nothing
  peftbench tasks [--format md|json]       every task: suite, protocols, metrics, split sizes, data
  peftbench methods [--format md|json] [--model M --trainable-params N]
                                           every method: paper, knob, applies to, mechanism; solved knobs
  peftbench search [overrides]             an Optuna study: trials are jobs on the validation split
  peftbench tune -m method=A,B [overrides] equal search budget per method, then best configs x seeds
  peftbench studies [STUDY] [--results-dir DIR] [--storage URL]   trials, states, best so far
  peftbench plan [NAME] [overrides]        every job of a sweep: skip / resume / run, estimated cost; submits nothing
  peftbench status [SWEEP] [-v]            done / running / pending / failed / cancelled per sweep, reasons, logs
  peftbench cancel SWEEP                   stop a sweep's running and pending jobs (they record `cancelled`)
  peftbench import peft-results FILE...    peft's method-comparison results → external records (own boards)
  peftbench import peft-experiment DIR...  peft experiment folders → method + overrides (a command or --sweep FILE)
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from harness.spec import CONF_DIR, SWEEPS_DIR, ConfigError, compose

# Set ("1") in a process that runs one job and ends: a single `peftbench run` (each of torchrun's ranks too)
# and a SLURM task (hydra_plugins/peftbench_sweeper/slurm_launcher.py); never in a sweep driver or a fork
# server. An environment variable, not a module global: `python -m harness.cli` makes this module __main__,
# and cloudpickle then ships hydra_task to a SLURM task by value, with a copy of its globals.
ONE_JOB_ENV = "PEFTBENCH_ONE_JOB_PROCESS"


def hydra_task(cfg: Any) -> dict[str, Any]:
    """What every Hydra launcher runs for one job. Module-level so submitit can pickle it."""
    from harness.dispatch import execute
    from harness.spec import spec_from_config

    logging.basicConfig(level=logging.INFO, format="[peftbench] %(message)s", force=True)
    try:
        spec = spec_from_config(cfg)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
    if os.environ.get(ONE_JOB_ENV) == "1":
        keep_out_bitsandbytes(spec)
    return execute(spec)


def _hydra(argv: list[str], prog: str = "peftbench run") -> int:
    import hydra

    single_run = not any(a in ("-m", "--multirun") or a.startswith("--") for a in argv)
    if single_run:
        # A single run: compose, validate and check the data first, so a typo in a group option or
        # a task whose data is nowhere exits 2 with one clear message, like every other config error
        # (a multirun's sweeper does the same for every job before launching any).
        try:
            _check_single([a for a in argv if not a.startswith("-")])
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    from tasks.suites import expand_override

    # task=glue names a suite: Hydra would look for conf/task/glue.yaml while composing the primary
    # config, before any sweeper sees the override, so the expansion happens here (and in the
    # sweeper, for sweeps/*.yaml that list a suite in hydra.sweeper.params).
    argv = [expand_override(a) if not a.startswith("-") else a for a in argv]
    sys.argv = [prog, *argv]
    before = os.environ.get(ONE_JOB_ENV)
    os.environ[ONE_JOB_ENV] = "1" if single_run else ""
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)()
    finally:   # a caller in the same process (a test) runs on as it was
        if before is None:
            os.environ.pop(ONE_JOB_ENV, None)
        else:
            os.environ[ONE_JOB_ENV] = before
    return 0


def keep_out_bitsandbytes(spec: Any) -> bool:
    """In a process that runs this one job and exits (ONE_JOB_ENV: a single `peftbench run`, each of
    torchrun's ranks, a SLURM task), keep bitsandbytes out when the job does not need it
    (harness.quantization.bitsandbytes_users); True if it did.

    Why: peft imports bitsandbytes whenever it is installed, and bitsandbytes compiles its CPU kernels with
    torch.compile at import, which loads inductor: ~2 s of every job's start on a 2-core machine, for a job
    that never quantizes. With its sys.modules entry None, importlib.util.find_spec answers None and an import
    raises ImportError, so peft, transformers and accelerate take the path they take on the default install
    (bitsandbytes is the `quant` extra). Never in a process that runs several jobs: a later one may need it."""
    from harness.quantization import bitsandbytes_users

    if bitsandbytes_users(spec.model, spec.method) or "bitsandbytes" in sys.modules:
        return False
    sys.modules["bitsandbytes"] = None   # type: ignore[assignment]
    return True


def _check_single(overrides: list[str]) -> Any:
    """The JobSpec of a single run, or ConfigError: a suite given as the task, an invalid config,
    or task data that neither a local copy nor the hub can provide."""
    from harness.spec import spec_from_config
    from tasks import data_problems
    from tasks.suites import load_suites

    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "task" and value in load_suites():
            members = ", ".join(load_suites()[value].expand)
            hint = f"run it as a multirun, e.g. peftbench run -m task={value} ..."
            raise ConfigError([f"task={value} is a suite ({members}): {hint}"])
    spec = spec_from_config(compose(overrides))
    problems = data_problems(spec.task, spec.data_dir)
    if problems:
        raise ConfigError(problems)
    return spec


def _sweep(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        print(f"usage: peftbench sweep NAME [overrides]; sweeps: {', '.join(names)}", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if not (SWEEPS_DIR / f"{name}.yaml").exists():
        names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        print(f"peftbench sweep: no sweeps/{name}.yaml; sweeps: {', '.join(names)}", file=sys.stderr)
        return 2
    return _hydra(["-m", "--config-dir", str(SWEEPS_DIR), "--config-name", name, *rest], "peftbench sweep")


def _validate(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    try:
        spec = _check_single(argv)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(OmegaConf.to_yaml(OmegaConf.create(spec.semantic())), end="")
    print(f"# signature: {spec.signature}\n# record: {spec.record_path}")
    return 0


def _leaderboard(argv: list[str]) -> int:
    from harness.leaderboard.report import main

    return main(argv)


def _rank(argv: list[str]) -> int:
    from harness.leaderboard.rank_cli import main

    return main(argv)


def _tasks(argv: list[str]) -> int:
    from tasks.catalog import main

    return main(argv)


def _methods(argv: list[str]) -> int:
    from methods.catalog import main

    return main(argv)


def _fetch(argv: list[str]) -> int:
    from harness.models import main

    return main(argv)


def _search(argv: list[str]) -> int:
    if "--status" in argv:
        i = argv.index("--status")
        rest = argv[:i] + argv[i + 1:]
        return _studies(rest)
    from harness.search import run_search

    logging.basicConfig(level=logging.INFO, format="[peftbench] %(message)s", force=True)
    try:
        result = run_search(argv)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"study {result.study}: {result.n_trials} trial(s) "
          f"({', '.join(f'{v} {k.lower()}' for k, v in sorted(result.states.items()))}); storage {result.storage}")
    for b in result.best:
        print(f"  best: trial {b['number']} values={b['values']} params={b['params']}")
    return 0


def _tune(argv: list[str]) -> int:
    from harness.search import tune

    logging.basicConfig(level=logging.INFO, format="[peftbench] %(message)s", force=True)
    try:
        out = tune([a for a in argv if a not in ("-m", "--multirun")])
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for s in out["studies"]:
        print(f"study {s}")
    counts: dict[str, int] = {}
    for summary in out["finals"]:
        counts[summary.get("status", "?")] = counts.get(summary.get("status", "?"), 0) + 1
    print("final runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0 if set(counts) <= {"success", "skipped"} else 1


def _studies(argv: list[str]) -> int:
    import argparse

    from harness.search import status_lines
    from harness.spec import PROJECT_ROOT, _path_or

    ap = argparse.ArgumentParser(prog="peftbench studies")
    ap.add_argument("study", nargs="?")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--storage", default=None, help="an RDB URL or journal file (default: results/studies/*)")
    args = ap.parse_args(argv)
    results = _path_or(args.results_dir, "PEFTBENCH_RESULTS", PROJECT_ROOT / "results")
    lines = status_lines(results, args.study, storage=args.storage)
    print("\n".join(lines) if lines else f"no studies under {results / 'studies'}")
    return 1 if args.study and lines and lines[0].startswith("no study") else 0


def _plan(argv: list[str]) -> int:
    """The sweeper itself, told to print its plan instead of launching: the same expansion, validation
    and skip rules as the real launch."""
    rest = [a for a in argv if a not in ("-m", "--multirun")]
    if rest and "=" not in rest[0] and not rest[0].startswith("-"):
        name = rest[0]
        if not (SWEEPS_DIR / f"{name}.yaml").exists():
            names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
            print(f"peftbench plan: no sweeps/{name}.yaml; sweeps: {', '.join(names)}", file=sys.stderr)
            return 2
        rest = ["--config-dir", str(SWEEPS_DIR), "--config-name", name, *rest[1:]]
    return _hydra(["-m", *rest, "hydra.sweeper.plan_only=true"], "peftbench plan")


def _runs_dir_arg(prog: str, argv: list[str], *, need_sweep: bool) -> tuple[Any, Any]:
    import argparse

    from harness.spec import PROJECT_ROOT, _path_or

    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("sweep", nargs=None if need_sweep else "?", help="a sweep_name, or a sweep folder")
    ap.add_argument("--runs-dir", default=None, help="default: $PEFTBENCH_RUNS, else <project>/runs")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every job, finished ones too")
    args = ap.parse_args(argv)
    return args, _path_or(args.runs_dir, "PEFTBENCH_RUNS", PROJECT_ROOT / "runs")


def _status(argv: list[str]) -> int:
    from harness.sweeps import status_lines

    args, runs = _runs_dir_arg("peftbench status", argv, need_sweep=False)
    lines = status_lines(runs, args.sweep, verbose=args.verbose)
    print("\n".join(lines))
    return 1 if args.sweep and lines and lines[0].startswith("no sweep") else 0


def _cancel(argv: list[str]) -> int:
    from harness.sweeps import cancel

    args, runs = _runs_dir_arg("peftbench cancel", argv, need_sweep=True)
    try:
        print("\n".join(cancel(runs, args.sweep)))
    except LookupError as exc:
        print(f"peftbench cancel: {exc.args[0]}", file=sys.stderr)
        return 1
    return 0


def _import(argv: list[str]) -> int:
    from harness.peft_mc import main

    return main(argv)


COMMANDS = {"import": _import, "run": _hydra, "sweep": _sweep, "leaderboard": _leaderboard, "rank": _rank,
            "fetch-models": _fetch, "validate": _validate, "tasks": _tasks, "methods": _methods, "search": _search, "tune": _tune,
            "studies": _studies, "plan": _plan, "status": _status, "cancel": _cancel}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from harness import __version__

        print(f"peftbench {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"peftbench: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[cmd](rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
