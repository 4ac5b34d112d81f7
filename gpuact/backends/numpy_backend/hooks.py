"""What the core call (``gpuact._core``) asks of a backend besides the ops themselves: ownership, accepting
``x``, ``out`` and the other array arguments, overlap, copies, masks and parameter arrays (see
``gpuact.backends``). The CPU has no streams and no device: most are trivial."""

from __future__ import annotations

import contextlib

import numpy as np

from gpuact.backends import _interop
from gpuact.backends.numpy_backend.dtypes import compute_dtype, result_dtype_of


def unavailable_reason():
    return None


def owns(x) -> bool:
    return isinstance(x, np.ndarray)


def accept(x, stream):
    """``(x, None, None)``: the CPU has no streams (``stream`` is ignored) and no foreign kinds."""
    return np.asarray(x), None, None


def scope(x, stream):
    return contextlib.nullcontext()


def accept_out(out, x, foreign: bool):
    """An ndarray (or subclass) written as it is; other libraries' host arrays arrive here as
    ndarray views (``gpuact._wrappers.foreign``)."""
    if isinstance(out, np.ndarray):
        return out
    raise TypeError(f"out must be a numpy.ndarray like the input; got {type(out).__name__}")


def accept_operand(a, x, foreign: bool, name: str):
    """An array argument beside x (dy, bias): host data like x (a device array is refused).
    Sequences and ndarray subclasses are taken as the plain ndarray they hold."""
    if _interop.is_cuda_array(a) or type(a).__module__.split(".")[0] in ("cupy", "numba"):
        raise TypeError(f"{name} must be a host array like x; got {type(a).__module__}.{type(a).__name__}")
    a = np.asarray(a)
    result_dtype_of(a.dtype)
    return a


def overlap(a, b) -> int:
    """0: no shared memory, 1: the same view, 2: partly shared (``gpuact._contract.checks.OVERLAP_*``)."""
    if not np.may_share_memory(a, b):
        return 0
    same = (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )
    return 1 if same else 2


def copy(a, stream=None):
    return np.array(a, copy=True)


def as_mask(mask, shape, stream=None):
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        mask = mask > 0.5
    return np.broadcast_to(mask, shape)


def as_param_array(alpha, shape, dtype, stream=None):
    return np.broadcast_to(np.asarray(alpha, dtype=compute_dtype(dtype)), shape)
