"""Smoke tests of benchmarks/*.py.

`run_main` runs a script's own `main(argv)` in the test's process, as `python benchmarks/X.py ARGS` would (the
script's module code, argument parsing, every stage and every printed line), minus a fresh interpreter's imports
of torch, transformers, peft and the harness, which a test worker has already paid for. What a script measures
in subprocesses of its own (peak RSS, the local launcher, a fresh `peftbench leaderboard`) still runs in them.
The process state a script sets for itself (torch threads, environment variables, warning filters, logger
levels, global RNG seeds) is put back afterwards, so later tests on the worker see none of it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import random
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    import numpy as np
    import torch

    env, argv, path = dict(os.environ), list(sys.argv), list(sys.path)
    threads = torch.get_num_threads()
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    loggers = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    root_level = logging.getLogger().level
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(env)
        sys.argv[:], sys.path[:] = argv, path
        torch.set_num_threads(threads)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                lg.setLevel(loggers.get(name, logging.NOTSET))
        logging.getLogger().setLevel(root_level)


def load_script(script: Path) -> Any:
    """benchmarks/NAME.py as a module (registered, so its dataclasses resolve their annotations)."""
    name = f"_benchmark_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None, script
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_main(script: Path, argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout) of `python SCRIPT ARGV`, run as SCRIPT's main(argv) in this process."""
    out = io.StringIO()
    with _process_state_kept(), contextlib.redirect_stdout(out):
        rc = load_script(script).main(argv)
    return rc, out.getvalue()
