"""Build any peft config from a method YAML, wrap the backbone with it, and pick the method's hooks.

A peft-native method is one YAML. What some of them need beyond `get_peft_model` is chosen from the
YAML itself, never from the method's name, so a new YAML with the same flag gets the same hook:

- `params.init_lora_weights: eva` → an `init` hook feeding training batches to peft's EVA (2410.07170).
- `params.init_lora_weights: corda` / `lora_ga` → a `prepare` hook calibrating the bare backbone on
  training batches before get_peft_model (peft's preprocess_corda / preprocess_loraga).
- `optim.name: loraplus`          → an `optimizer` hook, peft's LoRA+ optimizer (2402.12354).
- `optim.name: lorafa`            → peft's LoRA-FA optimizer (2308.03303), with lora_A frozen at apply.
- `peft_type: adalora`            → a `callback` driving AdaLoRA's rank budget (2303.10512), and a
                                    `regularizer` with its orthogonality penalty where peft cannot add it
                                    (an encoder under the harness's head).
- `peft_type: poly`               → an `apply` that routes every example as task 0 (one job, one task).
- `params.kasa_config`            → a `regularizer` adding KaSA's penalties to the loss (2412.06071).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from methods import PEFT_CONFIGS, MethodImpl

# LoraConfig fields whose value is itself a peft dataclass: YAML gives a mapping, peft wants the object.
SUB_CONFIGS = {"eva_config": "EvaConfig", "corda_config": "CordaConfig", "lora_ga_config": "LoraGAConfig",
               "velora_config": "VeloraConfig", "kasa_config": "KasaConfig", "loftq_config": "LoftQConfig"}
# AdaLoRA needs total_step > 0 when its config is built, before the job's step count is known here;
# the callback sets the real value on its first call.
_ADALORA_PLACEHOLDER_STEPS = 10**9


def build_peft_config(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """The peft config object for this method on this model.

    `target_modules: null` in the method means "the model's defaults", so one method YAML serves
    every architecture (query/value on BERT, q_proj/v_proj on llama). A method YAML without the key
    (IA3, prompt learning) leaves the choice to peft's own per-architecture defaults.
    """

    entry = PEFT_CONFIGS[method_cfg["peft_type"]]
    params = dict(method_cfg.get("params") or {})
    if "target_modules" in params and params["target_modules"] is None:
        params["target_modules"] = list(model_cfg["target_modules"])
    for key, cls_name in SUB_CONFIGS.items():
        if isinstance(params.get(key), Mapping):
            params[key] = _sub_config_class(cls_name)(**params[key])
    if method_cfg["peft_type"] == "adalora" and not params.get("total_step"):
        params["total_step"] = _ADALORA_PLACEHOLDER_STEPS
    if model_cfg["kind"] == "decoder":
        params.setdefault("task_type", "CAUSAL_LM")
    return entry.load()(**params)


def _sub_config_class(cls_name: str) -> type:
    import peft
    import peft.tuners.lora.config as lora_config  # CordaConfig is not exported at peft's top level

    return getattr(peft, cls_name, None) or getattr(lora_config, cls_name)


def apply_peft(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    from peft import get_peft_model

    return get_peft_model(backbone, build_peft_config(method_cfg, model_cfg))


def peft_model_of(model: Any) -> Any:
    """The PeftModel inside `model` (the model itself, or the encoder under a classification head)."""
    from peft import PeftModel

    for module in model.modules():
        if isinstance(module, PeftModel):
            return module
    raise TypeError(f"no PeftModel inside {type(model).__name__}")


# ------------------------------------------------------------------------------------------ hooks
def _model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """What the backbone's forward takes: a classify batch's labels belong to the head, not the encoder."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def init_eva(model: Any, batches: Iterable[Mapping[str, Any]]) -> None:
    """EVA (arXiv:2410.07170): A ← top right-singular vectors of each layer's inputs, computed by
    incremental SVD over training batches until they converge (peft's initialize_lora_eva_weights)."""
    from peft import initialize_lora_eva_weights

    peft_model = peft_model_of(model)
    was_training = peft_model.training
    peft_model.eval()
    # sequence labels (classify: one per example) are the head's; EVA's label mask reads token labels only
    batches = ({k: v for k, v in b.items() if k != "labels" or v.shape == b["input_ids"].shape}
               for b in batches)
    initialize_lora_eva_weights(peft_model, dataloader=_Reiterable(batches),
                                forward_fn=lambda m, inputs: m(**_model_inputs(inputs)),
                                show_progress_bar=False)
    peft_model.train(was_training)


