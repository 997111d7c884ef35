"""Collation shared by training and evaluation."""
from __future__ import annotations

import pytest

from harness.batching import causal_lm_batch
from tasks import Example


class CharTokenizer:
    """One token per character: lengths are easy to reason about."""

    eos_token_id = 1
    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


@pytest.mark.parametrize(("prompt", "target", "max_len", "kept_prompt", "kept_target"), [
    ("abcd", "xy", 16, "abcd", "xy"),          # fits: unchanged (target + EOS)
    ("a" * 30, "xy", 16, "a" * 13, "xy"),      # long prompt: its end is kept, the whole answer trains
    ("abcd", "x" * 30, 16, "abcd", "x" * 12),  # long answer: the prompt stays, the answer is cut
    ("a" * 30, "x" * 30, 16, "a" * 8, "x" * 8),  # both long: half the window each
])
def test_truncation_always_keeps_target_tokens(prompt: str, target: str, max_len: int,
                                               kept_prompt: str, kept_target: str) -> None:
    batch = causal_lm_batch(CharTokenizer(), [Example(prompt=prompt, target=target)], max_len)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    eos = [1] if len(kept_target) == len(target) else []
    assert ids == [ord(c) for c in kept_prompt + kept_target] + eos
    assert labels == [-100] * len(kept_prompt) + [ord(c) for c in kept_target] + eos
    assert len(ids) <= max_len and any(v != -100 for v in labels)
