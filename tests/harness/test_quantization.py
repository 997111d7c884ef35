"""model.quantization (issue #19): validation before compute, the signature, the rule for methods that cannot
run on a quantized base, and the logical parameter count of a 4-bit base (tiny BERT built from a config)."""
from __future__ import annotations

import importlib.util

import pytest

from harness.models import bitsandbytes_config, logical_numel, quant_settings, quantization_info
from harness.quantization import bitsandbytes_users
from harness.spec import ConfigError, spec_from_config
from harness.validate import quantized_base_refusal
from tests.conftest import compose_dict

BASE = ("logger=none", "method=lora", "model=minilm-l6", "task=glue/sst2", "budget=smoke", "seed=0", "device=cpu")


def _spec(*overrides: str):
    return spec_from_config(compose_dict((*BASE, *overrides)))


def _problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        _spec(*overrides)
    return exc.value.problems


def test_a_null_quantization_keeps_every_signature() -> None:
    plain = _spec()
    assert plain.model["quantization"] is None
    assert not {"quantization", "double_quant", "compute_dtype"} & set(plain.semantic()["model"])


def test_quantization_is_semantic_and_resolved() -> None:
    plain, nf4 = _spec(), _spec("model.quantization=nf4")
    assert nf4.signature != plain.signature
    m = nf4.semantic()["model"]
    assert (m["quantization"], m["double_quant"], m["compute_dtype"]) == ("nf4", True, "float32")
    # the defaults written out are the same experiment; another setting is another one
    assert _spec("model.quantization=nf4", "model.double_quant=true", "model.compute_dtype=fp32").signature \
        == nf4.signature
    assert _spec("model.quantization=nf4", "model.double_quant=false").signature != nf4.signature
    assert _spec("model.quantization=fp4").signature != nf4.signature
    int8 = _spec("model.quantization=int8").semantic()["model"]
    assert int8["quantization"] == "int8" and "double_quant" not in int8 and "compute_dtype" not in int8


def test_every_bad_quantization_field_is_named_at_once() -> None:
    problems = _problems("model.quantization=nf2", "model.double_quant=maybe", "model.compute_dtype=int4")
    text = "\n".join(problems)
    assert "model.quantization: 'nf2' is not one of nf4, fp4, int8" in text
    assert "model.double_quant: 'maybe'" in text
    assert "model.compute_dtype: 'int4' is not one of" in text
    assert any("model.double_quant" in p and "int8" in p for p in _problems("model.quantization=int8",
                                                                           "model.double_quant=true"))
    assert any("model.compute_dtype" in p and "quantized base only" in p for p in _problems("model.compute_dtype=bf16"))


@pytest.mark.parametrize("method", ["full", "galore", "lisa", "pissa", "loftq", "delta_lora"])
def test_a_method_that_writes_the_base_is_refused_on_a_quantized_one(method: str) -> None:
    problems = _problems(f"method={method}", "model.quantization=nf4")
    assert any(p.startswith("model.quantization: 'nf4' with method " + repr(method)) and "base weights" in p
               for p in problems), problems


def test_adapter_methods_run_on_a_quantized_base() -> None:
    for method in ("lora", "dora", "olora", "ia3"):
        assert _spec(f"method={method}", "model.quantization=nf4").model["quantization"] == "nf4"
    assert quantized_base_refusal({"kind": "peft", "info": {}}) is None
    assert "trains the base" in quantized_base_refusal({"kind": "full"})


@pytest.mark.parametrize(("overrides", "field"), [(("model.quantization=nf4",), "model.quantization: 'nf4'"),
                                                  (("method=loftq",), "method.params.init_lora_weights: 'loftq'")])