class _Reiterable:
    """EVA iterates its dataloader more than once (first batch to size, then until convergence): the
    training stream is a one-shot generator, so batches are kept as they are drawn."""

    def __init__(self, batches: Iterable[Mapping[str, Any]], limit: int = 64) -> None:
        self._it, self._seen, self._limit = iter(batches), [], limit

    def __iter__(self):
        yield from self._seen
        while len(self._seen) < self._limit:
            try:
                batch = next(self._it)
            except StopIteration:
                return
            self._seen.append(batch)
            yield batch

    def __len__(self) -> int:
        return self._limit


def loraplus_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> Any:
    """LoRA+ (arXiv:2402.12354): B's learning rate is loraplus_lr_ratio × A's (everything else, a
    classification head included, gets the base rate)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    optim = method_cfg.get("optim") or {}
    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=float(optim["lr"]),
                                     loraplus_lr_ratio=float(optim.get("loraplus_lr_ratio", 16.0)),
                                     weight_decay=float(optim.get("weight_decay") or 0.0))


def adalora_callback(model: Any, step: int, total_steps: int) -> None:
    """AdaLoRA (arXiv:2303.10512): after each optimizer step (gradients still present) update the
    sensitivity scores and mask singular values so the budget follows init_r → target_r over the
    job's planned steps; the last step fixes the final allocation."""
    peft_model = peft_model_of(model)
    cfg = peft_model.peft_config[peft_model.active_adapter]
    if cfg.total_step != total_steps:
        if cfg.tinit >= total_steps - cfg.tfinal:
            raise ValueError(f"adalora: tinit={cfg.tinit} + tfinal={cfg.tfinal} leave no budgeting phase in "
                             f"{total_steps} steps")
        cfg.total_step = total_steps
    peft_model.base_model.update_and_allocate(step + 1)


def lorafa_optimizer(model: Any, method_cfg: Mapping[str, Any]) -> Any:
    """LoRA-FA (arXiv:2308.03303): A stays frozen at its random init, B trains with AdamW on the
    projected gradient (r/α)²·g_B·(AAᵀ)⁻¹, so the low-rank update best approximates the full-weight
    gradient step (peft's create_lorafa_optimizer). Parameters outside the PeftModel that train (a
    classification head) join as a plain-AdamW group: peft's helper only sees the PeftModel."""
    from peft.optimizers import create_lorafa_optimizer

    peft_model = peft_model_of(model)
    params, optim = method_cfg.get("params") or {}, method_cfg.get("optim") or {}
    lr, wd = float(optim["lr"]), float(optim.get("weight_decay") or 0.0)
    opt = create_lorafa_optimizer(peft_model, r=int(params["r"]), lora_alpha=params["lora_alpha"], lr=lr,
                                  weight_decay=wd)
    # peft's group holds every parameter of the model; it needs the LoRA ones (frozen A included: B's
    # gradient is projected through it), not the frozen base weights (a checkpoint saves what the
    # optimizer owns)
    group = opt.param_groups[0]
    keep = [i for i, (n, p) in enumerate(zip(group["names"], group["params"])) if p.requires_grad or "lora_" in n]
    for key in ("params", "names", "scaling_factors"):
        group[key] = [group[key][i] for i in keep]
    inside = {id(p) for p in peft_model.parameters()}
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in inside]
    if rest:
        opt.add_param_group({"params": [p for _, p in rest], "names": [n for n, _ in rest],
                             "scaling_factors": [None] * len(rest), "lr": lr, "weight_decay": wd})
    return opt


