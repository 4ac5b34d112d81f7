"""How the Numba kernels load and store an element: ``load(a, i)`` and ``store(a, i, v)``.

Floating-point data is read and written as it is (float16 widened by the compute type's
conversion, and rounded back on the store). bfloat16 has no Numba array type that gpuact can rely
on (``ml_dtypes.bfloat16`` has none, and numba-cuda's own ``bfloat16`` scalar is not an array
dtype), so a bfloat16 array reaches the kernels as a ``uint16`` view of its bits
(``kernel_dtype``): ``load`` widens the bits to float32 (``bits << 16``, exact) and ``store``
rounds a float32 to the nearest even bfloat16, NaN kept NaN (quieted, sign and payload's top
bits kept). That is the rounding of the CPU module's ``float_to_bf16`` and of CUDA's
``__float2bfloat16_rn``, so every path gives the same bits. gpuact's kernels take no integer
data, so a ``uint16`` array in a kernel is always bfloat16 bits.

In CUDA the choice is made when a kernel is typed (``overload``: one body per array dtype, no
test at run time); under the simulator the same functions run as Python and test the dtype.
"""

from __future__ import annotations

import numpy as np

from gpuact._contract import checks
from gpuact.backends._numba.scalar import SIMULATOR

BITS = np.dtype(np.uint16)  # a bfloat16 array's dtype inside the kernels


def kernel_dtype(dtype) -> np.dtype:
    """The dtype a kernel's signature gives an array of ``dtype``: bfloat16 as its bits."""
    return BITS if checks.is_bfloat16(dtype) else np.dtype(dtype)


def rounded_bits(u):
    """The bfloat16 bits nearest (ties to even) to the float32 whose bits are ``u`` (an unsigned
    32-bit integer): the top half plus a carry from the bottom half; a NaN keeps its top half,
    quieted. One definition for the simulator (Python integers) and CUDA (a device function)."""
    top = u >> 16
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return top | 0x40
    return (u + 0x7FFF + (top & 1)) >> 16


def _widened(h) -> np.float32:
    return np.float32(np.array(int(h) << 16, np.uint32).view(np.float32)[()])


def _rounded(v) -> np.uint16:
    return np.uint16(rounded_bits(int(np.array(np.float32(v), np.float32).view(np.uint32))))


def load(a, i):
    """a[i], widened to float32 where ``a`` holds bfloat16 bits."""
    v = a[i]
    return _widened(v) if a.dtype == BITS else v


def store(a, i, v):
    """a[i] = v, converted to a's dtype: float16 rounds beyond its range to ±inf, bfloat16 bits
    round to nearest even."""
    if a.dtype == BITS:
        a[i] = _rounded(v)
    else:
        a[i] = v


if not SIMULATOR:
    from numba import cuda, types
    from numba.cuda import libdevice
    from numba.cuda.extending import overload

    @overload(load, target="cuda")
    def _load_typed(a, i):
        if a.dtype == types.uint16:

            def widen(a, i):
                return libdevice.int_as_float(np.int32(np.uint32(a[i]) << np.uint32(16)))

            return widen
        return lambda a, i: a[i]

    _rounded_bits = cuda.jit(device=True)(rounded_bits)

    @overload(store, target="cuda")
    def _store_typed(a, i, v):
        if a.dtype == types.uint16:

            def round_to_bits(a, i, v):
                a[i] = np.uint16(_rounded_bits(np.uint32(libdevice.float_as_int(np.float32(v)))))

            return round_to_bits

        def assign(a, i, v):
            a[i] = v

        return assign
