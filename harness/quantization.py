"""model.quantization's vocabulary and its resolved settings: pure functions of a model block.

They sit below harness.spec (the signature carries the resolved settings), harness.validate (the allowed
values) and harness.models (the bitsandbytes config at load), so none of those imports another for them.
This module imports nothing from the project.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# model.quantization: the base's weights stored by bitsandbytes at load (QLoRA, arXiv:2305.14314). Every
# loader here ends in from_pretrained on a safetensors folder (the GGUF package is dequantized to one at
# fetch time), so any model block can be quantized at load.
QUANTIZATIONS = ("nf4", "fp4", "int8")
QUANT_EXTRA = "quant"   # pyproject's optional extra that installs bitsandbytes


def quant_settings(model_cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resolved quantization of a model block, or None for a full-precision base.

    double_quant (quantize the 4-bit scales too) defaults to true for nf4/fp4 and does not apply to int8;
    compute_dtype (the dtype a 4-bit layer dequantizes to for its matmul) defaults to the base's dtype, so
    a float32 base on a CPU computes in float32 as it did unquantized."""
    q = model_cfg.get("quantization")
    if q is None:
        return None
    out: dict[str, Any] = {"quantization": q}
    if q in ("nf4", "fp4"):
        dq = model_cfg.get("double_quant")
        out["double_quant"] = True if dq is None else bool(dq)
        out["compute_dtype"] = model_cfg.get("compute_dtype") or model_cfg.get("dtype") or "float32"
    return out


def bitsandbytes_users(model_cfg: Mapping[str, Any], method_cfg: Mapping[str, Any]) -> list[str]:
    """What in a job needs bitsandbytes, as config fields: a quantized base (model.quantization) and LoftQ's
    init (arXiv:2310.08659), which quantizes the full-precision base itself (method.params.init_lora_weights:
    loftq). Empty: the job runs as it does on the default install, where bitsandbytes is the `quant` extra."""
    users = []
    if model_cfg.get("quantization") is not None:
        users.append(f"model.quantization: {model_cfg['quantization']!r}")
    params = method_cfg.get("params")
    if isinstance(params, Mapping) and params.get("init_lora_weights") == "loftq":
        users.append("method.params.init_lora_weights: 'loftq'")
    return users