def apply_lora_frozen_a(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """LoRA with A frozen from the start (LoRA-FA), so trainable counts and capacity solving see B only."""
    model = apply_peft(backbone, method_cfg, model_cfg)
    for name, p in model.named_parameters():
        if "lora_A" in name:
            p.requires_grad_(False)
    return model


# ------------------------------------------------------------- preparation before get_peft_model
# CorDA and LoRA-GA compute their init from data on the bare backbone (peft's preprocess_* functions
# attach the results to the target modules); get_peft_model then reads them. `prepare` hooks run them;
# apply on an unprepared backbone (capacity counting: no data) builds the same LoRA parameters with the
# data-free init, so the count is right and no data is needed.
PREPARED = "peftbench_prepared"   # set on the backbone by a prepare hook, read by apply_prepared
DEFAULT_CALIBRATION_BATCHES = 8


def calibration_batches(method_cfg: Mapping[str, Any]) -> int:
    """How many training batches a prepare hook reads (method YAML `calibration.batches`)."""
    return int((method_cfg.get("calibration") or {}).get("batches", DEFAULT_CALIBRATION_BATCHES))


def single_examples(batch: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """A batch as one-example batches without their padding (CorDA's covariance hook reads one
    sequence per call, and padding positions are not data)."""
    mask = batch["attention_mask"].bool()
    for i in range(mask.shape[0]):
        yield {k: (v[i][mask[i]] if v.dim() == 2 and v.shape == mask.shape else v[i]).unsqueeze(0)
               for k, v in batch.items()}


def prepare_corda(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any],
                  batches: Iterable[Mapping[str, Any]], loss: Any) -> None:
    """CorDA (arXiv:2406.05223): each target layer's input covariance C is gathered over calibration
    examples, then W0·C is decomposed (peft's preprocess_corda); IPM builds the adapter from its top-r
    components (task context), KPM from the bottom-r (world knowledge kept in the frozen residual)."""
    import itertools

    import torch
    from peft.tuners.lora.corda import preprocess_corda

    taken = list(itertools.islice(batches, calibration_batches(method_cfg)))

    @torch.no_grad()
    def run_model() -> None:
        for batch in taken:
            for example in single_examples(batch):
                loss(example)

    preprocess_corda(backbone, build_peft_config(method_cfg, model_cfg), run_model=run_model)
    setattr(backbone, PREPARED, True)


def prepare_loraga(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any],
                   batches: Iterable[Mapping[str, Any]], loss: Any) -> None:
    """LoRA-GA (arXiv:2407.05000): the full-weight gradient G of each target layer is averaged over
    calibration batches (peft's preprocess_loraga); get_peft_model then sets A, B from G's singular
    vectors so the first LoRA step approximates full fine-tuning's, with W0 offset so f is unchanged."""
    import itertools

    from peft import preprocess_loraga

    taken = list(itertools.islice(batches, calibration_batches(method_cfg)))

    def train_step() -> None:
        for batch in taken:
            loss(batch).backward()

    preprocess_loraga(backbone, build_peft_config(method_cfg, model_cfg), train_step)
    setattr(backbone, PREPARED, True)


