"""Runs the CuPy backend without a GPU: the public suite, ``tests/test_cupy_backend.py`` and
``tests/test_launch_contract.py`` in a child pytest on the CuPy stand-in (``tests/cupy_standin``),
where every kernel launch is checked against its source, the H100/H200 limits, devices and
streams, and then run on the CPU.

The stand-in must take the name ``cupy`` before anything imports it, hence a separate process with
``GPUACT_CUPY_STANDIN=1`` and ``GPUACT_TEST_BACKENDS=cupy`` (the ``be`` fixture then runs the public
tests on the CuPy path only). The child runs only the files listed here, so never this one, and of
the public files only the tests that take the ``be`` fixture (``GPUACT_TEST_BE_ONLY``, as in
tests/test_numba_simulator.py).
``GPUACT_STANDIN_CACHE=<dir>`` keeps the compiled kernels between runs (a cold run compiles ~200).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_numba_simulator import PUBLIC

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INCLUDED = (*PUBLIC, "test_cupy_backend.py", "test_launch_contract.py")
# 2**31 float16 elements through the CPU shim would take hours (and 12 GiB of host memory)
DESELECTED = ("tests/test_cupy_backend.py::test_more_than_2_31_elements",)
MIN_PASSED = 850
ALLOWED_SKIPS = ()

pytestmark = pytest.mark.cpu_proxy


def _unusable() -> str | None:
    # asked in a child: probing NVRTC imports parts of the real cupy, which this process keeps out
    code = "from tests import cupy_standin; print(cupy_standin.unusable_reason() or '')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return f"the CuPy stand-in does not load: {proc.stderr.strip()[-500:]}"
    return proc.stdout.strip() or None


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GPUACT_CUPY_STANDIN") == "1", reason="already inside the stand-in run")
def test_cupy_backend_on_the_standin():
    reason = _unusable()
    if reason:
        pytest.skip(reason)
    files = sorted({str(p.relative_to(ROOT)) for pattern in INCLUDED for p in HERE.glob(pattern)})
    env = dict(os.environ, GPUACT_CUPY_STANDIN="1", GPUACT_TEST_BACKENDS="cupy", GPUACT_TEST_BE_ONLY=",".join(PUBLIC))
    env.pop("GPUACT_REQUIRE_GPU", None)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *files,
        "-q",
        "-p",
        "no:cacheprovider",
        "-rs",
        "--no-header",
        *(f"--deselect={d}" for d in DESELECTED),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    lines = output.strip().splitlines()
    summary = lines[-1] if lines else ""
    compiled = next((line for line in lines if line.startswith("gpuact CuPy stand-in:")), "")
    print(f"\nCuPy stand-in run ({elapsed:.0f} s): {' '.join(cmd[3:])}\n  {compiled}\n  {summary}")
    assert proc.returncode == 0, f"the stand-in run failed:\n{output[-20000:]}"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)}
    assert counts.get("passed", 0) >= MIN_PASSED, f"only {counts.get('passed', 0)} tests ran:\n{summary}"
    skips = [line for line in lines if line.startswith("SKIPPED")]
    unexpected = [line for line in skips if not any(reason in line for reason in ALLOWED_SKIPS)]
    assert not unexpected, "unexpected skips in the stand-in run:\n" + "\n".join(unexpected)
