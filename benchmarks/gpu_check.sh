#!/usr/bin/env bash
# GPU check, for a machine with CUDA: the Triton renderer (agreement tests, render speed, tile sweep, the fitting
# step at a device-filling size with forward and backward timed apart) and the fitting engine's must-shows:
# the quality preset on photo crops in batches sized to the GPU (`--batch auto`) against the previous engine in
# batches of 8 on the same crops (median PSNR, HR Mpx/s >= 1, every crop within 0.05 dB), and one worker process
# against two sharing the GPU.
#
#   PYTHONPATH=. bash benchmarks/gpu_check.sh [RESULTS_DIR]       # from the repository root; default gpu_check_results
#   DRY=1 PYTHONPATH=. bash benchmarks/gpu_check.sh DIR           # no GPU: the same steps on CPU, sized to finish fast
#
# Installs nothing: python3 with torch, triton, numpy, scikit-image and pytest (numba optional); it imports
# gaussian_field, dgp_fitting's fitting engine and the tests, not the Dask job or the store. Each step has its own
# time limit; the whole check stays under 9 minutes (about 4 expected on an H200).
# Results: RESULTS_DIR/{environment.txt, triton_tests.txt, render_speed.{txt,json}, fit_engines.{txt,json},
# fit_fast.{txt,json}, encode_cost.{txt,json}, fit_overlap.txt, summary.txt}. The last step (a fitting task's stages in line vs overlapped, which uses the store
# and so needs zarr and distributed) is skipped where those are not installed.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
RESULTS="${1:-gpu_check_results}"
DRY="${DRY:-0}"
mkdir -p "$RESULTS"
start=$(date +%s)

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  dry: $DRY"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" - <<'PYEOF'
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
PYEOF
} 2>&1 | tee "$RESULTS/environment.txt"

LIMITS=(150 150 240 90 180 120)  # seconds: tests, render, fitting, task pipeline, fast preset, encode cost
if [[ "$DRY" == 1 ]]; then
    LIMITS=(900 600 900 300 600 600)  # the interpreter and a shared CPU are slow; nothing here is timed for a target
    DEVICE=cpu
    TESTS=(tests/test_triton_interpreter.py)
    SPEED=(--device cpu --size 32 --scales 4 --repeats 1 --no-multi-scale --no-gradients)
    FIT=(--device cpu --preset demo --steps 4 --crop 32 --crops 8 --previous-crops 4 --profile-steps 2 --processes 1 2)
    OVERLAP=(--device cpu --steps 2 --crop 32 --crops-per-image 2 --batch 4 --repeats 1)
    FAST=(--device cpu --preset fast --previous-preset demo --steps 4 --crop 32 --crops 8 --previous-crops 4 --profile-steps 2)
    ENCODE=(--device cpu --sizes 64 --presets lite --repeats 1 --train-steps 2)
else
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA device here: nothing to check (DRY=1 runs the same steps on CPU)" | tee "$RESULTS/summary.txt"
        exit 1
    fi
    DEVICE=cuda
    TESTS=(tests/test_triton_backend.py)
    SPEED=(--device cuda --repeats 20 --no-multi-scale --triton-tiles 2x64x2,4x64x4,8x32x4,16x16x4)
    FIT=(--device cuda --preset quality --crop 64 --crops 2048 --previous-crops 64 --previous-batch 8
         --profile-steps 20 --processes 1 2)
    OVERLAP=(--device cuda --steps 500 --crop 64 --crops-per-image 64 --batch 256 --repeats 1)
    FAST=(--device cuda --preset fast --previous-preset quality --crop 64 --crops 2048 --previous-crops 64 --previous-batch 8 --profile-steps 20)
    ENCODE=(--device cuda --sizes 256 512 1024 2048 --presets lite swinir hat --repeats 5 --train-steps 50)
fi

echo "== Triton vs reference (${TESTS[*]})"
timeout "${LIMITS[0]}" "$PY" -m pytest -q -p no:cacheprovider -rs "${TESTS[@]}" 2>&1 | tee "$RESULTS/triton_tests.txt"
tests_rc=$?

echo "== render speed and the device-filling fitting step (benchmarks/render_speed.py)"
timeout "${LIMITS[1]}" "$PY" benchmarks/render_speed.py "${SPEED[@]}" --out "$RESULTS/render_speed.json" 2>&1 \
    | tee "$RESULTS/render_speed.txt"
bench_rc=$?

echo "== fitting engines, previous vs current, and 1 vs 2 worker processes (benchmarks/fit_throughput.py)"
timeout "${LIMITS[2]}" "$PY" benchmarks/fit_throughput.py --engines "${FIT[@]}" --json "$RESULTS/fit_engines.json" 2>&1 \
    | tee "$RESULTS/fit_engines.txt"
fit_rc=$?

