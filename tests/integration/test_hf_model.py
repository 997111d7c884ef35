"""model=hf on a real local folder: the embedded SmolLM2's cached Hugging Face folder (.cache/models/smollm2-135m/hf,
config.json + tokenizer + safetensors, as `peftbench fetch-models` leaves it) trains a few steps through the
same path as any other model, and the record says which bytes it loaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.dispatch import execute
from harness.models import MANIFEST
from harness.spec import PROJECT_ROOT, spec_from_config
from tests.conftest import compose_dict

pytestmark = pytest.mark.integration

SMOLLM2 = PROJECT_ROOT / ".cache" / "models" / "smollm2-135m" / "hf"
TINY = ["budget=smoke", "budget.steps=2", "budget.tokens=null", "budget.batch_size=2", "budget.max_seq_len=96",
        "budget.eval_size_generate=2", "budget.eval_batch_size=2", "budget.max_new_tokens=8"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_a_local_folder_trains_and_the_record_names_its_bytes(tmp_overrides: list[str]) -> None:
    if not (SMOLLM2 / "config.json").exists():
        pytest.skip("no embedded SmolLM2 folder: run `peftbench fetch-models smollm2-135m`")
    cfg = compose_dict([*tmp_overrides, "model=hf", f"model.path={SMOLLM2}", "model.kind=decoder",
                        "task=gsm8k/gsm8k", "method=lora", *TINY])
    spec = spec_from_config(cfg)
    assert spec.model["target_modules"] == ["q_proj", "v_proj"]          # peft's llama defaults
    assert spec.model["target_widths"] == {"q_proj": [576, 576], "v_proj": [576, 192]}   # as smollm2-135m.yaml
    summary = execute(spec)
    record = json.loads(Path(summary["record"]).read_text())
    assert record["run"]["status"] == "success", record["run"].get("traceback")
    assert record["train"]["steps"] == 2 and record["train"]["trainable_params"] == 30 * 8 * (576 + 576 + 576 + 192)

    source = record["meta"]["model"]
    assert source["source"] == "path" and source["path"] == str(SMOLLM2.resolve())
    assert source["content_sha256"] == spec.model["content_sha256"]
    # the same weights fetch-models unpacked: the folder's files are the ones its manifest lists
    manifest = json.loads((SMOLLM2.parent / MANIFEST).read_text())
    assert source["files"]["model.safetensors"] == manifest["files"]["model.safetensors"]
    sem = record["run"]["spec"]["model"]
    assert sem["content_sha256"] == source["content_sha256"] and "path" not in sem
