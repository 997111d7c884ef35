"""Timing of the exact Kemeny rule (integer program) against Borda on the same random profiles.

Run:  python benchmarks/leaderboard_rules.py [--reps 5] [--tasks 9] [--seed 0]

Targets (2-core machine): 12 systems <= 1 s, 30 systems <= 60 s per Kemeny ranking, and every ranking
exact (no time-budget fallback: rules.KEMENY_EXACT_MAX keeps one 30-system component exact). Profiles are
i.i.d. uniform scores (the hardest case for Kemeny: the majority graph is full of cycles, so no
Condorcet decomposition helps); each reported time is the worst over --reps profiles. Borda on the
very same table is the in-run baseline, and the ratio kemeny/borda is printed next to it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.leaderboard.rules import apply_rule

TARGETS = {12: 1.0, 30: 60.0}


def _time(rule: str, df: pd.DataFrame) -> tuple[float, bool]:
    """Seconds of one ranking, and whether it is exact (no fallback past a time budget)."""
    t = time.perf_counter()
    rk = apply_rule(rule, df)
    return time.perf_counter() - t, rk.fallback is None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tasks", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    apply_rule("kemeny", pd.DataFrame(rng.random((4, 3))))  # warm up imports / HiGHS
    ok = True
    head = ["systems", "tasks", "kemeny max", "kemeny med", "borda med", "ratio", "exact"]
    widths = [7, 5, 11, 11, 10, 8, 6]
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)) + "  target")
    for n, target in TARGETS.items():
        kem, bor, exact = [], [], []
        for _ in range(args.reps):
            df = pd.DataFrame(
                rng.random((n, args.tasks)),
                index=[f"s{i}" for i in range(n)],
                columns=[f"t{j}" for j in range(args.tasks)],
            )
            sec, is_exact = _time("kemeny", df)
            kem.append(sec)
            exact.append(is_exact)
            bor.append(_time("borda", df)[0])
        kmax, kmed, bmed = max(kem), statistics.median(kem), statistics.median(bor)
        passed = kmax <= target and all(exact)
        ok &= passed
        print(
            f"{n:>7} {args.tasks:>5} {kmax:>10.3f}s {kmed:>10.3f}s {bmed * 1e3:>8.2f}ms {kmed / bmed:>7.0f}x"
            f" {'yes' if all(exact) else 'NO':>6}  <= {target:g}s, exact {'PASS' if passed else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
