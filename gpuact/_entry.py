"""The entry points: one function per call family, which the public modules call.

Each takes the public arguments, tries its fast path (a plain NumPy or CuPy array in the common
call: nothing to detect, convert or check but the dtype), and otherwise hands a ``Request`` down
one chain built once here::

    Dask wrapper → masked-array wrapper → foreign-array wrapper → gpuact._core.run → backend

Each wrapper (``gpuact._wrappers``) unwraps its kind of input and calls the next, or passes the
request through untouched; so a call passes each layer once, going down, and never returns into
a module it has left until its result comes back.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

from gpuact import _core
from gpuact._contract import calls
from gpuact._contract.calls import Request
from gpuact._contract.checks import FLOAT_DTYPES, result_dtype
from gpuact._wrappers import dask, foreign, masked
from gpuact.backends import load_backend, loaded

# every call that leaves its fast path goes down this chain
run = dask.wrap(masked.wrap(foreign.wrap(_core.run)))

_numpy_backend: ModuleType | None = None


def _numpy() -> ModuleType:
    """The NumPy backend module, for the fast paths (loaded once)."""
    global _numpy_backend
    if _numpy_backend is None:
        _numpy_backend = load_backend("numpy")
    return _numpy_backend


def numpy_elementwise(op: str, x: np.ndarray, params: tuple = ()):
    """The common CPU call, a plain ndarray with no ``out``, ``backend`` or ``stream``: nothing to
    detect or check but the dtype (the public functions call this directly)."""
    dtype = x.dtype
    if dtype not in FLOAT_DTYPES:
        dtype = result_dtype(dtype)
    return _numpy().elementwise(op, x, params, None, dtype)


def _plain_out(out, dtype, shape, *reads) -> bool:
    """``out`` is a writeable plain ndarray of the result's dtype and shape that each array in
    ``reads`` either is or does not touch: the fast paths take it as it is (anything else goes
    down the chain, whose core says what is wrong or copies what overlaps)."""
    if type(out) is not np.ndarray or out.dtype is not dtype or out.shape != shape or not out.flags.writeable:
        return False
    for a in reads:
        if a is not out and np.may_share_memory(a, out):
            return False
    return True


def elementwise(op: str, x, params: tuple = (), *, bias=None, out=None, backend=None, stream=None):
    if backend is None and bias is None:
        kind = type(x)
        if kind is np.ndarray:
            if out is None:
                return numpy_elementwise(op, x, params)
            if x.dtype in FLOAT_DTYPES and _plain_out(out, x.dtype, x.shape, x):
                return _numpy().elementwise(op, x, params, out, x.dtype)
        elif out is None and stream is None and "cupy" in loaded:
            cupy = sys.modules.get("cupy")
            if cupy is not None and kind is cupy.ndarray:
                # the common GPU call: straight to the vector kernel when x allows (see elementwise_fast)
                y = loaded["cupy"].elementwise_fast(op, x, params)
                if y is not None:
                    return y
    return run(Request(calls.ELEMENTWISE, x, op=op, params=params, bias=bias, out=out, backend=backend, stream=stream))


def elementwise_grad(op: str, dy, x, params: tuple = (), *, bias=None, out=None, backend=None, stream=None):
    """``dx = dy * op'(x + bias)`` (see ``gpuact.backward``)."""
    if (
        backend is None
        and bias is None
        and type(x) is np.ndarray
        and type(dy) is np.ndarray
        and x.dtype is dy.dtype
        and x.dtype in FLOAT_DTYPES
        and dy.shape == x.shape
        and (out is None or _plain_out(out, x.dtype, x.shape, x, dy))
    ):
        # the common CPU call: plain ndarrays of one float dtype and shape, nothing to convert
        return _numpy().elementwise_grad(op, dy, x, params, out, x.dtype)
    return run(
        Request(
            calls.ELEMENTWISE_GRAD, x, dy=dy, op=op, params=params, bias=bias, out=out, backend=backend, stream=stream
        )
    )


def softmax(x, axis, *, log: bool, mask=None, bias=None, out=None, backend=None, stream=None):
    if (
        out is None
        and backend is None
        and mask is None
        and bias is None
        and type(x) is np.ndarray
        and type(axis) is int
        and axis == -1
        and x.ndim
    ):
        # the common CPU call (a plain ndarray, the last axis): nothing to detect or convert
        return _numpy().softmax(x, (x.ndim - 1,), None, result_dtype(x.dtype), log=log)
    return run(
        Request(calls.SOFTMAX, x, axis=axis, log=log, mask=mask, bias=bias, out=out, backend=backend, stream=stream)
    )


def softmax_grad(dy, x, axis, *, log: bool, mask=None, bias=None, out=None, backend=None, stream=None):
    """softmax: ``dx = y (dy - sum(dy y))``; log_softmax: ``dx = dy - softmax(x) sum(dy)``."""
    return run(
        Request(
            calls.SOFTMAX_GRAD,
            x,
            dy=dy,
            axis=axis,
            log=log,
            mask=mask,
            bias=bias,
            out=out,
            backend=backend,
            stream=stream,
        )
    )


def glu(x, axis, *, gate="glu", out=None, backend=None, stream=None):
    """A gated unit (``gate``, a name of ``gpuact._contract.ops.GATES``) of ``x``'s halves."""
    return run(Request(calls.GLU, x, op=gate, axis=axis, out=out, backend=backend, stream=stream))


def glu_grad(dy, x, axis, *, gate="glu", out=None, backend=None, stream=None):
    """``dx`` (x's shape) from ``dy`` (the output's shape): for ``y = op(g) * v`` with ``g`` the gate
    half, ``dg = dy v op'(g)`` and ``dv = dy op(g)``."""
    return run(Request(calls.GLU_GRAD, x, dy=dy, op=gate, axis=axis, out=out, backend=backend, stream=stream))


def gated(a, b, *, gate, out=None, backend=None, stream=None):
    """A gated unit's two-tensor form: ``op(a) * b`` for the gate's op, ``a`` and ``b`` of one
    shape and dtype."""
    return run(Request(calls.GATED, a, b=b, op=gate, out=out, backend=backend, stream=stream))


def gated_grad(dy, a, b, *, gate, out=None, backend=None, stream=None):
    """The two-tensor form's backward: the pair ``(dy b op'(a), dy op(a))``."""
    return run(Request(calls.GATED_GRAD, a, dy=dy, b=b, op=gate, out=out, backend=backend, stream=stream))


def sparsemax(x, axis, *, out=None, backend=None, stream=None):
    return run(Request(calls.SPARSEMAX, x, axis=axis, out=out, backend=backend, stream=stream))


def sparsemax_grad(dy, x, axis, *, out=None, backend=None, stream=None):
    """``dx = s (dy - mean of dy over the support)``, ``s`` the support indicator."""
    return run(Request(calls.SPARSEMAX_GRAD, x, dy=dy, axis=axis, out=out, backend=backend, stream=stream))


def prelu(x, alpha, *, out=None, backend=None, stream=None):
    return run(Request(calls.PRELU, x, alpha=alpha, out=out, backend=backend, stream=stream))


def prelu_grad(dy, x, alpha, *, out=None, backend=None, stream=None):
    return run(Request(calls.PRELU_GRAD, x, dy=dy, alpha=alpha, out=out, backend=backend, stream=stream))
