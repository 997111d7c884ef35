"""Any Hugging Face model, by hub id or local folder: where it is, which bytes it is, what shapes it has.

A model block that declares a `path` key (conf/model/hf.yaml and any copy of it) is *open*: it names a
model by `hub_id` (+ `revision`) or by a local folder (`path`: config.json, tokenizer, safetensors), and
what the named YAMLs state by hand is derived here, from the model's config alone, when the job is
specified (harness.spec.spec_from_config), before any compute:

- identity: a hub revision (branch, tag or commit) is resolved to its commit sha (`commit`), online
  through huggingface_hub, offline from the Hugging Face cache; a folder is named by the sha256 of its
  files (`content_sha256`: every file but hidden ones and *.md, kept per file in
  <cache>/model-digests/ keyed by size and mtime, so a 6 GB folder is read once);
- `target_modules` (null): peft's per-architecture defaults for the config's `model_type`
  (peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, read at run time);
- `target_widths` (null): the [in, out] features of each target, read off the model built from its
  config on the meta device (no weights are read or allocated);
- `max_seq_len` (null): the config's max_position_embeddings (the budget's max_seq_len caps it).

A model that cannot be had raises ModelUnavailableError naming every place tried (the folder, the
Hugging Face cache, the hub with the reason: offline, not found, gated, no such revision).

This module sits below harness.spec, harness.models, harness.capacity and methods.catalog: it imports
nothing from the project, and torch/transformers/peft only inside functions.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_KINDS = ("encoder", "decoder")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
DIGESTS = "model-digests"   # under the peftbench cache dir


class ModelUnavailableError(RuntimeError):
    """No way to get the model's weights; the message says every route tried."""


def is_open(model_cfg: Mapping[str, Any]) -> bool:
    """An open block (conf/model/hf.yaml or a copy): declares `path`, resolved from the model itself."""
    return "path" in model_cfg


@dataclass
class Located:
    """Where an open model's files are: a local folder, or a hub repo at a commit."""

    where: str                      # "path" | "hub"
    ref: str                        # the folder (resolved) or the hub id
    commit: str | None = None       # hub: the commit the revision resolved to
    config_dir: Path | None = None  # a local directory holding config.json (folder or hub snapshot)
    content_sha256: str | None = None   # path: sha256 over the folder's files
    files: dict[str, str] = field(default_factory=dict)   # path: file → sha256
    notes: list[str] = field(default_factory=list)        # e.g. "offline: the cached snapshot of main"


# ------------------------------------------------------------------------------------------ identity
def _content_files(folder: Path) -> list[Path]:
    """The files that make the model: everything but hidden files and documentation (*.md)."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts) and p.suffix != ".md":
            out.append(p)
    return out


def content_digest(folder: Path, cache_dir: Path | None = None) -> tuple[str, dict[str, str]]:
    """(sha256 over the folder's files, {relative path: sha256}). A file whose size and mtime match the
    digest cache (<cache_dir>/model-digests/) is not read again."""
    folder = Path(folder).resolve()
    cache_file = (Path(cache_dir) / DIGESTS / f"{hashlib.sha1(str(folder).encode()).hexdigest()[:24]}.json"
                  if cache_dir else None)
    known: dict[str, list[Any]] = {}
    if cache_file is not None:
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(cache_file.read_text()).get("files", {})
    files: dict[str, str] = {}
    stamps: dict[str, list[Any]] = {}
    for p in _content_files(folder):
        rel = p.relative_to(folder).as_posix()
        st = p.stat()
        hit = known.get(rel)
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == [st.st_size, st.st_mtime_ns]:
            sha = hit[2]
        else:
            with open(p, "rb") as fh:
                sha = hashlib.file_digest(fh, "sha256").hexdigest()
        files[rel] = sha
        stamps[rel] = [st.st_size, st.st_mtime_ns, sha]
    if not files:
        raise ModelUnavailableError(f"{folder}: no files")
    if cache_file is not None and stamps != known:
        with contextlib.suppress(OSError):   # a read-only cache only costs the next job the hashing
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"folder": str(folder), "files": stamps}))
            os.replace(tmp, cache_file)
    whole = hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return whole, files


# ------------------------------------------------------------------------------------------ locate
def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE")   # as set now (huggingface_hub read it once, at import)
    return bool(constants.HF_HUB_OFFLINE) if flag is None else flag.upper() in ("1", "ON", "YES", "TRUE")


def _hub_cache() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or str(constants.HF_HUB_CACHE)


def _hub_reason(exc: BaseException, hub_id: str, revision: str) -> str:
    """Why the hub did not answer, in the words a user acts on."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return "gated: accept its license on the hub and set HF_TOKEN"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"not found: no revision {revision!r}"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return "not found (or private: set HF_TOKEN)"
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "offline (HF_HUB_OFFLINE is set)"
    if isinstance(exc, errors.HFValidationError):
        return f"not a hub id: {str(exc).splitlines()[0]}"
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"ConnectError", "ConnectionError", "NetworkError", "TransportError", "TimeoutException",
                "Timeout", "ConnectTimeout", "ReadTimeout"}:
        return f"offline (no network: {str(exc).splitlines()[0][:120]})"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


