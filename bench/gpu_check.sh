#!/usr/bin/env bash
# The one script to run on a lent GPU machine:   bash bench/gpu_check.sh OUT_DIR
#
# From the checkout, with the source tree on PYTHONPATH (no install). Everything runs within one
# deadline, GPU_CHECK_DEADLINE seconds from the start (default 480: a device command may run 600),
# in four steps. Each step writes its own files in OUT_DIR as it goes and its line in
# OUT_DIR/summary.txt when it ends, so a kill at any point keeps everything that finished:
#   1. <= 20 s    1-device.txt: nvidia-smi, Python and library versions, compute-sanitizer, nvcc.
#                 Without a GPU the check stops here (exit 3). 1-smoke.txt: one RawKernel (the
#                 vector kernel), one ElementwiseKernel (a strided CuPy input) and one Numba
#                 kernel, each against NumPy (bench/gpu_sanitize.py --smoke).
#   2. <= 100 s   2-racecheck.txt, 2-memcheck.txt, 2-synccheck.txt: compute-sanitizer with each
#                 tool and --error-exitcode on bench/gpu_sanitize.py (every kernel family, CuPy
#                 and Numba, float32 and float16). Racecheck and synccheck look only at shared
#                 memory and barriers: they run its softmax and sparsemax cases alone, in float32
#                 and in float16 respectively.
#   3. <= 240 s   3-tests.txt, 3-tests.xml: the GPU tests, GPUACT_REQUIRE_GPU=1 pytest -m gpu
#                 (the tests/gpu_selection.py plugin marks every test on the cupy or numba path),
#                 stopped with SIGINT at the limit so that pytest still prints its summary and
#                 writes the XML.
#   4. the rest   4-build.txt: the NumPy path's CPU kernels, only when GPU_CHECK_BUILD_MIN_S is
#                 left (the GPU paths do not need them); 4-bench.txt, bench-<device>-<date>.json
#                 and .png: the benchmark with a --time-budget of what is left, its JSON rewritten
#                 as it goes.
# A step that finishes early leaves its time to the benchmark. GPU_CHECK_DRY_RUN=1 runs nothing:
# it prints each step's command and the time it would get, and exits 0 (any machine).
# Exit status: 0 every step passed; 1 a step failed or ran out of time; 2 bad usage; 3 no GPU.

set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: bash bench/gpu_check.sh OUT_DIR  (GPU_CHECK_DRY_RUN=1: print the plan only)" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

DEADLINE=${GPU_CHECK_DEADLINE:-480}
DRY=${GPU_CHECK_DRY_RUN:-0}
SMOKE_S=${GPU_CHECK_SMOKE_S:-20}
SANITIZE_S=${GPU_CHECK_SANITIZE_S:-100}
TESTS_S=${GPU_CHECK_TESTS_S:-240}
# The benchmark stops starting cases at its --time-budget, then measures overheads, rechecks
# copies and draws its plot: this much is kept for that.
BENCH_TAIL_S=${GPU_CHECK_BENCH_TAIL_S:-45}
BUILD_MIN_S=${GPU_CHECK_BUILD_MIN_S:-150}
BUILD_S=${GPU_CHECK_BUILD_S:-60}
# Between the SIGINT at a step's limit and the SIGKILL: the step's limit includes it.
GRACE_S=5
SANITIZER_ERROR=86
PY=${PYTHON:-python3}
for v in DEADLINE SMOKE_S SANITIZE_S TESTS_S BENCH_TAIL_S BUILD_MIN_S BUILD_S; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "gpu_check: $v must be a whole number of seconds, not '${!v}'" >&2; exit 2; }
done

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
START=$SECONDS
DRY_CLOCK=0 # a dry run's clock: every step takes all of its time
FAILED=()
RC=0

elapsed() { if [[ $DRY == 1 ]]; then echo "$DRY_CLOCK"; else echo $((SECONDS - START)); fi; }
left() { echo $((DEADLINE - $(elapsed))); }
min() { if (($1 < $2)); then echo "$1"; else echo "$2"; fi; }
note() { echo "$*" | tee -a "$SUMMARY"; }

# run NAME LIMIT FILE CMD...: CMD for at most LIMIT seconds (SIGINT at LIMIT - GRACE_S, SIGKILL at
# LIMIT), its output in FILE (after a line with the command), its exit status in RC and a line in
# the summary. In a dry run, only the line.
run() {
    local name=$1 limit=$2 file=$3
    shift 3
    local at cmd
    at=$(elapsed)
    cmd=$(printf '%q ' "$@")
    cmd=${cmd% }
    if ((limit <= GRACE_S)); then
        RC=124
        note "$name: not run, ${limit} s left of the deadline ($DEADLINE s): ${cmd}"
        return
    fi
    if [[ $DRY == 1 ]]; then
        note "$name: would run for at most ${limit} s (from ${at} s to $((at + limit)) s of $DEADLINE) > ${file#"$OUT"/}: ${cmd}"
        DRY_CLOCK=$((DRY_CLOCK + limit))
        RC=0
        return
    fi
    echo "\$ ${cmd}  # at most ${limit} s" > "$file"
    timeout -s INT -k "$GRACE_S" "$((limit - GRACE_S))" "$@" >> "$file" 2>&1 < /dev/null
    RC=$?
    local took=$(($(elapsed) - at)) status
    case $RC in
        0) status="passed" ;;
        124 | 137) status="STOPPED at its limit (exit $RC)" ;;
        "$SANITIZER_ERROR") status="SANITIZER ERRORS (exit $RC)" ;;
        *) status="FAILED (exit $RC)" ;;
    esac
    note "$name: $status after ${took} s of its ${limit} s > ${file#"$OUT"/}: ${cmd}"
}

