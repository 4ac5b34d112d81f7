"""The ops whose output is not simply one value per input element by a formula of that element:
the gated units (halves of an axis, or two arrays), sparsemax (a projection along an axis) and
prelu (a parameter array), forward and backward, block by block; the gated units on C-contiguous
float32 or bfloat16 operands by the compiled module's rows instead (one pass, no block copies)."""

from __future__ import annotations

import functools
import math

import numpy as np

from gpuact._contract.ops import GATES
from gpuact.backends import _composite, _native
from gpuact.backends.numpy_backend import pool
from gpuact.backends.numpy_backend.blocks import buffered_map, gathered_rows, scratch_buffer
from gpuact.backends.numpy_backend.dtypes import compute_dtype
from gpuact.backends.numpy_backend.formulas import GRADS, KERNELS, keep_nan


def _gate_halves(a, axis, gate):
    """(the gate half, the other) of ``a`` along ``axis``, as views."""
    half = a.shape[axis] // 2
    halves = (a[(slice(None),) * axis + (slice(0, half),)], a[(slice(None),) * axis + (slice(half, 2 * half),)])
    return halves[gate.gate_half], halves[1 - gate.gate_half]


def _half_shape(shape, axis):
    return tuple(shape[:axis]) + (shape[axis] // 2,) + tuple(shape[axis + 1 :])


def _flat(a, bits: bool):
    """A C-contiguous array as the flat buffer the compiled rows take (bfloat16: its bits)."""
    flat = a.reshape(-1)
    return flat.view(np.uint16) if bits else flat


def _compiled_kernel(unit, dtype, arrays):
    """The compiled gated rows for ``unit`` when every array is C-contiguous of ``dtype`` (float32
    or bfloat16), else None."""
    if any(a.dtype != dtype or not a.flags.c_contiguous for a in arrays):
        return None
    return _native.gate_kernel(unit.op, dtype)


def _p4(unit):
    return unit.params + (0.0,) * (4 - len(unit.params))


def _compiled_halves(unit, x, axis, result, dtype, dy) -> bool:
    """The halves form (``dy`` None: the forward into ``result``; else the backward into ``result``,
    x's shape) by the compiled rows: a C-contiguous x split along ``axis`` is ``outer`` rows, each a
    gate half and a value half of ``half`` elements. False where it does not apply."""
    kernel = _compiled_kernel(unit, dtype, (x, result))
    if kernel is None or (dy is not None and dy.dtype != dtype):
        return False
    outer = math.prod(x.shape[:axis])
    half = x.shape[axis] // 2 * math.prod(x.shape[axis + 1 :])
    g_off, v_off = (0, half) if unit.gate_half == 0 else (half, 0)
    xf, rf = _flat(x, kernel.bits), _flat(result, kernel.bits)
    if dy is None:
        call = functools.partial(kernel.forward, xf, xf, rf, g_off, v_off, 0, 2 * half, half)
    else:
        # dy's rows may lie at any stride (a slice of a wider array): read in place from its buffer
        dy_rows = _rows_in_place(dy, outer, half, kernel.bits)
        if dy_rows is None:
            return False
        dyf, dy_off, dy_stride = dy_rows
        call = functools.partial(kernel.grad, dyf, xf, xf, rf, rf, g_off, v_off, dy_off, 2 * half, dy_stride)
    p4 = _p4(unit)
    pool.run_split(
        outer,
        lambda row0, row1, threads: call(row0, row1, half, *p4, threads),
        pool.compiled_parallel_min(unit.op),
        item=max(half, 1),
    )
    return True


def _rows_in_place(a, rows, length, bits: bool):
    """``(flat buffer, offset, row stride)`` (in elements) through which ``a`` reads as ``rows`` rows
    of ``length`` contiguous elements at a uniform stride: its own memory when C-contiguous, else
    the C-contiguous array it is a view of (``a[..., :half]`` of a wider one, say). None otherwise."""
    if a.flags.c_contiguous:
        return _flat(a, bits), 0, length
    view = a.view()
    try:
        view.shape = (rows, length)  # refused where that would need a copy
    except AttributeError:
        return None
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    size = a.itemsize
    if (
        view.strides[1] != size
        or view.strides[0] < 0
        or view.strides[0] % size
        or root.itemsize != size
        or not root.flags.c_contiguous
    ):
        return None
    start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if start < 0 or start % size:
        return None
    flat = root.reshape(-1).view(a.dtype)
    return _flat(flat, bits), start // size, view.strides[0] // size


def _compiled_pair(unit, inputs, outputs, dtype, dy) -> bool:
    """The two-tensor form (``inputs`` ``(a, b)`` into ``(y,)``, or ``(dy, a, b)`` into ``(da,
    db)``) by the compiled rows, as one row cut into pieces among the threads. False where it does
    not apply."""
    kernel = _compiled_kernel(unit, dtype, (*inputs, *outputs))
    if kernel is None:
        return False
    flats = [_flat(a, kernel.bits) for a in (*inputs, *outputs)]
    run = kernel.forward if dy is None else kernel.grad
    p4 = _p4(unit)
    pool.run_split(
        flats[0].size,
        lambda start, end, threads: run(*flats, start, start, start, 0, 0, 0, 1, end - start, *p4, threads),
        pool.compiled_parallel_min(unit.op),
    )
    return True


def _gate_activation(unit, compute):
    """``activate(g, s, scratch)``: s = op(g) for the gate's op, by its compiled kernel (looked up
    once here, not per block) or else its ufunc formula."""
    kernel = _native.elementwise_kernel(unit.op, compute)
    if kernel is not None:
        return lambda g, s, scratch: kernel(g, s, 0, g.size, *unit.params)
    formula = KERNELS[unit.op]

    def activate(g, s, scratch):
        m = g.size
        formula(g, s, scratch_buffer(scratch, "t", m, compute), scratch_buffer(scratch, "u", m, compute), *unit.params)

    return activate


def glu(x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit (``gate``, ``gpuact._contract.ops.GATES``): ``op(g) * v`` for the gate half
    ``g`` of ``x`` along ``axis`` and the other ``v`` (glu: ``a * sigmoid(b)``), views of ``x``
    read block by block, no copy of either half."""
    unit = GATES[gate]
    y = np.empty(_half_shape(x.shape, axis), dtype) if out is None else out
    if y.size and _compiled_halves(unit, x, axis, y, dtype, None):
        return y
    g, v = _gate_halves(x, axis, unit)
    return _gated_into(unit, g, v, y, dtype)


def gated(x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form: ``op(x) * b`` for the gate's op, ``x`` and ``b`` of one shape."""
    unit = GATES[gate]
    y = np.empty(x.shape, dtype) if out is None else out
    if y.size and _compiled_pair(unit, (x, b), (y,), dtype, None):
        return y
    return _gated_into(unit, x, b, y, dtype)


def _gated_into(unit, g, v, y, dtype):
    """``y = op(g) * v`` block by block (any layouts and dtypes)."""
    compute = compute_dtype(dtype)
    if y.size == 0:
        return y
    activate = _gate_activation(unit, compute)

    def gated_block(gb, vb, yb, scratch):
        s = scratch_buffer(scratch, "s", yb.size, compute)
        activate(gb, s, scratch)
        np.multiply(vb, s, out=yb)

    buffered_map(gated_block, [g, v], y, compute)
    return y


def glu_grad(dy, x, axis, out, dtype, stream=None, gate="glu"):
    """A gated unit's backward, both halves in one pass: for ``y = op(g) * v``, ``dg = dy v op'(g)``
    (the op's derivative kernel on ``dy v``) and ``dv = dy op(g)``."""
    unit = GATES[gate]
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size and not _compiled_halves(unit, x, axis, dx, dtype, dy):
        g, v = _gate_halves(x, axis, unit)
        dg, dv = _gate_halves(dx, axis, unit)
        _gated_grad_into(unit, dy, g, v, dg, dv, dtype)
    return dx


def gated_grad(dy, x, b, out, dtype, stream=None, gate="swiglu"):
    """The two-tensor form's backward: ``(da, db) = (dy b op'(a), dy op(a))`` in one pass."""
    da, db = (np.empty(x.shape, dtype), np.empty(x.shape, dtype)) if out is None else out
    if da.size and not _compiled_pair(GATES[gate], (dy, x, b), (da, db), dtype, dy):
        _gated_grad_into(GATES[gate], dy, x, b, da, db, dtype)
    return da, db


def _gated_grad_into(unit, dy, g, v, dg, dv, dtype):
    compute = compute_dtype(dtype)
    grad = _native.grad_kernel(unit.op, compute)
    params = unit.params + (0.0,) * (4 - len(unit.params))
    activate = _gate_activation(unit, compute)

    def gated_grad_block(gb, vb, dyb, dgb, dvb, scratch):
        m = dyb.size
        s = scratch_buffer(scratch, "s", m, compute)
        dyv = scratch_buffer(scratch, "dyv", m, compute)
        np.multiply(dyb, vb, out=dyv)
        if grad is not None:
            grad.grad(dyv, gb, dgb, 0, m, *params)
        else:
            t, u = scratch_buffer(scratch, "t", m, compute), scratch_buffer(scratch, "u", m, compute)
            GRADS[unit.op](gb, s, t, u, *unit.params)
            np.multiply(dyv, s, out=dgb)
        activate(gb, s, scratch)
        np.multiply(s, dyb, out=dvb)

    buffered_map(gated_grad_block, [g, v, dy], [dg, dv], compute)


def sparsemax(x, axis, out, dtype, stream=None):
    """Sparsemax along ``axis``, slices gathered in chunks (``gathered_rows``): the compiled row
    kernel (bisection and Michelot steps on tau, O(length) a pass, float32 and float64) or, without
    it, the sort-based NumPy composition on each chunk."""
    compute = compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if x.size == 0:
        return y
    kernel = _native.sparsemax_rows_kernel(compute)

    def rows_fn(src, res, keep):
        if kernel is not None:
            kernel(src, res, 0, src.shape[0], src.shape[1])
        else:
            _composite.sparsemax_into(np, src, 1, res, compute)

    gathered_rows(x, (axis,), y, compute, rows_fn)
    return y


def sparsemax_grad(dy, x, axis, out, dtype, stream=None):
    """The sparsemax backward along ``axis``: dx = s (dy - mean of dy over the support), the support
    s recomputed per slice (gathered in chunks)."""
    compute = compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    kernel = _native.rows_grad_kernel("sparsemax", compute)

    def rows_fn(src, res, keep, dyc):
        if kernel is not None:
            kernel(dyc, src, res, 0, src.shape[0], src.shape[1])
            return
        _composite.sparsemax_into(np, src, 1, res, compute)
        support = res > 0
        count = np.maximum(support.sum(axis=1, keepdims=True), 1)
        mean = np.add.reduce(np.where(support, dyc, 0.0), axis=1, keepdims=True, dtype=np.float64) / count
        nan = np.isnan(res).any(axis=1, keepdims=True)
        np.subtract(dyc, mean.astype(compute), out=res, where=support)
        np.copyto(res, 0.0, where=~support)
        np.copyto(res, np.nan, where=nan)

    gathered_rows(x, (axis,), dx, compute, rows_fn, extra=(dy,))
    return dx


def prelu(x, alpha, out, dtype, stream=None):
    """``max(x, 0) + alpha * min(x, 0)``, block by block: ``alpha`` stays a broadcast view. Where
    ``alpha`` is 0 the second term is 0, also at ``x = -inf`` (the limit, as leaky_relu)."""
    compute = compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if y.size == 0:
        return y

    def leaky(xb, ab, yb, scratch):
        neg = scratch_buffer(scratch, "neg", yb.size, compute)
        np.minimum(xb, 0.0, out=neg)
        np.multiply(neg, ab, out=neg)
        np.copyto(neg, 0.0, where=ab == 0)  # alpha 0 (Keras's initial PReLU) at -inf: 0, not 0 * -inf
        np.maximum(xb, 0.0, out=yb)  # after xb's last read: yb may be xb (in place)
        np.add(yb, neg, out=yb)

    buffered_map(leaky, [x, alpha], y, compute)
    return y


def prelu_grad(dy, x, alpha, out, dtype, stream=None):
    """``dx = dy`` where x > 0, ``dy * alpha`` elsewhere (the left derivative at 0); NaN kept."""
    compute = compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx

    def leaky_grad(dyb, xb, ab, dxb, scratch):
        g = scratch_buffer(scratch, "g", dxb.size, compute)
        np.copyto(g, ab)
        np.copyto(g, 1.0, where=np.greater(xb, 0.0))
        keep_nan(xb, g)
        np.multiply(dyb, g, out=dxb)

    buffered_map(leaky_grad, [dy, x, alpha], dx, compute)
    return dx
