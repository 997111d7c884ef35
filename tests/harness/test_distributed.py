"""World size is plumbing (issue #20): N data-parallel ranks take every N-th row of the same global batch and
weight their losses by their share of the global denominator, so 2 ranks (gloo on the CPU, real DDP) give
the one-process loss curve and adapter. Dropout is off, as in test_accumulation.py: 2 ranks draw 2 masks
where one process draws one."""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.distributed import World, denominator, init, rank_bounds, rank_rows, shutdown, world_from_env
from tests import conftest
from tests.conftest import compose_dict, conf_names
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


ROOT = Path(__file__).resolve().parents[2]

# A rank's interpreter starts here: importing this module imports tests.methods.test_registry, which composes every
# method's config through Hydra at import (~13 s of CPU per interpreter, most of a rank's own work). The ranks are
# given this process's compositions first, so their imports look them up instead of composing them again.
_RANK = """
import pickle, sys
import tests.conftest as conftest
with open(sys.argv[1], "rb") as fh:
    composed, fn, args = pickle.load(fh)
compose = conftest._compose_cached
conftest._compose_cached = lambda overrides: composed[overrides] if overrides in composed else compose(overrides)
from tests.harness import test_distributed
getattr(test_distributed, fn)(int(sys.argv[2]), *args)
"""


def _spawn(fn: str, *args: object, tmp: Path, nprocs: int = 2) -> None:
    """``fn(rank, nprocs, port, *args)`` in ``nprocs`` fresh interpreters (a rank per process, as a job's ranks
    are), each started with this process's method configs; a rank that fails ends the others and the test."""
    assert callable(conftest._compose_cached)   # what _RANK stands in for
    job = tmp / f"{fn}.pkl"
    composed = {key: compose_dict(key) for key in (("logger=none", f"method={m}") for m in conf_names("method"))}
    job.write_bytes(pickle.dumps((composed, fn, (nprocs, _free_port(), *args))))
    logs = [tmp / f"{fn}.rank{r}.log" for r in range(nprocs)]
    procs = []
    for r, log in enumerate(logs):
        with open(log, "w") as fh:
            procs.append(subprocess.Popen([sys.executable, "-c", _RANK, str(job), str(r)], cwd=ROOT, stdout=fh,
                                          stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 900
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.returncode for p in procs):   # one failed: the others would wait in a collective
            break
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log.read_text()[-4000:]


CASES = [("encoder", None), ("decoder", None), ("decoder", 2)]   # (model kind, micro-batch size)


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


def _rank_main(rank: int, size: int, port: int, out: str, names: list[str], adapters: str) -> None:
    """One rank: every DDP case in turn, then every method in turn under FSDP on the tiny encoder, with its
    adapter gathered whole and saved as a job saves it (rank 0 writes). One start for all: starting the two
    interpreters costs more than all the cases. A case that raises is reported by its own test."""
    from harness.distributed import full_trained_state
    from harness.train import _save_adapter

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ddp, fsdp = World(rank=rank, size=size), World(rank=rank, size=size, parallel="fsdp")
    init(ddp, torch.device("cpu"), timeout_s=120)
    results: dict[str, dict[object, object]] = {"ddp": {}, "fsdp": {}}
    try:
        for kind, micro in CASES:
            try:
                results["ddp"][kind, micro] = run(build(kind, micro=micro, world=ddp), batches(kind))
            except Exception as exc:  # noqa: BLE001 - reported by the test
                results["ddp"][kind, micro] = f"{type(exc).__name__}: {exc}"
        for name in names:
            try:
                st = build("encoder", method=name, world=fsdp)
                got = run(st, batches("encoder"))
                whole = full_trained_state(st.model)
                if fsdp.main:
                    _save_adapter(st.model, Path(adapters) / name, 0, method=method_cfg(name),
                                  model_cfg=TINY_ENCODER_CFG, state=whole)
                results["fsdp"][name] = got
            except Exception as exc:  # noqa: BLE001 - reported per method by the test
                results["fsdp"][name] = f"{type(exc).__name__}: {exc}"
        if ddp.main:
            torch.save(results, out)
    finally:
        shutdown(ddp)


@pytest.fixture(scope="module")
def rank_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """2 gloo ranks' results of every DDP case and every FSDP method, and the FSDP adapters rank 0 saved."""
    root = tmp_path_factory.mktemp("ranks")
    out = root / "rank0.pt"
    _spawn("_rank_main", str(out), _fsdp_methods(), str(root / "adapters"), tmp=root)
    return torch.load(out, weights_only=False), root / "adapters"


def test_two_ranks_equal_one_process(rank_runs: tuple[dict, Path]) -> None:
    """2 gloo ranks (DDP) × (one pass | micro-batches of 2) against one process over the same global batches of
    8, for a classifier and a decoder with uneven lengths: the same loss curve (each rank logs the global loss)
    and the same adapter, to 1e-5."""
    results = rank_runs[0]["ddp"]
    assert list(results) == CASES
    for (kind, micro), got in results.items():
        assert not isinstance(got, str), (kind, micro, got)
        want = run(build(kind), batches(kind))
        assert len(got[0]) == STEPS, (kind, micro)
        assert_same(got, want, TOL)


@pytest.mark.parametrize("name", _fsdp_methods())
def test_fsdp_two_ranks_equal_one_process_for_every_method(name: str, rank_runs: tuple[dict, Path]) -> None:
    """Every method FSDP takes, on the tiny encoder: 2 FSDP2 ranks (each block's parameters, gradients and
    optimizer state sharded) give the one-process loss curve and adapter to 1e-5, and the adapter, gathered
    whole, saves as a one-process job's does."""
    results, adapters = rank_runs
    got = results["fsdp"][name]
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
