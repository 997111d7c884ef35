"""The local launcher's fork server imports every method module and reads the git state once, at the sweep's
start, so every job of a long campaign runs and records the same code."""
from __future__ import annotations

import subprocess
import sys

from harness.spec import PROJECT_ROOT
from hydra_plugins.peftbench_sweeper.launchers import PRELOAD

CHECK = """
import sys
import harness.warm as warm
import methods
from harness.provenance import git_info
missing = sorted(n for n in methods.custom_names() if f"methods.{n}" not in sys.modules)
assert not missing, missing
assert git_info.cache_info().currsize == 1 and git_info() is warm.GIT
print("ok")
"""


def test_fork_server_preload_fixes_code_and_git_state_at_the_start() -> None:
    assert "harness.warm" in PRELOAD
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
