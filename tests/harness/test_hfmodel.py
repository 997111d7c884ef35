"""model=hf: any model by hub id or local folder (harness.hfmodel), resolved when the job is specified.

Offline throughout (no hub here): folders are config-only copies of the Llama-3.2-3B fixture, the hub is a
Hugging Face cache laid out as huggingface_hub writes it, and the online commit lookup is stubbed where a test
needs it. What is checked: identity (content sha256 / hub commit) and what the signature holds of it, targets
from peft's per-architecture table, widths from the config on the meta device, and one error naming every
place tried, before any compute.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import hfmodel
from harness.spec import ConfigError, spec_from_config
from tests.conftest import compose_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LLAMA_3B = FIXTURES / "llama-3.2-3b"
SHA = "0cb88a4f764b7a12671c53f0838cd831a0843b95"   # a commit-shaped name for the fake cache's snapshot


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))   # empty unless a test fills it


def _cfg(tmp_overrides: list[str], *overrides: str) -> dict[str, Any]:
    return compose_dict([*tmp_overrides, "model=hf", "model.kind=decoder", "task=gsm8k/gsm8k", *overrides])


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _hub_cache(root: Path, hub_id: str, commit: str = SHA, revision: str = "main") -> Path:
    """A Hugging Face cache holding config.json of hub_id at `commit`, with `revision` pointing at it."""
    repo = root / f"models--{hub_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    shutil.copy(LLAMA_3B / "config.json", snap / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    return snap


# ------------------------------------------------------------------------------------------ derived fields
def test_targets_come_from_peft_and_widths_from_the_config(tmp_overrides: list[str]) -> None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults

    spec = spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}"))
    assert spec.model["target_modules"] == list(peft_defaults["llama"]) == ["q_proj", "v_proj"]
    # q: 3072 → 24 heads × 128; v: 3072 → 8 KV heads × 128 (grouped-query attention)
    assert spec.model["target_widths"] == {"q_proj": [3072, 3072], "v_proj": [3072, 1024]}
    assert spec.model["max_seq_len"] == 131072 and spec.max_len == spec.budget["max_seq_len"]
    assert len(spec.model["content_sha256"]) == 64 and spec.model["commit"] is None
    assert spec.model["path"] == str(LLAMA_3B)


def test_named_targets_get_their_widths(tmp_overrides: list[str]) -> None:
    spec = spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}",
                                 "model.target_modules=[gate_proj,down_proj,k_proj]"))
    assert spec.model["target_widths"] == {"gate_proj": [3072, 8192], "down_proj": [8192, 3072],
                                           "k_proj": [3072, 1024]}


def test_a_target_that_matches_nothing_is_a_config_error(tmp_overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}", "model.target_modules=[query,v_proj]"))
    (problem,) = err.value.problems
    assert problem.startswith("model.target_modules: 'query' matches no linear layer") and "q_proj" in problem


def test_block_sizes_are_checked_against_the_derived_widths(tmp_overrides: list[str]) -> None:
    """Derived widths reach validation: VB-LoRA's vector length must divide 3072 and 1024."""
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}", "method=vblora",
                              "method.params.vector_length=40"))
    assert any(p.startswith("method.params.vector_length: 40 does not divide") for p in err.value.problems)


def test_an_unknown_architecture_says_so_before_any_compute(tmp_path: Path, tmp_overrides: list[str]) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "hidden_size": 8}))
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, f"model.path={folder}"))
    assert any(p.startswith(f"model: cannot read the config of {folder}") for p in err.value.problems)


# ------------------------------------------------------------------------------------------ signature
def test_the_folder_path_is_plumbing_and_its_content_is_semantic(tmp_path: Path, tmp_overrides: list[str]) -> None:
    a, b = _copy(LLAMA_3B, tmp_path / "a"), _copy(LLAMA_3B, tmp_path / "elsewhere" / "b")
    sa = spec_from_config(_cfg(tmp_overrides, f"model.path={a}"))
    sb = spec_from_config(_cfg(tmp_overrides, f"model.path={b}", "model.hub_id=meta-llama/Llama-3.2-3B"))
    assert sa.signature == sb.signature, "same files at another path (and a hub id as a label): one experiment"
    assert "path" not in sa.semantic()["model"] and "hub_id" not in sb.semantic()["model"]
    config = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    assert spec_from_config(_cfg(tmp_overrides, f"model.path={b}")).signature != sa.signature
    (a / "README.md").write_text("documentation does not compute")
    assert spec_from_config(_cfg(tmp_overrides, f"model.path={a}")).signature == sa.signature


def test_semantic_model_fields_change_the_signature(tmp_overrides: list[str]) -> None:
    base = spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}")).signature
    for override in ("model.dtype=bfloat16", "model.target_modules=[q_proj,k_proj,v_proj]", "model.max_seq_len=4096",
                     "model.trust_remote_code=true"):
        assert spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}", override)).signature != base, override


def test_a_pinned_content_hash_must_match(tmp_overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, f"model.path={LLAMA_3B}", "model.content_sha256=" + "0" * 64))
    assert any("is pinned, but the folder" in p for p in err.value.problems)


def test_a_folder_changed_after_the_spec_is_refused_at_load(tmp_path: Path, tmp_overrides: list[str]) -> None:
    folder = _copy(LLAMA_3B, tmp_path / "m")
    spec = spec_from_config(_cfg(tmp_overrides, f"model.path={folder}"))
    assert hfmodel.locate_resolved(spec.model).content_sha256 == spec.model["content_sha256"]
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(hfmodel.ModelUnavailableError, match="now holds .* not .* as when the job was specified"):
        hfmodel.locate_resolved(spec.model)


