"""Collation and length bucketing, shared by training and evaluation (both import it; it imports
neither, so there is no import circle)."""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def classify_batch(tokenizer: Any, examples: Sequence[Any], max_len: int) -> dict[str, torch.Tensor]:
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples[0].text_b is not None else None
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
    regression = isinstance(examples[0].label, float)   # STS-B: a real-valued score, MSE loss
    enc["labels"] = torch.tensor([e.label for e in examples], dtype=torch.float32 if regression else torch.long)
    return dict(enc)


def causal_lm_batch(tokenizer: Any, examples: Sequence[Any], max_len: int) -> dict[str, torch.Tensor]:
    """prompt + target + EOS; the loss sees only target tokens (prompt and padding are -100).

    Over ``max_len``, the target keeps its first tokens (at least half the window, or all of it) and
    the prompt its last ones: cutting from the right would leave rows whose every label is masked
    (a long commonsense instruction fills the window before its answer), and a batch of those has
    no loss at all (NaN)."""
    rows = []
    for e in examples:
        p_ids = tokenizer(e.prompt, add_special_tokens=False)["input_ids"]
        t_ids = tokenizer(e.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        t_keep = min(len(t_ids), max(max_len - len(p_ids), max_len // 2, 1))
        p_keep = max_len - t_keep
        p_ids, t_ids = (p_ids[len(p_ids) - p_keep:] if p_keep > 0 else []), t_ids[:t_keep]
        rows.append((p_ids + t_ids, [-100] * len(p_ids) + t_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels_t = torch.full((len(rows), width), -100, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels_t[i, : len(labels)] = torch.tensor(labels)
        attn[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attn, "labels": labels_t}


def split_batch(batch: Mapping[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Rows [i, i + size) of a collated batch, each part cut to the columns its own rows use: what
    collating those examples alone gives (padding=longest), so a micro-batch pads no more than it needs.
    The last part is smaller when size does not divide the batch."""
    mask = batch["attention_mask"]
    n, width = mask.shape
    parts = []
    for i in range(0, n, size):
        used = mask[i: i + size].any(0).nonzero()
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, width)
        parts.append({k: (v[i: i + size, lo:hi] if v.dim() == 2 and v.shape[1] == width else v[i: i + size]).contiguous()
                      for k, v in batch.items()})
    return parts


def example_length(e: Any) -> int:
    """Cheap length proxy (characters) used to bucket similar lengths into one batch."""
    return sum(len(t) for t in (e.text_a, e.text_b, e.prompt, e.target) if t)


def batch_stream(examples: Sequence[Any], batch_size: int, seed: int, *, bucket: int = 20):
    """Endless shuffled batches of similar-length examples.

    Each epoch: shuffle (seeded by seed and epoch), cut into chunks of `bucket` batches, sort each
    chunk by length, split into batches, shuffle the batch order. Padding waste drops several-fold
    (short SST-2 phrases no longer pad to the longest review) while batches stay random.
    """
    epoch = 0
    while True:
        rng = random.Random(seed * 100003 + epoch)
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        span = batch_size * max(1, bucket)
        for c in range(0, len(order), span):
            chunk = sorted(order[c: c + span], key=lambda j: example_length(examples[j]))
            batches += [chunk[i: i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield [examples[j] for j in b]
        epoch += 1
