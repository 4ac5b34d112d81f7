"""The NumPy path's compiled kernels: ``kernels/gpuact_cpu.cc`` loaded through ctypes.

Used for float32 (every elementwise op, softmax along the last axis) and for the float64 ops in
FLOAT64_OPS; everything else stays on the NumPy ufunc formulas of ``numpy_backend``.

A NumPy formula of k steps streams its data k times (in cache-sized blocks, but still k ufunc
calls); the same formula compiled from ``kernels/gpuact_math.cuh`` (the CUDA kernels' own math)
reads the input once and writes the output once, vectorized. ``hatch_build.py`` compiles the
library when the package is installed (``pip install .`` or ``-e .``) if a C++ compiler is there;
without one, or with ``GPUACT_NATIVE=0`` in the environment, everything runs on NumPy ufuncs and
gives the same results within the float32/float64 tolerances of SPEC §3.

ctypes releases the GIL for the duration of each call, so the NumPy backend's thread pool runs
the kernels on disjoint ranges in parallel.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from gpuact._ops import ELEMENTWISE_OPS

LIBRARY_NAME = "_gpuact_cpu.so"
# kernels/gpuact_cpu.cc's ga_cpu_abi_version(): a library built from other sources is not used.
ABI_VERSION = 2

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_C_SCALAR = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}

_state: dict = {}


def library_path() -> Path:
    return Path(__file__).resolve().parent.parent / LIBRARY_NAME


def _load():
    if "lib" in _state:
        return _state["lib"]
    lib, reason = None, None
    path = library_path()
    if os.environ.get("GPUACT_NATIVE", "1").strip() == "0":
        reason = "turned off by GPUACT_NATIVE=0"
    elif not path.exists():
        reason = f"{path.name} was not built (no C++ compiler when gpuact was installed)"
    else:
        try:
            candidate = ctypes.CDLL(str(path))
            candidate.ga_cpu_abi_version.restype = ctypes.c_int
            version = candidate.ga_cpu_abi_version()
            if version != ABI_VERSION:
                reason = f"{path} has ABI {version}, this gpuact needs {ABI_VERSION}: reinstall gpuact"
            else:
                lib = candidate
        except (OSError, AttributeError) as exc:
            reason = f"{path} could not be loaded: {exc}"
    _state["lib"], _state["reason"] = lib, reason
    return lib


def unavailable_reason() -> str | None:
    """Why the compiled kernels are not used, or None when they are."""
    _load()
    return _state["reason"]


def available() -> bool:
    return _load() is not None


# float64 math comes from the C library one element at a time (gpuact_host_simd.h is float32
# only), slower than NumPy's SIMD float64 loops: measured at 2**21 float64 on the 2-core EPYC,
# compiled / ufunc time was tanh 4.5x, softplus 5x, mish 8x, exponential 2.3x, softmax 1.7x.
# float64 therefore takes the compiled kernels only for the ops that need no such function
# (softsign 2.4x faster, relu 1.2x) and gelu (glibc's erfc beats the 23-term ufunc fit, 1.2x).
FLOAT64_OPS = frozenset({
    "relu", "linear", "relu6", "leaky_relu", "softsign", "hard_sigmoid", "hard_silu", "hard_tanh",
    "hard_shrink", "soft_shrink", "threshold", "sparse_plus", "sparse_sigmoid", "gelu",
})


_POINTERS = [ctypes.c_void_p, ctypes.c_void_p]
_ELEMENTWISE_ARGTYPES = {dtype: _POINTERS + [ctypes.c_int64] + [scalar] * 4 for dtype, scalar in _C_SCALAR.items()}
_ROWS_ARGTYPES = _POINTERS + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
_COLUMNS_ARGTYPES = _POINTERS + [ctypes.c_int64] * 5 + [ctypes.c_int]


def _bound(symbol: str, argtypes):
    """The library's ``symbol`` with its argument types, bound on first use and kept; None
    without the library."""
    if symbol not in _state:
        lib = _load()
        fn = None
        if lib is not None:
            fn = getattr(lib, symbol)
            fn.argtypes = argtypes
            fn.restype = None
        _state[symbol] = fn
    return _state[symbol]


def compiled_elementwise(op: str, dtype):
    """``f(x, y, n, p0, p1, p2, p3)`` on raw pointers: the library's kernel for ``op`` in
    ``dtype`` (float32 or float64), or None when the library or the kernel is not there."""
    dtype = np.dtype(dtype)
    if dtype not in _SUFFIX or op not in ELEMENTWISE_OPS:
        return None
    return _bound(f"ga_cpu_{op}_{_SUFFIX[dtype]}", _ELEMENTWISE_ARGTYPES[dtype])


def elementwise_kernel(op: str, dtype):
    """The compiled kernel the NumPy path uses for ``op`` in ``dtype``, or None where its ufunc
    formula is the better choice (float64 ops in need of exp, log or tanh) or the only one."""
    if np.dtype(dtype) == np.float64 and op not in FLOAT64_OPS:
        return None
    return compiled_elementwise(op, dtype)


def compiled_softmax_rows(dtype):
    """``f(x, y, rows, length, log)``: softmax (or log-softmax) of contiguous rows in ``dtype``
    (float32 or float64), or None."""
    dtype = np.dtype(dtype)
    return _bound(f"ga_cpu_softmax_rows_{_SUFFIX[dtype]}", _ROWS_ARGTYPES) if dtype in _SUFFIX else None


def softmax_rows_kernel(dtype):
    """The row softmax the NumPy path uses: float32 only (float64 rows are faster on NumPy's SIMD
    exp, see FLOAT64_OPS)."""
    return compiled_softmax_rows(dtype) if np.dtype(dtype) == np.float32 else None


def softmax_columns_kernel(dtype):
    """``f(x, y, length, inner, width, u0, u1, log)``: softmax along the middle axis of a
    contiguous float32 (outer, length, inner) array, work units [u0, u1), or None."""
    if np.dtype(dtype) != np.float32:
        return None
    return _bound("ga_cpu_softmax_columns_f32", _COLUMNS_ARGTYPES)


def address(a: np.ndarray) -> int:
    """The data pointer of a non-empty contiguous array. A ctypes view of a writable buffer gives
    it in a quarter of the time of ``a.ctypes.data`` (which builds a helper object), and that is
    most of the cost of a small call."""
    if a.flags.writeable:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    return a.ctypes.data


def exported_ops() -> list[str]:
    """The elementwise ops the loaded library exports (for the tests)."""
    lib = _load()
    return [op for op in ELEMENTWISE_OPS if lib is not None and hasattr(lib, f"ga_cpu_{op}_f32")]

