"""Build any peft config from a method YAML and wrap the backbone with it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods import PEFT_CONFIGS, MethodImpl


def build_peft_config(method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    """The peft config object for this method on this model.

    `target_modules: null` in the method means "the model's defaults", so one method YAML serves
    every architecture (query/value on BERT, q_proj/v_proj on llama).
    """
    entry = PEFT_CONFIGS[method_cfg["peft_type"]]
    params = dict(method_cfg.get("params") or {})
    if params.get("target_modules") is None:
        params["target_modules"] = list(model_cfg["target_modules"])
    if model_cfg["kind"] == "decoder":
        params.setdefault("task_type", "CAUSAL_LM")
    return entry.load()(**params)


def apply_peft(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    from peft import get_peft_model

    return get_peft_model(backbone, build_peft_config(method_cfg, model_cfg))


PEFT_NATIVE = MethodImpl(name="peft-native", apply=apply_peft)
