"""The elementwise drivers: ``elementwise`` (with its fused bias) and ``elementwise_grad``, each
the compiled kernel where ``_native`` has one for the op and dtype, else the ufunc formulas of
``formulas``, on contiguous arrays in place or on any other layout block by block."""

from __future__ import annotations

import numpy as np

from gpuact._contract.checks import is_bfloat16
from gpuact.backends import _native
from gpuact.backends.numpy_backend import pool
from gpuact.backends.numpy_backend.blocks import buffered_map, scratch_buffer
from gpuact.backends.numpy_backend.dtypes import compute_dtype, contiguous_in
from gpuact.backends.numpy_backend.formulas import GRADS, KERNELS, SINGLE_PASS, is_plain_relu

# what pads an op's parameters to the compiled kernels' four, by how many it has
_NO_PARAMS = ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0), (0.0,), ())


def elementwise(op, x, params, out, dtype, stream=None, bias=None):
    """``out = op(x)`` (``op(x + bias)`` with a bias): the compiled kernel where there is one, else
    the ufunc formula.

    Contiguous arrays of the compute dtype run in place in one pass. Anything else (strides,
    broadcast zero strides, float16 and integer inputs, a float16 or non-contiguous ``out``) is
    read and written through ``numpy.nditer``'s buffers, in blocks: no copy of the whole input or
    output is ever made, so peak memory stays at the output plus a few blocks.
    """
    if bias is not None:
        return _elementwise_bias(op, x, params, out, dtype, bias)
    n = x.size
    if (
        n <= pool.SPLIT_PIECE
        and x.dtype is dtype
        and x.flags.c_contiguous
        and (out is None or (out.dtype is dtype and out.flags.c_contiguous))
    ):
        # The common call, kept to a few hundred nanoseconds on top of the kernel itself: one pass,
        # shared among the module's threads from the op's threshold (run_split's choice, in one
        # piece). The general path below costs some 5 us more a call (2-core EPYC).
        entry = _native.fast_unary(op, dtype)
        if entry:
            run, index, code = entry
            y = np.empty_like(x) if out is None else out
            threads = pool.split_threads(n, pool.compiled_parallel_min(op))
            run(index, code, x, y, 0, n, *params, *_NO_PARAMS[len(params)], threads)
            return y
    compute = compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if n == 0:
        return y
    if _bfloat16_in_one_pass(op, params, (x,), y, lambda kernel, *a: kernel(*a)):
        return y
    native = _native.elementwise_kernel(op, compute)
    direct = y.dtype == compute and y.flags.c_contiguous
    if x.dtype == compute and x.flags.c_contiguous and direct:
        xf, yf = x.reshape(-1), y.reshape(-1)
    elif n <= pool.BLOCK:
        # small: a private contiguous copy is cheaper than setting up the buffered iterator
        xf = np.array(x, dtype=compute, order="C").reshape(-1)
        yf = y.reshape(-1) if direct else np.empty(n, compute)
    else:
        _buffered_elementwise(op, native, x, y, params, compute)
        return y
    if native is not None:
        _native_elementwise(native, xf, yf, tuple(params) + _NO_PARAMS[len(params)], pool.compiled_parallel_min(op))
    else:
        _ufunc_elementwise(op, xf, yf, params, compute)
    if yf.base is not y and yf is not y:
        with np.errstate(all="ignore"):  # float16 results beyond its range are inf, as intended
            np.copyto(y, yf.reshape(y.shape), casting="unsafe")
    return y


def _bfloat16_in_one_pass(op, params, inputs, y, call) -> bool:
    """Whether ``y = op(*inputs)`` (``call(kernel, *flat bits, start, stop, *p4)``) ran on the
    compiled bfloat16 kernels: ``y`` and every input contiguous bfloat16 arrays of one shape, whose
    bits are read and written directly, every element computed in float32 and rounded once."""
    if not is_bfloat16(y.dtype) or not y.flags.c_contiguous:
        return False
    if any(not (is_bfloat16(a.dtype) and a.flags.c_contiguous and a.shape == y.shape) for a in inputs):
        return False
    kernel = _native.bfloat16_kernel(op)
    if kernel is None:
        return False
    bits = [a.reshape(-1).view(np.uint16) for a in (*inputs, y)]
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    minimum = pool.compiled_parallel_min(op)
    pool.run_split(y.size, lambda start, end, threads: call(kernel, *bits, start, end, *p4, threads), minimum)
    return True


