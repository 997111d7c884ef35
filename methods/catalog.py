"""`peftbench methods [--format md|json] [--model M [--trainable-params N]]`: every method in the zoo.

Each entry: name, kind (peft / custom / full), paper (arXiv id), capacity knob, defaults, the model
kinds it applies to, one-line mechanism. With --model, every method that applies to that model is
built on it and its trainable parameters counted at its configured values (nothing trains); with
--trainable-params too, its capacity knob is solved instead, with the count reached or why the target
cannot be met within ±10%.

--model takes a conf/model name (an embedded model loads its real weights: they are local), a local
folder or a hub id. A folder needs only config.json: the backbone is built from the config on the meta
device (harness.hfmodel), so Llama-3-8B is counted without its 16 GB of weights; a hub id reads its
config.json only. Counts from the meta device are made from shapes (harness.capacity.count_trainable);
a method whose count cannot be had that way says why.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import types
from pathlib import Path
from typing import Any

METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


def method_names() -> list[str]:
    return sorted(p.stem for p in METHOD_DIR.glob("*.yaml") if not p.name.startswith("_"))


def compose_methods(names: list[str]) -> list[dict[str, Any]]:
    """Method blocks as a job composes them (defaults such as dora → lora merged), in one Hydra session and
    from their group alone (a method YAML interpolates nothing outside itself): the whole zoo in about half
    the time of a full compose per method (harness.spec.compose_block)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.spec import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return [OmegaConf.to_container(compose(config_name=f"method/{n}")["method"], resolve=True) for n in names]


@functools.cache
def zoo_blocks() -> dict[str, dict[str, Any]]:
    """Every method block as a job composes it, by name (one Hydra session for the whole zoo, once per
    process: seconds). Shared and read-only: a caller copies what it changes."""
    names = method_names()
    return dict(zip(names, compose_methods(names), strict=True))


def describe(cfg: dict[str, Any]) -> dict[str, Any]:
    """A method's catalogue entry, from its composed YAML alone (no torch)."""
    info = cfg.get("info") or {}
    return {"name": cfg["name"], "kind": cfg["kind"], "paper": info.get("paper"),
            "peft_type": cfg.get("peft_type"), "capacity_knob": cfg.get("capacity_knob"),
            "defaults": {"params": cfg.get("params") or {}, "optim": cfg.get("optim") or {}},
            "applies_to": list(info.get("applies_to") or []), "mechanism": info.get("mechanism", "")}


