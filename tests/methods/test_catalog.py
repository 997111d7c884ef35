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


def test_unknown_method_or_a_target_without_a_model_is_an_error() -> None:
    assert main(["nosuch"]) == 2
    assert main(["--trainable-params", "1000"]) == 2


def test_model_alone_counts_each_method_at_its_configured_values(capsys: pytest.CaptureFixture[str]) -> None:
    """--model without a target: the count of every named method on it, and how it was counted (a folder with only
    config.json: on the meta device; LoLDU reads its weights' LU pivots, so its targets get random values)."""
    from tests.methods.test_counts_meta import LLAMA_3B

    assert main(["--model", str(LLAMA_3B), "lora", "loldu", "ia3"]) == 0
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[7:9]]
            for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "arXiv" in r}
    assert rows["lora"] == ["2,293,760", "meta"]
    assert rows["ia3"] == ["286,720", "meta"]   # k_proj, v_proj (3072 → 1024) and down_proj's input (8192), 28 layers
    assert rows["loldu"][0] == "504" and rows["loldu"][1].startswith("random weights on q_proj, v_proj")


def test_a_model_that_cannot_be_had_is_one_clear_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert main(["--model", "nobody/no-such-model", "lora"]) == 2
    err = capsys.readouterr().err
    assert "hub nobody/no-such-model@main: offline" in err and "is not cached" in err


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
