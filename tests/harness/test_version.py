"""`peftbench --version` prints the version every record carries (issue #22): one source, the installed
distribution's metadata (pyproject.toml's `version`)."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from harness import __version__
from harness.cli import main
from harness.dispatch import meta_block
from harness.spec import compose, spec_from_config


def test_version_is_the_distribution_version() -> None:
    assert __version__ == metadata.version("peftbench")
    assert __version__ not in ("", "0+unknown")


def test_cli_prints_the_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"peftbench {__version__}\n"
    # the console entry point as a user runs it (argument parsing before any subcommand)
    out = subprocess.run([sys.executable, "-m", "harness.cli", "-V"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"peftbench {__version__}"


def test_records_carry_the_version() -> None:
    """meta_block is what dispatch.execute writes into every record's meta, success or not."""
    spec = spec_from_config(compose(["method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke"]))
    meta = meta_block(spec, None)
    assert meta["packages"]["peftbench"] == __version__
