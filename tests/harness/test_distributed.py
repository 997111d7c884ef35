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
from tests.conftest import conf_names
from tests.harness.test_accumulation import STEPS, TOL, assert_same, batches, build, run
from tests.methods.test_registry import TINY_ENCODER_CFG, method_cfg


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


def _fsdp_methods() -> list[str]:
    """Every method FSDP takes (validation refuses the rest by name: tests/harness/test_scale_config.py) that
    applies to an encoder classifier."""
    from harness.validate import fsdp_refusal
    from tests.methods.test_registry import method_cfg

    out = []
    for name in conf_names("method"):
        cfg = method_cfg(name)
        applies = (cfg.get("info") or {}).get("applies_to")
        if applies and "encoder" not in applies or fsdp_refusal(cfg):
            continue
        out.append(name)
    return out


def _fsdp_rank_main(rank: int, size: int, port: int, out: str, names: list[str], adapters: str) -> None:
    """One FSDP rank: every method in turn on the tiny encoder; then its adapter, gathered whole and saved as a
    job saves it (rank 0 writes)."""
    from harness.distributed import full_trained_state
    from harness.train import _save_adapter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World(rank=rank, size=size, parallel="fsdp")
    init(world, torch.device("cpu"), timeout_s=120)
    results: dict[str, object] = {}
    try:
        for name in names:
            try:
                st = build("encoder", method=name, world=world)
                got = run(st, batches("encoder"))
                whole = full_trained_state(st.model)
                if world.main:
                    _save_adapter(st.model, Path(adapters) / name, 0, method=method_cfg(name),
                                  model_cfg=TINY_ENCODER_CFG, state=whole)
                results[name] = got
            except Exception as exc:  # noqa: BLE001 - reported per method by the test
                results[name] = f"{type(exc).__name__}: {exc}"
        if world.main:
            torch.save(results, out)
    finally:
        shutdown(world)


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("fsdp")
    out, names = root / "rank0.pt", _fsdp_methods()
    mp.start_processes(_fsdp_rank_main, args=(2, _free_port(), str(out), names, str(root / "adapters")), nprocs=2,
                       join=True, start_method="spawn")
    return torch.load(out, weights_only=False), root / "adapters"


@pytest.mark.parametrize("name", _fsdp_methods())
def test_fsdp_two_ranks_equal_one_process_for_every_method(name: str, fsdp_runs: tuple[dict, Path]) -> None:
    """Every method FSDP takes, on the tiny encoder: 2 FSDP2 ranks (each block's parameters, gradients and
    optimizer state sharded) give the one-process loss curve and adapter to 1e-5, and the adapter, gathered
    whole, saves as a one-process job's does."""
    results, adapters = fsdp_runs
    got = results[name]
    assert not isinstance(got, str), got
    assert_same(got, run(build("encoder", method=name), batches("encoder")), TOL)
    saved = sorted(p.name for p in (adapters / name).rglob("*.safetensors"))
    if method_cfg(name)["kind"] == "full":   # full fine-tuning saves no adapter, in one process or many
        assert saved == []
    else:
        assert "classifier.safetensors" in saved and len(saved) >= 2, saved


@pytest.mark.parametrize("name", ["loldu", "tied_lora"])
def test_shard_model_names_what_fsdp_cannot_shard(name: str) -> None:
    """A method validation would refuse (info.fsdp) still fails clearly, before any step, if it reaches FSDP: a
    scalar parameter (LoLDU's sigma) or one shared by several blocks (Tied-LoRA's)."""
    from harness.distributed import shard_model

    st = build("encoder", method=name)
    with pytest.raises(ValueError, match="scalar parameters" if name == "loldu" else "shared by several"):
        shard_model(st.model, World(rank=0, size=2, parallel="fsdp"), torch.device("cpu"))
