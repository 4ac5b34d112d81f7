"""Every Numba kernel compiles to PTX for sm_80 and sm_90 and ptxas assembles it without spills.

No GPU needed: ``numba.cuda.compile_ptx`` compiles for a given compute capability, and ``ptxas``
(CUDA toolkit) reports registers and spills. Device functions (``@cuda.jit(device=True)``) ask
the current device for its compute capability when compiled; with no GPU there is none, so the
test tells them the capability being compiled for (``_compile_device_for``).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager

import numpy as np
import pytest

pytestmark = [pytest.mark.cpu_proxy,
              pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                                 reason="PTX is compiled outside the CUDA simulator")]

CCS = [(8, 0), (9, 0)]
DTYPES = [np.float16, np.float32, np.float64]


def _ptxas():
    found = shutil.which("ptxas")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/ptxas"))
    return candidates[-1] if candidates else None


@contextmanager
def _compile_device_for(cc):
    import numba.cuda.dispatcher as dispatcher

    class _Device:
        compute_capability = cc

    original = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Device
    try:
        yield
    finally:
        dispatcher.get_current_device = original


_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


@pytest.mark.slow
@pytest.mark.parametrize("cc", CCS, ids=lambda c: f"sm_{c[0]}{c[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_kernels_compile_to_ptx_without_spills(dtype, cc):
    pytest.importorskip("numba.cuda")
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) not found on PATH or in /usr/local/cuda*/bin")
    from numba import cuda

    from gpuact.backends._numba import kernels

    arch = f"sm_{cc[0]}{cc[1]}"
    rows, problems = [], []
    with _compile_device_for(cc), tempfile.TemporaryDirectory() as tmp:
        for name, fn, sig in kernels.catalogue(dtype, ndims=(3,)):
            ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
            path = os.path.join(tmp, f"{name}.ptx")
            with open(path, "w") as f:
                f.write(ptx)
            proc = subprocess.run([ptxas, f"-arch={arch}", "-v", path, "-o", os.devnull],
                                  capture_output=True, text=True)
            report = proc.stdout + proc.stderr
            if proc.returncode != 0:
                problems.append(f"{name}: ptxas failed:\n{report}")
                continue
            regs = max((int(r) for r in _REGS.findall(report)), default=-1)
            spills = [(int(st), int(ld)) for st, ld in _SPILL.findall(report)]
            spill = max((st + ld for st, ld in spills), default=0)
            rows.append((name, regs, spill))
            if spill:
                problems.append(f"{name}: {spill} bytes of spills")
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{np.dtype(dtype).name} {arch}: {'kernel'.ljust(width)} registers spills")
    for name, regs, spill in rows:
        print(f"  {name.ljust(width)} {regs:9d} {spill:6d}")
    assert not problems, "\n".join(problems)
