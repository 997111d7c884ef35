"""Several processes per job (issue #20): who this process is, and the few collective steps the loop needs.

torch.distributed does the work (gloo on a CPU, nccl on a GPU); DDP averages gradients. This module only
decides, from the environment a launcher set, whether a job is one process or N ranks, and keeps the
arithmetic that makes N ranks the same experiment as one process:

- every rank draws the same global effective batch from the same seeded stream, and takes every N-th row of
  it (:func:`rank_rows`): the data order does not depend on the world size, and since a batch's rows come
  roughly sorted by length (harness.batching buckets them), striding gives each rank a like share of the
  tokens where contiguous halves would give one rank the long half and make the other wait;
- each rank's loss is weighted by its rows' share of the *global* denominator (examples, or predicted
  tokens for a causal LM) times the world size, because DDP divides the summed gradients by the world
  size: the gradient is then exactly the one-process gradient of the whole batch;
- the logged loss is the sum of the ranks' weighted losses (one all-reduce per step).

How the ranks share the model is budget.parallel (plumbing): ddp keeps a replica per rank; fsdp shards each
transformer block's parameters, gradients and optimizer state (FSDP2, :func:`shard_model`), its checkpoints and
adapter gathered whole through torch.distributed.checkpoint's state-dict API, and its every forward a collective
(``World.lockstep``: evaluation and generation run the same number of forward calls on every rank).

Environment read (torchrun and `srun` with submitit's TorchDistributedEnvironment both set these): RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Nothing set, or WORLD_SIZE=1: one process, no process
group, and every call here is a no-op.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class World:
    """This process's place in the job, and how the ranks share the model (``parallel``: ddp, fsdp)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    parallel: str = "ddp"

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the record, the checkpoints, the adapter and W&B."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def lockstep(self) -> bool:
        """Every forward is a collective (FSDP gathers each block's parameters in it): every rank must make the
        same number of forward calls, in evaluation too, or the ranks wait on each other for ever."""
        return self.distributed and self.parallel == "fsdp"


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world a launcher set up (torchrun, or srun + submitit's TorchDistributedEnvironment)."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE") or 1)
    if size <= 1:
        return World()
    rank = int(env["RANK"])
    local = int(env.get("LOCAL_RANK") or rank)
    if not 0 <= rank < size:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(rank=rank, size=size, local_rank=local)


def export_slurm_world(env: dict[str, str] | None = None) -> None:
    """Under SLURM with several tasks (launcher=slurm, hydra.launcher.tasks_per_node × nodes > 1), set the rank
    variables torch.distributed reads from SLURM's own, through submitit's TorchDistributedEnvironment (the
    first node's host as MASTER_ADDR, a port derived from the job id). A no-op outside such a step, or where a
    launcher (torchrun) set them already."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env or int(env.get("SLURM_NTASKS") or 1) <= 1 or "SLURM_PROCID" not in env:
        return
    from submitit.helpers import TorchDistributedEnvironment

    tde = TorchDistributedEnvironment()
    env.update(RANK=str(tde.rank), WORLD_SIZE=str(tde.world_size), LOCAL_RANK=str(tde.local_rank),
               LOCAL_WORLD_SIZE=str(tde.local_world_size), MASTER_ADDR=tde.master_addr,
               MASTER_PORT=str(tde.master_port))


def init(world: World, device: torch.device, *, timeout_s: float = 600.0) -> None:
    """Join the job's process group: nccl for CUDA devices, gloo otherwise. A no-op for one process."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "rank": world.rank, "world_size": world.size,
                              "timeout": dt.timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)


def shutdown(world: World) -> None:
    import torch.distributed as dist

    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """A rank's GPU is its local rank's (one process per GPU); a CPU is shared."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def rank_bounds(n: int, world: World) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) of an n-row global batch, one per rank: contiguous, sizes differing by at most one
    (the first n % size ranks get one more). A rank may get no rows when n < size."""
    base, extra = divmod(n, world.size)
    bounds, lo = [], 0
    for r in range(world.size):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def rank_rows(batch: Mapping[str, torch.Tensor], world: World) -> dict[str, torch.Tensor]:
    """This rank's rows of a collated global batch (rows rank, rank + N, ...), cut to the columns they use
    (padding=longest)."""
    from harness.batching import split_batch

    if not world.distributed:
        return dict(batch)
    idx = torch.arange(world.rank, int(batch["input_ids"].shape[0]), world.size)
    if len(idx) == 0:
        return {k: v[:0] for k, v in batch.items()}
    return split_batch({k: v[idx] for k, v in batch.items()}, len(idx))[0]


