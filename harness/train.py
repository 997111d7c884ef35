"""The training loop, top to bottom: model → method → data → train under budget → evaluate.

Own loop, no HF Trainer (as peft's method_comparison does): every step is visible, and the budget
(steps or tokens, wall clock, memory) is enforced here, identically for every method.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.batching import batch_stream, causal_lm_batch, classify_batch, split_batch
from harness.costs import MemoryTrace, accelerator_info
from harness.distributed import (
    World,
    agree_step,
    all_reduce_sum,
    denominator,
    device_for,
    full_optimizer_state,
    full_trained_state,
    gather_objects,
    load_full_state,
    local,
    plain,
    rank_rows,
    set_gradient_sync,
    shard_model,
    world_from_env,
)
from harness.distributed import init as join_world
from harness.evaluate import evaluate
from harness.models import LoadedModel, load, logical_numel
from harness.preempt import CheckpointClock, Interrupted, SignalGuard, slurm_job
from harness.spec import ConfigError, JobSpec
from harness.trial_report import report_trial

LogFn = Callable[[Mapping[str, float], int], None]
LOSS_CURVE_POINTS = 200
OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)   # torch.OutOfMemoryError: 2.5+
HALF = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class BudgetExceeded(RuntimeError):
    """A hard budget (memory cap) was broken: the job fails rather than report an unfair result."""


class EncoderClassifier(nn.Module):
    """Encoder + pooling + linear head. The head is always trainable, whatever the method.

    Pooling is per model (mean for sentence encoders such as MiniLM, CLS for RoBERTa-style models)
    because the pretraining objective decides which representation is informative.

    A regression head's bias starts at the mean training target (`target_mean`). From a bias of 0 the
    first steps of STS-B (scores in [0, 5], mean 2.7) chase that offset, the MSE starts near 9, and
    Adam overshoots: in the zoo campaign a loss spike at step 7 left LoRA, PiSSA, DoRA, ... near zero
    Pearson on one seed and near 0.7 on the other. Started at the mean, the head fits the variation
    from the first step (LoRA 0.70 on that seed), for every method alike.
    """

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int, pooling: str,
                 target_mean: float | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(hidden, num_labels)
        if target_mean is not None:
            with torch.no_grad():
                self.classifier.bias.fill_(float(target_mean))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if hidden.dtype != self.classifier.weight.dtype:   # a half-precision base: pool and classify in float32
            hidden = hidden.to(self.classifier.weight.dtype)
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        return self.classifier(self.dropout(pooled))


@dataclass
class TrainResult:
    """What the loop measured; dispatch turns it into the record's train/eval blocks."""

    steps: int = 0
    tokens: int = 0
    examples: int = 0
    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    peak_accelerator_mb: float | None = None
    memory: dict[str, Any] = field(default_factory=dict)   # per-step samples summarised (harness.costs)
    accelerator: dict[str, Any] | None = None               # the GPU's name, count and memory; None off one
    ranks: list[dict[str, Any]] = field(default_factory=list)   # N ranks: each one's host and peak memory
    gpus: int = 0                                            # GPUs the job held: one per rank on CUDA, else 0
    trainable_params: int = 0
    total_params: int = 0
    adapter_bytes: int = 0
    stopped_by: str = "steps"
    loss_curve: list[list[float]] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    final_eval: dict[str, Any] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    resumed_from_step: int | None = None
    started_at: str | None = None       # the first attempt's start
    attempts: list[dict[str, Any]] = field(default_factory=list)   # one entry per attempt, costs included
    model_source: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)   # plumbing that ran: the record's meta.execution
    data: Any = None
    device: str = "cpu"


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:   # pragma: no cover
        pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_rss_mb() -> float:
    """Peak resident memory of this process.

    VmHWM first: ru_maxrss is inherited across fork/exec, so a job started by a bigger process would
    report its parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count (VmHWM) from its current RSS, so a job run after another
    in the same process (launcher=debug runs a whole sweep in one) reports its own peak. Linux >= 4.0;
    False where the kernel does not offer it (the peak then still covers earlier jobs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def count_params(model: nn.Module) -> tuple[int, int, int]:
    """(trainable, total, trainable bytes); shared tensors counted once."""
    seen: set[int] = set()
    trainable = total = nbytes = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += logical_numel(p)   # a 4-bit weight's numel counts packed bytes, not its values
        if p.requires_grad:
            trainable += p.numel()
            nbytes += p.numel() * p.element_size()
    return trainable, total, nbytes


def build_model(spec: JobSpec, loaded: LoadedModel, num_labels: int | None, *,
                batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
                device: torch.device | None = None, target_mean: float | None = None) -> nn.Module:
    """Apply the method to the backbone; for classify tasks put the head on top (a regression head's
    bias at `target_mean`, the mean training target: see EncoderClassifier).

    A method with a `prepare` hook (CorDA, LoRA-GA) first calibrates the bare backbone on training
    `batches` (CPU batches, moved to `device`), with the loss training will use: so for a classify task
    the head is built first and the prepared, adapted backbone goes under it."""
    import methods

    impl = methods.resolve(spec.method)
    protocol = spec.task["protocol"]

    def with_head(backbone: nn.Module) -> nn.Module:
        hidden = int(loaded.backbone.config.hidden_size)
        head = EncoderClassifier(backbone, hidden, int(num_labels or 2), spec.model["pooling"], target_mean)
        if spec.model.get("dropout") is not None:   # the head's dropout too
            head.dropout.p = float(spec.model["dropout"])
        return head

    if impl.prepare is None:
        backbone = impl.apply(loaded.backbone, spec.method, spec.model)
        return with_head(backbone) if protocol == "classify" else backbone
    if batches is None:
        raise ValueError(f"method {spec.method['name']!r} prepares the backbone on training data: "
                         "build_model needs batches")
    device = device or torch.device("cpu")
    model = (with_head(loaded.backbone) if protocol == "classify" else loaded.backbone).to(device)
    impl.prepare(loaded.backbone, spec.method, spec.model,
                 ({k: v.to(device) for k, v in b.items()} for b in batches),
                 lambda batch: loss_of(model, batch, protocol))
    for p in model.parameters():   # calibration gradients (LoRA-GA's, the head's) are not a training step
        p.grad = None
    backbone = impl.apply(loaded.backbone, spec.method, spec.model)
    if protocol == "classify":
        model.encoder = backbone
        return model
    return backbone


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then linear or cosine decay to 0 (or constant)."""

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return fn


