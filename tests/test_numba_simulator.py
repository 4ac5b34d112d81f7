"""Runs the Numba backend's kernels without a GPU: the public test suite and
``tests/test_numba_backend.py`` in a child pytest under Numba's CUDA simulator.

The simulator must be switched on before numba is imported, hence a separate process, with
``NUMBA_ENABLE_CUDASIM=1`` and ``GPUACT_TEST_BACKENDS=numba`` (the ``be`` fixture then runs the
public tests on the Numba path only). The child runs only the files in ``INCLUDED``, and of the
public ones (``PUBLIC``, named to the child in ``GPUACT_TEST_BE_ONLY``) only the tests that take
the ``be`` fixture: the others run the NumPy path alone, as the main run already did. This test
skips itself inside the simulator (no recursion).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The public suite's files with tests on the `be` fixture (run on the Numba path here, the gradients
# and bad input included). test_api.py and test_numpy_*.py have none: the main run covers them.
PUBLIC = (
    "test_activations.py",
    "test_softmax.py",
    "test_properties.py",
    "test_backward.py",
    "test_bad_input.py",
    "test_gated.py",
    "test_bfloat16_backends.py",
)
# ...and the Numba backend's own tests, forward and backward, which run whole.
INCLUDED = (*PUBLIC, "test_numba_backend.py", "test_numba_backward.py")
MIN_PASSED = 400
# The only skips the child may report: documented limits of Numba device arrays, tests the
# public suite hands over to tests/test_numba_backend.py, and GPU-sized tests.
ALLOWED_SKIPS = (
    "cannot be sliced with a negative step",
    "covered by tests/test_numba_backend.py",
    "transpose only in 2-D",
    "a GPU's size, not the simulator's",
    "2**25-element reductions",
)


pytestmark = pytest.mark.cpu_proxy


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="already inside the simulator run")
def test_numba_backend_under_the_cuda_simulator():
    pytest.importorskip("numba")
    pytest.importorskip("numba.cuda")
    files = sorted({str(p.relative_to(ROOT)) for pattern in INCLUDED for p in HERE.glob(pattern)})
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GPUACT_TEST_BACKENDS="numba", GPUACT_TEST_BE_ONLY=",".join(PUBLIC))
    env.pop("GPUACT_REQUIRE_GPU", None)
    cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "-rs", "--no-header"]
    start = time.perf_counter()
    # 943 s alone on the 2-core CI-like VM (2026-12-07): the limit only catches a hang
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    lines = output.strip().splitlines()
    summary = lines[-1] if lines else ""
    print(f"\nCUDA simulator run ({elapsed:.0f} s): {' '.join(cmd[3:])}\n  {summary}")
    assert proc.returncode == 0, f"the simulator run failed:\n{output[-20000:]}"
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)}
    assert counts.get("passed", 0) >= MIN_PASSED, f"only {counts.get('passed', 0)} tests ran:\n{summary}"
    skips = [line for line in lines if line.startswith("SKIPPED")]
    unexpected = [line for line in skips if not any(reason in line for reason in ALLOWED_SKIPS)]
    assert not unexpected, "unexpected skips in the simulator run:\n" + "\n".join(unexpected)
