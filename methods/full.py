"""Full fine-tuning: the baseline every PEFT method must be compared against."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods import MethodImpl


def apply_full(backbone: Any, method_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any]) -> Any:
    for p in backbone.parameters():
        p.requires_grad_(True)
    return backbone


FULL = MethodImpl(name="full", apply=apply_full)