def solve_entry(cfg: dict[str, Any], model_cfg: dict[str, Any], loaded: Any, target: int) -> dict[str, Any]:
    """The solved knob and the count it reaches for `target`, or why the target is out of reach."""
    from harness.capacity import solve_capacity

    info = cfg.get("info") or {}
    if model_cfg["kind"] not in (info.get("applies_to") or []):
        return {"ok": False, "why": f"does not apply to {model_cfg['kind']} models"}
    # the campaign's own rule (budget.capacity_policy=closest): what a zoo sweep at this target would run
    spec = types.SimpleNamespace(budget={"trainable_params": target, "capacity_policy": "closest"},
                                 method=cfg, model=model_cfg)
    try:
        _, solved = solve_capacity(spec, loaded)
    except Exception as exc:  # noqa: BLE001 - a catalogue reports each method's failure, it does not stop
        return {"ok": False, "why": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    out = {"knob": solved["knob"], "value": solved["value"], "count": solved["adapter_params"], "ok": solved["met"]}
    if not out["ok"]:
        out["why"] = f"{solved['reason']} ({abs(solved['deviation']):.0%} from the target)"
    return out


def count_entry(cfg: dict[str, Any], model_cfg: dict[str, Any], loaded: Any) -> dict[str, Any]:
    """The method's trainable parameters at its configured values on this model, or why there is no count."""
    from harness.capacity import count_trainable

    info = cfg.get("info") or {}
    if model_cfg["kind"] not in (info.get("applies_to") or []):
        return {"ok": False, "why": f"does not apply to {model_cfg['kind']} models"}
    try:
        count, how = count_trainable(loaded.backbone, cfg, model_cfg)
    except Exception as exc:  # noqa: BLE001 - a catalogue reports each method's failure, it does not stop
        return {"ok": False, "why": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"}
    return {"ok": True, "count": count, "how": how}


def markdown(entries: list[dict[str, Any]]) -> str:
    solving = any("solved" in e for e in entries)
    counting = any("trainable" in e for e in entries)
    head = "| method | kind | paper | knob | applies to | mechanism |"
    extra = " solved | trainable | |" if solving else " trainable | counted |" if counting else ""
    lines = [head + extra, "|---|---|---|---|---|---|" + ("---|" * extra.count("|"))]
    for e in entries:
        paper = f"arXiv:{e['paper']}" if e["paper"] else "—"
        row = (f"| {e['name']} | {e['kind']} | {paper} | {e['capacity_knob'] or '—'} | "
               f"{', '.join(e['applies_to'])} | {e['mechanism']} |")
        if solving:
            s = e.get("solved") or {}
            value = f"{s['knob']}={s['value']}" if s.get("knob") else "—"
            count = f"{s['count']:,}" if "count" in s else "—"
            row += f" {value} | {count} | {'ok' if s.get('ok') else s.get('why', '')} |"
        elif counting:
            t = e.get("trainable") or {}
            row += f" {t['count']:,} | {t['how']} |" if t.get("ok") else f" — | {t.get('why', '')} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _model(arg: str, kind: str | None, cache: Path) -> tuple[dict[str, Any], Any]:
    """(model block, LoadedModel) for --model: a conf/model name, a local folder or a hub id. An embedded
    model (a package block) loads its real weights; any other is built from its config on the meta device."""
    import types

    from harness import hfmodel
    from harness.spec import CONF_DIR, compose_block

    if (CONF_DIR / "model" / f"{arg}.yaml").exists():
        block = compose_block("model", arg)
        if block.get("package") and not hfmodel.is_open(block):
            from harness.models import load

            return block, load(block, cache)
        if not hfmodel.is_open(block):   # a named hub model: its config, not its weights
            block = {**block, "path": None, "source": "hub", "target_widths": None}
    else:
        block = {**compose_block("model", "hf"), **({"path": arg} if Path(arg).expanduser().is_dir()
                                                     else {"hub_id": arg})}
    if kind:
        block["kind"] = kind
    trc = block.get("trust_remote_code") is True
    config = hfmodel.read_config(hfmodel.locate(block, cache), trust_remote_code=trc)
    if block.get("kind") is None:
        block["kind"] = hfmodel.guess_kind(config)
    block, problems = hfmodel.resolve_block(block, cache)
    if problems:
        raise hfmodel.ModelUnavailableError("\n".join(problems))
    backbone = hfmodel.meta_backbone(config, block["kind"], trust_remote_code=trc, dtype=block.get("dtype") or "float32")
    return block, types.SimpleNamespace(backbone=backbone, tokenizer=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peftbench methods", description=__doc__.split("\n")[0])
    ap.add_argument("--format", choices=("md", "json"), default="md")
    ap.add_argument("--model", default=None,
                    help="a conf/model name, a local folder (config.json is enough) or a hub id: count every "
                         "method's trainable parameters on it")
    ap.add_argument("--kind", choices=("encoder", "decoder"), default=None,
                    help="the model's kind for a folder or hub id (default: from its config's architectures)")
    ap.add_argument("--trainable-params", type=int, default=None,
                    help="a trainable-parameter target: solve every capacity knob on --model for it")
    ap.add_argument("--cache-dir", default=None, help="model cache (default: $PEFTBENCH_CACHE or .cache)")
    ap.add_argument("names", nargs="*", help="methods to describe (default: all)")
    args = ap.parse_args(argv)
    if args.trainable_params is not None and args.model is None:
        print("peftbench methods: --trainable-params needs --model (the backbone to solve on)", file=sys.stderr)
        return 2
    known = method_names()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"peftbench methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    cfgs = compose_methods(args.names or known)
    entries = [describe(c) for c in cfgs]
    if args.model:
        from harness.hfmodel import ModelUnavailableError
        from harness.spec import PROJECT_ROOT, _path_or

        try:
            model_cfg, loaded = _model(args.model, args.kind,
                                       _path_or(args.cache_dir, "PEFTBENCH_CACHE", PROJECT_ROOT / ".cache"))
        except ModelUnavailableError as exc:
            print(f"peftbench methods: --model {args.model}: {exc}", file=sys.stderr)
            return 2
        for cfg, entry in zip(cfgs, entries, strict=True):
            if args.trainable_params is not None:
                entry["solved"] = solve_entry(cfg, model_cfg, loaded, args.trainable_params)
            else:
                entry["trainable"] = count_entry(cfg, model_cfg, loaded)
    if args.format == "json":
        out: dict[str, Any] = {"methods": entries, "count": len(entries)}
        if args.model:
            out["model"] = {k: model_cfg.get(k) for k in ("name", "kind", "hub_id", "path", "commit", "content_sha256",
                                                          "target_modules", "target_widths")}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(markdown(entries), end="")
    return 0
