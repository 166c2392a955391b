#!/usr/bin/env bash
# GPU check of the Triton renderer, for a machine with CUDA: the Triton-vs-reference agreement tests on CUDA,
# then the speed benchmark (every backend vs the reference and bicubic, a tile sweep, a training step).
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [RESULTS_DIR]      # from the repository root; default gpu_check_results
#
# Installs nothing: it needs python3 with torch, triton, numpy and pytest (numba optional), and imports only
# gaussian_field and the tests. Each step has its own time limit; the whole check stays under 5 minutes.
# Results: RESULTS_DIR/{environment.txt, triton_tests.txt, render_speed_cuda.txt, render_speed_cuda.json, summary.txt}
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
PY="${PYTHON:-python3}"
RESULTS="${1:-gpu_check_results}"
mkdir -p "$RESULTS"
start=$(date +%s)

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" - <<'EOF'
import sys, torch
try:
    import triton
    triton_version = triton.__version__
except Exception as err:  # noqa: BLE001 - reported, the tests then skip
    triton_version = f"not importable ({err})"
from gaussian_field import available_backends
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton_version}")
print(f"cuda available: {torch.cuda.is_available()}"
      + (f", device: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
if torch.cuda.is_available():
    print(f"backends for cuda tensors: {available_backends('cuda')}")
EOF
} 2>&1 | tee "$RESULTS/environment.txt"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device here: nothing to check (on CPU, tests/test_triton_interpreter.py covers the kernels)" \
        | tee "$RESULTS/summary.txt"
    exit 1
fi

echo "== Triton vs reference on CUDA (tests/test_triton_backend.py)"
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_triton_backend.py 2>&1 \
    | tee "$RESULTS/triton_tests.txt"
tests_rc=$?

echo "== render speed on CUDA (benchmarks/render_speed.py)"
left=$(( 285 - ($(date +%s) - start) ))
(( left < 30 )) && left=30
timeout "$left" "$PY" benchmarks/render_speed.py --device cuda --repeats 20 \
    --triton-tiles 2x64x2,4x64x4,8x32x4,16x16x4,4x32x2,8x32x8,2x64x2f,8x32x4f \
    --out "$RESULTS/render_speed_cuda.json" 2>&1 | tee "$RESULTS/render_speed_cuda.txt"
bench_rc=$?

{
    echo "triton tests: exit $tests_rc ($(tail -n 1 "$RESULTS/triton_tests.txt"))"
    echo "benchmark: exit $bench_rc"
    grep '^target:' "$RESULTS/render_speed_cuda.txt" || true
    echo "elapsed: $(( $(date +%s) - start )) s"
} | tee "$RESULTS/summary.txt"
(( tests_rc == 0 && bench_rc == 0 ))
