"""The sweeper's FastComposer gives every job exactly the config Hydra's own per-job compose gives."""
from __future__ import annotations

from typing import Any

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from harness.spec import CONF_DIR, spec_from_config
from hydra_plugins.peftbench_sweeper.peftbench_sweeper import FastComposer

COMMON = ["logger=none", "results_dir=/tmp/r", "runs_dir=/tmp/w"]
JOBS = [
    ["method=lora", "seed=0"],
    ["method=dora", "seed=3", "method.params.r=4"],
    ["method=lora", "seed=1", "method.optim.lr=0.001", "budget.tokens=500"],
    ["method=vera", "task=glue/rte", "seed=2"],
    ["method=lora", "model=smollm2-135m", "task=commonsense/boolq", "seed=0"],
    ["method=lora", "budget=small", "seed=5", "+method.params.bias=none"],
    ["method=adalora", "seed=0", "~method.params.lora_dropout"],
    ["method=lora", "seed=0", "launcher=local", "hydra.launcher.timeout_min=7"],
]


@pytest.fixture(scope="module")
def hydra_loader() -> tuple[Any, Any, Any]:
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = loader.load_configuration("config", overrides=list(COMMON), run_mode=RunMode.MULTIRUN)
    return loader, master, OverridesParser.create(config_loader=loader)


def _app(cfg: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(cfg, resolve=False)
    launcher = out["hydra"]["launcher"]
    del out["hydra"]   # Hydra's runtime bookkeeping (override lists, choices) is not the job's config
    return {"app": out, "launcher": launcher}


@pytest.mark.parametrize("job", JOBS, ids=lambda j: " ".join(j))
def test_same_config_and_signature_as_hydra(hydra_loader: tuple[Any, Any, Any], job: list[str]) -> None:
    loader, master, parser = hydra_loader
    overrides = [*COMMON, *job]
    fast = FastComposer(loader, master, parser)
    fast(["method=lora", *COMMON, "seed=9"])   # a base composed for another job first must not leak
    mine = fast(overrides)
    hydras = loader.load_sweep_config(master_config=master, sweep_overrides=overrides)
    assert _app(mine) == _app(hydras)
    assert spec_from_config(mine).signature == spec_from_config(hydras).signature


def test_a_bad_override_fails_as_hydra_fails(hydra_loader: tuple[Any, Any, Any]) -> None:
    loader, master, parser = hydra_loader
    bad = [*COMMON, "method=lora", "method.params.nosuch=1"]
    with pytest.raises(ConfigCompositionException, match="nosuch"):
        loader.load_sweep_config(master_config=master, sweep_overrides=bad)
    with pytest.raises(ConfigCompositionException, match="nosuch"):
        FastComposer(loader, master, parser)(bad)


def test_one_full_compose_per_choice_of_defaults(hydra_loader: tuple[Any, Any, Any]) -> None:
    loader, master, parser = hydra_loader
    fast = FastComposer(loader, master, parser)
    for seed in range(20):
        for method in ("lora", "dora"):
            fast([*COMMON, f"method={method}", f"seed={seed}"])
    assert len(fast.bases) == 2
