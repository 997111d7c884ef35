"""Shared fixtures: compose peftbench configs through Hydra's compose API (as the CLI does)."""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import pytest

from harness.spec import CONF_DIR

# ------------------------------------------------------------------ parallel runs (pytest-xdist)
# `make test` runs the suite on every core: `pytest -n $(PYTEST_WORKERS)` with `--dist loadgroup
# --no-loadscope-reorder` (pyproject addopts). Tests that share something outside their tmp_path run in
# one xdist group, i.e. one after another on one worker:
#   slurm       the live local SLURM cluster (1 node, 2 CPUs): every test marked `slurm`. Their jobs
#               compete for the node's CPUs, the preemption test needs the whole node, and the cluster
#               fixture's jobs run in the background while the module's later tests run. (The dispatch
#               benchmark also calls sbatch, but only for held arrays it cancels at once: they never
#               claim a CPU, and it asserts no timing, so it needs no group.)
#   <module>    the tests of a module that use one of its module-scoped fixtures (a sweep, a study, a
#               loaded model): in one group the fixture is built once, not once per worker.
# Everything else is balanced test by test. The model cache is filled before pytest starts (`make
# models`) and harness.models.fetch holds a file lock anyway; records and caches go to tmp dirs.
SLURM_GROUP = "slurm"


def _module_scoped(item: pytest.Item) -> bool:
    """Does the test use a fixture built once per module (or class/package)?"""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in ("module", "class", "package")
               for name in item.fixturenames if (defs := info.name2fixturedefs.get(name)))


def xdist_group(item: pytest.Item) -> str | None:
    if item.get_closest_marker("slurm") is not None:
        return SLURM_GROUP
    if _module_scoped(item):
        return item.nodeid.split("::", 1)[0]   # the module's path
    return None


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook turns the xdist_group marks into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = {}
    for item in items:
        if (group := xdist_group(item)) is not None:
            item.add_marker(pytest.mark.xdist_group(group))
            groups[item.nodeid] = group
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return   # a plain run keeps the collection order
    # xdist hands work out in collection order (--no-loadscope-reorder): the longest units first, so the
    # last minutes are spent on short tests spread over every worker, not on one long group. The SLURM
    # group is the longest (real jobs, a one-minute time limit, preemption); then the module groups
    # and the integration tests (real models and data). Order within each group is kept.
    def rank(item: pytest.Item) -> int:
        group = groups.get(item.nodeid)
        if group == SLURM_GROUP:
            return 0
        return 1 if group is not None or item.get_closest_marker("integration") is not None else 2

    items[:] = sorted(items, key=rank)   # stable


class _GroupCheck:
    """On an xdist worker, after xdist's own hook: --dist loadgroup works by appending "@group" to each
    grouped test's node id. Where that no longer takes effect (pytest 9.2 with xdist 3.8: pytest-xdist#1386)
    the groups are silently ignored and the SLURM tests would run on two workers at once: every test then
    fails at once, before any fixture runs, saying why (an exception here would only crash the worker)."""

    def __init__(self) -> None:
        self.error: str | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not config.getoption("loadgroup", False):
            return
        lost = [item.nodeid for item in items
                if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid.rsplit("::", 1)[-1]]
        if lost:
            self.error = (f"--dist loadgroup did not group {len(lost)} tests (e.g. {lost[0]}): pytest "
                          f"{pytest.__version__} with this pytest-xdist ignores xdist_group (pytest-xdist#1386); "
                          "install the test extras' pins (pip install -e '.[test]') or run without xdist "
                          "(make test PYTEST_WORKERS=0)")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if self.error:
            pytest.fail(self.error, pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker gets its share of the cores: N workers on C cores → C // N torch threads each
    (1 on a 2-core machine with 2 workers), so two workers training at once do not oversubscribe. The
    environment carries it to the subprocesses a test starts (the CLI, launchers, SLURM jobs via sbatch's
    exported environment). A job that sets `threads` (config, the local/SLURM launchers) still sets its own."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    config.pluginmanager.register(_GroupCheck(), "peftbench-xdist-group-check")
    if "OMP_NUM_THREADS" in os.environ:
        return   # the caller chose (torch reads it)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // int(workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(threads)


def conf_names(group: str) -> list[str]:
    """Every option of a config group, as Hydra names it (task options carry their suite: glue/sst2)."""
    root = Path(CONF_DIR) / group
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if not p.name.startswith("_"))   # _base.yaml and the like are shared parts, not options


def compose_dictconfig(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The composed primary config (DictConfig, hydra node included), as `peftbench validate` sees it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@functools.cache
def _compose_cached(overrides: tuple[str, ...]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = compose_dictconfig(overrides)
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def compose_dict(overrides: list[str] | tuple[str, ...] = (), part: str | None = None) -> dict[str, Any]:
    """The composed config as a plain dict without the hydra node (a fresh deep copy each call); with
    ``part`` (method, task, ...) that block alone, and only it is copied.

    Composition costs ~0.1 s, so results are cached per override tuple.
    """
    cfg = _compose_cached(tuple(overrides))
    return copy.deepcopy(cfg if part is None else cfg[part])


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> plain dict of the composed config (logger=none unless overridden)."""

    def _compose(*overrides: str) -> dict[str, Any]:
        return compose_dict(("logger=none", *overrides))

    return _compose


@pytest.fixture
def tmp_dirs(tmp_path: Path) -> dict[str, Path]:
    """Throw-away results/runs/cache dirs, so no test writes into the project's own results/."""
    dirs = {name: tmp_path / name for name in ("results", "runs", "cache")}
    for d in dirs.values():
        d.mkdir()
    return dirs


@pytest.fixture
def tmp_overrides(tmp_dirs: dict[str, Path]) -> list[str]:
    return [f"results_dir={tmp_dirs['results']}", f"runs_dir={tmp_dirs['runs']}",
            f"cache_dir={tmp_dirs['cache']}", "logger=none"]


def run_record(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    """Run one job in-process (harness.dispatch.execute) with its results and runs under tmp_path, and return its
    record, which must be a success."""
    import json

    from harness.dispatch import execute
    from harness.spec import spec_from_config

    spec = spec_from_config(compose_dict((*overrides, f"results_dir={tmp_path / 'results'}",
                                          f"runs_dir={tmp_path / 'runs'}")))
    rec = json.loads(Path(execute(spec)["record"]).read_text())
    assert rec["run"]["status"] == "success", rec["run"]["error"]
    return rec
