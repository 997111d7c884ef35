"""What a job costs on its device beyond wall time: memory sampled at every optimizer step, and the
tokens the model processed while evaluating.

Below train and evaluate (both use it), above nothing but torch.

Memory follows peft's method comparison (method_comparison/MetaMathQA, run.py), so its figures and ours
can sit in one table: after every step the device's *allocated* and *reserved* memory are read, and the
record keeps their maximum, mean and 99th percentile. peft reports `accelerator_memory_max` (its peak
allocated), `accelerator_memory_reserved_avg` and `accelerator_memory_reserved_99th`; ours are the same
quantities in MiB, as absolute values (peft subtracts the memory in use before training; we record that
as ``at_start_mb`` so either view can be had). The peak is the allocator's own high-water mark
(`torch.cuda.max_memory_allocated`), which sees the inside of a step that an after-step sample misses.

On a CPU there is no separate accelerator memory: the samples are the process's resident set (RSS),
under ``rss_*``, so a CPU board still shows the average and the tail, not only the peak.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MiB = 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident memory now (/proc/self/statm: one read, no parsing of status)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):   # not Linux: the peak is all we can offer
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class MemoryTrace:
    """Per-step memory samples of one job (bytes), carried across attempts in the checkpoint so that a
    resumed job's average and tail cover all of its steps."""

    device: str                                   # "cuda" or "cpu"
    allocated: list[int] = field(default_factory=list)   # cuda: memory_allocated; cpu: RSS
    reserved: list[int] = field(default_factory=list)    # cuda: memory_reserved; cpu: unused
    at_start: int | None = None                   # in use when training began (peft's accelerator_memory_init)

    @classmethod
    def for_device(cls, device: torch.device) -> MemoryTrace:
        trace = cls(device="cuda" if device.type == "cuda" else "cpu")
        trace.at_start = trace._now(device)[0]
        return trace

    def _now(self, device: torch.device) -> tuple[int, int | None]:
        if self.device == "cuda":   # the allocator's counters: no device sync
            return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        return rss_bytes(), None

    def sample(self, device: torch.device) -> None:
        allocated, reserved = self._now(device)
        self.allocated.append(int(allocated))
        if reserved is not None:
            self.reserved.append(int(reserved))

    def state(self) -> dict[str, Any]:
        return {"device": self.device, "allocated": self.allocated, "reserved": self.reserved,
                "at_start": self.at_start}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MemoryTrace:
        return cls(device=state["device"], allocated=[int(v) for v in state["allocated"]],
                   reserved=[int(v) for v in state["reserved"]], at_start=state.get("at_start"))

    def summary(self, *, peak_allocated: int | None = None, peak_reserved: int | None = None) -> dict[str, Any]:
        """The record's ``train.memory``: MiB, one decimal. ``peak_*``: the job's high-water marks (the CUDA
        allocator's, or the process's peak RSS off a GPU), which bound the samples from above: the maximum
        covers the inside of a step, model loading and evaluation too; without them the samples' stands in."""
        out: dict[str, Any] = {"device": self.device, "steps_sampled": len(self.allocated),
                               "at_start_mb": _mib(self.at_start)}
        if self.device == "cuda":
            out.update(_stats("allocated", self.allocated, peak_allocated))
            out.update(_stats("reserved", self.reserved, peak_reserved))
        else:
            out.update(_stats("rss", self.allocated, peak_allocated))
        return out


def _mib(v: float | None) -> float | None:
    return None if v is None else round(float(v) / MiB, 1)


def percentile(values: list[int], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default), so a
    99th percentile over 100 steps is not simply the maximum."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _stats(name: str, values: list[int], peak: int | None) -> dict[str, float | None]:
    if not values:
        return {f"{name}_max_mb": _mib(peak), f"{name}_avg_mb": None, f"{name}_p99_mb": None}
    top = max(max(values), peak or 0)
    return {f"{name}_max_mb": _mib(top), f"{name}_avg_mb": _mib(sum(values) / len(values)),
            f"{name}_p99_mb": _mib(percentile(values, 99))}


def accelerator_info(device: torch.device) -> dict[str, Any] | None:
    """The GPU a job ran on and how many this process sees (None off a GPU)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "count": torch.cuda.device_count(), "memory_mb": round(props.total_memory / MiB),
            "capability": f"{props.major}.{props.minor}"}


class TokenCounter:
    """Tokens the model processed in its forward passes (evaluation's throughput).

    A forward with an attention mask as long as its input counts the mask's ones (padding is not work
    a user asked for); a cached decoding step (one new token per row, the mask covering the whole
    sequence) counts one token per row; a forward with no mask (lm-eval's log-likelihood batches)
    counts its whole input. Mask sums stay on the device until read, so counting adds no sync."""

    def __init__(self) -> None:
        self._exact = 0
        self._lazy: list[torch.Tensor] = []

    def hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        if ids is None:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                return
            shape = tuple(embeds.shape[:2])
        else:
            shape = tuple(ids.shape)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape:
            self._lazy.append(mask.sum())
        else:
            self._exact += math.prod(shape)

    @property
    def total(self) -> int:
        if self._lazy:
            self._exact += int(torch.stack([t.to(self._lazy[0].device) for t in self._lazy]).sum())
            self._lazy = []
        return self._exact


def _outermost_hf(model: nn.Module) -> nn.Module:
    """The module every protocol's forward passes go through: the outermost transformers model (peft's
    generate and lm-eval call it, not the peft wrapper), or the model itself."""
    try:
        from transformers import PreTrainedModel
    except ImportError:   # pragma: no cover
        return model
    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), model)


@contextmanager
def count_tokens(model: nn.Module) -> Iterator[TokenCounter]:
    counter = TokenCounter()
    handle = _outermost_hf(model).register_forward_pre_hook(counter.hook, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()
