"""Each method's defining property (the rule its paper states), on tiny models built from config.

"It trains" proves nothing about a method; these tests check the mechanism: an orthogonal method keeps
W0's singular values, FourierFT's ΔW is the inverse DFT of its coefficients, VeRA's random matrices are
shared, ... Adapter weights are randomised first where the property must hold for any trained state, not
just at init. Every method YAML must have an entry in PROPERTIES (test_every_method_has_a_property_test).
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import methods
from tests.conftest import conf_names
from tests.methods.test_registry import TINY_DECODER_CFG, TINY_ENCODER_CFG, method_cfg, tiny_bert, tiny_llama

Q = "encoder.layer.0.attention.self.query"   # the first adapted layer of the tiny BERT


def build(name: str, kind: str = "encoder", **params: Any) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(peft model, an untouched copy of the backbone, the method config) for a method YAML."""
    cfg = method_cfg(name)
    cfg["params"] = {**(cfg.get("params") or {}), **params}
    backbone = tiny_bert() if kind == "encoder" else tiny_llama()
    base = copy.deepcopy(backbone)
    model = methods.resolve(cfg).apply(backbone, cfg, TINY_ENCODER_CFG if kind == "encoder" else TINY_DECODER_CFG)
    return model, base, cfg


def randomize(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Put the adapter in an arbitrary trained-like state."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def layer(model: Any, path: str = Q) -> Any:
    return model.get_submodule(f"base_model.model.{path}")


def merged_weight(model: Any, path: str = Q) -> torch.Tensor:
    """The effective weight of one layer: the adapter merged into W0 (on a copy)."""
    return copy.deepcopy(model).merge_and_unload().get_submodule(path).weight.detach()


def base_weight(base: torch.nn.Module, path: str = Q) -> torch.Tensor:
    return base.get_submodule(path).weight.detach()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ------------------------------------------------------------------------------- LoRA family
def prop_lora() -> None:
    """ΔW = (α/r)·B·A with B = 0 at init: the model is unchanged until B trains."""
    model, base, cfg = build("lora")
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model)
    lyr = layer(model)
    p = cfg["params"]
    expected = p["lora_alpha"] / p["r"] * lyr.lora_B["default"].weight @ lyr.lora_A["default"].weight
    torch.testing.assert_close(merged_weight(model) - base_weight(base), expected)


def prop_rslora() -> None:
    """rsLoRA scales by α/√r (LoRA: α/r)."""
    model, _, cfg = build("rslora")
    p = cfg["params"]
    assert layer(model).scaling["default"] == pytest.approx(p["lora_alpha"] / p["r"] ** 0.5)


def prop_dora() -> None:
    """DoRA: the magnitude vector starts at the column norms of W0 (per output unit here: ‖W0[i, :]‖)."""
    model, base, _ = build("dora")
    m = layer(model).lora_magnitude_vector["default"].weight.detach()
    torch.testing.assert_close(m, base_weight(base).norm(dim=1))
    torch.testing.assert_close(outputs(model), outputs(base))


def _residual_reproduces_w0(name: str) -> Any:
    model, base, _ = build(name)
    lyr = layer(model)
    w_res = lyr.base_layer.weight.detach()
    assert not torch.allclose(w_res, base_weight(base)), f"{name}: W0 should hold the residual"
    ba = lyr.scaling["default"] * lyr.lora_B["default"].weight @ lyr.lora_A["default"].weight
    torch.testing.assert_close(w_res + ba, base_weight(base), atol=1e-5, rtol=1e-4)
    return lyr, base


def prop_pissa() -> None:
    """PiSSA: B·A are W0's top-r singular components, so the residual + BA reproduces W0 at init."""
    lyr, base = _residual_reproduces_w0("pissa")
    r = lyr.r["default"]
    s = torch.linalg.svdvals(base_weight(base))
    ba = lyr.scaling["default"] * lyr.lora_B["default"].weight @ lyr.lora_A["default"].weight
    # the principal part carries W0's largest singular values (randomized SVD: approximately)
    torch.testing.assert_close(torch.linalg.svdvals(ba)[:r], s[:r], atol=0.05, rtol=0.1)


def prop_loftq() -> None:
    """LoftQ (arXiv:2310.08659): W0 is replaced by its 4-bit round trip Q, and B·A starts at the low-rank
    part of what quantization lost, so Q + (α/r)·B·A is closer to W0 than Q alone."""
    model, base, _ = build("loftq")
    lyr = layer(model)
    q, w0 = lyr.base_layer.weight.detach(), base_weight(base)
    assert not torch.allclose(q, w0), "loftq: W0 should hold its quantized round trip"
    ba = lyr.scaling["default"] * lyr.lora_B["default"].weight @ lyr.lora_A["default"].weight
    lost, left = torch.linalg.matrix_norm(w0 - q), torch.linalg.matrix_norm(w0 - q - ba)
    assert left < 0.9 * lost, (float(left), float(lost))


def prop_olora() -> None:
    """OLoRA: B = the first r columns of Q, A = the first r rows of R in W0 = QR (B orthonormal);
    residual + BA = W0."""
    lyr, _ = _residual_reproduces_w0("olora")
    b = lyr.lora_B["default"].weight.detach()
    torch.testing.assert_close(b.T @ b, torch.eye(b.shape[1]), atol=1e-5, rtol=0)


def prop_mica() -> None:
    """MiCA: B = left singular vectors of W0's smallest singular values, frozen; only A (zero) trains."""
    model, base, _ = build("mica")
    lyr = layer(model)
    assert not lyr.lora_B["default"].weight.requires_grad and lyr.lora_A["default"].weight.requires_grad
    assert torch.count_nonzero(lyr.lora_A["default"].weight) == 0
    b = lyr.lora_B["default"].weight.detach()
    u = torch.linalg.svd(base_weight(base))[0]
    r = b.shape[1]
    minor = u[:, -r:]
    # span(B) = span of the minor left singular vectors: projecting B onto it changes nothing
    torch.testing.assert_close(minor @ (minor.T @ b), b, atol=1e-4, rtol=1e-3)


def prop_eva() -> None:
    """EVA: after the data-driven init, A's rows are orthonormal right-singular vectors of the layer
    inputs, B stays 0 (model unchanged) and the total rank budget is kept while ranks move."""
    from methods.peft_native import impl_for

    model, base, cfg = build("eva")
    g = torch.Generator().manual_seed(5)
    batches = ({"input_ids": torch.randint(0, 100, (4, 8), generator=g),   # a classify batch, as train() feeds
                "attention_mask": torch.ones(4, 8, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])}
               for _ in range(64))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}
    impl_for(cfg).init(model, batches)
    ranks = []
    for n, mod in model.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            a = mod.lora_A["default"].weight.detach()
            ranks.append(a.shape[0])
            torch.testing.assert_close(a @ a.T, torch.eye(a.shape[0]), atol=1e-4, rtol=0)
    after = {n: p for n, p in model.named_parameters() if "lora_A" in n}
    assert any(n not in before or not torch.equal(before[n], p) for n, p in after.items()), "A unchanged"
    assert sum(ranks) == cfg["params"]["r"] * len(ranks)
    torch.testing.assert_close(outputs(model), outputs(base))