def make_optimizer(model: nn.Module, trainable: list[nn.Parameter], method_cfg: Mapping[str, Any],
                   impl: Any) -> torch.optim.Optimizer:
    """The method's own optimizer (LoRA+, GaLore, ...) if it has one, else AdamW on what trains."""
    if impl.optimizer is not None:
        return impl.optimizer(model, method_cfg)
    optim_cfg = method_cfg.get("optim") or {}
    return torch.optim.AdamW(trainable, lr=float(optim_cfg["lr"]),
                             weight_decay=float(optim_cfg.get("weight_decay") or 0.0))


def make_scheduler(optimizer: torch.optim.Optimizer, budget: Mapping[str, Any], total_steps: int) -> Any:
    warmup = round(float(budget["warmup_ratio"]) * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(budget["schedule"], warmup, total_steps))


def loss_of(model: nn.Module, batch: Mapping[str, torch.Tensor], protocol: str) -> torch.Tensor:
    """Cross-entropy for classes, MSE for a real-valued target (STS-B), the LM loss for decoders."""
    if protocol == "classify":
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        labels = batch["labels"]
        if labels.is_floating_point():
            return nn.functional.mse_loss(model(**inputs).squeeze(-1), labels)
        return nn.functional.cross_entropy(model(**inputs), labels)
    return model(**batch).loss


# ------------------------------------------------------------------------------------------ step
@dataclass
class StepState:
    """What one optimizer step needs and updates; train() owns one, the overhead benchmark too.

    `micro_batch_size` splits the effective batch (budget.batch_size) into micro-batches whose gradients
    add up to the whole batch's (None: one pass); `auto_micro` halves it after an out-of-memory error
    and retries the same step. `amp_dtype` runs the forward under torch.autocast; `scaler` (a
    torch.amp.GradScaler) scales the loss when float16 is involved."""

    model: nn.Module
    optimizer: Any
    scheduler: Any
    trainable: list[nn.Parameter]
    protocol: str
    device: torch.device
    total_steps: int
    grad_clip: float | None = None
    callback: Callable[[Any, int, int], None] | None = None
    regularizer: Callable[[Any], torch.Tensor] | None = None
    mem_cap_mb: float | None = None
    log: LogFn = field(default=lambda metrics, step: None)
    micro_batch_size: int | None = None
    auto_micro: bool = False
    amp_dtype: torch.dtype | None = None
    scaler: Any = None
    step: int = 0
    tokens: int = 0
    examples: int = 0
    losses: list[list[float]] = field(default_factory=list)
    micro_changes: list[list[int]] = field(default_factory=list)   # [step, size]: each halving by auto
    memory: MemoryTrace | None = None   # per-step memory samples (harness.costs); None: not sampled
    world: World = field(default_factory=World)   # this process's rank among the job's (harness.distributed)
    ddp: nn.Module | None = None        # the DistributedDataParallel wrapper the forward goes through (N ranks)


def loss_shares(parts: Sequence[Mapping[str, torch.Tensor]], protocol: str) -> list[float]:
    """Each micro-batch's share of the effective batch's loss denominator: its examples (classify), or
    its predicted target tokens (a causal LM's mean is over those, labels shifted by one).

    A micro-batch's mean loss times its share, summed, is the whole batch's mean: the mean of
    micro-batch means would weight a token of a short micro-batch more (the Hugging Face gradient
    accumulation bug of 2024)."""
    if protocol == "classify":
        counts = [int(p["input_ids"].shape[0]) for p in parts]
    else:
        counts = [int((p["labels"][:, 1:] != -100).sum()) for p in parts]
    total = sum(counts)
    if total == 0:   # nothing to predict anywhere: the loss is NaN either way and the step says so
        return [1.0 / len(parts)] * len(parts)
    return [c / total for c in counts]


def _backward(st: StepState, loss: torch.Tensor) -> None:
    (st.scaler.scale(loss) if st.scaler is not None else loss).backward()


def _autocast(st: StepState) -> contextlib.AbstractContextManager:
    if st.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=st.device.type, dtype=st.amp_dtype)