@functools.cache
def _online_commit(hub_id: str, revision: str) -> str:
    """The commit a revision points at now (one question per process: a sweep's jobs share the answer)."""
    from huggingface_hub import HfApi

    return str(HfApi().model_info(hub_id, revision=revision).sha)


def _cached_snapshot(hub_id: str, revision: str) -> Path | None:
    """The Hugging Face cache's snapshot folder of this revision, when its config.json is there."""
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(hub_id, "config.json", cache_dir=_hub_cache(), revision=revision)
    return Path(hit).parent if isinstance(hit, str) else None


def _locate_hub(hub_id: str, revision: str, tried: list[str]) -> Located | None:
    where = f"hub {hub_id}@{revision}"
    if not HUB_ID_RE.match(hub_id):
        tried.append(f"{where}: not a hub id (owner/name)")
        return None
    if not _offline():
        try:
            commit = _online_commit(hub_id, revision)
        except Exception as exc:  # noqa: BLE001 - every failure is a reason in the one error
            tried.append(f"{where}: {_hub_reason(exc, hub_id, revision)}")
        else:
            snap = _cached_snapshot(hub_id, commit)
            return Located("hub", hub_id, commit=commit, config_dir=snap)
    else:
        tried.append(f"{where}: offline (HF_HUB_OFFLINE is set)")
    snap = _cached_snapshot(hub_id, revision)
    if snap is None:
        tried.append(f"Hugging Face cache {_hub_cache()}: {hub_id}@{revision} is not cached")
        return None
    commit = snap.name if SHA_RE.match(snap.name) else None
    if commit is None:
        tried.append(f"Hugging Face cache {snap}: not a snapshot folder named by its commit")
        return None
    return Located("hub", hub_id, commit=commit, config_dir=snap,
                   notes=[f"offline: revision {revision!r} is the cached snapshot {commit}"])


def locate(model_cfg: Mapping[str, Any], cache_dir: Path | None = None) -> Located:
    """Where an open model's files are, or ModelUnavailableError naming every place tried.

    `source`: auto (the folder when `path` is set and holds config.json, else the hub), local (the folder
    only), hub (the hub only, `path` ignored)."""
    source = model_cfg.get("source") or "auto"
    path, hub_id = model_cfg.get("path"), model_cfg.get("hub_id")
    revision = str(model_cfg.get("revision") or "main")
    tried: list[str] = []
    if path and source in ("auto", "local"):
        folder = Path(str(path)).expanduser()
        if not folder.is_dir():
            tried.append(f"model.path {folder}: no such folder")
        elif not (folder / "config.json").is_file():
            tried.append(f"model.path {folder}: no config.json in it")
        else:
            digest, files = content_digest(folder, cache_dir)
            return Located("path", str(folder.resolve()), config_dir=folder.resolve(),
                           content_sha256=digest, files=files)
    if hub_id and source in ("auto", "hub"):
        found = _locate_hub(str(hub_id), revision, tried)
        if found is not None:
            return found
    if not tried:
        tried.append("nothing to try: set model.path (a folder with config.json) or model.hub_id"
                     + (f" (model.source={source})" if source != "auto" else ""))
    # the places indented under the head line: in a ConfigError they nest under its own "  - " items
    raise ModelUnavailableError(f"model {model_cfg.get('name')!r} cannot be had; tried:\n    - "
                                + "\n    - ".join(tried))


# ------------------------------------------------------------------------------------------ config
def read_config(located: Located, *, trust_remote_code: bool = False) -> Any:
    """The model's transformers config (config.json only; custom code only with trust_remote_code)."""
    from transformers import AutoConfig

    if located.config_dir is not None and not (located.where == "hub" and trust_remote_code):
        return AutoConfig.from_pretrained(str(located.config_dir), trust_remote_code=trust_remote_code)
    return AutoConfig.from_pretrained(located.ref, revision=located.commit, trust_remote_code=trust_remote_code)