def _in_compute_dtype(params, compute):
    """The parameters rounded to the compute dtype, as the compiled kernels receive them: a slope
    of 1e-50 is 0 in float32 on both paths, and a float32 formula never sees a float64 scalar."""
    return tuple(compute.type(p) for p in params)


def _native_elementwise(kernel, xf, yf, params, minimum):
    """``yf = op(xf)`` by a compiled kernel (``params`` padded to 4), on every core from
    ``minimum`` elements; ``xf`` is ``yf`` or does not overlap it."""
    pool.run_split(xf.size, lambda start, end, threads: kernel(xf, yf, start, end, *params, threads), minimum)


def _ufunc_elementwise(op, xf, yf, params, compute):
    """``yf = op(xf)`` by the ufunc formula on flat contiguous arrays of the compute dtype, in
    blocks that stay in cache, on every core for large arrays."""
    kernel = KERNELS[op]
    params = _in_compute_dtype(params, compute)
    n = xf.size
    single_pass = op in SINGLE_PASS or (op == "relu" and is_plain_relu(*params))
    # the formulas write y before they are done reading x: an in-place block is staged
    stage_in = np.may_share_memory(xf, yf)
    if n <= pool.BLOCK and not stage_in:
        # small (the common inference call): one block, no closures, no threads
        with np.errstate(all="ignore"):
            kernel(xf, yf, np.empty(n, compute), np.empty(n, compute), *params)
        return
    block = n if single_pass and not stage_in else pool.BLOCK

    def run(lo, hi, stop):
        size = min(block, hi - lo)
        t, u = np.empty(size, compute), np.empty(size, compute)
        xin = np.empty(size, compute) if stage_in else None
        with np.errstate(all="ignore"):  # inf and NaN results are intended, never warned about
            for start, end in pool.pieces(lo, hi, stop, block):
                m = end - start
                xb = xf[start:end]
                if stage_in:
                    np.copyto(xin[:m], xb)
                    xb = xin[:m]
                kernel(xb, yf[start:end], t[:m], u[:m], *params)

    # A single memory-bound pass gains nothing from a second thread: the two threads' first
    # touches of fresh pages contend (measured 1.5-2x slower).
    pool.run_parallel(run, [(0, n)] if single_pass else pool.block_ranges(n))


def _buffered_elementwise(op, native, x, y, params, compute):
    """``y = op(x)`` for any layouts and dtypes, through ``buffered_map``'s contiguous blocks."""
    kernel = KERNELS[op]
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    params = _in_compute_dtype(params, compute)

    def apply(xb, yb, scratch):
        m = xb.size
        if native is not None:
            native(xb, yb, 0, m, *p4)
            return
        if np.may_share_memory(xb, yb):  # the formulas write y before they are done reading x
            xin = scratch_buffer(scratch, "x", m, compute)
            np.copyto(xin, xb)
            xb = xin
        kernel(xb, yb, scratch_buffer(scratch, "t", m, compute), scratch_buffer(scratch, "u", m, compute), *params)

    buffered_map(apply, [x], y, compute)


def _trailing_bias(b, shape, compute):
    """``b`` flat, when it is a contiguous array of the compute dtype that broadcasts along the
    trailing axes of ``shape`` (the flat element i of x takes ``b.flat[i % b.size]``), else None."""
    if not contiguous_in(b, compute) or b.size == 0:
        return None
    core = b.shape
    while core and core[0] == 1:
        core = core[1:]
    if len(core) > len(shape) or tuple(shape[len(shape) - len(core) :]) != tuple(core):
        return None
    return b.reshape(-1)


def _add_bias(xb, bb, scratch, compute):
    """The block x + bias, in scratch (a block, in cache: never a temporary of x's size)."""
    s = scratch_buffer(scratch, "biased", xb.size, compute)
    np.add(xb, bb, out=s)
    return s


