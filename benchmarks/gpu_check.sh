#!/usr/bin/env bash
# One-shot GPU check for a short loan of a machine with an NVIDIA GPU (about 5 minutes):
#   (a) the test suite's CUDA tests against the real GPU (NUMBACNN_TEST_REAL_GPU=1),
#       and the conv tests again under compute-sanitizer --tool memcheck when installed,
#   (b) a Tiny VGG training step and each kernel beside PyTorch/cuDNN (NCHW and
#       channels_last) at batch 32/128/512, for 3x64x64 and the main job's 1x28x28,
#   (c) one epoch of `numbacnn train --device cuda` on Fashion-MNIST,
# written as one Markdown table (GPU model, driver, versions, ms, ratio) to --out.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.md] [--data-dir DIR] [--tiny]
#
# --tiny: batch 2, 8x8 images, a generated 40-image dataset and one CUDA test
# file, under Numba's CUDA simulator: what CI runs to check this script's plumbing
# (tests/test_gpu_check.py). Time limits: the tests get TESTS_SECONDS (default
# 150), the Python part BUDGET_SECONDS (default 140); each section stops starting
# new work when its time is up and the report says what was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

out="gpu_check.md"
data_dir=""
tiny=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --data-dir) data_dir="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python}
# Without a GPU, say so in one line and stop: the tests would fail one by one with
# tracebacks and the report would have nothing to measure (issue 21).
if [ "$tiny" = 0 ]; then
    if ! reason=$(env -u NUMBA_ENABLE_CUDASIM "$python" -c '
import sys
try:
    from numba import cuda
except Exception as exc:
    sys.exit(f"numba-cuda is not installed ({type(exc).__name__}); pip install \"numbacnn[cuda]\"")
try:
    ok = cuda.is_available()
except Exception as exc:
    ok = False
sys.exit(0 if ok else "no usable NVIDIA GPU (numba.cuda.is_available() is False; check nvidia-smi)")
' 2>&1); then
        echo "gpu_check.sh: error: ${reason##*$'\n'}, no report written to $out (run it on a machine with a GPU, or --tiny to check the plumbing in the simulator)" >&2
        exit 2
    fi
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)

# (a) the tests that run on the "cuda" device, against the GPU
if [ "$tiny" = 1 ]; then
    export NUMBA_ENABLE_CUDASIM=1 NUMBACNN_TEST_REAL_GPU=0
    timeout "${TESTS_SECONDS:-150}" "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
        -k "launch_configurations" >"$log" 2>&1
else
    export NUMBACNN_TEST_REAL_GPU=1
    unset NUMBA_ENABLE_CUDASIM
    timeout "${TESTS_SECONDS:-150}" "$python" -m pytest -q -p no:cacheprovider -k "cuda" >"$log" 2>&1
fi
tests_status=$?
[ "$tests_status" = 124 ] && echo "stopped after ${TESTS_SECONDS:-150} s" >>"$log"
tail -n 3 "$log"

# (a') the conv and Tiny VGG CUDA tests again under compute-sanitizer's memcheck, when
# it is installed: a read outside an array whose value is never used (the tiled
# forward's patch load without its left-padding guard) changes no result, so only
# memcheck sees it. The caching pool is switched off (NUMBACNN_CUDA_POOL=0) so each
# array is its own cudaMalloc with memcheck's padding after it; inside one pooled
# block a stray read would land in a neighbour and go unseen. Its verdict is the
# last line of the tests' log and fails the script.
memcheck_status=0
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
if [ "$tiny" = 0 ] && [ -n "$sanitizer" ]; then
    memcheck_log=$(mktemp)
    NUMBACNN_CUDA_POOL=0 timeout "${MEMCHECK_SECONDS:-120}" "$sanitizer" --tool memcheck --padding 256 \
        --error-exitcode 86 --print-limit 20 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
        -k "conv2d_cuda_matches_cpu or tiny_vgg_step_cuda" >"$memcheck_log" 2>&1
    memcheck_status=$?
    tests_tail=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)  # kept on the report's line
    case "$memcheck_status" in
        0) verdict="memcheck: no errors ($(tail -n 1 "$memcheck_log"))" ;;
        86) verdict="memcheck: ERRORS: $(grep -m 1 -E 'Invalid|out of bounds|ERROR SUMMARY' "$memcheck_log")" ;;
        124) verdict="memcheck: stopped after ${MEMCHECK_SECONDS:-120} s, no error before that"; memcheck_status=0 ;;
        *) verdict="memcheck: exit $memcheck_status ($(tail -n 1 "$memcheck_log"))" ;;
    esac
    grep -E "Invalid|out of bounds|ERROR SUMMARY" "$memcheck_log" | head -n 20 >>"$log"
    echo "$tests_tail; $verdict" | tee -a "$log"
    rm -f "$memcheck_log"
elif [ "$tiny" = 0 ]; then
    echo "memcheck: skipped (compute-sanitizer not found)" | tee -a "$log"
fi

# (b) + (c) and the report
args=(--out "$out" --tests-log "$log" --tests-status "$tests_status" --budget-s "${BUDGET_SECONDS:-140}")
[ -n "$data_dir" ] && args+=(--data-dir "$data_dir")
[ "$tiny" = 1 ] && args+=(--tiny)
"$python" benchmarks/gpu_check.py "${args[@]}"
report_status=$?

if [ "$report_status" = 0 ] && [ -s "$out" ]; then
    echo "gpu_check: $(( $(date +%s) - start )) s, report in $out (tests exit $tests_status, memcheck exit $memcheck_status)"
else
    echo "gpu_check: $(( $(date +%s) - start )) s, no complete report (report exit $report_status, tests exit $tests_status)" >&2
fi
[ "$tests_status" = 0 ] && [ "$memcheck_status" = 0 ] && [ "$report_status" = 0 ]