def denominator(batch: Mapping[str, torch.Tensor], protocol: str) -> int:
    """What the loss of a batch is a mean over: its examples (classify) or its predicted tokens (a causal LM,
    labels shifted by one). The same count harness.train.loss_shares uses."""
    if protocol == "classify":
        return int(batch["input_ids"].shape[0])
    return int((batch["labels"][:, 1:] != -100).sum())


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum over ranks (a copy; one process: the value itself)."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def agree_step(pending: int | None, due: bool, world: World, device: torch.device) -> tuple[int | None, bool]:
    """What every rank does after a step, decided together in one tiny all-reduce: the signal any rank caught
    (the largest number when several did), and whether a checkpoint is due (the clock is time-based, and the
    ranks' clocks differ). All ranks then checkpoint at the same step and stop together."""
    if not world.distributed:
        return pending, due
    import torch.distributed as dist

    t = torch.tensor([float(pending or 0), 1.0 if due else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0].item()) or None, bool(t[1].item() > 0)


def gather_objects(items: Sequence[Any], world: World) -> list[list[Any]]:
    """Every rank's list, in rank order (rank 0 first)."""
    if not world.distributed:
        return [list(items)]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, list(items))
    return out


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's value, on every rank (a decision only rank 0 may take: skip, busy, run)."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------------- FSDP2
def shard_model(model: torch.nn.Module, world: World, device: torch.device) -> None:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``), in place: each transformer block the model names in
    ``_no_split_modules`` (BertLayer, LlamaDecoderLayer, ...) is one unit whose parameters, gradients and
    optimizer state are sharded across the ranks and gathered for its forward and backward; the root takes the
    rest (embeddings, head). Frozen and trainable parameters share a unit: FSDP2 shards per parameter.

    Gradients are reduce-scattered as a mean over the ranks, as DDP's all-reduce is, so the loop's loss weights
    (share of the global batch × world size) give the one-process gradient under either."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if m is not model and type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"budget.parallel=fsdp: {type(model).__name__} names no transformer blocks "
                         "(_no_split_modules) to shard")
    scalars = [n for n, p in model.named_parameters() if p.dim() == 0]
    owner: dict[int, int] = {}
    shared = sorted({n for i, b in enumerate(blocks) for n, p in b.named_parameters()
                     if owner.setdefault(id(p), i) != i})
    if scalars or shared:   # what fully_shard refuses, or shards in one block while another reads it
        raise ValueError("budget.parallel=fsdp: " + "; ".join(
            ([f"fully_shard cannot shard scalar parameters ({', '.join(scalars[:3])})"] if scalars else [])
            + ([f"parameters shared by several transformer blocks ({', '.join(shared[:3])})"] if shared else []))
            + "; use budget.parallel=ddp")
    mesh = init_device_mesh(device.type, (world.size,))
    for block in reversed(blocks):   # innermost first: a unit must be sharded before the one holding it
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _options(**kw: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kw)


def full_trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters and the buffers of a sharded model, whole, on rank 0's CPU (empty on the other
    ranks): torch.distributed.checkpoint's state-dict API gathers each. A collective: every rank calls it. The
    frozen base is left out, so this stays the adapter's size even for a 70B base."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(full_state_dict=True, cpu_offload=True,
                                                        ignore_frozen_params=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state, whole and keyed by parameter name, on rank 0's CPU. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(full_state_dict=True, cpu_offload=True))


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: Mapping[str, Any],
                    optim_state: Mapping[str, Any]) -> None:
    """Each rank takes its shards of a whole state (:func:`full_trained_state`, :func:`full_optimizer_state`)
    that every rank read from the checkpoint. A collective."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, dict(model_state), options=_options(full_state_dict=True, strict=False))
    set_optimizer_state_dict(model, optimizer, dict(optim_state), options=_options(full_state_dict=True))


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """FSDP's no_sync: reduce gradients only in a step's last micro-batch (they accumulate unsharded till then)."""
    model.set_requires_gradient_sync(sync)


def plain(value: Any) -> Any:
    """A DTensor (a sharded parameter, a gradient norm) as the whole tensor; anything else as it is."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def local(value: Any) -> Any:
    """A DTensor as this rank's shard (no communication); anything else as it is."""
    from torch.distributed.tensor import DTensor

    return value.to_local() if isinstance(value, DTensor) else value


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when it is true on any (one tiny all-reduce): e.g. whether some rank still generates."""
    if not world.distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