def guess_kind(config: Any) -> str:
    """decoder when the config's architectures (or its model type alone) is a causal LM, else encoder."""
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        return "decoder" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) else "encoder"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    mt = getattr(config, "model_type", None)
    return "decoder" if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES \
        else "encoder"


def default_targets(model_type: str | None) -> list[str] | None:
    """peft's per-architecture default target modules (LoRA's table), or None when peft has none."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    found = defaults.get(model_type or "")
    return list(found) if found else None


_META: dict[tuple[str, str, bool, str], Any] = {}


def meta_backbone(config: Any, kind: str, *, trust_remote_code: bool = False, dtype: str = "float32") -> Any:
    """The backbone the job would load (AutoModel for encoders, AutoModelForCausalLM for decoders), built from
    the config on the meta device: every parameter has its shape and dtype, none has storage. Built once per
    process and shared: deep-copy it before changing it (harness.capacity.count_trainable does)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    key = (config.to_json_string(use_diff=False), kind, trust_remote_code, dtype)
    if key not in _META:
        cls = AutoModel if kind == "encoder" else AutoModelForCausalLM
        with torch.device("meta"):
            model = cls.from_config(config, trust_remote_code=trust_remote_code, dtype=getattr(torch, dtype))
        drop_unused(model, kind)
        _META[key] = model
    return _META[key]


def drop_unused(backbone: Any, kind: str) -> list[str]:
    """Remove what a job's backbone never uses (harness.models.load does it to the loaded model too, so a
    config-only count equals the job's): the task head pools the encoder's last hidden states itself
    (model.pooling), so BERT's own pooler (a dense + tanh on [CLS]) would never see a gradient, yet a
    full-parameter method would count its weights (148k on MiniLM) as trained. BertModel/RobertaModel skip
    a None pooler."""
    if kind == "encoder" and getattr(backbone, "pooler", None) is not None:
        backbone.pooler = None
        return ["pooler"]
    return []


