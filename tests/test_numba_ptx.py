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

pytestmark = [
    pytest.mark.cpu_proxy,
    pytest.mark.skipif(
        os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="PTX is compiled outside the CUDA simulator"
    ),
]

CCS = [(8, 0), (9, 0)]
try:
    import ml_dtypes

    BF16 = [np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # pragma: no cover - ml_dtypes is in the test extra
    BF16 = []
DTYPES = [np.float16, np.float32, np.float64, *BF16]


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
_LABEL = re.compile(r"^\s*(\$L__\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__\w+);")
_DIV64 = re.compile(r"\b(?:div|rem)\.[su]64\b")


def loops_with_64bit_division(ptx):
    """The loops of a PTX text (a backward branch and the lines from its target label to it) that
    hold a 64-bit integer division or remainder: ptxas expands each into a subroutine of dozens
    of instructions. Lines before a loop (a prologue) may divide."""
    lines = ptx.splitlines()
    labels = {}
    found = []
    for number, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = number
        branch = _BRANCH.search(line)
        if branch and branch.group(1) in labels:  # seen already: a backward branch
            start = labels[branch.group(1)]
            body = [ln.strip() for ln in lines[start : number + 1] if _DIV64.search(ln)]
            if body:
                found.append((branch.group(1), body))
    return found


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
            # the N-D walks and the trailing-bias column counter: no division per element
            if ("_nd" in name or name.endswith("bias_contig")) and loops_with_64bit_division(ptx):
                problems.append(f"{name}: 64-bit division in a loop: {loops_with_64bit_division(ptx)}")
            path = os.path.join(tmp, f"{name}.ptx")
            with open(path, "w") as f:
                f.write(ptx)
            proc = subprocess.run(
                [ptxas, f"-arch={arch}", "-v", path, "-o", os.devnull], capture_output=True, text=True
            )
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


# Every N-D kernel's kind (the elementwise ops share one template for each of the forward, the
# forward with a bias, the backward and the backward with a bias: two ops stand for all, the
# catalogue above checks every op at rank 3) at ranks 1-4; float16 adds the conversions.
ND_OPS = ("relu", "gelu")
ND_GATES = ("glu", "swiglu")  # the gated units share one template too: the gate first and last


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=lambda d: np.dtype(d).name)
def test_nd_kernel_loops_have_no_64bit_division(dtype):
    pytest.importorskip("numba.cuda")
    from numba import cuda

    from gpuact.backends._numba import kernels

    problems, checked = [], 0
    with _compile_device_for((9, 0)):
        for name, fn, sig in kernels.nd_catalogue(dtype, ndims=(1, 2, 3, 4), ops=ND_OPS, gates=ND_GATES):
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
            checked += 1
            assert _BRANCH.search(ptx), f"{name}: no branch found; has the PTX syntax changed?"
            found = loops_with_64bit_division(ptx)
            if found:
                problems.append(f"{name}: {found}")
    assert checked == 4 * (4 * len(ND_OPS) + 2 * len(ND_GATES) + 4)
    assert not problems, "\n".join(problems)


def test_the_division_check_finds_a_division_in_a_loop():
    """The check above would see the old per-element unravelling (``//`` and ``%`` on int64 in
    the loop), and lets a prologue divide."""
    pytest.importorskip("numba.cuda")
    from numba import cuda

    def in_loop(x, n, s):
        i = np.int64(cuda.grid(1))
        while i < n:
            x[i % s] = i // s
            i += np.int64(cuda.gridsize(1))

    def in_prologue(x, n, s):
        i = np.int64(cuda.grid(1))
        q = i // s
        while i < n:
            x[i] = q
            i += np.int64(cuda.gridsize(1))
            q += 1

    from gpuact.backends._numba.kernels import signature

    sig = signature((np.int64, 1, "C"), np.int64, np.int64)
    with _compile_device_for((9, 0)):
        looped, _ = cuda.compile_ptx(in_loop, sig, cc=(9, 0))
        before, _ = cuda.compile_ptx(in_prologue, sig, cc=(9, 0))
    assert loops_with_64bit_division(looped)
    assert _DIV64.search(before) and not loops_with_64bit_division(before)


_BITS_LOAD = re.compile(r"\bld(?:\.global)?\.[ub]16\b")
_BITS_STORE = re.compile(r"\bst(?:\.global)?\.[ub]16\b")
_WIDEN = re.compile(r"\bshl\.b32\s+%r\d+,\s*%r\d+,\s*16;")
# a numeric conversion between float32 and a 16-bit integer: the bits read as a number
_NUMERIC = re.compile(r"\bcvt\.(?:\w+\.)?(?:[us]16\.f32|f32\.[us]16)\b")


@pytest.mark.skipif(not BF16, reason="needs ml_dtypes")
def test_bfloat16_kernels_widen_and_round_the_bits():
    """A bfloat16 array reaches the kernels as uint16 bits (``_numba/storage.py``): each kernel
    loads 16 bits, widens them by a shift (not a conversion of the integer's value) and stores
    16 bits; a float32-to-integer conversion would store the value's integer part."""
    pytest.importorskip("numba.cuda")
    from numba import cuda

    from gpuact.backends._numba import kernels

    wanted = {"relu_contig", "gelu_grad_bias_contig", "softmax_tile", "log_softmax_grad_finish", "swiglu_grad_nd2"}
    seen = set()
    with _compile_device_for((9, 0)):
        for name, fn, sig in kernels.catalogue(BF16[0], ndims=(2,)):
            if name not in wanted:
                continue
            seen.add(name)
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
            assert _BITS_LOAD.search(ptx) and _BITS_STORE.search(ptx), name
            assert _WIDEN.search(ptx), f"{name}: no 16-bit shift widening the bits"
            assert not _NUMERIC.search(ptx), f"{name}: {_NUMERIC.findall(ptx)}"
    assert seen == wanted