def _elementwise_bias(op, x, params, out, dtype, bias):
    """``op(x + bias)``: one compiled pass reading x and the bias along x's trailing axes when the
    arrays allow it, else block by block with the add in a cache-sized block."""
    compute = compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if y.size == 0:
        return y
    native = _native.elementwise_kernel(op, compute)
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    flat_bias = _trailing_bias(bias, x.shape, compute)
    if native is not None and flat_bias is not None and contiguous_in(x, compute) and contiguous_in(y, compute):
        xf, yf = x.reshape(-1), y.reshape(-1)
        pool.run_split(
            xf.size,
            lambda start, end, threads: native.bias(xf, flat_bias, yf, start, end, *p4, threads),
            pool.compiled_parallel_min(op),
        )
        return y
    kernel, cparams = KERNELS[op], _in_compute_dtype(params, compute)

    def apply(xb, bb, yb, scratch):
        xs = _add_bias(xb, bb, scratch, compute)
        m = xs.size
        if native is not None:
            native(xs, yb, 0, m, *p4)
        else:
            kernel(xs, yb, scratch_buffer(scratch, "t", m, compute), scratch_buffer(scratch, "u", m, compute), *cparams)

    buffered_map(apply, [x, bias], y, compute)
    return y


def elementwise_grad(op, dy, x, params, out, dtype, stream=None, bias=None):
    """``dx = dy * op'(x)`` (``op'(x + bias)`` with a bias) in one pass: the compiled kernel reads
    dy and x (and the bias) once and writes dx, for float32 and float64; float16, integer and
    strided operands go block by block; without the compiled module, the ufunc derivative."""
    n = x.size
    if (
        bias is None
        and n <= pool.SPLIT_PIECE
        and x.dtype is dtype
        and dy.dtype is dtype
        and x.flags.c_contiguous
        and dy.flags.c_contiguous
        and (out is None or (out.dtype is dtype and out.flags.c_contiguous))
    ):
        # the common call: no views, no ranges, no wrapper (as in elementwise)
        entry = _native.fast_grad(op, dtype)
        if entry:
            run, index, code = entry
            dx = np.empty_like(x) if out is None else out
            threads = pool.split_threads(n, pool.compiled_parallel_min(op))
            run(index, code, dy, x, dx, 0, n, *params, *_NO_PARAMS[len(params)], threads)
            return dx
    compute = compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    if bias is None and _bfloat16_in_one_pass(op, params, (dy, x), dx, lambda kernel, *a: kernel.grad(*a)):
        return dx
    kernel = _native.grad_kernel(op, compute)
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    flat_bias = None if bias is None else _trailing_bias(bias, x.shape, compute)
    if (
        kernel is not None
        and contiguous_in(dy, compute)
        and contiguous_in(x, compute)
        and contiguous_in(dx, compute)
        and (bias is None or flat_bias is not None)
    ):
        dyf, xf, dxf = dy.reshape(-1), x.reshape(-1), dx.reshape(-1)
        minimum = pool.compiled_parallel_min(op)
        if bias is None:
            pool.run_split(
                xf.size, lambda start, end, threads: kernel.grad(dyf, xf, dxf, start, end, *p4, threads), minimum
            )
        else:
            pool.run_split(
                xf.size,
                lambda start, end, threads: kernel.grad_bias(dyf, xf, flat_bias, dxf, start, end, *p4, threads),
                minimum,
            )
        return dx
    derivative, cparams = GRADS[op], _in_compute_dtype(params, compute)

    def apply(*blocks):
        if bias is None:
            dyb, xb, dxb, scratch = blocks
        else:
            dyb, xb, bb, dxb, scratch = blocks
            xb = _add_bias(xb, bb, scratch, compute)
        m = xb.size
        if kernel is not None:
            kernel.grad(dyb, xb, dxb, 0, m, *p4)
            return
        g = scratch_buffer(scratch, "g", m, compute)
        derivative(xb, g, scratch_buffer(scratch, "t", m, compute), scratch_buffer(scratch, "u", m, compute), *cparams)
        np.multiply(dyb, g, out=dxb)

    buffered_map(apply, [dy, x] if bias is None else [dy, x, bias], dx, compute)
    return dx