def apply_prepared(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """get_peft_model after a prepare hook; on an unprepared backbone (capacity counting) the same
    LoRA parameters with LoRA's data-free init."""
    if getattr(backbone, PREPARED, False):
        delattr(backbone, PREPARED)
        return apply_peft(backbone, method_cfg, model_cfg)
    counting = {**method_cfg, "params": {**(method_cfg.get("params") or {}), "init_lora_weights": True}}
    for key in ("corda_config", "lora_ga_config"):
        counting["params"].pop(key, None)
    return apply_peft(backbone, counting, model_cfg)


PREPARES = {"corda": prepare_corda, "lora_ga": prepare_loraga}


def apply_single_task_poly(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """Poly (arXiv:2202.13914) and MHR (arXiv:2211.03831) route each example by its task id; a benchmark
    job is one task, so every example is task 0 (validation holds n_tasks to 1): a pre-hook on each Poly
    layer supplies task_ids when the caller passes none, so the model takes the harness's plain batches."""
    import torch
    from peft.tuners.poly.layer import Linear as PolyLinear

    def task_zero(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if kwargs.get("task_ids") is None:
            x = args[0] if args else kwargs["x"]
            kwargs["task_ids"] = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return args, kwargs

    model = apply_peft(backbone, method_cfg, model_cfg)
    for module in model.modules():
        if isinstance(module, PolyLinear):
            module.register_forward_pre_hook(task_zero, with_kwargs=True)
    return model


def kasa_regularizer(model: Any) -> Any:
    """KaSA (arXiv:2412.06071, Eq. 9-11): β·Σ ΔΣ² + γ·(‖BᵀB − I‖_F + ‖AAᵀ − I‖_F) over every KaSA layer,
    the penalties the paper trains with (peft computes them; the training loop must add them)."""
    return peft_model_of(model).base_model._get_kasa_loss()


def adalora_regularizer(model: Any) -> Any:
    """AdaLoRA's orthogonality penalty (arXiv:2303.10512, Eq. 4): orth_reg_weight × the mean over factors of
    ‖QQᵀ − I‖_F (Q = lora_A) and ‖PᵀP − I‖_F (P = lora_B). peft adds it inside AdaLoraModel.forward, but only
    when the wrapped model returns a loss — a causal LM given labels. An encoder under the harness's
    classification head returns none, so there the training loop adds it through this hook; where peft
    already does (the model is the PeftModel itself), this returns 0, so it is never counted twice."""
    import torch

    pm = peft_model_of(model)
    if pm is model:
        return torch.zeros(())
    name = pm.active_adapter
    weight = float(pm.peft_config[name].orth_reg_weight)
    terms = []
    for module in pm.modules():
        a, b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if isinstance(a, torch.nn.ParameterDict) and name in a and isinstance(b, torch.nn.ParameterDict):
            qa, pb = a[name], b[name]
            terms.append(torch.linalg.matrix_norm(qa @ qa.T - torch.eye(qa.shape[0], device=qa.device,
                                                                         dtype=qa.dtype)))
            terms.append(torch.linalg.matrix_norm(pb.T @ pb - torch.eye(pb.shape[1], device=pb.device,
                                                                         dtype=pb.dtype)))
    return weight * torch.stack(terms).mean() if terms else torch.zeros(())


def _loftq_init_here(weight: Any, num_bits: int, reduced_rank: int, num_iter: int = 1) -> Any:
    """peft's LoftQ init (arXiv:2310.08659) computed on the weight's own device. peft's loftq_init moves every
    weight to cuda (or xpu) unconditionally; bitsandbytes >= 0.47 quantizes nf4 and int8 on a CPU as well, so
    on a machine without either this is the same alternation: quantize the residual, dequantize it, take the
    rank-r SVD of what quantization lost, repeat."""
    import bitsandbytes as bnb
    import torch
    from peft.utils.loftq_utils import _low_rank_decomposition

    if num_bits not in (4, 8):
        raise ValueError(f"LoftQ quantizes to 4 (nf4) or 8 (int8) bits, not {num_bits}")
    dtype = weight.dtype
    weight = weight.detach().to(torch.float32)
    res = weight.clone()
    dequantized = lora_a = lora_b = None
    for i in range(num_iter):
        if num_bits == 4:
            q = bnb.nn.Params4bit(res, requires_grad=False, compress_statistics=False, quant_type="nf4")
            q = q.to(weight.device)   # Params4bit quantizes when it is moved to a device
            dequantized = bnb.functional.dequantize_4bit(q.data, q.quant_state).to(torch.float32)
        else:
            q = bnb.nn.Int8Params(res, requires_grad=False).to(weight.device)
            dequantized = bnb.functional.int8_vectorwise_dequant(q.data, q.SCB).to(torch.float32)
        res = weight - dequantized
        out = _low_rank_decomposition(res, reduced_rank=reduced_rank)
        lora_b, lora_a = out["L"], out["R"]
        if i + 1 < num_iter:
            res = weight - lora_b @ lora_a
    return dequantized.to(dtype), lora_a, lora_b


def apply_loftq(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """LoRA with LoftQ's init on a full-precision base: peft replaces each targeted W0 by its nf4 (or int8)
    round trip and starts A, B at the rank-r SVD of what quantization lost, so training starts where the
    quantized model is closest to the original. Off a GPU, peft's init runs on the weight's device
    (_loftq_init_here)."""
    import torch

    if any(p.is_meta for p in backbone.parameters()):
        # counted from shapes (harness.capacity): LoftQ sets values only, so LoRA's own init builds the same
        # parameters without quantizing values that do not exist
        params = {k: v for k, v in (method_cfg.get("params") or {}).items() if k != "loftq_config"}
        return apply_peft(backbone, {**method_cfg, "params": {**params, "init_lora_weights": True}}, model_cfg)
    if torch.cuda.is_available():
        return apply_peft(backbone, method_cfg, model_cfg)
    import peft.tuners.lora.layer as lora_layer

    original = lora_layer.loftq_init
    lora_layer.loftq_init = _loftq_init_here
    try:
        return apply_peft(backbone, method_cfg, model_cfg)
    finally:
        lora_layer.loftq_init = original


OPTIMIZERS = {"loraplus": loraplus_optimizer, "lorafa": lorafa_optimizer}
# an optimizer that also decides what trains builds on its own apply
APPLIES = {"lorafa": apply_lora_frozen_a}
# adapters whose forward needs more than the harness's batch
PEFT_TYPE_APPLIES = {"poly": apply_single_task_poly}
INITS = {"eva": init_eva}
CALLBACKS = {"adalora": adalora_callback}
REGULARIZERS = {"adalora": adalora_regularizer}


def impl_for(method_cfg: Mapping[str, Any]) -> MethodImpl:
    """The peft-native implementation with the hooks this YAML asks for."""
    init = (method_cfg.get("params") or {}).get("init_lora_weights")
    optim_name = (method_cfg.get("optim") or {}).get("name")
    prepare = PREPARES.get(init) if isinstance(init, str) else None
    apply = (apply_prepared if prepare else apply_loftq if init == "loftq" else APPLIES.get(optim_name)
             or PEFT_TYPE_APPLIES.get(method_cfg.get("peft_type"), apply_peft))
    params = method_cfg.get("params") or {}
    return MethodImpl(name="peft-native", apply=apply,
                      regularizer=(kasa_regularizer if params.get("kasa_config") is not None
                                   else REGULARIZERS.get(method_cfg.get("peft_type"))),
                      init=INITS.get(init) if isinstance(init, str) else None, prepare=prepare,
                      optimizer=OPTIMIZERS.get(optim_name) if optim_name else None,
                      callback=CALLBACKS.get(method_cfg.get("peft_type")))


PEFT_NATIVE = MethodImpl(name="peft-native", apply=apply_peft)
