"""Config-only counting: every method's trainable count from a model's config alone, on the meta device
(harness.capacity.count_trainable), without its weights.

- On tiny models (test_registry's, 5 blocks deep), the count from the meta device equals the count on the same
  model with weights, for every method and both kinds (parametrized over the method registry); where a method
  needs values on its targets, the count extrapolated from 1-3 blocks equals the count built on all of them.
- On Llama-3.2-3B (tests/harness/fixtures/llama-3.2-3b: its public config.json, no weights), LoRA r=32 on
  q_proj and v_proj is 9,175,040, the count peft's method comparison publishes for it (9.18M).
- `peftbench methods --model <that folder>` counts every method that applies to a decoder, and says for the
  others that they do not apply.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.capacity import count_trainable
from harness.hfmodel import meta_backbone
from tests.conftest import conf_names
from tests.methods.test_registry import TINY_DECODER_CFG, TINY_ENCODER_CFG, method_cfg

LLAMA_3B = Path(__file__).resolve().parent.parent / "harness" / "fixtures" / "llama-3.2-3b"
METHODS = conf_names("method")
TINY = {"encoder": TINY_ENCODER_CFG, "decoder": TINY_DECODER_CFG}


def _llama_3b() -> tuple[dict[str, Any], torch.nn.Module]:
    from transformers import AutoConfig

    model_cfg = {**TINY_DECODER_CFG, "name": "llama-3.2-3b", "max_seq_len": 131072}
    return model_cfg, meta_backbone(AutoConfig.from_pretrained(str(LLAMA_3B)), "decoder")


def _deep_tiny(kind: str) -> torch.nn.Module:
    """test_registry's tiny model with 5 blocks: deep enough for the 1-3-block extrapolation (4 blocks at least)."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "encoder":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=5, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=100, max_position_embeddings=32))
        model.pooler = None   # as harness.models.load leaves an encoder (the task head pools by itself)
        return model
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=5, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                        max_position_embeddings=32))


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("name", METHODS)
def test_meta_count_equals_the_count_with_weights(name: str, kind: str) -> None:
    model_cfg = TINY[kind]
    cfg = method_cfg(name)
    if kind not in cfg["info"]["applies_to"]:
        pytest.skip(f"{name} applies to {cfg['info']['applies_to']} only")
    real = _deep_tiny(kind)
    meta = meta_backbone(real.config, kind)
    assert all(p.is_meta for p in meta.parameters())
    torch.manual_seed(0)
    with_weights, how = count_trainable(real, cfg, model_cfg)
    assert how == "weights"
    torch.manual_seed(0)
    from_shapes, how = count_trainable(meta, cfg, model_cfg)
    assert from_shapes == with_weights, f"{name}: {from_shapes} from the meta device ({how}), {with_weights} with weights"
    if how != "meta":   # random weights on the targets: extrapolated from 1-3 blocks, and built on all 5
        assert "built on 1-3 of 5 identical blocks" in how, how
        assert count_trainable(meta, cfg, model_cfg, extrapolate=False) == (with_weights, how.split(";")[0])
    assert all(p.is_meta for p in meta.parameters()), "the shared meta backbone is never changed"


def test_blocks_that_differ_are_never_extrapolated() -> None:
    """A stack whose blocks differ in shape is built whole: one block's count says nothing of another's."""
    from harness.capacity import _identical_stack, _target_matcher

    meta = meta_backbone(_deep_tiny("decoder").config, "decoder")
    hit = _target_matcher(method_cfg("loldu"), TINY_DECODER_CFG)
    assert _identical_stack(meta, hit) == ("model.layers", 5)
    odd = copy.deepcopy(meta)
    with torch.device("meta"):
        odd.model.layers[3].mlp.up_proj = torch.nn.Linear(32, 48, bias=False)
    assert _identical_stack(odd, hit) is None
    assert _identical_stack(meta, _target_matcher(method_cfg("loldu"), {"target_modules": ["lm_head"]})) is None


def test_llama_3_2_3b_lora_r32_on_q_and_v() -> None:
    """peft's method_comparison (MetaMathQA on Llama-3.2-3B): LoRA r=32 on q_proj, v_proj trains 9.18M."""
    model_cfg, backbone = _llama_3b()
    lora = {**method_cfg("lora"), "params": {**method_cfg("lora")["params"], "r": 32}}
    count, how = count_trainable(backbone, lora, model_cfg)
    # per layer r·(in + out) for q (3072 → 3072) and v (3072 → 1024), 28 layers
    assert count == 28 * 32 * ((3072 + 3072) + (3072 + 1024)) == 9_175_040
    assert how == "meta"


def test_full_fine_tuning_counts_every_weight_of_llama_3_2_3b() -> None:
    """3.21B with the tied embedding counted once (tie_word_embeddings)."""
    model_cfg, backbone = _llama_3b()
    count, _ = count_trainable(backbone, method_cfg("full"), model_cfg)
    assert count == 3_212_749_824


def test_peftbench_methods_counts_every_decoder_method_from_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    from methods.catalog import main

    started = time.perf_counter()
    assert main(["--model", str(LLAMA_3B), "--format", "json"]) == 0
    elapsed = time.perf_counter() - started
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["kind"] == "decoder" and out["model"]["target_modules"] == ["q_proj", "v_proj"]
    assert out["model"]["target_widths"] == {"q_proj": [3072, 3072], "v_proj": [3072, 1024]}
    entries = {e["name"]: e for e in out["methods"]}
    assert sorted(entries) == METHODS
    for name, e in entries.items():
        t = e["trainable"]
        if "decoder" in e["applies_to"]:
            assert t["ok"] and t["count"] > 0, f"{name}: {t}"
        else:
            assert t == {"ok": False, "why": "does not apply to decoder models"}
    assert entries["lora"]["trainable"]["count"] == 9_175_040 // 4   # r=8, the YAML's default
    print(f"peftbench methods --model llama-3.2-3b: {elapsed:.1f} s for {len(entries)} methods")


def test_capacity_solves_on_a_config_only_model() -> None:
    """Solving LoRA's rank for 9,175,040 trainable parameters on Llama-3.2-3B, from its config: r=32."""
    import types

    from methods.catalog import solve_entry

    model_cfg, backbone = _llama_3b()
    loaded = types.SimpleNamespace(backbone=backbone, tokenizer=None)
    assert solve_entry(method_cfg("lora"), model_cfg, loaded, 9_175_040) == \
        {"knob": "r", "value": 32, "count": 9_175_040, "ok": True}