failed_unless_ok() { ((RC == 0)) || FAILED+=("$1"); }

find_tool() {
    command -v "$1" 2> /dev/null && return
    local c
    for c in /usr/local/cuda/bin/"$1" /usr/local/cuda-*/bin/"$1" /usr/local/cuda/compute-sanitizer/"$1" \
        /usr/local/cuda-*/compute-sanitizer/"$1"; do
        [[ -x $c ]] && { echo "$c"; return; }
    done
    return 1
}

# shellcheck disable=SC2329  # invoked as `bash -c device_info`, so that timeout bounds it
device_info() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git: $(git rev-parse --short HEAD 2> /dev/null || echo 'no repository') $(git status --porcelain 2> /dev/null | wc -l) changed files"
    if command -v nvidia-smi > /dev/null; then
        timeout 10 nvidia-smi || echo "nvidia-smi failed (exit $?)"
    else
        echo "nvidia-smi: not found"
    fi
    timeout 10 "$PY" - << 'PY' || echo "$PY failed (exit $?)"
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for d in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda", "cuda-python", "torch", "jax", "jaxlib",
          "jax-cuda13-plugin", "jax-cuda12-plugin", "pytest", "hypothesis", "matplotlib"):
    try:
        print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError:
        pass
PY
    local tool path
    for tool in compute-sanitizer nvcc; do
        if path=$(find_tool "$tool"); then
            echo "$path: $(timeout 5 "$path" --version 2>&1 | grep -iE 'version|release' | tail -1)"
        else
            echo "$tool: not found"
        fi
    done
}
export -f device_info find_tool
export PY

# Whether the machine has a GPU: nvidia-smi where it is installed, else the driver itself.
gpu_present() {
    if command -v nvidia-smi > /dev/null; then
        timeout 10 nvidia-smi -L 2> /dev/null | grep -q '^GPU '
        return
    fi
    timeout 20 "$PY" -c '
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    sys.exit(1)
n = ctypes.c_int(0)
sys.exit(0 if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0 else 1)'
}

if [[ $DRY == 1 ]]; then
    note "gpu_check: DRY RUN (GPU_CHECK_DRY_RUN=1): nothing runs; each step shown with the time it would get if every step before it took all of its own; deadline $DEADLINE s (GPU_CHECK_DEADLINE), outputs in $OUT"
else
    note "gpu_check: deadline $DEADLINE s (GPU_CHECK_DEADLINE), outputs in $OUT"
fi

# 0. Carried wheels (gpuact's own, or a dependency the image lacks), installed without an index:
# the machine is offline.
if compgen -G ".whl/*.whl" > /dev/null; then
    SITE=${TMPDIR:-/tmp}/gpuact-gpu-check-site
    run "0 wheels" "$(min 60 "$(left)")" "$OUT/0-wheels.txt" \
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    failed_unless_ok "0 wheels"
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi

# 1. devices and versions, then one launch of each kind
STEP_END=$(($(elapsed) + $(min "$SMOKE_S" "$(left)")))
run "1 device" "$(min 10 $((STEP_END - $(elapsed))))" "$OUT/1-device.txt" bash -c device_info
if [[ $DRY != 1 ]] && ! gpu_present; then
    note "1 device: NO GPU on this machine (nvidia-smi lists none, or the CUDA driver sees none: see 1-device.txt). The check needs one and stops here; GPU_CHECK_DRY_RUN=1 walks its steps without one."
    echo "gpu_check: no GPU here: stopped at step 1 (exit 3)" >&2
    exit 3
fi
run "1 smoke" $((STEP_END - $(elapsed))) "$OUT/1-smoke.txt" \
    "$PY" bench/gpu_sanitize.py --smoke --json "$OUT/1-smoke.json"
failed_unless_ok "1 smoke"

# 2. compute-sanitizer, three tools on bench/gpu_sanitize.py, the step's time split 3:5:2 (a tool
# that ends early leaves its time to those after it). Compiling the kernels takes most of a run
# (Numba compiles again in every process), so racecheck and synccheck, which look only at shared
# memory and barriers, take the softmax and sparsemax cases in one dtype each: the kernels keep
# their shared data in the compute type, float32 for both. Memcheck takes every case in both.
STEP_END=$(($(elapsed) + $(min "$SANITIZE_S" "$(left)")))
SANITIZER=$(find_tool compute-sanitizer)
if [[ -z $SANITIZER && $DRY == 1 ]]; then
    note "2 sanitizer: compute-sanitizer is not found on this machine (PATH, /usr/local/cuda*/); the GPU image has it"
    SANITIZER=compute-sanitizer
