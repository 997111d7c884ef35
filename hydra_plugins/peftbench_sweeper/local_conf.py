"""launcher=local's config schema (hydra/launcher=peftbench_local), registered when Hydra scans its plugins.

No ``from __future__ import annotations`` here: Hydra executes plugin modules without registering them
in sys.modules, and dataclasses cannot resolve string annotations of such a module.
"""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class PeftbenchLocalConf:
    """launcher=local (conf/launcher/local.yaml). The submitit-local field names are kept, so
    `peftbench search launcher=local` can hand the same block to submitit's local executor."""

    _target_: str = "hydra_plugins.peftbench_sweeper.launchers.PeftbenchLocalLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.local/%j"   # per-job log folder (%j: the job's number)
    parallel: int = 2                 # jobs running at once
    timeout_min: int = 120            # SIGTERM after this (the job checkpoints and records it), SIGKILL 60 s on
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None  # GPUs per job: CUDA_VISIBLE_DEVICES by slot
    tasks_per_node: int = 1
    nproc_per_job: int = 1            # ranks per job (DDP: harness.distributed); with GPUs, gpus_per_node of them
    nodes: int = 1
    mem_gb: int | None = None
    name: str = "${hydra.job.name}"
    stderr_to_stdout: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="peftbench_local", node=PeftbenchLocalConf,
                             provider="peftbench")

