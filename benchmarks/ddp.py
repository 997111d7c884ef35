"""Data-parallel throughput on the CPU: 2 ranks × 1 thread against 1 process × 1 thread, same effective batch.

Run:  python benchmarks/ddp.py [--steps 30] [--warmup 5] [--repeats 2] [--batch 32] [HYDRA_OVERRIDE ...]

Issue #20 bar: two gloo ranks, each on one core, process ≥ 1.6× the examples per second of one process on one
core, at the same effective batch (each rank takes half of every batch). The added per-step time of DDP
(gradient all-reduce, the loss all-reduce, the step's agreement) is reported as the 2-rank step time minus
half the one-process step time: what the second core does not buy back.

Both sides run the harness's own `train_step` on the same real SST-2 batches (MiniLM + LoRA by default), each
world in fresh processes (spawned), alternating 1, 2, 1, 2 so that drift on a shared machine hits both.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THROUGHPUT_TARGET = 1.6
DEFAULT_OVERRIDES = ("method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "logger=none",
                     "device=cpu", "threads=1")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, size: int, port: int, job_file: str, out: str) -> None:
    """One rank: build the harness's step state, wrap it for DDP when size > 1, time the steps."""
    import torch

    from benchmarks.train_overhead import HarnessLoop, quiet
    from harness.distributed import World, barrier, init, shutdown
    from harness.models import load
    from harness.train import data_parallel, train_step

    quiet()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    job = json.loads(Path(job_file).read_text())
    world = World(rank=rank, size=size)
    init(world, torch.device("cpu"), timeout_s=300)
    try:
        from harness.spec import JobSpec

        fields = dict(job["spec"])
        fields["cache_dir"] = Path(fields["cache_dir"])
        spec = JobSpec(**fields)
        st = HarnessLoop.build(spec, load(spec.model, spec.cache_dir), []).state
        st.world, st.ddp = world, data_parallel(st.model, world, torch.device("cpu"))
        batches = torch.load(job["batches"], weights_only=True)
        times = []
        for i, batch in enumerate(batches):
            if i == job["warmup"]:
                barrier(world)
            t = time.perf_counter()
            train_step(st, batch)
            times.append(time.perf_counter() - t)
        if world.main:
            Path(out).write_text(json.dumps(times[job["warmup"]:]))
    finally:
        shutdown(world)


def run_world(size: int, job_file: Path, tmp: Path) -> list[float]:
    import torch.multiprocessing as mp

    out = tmp / f"times-{size}.json"
    mp.start_processes(worker, args=(size, _port(), str(job_file), str(out)), nprocs=size, join=True,
                       start_method="spawn")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each world, alternating (default 2)")
    ap.add_argument("--batch", type=int, default=32, help="effective batch (default 32)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the bar is missed")
    args = ap.parse_args(argv)

    import torch

    from benchmarks.train_overhead import compose_spec, quiet, spec_fields
    from harness.train import batch_stream, classify_batch
    from tasks import load_task

    quiet()
    spec = compose_spec([*DEFAULT_OVERRIDES, f"budget.batch_size={args.batch}", *args.overrides], 1)
    from harness.models import load

    tokenizer = load(spec.model, spec.cache_dir).tokenizer
    stream = batch_stream(list(load_task(spec.task, spec.data_dir).train), args.batch, spec.seed)
    batches = [classify_batch(tokenizer, next(stream), spec.max_len) for _ in range(args.warmup + args.steps)]
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="peftbench-ddp-") as tmp_s:
        tmp = Path(tmp_s)
        torch.save(batches, tmp / "batches.pt")
        job_file = tmp / "job.json"
        job_file.write_text(json.dumps({"spec": {k: (str(v) if k == "cache_dir" else v)
                                                 for k, v in spec_fields(spec).items()},
                                        "batches": str(tmp / "batches.pt"), "warmup": args.warmup}))
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for size in (1, 2):
                times[size] += run_world(size, job_file, tmp)
        wall = time.perf_counter() - t0
    one, two = statistics.median(times[1]), statistics.median(times[2])
    ratio = one / two
    print(f"ddp: model={spec.model['name']} method={spec.method['name']} task={spec.task['name']} "
          f"batch={args.batch} (2 ranks: {args.batch // 2} each) steps={args.steps}×{args.repeats} "
          f"torch={torch.__version__}; {wall:.0f} s")
    print(f"  1 process × 1 thread   median step {one * 1e3:8.1f} ms   {args.batch / one:7.1f} examples/s")
    print(f"  2 ranks × 1 thread     median step {two * 1e3:8.1f} ms   {args.batch / two:7.1f} examples/s")
    print(f"  added per-step time of DDP (2-rank step − half the 1-process step): {(two - one / 2) * 1e3:.1f} ms "
          f"({(two - one / 2) / two:.0%} of a 2-rank step)")
    ok = ratio >= THROUGHPUT_TARGET
    print(f"throughput_ratio 2 ranks / 1 process = {ratio:.2f} (target >= {THROUGHPUT_TARGET}): "
          f"{'PASS' if ok else 'MISS'}")
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
