"""The NumPy path's compiled kernels: ``kernels/gpuact_cpu.cc``, built as the extension module
``gpuact._gpuact_cpu``.

Used for float32 (every elementwise op, softmax along any axis) and for the float64 ops in
FLOAT64_OPS; everything else stays on the NumPy ufunc formulas of ``numpy_backend``.

A NumPy formula of k steps streams its data k times (in cache-sized blocks, but still k ufunc
calls); the same formula compiled from ``kernels/gpuact_math.cuh`` (the CUDA kernels' own math)
reads the input once and writes the output once, vectorized. ``hatch_build.py`` compiles the
module when the package is installed (``pip install .`` or ``-e .``) if a C++ compiler is there;
without one, or with ``GPUACT_NATIVE=0`` in the environment, everything runs on NumPy ufuncs and
gives the same results within the documented float32/float64 tolerances.

The module takes NumPy arrays through the buffer protocol (a read-only or too-short buffer raises
instead of being written) and releases the GIL for any range worth it, so the NumPy backend's
thread pool runs it on disjoint ranges in parallel.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from gpuact._contract.checks import is_bfloat16
from gpuact._contract.ops import ELEMENTWISE_OPS, OPS

MODULE_NAME = "gpuact._gpuact_cpu"
# kernels/gpuact_cpu.cc's kAbiVersion: a module built from other sources is not used.
ABI_VERSION = 10

# what the entry points call float32 and float64 (the buffer format characters)
TYPE_CODE = {np.dtype(np.float32): ord("f"), np.dtype(np.float64): ord("d")}
# ...and bfloat16, whose arrays they take as uint16 views of the bits (computed in float32)
BFLOAT16_CODE = ord("H")

_state: dict = {}


def _load():
    if "lib" in _state:
        return _state["lib"]
    lib, reason = None, None
    if os.environ.get("GPUACT_NATIVE", "1").strip() == "0":
        reason = "turned off by GPUACT_NATIVE=0"
    else:
        try:
            candidate = importlib.import_module(MODULE_NAME)
        except ImportError as exc:
            reason = f"{MODULE_NAME} was not built (no C++ compiler when gpuact was installed?): {exc}"
        else:
            version = candidate.abi_version()
            if version != ABI_VERSION:
                reason = f"{candidate.__file__} has ABI {version}, this gpuact needs {ABI_VERSION}: reinstall gpuact"
            else:
                lib = candidate
                _state["unary_index"] = {name: i for i, name in enumerate(lib.unary_names())}
                _state["gate_index"] = {name: i for i, name in enumerate(lib.gate_names())}
    _state["lib"], _state["reason"] = lib, reason
    return lib


def unavailable_reason() -> str | None:
    """Why the compiled kernels are not used, or None when they are."""
    _load()
    return _state["reason"]


def available() -> bool:
    return _load() is not None


# the ops whose float64 arrays take the compiled kernels (the op table says why the others do not)
FLOAT64_OPS = frozenset(name for name, op in OPS.items() if op.compiled_float64)


class Unary:
    """One compiled elementwise op in one dtype, on contiguous arrays of that dtype:

    * ``kernel(x, y, start, stop, *p)``: ``y[start:stop] = op(x[start:stop])``;
    * ``kernel.bias(x, b, y, start, stop, *p)``: ``op(x + b)``, ``b`` the trailing-axes bias
      (``x.flat[i]`` takes ``b.flat[i % b.size]``);
    * ``kernel.grad(dy, x, dx, start, stop, *p)``: ``dx = dy * op'(x)``;
    * ``kernel.grad_bias(dy, x, b, dx, start, stop, *p)``: ``dx = dy * op'(x + b)``.

    ``p`` are the op's four canonical parameters. ``threads`` (default 1): the module cuts the range
    among that many of its own threads (see ``kernels/gpuact_cpu.cc``, ``SplitPool``).
    """

    __slots__ = ("op", "dtype", "_lib", "_run", "_index", "_type")

    def __init__(self, lib, op: str, dtype: np.dtype | None):
        self.op, self.dtype, self._lib = op, dtype, lib
        code = BFLOAT16_CODE if dtype is None else TYPE_CODE[dtype]
        self._run, self._index, self._type = lib.unary, _state["unary_index"][op], code

    def __call__(self, x, y, start, stop, p0=0.0, p1=0.0, p2=0.0, p3=0.0, threads=1):
        self._run(self._index, self._type, x, y, start, stop, p0, p1, p2, p3, threads)

    def bias(self, x, b, y, start, stop, p0=0.0, p1=0.0, p2=0.0, p3=0.0, threads=1):
        self._lib.unary_bias(self._index, self._type, x, b, y, start, stop, p0, p1, p2, p3, threads)

    def grad(self, dy, x, dx, start, stop, p0=0.0, p1=0.0, p2=0.0, p3=0.0, threads=1):
        self._lib.grad(self._index, self._type, dy, x, dx, start, stop, p0, p1, p2, p3, threads)

    def grad_bias(self, dy, x, b, dx, start, stop, p0=0.0, p1=0.0, p2=0.0, p3=0.0, threads=1):
        self._lib.grad_bias(self._index, self._type, dy, x, b, dx, start, stop, p0, p1, p2, p3, threads)


def _cache(name: str) -> dict:
    # caches live in _state, so that replacing _state (the tests turn the module off that way)
    # empties them too
    cache = _state.get(name)
    if cache is None:
        cache = _state[name] = {}
    return cache


def compiled_elementwise(op: str, dtype):
    """The module's kernel for ``op`` in ``dtype`` (float32 or float64), or None when the module
    or the kernel is not there."""
    dtype = np.dtype(dtype)
    cache = _cache("unary")
    key = (op, dtype)
    if key not in cache:
        lib = _load()
        ok = lib is not None and dtype in TYPE_CODE and op in _state["unary_index"]
        cache[key] = Unary(lib, op, dtype) if ok else None
    return cache[key]


def bfloat16_kernel(op: str):
    """The module's kernel for ``op`` on bfloat16 storage, or None: ``kernel(x, y, start, stop,
    *p)`` and ``kernel.grad(dy, x, dx, start, stop, *p)`` on uint16 views of contiguous bfloat16
    arrays' bits, each element widened, computed in float32 and rounded once to nearest even, in
    one pass (no bias: a biased call goes through float32 blocks)."""
    cache = _cache("bfloat16")
    if op not in cache:
        lib = _load()
        cache[op] = Unary(lib, op, None) if lib is not None and op in _state["unary_index"] else None
    return cache[op]


class Gate:
    """A gated unit's compiled rows for the gate's op, float32 or bfloat16 (``bits``: arrays passed
    as uint16 views of their bits):

    * ``forward(g, v, y, g_off, v_off, y_off, in_stride, out_stride, row0, row1, half, *p)``:
      ``y = op(g) * v`` over rows of ``half`` elements of flat contiguous buffers, row ``r`` of g
      at ``g_off + r * in_stride`` (v alike) and of y at ``y_off + r * out_stride``;
    * ``grad(dy, g, v, dg, dv, ...same layout...)``: ``dg = (dy v) op'(g)``, ``dv = op(g) dy``,
      dy laid out as y, dg and dv as g and v.
    """

    __slots__ = ("bits", "forward", "grad")

    def __init__(self, lib, op: str, bits: bool):
        index, code = _state["gate_index"][op], BFLOAT16_CODE if bits else TYPE_CODE[np.dtype(np.float32)]
        self.bits = bits
        self.forward = lambda *args: lib.gated(index, code, *args)
        self.grad = lambda *args: lib.gated_grad(index, code, *args)


def gate_kernel(op: str, dtype):
    """The compiled gated rows of the gate op ``op`` in ``dtype`` (float32 or bfloat16), or None."""
    cache = _cache("gate")
    dtype = np.dtype(dtype)
    bits = is_bfloat16(dtype)
    key = (op, dtype)
    if key not in cache:
        lib = _load()
        ok = lib is not None and (bits or dtype == np.float32) and op in _state["gate_index"]
        cache[key] = Gate(lib, op, bits) if ok else None
    return cache[key]


def fast_unary(op: str, dtype):
    """``(run, index, type)`` such that ``run(index, type, x, y, start, stop, p0, p1, p2, p3[,
    threads])`` is the NumPy path's kernel for ``op`` in ``dtype`` with no wrapper object on the
    call, or False."""
    cache = _cache("fast_unary")
    entry = cache.get((op, dtype))
    if entry is None:
        kernel = elementwise_kernel(op, dtype)
        entry = cache[(op, dtype)] = False if kernel is None else (kernel._run, kernel._index, kernel._type)
    return entry


def fast_grad(op: str, dtype):
    """``(run, index, type)`` such that ``run(index, type, dy, x, dx, start, stop, p0, p1, p2, p3[,
    threads])`` is ``grad_kernel(op, dtype)``'s backward with no wrapper object on the call, or
    False."""
    cache = _cache("fast_grad")
    entry = cache.get((op, dtype))
    if entry is None:
        kernel = grad_kernel(op, dtype)
        entry = cache[(op, dtype)] = False if kernel is None else (kernel._lib.grad, kernel._index, kernel._type)
    return entry


def fast_softmax_rows(dtype):
    """``softmax_rows_kernel(dtype)``, cached, or False."""
    cache = _cache("fast_softmax_rows")
    entry = cache.get(dtype)
    if entry is None:
        entry = cache[dtype] = softmax_rows_kernel(dtype) or False
    return entry


def elementwise_kernel(op: str, dtype):
    """The compiled kernel the NumPy path uses for ``op`` in ``dtype``, or None where its ufunc
    formula is the better choice (float64 ops in need of exp, log or tanh) or the only one."""
    if np.dtype(dtype) == np.float64 and op not in FLOAT64_OPS:
        return None
    return compiled_elementwise(op, dtype)


def bfloat16_conversions():
    """``(widen, narrow)``: ``widen(src_bits, dst, start, stop)`` writes ``bfloat16`` bits (a
    uint16 view) into float32, ``narrow(src, dst_bits, start, stop)`` rounds float32 to bfloat16
    bits (to nearest even); or None without the compiled module."""
    lib = _load()
    if lib is None:
        return None
    run = lib.bfloat16
    return (
        lambda src, dst, start, stop: run(0, src, dst, start, stop),
        lambda src, dst, start, stop: run(1, src, dst, start, stop),
    )


def compiled_softmax_rows(dtype):
    """``f(x, y, row0, row1, length, log, threads=1)``: softmax (or log-softmax) of rows [row0, row1)
    of a contiguous (rows, length) array in ``dtype`` (float32 or float64), the rows shared among
    ``threads`` of the module's threads; or None."""
    dtype = np.dtype(dtype)
    lib = _load()
    if lib is None or dtype not in TYPE_CODE:
        return None
    run, code = lib.softmax_rows, TYPE_CODE[dtype]
    return lambda x, y, row0, row1, length, log, threads=1: run(code, x, y, row0, row1, length, log, threads)