def accumulate(st: StepState, cpu_batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Forward and backward over the effective batch, in micro-batches; returns the batch's loss (detached).

    With N ranks (st.world) this process takes every N-th row of the global batch, and each micro-batch's
    loss is weighted by its share of the *global* denominator times N, since DDP divides the summed gradients
    by N: the gradient is the one-process gradient of the whole batch, and the returned loss (summed over the
    ranks, / N) the whole batch's mean. Gradients are synchronised once, in the last micro-batch's backward.

    A method's own penalty (KaSA) is added once per step, to the last micro-batch: the task loss alone
    is returned (and logged)."""
    world = st.world
    local = rank_rows(cpu_batch, world) if world.distributed else cpu_batch
    n_ex = int(local["input_ids"].shape[0])
    size = st.micro_batch_size
    parts = split_batch(local, size) if size and size < n_ex else [local]
    if world.distributed:
        whole = denominator(cpu_batch, st.protocol)
        shares = [denominator(p, st.protocol) * world.size / whole if whole else 1.0 / len(parts) for p in parts]
    else:
        shares = loss_shares(parts, st.protocol) if len(parts) > 1 else [1.0]
    forward = st.ddp if st.ddp is not None else st.model
    total: torch.Tensor | None = None
    for i, (part, share) in enumerate(zip(parts, shares)):
        batch = {k: v.to(st.device) for k, v in part.items()}
        last = i == len(parts) - 1
        sync = st.ddp.no_sync() if st.ddp is not None and not last else contextlib.nullcontext()
        if world.lockstep:
            set_gradient_sync(st.model, last)
        with sync:
            with _autocast(st):
                loss = loss_of(forward, batch, st.protocol)
            if share != 1.0:
                loss = loss * share
            _backward(st, loss + st.regularizer(st.model) if last and st.regularizer is not None else loss)
        total = loss.detach() if total is None else total + loss.detach()
    if world.distributed:
        total = all_reduce_sum(total, world) / world.size
    return total


def _halve_micro_batch(st: StepState, n_ex: int) -> None:
    """After an out-of-memory error: drop the step's partial gradients, free the cache, halve."""
    st.optimizer.zero_grad(set_to_none=True)
    for p in st.trainable:
        p.grad = None
    if st.device.type == "cuda":
        torch.cuda.empty_cache()
    st.micro_batch_size = max(1, (st.micro_batch_size or n_ex) // 2)
    st.micro_changes.append([st.step, st.micro_batch_size])
    print(f"[peftbench] out of memory at step {st.step}: micro-batch {st.micro_batch_size}, retrying the step",
          file=sys.stderr, flush=True)


def train_step(st: StepState, cpu_batch: Mapping[str, torch.Tensor]) -> float:
    """One optimizer step on one (effective) batch; returns the loss. The harness's whole per-step cost."""
    n_tok = int(cpu_batch["attention_mask"].sum())   # counted on the CPU copy: no device sync
    n_ex = int(cpu_batch["input_ids"].shape[0])
    t0 = time.perf_counter()
    rng = _rng_snapshot(st.device) if st.auto_micro else None
    while True:
        try:
            loss = accumulate(st, cpu_batch)
            break
        except OutOfMemory:
            if not st.auto_micro or (st.micro_batch_size or n_ex) <= 1:
                raise
        # outside the except block, so the failed pass's activations (held by its traceback) are freed;
        # the retry draws the same dropout masks the failed pass did
        _halve_micro_batch(st, n_ex)
        _rng_restore(rng, st.device)
    if st.scaler is not None:
        st.scaler.unscale_(st.optimizer)   # clipping and a method's callback see the true gradients
    grad_norm = torch.nn.utils.clip_grad_norm_(st.trainable, st.grad_clip) if st.grad_clip else None
    if st.scaler is not None:
        st.scaler.step(st.optimizer)   # skipped when the scaled gradients overflowed
        st.scaler.update()
    else:
        st.optimizer.step()
    st.scheduler.step()
    if st.callback is not None:   # before zero_grad: AdaLoRA's importance scores read this step's gradients
        st.callback(st.model, st.step, st.total_steps)
    st.optimizer.zero_grad(set_to_none=True)
    st.step += 1
    st.tokens += n_tok
    st.examples += n_ex
    loss_v = float(loss)   # the one sync per step: the finite check and the log need it
    dt = time.perf_counter() - t0
    if not math.isfinite(loss_v):
        raise FloatingPointError(f"loss is {loss_v} at step {st.step}")
    st.losses.append([st.step, loss_v])
    metrics = {"train/loss": loss_v, "train/lr": st.scheduler.get_last_lr()[0],
               "train/tokens_per_s": n_tok / max(dt, 1e-9), "train/tokens": st.tokens}
    if grad_norm is not None:
        metrics["train/grad_norm"] = float(plain(grad_norm))
    if st.memory is not None:   # after the step: its gradients freed, its optimizer state in place
        st.memory.sample(st.device)
    st.log(metrics, st.step)
    if st.mem_cap_mb and _peak_mb(st.device) > float(st.mem_cap_mb):
        raise BudgetExceeded(f"peak memory {_peak_mb(st.device):.0f} MB > budget.memory_cap_mb={st.mem_cap_mb}")
    return loss_v


def _rng_snapshot(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _rng_restore(state: Any, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


# ------------------------------------------------------------------------------------ checkpoint
def _trained_state(model: nn.Module, optimizer: Any) -> dict[str, torch.Tensor]:
    """What a resumed run cannot rebuild: every parameter training may have changed (what trains now, and
    whatever the optimizer owns: a method whose trainable set moves, such as LISA, keeps frozen-for-now
    layers in its optimizer), plus a custom adapter's persistent buffers (a step counter such as
    SingLoRA's ramp; factors set by a data-dependent init)."""
    from methods._adapters import adapter_state

    owned = {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad or id(p) in owned}
    state.update({n: t.detach().cpu().clone() for n, t in adapter_state(model, training_state=True).items()
                  if n not in state})
    return state


def optimizer_params(optimizer: Any) -> list[nn.Parameter]:
    """The parameters an optimizer may update (gradient clipping must see all of them)."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def rng_state() -> dict[str, Any]:
    """Every RNG a step may draw from (dropout, methods that sample ranks or layers), as plain types."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}
    try:
        import numpy as np

        name, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    except ImportError:   # pragma: no cover
        pass
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():   # dropout on the GPU resumes too
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy") is not None:
        import numpy as np

        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def _tuples(obj: Any) -> Any:
    """random.setstate wants the tuples getstate gave; a checkpoint round trip may hand back lists."""
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list | tuple) else obj


def save_checkpoint(path: Path, st: StepState, *, eval_history: list[dict], attempts: list[dict],
                    rank_rngs: list[dict[str, Any]] | None = None,
                    sharded: tuple[dict[str, Any], dict[str, Any]] | None = None) -> None:
    """Everything to resume bit-identically: trained weights and which of them train now, optimizer,
    schedule, every RNG, step/tokens/examples (the data position is the step count) and the cost of the
    attempts so far.
    Atomic (temp file + fsync + rename): a kill mid-write leaves the previous checkpoint intact.

    ``sharded``: an FSDP model's (trained state, optimizer state), gathered whole by every rank beforehand
    (harness.distributed.full_trained_state): one file, read back by every rank, resumable on any world size."""
    from harness.records import atomic_write

    model_state, optim_state = sharded or (_trained_state(st.model, st.optimizer), st.optimizer.state_dict())
    state = {"model": model_state, "optimizer": optim_state, "sharded": sharded is not None,
             "requires_grad": [n for n, p in st.model.named_parameters() if p.requires_grad],
             "scheduler": st.scheduler.state_dict(), "step": st.step, "tokens": st.tokens,
             "examples": st.examples, "loss_curve": st.losses, "eval_history": eval_history,
             "rng": rng_state(), "attempts": attempts}
    if st.scaler is not None:   # float16's loss scale: a resumed run scales as the uninterrupted one would
        state["scaler"] = st.scaler.state_dict()
    if rank_rngs is not None:   # N ranks: each drew its own dropout masks, so each resumes its own generators
        state["rng_ranks"] = rank_rngs
    if st.memory is not None:   # a resumed job's memory average and tail cover every step
        state["memory_trace"] = st.memory.state()
    if st.auto_micro:   # the micro-batch auto found: a resumed attempt does not run out of memory again
        state["micro_batch"] = {"size": st.micro_batch_size, "changes": st.micro_changes}
    atomic_write(path, lambda fh: torch.save(state, fh), fsync=True)


def load_checkpoint(path: Path, st: StepState) -> dict[str, Any]:
    """Restore a checkpoint into the step state (model, optimizer, schedule, counters, RNG)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if bool(state.get("sharded")) != st.world.lockstep:
        raise RuntimeError(f"checkpoint {path} was written {'with' if state.get('sharded') else 'without'} "
                           f"FSDP (budget.parallel) and cannot resume {'with' if st.world.lockstep else 'without'} it")
    if st.world.lockstep:   # every rank read the whole state; each keeps its shards
        load_full_state(st.model, st.optimizer, state["model"], state["optimizer"])
    else:
        missing = st.model.load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint {path} does not match the model: {missing.unexpected_keys[:5]}")
        if "requires_grad" in state:   # which parameters train now (LISA's sampled layers): part of the state
            live = set(state["requires_grad"])
            for n, p in st.model.named_parameters():
                p.requires_grad_(n in live)
        st.optimizer.load_state_dict(state["optimizer"])
    st.scheduler.load_state_dict(state["scheduler"])
    st.step, st.tokens, st.examples = int(state["step"]), int(state["tokens"]), int(state.get("examples", 0))
    st.losses = [list(p) for p in state["loss_curve"]]
    if st.scaler is not None and "scaler" in state:
        st.scaler.load_state_dict(state["scaler"])
    if state.get("memory_trace"):
        st.memory = MemoryTrace.from_state(state["memory_trace"])
    if st.auto_micro and state.get("micro_batch"):
        st.micro_batch_size = int(state["micro_batch"]["size"])
        st.micro_changes = [list(c) for c in state["micro_batch"]["changes"]]
    if st.world.distributed and len(state.get("rng_ranks") or []) == st.world.size:
        set_rng_state(state["rng_ranks"][st.world.rank])
    elif "rng" in state:
        set_rng_state(state["rng"])
    else:   # checkpoints written before every RNG was saved
        torch.set_rng_state(state["torch_rng"])
    return state


def attempt_costs(attempt: dict[str, Any], *, t_start: float, train_s: float, step: int, ended_by: str,
                  device: torch.device) -> dict[str, Any]:
    """One attempt's line in the record: where it resumed, where it ended, and what it cost."""
    return {**attempt, "ended_at": _utc_now(), "ended_by": ended_by, "end_step": step,
            "train_time_s": round(train_s, 3), "wall_time_s": round(time.perf_counter() - t_start, 3),
            "peak_memory_mb": round(peak_rss_mb(), 1),
            "peak_accelerator_mb": round(_peak_mb(device), 1) if device.type == "cuda" else None,
            "peak_accelerator_reserved_mb": (round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
                                             if device.type == "cuda" else None)}


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ loop
def train(spec: JobSpec, *, log: LogFn | None = None, progress: bool | None = None,
          guard: SignalGuard | None = None) -> TrainResult:
    """Run one job's training and evaluation. Raises on failure; dispatch records it.

    `guard` (installed by dispatch.execute for the whole job) holds a caught USR2/SIGTERM: the loop
    then checkpoints at the next step boundary and raises Interrupted."""
    from tasks import load_task

    t_start, started_at = time.perf_counter(), _utc_now()
    log = log or (lambda metrics, step: None)
    guard = guard or SignalGuard()   # not installed: nothing ever sets it
    budget, task = spec.budget, spec.task
    protocol = task["protocol"]
    threads = spec.threads or os.environ.get("SLURM_CPUS_PER_TASK")
    if threads:
        torch.set_num_threads(int(threads))   # never oversubscribe the cores the launcher gave us
    set_seed(spec.seed)
    # N ranks under torchrun or srun (harness.distributed), sharing the model as budget.parallel says
    world = replace(world_from_env(), parallel=budget.get("parallel") or "ddp")
    device = device_for(world, pick_device(spec.device))
    amp_dtype, scaler = precision(spec, device)   # before any compute: float16 off a GPU is a config error
    if world.distributed and int(budget["batch_size"]) % world.size:
        raise ConfigError([(f"budget.batch_size: {budget['batch_size']} is not a multiple of the world size "
                           f"{world.size}: each rank takes an equal share of the effective batch")])
    join_world(world, device)
    # peaks are per process, and launcher=debug runs a whole sweep in one: count this job's alone
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    res = TrainResult(device=str(device))

    # 1. data first: a task whose data is nowhere fails before a model is loaded
    data = load_task(task, spec.data_dir)
    res.data = data

    # 2. model and method
    loaded = load(spec.model, spec.cache_dir)
    res.model_source = loaded.source
    tokenizer = loaded.tokenizer
    from harness.capacity import solve_capacity

    method, res.capacity = solve_capacity(spec, loaded)
    if method is not spec.method:
        spec = replace(spec, method=method)
    train_examples = list(data.train)
    if budget.get("train_size"):
        train_examples = random.Random(spec.seed).sample(train_examples,
                                                          min(len(train_examples), budget["train_size"]))
    max_len = spec.max_len
    make_batch = classify_batch if protocol == "classify" else causal_lm_batch
    batch_size = int(budget["batch_size"])
    if len(train_examples) < batch_size:
        raise ValueError(f"task {task['name']}: {len(train_examples)} training examples < batch size {batch_size}")

    set_seed(spec.seed)   # the head and the adapters start from the same RNG state for every method
    target_mean = (sum(float(e.label) for e in train_examples) / len(train_examples)
                   if protocol == "classify" and task.get("regression") else None)
    model = build_model(spec, loaded, task.get("num_labels"), device=device, target_mean=target_mean,
                        batches=(make_batch(tokenizer, b, max_len)
                                 for b in batch_stream(train_examples, batch_size, spec.seed))).to(device)
    res.trainable_params, res.total_params, res.adapter_bytes = count_params(model)

    # 3. optimizer and schedule
    import methods

    impl = methods.resolve(spec.method)
    if impl.init is not None:   # data-dependent init (EVA, LoRA-GA): batches on the model's device; it may
        # replace adapter parameters (EVA moves rank between layers), so it runs before the optimizer exists
        impl.init(model, ({k: v.to(device) for k, v in make_batch(tokenizer, b, max_len).items()}
                          for b in batch_stream(train_examples, batch_size, spec.seed)))
        res.trainable_params, res.total_params, res.adapter_bytes = count_params(model)
    if budget.get("gradient_checkpointing"):
        enable_gradient_checkpointing(model)
    if world.lockstep:   # FSDP2: sharded in place, trained through the model itself
        shard_model(model, world, device)
    ddp = data_parallel(model, world, device) if not world.lockstep else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, trainable, spec.method, impl)
    trainable = optimizer_params(optimizer)   # a method's own optimizer may own more (LISA's frozen-for-now layers)
    if scaler is not None and any(p.dtype == torch.float16 for p in trainable):
        raise ConfigError([(f"model.dtype: float16 with method {spec.method['name']!r}, which trains float16 "
                            "tensors: the loss scaler float16 needs cannot unscale their gradients; use bfloat16")])
    total_steps = _planned_steps(budget, train_examples, tokenizer, make_batch, max_len, batch_size)
    scheduler = make_scheduler(optimizer, budget, total_steps)

    # 4. resume: a requeued, preempted or rerun job continues its own checkpoint (force or not)
    st = StepState(model=model, optimizer=optimizer, scheduler=scheduler, trainable=trainable,
                   protocol=protocol, device=device, total_steps=total_steps,
                   grad_clip=float(budget["grad_clip"]) if budget.get("grad_clip") else None,
                   callback=impl.callback, regularizer=impl.regularizer, mem_cap_mb=budget.get("memory_cap_mb"),
                   log=log, micro_batch_size=micro_batch(budget), auto_micro=budget.get("micro_batch_size") == "auto",
                   amp_dtype=amp_dtype, scaler=scaler, memory=MemoryTrace.for_device(device), world=world, ddp=ddp)
    res.accelerator = accelerator_info(device)
    res.gpus = world.size if device.type == "cuda" else 0
    ckpt = spec.run_dir / "checkpoint.pt"
    attempt: dict[str, Any] = {"started_at": started_at, "host": socket.gethostname(),
                               "slurm_job": slurm_job(), "resumed_from_step": None}
    prior: list[dict[str, Any]] = []
    if ckpt.exists():
        state = load_checkpoint(ckpt, st)
        res.eval_history, prior = list(state["eval_history"]), list(state.get("attempts") or [])
        res.resumed_from_step = attempt["resumed_from_step"] = st.step
    stream = batch_stream(train_examples, batch_size, spec.seed)
    for _ in range(st.step):   # skip batches already consumed, so a resumed run sees the same data
        next(stream)

    # 5. train under budget; a caught USR2/SIGTERM checkpoints at the next step boundary and stops
    time_limit = float(budget.get("time_limit_s") or math.inf)
    eval_every = int(budget.get("eval_every") or 0)
    clock = CheckpointClock(budget.get("checkpoint_every"))
    train_s0 = sum(a["train_time_s"] for a in prior)   # the time limit covers every attempt

    def checkpoint(ended_by: str) -> list[dict[str, Any]]:
        costs = attempt_costs(attempt, t_start=t_start, train_s=time.perf_counter() - t_train, step=st.step,
                              ended_by=ended_by, device=device)
        # the ranks hold the same weights and optimizer state: one writes, all read on resume
        rngs = [r for rank in gather_objects([rng_state()], world) for r in rank] if world.distributed else None
        # FSDP: each rank holds shards; gathered whole (on every rank, for rank 0) before rank 0 writes them
        sharded = (full_trained_state(model), full_optimizer_state(model, optimizer)) if world.lockstep else None
        if world.main:
            save_checkpoint(ckpt, st, eval_history=res.eval_history, attempts=[*prior, costs], rank_rngs=rngs,
                            sharded=sharded)
        clock.saved()
        return [*prior, costs]

    show = sys.stderr.isatty() if progress is None else progress
    bar = _progress(total_steps, st.step, show)
    model.train()
    t_train = time.perf_counter()
    print(f"[peftbench] training {spec.label} from step {st.step} of ~{total_steps}", file=sys.stderr, flush=True)
    while True:
        if budget.get("steps") and st.step >= int(budget["steps"]):
            res.stopped_by = "steps"
            break
        if budget.get("tokens") and st.tokens >= int(budget["tokens"]):
            res.stopped_by = "tokens"
            break
        if train_s0 + time.perf_counter() - t_train > time_limit:
            res.stopped_by = "time_limit"
            break
        loss_v = train_step(st, make_batch(tokenizer, next(stream), max_len))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.3f}")
        if eval_every and st.step % eval_every == 0:
            with _autocast(st):   # evaluated as it trains: budget.amp is part of the experiment
                # the task's monitor set (peft_mc: 50 GSM8K train questions), else the primary set: for curves
                ev = evaluate(model, tokenizer, [data.monitor] if data.monitor is not None else data.evals[:1], spec,
                              device, world=world)
            res.eval_history.append({"step": st.step, **ev.metrics})
            log({f"eval/{k}": v for k, v in ev.metrics.items()}, st.step)
            checkpoint("running")
            report_trial(spec.trial, st.step, ev.metrics)   # a search trial: may raise TrialPruned
        # decided together: one rank's signal stops all at this step; a checkpoint due on one rank's clock is due on all
        pending, due = agree_step(guard.pending, clock.due(st.step), world, device)
        if pending is not None:
            attempts = checkpoint(signal.Signals(pending).name)
            raise Interrupted(pending, st.step, previous=guard.previous.get(signal.SIGUSR2), attempts=attempts)
        if due:
            checkpoint("running")
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t_train
    res.steps, res.tokens, res.examples = st.step, st.tokens, st.examples
    res.loss_curve = subsample(st.losses, LOSS_CURVE_POINTS)
    res.execution = execution_info(st, model, budget)
    step = st.step

    # a signal caught during the last step: checkpoint at the end of training and stop, as at any step
    pending, _ = agree_step(guard.pending, False, world, device)
    if pending is not None:
        attempts = checkpoint(signal.Signals(pending).name)
        raise Interrupted(pending, st.step, previous=guard.previous.get(signal.SIGUSR2), attempts=attempts)
    if slurm_job() is not None and st.step > (res.resumed_from_step or 0):
        # on a cluster the final evaluation may be cut by a time limit or a preemption's grace period:
        # with this checkpoint a requeued attempt only evaluates again, it does not retrain
        checkpoint("trained")

    # 6. evaluate (a signal caught from here on waits: the evaluation finishes and the record is written;
    # if the cluster kills the job first, the requeued attempt resumes from the checkpoint above)
    with _autocast(st):
        ev = evaluate(model, tokenizer, data.evals, spec, device, world=world)
    res.final_eval = {"metrics": ev.metrics, "n_examples": ev.n_examples, "samples": ev.samples,
                      "eval_time_s": ev.seconds, "sets": ev.sets,
                      "tokens": ev.tokens}
    res.eval_history.append({"step": step, **ev.metrics})
    log({f"eval/{k}": v for k, v in ev.metrics.items()}, step)
    if data.general_text:   # forgetting as peft measures it: general text's cross-entropy, adapter on minus off
        from harness.forgetting import measure

        with _autocast(st):
            res.final_eval["forgetting"] = measure(model, tokenizer, data.general_text, device,
                                                   max_len=int(spec.budget["max_seq_len"]))
        log({"eval/forgetting": res.final_eval["forgetting"]["value"]}, step)
    if impl.eval_variants is not None:   # the same trained model in other forms (DyLoRA: at every rank < r)
        with _autocast(st):
            res.final_eval["variants"] = evaluate_variants(impl.eval_variants(model, spec.method), model,
                                                           tokenizer, data.evals, spec, device, log=log, step=step)

    # 7. adapter: save what the method trained (small for PEFT), so results can be reused
    whole = full_trained_state(model) if world.lockstep else None   # FSDP: gathered by every rank
    if world.main:
        res.adapter_bytes = _save_adapter(model, spec.run_dir / "adapter", res.adapter_bytes, method=spec.method,
                                          model_cfg=spec.model, state=whole)

    # 8. costs over every attempt: an interrupted run must not look cheaper than it was
    res.attempts = [*prior, attempt_costs(attempt, t_start=t_start, train_s=train_s, step=step,
                                          ended_by="finished", device=device)]
    res.started_at = res.attempts[0]["started_at"]
    res.train_time_s = train_s + sum(a["train_time_s"] for a in prior)
    res.wall_time_s = time.perf_counter() - t_start + sum(a["wall_time_s"] for a in prior)
    res.peak_memory_mb = max(a["peak_memory_mb"] for a in res.attempts)
    if device.type == "cuda":
        res.peak_accelerator_mb = max(a.get("peak_accelerator_mb") or 0.0 for a in res.attempts)
    # the high-water marks bound the per-step samples from above, over every attempt
    peaks = ((max(a.get("peak_accelerator_mb") or 0.0 for a in res.attempts),
              max(a.get("peak_accelerator_reserved_mb") or 0.0 for a in res.attempts))
             if st.memory.device == "cuda" else (res.peak_memory_mb, None))
    res.memory = st.memory.summary(peak_allocated=int(peaks[0] * 2**20),
                                   peak_reserved=int(peaks[1] * 2**20) if peaks[1] is not None else None)
    if world.distributed:   # every rank's peak: the job's memory cost is the largest
        peaks = gather_objects([{"rank": world.rank, "host": socket.gethostname(), "peak_memory_mb": res.peak_memory_mb,
                                 "peak_accelerator_mb": res.peak_accelerator_mb}], world)
        res.ranks = [p for rank in peaks for p in rank]
        res.peak_memory_mb = max(p["peak_memory_mb"] for p in res.ranks)
        if device.type == "cuda":
            res.peak_accelerator_mb = max(p["peak_accelerator_mb"] or 0.0 for p in res.ranks)
    if world.main and ckpt.exists():
        ckpt.unlink()   # finished: the record is the result, the checkpoint was only for resuming
    return res


def evaluate_variants(variants: Sequence[tuple[str, Any]], model: nn.Module, tokenizer: Any, sets: Sequence[Any],
                      spec: JobSpec, device: torch.device, *, log: LogFn, step: int) -> dict[str, dict[str, Any]]:
    """Evaluate the model once inside each variant's context (MethodImpl.eval_variants), on the same sets as the
    primary evaluation: name -> {metrics, n_examples, eval_time_s[, subtasks]} (metrics of the primary set)."""
    out: dict[str, dict[str, Any]] = {}
    for name, context in variants:
        with context:
            ev = evaluate(model, tokenizer, sets, spec, device)
        out[name] = {"metrics": ev.metrics, "n_examples": ev.n_examples, "eval_time_s": ev.seconds}
        if len(ev.sets) > 1:
            out[name]["subtasks"] = {s.name: s.metrics for s in ev.sets}
        log({f"eval/{name}/{k}": v for k, v in ev.metrics.items()}, step)
    return out


def precision(spec: JobSpec, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """(autocast dtype, loss scaler) for budget.amp and model.dtype.

    The frozen base is loaded in model.dtype (harness.models); what trains stays float32: peft's
    autocast_adapter_dtype upcasts its tuner layers, methods/_adapters.py builds custom adapters in float32
    on a half base, and the classify head is float32. Full-parameter methods (those whose catalog entry
    says they train the base) train the base weights themselves, so they train in model.dtype; peft's
    modules that are not tuner layers (prompt gates, LayerNorm copies) keep it too (the record's
    meta.execution lists the trainable dtypes). float16 anywhere needs a loss scaler, and a GPU."""
    amp = spec.budget.get("amp")
    half16 = [f for f, v in (("budget.amp", amp), ("model.dtype", spec.model.get("dtype"))) if v in ("float16", "fp16")]
    if half16 and device.type != "cuda":
        raise ConfigError([f"{f}: float16 on device {device}: it needs a CUDA device; on a CPU use bfloat16"
                           for f in half16])
    scaler = torch.amp.GradScaler(device.type) if half16 else None
    return (HALF[amp] if amp else None), scaler


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module | None:
    """The DistributedDataParallel wrapper N ranks train through (None for one process). DDP broadcasts rank 0's
    weights at construction (every rank built the same seeded model anyway) and averages gradients in the
    backward; the loop keeps the bare module for everything else (callbacks, checkpoints, evaluation)."""
    if not world.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def micro_batch(budget: Mapping[str, Any]) -> int | None:
    """The micro-batch a step starts with: budget.micro_batch_size, the whole batch for auto (halved on
    out-of-memory errors), None (one pass) when unset or equal to the batch."""
    micro = budget.get("micro_batch_size")
    batch = int(budget["batch_size"])
    if micro in (None, "auto") or int(micro) >= batch:
        return None
    return int(micro)


def _hf_model(model: nn.Module) -> Any:
    """The outermost transformers model inside `model` (under a peft wrapper or the classify head)."""
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass instead of keeping them.

    Non-reentrant checkpointing (use_reentrant=False): gradients reach adapters inside a block even when
    the block's input does not require grad (a frozen embedding), and the recomputation replays the
    same dropout masks, so results equal a run without it (tests/harness/test_accumulation.py).
    transformers also hooks the input embeddings to require grad, as peft models need with the
    reentrant variant."""
    hf = _hf_model(model)
    if hf is None or not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"budget.gradient_checkpointing: {type(hf or model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):   # transformers 5's name
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def execution_info(st: StepState, model: nn.Module, budget: Mapping[str, Any]) -> dict[str, Any]:
    """How the job ran where that does not change the result: the record's meta.execution."""
    batch = int(budget["batch_size"])
    used = st.micro_batch_size or batch
    hf = _hf_model(model)
    dtypes: dict[str, int] = {}
    for p in model.parameters():
        if p.requires_grad:
            key = str(p.dtype).removeprefix("torch.")
            dtypes[key] = dtypes.get(key, 0) + p.numel()
    world = st.world
    per_rank = batch // world.size
    info = {"batch_size": batch, "micro_batch_size": min(used, per_rank),
            "accumulation_steps": -(-per_rank // min(used, per_rank)), "world_size": world.size,
            "parallel": world.parallel if world.distributed else None, "nodes": int(os.environ.get("GROUP_WORLD_SIZE")
                                                                             or os.environ.get("SLURM_NNODES") or 1),
            # a rank per GPU: a node's GPUs are its ranks there (torchrun, srun and nproc_per_job set LOCAL_WORLD_SIZE)
            "gpus_per_node": int(os.environ.get("LOCAL_WORLD_SIZE") or 1) if st.device.type == "cuda" else 0,
            "micro_batch_requested": budget.get("micro_batch_size"),
            "gradient_checkpointing": bool(budget.get("gradient_checkpointing")),
            "attn_implementation": getattr(getattr(hf, "config", None), "_attn_implementation", None),
            "loss_scaler": st.scaler is not None, "trainable_dtypes": dtypes}
    if st.auto_micro:
        info["micro_batch_changes"] = st.micro_changes
    return info


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def _planned_steps(budget: Mapping[str, Any], examples: Sequence[Any], tokenizer: Any,
                   make_batch: Callable, max_len: int, batch_size: int) -> int:
    """Schedule horizon: the step budget, or the steps a token budget buys (mean tokens of a
    sample of the training set), whichever is smaller."""
    horizons = [int(budget["steps"])] if budget.get("steps") else []
    if budget.get("tokens"):
        sample = [examples[i] for i in range(0, len(examples), max(1, len(examples) // 256))][:256]
        per_example = float(make_batch(tokenizer, sample, max_len)["attention_mask"].sum()) / len(sample)
        horizons.append(max(1, math.ceil(int(budget["tokens"]) / (per_example * batch_size))))
    return min(horizons)


def subsample(points: list[list[float]], n: int) -> list[list[float]]:
    """At most n points, evenly spaced, always keeping the first and the last."""
    if len(points) <= n:
        return points
    idx = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in idx]


def _save_adapter(model: nn.Module, out_dir: Path, trainable_bytes: int, *,
                  method: Mapping[str, Any] | None = None, model_cfg: Mapping[str, Any] | None = None,
                  state: Mapping[str, torch.Tensor] | None = None) -> int:
    """Size on disk of the trained parameters. PEFT adapters are saved in peft's format, custom adapters
    (methods/_adapters.py) in peftbench's (safetensors + the method's config); full FT is only measured.
    ``state``: the trained tensors, whole (an FSDP model's own are shards), keyed as ``model.state_dict()``."""
    from methods._adapters import has_adapters
    from methods._adapters import save as save_custom

    encoder = getattr(model, "encoder", model)
    prefix = "encoder." if encoder is not model else ""

    def part(pre: str) -> dict[str, torch.Tensor] | None:
        return None if state is None else {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}

    if hasattr(encoder, "save_pretrained") and hasattr(encoder, "peft_config"):
        if state is not None:   # a frozen adapter tensor is not gathered: refuse rather than save a partial adapter
            from peft import get_peft_model_state_dict

            # the model's own tensors as this rank's shards: peft >= 0.22 gathers DTensors in
            # get_peft_model_state_dict, a collective that rank 0 alone (here) would wait on forever
            own = {k: local(v) for k, v in encoder.state_dict().items()}
            absent = sorted(set(get_peft_model_state_dict(encoder, state_dict=own)) -
                            set(get_peft_model_state_dict(encoder, state_dict=part(prefix))))
            if absent:
                raise KeyError(f"adapter tensors missing from the gathered state: {absent[:5]}")
        encoder.save_pretrained(out_dir, state_dict=part(prefix))
    elif has_adapters(encoder) and method is not None and model_cfg is not None:
        save_custom(encoder, out_dir, method, model_cfg, state=part(prefix))
    else:
        return trainable_bytes
    if isinstance(model, EncoderClassifier):
        from safetensors.torch import save_file

        head = part("classifier.") or model.classifier.state_dict()
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, out_dir / "classifier.safetensors")
    return sum(p.stat().st_size for p in out_dir.rglob("*.safetensors"))


def _progress(total: int, start: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)
