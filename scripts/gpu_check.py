"""Driver of scripts/gpu-check.sh: `prepare` (here, with PyPI) and `run` (on the GPU machine). One JSON report.

Each check is a subprocess with its own log and time limit, so one failure does not hide the others, and the
report (OUT/gpu-check.json) holds every figure the issue asks for: the CUDA test counts, the two jobs' GPU costs
(accelerator memory allocated and reserved: max, average, 99th percentile; tokens per second in training and
in evaluation; the GPU's name and count) and train_overhead's ratios against a bare loop on the same GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / ".gpu"
# What the GPU image lacks (/work/.library/device/KINDS.md lists what it holds), pinned to this venv's versions.
WHEELS = ["bitsandbytes", "hydra-core", "omegaconf", "submitit", "hydra-submitit-launcher", "optuna", "alembic",
          "sqlalchemy", "colorlog", "mako"]
SDIST_ONLY = ["antlr4-python3-runtime"]   # hydra's parser runtime: no wheel on PyPI, built here (pure Python)
DATA = ["glue/SST-2/train.tsv", "glue/SST-2/dev.tsv", "glue/SST-2/test.tsv", "gsm8k/train.jsonl", "gsm8k/test.jsonl",
        "SOURCES.md"]
MODELS = {"minilm-l6": "encoder", "smollm2-135m": "decoder"}   # configs and tokenizers only: no weights travel
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]


# ----------------------------------------------------------------------------------------- prepare
def prepare() -> int:
    from importlib.metadata import version

    whl = GPU_DIR / "whl"
    shutil.rmtree(GPU_DIR, ignore_errors=True)
    whl.mkdir(parents=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(whl), *pins], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(whl),
                    *[f"{n}=={version(n)}" for n in SDIST_ONLY]], check=True)
    data_dir = ROOT.parent / "shared" / "data"
    with tarfile.open(GPU_DIR / "inputs.tar.xz", "w:xz") as tar:
        for rel in DATA:
            tar.add(data_dir / rel, arcname=f"data/{rel}")
        for name in MODELS:
            hf = ROOT / ".cache" / "models" / name / "hf"
            if not hf.exists():
                raise SystemExit(f"{hf}: missing; run `peftbench fetch-models` first")
            for f in sorted(hf.rglob("*")):
                if f.is_file() and f.suffix not in (".safetensors", ".bin", ".gguf"):
                    tar.add(f, arcname=f"models/{name}/{f.relative_to(hf)}")
    size = sum(f.stat().st_size for f in GPU_DIR.rglob("*") if f.is_file())
    print(f"gpu-check: prepared {GPU_DIR} ({size / 2**20:.1f} MiB): {', '.join(sorted(p.name for p in whl.iterdir()))}")
    return 0


# --------------------------------------------------------------------------------------------- run
def unpack(work: Path) -> tuple[Path, dict[str, Path]]:
    """The data, and each model folder with random weights of its real config (seeded: the same every run)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    with tarfile.open(GPU_DIR / "inputs.tar.xz") as tar:
        tar.extractall(work, filter="data")
    models = {}
    for name, kind in MODELS.items():
        folder = work / "models" / name
        torch.manual_seed(0)
        cfg = AutoConfig.from_pretrained(folder)
        model = (AutoModel if kind == "encoder" else AutoModelForCausalLM).from_config(cfg)
        model.save_pretrained(folder)
        models[name] = folder
    return work / "data", models


def sh(name: str, cmd: list[str], out: Path, timeout: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout,
                                check=False).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return {"name": name, "rc": rc, "seconds": round(time.perf_counter() - t0, 1), "log": f"{name}.log"}