def bfloat16_softmax_rows_kernel():
    """``f(x_bits, y_bits, row0, row1, length, log)``: softmax (or log-softmax) of rows [row0, row1)
    of contiguous (rows, length) bfloat16 arrays (uint16 views of their bits; ``y`` not ``x``),
    each row widened into a float32 row in cache, the float32 row kernel, rounded once; or None."""
    lib = _load()
    if lib is None:
        return None
    run = lib.softmax_rows
    return lambda x, y, row0, row1, length, log, threads=1: run(BFLOAT16_CODE, x, y, row0, row1, length, log, threads)


def bfloat16_softmax_grad_rows_kernel():
    """``f(dy_bits, x_bits, dx_bits, row0, row1, length, log)``: ``rows_grad_kernel("softmax")`` on
    contiguous bfloat16 arrays' bits, each row widened in cache and the result rounded once; or
    None."""
    lib = _load()
    if lib is None:
        return None
    run = lib.rows_grad
    return lambda dy, x, dx, row0, row1, length, log=0, threads=1: run(
        0, BFLOAT16_CODE, dy, x, dx, row0, row1, length, log, threads
    )


def softmax_rows_kernel(dtype):
    """The row softmax the NumPy path uses: float32 only (float64 rows are faster on NumPy's SIMD
    exp, see FLOAT64_OPS)."""
    return compiled_softmax_rows(dtype) if np.dtype(dtype) == np.float32 else None