def prop_velora() -> None:
    """VeLoRA: the forward is LoRA's, exactly; in training the input saved for A's gradient is compressed
    to one number per group of features (its projection on a unit vector, the batch's mean sub-token) and
    rebuilt from it, so A's gradient is (∂L/∂Ax)ᵀ·x̂ rather than (∂L/∂Ax)ᵀ·x; B's gradient stays exact."""
    groups = 4
    model, base, cfg = build("velora", velora_config={**method_cfg("velora")["params"]["velora_config"],
                                                      "num_groups": groups})
    randomize(model, 0.3)
    lyr = layer(model)
    lyr.train()
    a, b, s = lyr.lora_A["default"].weight, lyr.lora_B["default"].weight, lyr.scaling["default"]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(4))
    out = lyr(x)
    out.pow(2).sum().backward()
    w0 = base_weight(base)
    a_ex, b_ex = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    exact = x @ w0.T + base.get_submodule(Q).bias + s * (x @ a_ex.T) @ b_ex.T
    torch.testing.assert_close(out.detach(), exact.detach(), atol=1e-5, rtol=1e-4)
    exact.pow(2).sum().backward()
    torch.testing.assert_close(b.grad, b_ex.grad, atol=1e-5, rtol=1e-4)
    sub = x.reshape(-1, groups, 32 // groups)
    e = sub.reshape(-1, 32 // groups).mean(0)
    e = e / e.norm()
    x_hat = (torch.einsum("tgd,d->tg", sub, e).unsqueeze(-1) * e).reshape(-1, 32) * cfg["params"]["velora_config"]["scale"]
    g_after_a = (2 * exact.detach()).reshape(-1, 32) @ (s * b.detach())   # ∂L/∂(Ax)
    torch.testing.assert_close(a.grad, g_after_a.T @ x_hat, atol=1e-4, rtol=1e-3)
    assert not torch.allclose(a.grad, a_ex.grad, atol=1e-3)   # an approximation of the exact gradient


def prop_kasa() -> None:
    """KaSA: the frozen W0 loses its r smallest singular components; ΔW = s·B·diag(ΔΣ)·A; the method's
    regularizer is β·ΣΔΣ² + γ·(‖BᵀB − I‖ + ‖AAᵀ − I‖) summed over its layers (added to the training loss)."""
    from methods.peft_native import impl_for

    model, base, cfg = build("kasa")
    r = cfg["params"]["r"]
    lyr = layer(model)
    s_res, s0 = torch.linalg.svdvals(lyr.base_layer.weight.detach()), torch.linalg.svdvals(base_weight(base))
    torch.testing.assert_close(s_res[:-r], s0[:-r], atol=1e-5, rtol=1e-4)
    assert float(s_res[-r:].max()) < 1e-5 < float(s0[-1])
    randomize(model, 0.3)
    a, b, d = lyr.lora_A["default"].weight, lyr.lora_B["default"].weight, lyr.lora_diag["default"]
    expected = lyr.scaling["default"] * b @ torch.diag(d) @ a
    torch.testing.assert_close(merged_weight(model) - lyr.base_layer.weight.detach(), expected.detach(),
                               atol=1e-6, rtol=1e-4)
    beta, gamma = cfg["params"]["kasa_config"]["beta"], cfg["params"]["kasa_config"]["gamma"]
    want = 0.0
    for m in model.modules():
        if hasattr(m, "lora_diag") and "default" in m.lora_diag:
            a_, b_, d_ = m.lora_A["default"].weight, m.lora_B["default"].weight, m.lora_diag["default"]
            eye = torch.eye(r)
            want += beta * (d_ ** 2).sum() + gamma * ((b_.T @ b_ - eye).norm() + (a_ @ a_.T - eye).norm())
    reg = impl_for(cfg).regularizer(model)
    torch.testing.assert_close(reg, want)
    assert reg.requires_grad   # it trains: the loop adds it to the loss


def prop_loraplus() -> None:
    """LoRA+: B's learning rate is loraplus_lr_ratio × A's."""
    from methods.peft_native import impl_for

    model, _, cfg = build("loraplus")
    opt = impl_for(cfg).optimizer(model, cfg)
    ids = {id(p): n for n, p in model.named_parameters()}
    lr_of = {ids[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    a = {n: lr for n, lr in lr_of.items() if "lora_A" in n}
    b = {n: lr for n, lr in lr_of.items() if "lora_B" in n}
    assert a and b and set(a.values()) == {cfg["optim"]["lr"]}
    assert all(lr == pytest.approx(cfg["optim"]["lr"] * cfg["optim"]["loraplus_lr_ratio"]) for lr in b.values())


def prop_adalora() -> None:
    """AdaLoRA: driven by the callback over a job's steps, the rank budget shrinks from init_r to
    target_r per layer on average (singular values masked by importance)."""
    from methods.peft_native import impl_for

    model, _, cfg = build("adalora", kind="decoder")
    impl = impl_for(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    total = 6

    def live_rank() -> int:
        return sum(int(torch.count_nonzero(m.lora_E["default"])) for m in model.modules()
                   if hasattr(m, "lora_E") and "default" in m.lora_E)

    n_layers = sum(1 for m in model.modules() if hasattr(m, "lora_E") and "default" in m.lora_E)
    for step in range(total):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        impl.callback(model, step, total)
        opt.zero_grad()
    assert live_rank() <= cfg["params"]["target_r"] * n_layers < cfg["params"]["init_r"] * n_layers


def prop_adalora_orthogonality_penalty() -> None:
    """AdaLoRA's orthogonality penalty reaches the loss exactly once: peft adds it in its forward for a causal
    LM given labels (the regularizer hook then adds 0), the hook adds it for an encoder under the harness's
    head (where peft cannot): orth_reg_weight × mean(‖QQᵀ − I‖_F, ‖PᵀP − I‖_F), as peft computes it."""
    from harness.train import EncoderClassifier
    from methods.peft_native import impl_for

    enc, _, cfg = build("adalora")
    reg = impl_for(cfg).regularizer
    clf = EncoderClassifier(enc, 32, 2, "mean")
    randomize(enc, 0.3)
    norms = []
    for m in enc.modules():
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {}):
            q, pb = m.lora_A["default"], m.lora_B["default"]
            norms += [torch.linalg.matrix_norm(q @ q.T - torch.eye(q.shape[0])),
                      torch.linalg.matrix_norm(pb.T @ pb - torch.eye(pb.shape[1]))]
    expected = cfg["params"]["orth_reg_weight"] * torch.stack(norms).mean()
    got = reg(clf)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in enc.named_parameters() if "lora_A" in n)

    dec, _, _ = build("adalora", kind="decoder")
    randomize(dec, 0.3)
    assert float(reg(dec)) == 0.0   # peft's own forward adds it for the decoder
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    with_reg = dec(input_ids=ids, labels=ids).loss
    plain = dec.base_model.model(input_ids=ids, labels=ids).loss
    assert float(with_reg - plain) > 0


def prop_lorafa() -> None:
    """LoRA-FA: A is frozen at its random init and never moves; B's first AdamW step follows the
    projected gradient ĝ_B = g_B·(AAᵀ)⁻¹/s² (not g_B itself); a classification head still trains."""
    from harness.train import EncoderClassifier
    from methods.peft_native import impl_for

    model, _, cfg = build("lorafa")
    clf = EncoderClassifier(model, 32, 2, "mean")
    opt = impl_for(cfg).optimizer(clf, cfg)
    lyr = layer(model)
    a, b = lyr.lora_A["default"].weight, lyr.lora_B["default"].weight
    assert not a.requires_grad and b.requires_grad
    a0, head0 = a.detach().clone(), clf.classifier.weight.detach().clone()
    with torch.no_grad():   # a trained-like B (B = 0 at init); A is frozen either way
        b.normal_(0, 0.01, generator=torch.Generator().manual_seed(0))
    b0 = b.detach().clone()
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.cross_entropy(clf(ids, torch.ones_like(ids)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    g_b = b.grad.detach().clone()
    opt.step()
    assert torch.equal(a.detach(), a0)
    assert not torch.equal(clf.classifier.weight.detach(), head0)
    s = lyr.scaling["default"]
    proj = g_b @ torch.linalg.pinv(a0 @ a0.T) / s**2
    step = b.detach() - b0
    lr = cfg["optim"]["lr"]
    # Adam's first step is ±lr per coordinate in the direction of the gradient it was given
    agree_proj = (torch.sign(step) == -torch.sign(proj)).float().mean()
    agree_raw = (torch.sign(step) == -torch.sign(g_b)).float().mean()
    assert agree_proj > 0.97 and agree_raw < 0.9, (agree_proj, agree_raw)
    # ... exactly lr·ĝ/(|ĝ| + ε/√(1-β2)) (peft's ε sits outside the bias correction; it computes ĝ under
    # bf16 autocast: a loose tolerance)
    torch.testing.assert_close(step, -lr * proj / (proj.abs() + 1e-6 / (1 - 0.999) ** 0.5), atol=lr * 0.05, rtol=0)


def _prepared(name: str, n_batches: int = 4) -> tuple[torch.nn.Module, torch.nn.Module, list[dict[str, Any]], Any]:
    """(model, untouched backbone copy, calibration batches, cfg): a data-prepared method built the way
    train() builds it (harness.train.build_model on a tiny llama, LM loss, no dropout)."""
    import types

    from harness.train import build_model

    cfg = method_cfg(name)
    cfg["calibration"] = {"batches": n_batches}
    g = torch.Generator().manual_seed(7)
    batches = []
    for _ in range(n_batches + 2):   # more than it may read
        ids = torch.randint(0, 100, (3, 8), generator=g)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    backbone = tiny_llama()
    base = copy.deepcopy(backbone)
    spec = types.SimpleNamespace(method=cfg, model=TINY_DECODER_CFG, task={"protocol": "generate"})
    model = build_model(spec, types.SimpleNamespace(backbone=backbone), None, batches=iter(batches))
    assert all(p.grad is None for p in model.parameters()), "calibration gradients leaked into training"
    return model, base, batches[:n_batches], cfg


QD = "model.layers.0.self_attn.q_proj"   # the first adapted layer of the tiny llama


def prop_lora_ga() -> None:
    """LoRA-GA: with G the full-weight gradient averaged over the calibration batches, A's rows are G's
    top-r right singular vectors and B lies in the next r left singular directions (ArB2r); W0 is offset
    so the model is unchanged at init."""
    model, base, batches, cfg = _prepared("lora_ga")
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-5, rtol=1e-4)
    ref = copy.deepcopy(base)
    for b in batches:
        ref(**b).loss.backward()
    grad = ref.get_submodule(QD).weight.grad / len(batches)
    u, _, vh = torch.linalg.svd(grad)
    r = cfg["params"]["r"]
    lyr = model.get_submodule(f"base_model.model.{QD}")
    a, b = lyr.lora_A["default"].weight.detach(), lyr.lora_B["default"].weight.detach()
    top_v = vh[:r]
    torch.testing.assert_close(a @ top_v.T @ top_v, a, atol=1e-4, rtol=1e-3)   # rows of A in span(V_r)
    torch.testing.assert_close(a @ a.T, torch.eye(r), atol=1e-4, rtol=0)
    assert float((u[:, :r].T @ b).norm()) < 1e-4 * float(b.norm())   # B ⟂ the top-r left directions
    nxt = u[:, r:2 * r]
    torch.testing.assert_close(nxt @ nxt.T @ b, b, atol=1e-4, rtol=1e-3)


def prop_corda() -> None:
    """CorDA (IPM): with C the covariance of the layer's inputs over the calibration examples, B spans
    the top-r left singular vectors of W0·C (not of W0 alone); residual + s·BA = W0, so the model is
    unchanged at init."""
    model, base, batches, cfg = _prepared("corda")
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-4, rtol=1e-3)
    cov = torch.zeros(32, 32)

    def hook(_mod: Any, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
        nonlocal cov
        x = inputs[0].detach().squeeze(0).float()
        x = x / torch.max(x).abs()   # peft normalises each example by its largest entry
        cov += x.T @ x

    ref = copy.deepcopy(base)
    handle = ref.get_submodule(QD).register_forward_hook(hook)
    with torch.no_grad():
        for b in batches:
            for i in range(b["input_ids"].shape[0]):   # one example at a time, as CorDA's hook reads
                ref(input_ids=b["input_ids"][i:i + 1])
    handle.remove()
    cov = cov + torch.eye(32) * cov.diagonal().mean() * 0.01   # peft's damping (first try suffices here)
    w0 = base_weight(base, QD)
    r = cfg["params"]["r"]
    u_wc = torch.linalg.svd(w0 @ cov)[0][:, :r]
    lyr = model.get_submodule(f"base_model.model.{QD}")
    b = lyr.lora_B["default"].weight.detach()
    torch.testing.assert_close(u_wc @ u_wc.T @ b, b, atol=1e-4, rtol=1e-3)
    ba = lyr.scaling["default"] * b @ lyr.lora_A["default"].weight.detach()
    torch.testing.assert_close(lyr.base_layer.weight.detach() + ba, w0, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------- other peft tuners
def prop_vera() -> None:
    """VeRA: the frozen random A, B are one pair shared by every layer; only d and b train."""
    model, _, _ = build("vera")
    layers = [m for m in model.modules() if hasattr(m, "vera_lambda_d") and "default" in m.vera_lambda_d]
    assert len(layers) == 4
    ptrs = {(m.vera_A["default"].data_ptr(), m.vera_B["default"].data_ptr()) for m in layers}
    assert len(ptrs) == 1
    assert all("vera_lambda" in n for n in trainable_names(model))


def prop_randlora() -> None:
    """RandLoRA: frozen random bases shared across layers; only the diagonal scalings train."""
    model, _, _ = build("randlora")
    layers = [m for m in model.modules() if hasattr(m, "randlora_lambda") and "default" in m.randlora_lambda]
    assert len({m.randlora_A["default"].data_ptr() for m in layers}) == 1
    assert all("randlora_lambda" in n or "randlora_gamma" in n for n in trainable_names(model))


def prop_loha() -> None:
    """LoHa: ΔW = scale·(W1a·W1b) ⊙ (W2a·W2b), a Hadamard product of two low-rank products."""
    model, base, _ = build("loha")
    randomize(model, 0.3)
    lyr = layer(model)
    w1 = lyr.hada_w1_a["default"] @ lyr.hada_w1_b["default"]
    w2 = lyr.hada_w2_a["default"] @ lyr.hada_w2_b["default"]
    expected = lyr.scaling["default"] * w1 * w2
    delta = merged_weight(model) - base_weight(base)
    torch.testing.assert_close(delta, expected.detach())
    assert torch.linalg.matrix_rank(delta) > lyr.r["default"]   # beyond the rank of either factor


def prop_lokr() -> None:
    """LoKr: ΔW = scale·(W1 ⊗ W2), a Kronecker product."""
    model, base, _ = build("lokr")
    randomize(model, 0.3)
    lyr = layer(model)
    w1 = lyr.lokr_w1["default"] if "default" in lyr.lokr_w1 else lyr.lokr_w1_a["default"] @ lyr.lokr_w1_b["default"]
    w2 = lyr.lokr_w2["default"] if "default" in lyr.lokr_w2 else lyr.lokr_w2_a["default"] @ lyr.lokr_w2_b["default"]
    expected = lyr.scaling["default"] * torch.kron(w1, w2)
    torch.testing.assert_close(merged_weight(model) - base_weight(base), expected.detach())


def prop_ia3() -> None:
    """(IA)³ only rescales activations: vectors initialised to 1 (model unchanged), one per target
    output (or FFN input) dimension, no matrices."""
    model, base, _ = build("ia3")
    torch.testing.assert_close(outputs(model), outputs(base))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert params and all(torch.all(p == 1) for p in params.values())
    for n, p in params.items():   # key/value: one scale per output unit; FFN-type layers: per input unit
        target = model.get_submodule(n.rsplit(".ia3_l", 1)[0])
        assert p.shape == ((1, target.in_features) if "output.dense" in n else (target.out_features, 1)), n
    assert any("output.dense" in n for n in params) and any("key" in n for n in params)


def prop_fourierft() -> None:
    """FourierFT: ΔW = scaling·Re(IDFT2(S)), S zero except the trained coefficients at fixed positions."""
    model, base, cfg = build("fourierft", n_frequency=40)
    randomize(model, 1.0)
    lyr = layer(model)
    idx = lyr.indices["default"]
    assert idx.shape == (2, 40)
    dense = torch.zeros(32, 32)
    dense[idx[0], idx[1]] = lyr.fourierft_spectrum["default"].detach()
    expected = torch.fft.ifft2(dense).real * cfg["params"]["scaling"]
    torch.testing.assert_close(merged_weight(model) - base_weight(base), expected, atol=1e-4, rtol=1e-4)
    again, _, _ = build("fourierft", n_frequency=40)   # the positions are fixed by the seed
    assert torch.equal(layer(again).indices["default"], idx)


def prop_waveft() -> None:
    """WaveFT: ΔW is the inverse (orthonormal Haar) wavelet transform of n coefficients at fixed positions:
    zero at init, and Parseval holds, ‖ΔW‖_F = scaling·‖c‖."""
    model, base, cfg = build("waveft", n_frequency=40)
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 1.0)
    coeffs = [p for n, p in model.named_parameters() if p.requires_grad and Q in n]
    assert sum(p.numel() for p in coeffs) == 40
    delta = merged_weight(model) - base_weight(base)
    norm_c = torch.cat([p.detach().flatten() for p in coeffs]).norm()
    ratio = float(delta.norm() / norm_c)
    assert ratio > 0
    # the scale is a constant of the transform (scaling and normalisation), the same for any coefficients
    randomize(model, 1.0, seed=7)
    delta2 = merged_weight(model) - base_weight(base)
    norm_c2 = torch.cat([p.detach().flatten() for p in coeffs]).norm()
    assert float(delta2.norm() / norm_c2) == pytest.approx(ratio, rel=1e-4)
    assert cfg["params"]["wavelet_family"] == "db1"


def _preserves_singular_values(name: str, scale: float = 0.02, **params: Any) -> Any:
    """An orthogonal update W = R·W0 (or W0·R) keeps every singular value of W0."""
    model, base, _ = build(name, **params)
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-5, rtol=1e-4)
    randomize(model, scale)
    merged, w0 = merged_weight(model), base_weight(base)
    assert not torch.allclose(merged, w0, atol=1e-4), f"{name}: randomised adapter changed nothing"
    torch.testing.assert_close(torch.linalg.svdvals(merged), torch.linalg.svdvals(w0), atol=1e-4, rtol=1e-3)
    return model


def prop_oft() -> None:
    """OFT: the learned matrix is (block-diagonal) orthogonal, so W0's singular values are kept."""
    _preserves_singular_values("oft", use_cayley_neumann=False)


def prop_hra() -> None:
    """HRA: a chain of r Householder reflections is orthogonal: singular values kept."""
    _preserves_singular_values("hra", scale=0.5)


def prop_road() -> None:
    """RoAd: each output pair is rotated by a learned angle (and scaled): with unit scales the update is a
    rotation, so singular values are kept; at init (θ=0, α=1) the model is unchanged."""
    model, base, _ = build("road")
    torch.testing.assert_close(outputs(model), outputs(base))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "road_theta" in n:
                p.copy_(torch.randn(p.shape, generator=g))
    merged, w0 = merged_weight(model), base_weight(base)
    assert not torch.allclose(merged, w0, atol=1e-3)
    torch.testing.assert_close(torch.linalg.svdvals(merged), torch.linalg.svdvals(w0), atol=1e-4, rtol=1e-3)


def prop_vblora() -> None:
    """VB-LoRA: every layer's A and B are mixtures of sub-vectors of one shared trainable vector bank."""
    model, _, _ = build("vblora")
    banks = {m.vblora_vector_bank["default"].data_ptr() for m in model.modules()
             if hasattr(m, "vblora_logits_A") and "default" in m.vblora_logits_A}
    assert len(banks) == 1
    bank_params = [n for n in trainable_names(model) if "vector_bank" in n]
    assert len(bank_params) == 1


def prop_miss() -> None:
    """MiSS: one trainable block is shared by every r-column shard of W, so ΔW repeats with period r
    along the input dimension."""
    model, base, cfg = build("miss", r=8)
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.1)
    delta = merged_weight(model) - base_weight(base)
    r = cfg["params"]["r"]
    shards = delta.split(r, dim=1)
    assert len(shards) == 32 // r
    for shard in shards[1:]:
        torch.testing.assert_close(shard, shards[0])
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and Q in n) == r * 32


def prop_gralora() -> None:
    """GraLoRA: k×k blocks with rank r/k each have exactly LoRA's parameter count at rank r."""
    model, _, cfg = build("gralora")
    lora, _, _ = build("lora", r=cfg["params"]["r"])
    assert model.get_nb_trainable_parameters()[0] == lora.get_nb_trainable_parameters()[0]


def prop_c3a() -> None:
    """C3A: ΔW is block-circulant: every b×b block is a circulant matrix (each row a shift of the first)."""
    model, base, _ = build("c3a", block_size=8)
    randomize(model, 1.0)
    delta = merged_weight(model) - base_weight(base)
    b = 8
    for i in range(0, 32, b):
        for j in range(0, 32, b):
            blk = delta[i:i + b, j:j + b]
            for k in range(1, b):
                torch.testing.assert_close(blk[k], torch.roll(blk[0], k), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and Q in n) == 32 * 32 // b


def prop_shira() -> None:
    """SHiRA: ΔW is sparse: exactly r·(m+n) entries of W0 train, at fixed mask positions."""
    model, base, cfg = build("shira")
    randomize(model, 1.0)
    delta = merged_weight(model) - base_weight(base)
    assert int(torch.count_nonzero(delta)) == cfg["params"]["r"] * (32 + 32)


def prop_ln_tuning() -> None:
    """LN tuning trains exactly the normalisation layers, every one of them."""
    for kind in ("encoder", "decoder"):
        model, base, _ = build("ln_tuning", kind=kind)
        norms = {n for n, m in base.named_modules() if "norm" in type(m).__name__.lower()}
        trained = trainable_names(model)
        assert trained and all("norm" in n.lower() for n in trained)
        layer_norms = {n for n in norms if ".layer" in n or "layers." in n}
        assert all(any(n + "." in t for t in trained) for n in layer_norms), (layer_norms, trained)


def prop_delora() -> None:
    """DeLoRA: ΔW = (λ‖W0‖/r)·Σ_i b_i a_iᵀ/(‖b_i‖‖a_i‖): its norm is bounded by λ·‖W0‖ whatever B, A."""
    model, base, _ = build("delora")
    torch.testing.assert_close(outputs(model), outputs(base))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and ("delora_A" in n or "delora_B" in n):
                p.copy_(torch.randn(p.shape, generator=g) * 10)
    lyr = layer(model)
    delta = merged_weight(model) - base_weight(base)
    lam = float(lyr.delora_lambda["default"].abs().max())
    assert 0 < float(delta.norm()) <= lam * float(base_weight(base).norm()) + 1e-4


def prop_tinylora() -> None:
    """TinyLoRA: ΔW = U_r Σ_r R V_rᵀ with R built from a u-dim trainable vector: it lies in W0's
    top-r singular subspaces, and a layer trains only u numbers."""
    model, base, cfg = build("tinylora")
    randomize(model, 0.5)
    delta = merged_weight(model) - base_weight(base)
    u_svd, _, vh = torch.linalg.svd(base_weight(base))
    r = cfg["params"]["r"]
    ur, vr = u_svd[:, :r], vh[:r].T
    assert float(delta.norm()) > 0
    torch.testing.assert_close(ur @ (ur.T @ delta @ vr) @ vr.T, delta, atol=1e-5, rtol=1e-4)
    per_layer = [p.numel() for n, p in model.named_parameters() if p.requires_grad]
    assert per_layer and max(per_layer) <= cfg["params"]["u"]


def prop_glora() -> None:
    """GLoRA: W = W0 + W0 ⊙ A + B (A, B low-rank paths here), zero at init."""
    model, base, cfg = build("glora")
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.3)
    lyr = layer(model)
    a = (lyr.glora_A["default"].Xd @ lyr.glora_A["default"].Xu).detach()
    b = (lyr.glora_B["default"].Xd @ lyr.glora_B["default"].Xu).detach()
    assert a.shape == b.shape == (32, 32) and cfg["params"]["config_A_B"] == "lora"
    torch.testing.assert_close(merged_weight(model) - base_weight(base), base_weight(base) * a + b,
                               atol=1e-6, rtol=1e-4)


