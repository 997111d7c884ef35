"""Micro-batches and activation checkpointing are plumbing (DESIGN.md, "Scale"): out of the signature
because they do not change what is computed. These tests prove it in float32: the same steps with and
without them give the same loss curve and the same trained adapter within 1e-5.

Dropout is off in the accumulation tests: a batch of 8 draws one (8, L, H) dropout mask, four micro-batches
draw four (2, L', H) masks from the same stream, so their masks differ as another seed's would. The
computation given the masks is what must be equal, and is. Checkpointing replays the masks it drew
(non-reentrant checkpoint restores the RNG), so its tests keep dropout on.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import methods
from harness.batching import causal_lm_batch, classify_batch, split_batch
from harness.distributed import World, plain, shard_model
from harness.train import (
    EncoderClassifier,
    OutOfMemory,
    StepState,
    data_parallel,
    enable_gradient_checkpointing,
    load_checkpoint,
    loss_shares,
    make_optimizer,
    optimizer_params,
    save_checkpoint,
    set_seed,
    train_step,
)
from tests.methods.test_registry import TINY_DECODER_CFG, TINY_ENCODER_CFG, method_cfg

TOL = 1e-5
STEPS = 3


# ------------------------------------------------------------------------------------- builders
def tiny_bert(dropout: float = 0.0) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                vocab_size=100, max_position_embeddings=32, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout))


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                        max_position_embeddings=32))


def build(kind: str, *, method: str = "lora", dropout: float = 0.0, checkpointing: bool = False,
          micro: int | None = None, auto: bool = False, device: str = "cpu",
          dtype: torch.dtype = torch.float32, world: World | None = None) -> StepState:
    """A fresh model + method + AdamW, seeded the same on every call: two builds start bit-identical.
    ``dtype``: the frozen base's (what trains stays float32, as in a job); ``world``: this process's rank
    among N (tests/harness/test_distributed.py), trained through DDP as a job's ranks are."""
    cfg = method_cfg(method)
    impl = methods.resolve(cfg)
    set_seed(0)
    if kind == "encoder":
        model: nn.Module = EncoderClassifier(impl.apply(tiny_bert(dropout).to(dtype), cfg, TINY_ENCODER_CFG), 32, 2,
                                             "mean")
        model.dropout.p = dropout
        protocol = "classify"
    else:
        model = impl.apply(tiny_llama().to(dtype), cfg, TINY_DECODER_CFG)
        protocol = "generate"
    model.to(device)
    if checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    world = world or World()
    if world.lockstep:   # FSDP2: sharded before the optimizer sees the (now sharded) parameters, as in a job
        shard_model(model, world, torch.device(device))
    opt = make_optimizer(model, [p for p in model.parameters() if p.requires_grad], cfg, impl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return StepState(model=model, optimizer=opt, scheduler=sched, trainable=optimizer_params(opt), protocol=protocol,
                     device=torch.device(device), total_steps=STEPS * 2, grad_clip=1.0, callback=impl.callback,
                     regularizer=impl.regularizer, micro_batch_size=micro, auto_micro=auto, world=world,
                     ddp=data_parallel(model, world, torch.device(device)) if not world.lockstep else None)


def batches(kind: str, n: int = STEPS, size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of uneven lengths (3..16 tokens); a decoder's rows also mask a prompt of uneven
    length out of the loss, so the micro-batches hold very different numbers of target tokens."""
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        lengths = torch.randint(3, 17, (size,), generator=g)
        width = int(lengths.max())
        ids = torch.randint(1, 100, (size, width), generator=g)
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        ids = ids * mask
        if kind == "encoder":
            out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (size,), generator=g)})
        else:
            prompt = torch.randint(1, 3, (size,), generator=g) * lengths // 3
            labels = ids.masked_fill((mask == 0) | (torch.arange(width)[None, :] < prompt[:, None]), -100)
            out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def run(st: StepState, data: list[dict[str, torch.Tensor]]) -> tuple[list[float], dict[str, torch.Tensor]]:
    losses = [train_step(st, b) for b in data]   # FSDP: each rank holds shards, gathered whole (a collective)
    return losses, {n: plain(p.detach()).clone() for n, p in st.model.named_parameters() if p.requires_grad}


def assert_same(a: tuple[list[float], dict[str, torch.Tensor]], b: tuple[list[float], dict[str, torch.Tensor]],
                tol: float = TOL) -> None:
    assert a[0] == pytest.approx(b[0], abs=tol, rel=0)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=tol, rtol=0, msg=name)


# ---------------------------------------------------------------------------------- splitting
class _Example:
    def __init__(self, a: str, label: int, prompt: str = "", target: str = "") -> None:
        self.text_a, self.text_b, self.label, self.prompt, self.target = a, None, label, prompt, target


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_a_split_batch_equals_collating_each_part_alone(kind: str) -> None:
    """split_batch cuts each part to its own longest row: exactly what collating those examples gives."""
    from transformers import AutoTokenizer

    from harness.spec import PROJECT_ROOT

    name = "minilm-l6" if kind == "encoder" else "smollm2-135m"
    hf_dir = PROJECT_ROOT / ".cache" / "models" / name / "hf"
    if not hf_dir.exists():
        pytest.skip(f"no cached copy of {name} (peftbench fetch-models)")
    tok = AutoTokenizer.from_pretrained(hf_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = ["a", "a much longer sentence than the others here", "two words", "x y z", "short", "one more line of it"]
    examples = [_Example(t, i % 2, prompt=f"Q: {t}?", target=t[::-1]) for i, t in enumerate(texts)]
    collate = classify_batch if kind == "encoder" else causal_lm_batch
    whole = collate(tok, examples, 32)
    for size in (1, 2, 4):
        parts = split_batch(whole, size)
        alone = [collate(tok, examples[i: i + size], 32) for i in range(0, len(examples), size)]
        assert len(parts) == len(alone)
        for got, want in zip(parts, alone):
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want), size


def test_loss_shares_count_examples_or_predicted_tokens() -> None:
    enc = [{"input_ids": torch.zeros(2, 5)}, {"input_ids": torch.zeros(6, 3)}]
    assert loss_shares(enc, "classify") == [0.25, 0.75]
    # a decoder's mean is over shifted labels: column 0 is never predicted
    dec = [{"labels": torch.tensor([[5, 5, 5, -100]])}, {"labels": torch.tensor([[-100, 5, 5, 5], [-100, -100, 5, -100]])}]
    assert loss_shares(dec, "generate") == [2 / 6, 4 / 6]


# ------------------------------------------------------------------------------ accumulation
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_four_micro_batches_of_two_equal_one_batch_of_eight(kind: str) -> None:
    data = batches(kind)
    whole = run(build(kind), data)
    assert_same(run(build(kind, micro=2), data), whole)
    assert_same(run(build(kind, micro=4), data), whole)


def test_the_mean_of_micro_batch_means_would_not_be_equal() -> None:
    """The test above can tell: weighting each micro-batch's mean equally (the Hugging Face accumulation bug
    of 2024) moves a decoder's loss and adapter far beyond the tolerance on these uneven batches."""
    data = batches("decoder")
    whole = run(build("decoder"), data)
    import harness.train as train_mod

    real = train_mod.loss_shares
    try:
        train_mod.loss_shares = lambda parts, protocol: [1.0 / len(parts)] * len(parts)
        naive = run(build("decoder", micro=2), data)
    finally:
        train_mod.loss_shares = real
    assert max(abs(a - b) for a, b in zip(naive[0], whole[0])) > 100 * TOL


def test_a_method_penalty_is_added_once_per_step() -> None:
    """KaSA's regulariser is a per-step term: with micro-batches it is added once, not once per part."""
    data = batches("decoder")
    whole = run(build("decoder", method="kasa"), data)
    assert_same(run(build("decoder", method="kasa", micro=2), data), whole)


# --------------------------------------------------------------------------------------- auto
def _oom_above(st: StepState, rows: int | None = None, tokens: int | None = None) -> dict[str, list]:
    """Simulate a GPU's out-of-memory error on a CPU: the model raises for micro-batches over `rows` rows or
    `tokens` padded tokens. Returns the rows the forwards received: "failed" per failed attempt (discarded
    with it), "counted" for every other forward."""
    seen: dict[str, list] = {"current": [], "failed": []}

    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if (rows is not None and ids.shape[0] > rows) or (tokens is not None and ids.numel() > tokens):
            seen["failed"].append(seen["current"])   # this attempt's passes so far are dropped with it
            seen["current"] = []
            raise OutOfMemory("simulated: CUDA out of memory")
        seen["current"].extend(ids.tolist())

    st.model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def _rows(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    return batch["input_ids"].tolist()


def _trimmed(rows: list[list[int]]) -> list[tuple[int, ...]]:
    """A row without its padding (a micro-batch pads to its own longest row)."""
    out = []
    for r in rows:
        while r and r[-1] == 0:
            r = r[:-1]
        out.append(tuple(r))
    return sorted(out)


def test_auto_halves_after_out_of_memory_and_retries_the_same_step() -> None:
    data = batches("encoder")
    st = build("encoder", auto=True)
    seen = _oom_above(st, rows=2)
    got = run(st, data)
    assert st.micro_batch_size == 2 and st.micro_changes == [[0, 4], [0, 2]]   # 8 → 4 → 2, all at step 0
    assert st.step == STEPS and st.examples == STEPS * 8
    assert_same(got, run(build("encoder", micro=2), data))
    # the failed attempts saw nothing; the passes that counted saw every example of every step, once
    assert seen["failed"] == [[], []]
    assert _trimmed(seen["current"]) == _trimmed([r for b in data for r in _rows(b)])


def test_an_out_of_memory_error_mid_step_drops_the_partial_gradients() -> None:
    """The first micro-batch of a step fits, the second does not: the retry starts the step from zero
    gradients, so the first part is not counted twice (the adapter equals a clean run's)."""
    data = batches("decoder", n=2)
    for b in data:   # short rows first: the first half of each batch fits in 4 × 16 tokens, the second does not
        order = b["attention_mask"].sum(1).argsort(stable=True)
        b.update({k: v[order] for k, v in b.items()})
    widths = [int(b["attention_mask"][:4].sum(1).max()) for b in data]
    limit = 4 * max(widths)
    st = build("decoder", auto=True, micro=4)
    seen = _oom_above(st, tokens=limit)
    got = run(st, data)
    assert st.micro_changes and st.micro_changes[0][0] == 0
    assert any(seen["failed"]), "no attempt failed after a micro-batch had passed"
    assert _trimmed(seen["current"]) == _trimmed([r for b in data for r in _rows(b)])   # each example once
    assert_same(got, run(build("decoder", micro=st.micro_batch_size), data))
    assert_same(got, run(build("decoder"), data))


def test_auto_gives_up_at_one_example() -> None:
    st = build("encoder", auto=True)
    _oom_above(st, rows=0)
    with pytest.raises(OutOfMemory):
        train_step(st, batches("encoder", n=1)[0])
    assert st.micro_batch_size == 1


def test_without_auto_an_out_of_memory_error_propagates() -> None:
    st = build("encoder", micro=4)
    _oom_above(st, rows=2)
    with pytest.raises(OutOfMemory):
        train_step(st, batches("encoder", n=1)[0])
    assert st.micro_batch_size == 4 and st.step == 0


def test_token_and_example_counts_do_not_depend_on_the_micro_batch() -> None:
    data = batches("decoder")
    counts = []
    for micro in (None, 2, 4):
        st = build("decoder", micro=micro)
        run(st, data)
        counts.append((st.step, st.tokens, st.examples))
    assert counts[0] == counts[1] == counts[2] == (STEPS, sum(int(b["attention_mask"].sum()) for b in data), STEPS * 8)


# ------------------------------------------------------------------------------ checkpointing
@pytest.mark.parametrize(("kind", "method"), [("encoder", "lora"), ("decoder", "lora"), ("decoder", "singlora"),
                                              ("encoder", "dora")])
def test_gradient_checkpointing_gives_the_same_steps(kind: str, method: str) -> None:
    """Activation checkpointing (non-reentrant) on a peft and a custom adapter, dropout on: same loss curve,
    same adapter; and the gradients reach the adapters (they moved)."""
    data = batches(kind)
    plain = run(build(kind, method=method, dropout=0.1), data)
    ckpt = build(kind, method=method, dropout=0.1, checkpointing=True)
    layers = [m for m in ckpt.model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert layers, "checkpointing was not switched on"
    assert_same(run(ckpt, data), plain)
    start = build(kind, method=method)
    moved = [n for n, p in start.model.named_parameters() if p.requires_grad
             and not torch.equal(p.detach(), plain[1][n])]
    assert any("lora" in n or "adapter" in n or "singlora" in n.lower() for n in moved), moved[:5]


def test_checkpointing_and_micro_batches_together() -> None:
    data = batches("decoder")
    assert_same(run(build("decoder", checkpointing=True, micro=2), data), run(build("decoder"), data))


def test_checkpointing_a_model_without_support_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        enable_gradient_checkpointing(nn.Sequential(nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------- resume
def test_resume_with_micro_batches_is_bit_identical(tmp_path) -> None:
    """Checkpoints are written between optimizer steps, i.e. at effective-batch boundaries: 2 steps, save,
    2 more equal a fresh state resumed from the checkpoint running the same 2; auto's size survives too."""
    data = batches("decoder", n=4)

    def fresh() -> StepState:
        return build("decoder", auto=True, micro=4)

    st = fresh()
    _oom_above(st, rows=2)
    for b in data[:2]:
        train_step(st, b)
    save_checkpoint(tmp_path / "c.pt", st, eval_history=[], attempts=[])
    rest = [train_step(st, b) for b in data[2:]]

    resumed = fresh()
    load_checkpoint(tmp_path / "c.pt", resumed)
    assert (resumed.step, resumed.micro_batch_size, resumed.micro_changes) == (2, 2, [[0, 2]])
    _oom_above(resumed, rows=2)   # still the smaller size: no new out-of-memory round
    assert [train_step(resumed, b) for b in data[2:]] == rest
    assert resumed.micro_changes == [[0, 2]]
    for (n, a), b in zip(st.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), n


# ----------------------------------------------------------------------------------- on a GPU
# scripts/gpu-check.sh runs these where a GPU is at hand. In float32 the equalities hold to TOL as on the CPU
# (PyTorch leaves TF32 off for matmuls by default); on a bfloat16 base a micro-batch is a differently shaped
# bf16 computation, so the loss curves agree to the bf16 tolerance of tests/harness/test_precision.py.
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
BF16_LOSS_TOL = 0.01


def _assert_close_on(dtype: torch.dtype, got: tuple, want: tuple) -> None:
    if dtype == torch.float32:
        assert_same(got, want)
    else:
        assert got[0] == pytest.approx(want[0], abs=BF16_LOSS_TOL, rel=0)
        assert all(t.dtype == torch.float32 for t in got[1].values())   # the adapter trains in float32


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_micro_batches_equal_one_batch_on_cuda(kind: str, dtype: torch.dtype) -> None:
    data = batches(kind)
    whole = run(build(kind, device="cuda", dtype=dtype), data)
    _assert_close_on(dtype, run(build(kind, micro=2, device="cuda", dtype=dtype), data), whole)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_gradient_checkpointing_gives_the_same_steps_on_cuda(kind: str, dtype: torch.dtype) -> None:
    """Dropout on: the recomputation must replay the CUDA generator's masks too."""
    data = batches(kind)
    plain = run(build(kind, dropout=0.1, device="cuda", dtype=dtype), data)
    _assert_close_on(dtype, run(build(kind, dropout=0.1, checkpointing=True, device="cuda", dtype=dtype), data), plain)