def softmax_columns_kernel(dtype):
    """``f(x, y, length, inner, width, u0, u1, log)``: softmax along the middle axis of a
    contiguous float32 (outer, length, inner) array, work units [u0, u1), or None."""
    lib = _load()
    if lib is None or np.dtype(dtype) != np.float32:
        return None
    run, code = lib.softmax_columns, TYPE_CODE[np.dtype(np.float32)]
    return lambda x, y, length, inner, width, u0, u1, log: run(code, x, y, length, inner, width, u0, u1, log)


def softmax_columns_split_kernel(dtype):
    """``f(x, y, length, inner, log, threads)``: softmax along the middle axis of a contiguous
    float32 (outer, length, inner) array, its rows shared among ``threads`` of the module's
    threads (y is x or does not overlap it), or None."""
    lib = _load()
    if lib is None or np.dtype(dtype) != np.float32:
        return None
    run, code = lib.softmax_columns_split, TYPE_CODE[np.dtype(np.float32)]
    return lambda x, y, length, inner, log, threads: run(code, x, y, length, inner, log, threads)


def sparsemax_rows_kernel(dtype):
    """``f(x, y, row0, row1, length)``: sparsemax of rows [row0, row1) of a contiguous
    (rows, length) array in ``dtype`` (float32 or float64; ``y`` may be ``x``), or None."""
    dtype = np.dtype(dtype)
    lib = _load()
    if lib is None or dtype not in TYPE_CODE:
        return None
    run, code = lib.sparsemax_rows, TYPE_CODE[dtype]
    return lambda x, y, row0, row1, length: run(code, x, y, row0, row1, length)


