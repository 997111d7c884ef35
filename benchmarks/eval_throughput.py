"""Generation throughput: peftbench's `generate` evaluation vs lm-eval's HF backend, same model and prompts.

Run:  python benchmarks/eval_throughput.py [--n 32] [--max-new-tokens 128] [--batch-size 8]
                                           [--repeats 3] [--threads 1] [--no-adapter]

Issue #7 bar: examples/s of peftbench's generation loop at least those of lm-eval's (ratio >= 1.0).

What is compared
  peftbench  `harness.generation.generate_texts` -- the loop the `generate` protocol runs.
  lm-eval    `lm_eval.models.huggingface.HFLM(pretrained=<the same model object>).generate_until`
             with one request per prompt: ``(prompt, {"until": stops, "max_gen_toks": N,
             "do_sample": False})``, lm-eval's own batching, stop criteria and post-processing.
  Both get the same in-memory SmolLM2-135M (local copy) with a LoRA adapter applied as a trained
  job's model has one (a fresh LoRA computes the base model's outputs, at the adapter's cost; off
  with --no-adapter), the same tokenizer, the same prompts -- the first --n GSM8K test questions in
  lm-eval's gsm8k format "Question: {question}\\nAnswer:" with its stops "Question:" and "\\n\\n" --
  greedy decoding, the same token cap and batch size, no special tokens added.

Apples to apples: before timing, one untimed pass of each side (also the warm-up) must return the
same text for every prompt; the script prints how many agree and exits 2 if any differ. Both sort
prompts longest-first (ties by text), so they form the same batches with the same padding.

Timing: --repeats rounds; each round runs both sides over all prompts back to back, the order
flipped every round (A B, B A, ...) so that load from other processes hits both alike. Rate =
prompts / seconds of a side's pass. Headline ratio = median over rounds of (lm-eval seconds /
peftbench seconds), i.e. peftbench examples/s over lm-eval examples/s.

Where the difference comes from: lm-eval builds one stopping criterion per stop string, and each
says "stop" only when *every* row of the batch contains *that* string; a batch whose rows end on
different stops (one at "\\n\\n", one at "Question:", one at EOS) runs to the token cap. peftbench
finishes each row at its first stop or EOS and ends the batch when all rows are finished -- and a
finished row leaves the batch and its KV cache at once (harness.generation._greedy_shrinking), so the
rows still decoding stop paying for the ones that are done; `generate` computes every row to the end.

Exit code: 0 when the ratio >= 1.0, 1 when below, 2 when the outputs disagree.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATIO_TARGET = 1.0
STOP = ("Question:", "\n\n")     # lm-eval's gsm8k task: generation_kwargs.until


def gsm8k_prompts(n: int, data_dir: str | None = None) -> list[str]:
    """The first ``n`` GSM8K test questions (file order) in lm-eval's gsm8k prompt format."""
    from tasks.data import read_jsonl, resolve_files

    path = resolve_files("gsm8k", ["test.jsonl"], data_dir)["test.jsonl"]
    prompts = []
    for _, row in read_jsonl(path):
        if len(prompts) == n:
            break
        prompts.append(f"Question: {row['question']}\nAnswer:")
    return prompts


def load_model(cache_dir: Path, *, adapter: bool) -> tuple[Any, Any, str]:
    """SmolLM2-135M the project's way (conf/model + harness.models.load), eval mode, optional LoRA."""
    import yaml

    from harness.models import load

    cfg = yaml.safe_load((ROOT / "conf/model/smollm2-135m.yaml").read_text())
    loaded = load(cfg, cache_dir)
    model = loaded.backbone
    label = f"{cfg['name']} (base)"
    if adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, target_modules=list(cfg["target_modules"])))
        label = f"{cfg['name']} + LoRA r=8 on {','.join(cfg['target_modules'])}"
    model.eval()
    return model, loaded.tokenizer, label


def peftbench_side(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                   batch_size: int) -> Callable[[], list[str]]:
    import torch

    from harness.generation import generate_texts

    device = next(model.parameters()).device

    def run() -> list[str]:
        return generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, device=torch.device(device), stop=STOP)

    return run


def lm_eval_side(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int,
                 batch_size: int) -> Callable[[], list[str]]:
    from lm_eval.api.instance import Instance

    from harness.loglik import make_hflm

    lm = make_hflm(model, tokenizer, batch_size=batch_size, device=next(model.parameters()).device)
    gen_kwargs = {"until": list(STOP), "max_gen_toks": max_new_tokens, "do_sample": False}
    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen_kwargs)), idx=0)
                for p in prompts]

    def run() -> list[str]:
        return lm.generate_until(requests, disable_tqdm=True)

    return run


def timed(fn: Callable[[], list[str]]) -> tuple[float, list[str]]:
    import torch

    with torch.no_grad():
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="GSM8K test prompts (default 32)")
    ap.add_argument("--max-new-tokens", type=int, default=128, help="token cap per prompt (default 128)")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per batch, both sides (default 8)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds, order alternating (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--no-adapter", action="store_true", help="time the base model, without a LoRA")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".cache", help="where the local model copy is")
    ap.add_argument("--data-dir", default=None, help="data root (default: the project's chain)")
    args = ap.parse_args(argv)

    import logging

    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)   # it warns that it got a model object
    prompts = gsm8k_prompts(args.n, args.data_dir)
    model, tokenizer, label = load_model(args.cache_dir, adapter=not args.no_adapter)
    sides = {
        "peftbench": peftbench_side(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                    batch_size=args.batch_size),
        "lm-eval": lm_eval_side(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size),
    }
    print(f"eval_throughput: model={label} prompts={len(prompts)} gsm8k test, max_new_tokens="
          f"{args.max_new_tokens}, batch_size={args.batch_size}, greedy, stops={list(STOP)!r}, "
          f"threads={args.threads}, device={next(model.parameters()).device}")

    # Untimed pass of each side: warm-up and the apples-to-apples check.
    outputs = {name: timed(fn)[1] for name, fn in sides.items()}
    same = sum(a == b for a, b in zip(outputs["peftbench"], outputs["lm-eval"]))
    print(f"agreement: {same}/{len(prompts)} outputs identical")
    if same != len(prompts):
        for i, (a, b) in enumerate(zip(outputs["peftbench"], outputs["lm-eval"])):
            if a != b:
                print(f"  prompt {i}: peftbench={a!r} lm-eval={b!r}")
        return 2

    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.repeats):
        for name in (("peftbench", "lm-eval") if r % 2 == 0 else ("lm-eval", "peftbench")):
            seconds[name].append(timed(sides[name])[0])
    ratios = [lm / pb for pb, lm in zip(seconds["peftbench"], seconds["lm-eval"])]
    ratio = statistics.median(ratios)
    for name, ts in seconds.items():
        rate = len(prompts) / statistics.median(ts)
        print(f"{name}: {rate:.2f} examples/s (median of {len(ts)} passes; "
              f"pass seconds {' '.join(f'{t:.2f}' for t in ts)})")
    verdict = "PASS" if ratio >= RATIO_TARGET else "MISS"
    print(f"ratio peftbench/lm-eval = {ratio:.2f} (target >= {RATIO_TARGET:.2f}; per round "
          f"{' '.join(f'{x:.2f}' for x in ratios)}): {verdict}")
    return 0 if ratio >= RATIO_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
