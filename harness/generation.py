"""Batched greedy generation for the `generate` protocol (and the eval-throughput benchmark).

Why a loop of our own around ``model.generate`` rather than one call per prompt: batching is where
the throughput is, and three details keep batched outputs equal to one-prompt-at-a-time greedy ones:

* left padding (a decoder continues from the right edge); padding is asked of the tokenizer per
  call (``padding_side=``), so the caller's tokenizer is never left in another state;
* batches of similar token length (longest first, so a memory error shows up on the first batch),
  returned in input order;
* ``add_special_tokens=False``, as training tokenizes the prompt (``harness.train.causal_lm_batch``).

Stop strings. A row is finished at EOS or as soon as its *generated* text contains a stop string,
and a batch ends when every row is finished, whichever string each row hit. The check looks only
at generated tokens: transformers' ``stop_strings=`` also matches a stop string that straddles the
prompt's end (prompt "...\\n" + first token "\\n" matches "\\n\\n"), which would end a row before
its text contains the stop string at all. It is also slower (measured with SmolLM2, batch 8, stops
"Question:" and "\\n\\n", one CPU thread): ~100 ms to build its per-vocabulary tables on every
``generate`` call and ~200 us per step, against ~90 us per step for the decode-the-tail check
below; both are small next to a forward pass (tens of ms), so the semantics decided.
Returned texts are cut at the first stop string, as lm-eval's ``generate_until`` cuts them.

Finished rows leave the batch. ``model.generate`` keeps computing a row that hit EOS or a stop
string until the whole batch is done, so one long answer makes every short one pay for its length.
For a causal LM with a standard KV cache, :func:`_greedy_shrinking` decodes step by step itself
and drops finished rows from the batch and from the cache (``DynamicCache.batch_select_indices``):
the same forward calls as ``generate`` (prefill, then one token a step, positions from the
attention mask), on fewer rows. Models that manage their own cache (peft's prompt learning:
prefix/prompt tuning inject past key values) keep the ``generate`` path.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any (non-empty) stop string."""
    hits = [pos for pos in (text.find(s) for s in stop if s) if pos != -1]
    return text[:min(hits)] if hits else text


class StopOnStrings(StoppingCriteria):
    """Per-row stop on any of ``stop`` in the generated tokens (never the prompt's).

    Each step decodes only the last few generated tokens of each row: a stop string of n UTF-8
    bytes spans at most n tokens (every token carries at least one byte), and a row that matched
    stays finished, so a window of n (+1 for slack) tokens catches each string in the step that
    completes it.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int, batch: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_width = prompt_width
        self.window = max((len(s.encode("utf-8")) for s in self.stop), default=0) + 1
        self.done = [False] * batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        rows = [i for i, d in enumerate(self.done) if not d]
        if rows and self.stop:
            start = max(self.prompt_width, input_ids.shape[1] - self.window)
            tails = self.tokenizer.batch_decode(input_ids[rows, start:], skip_special_tokens=True)
            for i, tail in zip(rows, tails):
                self.done[i] = any(s in tail for s in self.stop)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def length_sorted(lengths: Sequence[int], keys: Sequence[str]) -> list[int]:
    """Indices longest first, ties by text: lm-eval's ``generate_until`` order, so both form the
    same batches (same padding, same numerics) when the benchmark compares them."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], keys[i]))


@torch.no_grad()
def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                   batch_size: int, device: torch.device, stop: Sequence[str] = (), lockstep: Any = None) -> list[str]:
    """Greedy continuations of ``prompts`` (input order), special tokens dropped, cut at ``stop``.

    The model is used as it is (train/eval mode is the caller's business: evaluation sets eval).
    ``lockstep`` (a harness.distributed.World of FSDP ranks, each with as many prompts): every forward is a
    collective, so a batch ends when it ends on every rank, and a rank that is done joins the others' calls.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    order = length_sorted([len(x) for x in ids], prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs = [""] * len(prompts)
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[j] for j in idx]}, padding=True, padding_side="left",
                            return_tensors="pt").to(device)
        width = enc["input_ids"].shape[1]
        if _can_shrink(model):
            new_ids = _greedy_shrinking(model, tokenizer, enc["input_ids"], enc["attention_mask"],
                                        max_new_tokens=max_new_tokens, stop=stop, lockstep=lockstep)
        else:
            criteria = StoppingCriteriaList([StopOnStrings(tokenizer, stop, width, len(idx))]) if stop else None
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
                                 stopping_criteria=criteria, synced_gpus=lockstep is not None)
            new_ids = [row.tolist() for row in out[:, width:]]
        texts = tokenizer.batch_decode(new_ids, skip_special_tokens=True)
        for j, text in zip(idx, texts):
            outputs[j] = cut_at_stop(text, stop)
    return outputs


def _can_shrink(model: Any) -> bool:
    """The step-by-step decoder needs a decoder-only LM with the standard KV cache; peft's prompt
    learning (prefix/prompt tuning inject their own past key values) and encoder-decoders do not fit."""
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is not None and getattr(peft_cfg, "is_prompt_learning", False):
        return False
    config = getattr(model, "config", None)
    return config is not None and not getattr(config, "is_encoder_decoder", False)


def _cache_keyword(model: Any) -> str:
    """transformers >= 5.2x names the forward's KV-cache argument ``cache`` (``past_key_values`` is
    deprecated there, removed in 5.40); older releases only know ``past_key_values``."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def _greedy_shrinking(model: Any, tokenizer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                      max_new_tokens: int, stop: Sequence[str], lockstep: Any = None) -> list[list[int]]:
    """Greedy continuations (token ids) of one left-padded batch; a row leaves the batch, and the
    KV cache, as soon as it emits EOS or its generated text contains a stop string.

    ``lockstep`` (FSDP ranks): the loop ends when every rank's batch has ended; until then a rank whose rows
    are all done makes a one-token forward whose output it drops, so that the others' parameter gathers
    complete (what transformers' synced_gpus does for generate)."""
    from transformers import DynamicCache

    from harness.distributed import any_rank

    eos = tokenizer.eos_token_id
    stops = [x for x in stop if x]
    window = max((len(x.encode("utf-8")) for x in stops), default=0) + 1
    rows = list(range(input_ids.shape[0]))          # batch position -> original row
    generated: list[list[int]] = [[] for _ in rows]
    mask = attention_mask
    cache = DynamicCache()   # filled in place by every forward call
    cache_kw = _cache_keyword(model)
    step_ids = input_ids
    done = False
    for _ in range(max_new_tokens):
        if lockstep is not None:
            if not any_rank(not done, lockstep, input_ids.device):
                break
            if done:   # this rank's rows have ended: join the others' forward
                model(input_ids=input_ids[:1, -1:], use_cache=False)
                continue
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    **{cache_kw: cache})
        nxt = out.logits[:, -1, :].argmax(-1)
        keep: list[int] = []
        for pos, token in enumerate(nxt.tolist()):
            row = rows[pos]
            generated[row].append(token)
            finished = token == eos
            if not finished and stops:
                tail = tokenizer.decode(generated[row][-window:], skip_special_tokens=True)
                finished = any(x in tail for x in stops)
            if not finished:
                keep.append(pos)
        if not keep:
            if lockstep is None:
                break
            done = True
            continue
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=nxt.device)
            cache.batch_select_indices(index)
            mask, nxt = mask[index], nxt[index]
            rows = [rows[p] for p in keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        step_ids = nxt[:, None]
    return generated
