"""`peftbench methods`: the catalogue lists every method YAML with its paper, knob and model kinds, and
solves knobs for a trainable-parameter target without training."""
from __future__ import annotations

import json
import types

import pytest

from methods.catalog import main, solve_entry
from tests.conftest import conf_names
from tests.methods.test_registry import TINY_ENCODER_CFG, method_cfg, tiny_bert


def test_json_lists_every_method_with_its_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    entries = {e["name"]: e for e in out["methods"]}
    assert sorted(entries) == conf_names("method")
    for name, e in entries.items():
        assert e["kind"] in ("peft", "custom", "full")
        assert e["applies_to"] and set(e["applies_to"]) <= {"encoder", "decoder"}
        assert e["mechanism"]
        if name != "full":
            assert e["paper"] and e["paper"][:4].isdigit() and "." in e["paper"], name
    assert entries["prompt_tuning"]["applies_to"] == ["decoder"]
    assert entries["lora"]["capacity_knob"] == "r" and entries["lora"]["defaults"]["params"]["r"] == 8


def test_markdown_has_one_row_per_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lora", "vera"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "arXiv" in r]
    assert [r.split("|")[1].strip() for r in rows] == ["lora", "vera"]


def test_unknown_method_or_half_a_solve_request_is_an_error() -> None:
    assert main(["nosuch"]) == 2
    assert main(["--model", "minilm-l6"]) == 2


def test_solve_entry_meets_the_target_or_says_why() -> None:
    loaded = types.SimpleNamespace(backbone=tiny_bert())
    lora = method_cfg("lora")
    exact = solve_entry(lora, TINY_ENCODER_CFG, loaded, 1024)        # r=4 on 4 layers of 32x32: 4·4·64
    assert exact == {"knob": "r", "value": 4, "count": 1024, "ok": True}
    ia3 = solve_entry(method_cfg("ia3"), TINY_ENCODER_CFG, loaded, 100_000)
    assert not ia3["ok"] and "no capacity knob" in ia3["why"] and "from the target" in ia3["why"]
    too_small = solve_entry(lora, TINY_ENCODER_CFG, loaded, 10)
    # the count at r=1 (256) is what a closest-policy campaign would run: reported with how far off it is
    assert too_small["count"] == 256 and not too_small["ok"]
    assert too_small["why"] == "even r=1 exceeds the target (2460% from the target)"
    prompt = solve_entry(method_cfg("prompt_tuning"), TINY_ENCODER_CFG, loaded, 1000)
    assert prompt == {"ok": False, "why": "does not apply to encoder models"}
