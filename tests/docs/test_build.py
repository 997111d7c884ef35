"""The documentation builds strictly and offline (issue #22): `sphinx-build -W` (every warning an error: a broken
link between pages, a missing or orphaned page, a docstring that does not parse, a generated table that misses
a registry entry), the same command as `make docs`, into tmp_path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from methods.catalog import method_names
from tasks.catalog import task_names
from tests.docs.blocks import DOCS, ROOT
from tests.docs.test_runnable import _git_status


@pytest.mark.integration
def test_docs_build_strict_and_offline(tmp_path: Path) -> None:
    before = _git_status()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PEFTBENCH_RESULTS": str(tmp_path / "results"), "PEFTBENCH_RUNS": str(tmp_path / "runs")}
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert (out / "index.html").exists()
    # the generated reference tables list every registry entry (the build checks this too; here, the pages)
    methods_html = (out / "reference" / "methods.html").read_text(encoding="utf-8")
    missing = [m for m in method_names() if f"<td><p>{m}</p></td>" not in methods_html]
    assert not missing, f"methods missing from the built reference: {missing}"
    tasks_html = (out / "reference" / "tasks.html").read_text(encoding="utf-8")
    missing = [t for t in task_names() if f"<td><p>{t}</p></td>" not in tasks_html]
    assert not missing, f"tasks missing from the built reference: {missing}"
    assert len(method_names()) >= 71 and len(task_names()) >= 18
    assert _git_status() == before, "the docs build changed tracked or unignored files"