def _features(module: Any) -> tuple[int, int] | None:
    """[in, out] of a linear layer (nn.Linear, or transformers' Conv1D whose weight is in × out)."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return int(module.in_features), int(module.out_features)
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def linear_widths(model: Any, targets: list[str]) -> tuple[dict[str, list[int]], list[str]]:
    """({target: [in, out]}, problems) over the modules peft matches by each name (the name itself or a
    dotted suffix). A target whose layers differ in width is left out (no single width to check)."""
    seen: dict[str, set[tuple[int, int]]] = {t: set() for t in targets}
    for name, module in model.named_modules():
        dims = _features(module)
        if dims is None:
            continue
        for t in targets:
            if name == t or name.endswith("." + t):
                seen[t].add(dims)
    widths, problems = {}, []
    for t, dims in seen.items():
        if len(dims) == 1:
            widths[t] = list(next(iter(dims)))
        elif not dims:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _features(m)})
            problems.append(f"model.target_modules: {t!r} matches no linear layer of this "
                            f"{type(model).__name__} (its linear layers: {', '.join(names)})")
    return widths, problems


_DERIVED: dict[tuple[Any, ...], tuple[tuple[str, ...] | None, dict[str, list[int]], int | None, list[str]]] = {}


def _derive(config: Any, kind: str, targets: tuple[str, ...] | None,
            trust_remote_code: bool) -> tuple[tuple[str, ...] | None, dict[str, list[int]], int | None, list[str]]:
    """(targets, widths, max_position_embeddings, problems) for one config: one meta build per distinct
    config, kind and targets per process (a sweep validates every job)."""
    key = (config.to_json_string(use_diff=False), kind, targets, trust_remote_code)
    if key in _DERIVED:
        return _DERIVED[key]
    problems: list[str] = []
    model_type = getattr(config, "model_type", None) or ""
    if targets is None:
        found = default_targets(model_type)
        if found is None:
            problems.append(f"model.target_modules: peft has no default target modules for model_type "
                            f"{model_type!r}; set model.target_modules")
        targets = tuple(found) if found else None
    widths: dict[str, list[int]] = {}
    if targets is not None and kind in MODEL_KINDS:
        widths, missing = linear_widths(meta_backbone(config, kind, trust_remote_code=trust_remote_code),
                                        list(targets))
        problems += missing
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    max_pos = getattr(text, "max_position_embeddings", None)
    _DERIVED[key] = (targets, widths, max_pos if isinstance(max_pos, int) and max_pos > 0 else None, problems)
    return _DERIVED[key]


def resolve_block(model_cfg: Mapping[str, Any], cache_dir: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """The open model block with its identity and config-derived fields filled in, and every problem found
    (the model unavailable, a target that matches nothing, ...). A closed block comes back unchanged."""
    block = dict(model_cfg)
    if not is_open(block) or not (block.get("path") or block.get("hub_id")):
        return block, []   # validation names the missing path / hub_id
    trc = block.get("trust_remote_code") is True
    try:
        loc = locate(block, cache_dir)
    except ModelUnavailableError as exc:
        return block, [str(exc)]
    problems: list[str] = []
    if loc.where == "path":
        pinned = block.get("content_sha256")
        if pinned and pinned != loc.content_sha256:
            problems.append(f"model.content_sha256: {pinned} is pinned, but the folder {loc.ref} holds "
                            f"{loc.content_sha256}")
        block["content_sha256"], block["commit"] = loc.content_sha256, None
        block["path"] = loc.ref   # absolute: a launcher may run the job from another directory
    else:
        block["commit"], block["content_sha256"] = loc.commit, None
    try:
        config = read_config(loc, trust_remote_code=trc)
    except Exception as exc:  # noqa: BLE001 - reported with the config's place, before any compute
        hint = ("; set model.trust_remote_code=true if you trust its code"
                if "trust_remote_code" in str(exc) else "")
        return block, [*problems, f"model: cannot read the config of {loc.ref}: {str(exc).splitlines()[0][:300]}{hint}"]
    tm = block.get("target_modules")
    targets = tuple(tm) if isinstance(tm, list) and all(isinstance(t, str) for t in tm) else None
    if tm is not None and targets is None:
        return block, problems   # validation names a malformed target_modules
    derived_targets, widths, max_pos, more = _derive(config, str(block.get("kind")), targets, trc)
    problems += more
    if tm is None and derived_targets is not None:
        block["target_modules"] = list(derived_targets)
    if block.get("target_widths") is None and block.get("kind") in MODEL_KINDS and derived_targets is not None:
        block["target_widths"] = {t: list(w) for t, w in widths.items()}
    if block.get("max_seq_len") is None:
        if max_pos is None:
            problems.append("model.max_seq_len: the config gives no max_position_embeddings; set model.max_seq_len")
        else:
            block["max_seq_len"] = max_pos
    return block, problems


def source_info(model_cfg: Mapping[str, Any], loc: Located) -> dict[str, Any]:
    """What the record says about the bytes loaded (record.meta.model)."""
    if loc.where == "path":
        info: dict[str, Any] = {"source": "path", "path": loc.ref, "content_sha256": loc.content_sha256,
                                "files": dict(loc.files)}
        snap = re.search(r"models--([^/]+)--([^/]+)/snapshots/([0-9a-f]{40})$", loc.ref)
        if snap:   # a Hugging Face cache snapshot: which hub commit these files are
            info["snapshot_of"] = {"hub_id": f"{snap[1]}/{snap[2]}", "commit": snap[3]}
        if model_cfg.get("hub_id"):
            info["hub_id"] = model_cfg["hub_id"]
    else:
        info = {"source": "hub", "hub_id": loc.ref, "revision": str(model_cfg.get("revision") or "main"),
                "commit": loc.commit}
    if loc.notes:
        info["notes"] = list(loc.notes)
    info["trust_remote_code"] = model_cfg.get("trust_remote_code") is True
    return info


def locate_resolved(model_cfg: Mapping[str, Any], cache_dir: Path | None = None) -> Located:
    """Where a resolved block's bytes are, checked against the identity its signature holds: a folder whose
    files changed since the job was specified is not the experiment (a hub commit cannot change)."""
    if model_cfg.get("content_sha256"):
        loc = locate({**model_cfg, "source": "local"}, cache_dir)
        if loc.content_sha256 != model_cfg["content_sha256"]:
            raise ModelUnavailableError(
                f"model {model_cfg.get('name')!r}: the folder {loc.ref} now holds {loc.content_sha256}, not "
                f"{model_cfg['content_sha256']} as when the job was specified; specify the job again")
        return loc
    if model_cfg.get("commit"):
        return locate({**model_cfg, "source": "hub", "revision": model_cfg["commit"]}, cache_dir)
    return locate(model_cfg, cache_dir)
