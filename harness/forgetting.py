"""Forgetting as peft's method comparison measures it (method_comparison/MetaMathQA/run.py): the mean per-token
cross-entropy of held-out general text under the trained model, minus the same under the base model. The base is
the trained model with its adapter disabled (peft's ``disable_adapter``): the base weights are frozen, so this is
the base as it was before training, without keeping a second copy of it. Positive: the adapter made the model
worse at general text."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def mean_token_ce(model: Any, tokenizer: Any, texts: Sequence[str], device: torch.device, *, max_len: int) -> tuple[float, int]:
    """(mean cross-entropy per predicted token over every text, tokens predicted); each text one sequence,
    truncated to `max_len` tokens."""
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_len, return_tensors="pt")["input_ids"].to(device)
        if ids.shape[1] < 2:
            continue
        logits = model(input_ids=ids).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                 reduction="sum")
        total += float(loss)
        count += ids.shape[1] - 1
    return (total / count if count else float("nan")), count


def measure(model: Any, tokenizer: Any, texts: Sequence[str], device: torch.device, *, max_len: int) -> dict[str, Any]:
    """{value, after, before, tokens, texts}; value None (and why) when the model has no adapter to disable."""
    from methods.peft_native import peft_model_of

    try:
        peft_model = peft_model_of(model)
    except TypeError:
        return {"value": None, "reason": "not a peft adapter: no base to compare with (disable_adapter)",
                "texts": len(texts)}
    was_training = peft_model.training
    peft_model.eval()
    try:
        after, tokens = mean_token_ce(peft_model, tokenizer, texts, device, max_len=max_len)
        with peft_model.disable_adapter():
            before, _ = mean_token_ce(peft_model, tokenizer, texts, device, max_len=max_len)
    finally:
        peft_model.train(was_training)
    return {"value": after - before, "after": after, "before": before, "tokens": tokens, "texts": len(texts)}