def test_the_digest_cache_skips_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _copy(LLAMA_3B, tmp_path / "m")
    first = hfmodel.content_digest(folder, tmp_path / "cache")
    reads: list[str] = []
    real = hfmodel.hashlib.file_digest
    monkeypatch.setattr(hfmodel.hashlib, "file_digest", lambda fh, algo: reads.append(fh.name) or real(fh, algo))
    assert hfmodel.content_digest(folder, tmp_path / "cache") == first and reads == []
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert hfmodel.content_digest(folder, tmp_path / "cache")[0] != first[0] and len(reads) == 1


# ------------------------------------------------------------------------------------------ the hub
def test_a_cached_hub_revision_resolves_to_its_commit_offline(tmp_path: Path, tmp_overrides: list[str]) -> None:
    _hub_cache(tmp_path / "hf-cache", "meta-llama/Llama-3.2-3B")
    spec = spec_from_config(_cfg(tmp_overrides, "model.hub_id=meta-llama/Llama-3.2-3B"))
    assert spec.model["commit"] == SHA and spec.model["content_sha256"] is None
    assert spec.model["target_widths"] == {"q_proj": [3072, 3072], "v_proj": [3072, 1024]}
    sem = spec.semantic()["model"]
    assert sem["hub_id"] == "meta-llama/Llama-3.2-3B" and sem["commit"] == SHA and "revision" not in sem
    # the revision as written is plumbing: main and the commit it points at are one experiment
    assert spec_from_config(_cfg(tmp_overrides, "model.hub_id=meta-llama/Llama-3.2-3B",
                                 f"model.revision={SHA}")).signature == spec.signature


def test_online_the_revision_is_asked_of_the_hub(tmp_path: Path, tmp_overrides: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    other = "1" * 40
    _hub_cache(tmp_path / "hf-cache", "Qwen/Qwen2.5-0.5B", commit=other, revision="v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(hfmodel, "_online_commit", lambda hub_id, rev: asked.append((hub_id, rev)) or other)
    spec = spec_from_config(_cfg(tmp_overrides, "model.hub_id=Qwen/Qwen2.5-0.5B", "model.revision=v1"))
    assert asked == [("Qwen/Qwen2.5-0.5B", "v1")] and spec.model["commit"] == other
    info = hfmodel.source_info(spec.model, hfmodel.locate_resolved(spec.model))
    assert info == {"source": "hub", "hub_id": "Qwen/Qwen2.5-0.5B", "revision": "v1", "commit": other,
                    "trust_remote_code": False}


def test_a_model_that_cannot_be_had_names_every_place_tried(tmp_path: Path, tmp_overrides: list[str]) -> None:
    missing = tmp_path / "models" / "llama-3.2-3b"
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, f"model.path={missing}", "model.hub_id=nobody/no-such-model",
                              "method.params.r=0"))
    problems = err.value.problems
    assert any(p.startswith("method.params.r:") for p in problems), "one error names every bad field"
    (unavailable,) = [p for p in problems if "cannot be had" in p]
    places = [ln.strip()[2:] for ln in unavailable.splitlines()[1:]]
    assert places == [f"model.path {missing}: no such folder",
                      "hub nobody/no-such-model@main: offline (HF_HUB_OFFLINE is set)",
                      f"Hugging Face cache {tmp_path / 'hf-cache'}: nobody/no-such-model@main is not cached"]


def test_without_the_offline_flag_the_hub_says_why(tmp_path: Path, tmp_overrides: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A real hub query: offline here (no network), "not found" where there is one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, "model.hub_id=peftbench-tests/no-such-model-3f9a"))
    (problem,) = err.value.problems
    hub_line = problem.splitlines()[1]
    assert hub_line.startswith("    - hub peftbench-tests/no-such-model-3f9a@main: ")
    assert "offline" in hub_line or "not found" in hub_line, hub_line


def test_a_missing_model_fails_the_run_before_any_compute(tmp_path: Path, tmp_dirs: dict[str, Path],
                                                          tmp_overrides: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    missing = tmp_path / "nowhere"
    rc = cli.main(["run", *tmp_overrides, "model=hf", "model.kind=decoder", f"model.path={missing}",
                   "task=gsm8k/gsm8k"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "invalid config: 1 problem(s)" in err and f"model.path {missing}: no such folder" in err
    assert all(not any(d.iterdir()) for d in tmp_dirs.values()), "nothing written, nothing run"


# ------------------------------------------------------------------------------------------ validation
def test_model_hf_needs_a_kind_and_a_place(tmp_overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        spec_from_config(compose_dict([*tmp_overrides, "model=hf", "task=gsm8k/gsm8k"]))
    assert sorted(p.split(":")[0] for p in err.value.problems) == ["model.hub_id / model.path", "model.kind"]


@pytest.mark.parametrize(("overrides", "field"), [
    (["model.hub_id=not/a/hub/id"], "model.hub_id"),
    (["model.source=local", "model.hub_id=Qwen/Qwen2.5-0.5B"], "model.path"),
    (["model.source=hub", f"model.path={LLAMA_3B}"], "model.hub_id"),
    (["model.trust_remote_code=maybe", f"model.path={LLAMA_3B}"], "model.trust_remote_code"),
])
def test_open_model_fields_are_validated(overrides: list[str], field: str, tmp_overrides: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        spec_from_config(_cfg(tmp_overrides, *overrides))
    assert any(p.startswith(f"{field}:") for p in err.value.problems), err.value.problems


def test_guess_kind_reads_the_architectures() -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(LLAMA_3B))
    assert hfmodel.guess_kind(config) == "decoder"
    config.architectures = ["BertModel"]
    assert hfmodel.guess_kind(config) == "encoder"
