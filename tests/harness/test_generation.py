"""harness.generation: batched greedy generation equals one-prompt-at-a-time greedy generation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.generation import StopOnStrings, cut_at_stop, generate_texts, length_sorted
from harness.spec import PROJECT_ROOT

GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")
STOP = ("Question:", "\n\n")


def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop(" 42\n\nQuestion: next", STOP) == " 42"
    assert cut_at_stop(" 42 Question: x\n\n", STOP) == " 42 "
    assert cut_at_stop(" no stop here", STOP) == " no stop here"
    assert cut_at_stop("abc", ("", "b")) == "a"   # an empty stop string is ignored, not a cut at 0
    assert cut_at_stop("abc", ()) == "abc"


def test_length_sorted_is_longest_first_then_by_text() -> None:
    assert length_sorted([2, 5, 5, 1], ["b", "z", "a", "c"]) == [2, 1, 0, 3]


MODEL_DIR = PROJECT_ROOT / ".cache/models/smollm2-135m/hf"


@pytest.mark.integration
def test_stop_criterion_ignores_the_prompt_and_keeps_rows_finished() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    prompt = tok("Answer:\n", add_special_tokens=False)["input_ids"]
    nl, x = (tok(c, add_special_tokens=False)["input_ids"] for c in ("\n", "x"))
    crit = StopOnStrings(tok, ["\n\n"], prompt_width=len(prompt), batch=2)

    def step(*rows: list[int]) -> list[bool]:
        return crit(torch.tensor([prompt + r for r in rows]), None).tolist()

    # Row 0 generates "\n" right after the prompt's "\n": the prompt's part must not count.
    assert step(nl, x) == [False, False]
    assert step(nl + nl, x + x) == [True, False]
    # row 0 stays finished though its "\n\n" has left the look-back window (3 tokens)
    assert step(nl + nl + x + x, x + x + nl + nl) == [True, True]


@pytest.fixture(scope="module")
def smollm():
    import yaml

    from harness.models import load

    cfg = yaml.safe_load((PROJECT_ROOT / "conf/model/smollm2-135m.yaml").read_text())
    loaded = load(cfg, PROJECT_ROOT / ".cache")
    loaded.backbone.eval()
    return loaded.backbone, loaded.tokenizer


def _unbatched(model, tokenizer, prompt: str, max_new: int) -> list[int]:
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.integration
def test_batched_equals_unbatched_greedy(smollm) -> None:
    model, tokenizer = smollm
    questions = [json.loads(line)["question"] for line in GSM8K_TEST.read_text().splitlines()[:3]]
    prompts = [f"Question: {q}\nAnswer:" for q in questions]
    prompts.insert(2, "Question: What is 2 + 2?\nAnswer:")   # much shorter: padding really happens
    side = tokenizer.padding_side
    max_new = 16
    got = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=2,
                         device=torch.device("cpu"), stop=STOP)
    assert tokenizer.padding_side == side
    assert len(got) == len(prompts)
    with torch.no_grad():
        for prompt, text in zip(prompts, got):
            ref = cut_at_stop(tokenizer.decode(_unbatched(model, tokenizer, prompt, max_new),
                                               skip_special_tokens=True), STOP)
            # token-exact: the same text re-tokenizes to the same ids, and texts are in input order
            assert text == ref, (prompt[-60:], text, ref)
            assert tokenizer(text, add_special_tokens=False)["input_ids"] == \
                tokenizer(ref, add_special_tokens=False)["input_ids"]
            assert not any(s in text for s in STOP)
    # without stop strings: the whole max_new_tokens continuation (or up to EOS), same order
    plain = generate_texts(model, tokenizer, prompts[:2], max_new_tokens=4, batch_size=2,
                           device=torch.device("cpu"))
    with torch.no_grad():
        for prompt, text in zip(prompts[:2], plain):
            assert text == tokenizer.decode(_unbatched(model, tokenizer, prompt, 4), skip_special_tokens=True)