def pytest_check(name: str, args: list[str], out: Path, timeout: int) -> dict[str, Any]:
    xml = out / f"{name}.xml"
    res = sh(name, [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", *args], out, timeout)
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        res.update(counts, passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"])
        res["ok"] = res["rc"] == 0 and counts["failures"] == counts["errors"] == 0
        res["all_skipped"] = counts["skipped"] == counts["tests"]   # no GPU: a CPU run of the script itself
    else:
        res["ok"] = False
    return res


def job_check(name: str, overrides: list[str], out: Path, work: Path, timeout: int) -> dict[str, Any]:
    results = work / "results" / name
    res = sh(name, [sys.executable, "-m", "harness.cli", "run", *overrides, "logger=none", "seed=0",
                    f"results_dir={results}", f"runs_dir={work / 'runs' / name}"], out, timeout)
    records = sorted(results.rglob("*.json")) if results.exists() else []
    recs = [json.loads(p.read_text()) for p in records if "leaderboards" not in p.parts]
    recs = [r for r in recs if "run" in r]
    if not recs:
        return {**res, "ok": False, "error": "no record written"}
    rec = recs[-1]
    run, tr, ev = rec["run"], rec.get("train") or {}, rec.get("eval") or {}
    losses = [p[-1] for p in tr.get("loss_curve") or []]
    k = max(1, len(losses) // 4)
    first, last = (sum(losses[:k]) / k, sum(losses[-k:]) / k) if losses else (None, None)
    meta = rec.get("meta") or {}
    res.update(status=run["status"], error=run.get("error"), device=meta.get("device"), steps=tr.get("steps"),
               loss_first=first, loss_last=last, memory=tr.get("memory"), accelerator=tr.get("accelerator"),
               train_tokens_per_s=tr.get("tokens_per_s"), eval_tokens_per_s=ev.get("tokens_per_s"),
               peak_accelerator_mb=tr.get("peak_accelerator_mb"), train_time_s=tr.get("train_time_s"),
               eval_time_s=ev.get("eval_time_s"), trainable_params=tr.get("trainable_params"),
               quantization=(meta.get("model") or {}).get("quantization"), execution=meta.get("execution"),
               metrics={k2: v.get("value") for k2, v in (ev.get("metrics") or {}).items()})
    # on the GPU the loss must fall over the job's 60 steps (a randomly initialised model learns its data's token
    # frequencies through LoRA quickly); a CPU run of the script trains 4 steps, which test the path, not learning
    res["loss_fell"] = last is not None and last < first
    res["ok"] = (res["rc"] == 0 and run["status"] == "success" and str(meta.get("device", "")).startswith(DEVICE)
                 and (res["loss_fell"] or DEVICE != "cuda"))
    return res


def overhead_check(models: dict[str, Path], data: Path, out: Path, timeout: int) -> dict[str, Any]:
    size = (["--steps", "15", "--warmup", "3", "--repeats", "3", "--rss-cases", "fp32,checkpointing",
             "budget.batch_size=32"] if DEVICE == "cuda" else
            ["--steps", "2", "--warmup", "1", "--repeats", "1", "--rss-cases", "fp32", "--n-batches", "4",
             "budget.batch_size=8"])
    res = sh("train_overhead", [sys.executable, "benchmarks/train_overhead.py", "--device", DEVICE, "--threads", "4",
                                *size, "model=hf", f"model.path={models['minilm-l6']}", "model.kind=encoder",
                                "model.pooling=mean", f"data_dir={data}"], out, timeout)
    text = (out / "train_overhead.log").read_text()
    ratios = {m[1]: float(m[2]) for m in re.finditer(r"step_time_ratio\[(\w+)\] harness/bare = ([\d.]+)", text)}
    mem = {m[2]: float(m[3]) for m in re.finditer(r"peak_(rss|accelerator)_ratio\[(\w+)\] harness/bare = ([\d.]+)", text)}
    target = 1.02 if DEVICE == "cuda" else 1.05
    res.update(step_time_ratio=ratios, memory_ratio=mem, target=target,
               ok=res["rc"] == 0 and bool(ratios) and max(ratios.values()) <= target)
    return res


def gpu_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    for mod in ("transformers", "peft", "bitsandbytes", "hydra", "optuna"):
        try:
            facts[mod] = __import__(mod).__version__
        except Exception as exc:   # noqa: BLE001 - the report says what is missing
            facts[mod] = f"missing: {exc}"
    return facts


DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def run(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": DEVICE,
                              "facts": gpu_facts(), "checks": []}
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    data, models = unpack(work)
    job = [f"device={DEVICE}", f"data_dir={data}", "task=gsm8k/gsm8k", "method=lora", "model=hf",
           f"model.path={models['smollm2-135m']}", "model.kind=decoder", "budget=smoke", "budget.tokens=null",
           "budget.steps=60", "budget.batch_size=8", "budget.max_seq_len=256", "budget.eval_size_generate=64",
           "budget.max_new_tokens=32", "method.optim.lr=5e-3"]
    if DEVICE == "cpu":   # testing the script itself: the same checks, CPU-sized
        job += ["budget.steps=4", "budget.batch_size=4", "budget.max_seq_len=48", "budget.eval_size_generate=2",
                "budget.max_new_tokens=4"]
    slow = 1 if DEVICE == "cuda" else 4   # time limits sized for one H100; a CPU run of the script gets more
    checks = [
        lambda: pytest_check("test_cuda", ["tests/methods/test_cuda.py"], out, 180),
        lambda: pytest_check("plumbing_cuda", ["tests/harness/test_accumulation.py", "tests/harness/test_precision.py",
                                               "tests/harness/test_train.py", "-k", "cuda or gpu"], out, 90),
        lambda: job_check("qlora_smollm2", [*job, "model.quantization=nf4", "model.compute_dtype=bf16"], out, work,
                          90 * slow),
        lambda: job_check("lora_bf16_smollm2", [*job, "model.dtype=bf16", "budget.micro_batch_size=2",
                                                "budget.gradient_checkpointing=true"], out, work, 90 * slow),
        lambda: overhead_check(models, data, out, 120 * slow),
    ]
    for check in checks:
        res = check()
        report["checks"].append(res)
        print(f"gpu-check: {res['name']}: {'ok' if res['ok'] else 'FAILED'} ({res['seconds']} s)", flush=True)
        (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))   # partial: a kill keeps it
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["ok"] = all(c["ok"] for c in report["checks"])
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"gpu-check: {'all passed' if report['ok'] else 'FAILED'} in {report['seconds']} s; "
          f"report {out / 'gpu-check.json'}")
    return 0 if report["ok"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=("prepare", "run"))
    ap.add_argument("--out", type=Path, default=GPU_DIR / "out")
    args = ap.parse_args()
    return prepare() if args.step == "prepare" else run(args.out)


if __name__ == "__main__":
    sys.exit(main())
