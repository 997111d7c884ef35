"""`peftbench methods [--format md|json] [--model M --trainable-params N]`: every method in the zoo.

Each entry: name, kind (peft / custom / full), paper (arXiv id), capacity knob, defaults, the model
kinds it applies to, one-line mechanism. With --model and --trainable-params the capacity knob of
every method that applies to that model is solved on the real backbone (adapters are built and
counted, nothing trains), with the count reached or why the target cannot be met within ±10%.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any

METHOD_DIR = Path(__file__).resolve().parent.parent / "conf" / "method"


def method_names() -> list[str]:
    return sorted(p.stem for p in METHOD_DIR.glob("*.yaml") if not p.name.startswith("_"))


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


def markdown(entries: list[dict[str, Any]]) -> str:
    solving = any("solved" in e for e in entries)
    head = "| method | kind | paper | knob | applies to | mechanism |"
    lines = [head + (" solved | trainable | |" if solving else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if solving else "")]
    for e in entries:
        paper = f"arXiv:{e['paper']}" if e["paper"] else "—"
        row = (f"| {e['name']} | {e['kind']} | {paper} | {e['capacity_knob'] or '—'} | "
               f"{', '.join(e['applies_to'])} | {e['mechanism']} |")
        if solving:
            s = e.get("solved") or {}
            value = f"{s['knob']}={s['value']}" if s.get("knob") else "—"
            count = f"{s['count']:,}" if "count" in s else "—"
            row += f" {value} | {count} | {'ok' if s.get('ok') else s.get('why', '')} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="peftbench methods", description=__doc__.split("\n")[0])
    ap.add_argument("--format", choices=("md", "json"), default="md")
    ap.add_argument("--model", default=None, help="a conf/model name: solve every knob on this backbone")
    ap.add_argument("--trainable-params", type=int, default=None, help="the trainable-parameter target")
    ap.add_argument("--cache-dir", default=None, help="model cache (default: $PEFTBENCH_CACHE or .cache)")
    ap.add_argument("names", nargs="*", help="methods to describe (default: all)")
    args = ap.parse_args(argv)
    if (args.model is None) != (args.trainable_params is None):
        print("peftbench methods: --model and --trainable-params go together", file=sys.stderr)
        return 2
    known = method_names()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"peftbench methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)
        return 2
    from harness.spec import compose_block

    cfgs = [compose_block("method", n) for n in (args.names or known)]
    entries = [describe(c) for c in cfgs]
    if args.model:
        from harness.models import load
        from harness.spec import PROJECT_ROOT, _path_or

        model_cfg = compose_block("model", args.model)
        loaded = load(model_cfg, _path_or(args.cache_dir, "PEFTBENCH_CACHE", PROJECT_ROOT / ".cache"))
        for cfg, entry in zip(cfgs, entries, strict=True):
            entry["solved"] = solve_entry(cfg, model_cfg, loaded, args.trainable_params)
    if args.format == "json":
        print(json.dumps({"methods": entries, "count": len(entries)}, indent=2, ensure_ascii=False))
    else:
        print(markdown(entries), end="")
    return 0
