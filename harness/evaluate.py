"""Evaluation per protocol: classify (argmax of the head) and generate (greedy, then parse)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

N_SAMPLES = 5   # a few predictions kept in the record so a reader can see what the model did


@dataclass
class EvalResult:
    metrics: dict[str, float]
    n_examples: int
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)


def eval_subset(examples: Sequence[Any], spec: Any) -> list[Any]:
    """The first N examples of the reported split (file order: the same for every method)."""
    key = "eval_size" if spec.task["protocol"] == "classify" else "eval_size_generate"
    cap = spec.budget.get(key)
    return list(examples[: int(cap)]) if cap else list(examples)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Any], spec: Any,
             device: torch.device) -> EvalResult:
    from tasks.metrics import compute_metrics

    t0 = time.perf_counter()
    subset = eval_subset(examples, spec)
    was_training = model.training
    model.eval()
    if spec.task["protocol"] == "classify":
        preds, refs, samples = _classify(model, tokenizer, subset, spec, device)
    else:
        preds, refs, samples = _generate(model, tokenizer, subset, spec, device)
    metrics = compute_metrics(spec.task, preds, refs)
    if was_training:
        model.train()
    return EvalResult(metrics={k: float(v) for k, v in metrics.items()}, n_examples=len(subset),
                      seconds=time.perf_counter() - t0, samples=samples)


def _length_order(texts: Sequence[str]) -> list[int]:
    """Batch similar lengths together: far less padding, same predictions."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def _classify(model, tokenizer, subset, spec, device):
    from harness.train import classify_batch

    max_len = spec.max_len
    bs = int(spec.budget["eval_batch_size"])
    order = _length_order([(e.text_a or "") + (e.text_b or "") for e in subset])
    preds = [0] * len(subset)
    for i in range(0, len(order), bs):
        idx = order[i: i + bs]
        batch = classify_batch(tokenizer, [subset[j] for j in idx], max_len)
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()})
        for j, p in zip(idx, logits.argmax(-1).tolist()):
            preds[j] = int(p)
    refs = [int(e.label) for e in subset]
    samples = [{"input": e.text_a if e.text_b is None else [e.text_a, e.text_b], "prediction": p,
                "reference": r} for e, p, r in list(zip(subset, preds, refs))[:N_SAMPLES]]
    return preds, refs, samples


def _generate(model, tokenizer, subset, spec, device):
    from tasks import parse_answer

    bs = int(spec.budget["eval_batch_size"])
    # The task's own length, capped by the budget's; 64 only when neither says.
    caps = [int(c) for c in (spec.budget.get("max_new_tokens"), spec.task.get("max_new_tokens")) if c]
    max_new = min(caps) if caps else 64
    order = _length_order([e.prompt for e in subset])
    outputs = [""] * len(subset)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"   # decoder-only generation continues from the right edge
    try:
        for i in range(0, len(order), bs):
            idx = order[i: i + bs]
            enc = tokenizer([subset[j].prompt for j in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, text in zip(idx, texts):
                outputs[j] = text
    finally:
        tokenizer.padding_side = side
    preds = [parse_answer(spec.task, text) for text in outputs]
    refs = [e.answer for e in subset]
    samples = [{"prompt": e.prompt[-300:], "generation": g, "parsed": p, "reference": r}
               for e, g, p, r in list(zip(subset, outputs, preds, refs))[:N_SAMPLES]]
    return preds, refs, samples
