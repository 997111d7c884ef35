"""One test hook for jobs run as subprocesses (a plain run, torchrun's ranks, SLURM tasks): a sitecustomize.py
put first on the job's PYTHONPATH wraps ``harness.train.train_step`` from outside the package and, at chosen
optimizer steps, makes the job fail, signal itself or its parent, or hold that step until a signal reaches its
SignalGuard. Interruptions then land at a known step however fast or loaded the machine is, so the jobs can be
short and the tests can assert the exact step a resume starts from.

Everything is driven by environment variables (what sbatch and torchrun pass on), so one file serves every test:
:func:`inject` writes it and returns the environment that switches it on.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

SITECUSTOMIZE = '''
import os

def _on():
    e = os.environ
    if not e.get("PEFTBENCH_TEST_HOOK_STEPS"):
        return False
    if e.get("PEFTBENCH_TEST_HOOK_RANK") and e.get("RANK") != e["PEFTBENCH_TEST_HOOK_RANK"]:
        return False
    return not e.get("PEFTBENCH_TEST_HOOK_SLURM_ONLY") or bool(e.get("SLURM_JOB_ID"))

if _on():
    import signal
    import sys
    import time

    import harness.train as t

    _e = os.environ
    _steps = {int(s) for s in _e["PEFTBENCH_TEST_HOOK_STEPS"].split(",")}
    _fail = _e.get("PEFTBENCH_TEST_HOOK_FAIL") == "1"
    _sig = _e.get("PEFTBENCH_TEST_HOOK_SIGNAL")
    _to_parent = _e.get("PEFTBENCH_TEST_HOOK_TO") == "parent"
    _hold_s = float(_e.get("PEFTBENCH_TEST_HOOK_HOLD_S") or 0)
    _real = t.train_step

    def train_step(st, batch):
        if _fail and st.step in _steps:   # instead of the step after it
            raise RuntimeError(f"rank {_e.get('RANK', '0')} broke at step {st.step}")
        loss = _real(st, batch)
        if st.step in _steps:
            if _sig:
                os.kill(os.getppid() if _to_parent else os.getpid(), signal.Signals[_sig])
            if _hold_s:
                guard = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)   # the job's SignalGuard
                print(f"[test] holding after step {st.step}", file=sys.stderr, flush=True)
                deadline = time.monotonic() + _hold_s
                while getattr(guard, "pending", None) is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no signal within {_hold_s:.0f} s of step {st.step}")
                    time.sleep(0.05)
        return loss

    t.train_step = train_step
'''


def inject(env: Mapping[str, str], root: Path, steps: int | Iterable[int], *, fail: bool = False,
           signal_: signal.Signals | None = None, to_parent: bool = False, hold_s: float = 0,
           rank: int | None = None, slurm_only: bool = False) -> dict[str, str]:
    """``env`` with the hook on, its sitecustomize.py written under ``root/inject``. At each of ``steps``
    (optimizer steps done): ``fail`` raises instead of taking the next step; otherwise after the step, ``signal_``
    goes to the job itself (or, with ``to_parent``, to its parent: torchrun, which passes it on to every rank),
    then ``hold_s`` > 0 holds the step until a signal reaches the job's SignalGuard (raising after that many
    seconds). ``rank``: only that rank; ``slurm_only``: only inside a SLURM job, not in the driver submitting it."""
    inject_dir = root / "inject"
    inject_dir.mkdir(parents=True, exist_ok=True)
    (inject_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = {k: v for k, v in env.items() if not k.startswith("PEFTBENCH_TEST_HOOK")}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject_dir), env.get("PYTHONPATH")]))
    out["PEFTBENCH_TEST_HOOK_STEPS"] = ",".join(map(str, [steps] if isinstance(steps, int) else steps))
    for key, value in (("FAIL", "1" if fail else ""), ("SIGNAL", signal_.name if signal_ else ""),
                       ("TO", "parent" if to_parent else ""), ("HOLD_S", str(hold_s) if hold_s else ""),
                       ("RANK", "" if rank is None else str(rank)), ("SLURM_ONLY", "1" if slurm_only else "")):
        if value:
            out[f"PEFTBENCH_TEST_HOOK_{key}"] = value
    return out