fi
if [[ -n $SANITIZER ]]; then
    TOOLS=(racecheck memcheck synccheck)
    WEIGHTS=(3 5 2)
    SELECTION=("--kernels shared --dtype float32" "--kernels all" "--kernels shared --dtype float16")
    for i in 0 1 2; do
        tool=${TOOLS[$i]}
        weight_left=0
        for w in "${WEIGHTS[@]:$i}"; do weight_left=$((weight_left + w)); done
        limit=$(((STEP_END - $(elapsed)) * WEIGHTS[i] / weight_left))
        read -r -a selection <<< "${SELECTION[$i]}"
        run "2 $tool" "$limit" "$OUT/2-$tool.txt" "$SANITIZER" --tool "$tool" --error-exitcode "$SANITIZER_ERROR" \
            "$PY" bench/gpu_sanitize.py "${selection[@]}" --json "$OUT/2-$tool.json"
        failed_unless_ok "2 $tool"
    done
else
    note "2 sanitizer: compute-sanitizer NOT FOUND (PATH, /usr/local/cuda*/): the launches run without it"
    FAILED+=("2 compute-sanitizer missing")
    run "2 launches" $((STEP_END - $(elapsed))) "$OUT/2-launches.txt" \
        "$PY" bench/gpu_sanitize.py --json "$OUT/2-launches.json"
    failed_unless_ok "2 launches"
fi

# 3. the GPU tests, and no CPU-only test (-m gpu with tests/gpu_selection.py); GPU_CHECK_PYTEST_ARGS
# adds options (-n 4 where pytest-xdist is installed, say)
read -r -a PYTEST_EXTRA <<< "${GPU_CHECK_PYTEST_ARGS:-}"
run "3 tests" "$(min "$TESTS_S" "$(left)")" "$OUT/3-tests.txt" \
    env GPUACT_REQUIRE_GPU=1 "$PY" -m pytest -p tests.gpu_selection -m gpu -rfE --tb=short --durations=15 -p no:cacheprovider \
    --junitxml="$OUT/3-tests.xml" ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"}
failed_unless_ok "3 tests"

# 4. the benchmark with what is left; the CPU kernels first only if there is time for both
if (($(left) >= BUILD_MIN_S)); then
    run "4 build" "$BUILD_S" "$OUT/4-build.txt" "$PY" hatch_build.py
    ((RC == 0)) || note "4 build: the CPU kernels were not built: the benchmark's NumPy rows run on ufuncs (not counted as a failure)"
else
    note "4 build: skipped, $(left) s left (it runs, for at most $BUILD_S s, where GPU_CHECK_BUILD_MIN_S=$BUILD_MIN_S s are left): the benchmark's NumPy rows run on ufuncs: $PY hatch_build.py"
fi
DEVICE=unknown-gpu
if [[ $DRY != 1 ]]; then
    DEVICE=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1 | tr '[:upper:]' '[:lower:]' |
        tr -cs 'a-z0-9' '-' | sed 's/^-*//;s/-*$//')
    DEVICE=${DEVICE:-unknown-gpu}
fi
NAME="bench-$DEVICE-$(date -u +%Y%m%d-%H%M)"  # as bench/results/ names its runs
LIMIT=$(left)
BUDGET=$((LIMIT - BENCH_TAIL_S - GRACE_S))
if ((BUDGET >= 10)); then
    run "4 benchmark" "$LIMIT" "$OUT/4-bench.txt" "$PY" -m gpuact.bench --no-progress --gpu-sizes 10:28:2 \
        --cpu-sizes 10:22:4 --time-budget "$BUDGET" --json "$OUT/$NAME.json" --plot "$OUT/$NAME.png"
    failed_unless_ok "4 benchmark"
    if [[ $DRY != 1 && -f $OUT/$NAME.json ]] && (($(left) > 3)); then
        timeout "$(left)" "$PY" -m gpuact.bench.summarize "$OUT/$NAME.json" >> "$OUT/4-bench.txt" 2>&1
    fi
else
    note "4 benchmark: not run, $LIMIT s left of the deadline (it needs GPU_CHECK_BENCH_TAIL_S=$BENCH_TAIL_S + $GRACE_S + 10)"
fi

if [[ $DRY == 1 ]]; then
    note "gpu_check: dry run done: $(elapsed) s planned of $DEADLINE"
    exit 0
fi
if ((${#FAILED[@]})); then
    note "gpu_check: FAILED after $(elapsed) s of $DEADLINE: ${FAILED[*]}"
    exit 1
fi
note "gpu_check: every step passed after $(elapsed) s of $DEADLINE"
exit 0