def test_missing_bitsandbytes_names_the_field_and_the_extra(overrides: tuple[str, ...], field: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    assert f"{field} needs bitsandbytes, which is not installed: pip install 'peftbench[quant]' " \
           "(or bitsandbytes>=0.47)" in _problems(*overrides)
    _spec()   # a job that needs none of it validates without it


def test_bitsandbytes_users_are_a_quantized_base_and_loftq() -> None:
    assert bitsandbytes_users(_spec().model, _spec().method) == []
    nf4 = _spec("model.quantization=nf4")
    assert bitsandbytes_users(nf4.model, nf4.method) == ["model.quantization: 'nf4'"]
    loftq = _spec("method=loftq")
    assert bitsandbytes_users(loftq.model, loftq.method) == ["method.params.init_lora_weights: 'loftq'"]


KEEP_OUT = """
import sys
from harness import cli
from harness.spec import spec_from_config
from tests.conftest import compose_dict

spec = spec_from_config(compose_dict({overrides!r}))
kept_out = cli.keep_out_bitsandbytes(spec)
import peft
import torch
from transformers import BertConfig, BertModel

model = peft.get_peft_model(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, vocab_size=50)),
                            peft.LoraConfig(r=2, target_modules=["query", "value"]))
model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.sum().backward()
print(kept_out, sys.modules.get("bitsandbytes") is not None, peft.import_utils.is_bnb_available())
"""


@pytest.mark.parametrize(("overrides", "want"), [((), "True False False"),
                                                 (("model.quantization=nf4",), "False True True")])
def test_a_single_run_keeps_bitsandbytes_out_unless_it_needs_it(overrides: tuple[str, ...], want: str) -> None:
    """A fresh process, as `peftbench run` is: a job that quantizes nothing builds and trains its peft model
    with bitsandbytes never imported (as on the default install); one that does keeps it."""
    import subprocess
    import sys

    from harness.spec import PROJECT_ROOT

    code = KEEP_OUT.format(overrides=(*BASE, *overrides))
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == want


def test_bitsandbytes_config_follows_the_block() -> None:
    assert quant_settings({"quantization": None}) is None and bitsandbytes_config({}) is None
    cfg = bitsandbytes_config({"quantization": "nf4", "dtype": "bfloat16", "double_quant": None})
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert str(cfg.bnb_4bit_compute_dtype) == "torch.bfloat16"
    assert bitsandbytes_config({"quantization": "int8"}).load_in_8bit


def test_a_4bit_base_counts_its_logical_parameters() -> None:
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import BertConfig, BertModel

    from harness.train import count_params

    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    plain = BertModel(cfg)
    _, total_plain, _ = count_params(plain)
    import bitsandbytes as bnb

    def quantize(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      quant_type="nf4")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    q.bias = child.bias
                q = q.to("cpu")   # quantizes
                setattr(module, name, q)
            else:
                quantize(child)

    quantize(plain)
    packed = sum(p.numel() for p in plain.parameters())
    _, total_q, _ = count_params(plain)
    assert packed < total_plain and total_q == total_plain
    w = plain.encoder.layer[0].attention.self.query.weight
    assert logical_numel(w) == 32 * 32 and w.numel() == 32 * 32 // 2
    info = quantization_info(plain, {"quantization": "nf4", "dtype": "float32"})
    assert info["quantized_linear_layers"] == 2 * 6 + 1 and info["base_bytes"] > 0   # 6 per layer and the pooler


@pytest.mark.parametrize(("argv", "want"), [(["method=lora"], True), (["-m", "method=lora,dora"], False)])
def test_only_a_single_run_counts_as_a_one_job_process(argv: list[str], want: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """hydra_task keeps bitsandbytes out only where the process runs one job: a single run (and a SLURM task),
    never a sweep driver, whose later jobs may need it; and the flag does not outlive the call."""
    import os

    import hydra

    from harness import cli

    seen = []
    monkeypatch.delenv(cli.ONE_JOB_ENV, raising=False)
    monkeypatch.setattr(hydra, "main", lambda **_: lambda task: lambda: seen.append(os.environ.get(cli.ONE_JOB_ENV)))
    monkeypatch.setattr(cli, "_check_single", lambda overrides: None)
    assert cli._hydra([*argv, "logger=none"]) == 0
    assert seen == ["1" if want else ""] and cli.ONE_JOB_ENV not in os.environ