def prop_lily() -> None:
    """Lily: adjacent layers (stride_A of them) share one A; the B experts are one set shared by every
    layer of a kind, mixed by each layer's own router."""
    model, _, _ = build("lily", stride_A=2)
    def mods(kind: str) -> list[Any]:
        return [m for n, m in model.named_modules() if n.endswith(kind) and hasattr(m, "lily_A")]

    for kind in ("query", "value"):
        ms = mods(kind)
        assert len(ms) == 2
        assert ms[0].lily_A["default"].weight.data_ptr() == ms[1].lily_A["default"].weight.data_ptr()
        assert ms[0].lily_B["default"].weight.data_ptr() == ms[1].lily_B["default"].weight.data_ptr()
        assert ms[0].lily_router["default"].weight.data_ptr() != ms[1].lily_router["default"].weight.data_ptr()
    apart, _, _ = build("lily", stride_A=1)
    ms = [m for n, m in apart.named_modules() if n.endswith("query") and hasattr(m, "lily_A")]
    assert ms[0].lily_A["default"].weight.data_ptr() != ms[1].lily_A["default"].weight.data_ptr()


def prop_pvera() -> None:
    """PVeRA: one frozen random A, B pair shared by all layers, only the scaling vectors train; the
    adapter samples z = μ + ε·σ in training (two passes differ) and uses μ at inference."""
    model, _, _ = build("pvera")
    layers = [m for m in model.modules() if hasattr(m, "pvera_lambda_d") and "default" in m.pvera_lambda_d]
    assert len(layers) == 4
    assert len({(m.pvera_A["default"].data_ptr(), m.pvera_B["default"].data_ptr()) for m in layers}) == 1
    assert all("pvera_lambda" in n for n in trainable_names(model))
    randomize(model, 1.0)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    model.train()
    with torch.no_grad():
        a, b = (model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state for _ in range(2))
    assert not torch.allclose(a, b)
    torch.testing.assert_close(outputs(model), outputs(model))


def prop_unilora() -> None:
    """Uni-LoRA: one trainable vector θ_d for the whole model; every layer's A and B are θ_d read at fixed
    indices times fixed scales, and ΔW = B·A."""
    model, base, cfg = build("unilora")
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 1 and params[0].numel() == cfg["params"]["theta_d_length"]
    randomize(model, 0.5)
    theta = params[0].detach()
    lyr = layer(model)
    a = theta[lyr.unilora_indices_A["default"]] * lyr.unilora_scales_A["default"]
    b = theta[lyr.unilora_indices_B["default"]] * lyr.unilora_scales_B["default"]
    assert a.shape == (cfg["params"]["r"], 32) and b.shape == (32, cfg["params"]["r"])
    torch.testing.assert_close(merged_weight(model) - base_weight(base), b @ a, atol=1e-6, rtol=1e-4)


def prop_beft() -> None:
    """BEFT: only an output bias of the value projections trains; the weights never change, and the
    layer's output moves by exactly that bias, for any input."""
    model, base, _ = build("beft")
    names = trainable_names(model)
    assert names and all("value" in n and "beft_bias" in n for n in names)
    randomize(model, 0.5)
    path = "encoder.layer.0.attention.self.value"
    lyr = model.get_submodule(f"base_model.model.{path}")
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        shift = lyr(x) - base.get_submodule(path)(x)
    torch.testing.assert_close(shift, lyr.beft_bias["default"].detach().flatten().expand(3, 32))
    torch.testing.assert_close(lyr.base_layer.weight, base_weight(base, path))


def prop_supertuning() -> None:
    """Super-Tuning: ΔW is non-zero exactly on the (1 − sparsity) largest-magnitude entries of W0."""
    model, base, cfg = build("supertuning")
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 1.0)
    delta = merged_weight(model) - base_weight(base)
    k = round((1 - cfg["params"]["sparsity"]) * 32 * 32)
    top = torch.zeros(32 * 32, dtype=torch.bool)
    top[base_weight(base).abs().flatten().topk(k).indices] = True
    assert torch.equal(delta.flatten() != 0, top)


def prop_peanut() -> None:
    """PEANuT: ΔW is a non-linear function of W0 itself: ΔW = s·(σ(W0ᵀAᵀ)·Bᵀ)ᵀ (depth 0), zero at init."""
    model, base, cfg = build("peanut")
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.3)
    lyr = layer(model)
    a, b = lyr.peanut_A["default"].weight.detach(), lyr.peanut_B["default"].weight.detach()
    w0 = base_weight(base)
    expected = cfg["params"]["scaling"] * (torch.relu(w0.T @ a.T) @ b.T).T
    torch.testing.assert_close(merged_weight(model) - w0, expected, atol=1e-6, rtol=1e-4)


def _hard_routed_poly(name: str, route: Callable[[int, int], bool]) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    """A Poly/MHR layer whose router picks, for split q, exactly the skills where route(q, skill) holds; the
    layer's output shift for inputs x (task ids supplied by the method's own hook) and x itself."""
    model, base, cfg = build(name)
    randomize(model, 0.3)
    splits, skills = cfg["params"]["n_splits"], cfg["params"]["n_skills"]
    lyr = layer(model)
    logits = torch.tensor([[30.0 if route(q, k) else -30.0 for k in range(skills)] for q in range(splits)])
    with torch.no_grad():
        lyr.poly_router["default"].module_logits.copy_(logits.view(1, -1))
    model.eval()
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        shift = lyr(x) - base.get_submodule(Q)(x)
    return lyr, cfg, x, shift


def prop_poly() -> None:
    """Poly: the layer mixes n_skills LoRAs with one learned routing vector (task 0): routed to skill 2
    alone, its update is exactly that skill's x·A₂·B₂/r."""
    lyr, cfg, x, shift = _hard_routed_poly("poly", lambda q, k: k == 2)
    a = lyr.poly_lora_A["default"][0, 2].detach()
    b = lyr.poly_lora_B["default"][0, 2].detach()
    torch.testing.assert_close(shift, x @ a @ b / cfg["params"]["r"], atol=1e-5, rtol=1e-4)


def prop_mhr() -> None:
    """MHR: each of the n_splits heads (a block of input features, and of outputs in B) routes on its own:
    with head q sent to skill q, A is the heads' A blocks of different skills stacked, and B likewise."""
    lyr, cfg, x, shift = _hard_routed_poly("mhr", lambda q, k: k == q)
    splits = cfg["params"]["n_splits"]
    assert splits > 1
    a = torch.cat([lyr.poly_lora_A["default"][q, q].detach() for q in range(splits)], dim=0)   # in × r
    b = torch.cat([lyr.poly_lora_B["default"][q, q].detach() for q in range(splits)], dim=1)   # r × out
    torch.testing.assert_close(shift, x @ a @ b / cfg["params"]["r"], atol=1e-5, rtol=1e-4)
    # ... which no single routing vector over whole skills gives: the heads took different skills
    single = [x @ lyr.poly_lora_A["default"][:, k].detach().reshape(32, -1)
              @ lyr.poly_lora_B["default"][:, k].detach().transpose(0, 1).reshape(-1, 32) / cfg["params"]["r"]
              for k in range(cfg["params"]["n_skills"])]
    assert all(not torch.allclose(shift, s_k, atol=1e-4) for s_k in single)


def prop_osf() -> None:
    """OSF: W0 = U_high Σ_high V_highᵀ (top effective_rank directions, frozen) + U_low Σ_low V_low (trained);
    the model is unchanged at init and every gradient of U_low / V_low is projected orthogonal to the
    frozen high subspace, so training never moves W0's principal directions."""
    model, base, cfg = build("osf")
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-5, rtol=1e-4)
    k = cfg["params"]["effective_rank"] or 32 // 2   # null: peft preserves half the smaller width
    u, _, vh = torch.linalg.svd(base_weight(base))
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    model.train()
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.pow(2).mean().backward()
    svd = layer(model).osf_svd_params["default"]
    g_u, g_v = svd["U_low"].grad, svd["V_low"].grad
    assert g_u.shape == (32, 32 - k) and g_v.shape == (32 - k, 32)
    assert g_u.norm() > 0 and g_v.norm() > 0
    assert float((u[:, :k].T @ g_u).norm()) < 1e-5 * float(g_u.norm()) + 1e-9
    assert float((g_v @ vh[:k].T).norm()) < 1e-5 * float(g_v.norm()) + 1e-9


# ----------------------------------------------------------------------------- prompt learning
def _decoder_virtual(name: str) -> tuple[Any, int]:
    model, _, cfg = build(name, kind="decoder")
    return model, cfg["params"]["num_virtual_tokens"]


def prop_prompt_tuning() -> None:
    """Prompt tuning: the only trainable tensor is n soft-token embeddings of the model's width."""
    model, n = _decoder_virtual("prompt_tuning")
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 1 and params[0].shape == (n, 32)


def prop_prefix_tuning() -> None:
    """Prefix tuning: a key and a value prefix of n positions at every layer (2·layers·width per token)."""
    model, n = _decoder_virtual("prefix_tuning")
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 1 and params[0].shape == (n, 2 * 2 * 32)


