"""harness.loglik: the lm-eval task files, and lm-eval's scores checked against a brute-force loglik."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from harness.loglik import build_docs, evaluate_loglik, lm_eval_task_name, write_task
from harness.spec import PROJECT_ROOT
from tasks import Example

ARC_EASY_TEST = Path("/work/shared/data/commonsense/ARC-Easy/test.json")
TASK_CFG = {
    "name": "commonsense/arc_easy",
    "version": 3,
    "choices": ["answer1", "answer2", "answer3", "answer4"],
    "loglik": {"continuation": "the correct answer is {choice}",
               "metrics": [{"name": "acc", "direction": "max"}, {"name": "acc_norm", "direction": "max"}]},
}


# LLM-Adapters' Alpaca template (conf/task/commonsense), ending where the trained response starts
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def _alpaca(instruction: str) -> str:
    return ALPACA.format(instruction=instruction)


def _hand_made() -> list[Example]:
    return [
        Example(prompt=_alpaca("Pick one.\n\nAnswer format: answer1/answer2"), answer="answer2",
                choices=("answer1", "answer2")),
        Example(prompt=_alpaca('Quotes " and {braces} and {{jinja}} stay as they are'), answer="answer1",
                choices=("answer1", "answer2", "answer3")),
        Example(prompt=_alpaca("No choices of its own: the task's label space applies"), answer="answer4"),
    ]


def test_task_name_is_a_prefixed_identifier() -> None:
    assert lm_eval_task_name("commonsense/piqa") == "peftbench_commonsense_piqa"
    assert lm_eval_task_name("commonsense/ARC-Easy") == "peftbench_commonsense_arc_easy"


def test_writer_produces_docs_and_a_task_yaml_lm_eval_loads(tmp_path: Path) -> None:
    files = write_task(_hand_made(), TASK_CFG, tmp_path)
    assert files.name == "peftbench_commonsense_arc_easy"
    docs = [json.loads(line) for line in files.docs_path.read_text().splitlines()]
    assert [d["gold"] for d in docs] == [1, 0, 3]
    assert docs[0]["choices"] == ["the correct answer is answer1", "the correct answer is answer2"]
    assert docs[2]["words"] == TASK_CFG["choices"]
    cfg = yaml.safe_load(files.yaml_path.read_text())
    assert cfg["dataset_path"] == "json" and cfg["output_type"] == "multiple_choice"
    assert cfg["dataset_kwargs"]["data_files"]["test"] == str(files.docs_path)
    assert Path(cfg["dataset_kwargs"]["cache_dir"]).is_relative_to(tmp_path.resolve())
    assert cfg["target_delimiter"] == "" and cfg["metadata"]["version"] == 3
    assert [m["metric"] for m in cfg["metric_list"]] == ["acc", "acc_norm"]

    # lm-eval itself reads the files back: prompts verbatim (no templating), choices, gold index.
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(files.directory), include_defaults=False).load([files.name])
    task = task["tasks"][files.name]
    got = list(task.test_docs())
    examples = _hand_made()
    assert [task.doc_to_text(d) for d in got] == [e.prompt for e in examples]
    assert [task.doc_to_choice(d) for d in got] == [d["choices"] for d in docs]
    assert [task.doc_to_target(d) for d in got] == [1, 0, 3]


def test_answer_outside_its_choices_names_the_example() -> None:
    bad = [*_hand_made(), Example(prompt="p", answer="answer9", choices=("answer1", "answer2"))]
    with pytest.raises(ValueError, match=r"example 3: answer 'answer9' is not among its choices"):
        build_docs(bad, TASK_CFG)
    with pytest.raises(ValueError, match="loglik.continuation"):
        build_docs(_hand_made(), {**TASK_CFG, "loglik": {"continuation": "no placeholder"}})
    with pytest.raises(ValueError, match=r"loglik.metrics\[0\]"):
        write_task(_hand_made(), {**TASK_CFG, "loglik": {**TASK_CFG["loglik"], "metrics": [{"name": "f1"}]}},
                   Path("/nonexistent"))


# ------------------------------------------------------------------------------- with the model
def _arc_examples(stop: int = 4) -> list[Example]:
    """Short ARC-Easy test items from the second on (the first three's gold: answer2, answer4, answer4)."""
    rows = json.loads(ARC_EASY_TEST.read_text())[1:stop]
    out = []
    for row in rows:
        words = tuple(row["instruction"].rsplit("Answer format: ", 1)[1].strip().split("/"))
        out.append(Example(prompt=_alpaca(row["instruction"]), target=row["output"], answer=row["answer"],
                           choices=words))
    return out


def _brute_force_logliks(model, tokenizer, example: Example, template: str) -> list[float]:
    """Sum of log p(continuation token | prompt, earlier continuation tokens), one forward each,
    tokenized as training does (prompt and continuation separately, no special tokens); logits only
    where they are needed (``logits_to_keep``): the 49k-word output layer dominates on a CPU."""
    p_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
    lls = []
    for word in example.choices:
        c_ids = tokenizer(template.format(choice=word), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        logits = model(input_ids=ids, logits_to_keep=len(c_ids) + 1).logits[0, :-1]  # predict c_ids
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        lls.append(float(sum(logprobs[k, tok] for k, tok in enumerate(c_ids))))
    return lls


@pytest.fixture(scope="module")
def smollm():
    from harness.models import load

    cfg = yaml.safe_load((PROJECT_ROOT / "conf/model/smollm2-135m.yaml").read_text())
    loaded = load(cfg, PROJECT_ROOT / ".cache")
    return loaded.backbone, loaded.tokenizer


@pytest.mark.integration
def test_plain_model_and_peft_model_scores_match_brute_force(smollm, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    backbone, tokenizer = smollm
    examples = _arc_examples()
    assert len({e.choices.index(e.answer) for e in examples}) > 1   # gold is not always the same index

    # A plain HF model (in eval mode, which must stay so).
    backbone.eval()
    plain = evaluate_loglik(backbone, tokenizer, examples[-1:], TASK_CFG, batch_size=4,
                            device=torch.device("cpu"), workdir=tmp_path)
    assert not backbone.training and plain.n_examples == 1 and len(plain.outcomes) == 1

    # A peft model with a non-zero adapter (a fresh LoRA is the identity), in train mode.
    torch.manual_seed(0)
    model = get_peft_model(backbone, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    model.train()
    result = evaluate_loglik(model, tokenizer, examples, TASK_CFG, batch_size=8,
                             device=torch.device("cpu"), workdir=tmp_path)
    assert model.training   # restored
    assert list(result.metrics) == ["acc", "acc_norm"]
    assert result.n_examples == 3 and len(result.samples) == 3
    assert result.info["task"] == "peftbench_commonsense_arc_easy" and result.info["task_version"] == 3
    assert result.info["lm_eval_version"] and "acc" in result.info["stderr"]

    model.eval()
    with torch.no_grad():
        direct = [_brute_force_logliks(model, tokenizer, e, TASK_CFG["loglik"]["continuation"])
                  for e in examples]
    model.train()
    argmax_correct = [int(max(range(len(d)), key=d.__getitem__) == e.choices.index(e.answer))
                      for d, e in zip(direct, examples)]
    assert result.outcomes == argmax_correct
    assert result.metrics["acc"] == pytest.approx(sum(argmax_correct) / len(examples))
    for sample, d, e in zip(result.samples, direct, examples):
        assert sample["gold"] == e.answer and sample["choices"] == list(e.choices)
        assert sample["prediction"] == e.choices[max(range(len(d)), key=d.__getitem__)]
        # lm-eval scores "\n" + continuation (it moves the prompt's trailing newline): the same
        # extra term for every choice, so the per-choice differences must match.
        offsets = [lm - bf for lm, bf in zip(sample["loglik"], d)]
        assert max(offsets) - min(offsets) < 1e-3, offsets
        assert all(o < 1e-4 for o in offsets)   # that extra term is a log-probability
    # the adapter is really applied: the peft model scores differ from the plain model's
    assert result.samples[-1]["loglik"] != pytest.approx(plain.samples[0]["loglik"], abs=1e-3)


@pytest.mark.integration
def test_shards_scored_apart_and_merged_equal_the_whole_set(smollm, tmp_path: Path) -> None:
    """What N DDP ranks do with a log-likelihood set (harness.evaluate._loglik): each scores its contiguous share
    with lm-eval, and merge_loglik gives the one-process metrics, per-example outcomes, stderr and samples."""
    from harness.loglik import merge_loglik

    backbone, tokenizer = smollm
    backbone.eval()
    examples = _arc_examples(stop=8)
    kw = {"batch_size": 4, "device": torch.device("cpu")}
    whole = evaluate_loglik(backbone, tokenizer, examples, TASK_CFG, workdir=tmp_path / "whole", **kw)
    parts = [evaluate_loglik(backbone, tokenizer, examples[lo:hi], TASK_CFG, workdir=tmp_path / f"r{i}", **kw)
             for i, (lo, hi) in enumerate([(0, 4), (4, 7)])]
    merged = merge_loglik(parts)
    assert 0 < sum(whole.outcomes) < len(examples), whole.outcomes   # a mix of right and wrong: stderr is not 0
    assert merged.metrics == whole.metrics
    assert merged.outcomes == whole.outcomes and merged.values == whole.values
    assert merged.n_examples == whole.n_examples == 7
    for name, err in whole.info["stderr"].items():
        assert merged.info["stderr"][name] == pytest.approx(err, rel=1e-9, abs=0)
    assert len(merged.samples) == len(whole.samples)
    for a, b in zip(merged.samples, whole.samples):   # batch composition moves a log-likelihood by float noise only
        assert a["prediction"] == b["prediction"] and a["loglik"] == pytest.approx(b["loglik"], abs=1e-4)
