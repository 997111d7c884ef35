"""Commands in the docs cannot rot (issue #22): every shell block in docs/ is classified, and every block
marked `runnable` is executed here, page by page in order, and must exit 0.

The blocks of a page run in one scratch directory that mirrors the project (a link per top-level entry, and
`../shared` linked beside it, so the docs' relative paths hold) with PEFTBENCH_RESULTS and PEFTBENCH_RUNS in
tmp_path and the hub offline: nothing may land in the checkout, which `git status` checks. They run on the
embedded models at tiny budgets; the slowest page is the quickstart's real two-step job."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import __version__
from tests.docs.blocks import DOCS, REASONS, ROOT, RUNNABLE, pages, runnable_by_page, shell_blocks

MIN_RUNNABLE = 15   # issue #22's bar


def test_every_shell_block_is_classified() -> None:
    problems = []
    for b in shell_blocks():
        if not b.directive:
            problems.append(f"{b.where}: a bare ```{b.language} fence; use {{code-block}} {b.language} with :class:")
            continue
        kinds = [c for c in b.classes if c == RUNNABLE or c in REASONS]
        if len(kinds) != 1:
            problems.append(f"{b.where}: classes {list(b.classes)}; exactly one of {RUNNABLE}, {', '.join(REASONS)}")
    assert not problems, "\n".join(problems)


def test_the_parser_sees_the_pages() -> None:
    """A parser that found nothing would pass the test above vacuously."""
    assert len(pages()) >= 30
    assert sum(len(v) for v in runnable_by_page().values()) >= MIN_RUNNABLE
    assert {b.page for b in shell_blocks()} >= {"quickstart.md", "howto/slurm.md", "howto/multi-gpu.md"}


def _git_status() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=all"],
                         capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else "<no git>"


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    work = tmp_path / "work" / ROOT.name
    work.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name != ".git":
            (work / entry.name).symlink_to(entry)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (work.parent / "shared").symlink_to(shared)
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PEFTBENCH_RESULTS": str(tmp_path / "results"), "PEFTBENCH_RUNS": str(tmp_path / "runs"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    return work, env


@pytest.mark.integration
@pytest.mark.parametrize("page", sorted(runnable_by_page()))
def test_runnable_blocks(page: str, tmp_path: Path) -> None:
    before = _git_status()
    work, env = _scratch(tmp_path)
    timings = []
    for block in runnable_by_page()[page]:
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        timings.append(f"{block.where} {time.perf_counter() - start:.1f} s")
        assert proc.returncode == 0, (f"{block.where} exited {proc.returncode}:\n{block.code}\n"
                                      f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    print("\n".join(timings))
    # every record a block wrote carries the version `peftbench --version` prints
    for path in (tmp_path / "results" / "records").glob("*.json"):
        assert json.loads(path.read_text())["meta"]["packages"]["peftbench"] == __version__
    assert _git_status() == before, f"{page}'s blocks changed the checkout"
    assert DOCS.exists()