def grad_kernel(op: str, dtype):
    """The compiled kernel whose ``grad`` / ``grad_bias`` the NumPy path's backward uses for ``op``
    in ``dtype``: float32 and float64 alike (a derivative is several ufunc passes, which the one
    compiled pass beats even on the C library's scalar float64 math), or None."""
    return compiled_elementwise(op, dtype)


def rows_grad_kernel(kind: str, dtype):
    """``f(dy, x, dx, row0, row1, length, log, threads=1)``: the backward of softmax
    (``kind="softmax"``, ``log`` selecting log_softmax) or sparsemax over rows [row0, row1) of
    contiguous (rows, length) arrays in ``dtype``, the forward recomputed per row, the rows shared
    among ``threads`` of the module's threads; or None."""
    dtype = np.dtype(dtype)
    lib = _load()
    if lib is None or dtype not in TYPE_CODE:
        return None
    run, code, which = lib.rows_grad, TYPE_CODE[dtype], {"softmax": 0, "sparsemax": 1}[kind]
    return lambda dy, x, dx, row0, row1, length, log=0, threads=1: run(
        which, code, dy, x, dx, row0, row1, length, log, threads
    )


def columns_grad_kernel(dtype):
    """``f(dy, x, dx, length, inner, width, u0, u1, log)``: the softmax backward along the middle
    axis of contiguous (outer, length, inner) arrays in ``dtype``, work units [u0, u1), or None."""
    dtype = np.dtype(dtype)
    lib = _load()
    if lib is None or dtype not in TYPE_CODE:
        return None
    run, code = lib.columns_grad, TYPE_CODE[dtype]
    return lambda dy, x, dx, length, inner, width, u0, u1, log: run(code, dy, x, dx, length, inner, width, u0, u1, log)


def exported_ops() -> list[str]:
    """The elementwise ops the loaded module exports, in ``ELEMENTWISE_OPS`` order (for the tests)."""
    if _load() is None:
        return []
    return [op for op in ELEMENTWISE_OPS if op in _state["unary_index"]]