def prop_p_tuning() -> None:
    """P-tuning: the virtual tokens come out of a trainable prompt encoder (an MLP over embeddings)."""
    model, n = _decoder_virtual("p_tuning")
    enc = model.prompt_encoder["default"]
    assert any(isinstance(m, torch.nn.Linear) for m in enc.modules())
    assert enc(torch.arange(n).unsqueeze(0)).shape == (1, n, 32)


def prop_adaption_prompt() -> None:
    """LLaMA-Adapter: zero-initialised gates make the adapted model equal the base model at init."""
    model, base, _ = build("adaption_prompt", kind="decoder")
    torch.testing.assert_close(outputs(model), outputs(base))
    gates = [p for n, p in model.named_parameters() if "adaption_gate" in n]
    assert gates and all(torch.all(g == 0) for g in gates)


# ------------------------------------------------------------------------- custom (methods/<name>.py)
def custom_layer(model: torch.nn.Module, path: str = Q) -> Any:
    """A custom method's wrapper at a target path (methods/_adapters.AdapterLinear)."""
    return model.get_submodule(path)


def custom_delta(model: torch.nn.Module, base: torch.nn.Module, path: str = Q) -> torch.Tensor:
    """ΔW of one layer as the model computes it: its dense map minus W0 (forward on the identity)."""
    lyr = custom_layer(model, path)
    with torch.no_grad():
        dense = lyr(torch.eye(lyr.in_features)) - (lyr.base_layer.bias if lyr.base_layer.bias is not None else 0)
    return dense.T - base_weight(base, path)


def one_step(model: torch.nn.Module, kind: str = "encoder", lr: float = 1e-2) -> None:
    """One AdamW step on what trains (the harness's own optimizer when a method has none)."""
    from tests.methods.test_registry import _forward_backward

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    _forward_backward(model, kind)
    opt.step()
    opt.zero_grad(set_to_none=True)


def prop_lora_xs() -> None:
    """LoRA-XS: B = U_r, A = Σ_rV_rᵀ (W0's truncated SVD, Σ on A's side as in the authors' code) frozen; only the
    r×r R trains; ΔW = (α/r)·B·R·A; with R = 0 the model is W0 exactly, with σ = 1e-5 it is W0 up to O(σ)."""
    model, base, cfg = build("lora_xs")
    r, p = cfg["params"]["r"], cfg["params"]
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-4, rtol=0)
    trainable = {n: q for n, q in model.named_parameters() if q.requires_grad}
    assert trainable and all(n.endswith(".lora_R") and q.shape == (r, r) for n, q in trainable.items())
    lyr = custom_layer(model)
    u, s, vh = torch.linalg.svd(base_weight(base))
    torch.testing.assert_close(lyr.lora_B @ lyr.lora_A, u[:, :r] @ torch.diag(s[:r]) @ vh[:r], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lyr.lora_B.T @ lyr.lora_B, torch.eye(r), atol=1e-5, rtol=0)   # B = U_r: orthonormal
    torch.testing.assert_close(lyr.lora_A.norm(dim=1), s[:r], atol=1e-5, rtol=1e-4)          # A's rows: σ_i·v_iᵀ
    exact, base2, _ = build("lora_xs", init_std=0.0)
    torch.testing.assert_close(outputs(exact), outputs(base2))
    randomize(model, 0.1)
    expected = p["lora_alpha"] / r * lyr.lora_B @ lyr.lora_R.detach() @ lyr.lora_A
    torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lyr.delta_weight().detach(), expected, atol=1e-5, rtol=1e-4)


def prop_ffa_lora() -> None:
    """FFA-LoRA: A is random and non-zero but frozen (bit-identical after a training step), B starts at 0 and
    is the only factor that trains."""
    model, base, cfg = build("ffa_lora")
    torch.testing.assert_close(outputs(model), outputs(base))
    lyr = custom_layer(model)
    a0 = lyr.lora_A.clone()
    assert torch.count_nonzero(a0) == a0.numel() and not lyr.lora_A.requires_grad
    assert torch.all(lyr.lora_B == 0) and lyr.lora_B.requires_grad
    assert {n.rsplit(".", 1)[-1] for n in trainable_names(model)} == {"lora_B"}
    one_step(model)
    assert torch.equal(lyr.lora_A, a0)
    assert torch.count_nonzero(lyr.lora_B) > 0
    expected = cfg["params"]["lora_alpha"] / cfg["params"]["r"] * lyr.lora_B.detach() @ lyr.lora_A
    torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)


def prop_allora() -> None:
    """ALLoRA: no dropout and no α/r (ΔW = B·A exactly, model unchanged at init); the gradient reaching A and B
    through output unit i is multiplied by s_i = 1/√(‖(B·A)_i‖² + 1/η²), the input's gradient is not, and at
    init (B = 0) every s_i is the cap η."""
    model, base, cfg = build("allora")
    from methods._adapters import adapter_layers
    from methods.allora import allora_coefficient

    assert not any(isinstance(m, torch.nn.Dropout) for _, lyr in adapter_layers(model) for m in lyr.modules())
    assert "lora_dropout" not in cfg["params"] and "lora_alpha" not in cfg["params"]
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.3)
    lyr = custom_layer(model)
    torch.testing.assert_close(custom_delta(model, base), (lyr.lora_B @ lyr.lora_A).detach(), atol=1e-5, rtol=1e-4)

    eta = cfg["params"]["eta"]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 5, lyr.in_features, generator=g)
    up = torch.randn(2, 5, lyr.out_features, generator=g)   # the output gradient δ

    def grads(layer: Any, rescale: bool) -> dict[str, torch.Tensor]:
        layer.rescale = rescale
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        (layer(x) * up).sum().backward()
        return {"x": x.grad, "A": layer.lora_A.grad.clone(), "B": layer.lora_B.grad.clone()}

    plain, scaled = grads(lyr, False), grads(lyr, True)
    a, b = lyr.lora_A.detach(), lyr.lora_B.detach()
    s = 1.0 / torch.sqrt((b @ a).pow(2).sum(dim=1) + 1.0 / eta**2)
    torch.testing.assert_close(allora_coefficient(b @ a, eta), s)
    assert float(s.max() / s.min()) > 1.01                    # units differ: a real per-unit coefficient
    torch.testing.assert_close(scaled["x"], plain["x"])         # earlier layers see plain LoRA's gradient
    torch.testing.assert_close(scaled["B"], plain["B"] * s[:, None], atol=1e-6, rtol=1e-4)
    d, xs = up.reshape(-1, lyr.out_features), x0.reshape(-1, lyr.in_features)
    torch.testing.assert_close(scaled["A"], b.T @ (d * s).T @ xs, atol=1e-5, rtol=1e-4)   # ∂L/∂A = Bᵀ·diag(s)·δᵀ·x
    ratio = scaled["A"] / plain["A"]                            # mixed across units: no per-row factor of A
    assert float((ratio.std(dim=1) / ratio.abs().mean(dim=1)).min()) > 1e-3
    # at init B = 0: every unit's coefficient is the cap η
    fresh_model, _, _ = build("allora")
    f = custom_layer(fresh_model)
    assert float(f.lora_B.abs().sum()) == 0
    torch.testing.assert_close(grads(f, True)["B"], grads(f, False)["B"] * eta)


def prop_tied_lora() -> None:
    """Tied-LoRA: one A and one B per target kind, the same tensor in every layer; each layer trains only its
    own u, v: ΔW_l = (α/r)·diag(v_l)·B·diag(u_l)·A."""
    model, base, cfg = build("tied_lora")
    torch.testing.assert_close(outputs(model), outputs(base))
    layers = {n: m for n, m in model.named_modules() if hasattr(m, "tied")}
    by_kind: dict[str, set[int]] = {}
    for n, m in layers.items():
        by_kind.setdefault(n.rsplit(".", 1)[-1], set()).add(id(m.tied.lora_A))
    assert sorted(by_kind) == ["query", "value"] and all(len(ids) == 1 for ids in by_kind.values())
    q0, q1 = layers[Q], layers[Q.replace("layer.0", "layer.1")]
    assert q0.tied.lora_A is q1.tied.lora_A and q0.tied.lora_B is q1.tied.lora_B
    assert q0.lora_u is not q1.lora_u
    one_step(model)   # a shared tensor stays shared through training
    assert q0.tied.lora_B is q1.tied.lora_B and torch.count_nonzero(q0.tied.lora_B) > 0
    randomize(model, 0.2)
    for lyr, path in ((q0, Q), (q1, Q.replace("layer.0", "layer.1"))):
        expected = (cfg["params"]["lora_alpha"] / cfg["params"]["r"] * torch.diag(lyr.lora_v) @ lyr.tied.lora_B
                    @ torch.diag(lyr.lora_u) @ lyr.tied.lora_A).detach()
        torch.testing.assert_close(custom_delta(model, base, path), expected, atol=1e-5, rtol=1e-4)


def prop_nola() -> None:
    """NOLA: the trainable tensors are exactly the 2k mixture coefficients per layer; A and B are those
    mixtures of frozen bases regenerated from the seed (the same seed gives the same bases)."""
    model, base, cfg = build("nola", num_basis=12)
    p = cfg["params"]
    torch.testing.assert_close(outputs(model), outputs(base))
    trainable = {n: q for n, q in model.named_parameters() if q.requires_grad}
    assert {n.rsplit(".", 1)[-1] for n in trainable} == {"nola_alpha", "nola_beta"}
    assert all(q.shape == (12,) for q in trainable.values())
    assert sum(q.numel() for q in trainable.values()) == 2 * 12 * 4
    randomize(model, 0.5)
    lyr = custom_layer(model)
    a = lyr.lora_A0 + torch.einsum("k,kri->ri", lyr.nola_alpha, lyr.basis_A)
    b = torch.einsum("k,kor->or", lyr.nola_beta, lyr.basis_B)
    torch.testing.assert_close(custom_delta(model, base), (p["lora_alpha"] / p["r"] * b @ a).detach(),
                               atol=1e-5, rtol=1e-4)
    again, _, _ = build("nola", num_basis=12)
    assert torch.equal(custom_layer(again).basis_A, lyr.basis_A)
    other, _, _ = build("nola", num_basis=12, seed=p["seed"] + 1)
    assert not torch.equal(custom_layer(other).basis_A, lyr.basis_A)
    assert not any("basis" in k or "A0" in k for k in model.state_dict() if "lora" in k or "basis" in k)


