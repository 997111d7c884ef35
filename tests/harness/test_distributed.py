"""World size is plumbing (issue #20): N data-parallel ranks take every N-th row of the same global batch and
weight their losses by their share of the global denominator, so 2 ranks (gloo on the CPU, real DDP) give
the one-process loss curve and adapter. Dropout is off, as in test_accumulation.py: 2 ranks draw 2 masks
where one process draws one."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from harness.distributed import World, denominator, init, rank_bounds, rank_rows, shutdown, world_from_env
from tests.harness.test_accumulation import STEPS, TOL, assert_same, batches, build, run


@pytest.mark.parametrize(("n", "size", "want"), [(8, 2, [(0, 4), (4, 8)]), (7, 2, [(0, 4), (4, 7)]),
                                                 (5, 3, [(0, 2), (2, 4), (4, 5)]), (8, 1, [(0, 8)])])
def test_rank_bounds_cover_the_batch_in_order(n: int, size: int, want: list[tuple[int, int]]) -> None:
    assert rank_bounds(n, World(rank=0, size=size)) == want


def test_rank_rows_trim_each_ranks_padding() -> None:
    batch = batches("decoder", n=1)[0]
    halves = [rank_rows(batch, World(rank=r, size=2)) for r in range(2)]
    assert sum(h["input_ids"].shape[0] for h in halves) == batch["input_ids"].shape[0]
    for h in halves:
        assert bool(h["attention_mask"][:, -1].any())   # no all-padding column left at the end
    assert sum(denominator(h, "generate") for h in halves) == denominator(batch, "generate")
    for r, h in enumerate(halves):   # rows r, r + 2, ...: a like share of a length-sorted batch's tokens
        width = h["input_ids"].shape[1]
        assert torch.equal(h["input_ids"], batch["input_ids"][r::2, :width])


def test_world_from_env() -> None:
    assert world_from_env({}) == World()
    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == World()
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(rank=3, size=4, local_rank=1)
    with pytest.raises(ValueError, match="outside"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = [("encoder", None), ("decoder", None), ("decoder", 2)]   # (model kind, micro-batch size)


def _rank_main(rank: int, size: int, port: int, out: str) -> None:
    """One rank: every case in turn (one spawn for all: starting the two interpreters costs more than the cases)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World(rank=rank, size=size)
    init(world, torch.device("cpu"), timeout_s=120)
    try:
        results = [run(build(kind, micro=micro, world=world), batches(kind)) for kind, micro in CASES]
        if world.main:
            torch.save(results, out)
    finally:
        shutdown(world)


def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    """2 gloo ranks (DDP) × (one pass | micro-batches of 2) against one process over the same global batches of
    8, for a classifier and a decoder with uneven lengths: the same loss curve (each rank logs the global loss)
    and the same adapter, to 1e-5."""
    out = tmp_path / "rank0.pt"
    mp.start_processes(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    for (kind, micro), got in zip(CASES, torch.load(out, weights_only=False), strict=True):
        want = run(build(kind), batches(kind))
        assert len(got[0]) == STEPS, (kind, micro)
        assert_same(got, want, TOL)
