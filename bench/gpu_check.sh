#!/usr/bin/env bash
# The one script to run on a lent GPU machine:   bash bench/gpu_check.sh OUT_DIR
#
# From the repository root, with the source tree on PYTHONPATH (no install needed); wheels carried
# in .whl/ (dependencies the machine lacks) are installed first, with no index, into a folder
# added to PYTHONPATH after the tree. Then:
#   1. prints the device (nvidia-smi, Python and library versions)        -> OUT/device.txt
#   2. runs the whole test suite with every GPU test enforced
#      (GPUACT_REQUIRE_GPU=1 python -m pytest -q -m "not cpu_proxy and not needs_network"), and the bench/ suites
#      once in smoke mode                                                  -> OUT/tests.txt
#   3. runs the benchmark, whatever the tests said                         -> OUT/bench.txt,
#      OUT/bench-<device>-<date>.json and .png
# Five files at most in OUT. The whole script stays under 8 minutes on an H200: the tests get
# GPU_CHECK_TEST_TIMEOUT seconds (default 300), the benchmark what is left of GPU_CHECK_BUDGET
# (default 450) through gpuact-bench's --time-budget, with GPU sizes 2**10..2**28 and CPU sizes
# 2**10..2**22 in steps of 16x.
# Exit status: non-zero when the tests failed or gpuact's own paths gave a wrong result.

set -uo pipefail

OUT=${1:?usage: bash bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-450}
TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-300}
PY=${PYTHON:-python3}

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    # Carried wheels (gpuact's own and any missing dependency): no index, no internet.
    SITE=${TMPDIR:-/tmp}/gpuact-gpu-check-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "==> installing .whl/*.whl failed"; exit 3; }
    export PYTHONPATH="$PYTHONPATH:$SITE"
    echo "==> using the source tree (PYTHONPATH=.) and the wheels of .whl/ in $SITE"
else
    echo "==> using the source tree (PYTHONPATH=.)"
fi

# The NumPy path's CPU kernels: built in the tree if a compiler is there (a pip install would do it),
# so the CPU figures of the benchmark are those of an installed gpuact.
"$PY" hatch_build.py || echo "==> CPU kernels not built: the NumPy path runs on ufuncs alone"

# 1. the device
{
    echo "==> date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "==> git: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | wc -l) changed files"
    nvidia-smi || echo "nvidia-smi failed"
    "$PY" - <<'PY'
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for d in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "numba", "numba-cuda", "torch", "jax", "jaxlib",
          "jax-cuda12-plugin", "jax-cuda13-plugin", "pytest", "pytest-benchmark", "hypothesis", "matplotlib", "rich"):
    try:
        print(f"  {d} {md.version(d)}")
    except md.PackageNotFoundError:
        pass
try:
    import cupy
    print("cupy sees:", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
          "| runtime", cupy.cuda.runtime.runtimeGetVersion(), "| driver", cupy.cuda.runtime.driverGetVersion())
except Exception as exc:
    print("cupy cannot use a GPU:", exc)
PY
} 2>&1 | tee "$OUT/device.txt"

DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/^-*//;s/-*$//')
DEVICE=${DEVICE:-unknown-gpu}
STAMP=$(date -u +%Y%m%d-%H%M)

# 2. the tests, every GPU test enforced
echo "==> tests (GPUACT_REQUIRE_GPU=1, timeout ${TEST_TIMEOUT}s)"
{
    # Every test that runs the GPU; the CPU stand-ins for one (compilers, simulator) and the
    # wheel build (it needs the package registry; this machine is offline) are CI's.
    GPUACT_REQUIRE_GPU=1 timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider -m "not cpu_proxy and not needs_network"
    echo "==> pytest exit status $?"
    GPUACT_REQUIRE_GPU=1 timeout 120 "$PY" -m pytest bench/ --benchmark-disable -q -p no:cacheprovider
    echo "==> bench smoke exit status $?"
} 2>&1 | tee "$OUT/tests.txt"
TESTS_STATUS=0
grep -q "^==> pytest exit status 0$" "$OUT/tests.txt" || TESTS_STATUS=1
grep -q "^==> bench smoke exit status 0$" "$OUT/tests.txt" || TESTS_STATUS=1

# 3. the benchmark, whatever the tests said
LEFT=$(( BUDGET - (SECONDS - START) ))
(( LEFT < 60 )) && LEFT=60
echo "==> benchmark (time budget ${LEFT}s)"
NAME="bench-$DEVICE-$STAMP"
timeout $(( LEFT + 90 )) "$PY" -m gpuact.bench --no-progress \
    --gpu-sizes 10:28:2 --cpu-sizes 10:22:4 --time-budget "$LEFT" \
    --json "$OUT/$NAME.json" --plot "$OUT/$NAME.png" 2>&1 | tee "$OUT/bench.txt"
BENCH_STATUS=${PIPESTATUS[0]}
if [[ -f "$OUT/$NAME.json" ]]; then
    "$PY" -m gpuact.bench.summarize "$OUT/$NAME.json" >> "$OUT/bench.txt" 2>&1 || true
fi

echo "==> done in $(( SECONDS - START ))s: tests $([[ $TESTS_STATUS == 0 ]] && echo passed || echo FAILED)," \
     "benchmark exit status $BENCH_STATUS; outputs in $OUT:"
ls -l "$OUT"
(( TESTS_STATUS != 0 )) && exit 1
(( BENCH_STATUS != 0 )) && exit 2
exit 0
