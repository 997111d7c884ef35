"""Every method on a CUDA device: its adapter is built on the GPU, trains three optimizer steps there through
the method's own hooks (optimizer, per-step callback, regularizer) and saves and reloads to the same
outputs. CPU-only machines skip the whole module; where a GPU exists it runs with the rest of the suite.

Why a separate module: the registry tests build tiny models on the CPU, so a method that creates a tensor
on the default device (a random projection, an SVD factor, an index buffer) passes them and breaks the
first real GPU run. These tests place the backbone on CUDA *before* the method sees it, as training does.
"""
from __future__ import annotations

import pytest
import torch

import methods
from harness.train import EncoderClassifier, StepState, loss_of, make_optimizer, optimizer_params, train_step
from methods import _adapters
from tests.methods.test_registry import METHODS, MODELS, method_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"


def _batch(kind: str, device: str = DEVICE) -> dict[str, torch.Tensor]:
    """A harness batch: sequence labels for the encoder's classification head, token labels for the LM."""
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": torch.tensor([0, 1]) if kind == "encoder" else ids}
    return {k: v.to(device) for k, v in batch.items()}


def _devices(model: torch.nn.Module) -> set[str]:
    return {t.device.type for t in [*model.parameters(), *model.buffers()]}


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", METHODS)
def test_method_trains_on_cuda(name: str, kind: str) -> None:
    """The model is assembled as build_model does (prepare on the bare backbone, apply, the classification
    head) and three steps go through the training loop's own train_step, hooks included."""
    build, model_cfg = MODELS[kind]
    cfg = method_cfg(name)
    if kind not in cfg["info"]["applies_to"]:
        pytest.skip(f"{name} applies to {cfg['info']['applies_to']} only")
    impl = methods.resolve(cfg)
    protocol = "classify" if kind == "encoder" else "generate"
    backbone = build().to(DEVICE)

    def assemble(encoder: torch.nn.Module) -> torch.nn.Module:
        return EncoderClassifier(encoder, 32, 2, "mean").to(DEVICE) if kind == "encoder" else encoder

    if impl.prepare is not None:   # data-dependent preparation of the bare backbone (CorDA, LoRA-GA)
        calib = assemble(backbone)
        impl.prepare(backbone, cfg, model_cfg, iter([_batch(kind)] * 4), lambda b: loss_of(calib, b, protocol))
        for p in calib.parameters():   # calibration gradients are not a training step (as build_model)
            p.grad = None
    model = assemble(impl.apply(backbone, cfg, model_cfg))
    assert _devices(model) == {DEVICE}, f"{name}: tensors left on {_devices(model) - {DEVICE}}"
    if impl.init is not None:      # data-dependent init (EVA, LoRA-SB) from batches on the model's device
        impl.init(model, iter([_batch(kind)] * 4))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, trainable, cfg, impl)
    params = optimizer_params(optimizer)
    before = [p.detach().clone() for p in params]
    model.train()
    st = StepState(model=model, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                   trainable=params, protocol=protocol, device=torch.device(DEVICE), total_steps=3,
                   grad_clip=1.0, callback=impl.callback, regularizer=impl.regularizer)
    for _ in range(3):
        train_step(st, _batch(kind, "cpu"))
    assert _devices(model) == {DEVICE}, f"{name}: tensors moved to {_devices(model) - {DEVICE}} while training"
    after = optimizer_params(optimizer)
    assert any(a.shape != b.shape or not torch.equal(a.detach(), b) for a, b in zip(after, before, strict=False)), \
        f"{name}: three optimizer steps on CUDA changed nothing"


def _inputs() -> dict[str, torch.Tensor]:
    return {k: v for k, v in _batch("encoder").items() if k != "labels"}


@pytest.mark.parametrize("name", [m for m in METHODS if method_cfg(m)["kind"] == "custom"
                                  and not method_cfg(m)["info"].get("trains_base")])
def test_custom_adapter_saved_on_cuda_loads_to_the_same_outputs(name: str, tmp_path) -> None:
    build, model_cfg = MODELS["encoder"]
    cfg = method_cfg(name)
    model = methods.resolve(cfg).apply(build().to(DEVICE), cfg, model_cfg).to(DEVICE)
    with torch.no_grad():   # move every trainable tensor off its init so the round trip is not trivially 0
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    with torch.no_grad():
        expected = model(**_inputs()).last_hidden_state
    _adapters.save(model, tmp_path, cfg, model_cfg)
    loaded = _adapters.load(build().to(DEVICE), tmp_path, model_cfg).to(DEVICE).eval()
    with torch.no_grad():
        got = loaded(**_inputs()).last_hidden_state
    torch.testing.assert_close(got, expected)