def prop_singlora() -> None:
    """SingLoRA: one trainable A; ΔW = (α/r)·u(t)·A·Aᵀ is symmetric on a square layer; u(t) = min(t/T, 1) is 0
    before any step (W0 exactly) and advanced by the method's per-step callback; a non-square layer uses
    A[:d_out]·A[:d_in]ᵀ."""
    model, base, cfg = build("singlora")
    p = cfg["params"]
    k, T = p["lora_alpha"] / p["r"], p["ramp_up_steps"]
    torch.testing.assert_close(outputs(model), outputs(base))   # eval before training: u(0) = 0
    assert {n.rsplit(".", 1)[-1] for n in trainable_names(model)} == {"lora_A"}
    randomize(model, 0.3)
    lyr = custom_layer(model)
    a = lyr.lora_A.detach()
    assert a.shape == (32, p["r"])
    impl = methods.resolve(cfg)
    impl.callback(model, T - 1, 1000)           # after T optimizer steps the ramp is complete
    model.eval()
    delta = custom_delta(model, base)
    torch.testing.assert_close(delta, k * a @ a.T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(delta, delta.T, atol=1e-6, rtol=0)
    impl.callback(model, T // 4 - 1, 1000)      # after T/4 steps: u = 1/4 in evaluation ...
    torch.testing.assert_close(custom_delta(model, base), k * (T // 4) / T * a @ a.T, atol=1e-5, rtol=1e-4)
    lyr.train()                                 # ... and the forward of the next step uses u(T/4 + 1)
    torch.testing.assert_close(lyr.delta_weight().detach(), k * (T // 4 + 1) / T * a @ a.T, atol=1e-5, rtol=1e-4)
    # a non-square layer (down_proj: 64 → 32): A has 64 rows, ΔW = A[:32]·A[:64]ᵀ
    dec, dbase, _ = build("singlora", kind="decoder", target_modules=["down_proj"])
    randomize(dec, 0.3)
    impl.callback(dec, T, 1000)
    path = "model.layers.0.mlp.down_proj"
    a = custom_layer(dec, path).lora_A.detach()
    assert a.shape == (64, p["r"])
    torch.testing.assert_close(custom_delta(dec, dbase, path), k * a[:32] @ a.T, atol=1e-5, rtol=1e-4)


def _mora_matrices(r_hat: int, d_in: int, d_out: int, mora_type: int) -> tuple[Any, Any]:
    """MoRA's compression (r̂·n × d_in, from the padded chunks) and decompression (d_out × rows) as 0/1
    matrices, built position by position from the paper's description."""
    n = -(-d_in // r_hat)
    comp = torch.zeros(n * r_hat, d_in)
    for pos in range(n * r_hat):          # padded position → the input feature it repeats
        comp[pos, pos % d_in] = 1.0
    rows = r_hat if mora_type == 1 else n * r_hat
    decomp = torch.zeros(d_out, rows)
    for o in range(d_out):                # output o repeats row o mod rows
        decomp[o, o % rows] = 1.0
    return comp, decomp


def prop_mora() -> None:
    """MoRA: one trainable square M (r̂×r̂, r̂ = ⌊√((d_in + d_out)·r)⌉, even for the rotation type), zero at init;
    type 1: ΔW = Decomp·M·Σ_chunks; type 6: ΔW = Decomp·blockdiag(M·Rot_i)·Comp with Rot_i the rotary
    rotation of chunk i; either way the update's rank exceeds LoRA's r at the same parameter count."""
    for mora_type in (1, 6):
        model, base, cfg = build("mora", mora_type=mora_type)
        r = cfg["params"]["r"]
        torch.testing.assert_close(outputs(model), outputs(base))
        r_hat = int((64 * r) ** 0.5 + 0.5)
        r_hat -= r_hat % 2 if mora_type == 6 else 0
        params = {n: q for n, q in model.named_parameters() if q.requires_grad}
        assert all(n.endswith(".lora_M") and q.shape == (r_hat, r_hat) for n, q in params.items())
        assert sum(q.numel() for q in params.values()) == 4 * r_hat**2
        randomize(model, 0.3)
        m = custom_layer(model).lora_M.detach()
        comp, decomp = _mora_matrices(r_hat, 32, 32, mora_type)
        n = comp.shape[0] // r_hat
        if mora_type == 1:
            summed = sum(comp[i * r_hat:(i + 1) * r_hat] for i in range(n))
            expected = decomp @ m @ summed
        else:
            half = r_hat // 2
            swap = torch.zeros(r_hat, r_hat)   # rotate_half as a matrix: (x1, x2) → (-x2, x1)
            swap[torch.arange(half), torch.arange(half) + half] = -1.0
            swap[torch.arange(half) + half, torch.arange(half)] = 1.0
            inv_freq = 1.0 / (10000 ** (torch.arange(0, r_hat, 2).float() / r_hat))
            blocks = []
            for i in range(n):
                ang = torch.cat([i * inv_freq, i * inv_freq])
                blocks.append(m @ (torch.diag(ang.cos()) + torch.diag(ang.sin()) @ swap))
            expected = decomp @ torch.block_diag(*blocks) @ comp
        delta = custom_delta(model, base)
        torch.testing.assert_close(delta, expected, atol=1e-5, rtol=1e-4)
        assert torch.linalg.matrix_rank(delta) > r


def prop_lora_sb() -> None:
    """LoRA-SB: the init hook sets B·R·A to the best rank-r approximation of the first full fine-tuning step
    under Adam, -η·sign(∂L/∂W0) on the training batches (B, A orthonormal, R diagonal); W0 is untouched and
    only R trains afterwards."""
    model, base, cfg = build("lora_sb", kind="decoder")
    p = cfg["params"]
    r, lr = p["r"], p["init_lr"]
    torch.testing.assert_close(outputs(model), outputs(base))   # before the init: W0 (R = 0)
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(5))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    base.eval()
    base(**batch).loss.backward()   # the gradient the estimate must come from: the base model's
    paths = [n for n, _ in model.named_modules() if n.endswith(("q_proj", "v_proj"))]
    w0 = {n: custom_layer(model, n).base_layer.weight.detach().clone() for n in paths}
    methods.resolve(cfg).init(model, iter([batch, batch, batch]))
    assert trainable_names(model) and all(n.endswith(".lora_R") for n in trainable_names(model))
    assert all(q.grad is None for q in model.parameters())
    for n in paths:
        lyr = custom_layer(model, n)
        assert torch.equal(lyr.base_layer.weight, w0[n]) and not lyr.base_layer.weight.requires_grad
        update = -lr * torch.sign(base.get_submodule(n).weight.grad)
        u, s, vh = torch.linalg.svd(update)
        best = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
        torch.testing.assert_close((lyr.lora_B @ lyr.lora_R @ lyr.lora_A).detach(), best, atol=1e-9, rtol=1e-4)
        torch.testing.assert_close(lyr.lora_B.T @ lyr.lora_B, torch.eye(r), atol=1e-5, rtol=0)
        torch.testing.assert_close(lyr.lora_A @ lyr.lora_A.T, torch.eye(r), atol=1e-5, rtol=0)
        torch.testing.assert_close(lyr.lora_R.detach(), torch.diag(torch.diagonal(lyr.lora_R.detach())))
    lyr = custom_layer(model, paths[0])
    b0, a0, r0 = lyr.lora_B.clone(), lyr.lora_A.clone(), lyr.lora_R.detach().clone()
    one_step(model, "decoder")
    assert torch.equal(lyr.lora_B, b0) and torch.equal(lyr.lora_A, a0) and not torch.equal(lyr.lora_R, r0)


def prop_lamda() -> None:
    """LaMDA: A frozen, S (r×r) and B trainable, ΔW = (α/r)·B·S·A; after step s the first ⌊s/(η·T)⌋ columns of
    B no longer change (gradient cut, and restored against the optimizer's momentum), all of B once that
    reaches r, while S keeps training."""
    model, base, cfg = build("lamda", freeze_fraction=0.25)
    p = cfg["params"]
    r = p["r"]
    torch.testing.assert_close(outputs(model), outputs(base))
    assert {n.rsplit(".", 1)[-1] for n in trainable_names(model)} == {"lora_S", "lora_B"}
    lyr = custom_layer(model)
    a0 = lyr.lora_A.clone()
    callback = methods.resolve(cfg).callback
    total = 4 * r   # η·T = 0.25·4r = r steps per frozen column: column j freezes after step (j + 1)·r
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-2)
    from tests.methods.test_registry import _forward_backward

    history = []
    for step in range(total):
        model.train()
        _forward_backward(model, "encoder")
        opt.step()
        callback(model, step, total)
        opt.zero_grad(set_to_none=True)
        history.append((lyr.lora_B.detach().clone(), lyr.lora_S.detach().clone()))
    b_r, _ = history[r - 1]          # after step r: column 0 frozen
    b_2r, s_2r = history[2 * r - 1]  # after step 2r: columns 0, 1 frozen
    b_end, s_end = history[-1]
    assert torch.equal(b_end[:, 0], b_r[:, 0]) and torch.equal(b_end[:, 1], b_2r[:, 1])
    assert not torch.equal(b_2r[:, 1], b_r[:, 1])   # column 1 still trained between steps r and 2r
    assert not torch.equal(b_end[:, 2:], b_2r[:, 2:]) and not torch.equal(s_end, s_2r)
    assert torch.equal(lyr.lora_A, a0)
    assert int(lyr.b_frozen_cols) == min(r, total // r) and lyr.lora_B.requires_grad
    callback(model, r * r - 1, total)   # step r² = r·(η·T): the schedule reaches r columns: B is frozen entirely
    assert not lyr.lora_B.requires_grad and trainable_names(model) and all(
        n.endswith("lora_S") for n in trainable_names(model))
    randomize(model, 0.2)
    expected = (p["lora_alpha"] / r * lyr.lora_B @ lyr.lora_S @ lyr.lora_A).detach()
    torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)


def prop_dylora() -> None:
    """DyLoRA: at every rank b ≤ r the adapter is exactly a rank-b LoRA built from A[:b], B[:, :b] with scale α/b
    (the same model as peft's LoRA at r = b, α); a training forward at the sampled rank b sends gradient to the b-th
    component only (the authors' frozen mode); the per-step rank is uniform on [r_min, r], the same in every
    layer, and reproducible from the seed."""
    from peft import LoraConfig, get_peft_model

    from methods.dylora import layers, sample_rank

    model, base, cfg = build("dylora", sampler_seed=7)
    p = cfg["params"]
    r, alpha = p["r"], p["lora_alpha"]
    impl = methods.resolve(cfg)
    torch.testing.assert_close(outputs(model), outputs(base))   # B = 0: W0 at init, at every rank
    randomize(model, 0.2)
    variants = impl.eval_variants(model, cfg)
    assert [name for name, _ in variants] == [f"r={b}" for b in range(1, r)]   # r itself: the primary evaluation
    full = outputs(model)
    for b in range(1, r + 1):
        context = dict(variants).get(f"r={b}")
        with context if context is not None else contextlib.nullcontext():
            got = outputs(model)
            lyr = custom_layer(model)
            expected = (alpha / b * lyr.lora_B[:, :b] @ lyr.lora_A[:b]).detach()
            torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)
        # a LoRA of rank b from the first b rows of A / columns of B gives the same model
        lora = get_peft_model(tiny_bert(), LoraConfig(r=b, lora_alpha=alpha, target_modules=["query", "value"]))
        with torch.no_grad():
            for path, dy in ((n, m) for n, m in model.named_modules() if m in layers(model)):
                peft_layer = lora.get_submodule(f"base_model.model.{path}")
                peft_layer.lora_A["default"].weight.copy_(dy.lora_A[:b])
                peft_layer.lora_B["default"].weight.copy_(dy.lora_B[:, :b])
        torch.testing.assert_close(got, outputs(lora), atol=1e-5, rtol=1e-4)
        assert b == r or not torch.allclose(got, full, atol=1e-4)   # truncation changes the model
    assert all(m.eval_rank is None for m in layers(model))          # every context restored the full rank

    # training at the sampled rank b: only the b-th component gets gradient
    from tests.methods.test_registry import _forward_backward

    b = 3
    for m in layers(model):
        m.set_train_rank(b)
    model.train()
    _forward_backward(model, "encoder")
    lyr = custom_layer(model)
    rows = lyr.lora_A.grad.abs().sum(dim=1)
    cols = lyr.lora_B.grad.abs().sum(dim=0)
    assert rows[b - 1] > 0 and cols[b - 1] > 0
    assert torch.count_nonzero(rows) == 1 and torch.count_nonzero(cols) == 1

    # the sampler: uniform on [r_min, r] (a χ² check on 4000 draws), one rank for all layers, reproducible
    draws = torch.tensor([sample_rank(7, t, 2, 6) for t in range(4000)])
    counts = torch.bincount(draws, minlength=7)[2:].float()
    assert draws.min() == 2 and draws.max() == 6
    assert float(((counts - 800) ** 2 / 800).sum()) < 18.5   # χ²(4 dof) 99.9% quantile
    seen = []
    for step in range(12):
        impl.callback(model, step, 100)
        ranks = {m.train_rank for m in layers(model)} | {int(m.rank_b) for m in layers(model)}
        assert len(ranks) == 1
        seen.append(ranks.pop())
    assert seen == [sample_rank(7, t + 1, 1, r) for t in range(12)] and len(set(seen)) > 1
    again, _, _ = build("dylora", sampler_seed=7)
    other, _, _ = build("dylora", sampler_seed=8)
    assert custom_layer(again).train_rank == sample_rank(7, 0, 1, r)
    assert [sample_rank(8, t, 1, r) for t in range(12)] != [sample_rank(7, t, 1, r) for t in range(12)]
    assert custom_layer(other).sampler_seed == 8


def prop_elalora() -> None:
    """ElaLoRA: ΔW = (α/r₀)·P·diag(Λ)·Q (Λ = 0 at init: W0); the orthogonality penalty's gradient is added to P's
    and Q's; driven by a constructed gradient signal (layer 0's elements matter most, layer 3's least) the callback
    prunes the weakest layers' components and grows the strongest's, ranks both shrink and grow, the total stays
    r × layers after every round, a grown component leaves the model unchanged, the optimizer's moments follow
    their components, and the saved adapter records and restores the moved ranks."""
    import json
    import tempfile
    from pathlib import Path

    from methods import _adapters
    from methods.elalora import ElaLoraLinear, layers, orth_gradient

    model, base, cfg = build("elalora", kind="decoder")
    p = cfg["params"]
    r, alpha = p["r"], p["lora_alpha"]
    impl = methods.resolve(cfg)
    torch.testing.assert_close(outputs(model), outputs(base))
    found = layers(model)
    assert len(found) == 4 and all(m.rank == r for m in found)
    path = "model.layers.0.self_attn.q_proj"
    lyr = custom_layer(model, path)
    randomize(model, 0.2)
    expected = (alpha / r * lyr.lora_B @ torch.diag(lyr.lora_E) @ lyr.lora_A).detach()
    torch.testing.assert_close(custom_delta(model, base, path), expected, atol=1e-5, rtol=1e-4)

    # the penalty: the gradient equals autograd's of loss + w·(‖AAᵀ − I‖_F + ‖BᵀB − I‖_F)
    from tests.methods.test_registry import _forward_backward

    w = lyr.orth_weight
    assert w == pytest.approx(p["reg_orth_coef"] / 8)
    model.train()
    _forward_backward(model, "decoder")
    with_penalty = lyr.lora_A.grad.clone(), lyr.lora_B.grad.clone()
    model.zero_grad(set_to_none=True)
    for m in found:
        m.orth_weight = 0.0
    _forward_backward(model, "decoder")
    a, b = lyr.lora_A.detach().requires_grad_(), lyr.lora_B.detach().requires_grad_()
    penalty = w * (torch.linalg.matrix_norm(a @ a.T - torch.eye(r)) + torch.linalg.matrix_norm(b.T @ b - torch.eye(r)))
    penalty.backward()
    torch.testing.assert_close(with_penalty[0], lyr.lora_A.grad + a.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(with_penalty[1], lyr.lora_B.grad + b.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(a.grad, orth_gradient(a.detach(), w, rows=True))
    model.zero_grad(set_to_none=True)

    # a constructed gradient signal through the method's optimizer and callback
    model, base, cfg = build("elalora", kind="decoder", b=2, k=1, rank_scheduler=False, init_warmup=0.1,
                             final_warmup=0.1, mask_interval=0.1)
    randomize(model, 0.2)
    found = layers(model)
    opt = impl.optimizer(model, cfg)
    total = 60
    strength = [10.0, 3.0, 1.0, 0.01]   # layer i's elements matter in proportion
    g = torch.Generator().manual_seed(0)
    history = []
    first_round = round(0.1 * total) * 2   # step > init warm-up, at a multiple of the interval (6 steps)
    for step in range(total):
        for m, s in zip(found, strength, strict=True):
            for name in ("lora_A", "lora_E", "lora_B"):
                q = getattr(m, name)
                q.grad = torch.randn(q.shape, generator=g) * s * 1e-3
        opt.step()
        before = [m.rank for m in found]
        if step == first_round:
            old_exp = opt.state[found[0].lora_A]["exp_avg"].clone()
            old_a = found[0].lora_A.detach().clone()
        impl.callback(model, step, total)
        ranks = [m.rank for m in found]
        is_round = 6 < step < 54 and (step - 6) % 6 == 0   # after the initial, before the final warm-up
        assert (ranks != before) == is_round, step
        if step == first_round:   # b = 2 moved: the two weakest layers lose one, the two strongest gain one
            assert ranks == [r + 1, r + 1, r - 1, r - 1]
            new_exp = opt.state[found[0].lora_A]["exp_avg"]   # moments follow their components; new ones: 0
            torch.testing.assert_close(new_exp[:r], old_exp)
            assert new_exp.shape[0] == r + 1 and torch.all(new_exp[r:] == 0)
            a0 = found[0].lora_A.detach()
            torch.testing.assert_close(a0[:r], old_a)
            assert float(a0[r].norm()) == pytest.approx(1.0, abs=1e-4)
            # the new row: a random vector minus its projection on the kept rows (the authors' one pass), unit
            v = torch.randn(32, generator=torch.Generator().manual_seed(first_round * 1_000_003 + 0))
            v = v - old_a.T @ (old_a @ v)
            torch.testing.assert_close(a0[r], v / (v.norm() + 1e-6), atol=1e-5, rtol=1e-4)
        for m in found:
            assert m.lora_A.shape[0] == m.lora_E.shape[0] == m.lora_B.shape[1] == m.rank
            assert m.ipt_lora_A.shape == m.lora_A.shape and m.unc_lora_B.shape == m.lora_B.shape
        assert sum(ranks) == r * 4 and min(ranks) >= 1   # the budget
        history.append(ranks)
        opt.zero_grad(set_to_none=True)
    final = history[-1]
    assert final[0] > r and final[3] < r   # the strongest layer grew, the weakest shrank
    assert any(h != history[0] for h in history) and history[-1] == history[-2]   # fixed in the final warm-up
    assert all(max(h) <= r + 60 for h in history)

    # growing alone does not change the model: Λ of a new component is ~0
    from methods.elalora import reallocate

    pure, _, _ = build("elalora", kind="decoder")
    randomize(pure, 0.2)
    before = outputs(pure)
    m = layers(pure)[1]
    m.resize(torch.arange(m.rank), 3, torch.Generator().manual_seed(1))
    assert m.rank == r + 3 and float(m.lora_E[r:].abs().max()) <= 1e-13
    torch.testing.assert_close(outputs(pure), before)
    reallocate(layers(pure), 0, 1, 0)   # a round that moves nothing leaves every layer alone
    assert [x.rank for x in layers(pure)] == [r, r + 3, r, r]

    # save / load with the moved ranks: the shapes in adapter_config.json are the per-layer ranks
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/adapter"
        expected_out = outputs(model)
        _adapters.save(model, out, cfg, TINY_DECODER_CFG)
        meta = json.loads((Path(out) / _adapters.CONFIG_FILE).read_text())
        paths = [n for n, x in model.named_modules() if isinstance(x, ElaLoraLinear)]
        assert [meta["tensors"][f"{n}.lora_E"]["shape"][0] for n in paths] == final
        assert not any(k.split(".")[-1].startswith(("ipt_", "unc_")) for k in meta["tensors"])
        reloaded = _adapters.load(tiny_llama(), out)
        assert [x.rank for x in layers(reloaded)] == final
        torch.testing.assert_close(outputs(reloaded), expected_out)


def prop_sora() -> None:
    """SoRA: ΔW = (α/r)·B·diag(g)·A (W0 at init: B = 0); the method's optimizer soft-thresholds the gate after its
    AdamW step: with no gradient (Adam moves nothing) gate entries with |g| ≤ ξ become exactly 0 and the others shrink
    by exactly ξ, while A and B are never thresholded; with a gradient the gate equals AdamW's step followed by
    sign(g)·max(|g| − ξ, 0); a zero gate entry removes its rank-1 component from ΔW."""
    from methods.sora import layers, soft_threshold_

    model, base, cfg = build("sora")
    p = cfg["params"]
    r, alpha, xi = p["r"], p["lora_alpha"], p["threshold"]
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.2)
    lyr = custom_layer(model)
    expected = (alpha / r * lyr.lora_B @ torch.diag(lyr.gate) @ lyr.lora_A).detach()
    torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)

    impl = methods.resolve(cfg)
    opt = impl.optimizer(model, cfg)
    g0 = torch.tensor([0.5, -0.5, 0.5 * xi, -0.5 * xi, xi, 0.0, 2.0, -3 * xi])[:r]
    with torch.no_grad():
        for m in layers(model):
            m.gate.copy_(g0)
    a0, b0 = lyr.lora_A.detach().clone(), lyr.lora_B.detach().clone()
    for q in model.parameters():
        if q.requires_grad:
            q.grad = torch.zeros_like(q)
    opt.step()
    shrunk = torch.sign(g0) * (g0.abs() - xi).clamp_min(0)
    torch.testing.assert_close(lyr.gate.detach(), shrunk, atol=1e-12, rtol=0)
    assert torch.all(lyr.gate[g0.abs() <= xi] == 0)   # exactly zero, not small
    assert torch.equal(lyr.lora_A, a0) and torch.equal(lyr.lora_B, b0)   # only the gate is thresholded
    assert (lyr.lora_A.abs() < xi).any()   # ... though A has entries below ξ

    # with a real gradient: AdamW's step, then the proximal map
    from tests.methods.test_registry import _forward_backward

    opt = impl.optimizer(model, cfg)
    model.train()
    _forward_backward(model, "encoder")
    ref = lyr.gate.detach().clone().requires_grad_()
    ref.grad = lyr.gate.grad.clone()
    ref_opt = torch.optim.AdamW([ref], lr=cfg["optim"]["lr"], weight_decay=0.0)
    ref_opt.step()
    soft_threshold_(ref.data, xi)
    opt.step()
    torch.testing.assert_close(lyr.gate.detach(), ref.detach(), atol=1e-7, rtol=1e-6)
    assert lyr.rank == int(torch.count_nonzero(lyr.gate))

    # a zero gate entry removes its component
    with torch.no_grad():
        lyr.gate[0] = 0.0
    keep = torch.arange(1, r)
    expected = (alpha / r * lyr.lora_B[:, keep] @ torch.diag(lyr.gate[keep]) @ lyr.lora_A[keep]).detach()
    torch.testing.assert_close(custom_delta(model, base), expected, atol=1e-5, rtol=1e-4)


def prop_lora_pro() -> None:
    """LoRA-Pro: on a small case with a known full gradient G, the adjusted gradients' equivalent gradient
    s·(B·g_A + g_B·A) equals the closed-form projection P_B·G + (I − P_B)·G·P_A (P_B, P_A the orthogonal projectors
    on B's columns and A's rows), which is at least as close to G as LoRA's own equivalent gradient; X solves the
    Sylvester equation and is the stationary point of ‖g_A − g_A^lora‖² + ‖g_B − g_B^lora‖²; the method's optimizer
    hands exactly these gradients to AdamW."""
    from methods.lora_pro import adjusted_gradients, solve_sylvester

    gen = torch.Generator().manual_seed(0)
    m, n, r, s = 10, 12, 3, 2.0
    a = torch.randn(r, n, generator=gen).requires_grad_()
    b = torch.randn(m, r, generator=gen).requires_grad_()
    full = torch.randn(m, n, generator=gen)   # G = ∂L/∂W for L = ⟨G, W0 + s·B·A⟩
    (full * (s * b @ a)).sum().backward()
    torch.testing.assert_close(a.grad, s * b.detach().T @ full)
    torch.testing.assert_close(b.grad, s * full @ a.detach().T)
    a, b, ga, gb = a.detach(), b.detach(), a.grad, b.grad
    new_a, new_b = adjusted_gradients(a, b, ga, gb, s)
    equiv = s * (b @ new_a + new_b @ a)
    pb = b @ torch.linalg.pinv(b)
    pa = torch.linalg.pinv(a) @ a
    projection = pb @ full + (torch.eye(m) - pb) @ full @ pa
    torch.testing.assert_close(equiv, projection, atol=1e-4, rtol=1e-4)
    lora_equiv = s * (b @ ga + gb @ a)
    assert float((equiv - full).norm()) <= float((lora_equiv - full).norm())
    assert not torch.allclose(lora_equiv, projection, atol=1e-2)   # the adjustment changes something

    # X: the Sylvester solution, and the minimiser of the distance to LoRA's gradients over the family
    btb, aat = b.T @ b, a @ a.T
    btb_inv, aat_inv = torch.linalg.inv(btb), torch.linalg.inv(aat)
    c = -(1 / s**2) * btb_inv @ ga @ a.T
    x = solve_sylvester(btb, aat, c)
    torch.testing.assert_close(btb @ x + x @ aat, c, atol=1e-5, rtol=1e-4)
    xv = x.clone().double().requires_grad_()
    a64, b64, ga64, gb64 = a.double(), b.double(), ga.double(), gb.double()
    fa = (1 / s**2) * btb_inv.double() @ ga64 + xv @ a64
    fb = (1 / s**2) * (torch.eye(m, dtype=torch.float64) - b64 @ btb_inv.double() @ b64.T) @ gb64 @ aat_inv.double() \
        - b64 @ xv
    ((fa - ga64).pow(2).sum() + (fb - gb64).pow(2).sum()).backward()
    assert float(xv.grad.abs().max()) < 1e-4 * float(ga.abs().max() + gb.abs().max())
    torch.testing.assert_close(new_a, fa.detach().float(), atol=1e-4, rtol=1e-4)

    # the method's optimizer: the gradients AdamW sees are the adjusted ones
    from tests.methods.test_registry import _forward_backward

    model, base, cfg = build("lora_pro")
    torch.testing.assert_close(outputs(model), outputs(base))
    randomize(model, 0.2)
    lyr = custom_layer(model)
    opt = methods.resolve(cfg).optimizer(model, cfg)
    model.train()
    _forward_backward(model, "encoder")
    a0, b0, ga0, gb0 = lyr.lora_A.detach().clone(), lyr.lora_B.detach().clone(), lyr.lora_A.grad.clone(), \
        lyr.lora_B.grad.clone()
    opt.step()
    want_a, want_b = adjusted_gradients(a0, b0, ga0, gb0, lyr.scaling)
    torch.testing.assert_close(lyr.lora_A.grad, want_a)
    torch.testing.assert_close(lyr.lora_B.grad, want_b)


def prop_coto() -> None:
    """CoTo: the activation probability ramps linearly from initial_p to final_p over the first stage1_ratio of the
    steps, then stays; each step one draw per transformer block decides all its adapters, at least one block is
    active, the active fraction matches p; a dropped adapter is skipped in training (the layer is W0, its factors get
    no gradient at all) while evaluation uses every adapter (ΔW = (α/r)·B·A); the draws are reproducible from the
    seed and the step."""
    from methods.coto import draw, layers, probability, set_step

    model, base, cfg = build("coto", kind="decoder", sampler_seed=5)
    p = cfg["params"]
    impl = methods.resolve(cfg)
    torch.testing.assert_close(outputs(model), outputs(base))
    total = 100
    end = math.ceil(total * p["stage1_ratio"])
    assert probability(0, total, p) == pytest.approx(p["initial_p"])
    assert probability(end // 2, total, p) == pytest.approx(p["initial_p"] + (1 - p["initial_p"]) * (end // 2) / end)
    assert probability(end, total, p) == probability(total - 1, total, p) == pytest.approx(p["final_p"])
    found = layers(model)
    assert [m.group for m in found] == [0, 0, 1, 1]   # q_proj, v_proj of block 0, then of block 1
    counts, n = torch.zeros(6), 3000
    for t in range(n):
        mask = draw(5, t, 6, 0.3)
        assert mask.any()
        counts += mask
    # P(active | at least one of 6 active) = 0.3 / (1 − 0.7⁶)
    assert float(counts.mean() / n) == pytest.approx(0.3 / (1 - 0.7**6), abs=0.02)
    seen = set()
    for step in range(40):
        impl.callback(model, step, total)
        states = [m.on for m in found]
        assert states[0] == states[1] and states[2] == states[3] and any(states)
        assert all(bool(m.active) == m.on for m in found)
        assert states[::2] == draw(5, step + 1, 2, probability(step + 1, total, p)).tolist()
        seen.add(tuple(states))
    assert len(seen) > 1

    # a dropped adapter in training: W0 only, no gradient; evaluation: every adapter
    randomize(model, 0.2)
    for m, on in zip(found, [False, False, True, True], strict=True):
        m.set_active(on)
    from tests.methods.test_registry import _forward_backward

    model.train()
    _forward_backward(model, "decoder")
    assert found[0].lora_A.grad is None and found[0].lora_B.grad is None
    assert found[2].lora_A.grad is not None and found[2].lora_B.grad.abs().sum() > 0
    x = torch.randn(3, 32)
    torch.testing.assert_close(found[0](x), found[0].base_layer(x))
    path = "model.layers.0.self_attn.q_proj"
    model.eval()
    lyr = custom_layer(model, path)
    expected = (p["lora_alpha"] / p["r"] * lyr.lora_B @ lyr.lora_A).detach()
    torch.testing.assert_close(custom_delta(model, base, path), expected, atol=1e-5, rtol=1e-4)
    set_step(model, 0, total)
    again, _, _ = build("coto", kind="decoder", sampler_seed=5)
    assert [m.on for m in layers(again)] == [m.on for m in found]


def prop_increlora() -> None:
    """IncreLoRA: ΔW = (α/n)·P[:, :n]·diag(Λ[:n])·Q[:n] with n the layer's active rank (W0 at init: Λ = 0); the
    budget's unallocated slots are inert (no gradient); the backward sets each layer's score; driven by a constructed
    score signal, every round the top_h layers by Ī·Ū gain add_r components, ranks only grow, the total never exceeds
    r × layers and reaches it by grow_until, slots move to the growing layers (the allocated total is constant) and
    the optimizer's moments follow their slots; the saved adapter records and restores the moved slots."""
    import json
    import tempfile
    from pathlib import Path

    from methods import _adapters
    from methods.increlora import IncreLoraLinear, grow, layers

    model, base, cfg = build("increlora", kind="decoder", r=4, r_init=2)
    p = cfg["params"]
    alpha = p["lora_alpha"]
    torch.testing.assert_close(outputs(model), outputs(base))
    found = layers(model)
    assert [(m.n, m.slots) for m in found] == [(2, 4)] * 4
    path = "model.layers.0.self_attn.q_proj"
    lyr = custom_layer(model, path)
    randomize(model, 0.2)
    with torch.no_grad():   # unallocated slots keep Λ = 0 in training (no gradient reaches them)
        for m in found:
            m.lora_E[m.n:] = 0
    n = lyr.n
    expected = (alpha / n * lyr.lora_B[:, :n] @ torch.diag(lyr.lora_E[:n]) @ lyr.lora_A[:n]).detach()
    torch.testing.assert_close(custom_delta(model, base, path), expected, atol=1e-5, rtol=1e-4)
    from tests.methods.test_registry import _forward_backward

    model.train()
    _forward_backward(model, "decoder")
    assert torch.all(lyr.lora_A.grad[n:] == 0) and torch.all(lyr.lora_B.grad[:, n:] == 0)
    assert torch.all(lyr.lora_E.grad[n:] == 0) and lyr.lora_A.grad[:n].abs().sum() > 0
    assert all(m.score is not None and float(m.score) > 0 for m in found)
    model.zero_grad(set_to_none=True)
    # growing rescales: the new component has Λ = 0, the scale α/n becomes α/(n+1) (the authors' ranknum)
    before = custom_delta(model, base, path)
    grow(found, [0], 1, 16, 0)
    assert lyr.n == n + 1
    torch.testing.assert_close(custom_delta(model, base, path), before * n / (n + 1), atol=1e-6, rtol=1e-4)

    # a constructed score signal through the method's optimizer and callback
    model, _, cfg = build("increlora", kind="decoder", r=4, r_init=1, top_h=2, add_r=1, init_warmup=0.1,
                          grow_until=0.5)
    impl = methods.resolve(cfg)
    randomize(model, 0.2)
    found = layers(model)
    opt = impl.optimizer(model, cfg)
    total, budget = 60, 16
    strength = [10.0, 3.0, 1.0, 0.01]
    g = torch.Generator().manual_seed(0)
    history = []
    for step in range(total):
        for m, s in zip(found, strength, strict=True):
            for name in ("lora_A", "lora_E", "lora_B"):
                q = getattr(m, name)
                q.grad = torch.randn(q.shape, generator=g) * 1e-3
            m.score = torch.tensor(s * (1 + 0.5 * float(torch.rand((), generator=g))))
        opt.step()
        before = [m.n for m in found]
        impl.callback(model, step, total)
        ranks = [m.n for m in found]
        assert all(x >= y for x, y in zip(ranks, before, strict=True))   # ranks only grow
        assert sum(ranks) <= budget and sum(m.slots for m in found) == budget
        assert all(m.n <= m.slots for m in found)
        for m in found:
            assert m.lora_A.shape[0] == m.lora_E.shape[0] == m.lora_B.shape[1] == m.slots
            assert opt.state[m.lora_A]["exp_avg"].shape == m.lora_A.shape
        history.append(ranks)
        opt.zero_grad(set_to_none=True)
    assert history[5] == [1, 1, 1, 1]   # nothing before the warm-up
    assert history[-1] == [7, 7, 1, 1] and sum(history[30]) == budget   # the two strongest got every round
    assert all(not m.tracking for m in found)   # scoring stops once the budget is reached
    assert [m.slots for m in found] == [7, 7, 1, 1]

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/adapter"
        expected_out = outputs(model)
        _adapters.save(model, out, cfg, TINY_DECODER_CFG)
        meta = json.loads((Path(out) / _adapters.CONFIG_FILE).read_text())
        paths = [k for k, x in model.named_modules() if isinstance(x, IncreLoraLinear)]
        assert [meta["tensors"][f"{k}.lora_E"]["shape"][0] for k in paths] == [7, 7, 1, 1]
        reloaded = _adapters.load(tiny_llama(), out)
        assert [x.n for x in layers(reloaded)] == [7, 7, 1, 1]
        torch.testing.assert_close(outputs(reloaded), expected_out)


def prop_flora() -> None:
    """Flora: every weight trains; each block matrix keeps its momentum compressed to rank r (r×n or m×r, never
    m×n) by a seeded Gaussian projection; the first step's momentum is (1 − β1)·down(u) for the step's Adafactor
    direction u (read off the weight change); every κ steps the seed moves on and the momentum is carried into the
    new projection, C ← β1·down_new(up_old(C)) (+ the step's own term, zero with a zero gradient)."""
    from methods.flora import down, up

    _, model, opt, cfg = _full_param("flora", rank=3, kappa=2)
    p = cfg["params"]
    b1, lr = p["beta1"], cfg["optim"]["lr"]
    assert all(q.requires_grad for q in model.parameters())
    mats = _projected(model)
    w0 = {k: q.detach().clone() for k, q in mats.items()}
    seeds = {k: opt.state[q]["seed"] for k, q in mats.items()}
    _lm_step(model, opt)
    for k, q in mats.items():
        st = opt.state[q]
        c = st["exp_avg"]
        assert 3 in c.shape and c.shape != q.shape and st["seed"] == seeds[k]
        # Δ = −lr·max(1e-3, rms(W0))·(1 − β1)·u (no clipping: rms((1 − β1)·u) < 1), so C = (1 − β1)·down(u)
        lr_eff = lr * max(1e-3, float(w0[k].norm() / w0[k].numel() ** 0.5))
        u_part = -(q.detach() - w0[k]) / lr_eff
        want = down(seeds[k], 3, u_part)   # read off a float32 weight change of ~1e-6: compare as a whole
        assert float((c - want).norm() / want.norm()) < 1e-3
    for name, t in model.named_parameters():   # compressed iff a matrix with min side ≥ r and aspect ratio ≤ 4
        shape = tuple(t.shape)
        dense = opt.state[t]["exp_avg"].shape == t.shape
        assert dense != (len(shape) == 2 and min(shape) >= 3 and max(shape) / min(shape) <= 4), name
    # step 2 = κ: with a zero gradient the momentum is only carried into the new projection
    k, q = next(iter(mats.items()))
    c_old, seed_old = opt.state[q]["exp_avg"].clone(), opt.state[q]["seed"]
    for t in model.parameters():
        t.grad = torch.zeros_like(t)
    opt.step()
    seed_new = opt.state[q]["seed"]
    assert seed_new != seed_old
    torch.testing.assert_close(opt.state[q]["exp_avg"], b1 * down(seed_new, 3, up(seed_old, 3, tuple(q.shape), c_old)),
                               atol=1e-6, rtol=1e-4)
    opt.zero_grad(set_to_none=True)
    _lm_step(model, opt, seed=3)
    assert opt.state[q]["seed"] == seed_new   # step 3: no resampling


def prop_full() -> None:
    """Full fine-tuning trains every weight of the backbone."""
    cfg = method_cfg("full")
    backbone = tiny_bert()
    model = methods.resolve(cfg).apply(backbone, cfg, TINY_ENCODER_CFG)
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------ full-parameter methods
def _tiny_llama(layers: int = 2) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                        max_position_embeddings=32))


def _full_param(name: str, layers: int = 2, **params: Any) -> tuple[Any, torch.nn.Module, Any, dict[str, Any]]:
    """(impl, model, its optimizer, cfg) for a full-parameter method on a tiny llama (square attention
    matrices and 64×32 / 32×64 MLP matrices: both projection sides)."""
    cfg = method_cfg(name)
    cfg["params"] = {**cfg["params"], **params}
    impl = methods.resolve(cfg)
    model = impl.apply(_tiny_llama(layers), cfg, TINY_DECODER_CFG)
    return impl, model, impl.optimizer(model, cfg), cfg


def _lm_step(model: torch.nn.Module, opt: Any, seed: int = 1) -> dict[str, torch.Tensor]:
    """One optimizer step; returns the gradients it used."""
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(seed))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    opt.zero_grad(set_to_none=True)
    return grads


def _projected(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.startswith("model.layers.") and p.dim() == 2}


def prop_galore() -> None:
    """GaLore: each block matrix's Adam state is r-dimensional (m×r or r×n, never m×n); P spans the top-r
    singular vectors of the gradient at the projection step; every update lies in span(P) and is
    α·lr·P·(Adam direction); embeddings and head get full-size Adam."""
    _, model, opt, cfg = _full_param("galore", rank=3, update_proj_gap=10, scale=2.0)
    r, scale, lr = 3, 2.0, cfg["optim"]["lr"]
    mats = _projected(model)
    assert {n.split(".")[-2] for n in mats} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"}
    w0 = {n: p.detach().clone() for n, p in mats.items()}
    grads = _lm_step(model, opt)
    for _ in range(2):
        _lm_step(model, opt, seed=2 + _)
    for n, p in mats.items():
        st = opt.state[p]
        basis, right = st["basis"], st["right"]
        m_, n_ = p.shape
        assert right == (m_ >= n_)
        assert st["exp_avg"].shape == ((m_, r) if right else (r, n_)) == st["exp_avg_sq"].shape
        # P = the top-r singular vectors of the first step's gradient (the gap is not reached yet)
        u, _, vh = torch.linalg.svd(grads[n], full_matrices=False)
        ref = vh[:r].T if right else u[:, :r]
        torch.testing.assert_close((ref.T @ basis).abs().diagonal(), torch.ones(r), atol=1e-4, rtol=0)
        delta = p.detach() - w0[n]
        assert delta.norm() > 0
        inside = delta @ basis @ basis.T if right else basis @ basis.T @ delta
        torch.testing.assert_close(inside, delta, atol=1e-7, rtol=1e-4)
    # the first step's size: Adam's first direction is ±1 per coordinate, so |ΔW| = α·lr·|P·sign(PᵀG)|
    _, model, opt, _ = _full_param("galore", rank=3, update_proj_gap=10, scale=2.0)
    p = model.get_parameter("model.layers.0.mlp.down_proj.weight")   # 32×64: left projection
    w0p = p.detach().clone()
    g = _lm_step(model, opt)["model.layers.0.mlp.down_proj.weight"]
    basis = opt.state[p]["basis"]
    low = basis.T @ g
    expected = -lr * scale * basis @ (low / (low.abs() + 1e-6))
    torch.testing.assert_close(p.detach() - w0p, expected, atol=1e-8, rtol=1e-4)
    emb = model.get_parameter("model.embed_tokens.weight")
    assert opt.state[emb]["exp_avg"].shape == emb.shape


def prop_frugal() -> None:
    """FRUGAL: Adam state only for the r-dimensional projected gradient of each block matrix; the
    residual G − P PᵀG moves by signSGD: the first step is exactly
    ΔW = −lr·(P·(PᵀG)/|PᵀG| + λ·sign(G − P PᵀG)), full-rank although the state is low-rank."""
    _, model, opt, cfg = _full_param("frugal", rank=3, update_gap=2, inactive_lr_scale=0.5)
    lr, lam = cfg["optim"]["lr"], 0.5
    mats = _projected(model)
    w0 = {n: p.detach().clone() for n, p in mats.items()}
    grads = _lm_step(model, opt)
    for n, p in mats.items():
        st = opt.state[p]
        basis, right = st["basis"], st["right"]
        g = grads[n]
        low = g @ basis if right else basis.T @ g
        assert st["exp_avg"].shape == low.shape and min(low.shape) == 3
        assert not any(t.shape == p.shape for t in st.values() if isinstance(t, torch.Tensor))
        adam = low / (low.abs() + 1e-8)   # Adam's first direction, in the subspace
        adam_back, low_back = (adam @ basis.T, low @ basis.T) if right else (basis @ adam, basis @ low)
        expected = -lr * (adam_back + lam * torch.sign(g - low_back))
        delta = p.detach() - w0[n]
        torch.testing.assert_close(delta, expected, atol=1e-8, rtol=1e-4)
        assert torch.linalg.matrix_rank(delta) > 3   # full-rank update from rank-3 state
    # the subspace is recomputed every update_gap steps, with fresh moments (reset_statistics)
    p = next(iter(mats.values()))
    old = opt.state[p]["basis"].clone()
    _lm_step(model, opt, seed=2)
    assert opt.state[p]["adam_step"] == 2
    _lm_step(model, opt, seed=3)
    assert opt.state[p]["adam_step"] == 1 and not torch.allclose(opt.state[p]["basis"], old)


def prop_lisa() -> None:
    """LISA: within a period of K steps only the γ sampled blocks (plus embeddings, final norm, head) get
    gradients, change, and hold AdamW state; frozen blocks stay bit-identical; at each period boundary
    γ blocks are sampled again, and over periods the samples differ."""
    from methods.lisa import active_blocks

    impl, model, opt, _ = _full_param("lisa", layers=6, n_layers=2, interval_steps=3)
    blocks = model.model.layers
    outside = [n for n, _ in model.named_parameters() if not n.startswith("model.layers.")]
    samples, step = [], 0
    for _period in range(5):
        active = active_blocks(model)
        assert len(active) == 2
        samples.append(tuple(active))
        frozen = {i: [q.detach().clone() for q in blocks[i].parameters()] for i in range(6) if i not in active}
        for _ in range(3):
            grads = _lm_step(model, opt, seed=10 + step)
            assert {int(n.split(".")[2]) for n in grads if n.startswith("model.layers.")} == set(active)
            assert set(outside) <= set(grads)   # embeddings, final norm and head: always trained
            stateful = {i for i in range(6) if any(q in opt.state for q in blocks[i].parameters())}
            assert stateful == set(active)
            impl.callback(model, step, 15)
            step += 1
            if step % 3:   # not a boundary: the same blocks keep training
                assert active_blocks(model) == active
        for i, before in frozen.items():
            assert all(torch.equal(a, b) for a, b in zip(before, blocks[i].parameters()))
    assert len(set(samples)) > 1


# --------------------------------------------------------------- LoLDU, SVFit, EDoRA, BoRA, Delta-LoRA
def prop_loldu() -> None:
    """LoLDU: P, L_r, U_r (unit-triangular) and D_r come from torch.linalg.lu(W0) and are frozen; only the diagonal
    z (init D_r) and the scalar σ (init α/r) train; W = W0 − σ0·P·L_r·diag(D_r)·U_r + σ·P·L_r·diag(z)·U_r, which
    is W0 exactly at init."""
    model, base, cfg = build("loldu")
    r, sigma0 = cfg["params"]["r"], cfg["params"]["lora_alpha"] / cfg["params"]["r"]
    torch.testing.assert_close(outputs(model), outputs(base), atol=0, rtol=0)
    trainable = {n.rsplit(".", 1)[-1]: q for n, q in model.named_parameters() if q.requires_grad}
    assert set(trainable) == {"lora_z", "lora_sigma"}
    lyr = custom_layer(model)
    w0 = base_weight(base)
    p, lower, upper = torch.linalg.lu(w0)
    d = torch.diagonal(upper)
    perm_matrix = torch.eye(w0.shape[0])[lyr.lora_perm]
    torch.testing.assert_close(perm_matrix, p)
    torch.testing.assert_close(lyr.lora_L, lower[:, :r])
    torch.testing.assert_close(lyr.lora_D0, d[:r])
    torch.testing.assert_close(lyr.lora_U, upper[:r] / d[:r, None])
    assert torch.equal(torch.diagonal(lyr.lora_L), torch.ones(r)) and torch.equal(lyr.lora_L.triu(1), 0 * lyr.lora_L)
    torch.testing.assert_close(torch.diagonal(lyr.lora_U), torch.ones(r))
    assert torch.equal(lyr.lora_U.tril(-1), 0 * lyr.lora_U)
    torch.testing.assert_close(lyr.lora_z.detach(), d[:r])
    assert lyr.lora_sigma.shape == () and float(lyr.lora_sigma.detach()) == pytest.approx(sigma0)
    # at full rank the frozen factors rebuild W0: P·L·diag(D)·U = W0
    full, _, _ = build("loldu", r=w0.shape[1])
    f = custom_layer(full)
    rebuilt = (f.lora_L * f.lora_D0) @ f.lora_U
    torch.testing.assert_close(p @ rebuilt, w0, atol=1e-5, rtol=1e-4)
    randomize(model, 0.3)
    z, sigma = lyr.lora_z.detach(), lyr.lora_sigma.detach()
    w_res = w0 - sigma0 * p @ lower[:, :r] @ torch.diag(d[:r]) @ (upper[:r] / d[:r, None])
    expected = w_res + sigma * p @ lower[:, :r] @ torch.diag(z) @ (upper[:r] / d[:r, None])
    torch.testing.assert_close(custom_delta(model, base) + w0, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lyr.merged_weight().detach(), expected, atol=1e-5, rtol=1e-4)


def prop_svfit() -> None:
    """SVFit: U_r, V_r of W0's SVD frozen, only the top-r singular values σ (init Σ_r) train:
    W = W0 − U_rΣ_rV_rᵀ + U_r·diag(σ)·V_rᵀ (W0 exactly at init); doubling σ adds W0's best rank-r part."""
    model, base, cfg = build("svfit")
    r = cfg["params"]["r"]
    torch.testing.assert_close(outputs(model), outputs(base), atol=0, rtol=0)
    trainable = {n: q for n, q in model.named_parameters() if q.requires_grad}
    assert trainable and all(n.endswith(".lora_S") and q.shape == (r,) for n, q in trainable.items())
    lyr = custom_layer(model)
    w0 = base_weight(base)
    u, s, vh = torch.linalg.svd(w0)
    torch.testing.assert_close(lyr.lora_S.detach(), s[:r])
    top = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
    torch.testing.assert_close(lyr.lora_U @ torch.diag(lyr.lora_S0) @ lyr.lora_V, top, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        lyr.lora_S.mul_(2)
    torch.testing.assert_close(custom_delta(model, base), top, atol=1e-5, rtol=1e-4)
    randomize(model, 0.3)
    sigma = lyr.lora_S.detach()
    expected = w0 - top + lyr.lora_U @ torch.diag(sigma) @ lyr.lora_V
    torch.testing.assert_close(custom_delta(model, base) + w0, expected, atol=1e-5, rtol=1e-4)
    # the update lives in the frozen singular subspaces: U_rᵀ·ΔW·V_r is diagonal, the rest of ΔW is 0
    delta = custom_delta(model, base)
    core = lyr.lora_U.T @ delta @ lyr.lora_V.T
    torch.testing.assert_close(core, torch.diag(sigma - s[:r]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lyr.lora_U @ core @ lyr.lora_V, delta, atol=1e-5, rtol=1e-4)


def prop_edora() -> None:
    """EDoRA: B = U_r, A = Σ_rV_rᵀ from W0's SVD, frozen; only R (r×r, N(0, σ²) init) and m (init ‖W0‖ per output
    unit) train; W = m ⊙ (W0 + s·B·R·A)/‖W0 + s·B·R·A‖: each output unit's weight vector has norm |m|."""
    model, base, cfg = build("edora")
    p = cfg["params"]
    r, s_ = p["r"], p["lora_alpha"] / p["r"]
    torch.testing.assert_close(outputs(model), outputs(base), atol=1e-4, rtol=0)
    exact, base2, _ = build("edora", init_std=0.0)
    torch.testing.assert_close(outputs(exact), outputs(base2), atol=1e-6, rtol=1e-5)
    trainable = {n.rsplit(".", 1)[-1]: q for n, q in model.named_parameters() if q.requires_grad}
    assert set(trainable) == {"lora_R", "lora_magnitude"} and trainable["lora_R"].shape == (r, r)
    lyr = custom_layer(model)
    w0 = base_weight(base)
    u, s, vh = torch.linalg.svd(w0)
    torch.testing.assert_close(lyr.lora_B.T @ lyr.lora_B, torch.eye(r), atol=1e-5, rtol=0)
    torch.testing.assert_close(lyr.lora_B @ lyr.lora_A, u[:, :r] @ torch.diag(s[:r]) @ vh[:r], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lyr.lora_magnitude.detach(), w0.norm(dim=1))
    randomize(model, 0.3)
    with torch.no_grad():
        lyr.lora_magnitude.abs_()
    m, rr = lyr.lora_magnitude.detach(), lyr.lora_R.detach()
    v = w0 + s_ * lyr.lora_B @ rr @ lyr.lora_A
    expected = m[:, None] * v / v.norm(dim=1, keepdim=True)
    merged = custom_delta(model, base) + w0
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged.norm(dim=1), m, atol=1e-5, rtol=1e-4)


def prop_bora() -> None:
    """BoRA: V = W0 + s·B·A (B = 0 at init) normalised per output unit and scaled by m_out, then per input unit
    and scaled by m_in (both init from W0's norms, both trainable): W0 exactly at init, and afterwards every input
    column of W has norm |m_in| while W = diag(a)·V·diag(b)."""
    model, base, cfg = build("bora")
    p = cfg["params"]
    s_ = p["lora_alpha"] / p["r"]
    torch.testing.assert_close(outputs(model), outputs(base))
    trainable = {n.rsplit(".", 1)[-1] for n in trainable_names(model)}
    assert trainable == {"lora_A", "lora_B", "lora_m_out", "lora_m_in"}
    lyr = custom_layer(model)
    w0 = base_weight(base)
    torch.testing.assert_close(lyr.lora_m_out.detach(), w0.norm(dim=1))
    torch.testing.assert_close(lyr.lora_m_in.detach(), w0.norm(dim=0))
    assert torch.count_nonzero(lyr.lora_B) == 0
    randomize(model, 0.3)
    with torch.no_grad():
        lyr.lora_m_out.abs_()
        lyr.lora_m_in.abs_()
    m_out, m_in = lyr.lora_m_out.detach(), lyr.lora_m_in.detach()
    v = w0 + s_ * lyr.lora_B.detach() @ lyr.lora_A.detach()
    rows = m_out[:, None] * v / v.norm(dim=1, keepdim=True)
    expected = rows * m_in / rows.norm(dim=0, keepdim=True)
    merged = custom_delta(model, base) + w0
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(merged.norm(dim=0), m_in, atol=1e-5, rtol=1e-4)
    # both magnitudes shape the weight: each gets a gradient
    from tests.methods.test_registry import _forward_backward

    model.train()
    _forward_backward(model, "encoder")
    assert lyr.lora_m_out.grad.abs().sum() > 0 and lyr.lora_m_in.grad.abs().sum() > 0


def prop_delta_lora() -> None:
    """Delta-LoRA: only A, B train (W has no gradient and no optimizer state); after optimizer step t > K the
    weight moves by exactly λ·(α/r)·(B_{t+1}A_{t+1} − B_tA_t), and not at all for t ≤ K; the layer computes
    (W0 + D)·x + (α/r)·B·A·x."""
    model, base, cfg = build("delta_lora", start_steps=1, update_ratio=2.0)
    p = cfg["params"]
    s_, lam = p["lora_alpha"] / p["r"], 2.0
    torch.testing.assert_close(outputs(model), outputs(base))
    assert {n.rsplit(".", 1)[-1] for n in trainable_names(model)} == {"lora_A", "lora_B"}
    lyr = custom_layer(model)
    assert "delta_W" not in dict(model.named_parameters()) and not lyr.base_layer.weight.requires_grad
    w0 = base_weight(base).clone()
    callback = methods.resolve(cfg).callback
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-2)
    from tests.methods.test_registry import _forward_backward

    deltas, products = [], []
    for step in range(4):
        ba_before, d_before = (lyr.lora_B @ lyr.lora_A).detach().clone(), lyr.delta_W.clone()
        model.train()
        _forward_backward(model, "encoder")
        opt.step()
        callback(model, step, 4)
        opt.zero_grad(set_to_none=True)
        products.append((lyr.lora_B @ lyr.lora_A).detach().clone())
        assert not torch.equal(products[-1], ba_before)
        deltas.append((lyr.delta_W - d_before, products[-1] - ba_before))
    for step, (moved, dba) in enumerate(deltas):
        if step > 1:   # t > K = 1
            torch.testing.assert_close(moved, lam * s_ * dba, atol=1e-7, rtol=1e-5)
        else:
            assert torch.count_nonzero(moved) == 0
    # telescoping: D = λ·s·(B_4A_4 − B_2A_2), W0 stays the backbone's and the layer computes W0 + D + s·B·A
    torch.testing.assert_close(lyr.delta_W, lam * s_ * (products[3] - products[1]), atol=1e-7, rtol=1e-5)
    assert torch.equal(lyr.base_layer.weight, w0)
    expected = w0 + lyr.delta_W + s_ * products[3]
    torch.testing.assert_close(custom_delta(model, base) + w0, expected, atol=1e-5, rtol=1e-4)


PROPERTIES: dict[str, Callable[[], None]] = {
    name.removeprefix("prop_"): fn for name, fn in globals().items() if name.startswith("prop_")}


def test_every_method_has_a_property_test() -> None:
    missing = sorted(set(conf_names("method")) - set(PROPERTIES))
    assert not missing, f"methods without a defining-property test: {missing}"


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_defining_property(name: str) -> None:
    PROPERTIES[name]()


# ------------------------------------------------------------------------------------ adapter reuse
@pytest.mark.parametrize("name", ["lora", "vera", "ia3", "fourierft"])
def test_saved_adapter_reloads_with_peft_and_predicts_the_same(name: str, tmp_path: Any) -> None:
    """A trained peft-native adapter is saved in peft's format: PeftModel.from_pretrained on a fresh
    backbone gives the same predictions."""
    from peft import PeftModel

    model, _, _ = build(name)
    randomize(model, 0.05)
    expected = outputs(model)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_bert(), tmp_path / "adapter")
    torch.testing.assert_close(outputs(reloaded), expected)
    assert not torch.allclose(outputs(tiny_bert()), expected, atol=1e-4)   # the adapter matters