echo "== the fast preset (quality's PSNR in 70 % of its steps) on the same crops (benchmarks/fit_throughput.py)"
timeout "${LIMITS[4]}" "$PY" benchmarks/fit_throughput.py --engines "${FAST[@]}" --json "$RESULTS/fit_fast.json" 2>&1 \
    | tee "$RESULTS/fit_fast.txt"
fast_rc=$?

echo "== the encode: seconds per LR Mpx and device memory against size, lite training steps/s (benchmarks/encode_cost.py)"
timeout "${LIMITS[5]}" "$PY" benchmarks/encode_cost.py "${ENCODE[@]}" --json "$RESULTS/encode_cost.json" 2>&1 \
    | tee "$RESULTS/encode_cost.txt"
encode_rc=$?

echo "== a fitting task's stages in line vs overlapped (benchmarks/fit_overlap.py; needs zarr and distributed)"
if "$PY" -c "import zarr, distributed" 2>/dev/null; then
    timeout "${LIMITS[3]}" "$PY" benchmarks/fit_overlap.py "${OVERLAP[@]}" 2>&1 | tee "$RESULTS/fit_overlap.txt"
    overlap_rc=$?
else
    echo "skipped: zarr or distributed not importable here" | tee "$RESULTS/fit_overlap.txt"
    overlap_rc=0
fi

{
    echo "device: $DEVICE"
    echo "triton tests: exit $tests_rc ($(tail -n 1 "$RESULTS/triton_tests.txt"))"
    echo "render benchmark: exit $bench_rc"
    grep '^target:' "$RESULTS/render_speed.txt" || true
    grep '^fitting step at a device-filling size' "$RESULTS/render_speed.txt" || true
    echo "fitting benchmark: exit $fit_rc"
    echo "task pipeline: exit $overlap_rc; $(tail -n 1 "$RESULTS/fit_overlap.txt")"
    echo "fast preset: exit $fast_rc"
    echo "encode cost: exit $encode_rc"
    [[ -f "$RESULTS/fit_fast.json" && -f "$RESULTS/fit_engines.json" ]] && "$PY" - "$RESULTS/fit_engines.json" \
        "$RESULTS/fit_fast.json" <<'PYEOF' || true
import json, sys
quality, fast = (json.load(open(p))["new"] for p in sys.argv[1:])
print(f"fast preset: median PSNR {fast['psnr_median']:.2f} dB at {fast['mpx_per_s']:.3f} HR Mpx/s (quality: "
      f"{quality['psnr_median']:.2f} dB at {quality['mpx_per_s']:.3f}); paper corpus "
      f"{fast['paper_corpus_device_hours']:.0f} device-hours")
gain = fast.get("psnr_gain_over_previous")
if gain:
    print(f"fast preset vs the previous engine at the quality preset, same crops: per-crop PSNR gain min "
          f"{gain['min']:+.2f} dB, median {gain['median']:+.2f} dB")
PYEOF
    [[ -f "$RESULTS/fit_engines.json" ]] && "$PY" - "$RESULTS/fit_engines.json" <<'PYEOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
new, old = r["new"], r["previous"]
n = new["compared_crops"]
same = sorted(new["psnr"][:n])
median_same = (same[(n - 1) // 2] + same[n // 2]) / 2
print(f"must-show: median PSNR of the {n} compared crops {median_same:.2f} dB (previous engine, batch "
      f"{old['batch']}: {old['psnr_median']:.2f}) -> {'met' if median_same >= old['psnr_median'] - 0.005 else 'NOT met'}")
print(f"must-show: HR Mpx/s per device {new['mpx_per_s']:.3f} (batch {new['batch']}) >= 1 -> "
      f"{'met' if new['mpx_per_s'] >= 1 else 'NOT met'}; paper corpus {new['paper_corpus_device_hours']:.0f} "
      f"device-hours (paper 700, target <= 35)")
print(f"must-show: every compared crop within 0.05 dB of the previous engine: {new['crops_within_0.05_dB']} of {n}, "
      f"max {new['max_abs_psnr_diff_to_previous']:.4f} dB -> {'met' if new['crops_within_0.05_dB'] == n else 'NOT met'}")
rows = r.get("processes", [])
if len(rows) > 1:
    print(f"must-show: 1 vs {rows[-1]['workers']} worker processes on the device: {rows[0]['crops_per_s']:.2f} vs "
          f"{rows[-1]['crops_per_s']:.2f} crops/s ({rows[-1]['crops_per_s'] / rows[0]['crops_per_s']:.2f}x)")
PYEOF
    echo "elapsed: $(( $(date +%s) - start )) s"
} | tee "$RESULTS/summary.txt"
(( tests_rc == 0 && bench_rc == 0 && fit_rc == 0 && overlap_rc == 0 && fast_rc == 0 && encode_rc == 0 ))
