"""Provenance: everything needed to say which code, packages, hardware and data made a result."""
from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.spec import PROJECT_ROOT

PACKAGES = ("peftbench", "torch", "transformers", "peft", "hydra-core", "hydra-submitit-launcher", "submitit",
            "optuna", "wandb", "lm-eval", "pandas", "numpy", "gguf", "safetensors", "tokenizers")


@cache
def git_info(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "dirty": bool(status) if status is not None else None,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


@cache
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def torch_build() -> dict[str, Any]:
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda, "debug": torch.version.debug,
            "threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available()}


@cache
def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "python": platform.python_version(), "cpu": _cpu_model(),
                            "cpu_count": os.cpu_count()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:   # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def sha256_file(path: str | Path, _chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB blocks (model payloads are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_chunk):
            h.update(block)
    return h.hexdigest()


@cache
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a data file, cached per (path, size, mtime) within a process."""
    st = os.stat(path)
    return _sha256_cached(str(path), st.st_size, st.st_mtime)


def slurm_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                                           "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION",
                                                           "SLURM_RESTART_COUNT")}
