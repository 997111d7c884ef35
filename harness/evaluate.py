"""Evaluation per protocol: classify (argmax of the head, or the regression output), generate
(greedy, then parse) and loglik (multiple choice scored by lm-eval). A job may evaluate several
sets (MNLI matched and mismatched, the eight commonsense test sets); each gets its metrics, its
trivial baseline and a few sample predictions."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.costs import count_tokens
from harness.distributed import World, gather_objects, rank_bounds
from harness.outcomes import Outcomes, correct_per_example

N_SAMPLES = 5   # a few predictions kept in the record so a reader can see what the model did


@dataclass
class SetResult:
    """One evaluated set: its metrics (task metric order), size, baseline and samples."""

    name: str
    split: str
    metrics: dict[str, float]
    n_examples: int
    baseline: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    outcomes: Outcomes | None = None   # per example, in file order (harness.outcomes); None: not kept


@dataclass
class EvalResult:
    """All sets of one evaluation; ``metrics``/``n_examples``/``samples`` are the primary (first) set's."""

    sets: list[SetResult]
    seconds: float
    tokens: int = 0   # tokens the model processed (harness.costs.TokenCounter): evaluation's throughput

    @property
    def metrics(self) -> dict[str, float]:
        return self.sets[0].metrics

    @property
    def n_examples(self) -> int:
        return self.sets[0].n_examples

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.sets[0].samples


def eval_subset(examples: Sequence[Any], spec: Any) -> list[Any]:
    """The first N examples of an evaluated split (file order: the same for every method)."""
    key = "eval_size" if spec.task["protocol"] == "classify" else "eval_size_generate"
    cap = spec.budget.get(key)
    return list(examples[: int(cap)]) if cap else list(examples)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, sets: Sequence[Any], spec: Any,
             device: torch.device, *, world: World | None = None) -> EvalResult:
    """Evaluate every set (``tasks.EvalSet``) in order; the model's train/eval mode is restored.

    With N ranks (``world``) each rank predicts a contiguous share of every set and the predictions are
    gathered in order, so every rank ends with the one-process metrics and per-example outcomes.
    Log-likelihood scoring (lm-eval) is not sharded yet: each rank scores the whole set."""
    world = world or World()
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    out: list[SetResult] = []
    protocol = spec.task["protocol"]
    with count_tokens(model) as counter:
        try:
            _evaluate_sets(model, tokenizer, sets, spec, device, protocol, out, world)
        finally:
            if was_training:
                model.train()
    return EvalResult(sets=out, seconds=time.perf_counter() - t0, tokens=counter.total)


def _evaluate_sets(model: torch.nn.Module, tokenizer: Any, sets: Sequence[Any], spec: Any, device: torch.device,
                   protocol: str, out: list[SetResult], world: World) -> None:
    from tasks import metrics_of
    from tasks.baselines import baseline
    from tasks.metrics import compute_metrics

    for es in sets:
        subset = eval_subset(es.examples, spec)
        if not subset:
            raise ValueError(f"task {spec.task['name']}: evaluated set {es.name} is empty")
        set_cfg = dict((spec.task.get("evals") or {}).get(es.name) or {})
        base = baseline(spec.task, subset, kind=set_cfg.get("baseline"))
        info: dict[str, Any] = {}
        if protocol == "loglik":
            ll = _loglik(model, tokenizer, subset, spec, device, es.name, world)
            metrics, samples, info = ll.metrics, ll.samples, ll.info
            outcomes = Outcomes("correct", metrics_of(spec.task)[0]["name"], np.asarray(ll.outcomes, np.uint8))
        else:
            run = _classify if protocol == "classify" else _generate
            preds, refs, samples = sharded(run, world, model, tokenizer, subset, spec, device)
            specs = metrics_of(spec.task)
            metrics = compute_metrics({"name": spec.task["name"], "metrics": specs}, preds, refs)
            outcomes = example_outcomes(spec.task, [m["name"] for m in specs], preds, refs)
        out.append(SetResult(name=es.name, split=es.split, metrics={k: float(v) for k, v in metrics.items()},
                             n_examples=len(subset), baseline=base, samples=samples, info=info,
                             outcomes=outcomes))


def _loglik(model: torch.nn.Module, tokenizer: Any, subset: list[Any], spec: Any, device: torch.device, name: str,
            world: World) -> Any:
    """lm-eval's scores of one set. With DDP ranks each scores its contiguous share (in its own lm-eval folder)
    and the shares are merged (harness.loglik.merge_loglik: the one-process metrics and outcomes). FSDP ranks
    score the whole set alike: every forward is a collective, and lm-eval batches a share as it likes."""
    from harness.loglik import evaluate_loglik, merge_loglik

    workdir = spec.run_dir / "lm_eval" / name.replace("/", "_")
    kw = {"batch_size": int(spec.budget["eval_batch_size"]), "device": device, "name": name}
    if not world.distributed or world.lockstep:
        return evaluate_loglik(model, tokenizer, subset, spec.task, workdir=workdir, **kw)
    lo, hi = rank_bounds(len(subset), world)[world.rank]
    mine = evaluate_loglik(model, tokenizer, subset[lo:hi], spec.task, workdir=workdir / f"rank{world.rank}", **kw) \
        if hi > lo else None
    return merge_loglik([p for rank in gather_objects([mine], world) for p in rank if p is not None])


