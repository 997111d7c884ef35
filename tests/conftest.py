"""Shared fixtures: compose peftbench configs through Hydra's compose API (as the CLI does)."""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest

from harness.spec import CONF_DIR


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


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as a plain dict without the hydra node (a fresh deep copy each call).

    Composition costs ~0.1 s, so results are cached per override tuple.
    """
    return copy.deepcopy(_compose_cached(tuple(overrides)))


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
