"""harness.costs: per-step memory samples (peft's max / reserved average / reserved 99th percentile) and the
tokens evaluation processes. The CUDA readings themselves run in scripts/gpu-check.sh (tests/methods/test_cuda.py)."""
from __future__ import annotations

import mmap
import random

import numpy as np
import pytest
import torch

from harness.costs import MemoryTrace, MiB, TokenCounter, count_tokens, percentile
from tests.harness.test_accumulation import tiny_bert, tiny_llama


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentile_is_numpys_linear_rule(q: float, n: int) -> None:
    values = [random.Random(n).randrange(10**9) for _ in range(n)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_the_99th_percentile_of_a_spike_is_not_the_maximum() -> None:
    """One step's spike (an evaluation, a long batch) sits in the maximum, not in the tail a user plans for."""
    trace = MemoryTrace(device="cuda", allocated=[100 * MiB] * 199 + [900 * MiB],
                        reserved=[200 * MiB] * 199 + [1000 * MiB], at_start=50 * MiB)
    s = trace.summary(peak_allocated=950 * MiB, peak_reserved=1000 * MiB)
    assert s["allocated_max_mb"] == 950.0   # the allocator's high-water mark bounds the samples from above
    assert s["reserved_max_mb"] == 1000.0
    assert s["reserved_p99_mb"] == 200.0   # position 197.01 of 0..199: between two 200s
    assert s["reserved_avg_mb"] == pytest.approx((199 * 200 + 1000) / 200, abs=0.1)
    assert (s["at_start_mb"], s["steps_sampled"], s["device"]) == (50.0, 200, "cuda")


def test_a_cpu_trace_samples_the_resident_set_and_sees_an_allocation() -> None:
    trace = MemoryTrace.for_device(torch.device("cpu"))
    trace.sample(torch.device("cpu"))
    block = mmap.mmap(-1, 200 * MiB)
    for offset in range(0, 200 * MiB, mmap.PAGESIZE):
        block[offset] = 1
    trace.sample(torch.device("cpu"))
    block.close()
    assert trace.allocated[1] - trace.allocated[0] > 150 * MiB
    s = trace.summary()
    assert set(s) == {"device", "steps_sampled", "at_start_mb", "rss_max_mb", "rss_avg_mb", "rss_p99_mb"}
    assert s["rss_max_mb"] >= s["rss_p99_mb"] >= s["rss_avg_mb"] > 0


def test_a_trace_survives_a_checkpoint_round_trip() -> None:
    trace = MemoryTrace(device="cuda", allocated=[1, 2, 3], reserved=[4, 5, 6], at_start=0)
    again = MemoryTrace.from_state(trace.state())
    assert again == trace


def test_an_empty_trace_reports_the_peak_alone() -> None:
    s = MemoryTrace(device="cuda").summary(peak_allocated=10 * MiB)
    assert s["allocated_max_mb"] == 10.0 and s["allocated_avg_mb"] is None and s["reserved_max_mb"] is None


def test_an_encoder_forward_counts_the_mask_not_the_padding() -> None:
    model = tiny_bert()
    ids = torch.randint(1, 100, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, 6:] = 0
    mask[2, 2:] = 0
    with count_tokens(model) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        model(ids)   # no mask: every position is work done
    assert counter.total == int(mask.sum()) + 30


def test_generation_counts_the_prompts_then_one_token_per_row_per_step() -> None:
    model = tiny_llama().eval()
    ids = torch.randint(3, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0   # left padding
    new = 4
    with count_tokens(model) as counter, torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape[1] == 6 + new
    # the prefill counts the prompts' real tokens and yields the first new token; each later step feeds one
    assert counter.total == int(mask.sum()) + 2 * (new - 1)


def test_a_peft_wrapped_model_is_counted_once() -> None:
    """peft's generate and lm-eval call the transformers model inside the wrapper: that is where the hook goes,
    and the inner decoder (also a PreTrainedModel) is not counted a second time."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    ids = torch.randint(3, 100, (2, 5))
    with count_tokens(model) as counter, torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert counter.total == 10


def test_the_counter_defers_the_mask_sum() -> None:
    """Sums stay tensors until read: counting adds no device synchronisation per forward."""
    counter = TokenCounter()
    counter.hook(torch.nn.Identity(), (), {"input_ids": torch.zeros(2, 3), "attention_mask": torch.ones(2, 3)})
    assert counter._exact == 0 and len(counter._lazy) == 1
    assert counter.total == 6 and counter.total == 6