def sharded(run: Any, world: World, model: torch.nn.Module, tokenizer: Any, subset: list[Any], spec: Any,
            device: torch.device) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    """``run`` (_classify or _generate) over this rank's contiguous share of ``subset``, the ranks' predictions
    gathered back in order: the one-process predictions, batch composition aside (a prediction does not
    depend on its batch: padding is masked, and generation is batched as one prompt at a time would be)."""
    if not world.distributed:
        return run(model, tokenizer, subset, spec, device)
    lo, hi = rank_bounds(len(subset), world)[world.rank]
    if world.lockstep:
        # FSDP: every forward is a collective, so every rank runs as many batches (its share padded to the
        # largest with copies of the set's first example, whose predictions are dropped) and generates in
        # lockstep (harness.generation: a rank that is done keeps joining the others' forward calls)
        width = max(b - a for a, b in rank_bounds(len(subset), world))
        mine = subset[lo:hi] + [subset[0]] * (width - (hi - lo))
        preds, _, samples = run(model, tokenizer, mine, spec, device, lockstep=world)
        preds, samples = preds[:hi - lo], samples[:hi - lo]   # the padding's predictions dropped
    else:
        preds, _, samples = run(model, tokenizer, subset[lo:hi], spec, device) if hi > lo else ([], [], [])
    parts = [part for rank in gather_objects([(preds, samples)], world) for part in rank]
    preds = [p for part_preds, _ in parts for p in part_preds]
    samples = [x for _, part_samples in parts for x in part_samples][:N_SAMPLES]   # rank order: the first ones
    return preds, references(spec, subset), samples


def references(spec: Any, subset: Sequence[Any]) -> list[Any]:
    """The gold answers a protocol scores against: labels (classify; floats for a regression task), or answers."""
    if spec.task["protocol"] != "classify":
        return [e.answer for e in subset]
    regression = bool(spec.task.get("regression"))
    return [float(e.label) if regression else int(e.label) for e in subset]


def example_outcomes(task: dict[str, Any], metrics: Sequence[str], preds: Sequence[Any],
                     refs: Sequence[Any]) -> Outcomes:
    """A regression task keeps each prediction (and the gold score: a correlation needs both); a task
    whose primary metric reads the whole confusion matrix (Matthews, F1) keeps the predicted and gold
    integer labels, so that metric can be recomputed on resampled examples; any other task keeps
    right/wrong per example by its own metric (harness.outcomes)."""
    if task.get("regression"):
        return Outcomes("prediction", metrics[0], np.asarray(preds, np.float64), np.asarray(refs, np.float64))
    if metrics and metrics[0] in LABEL_METRICS and _int_labels(preds) and _int_labels(refs):
        return Outcomes("label", metrics[0], np.asarray(preds, np.int64), np.asarray(refs, np.int64))
    name, correct = correct_per_example(metrics, preds, refs)
    return Outcomes("correct", name, np.asarray(correct, np.uint8))


LABEL_METRICS = ("matthews", "f1")


def _int_labels(values: Sequence[Any]) -> bool:
    """Every value an integer label that fits int32 (classify tasks' label ids; not parsed answer words)."""
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and -2**31 <= int(v) < 2**31
               for v in values)


def _length_order(texts: Sequence[str]) -> list[int]:
    """Batch similar lengths together: far less padding, same predictions."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def _classify(model, tokenizer, subset, spec, device, lockstep=None):
    from harness.batching import classify_batch

    max_len = spec.max_len
    bs = int(spec.budget["eval_batch_size"])
    regression = bool(spec.task.get("regression"))
    order = _length_order([(e.text_a or "") + (e.text_b or "") for e in subset])
    preds: list[Any] = [0] * len(subset)
    for i in range(0, len(order), bs):
        idx = order[i: i + bs]
        batch = classify_batch(tokenizer, [subset[j] for j in idx], max_len)
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()})
        out = logits.squeeze(-1).float().tolist() if regression else logits.argmax(-1).tolist()
        for j, p in zip(idx, out):
            preds[j] = float(p) if regression else int(p)
    refs = references(spec, subset)
    samples = [{"input": e.text_a if e.text_b is None else [e.text_a, e.text_b], "prediction": p,
                "reference": r} for e, p, r in list(zip(subset, preds, refs))[:N_SAMPLES]]
    return preds, refs, samples


def _generate(model, tokenizer, subset, spec, device, lockstep=None):
    from harness.generation import generate_texts
    from tasks import parse_answer

    # The task's own length, capped by the budget's; 64 only when neither says.
    caps = [int(c) for c in (spec.budget.get("max_new_tokens"), spec.task.get("max_new_tokens")) if c]
    outputs = generate_texts(model, tokenizer, [e.prompt for e in subset],
                             max_new_tokens=min(caps) if caps else 64,
                             batch_size=int(spec.budget["eval_batch_size"]), device=device,
                             stop=list(spec.task.get("stop") or []), lockstep=lockstep)
    preds = [parse_answer(spec.task, text, e.choices) for e, text in zip(subset, outputs)]
    refs = references(spec, subset)
    samples = [{"prompt": e.prompt[-300:], "generation": g, "parsed": p, "reference": r}
               for e, g, p, r in list(zip(subset, outputs, preds, refs))[:N_SAMPLES]]
    return preds, refs, samples
