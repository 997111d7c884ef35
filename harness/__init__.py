"""peftbench's orchestration package. Importing it registers the config resolver the Hydra configs
use (`${peftbench.runs_dir:${runs_dir}}`), so every entry point that composes a config has it."""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

try:
    # The installed distribution's version (pyproject.toml's, via the egg-info of `pip install -e .`): the
    # same call provenance.package_versions() makes for every record's meta.packages.peftbench, so
    # `peftbench --version` prints exactly what records carry.
    __version__ = metadata.version("peftbench")
except metadata.PackageNotFoundError:   # pragma: no cover - a source tree on sys.path, not installed
    __version__ = "0+unknown"


def _runs_dir(value: object = None) -> str:
    """runs_dir as a job sees it (spec._path_or): the field, else $PEFTBENCH_RUNS, else <project>/runs.
    Hydra's sweep dir and submitit's folder follow it instead of the current directory."""
    if value not in (None, ""):
        return str(Path(str(value)).expanduser().resolve())
    if os.environ.get("PEFTBENCH_RUNS"):
        return str(Path(os.environ["PEFTBENCH_RUNS"]).expanduser().resolve())
    return str(Path(__file__).resolve().parent.parent / "runs")


def _register() -> None:
    try:
        from omegaconf import OmegaConf
    except ImportError:   # pragma: no cover - omegaconf comes with hydra-core
        return
    OmegaConf.register_new_resolver("peftbench.runs_dir", _runs_dir, replace=True)


_register()
