"""Softmax and log-softmax along any axes, forward and backward: rows of the (reduced) axes,
several rows per block, by the route the arrays allow (compiled row or column kernels, row slabs
for long inner rows, or slices gathered into contiguous scratch rows)."""

from __future__ import annotations

import math

import numpy as np

from gpuact._contract.checks import is_bfloat16
from gpuact.backends import _native
from gpuact.backends.numpy_backend import pool
from gpuact.backends.numpy_backend.blocks import gathered_rows
from gpuact.backends.numpy_backend.dtypes import compute_dtype, contiguous_in


def _merged_axis(shape, axes):
    """``(outer, length, inner)`` when ``axes`` are adjacent, so that a C-contiguous array reshapes
    to 3-D for free and is reduced along its middle axis; ``None`` when they are not."""
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return None
    return (math.prod(shape[: axes[0]]), math.prod(shape[axes[0] : axes[-1] + 1]), math.prod(shape[axes[-1] + 1 :]))


def _softmax_block(x, y, log, mask):
    """Softmax along axis 1 of ``x`` into ``y`` (compute dtype; ``y`` never aliases ``x``)."""
    # ufunc.reduce, not np.max / np.sum: their Python wrappers hold the GIL for microseconds a call,
    # which is what kept a second thread from helping.
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.maximum.reduce(x, axis=1, keepdims=True)
    np.subtract(x, m, out=y)
    if log:
        e = np.exp(y)
        s = np.add.reduce(e, axis=1, keepdims=True)
        np.log(s, out=s)
        np.subtract(y, s, out=y)
    else:
        np.exp(y, out=y)
        s = np.add.reduce(y, axis=1, keepdims=True)
        np.divide(1.0, s, out=s)
        np.multiply(y, s, out=y)
    if mask is not None:
        # masked positions are 0, also in a fully masked slice, whose -inf - -inf made NaN
        np.copyto(y, 0.0, where=~mask)


def _softmax_slabs(x3, y3, log, mask3):
    """Softmax along the middle axis of contiguous (outer, length, inner) arrays whose (inner) rows
    are long: every block is a run of whole rows, contiguous in memory. Three passes: the max, then
    exp(x - max) and its sum (accumulated in float64: a float32 sum over 2**25 rows drifts by ~1e-4),
    then the scaling; each pass is cut into blocks of rows shared among the threads."""
    outer, length, inner = x3.shape
    rows_per_block = max(1, pool.BLOCK // inner)
    chunks = [(r, min(r + rows_per_block, length)) for r in range(0, length, rows_per_block)]
    ranges = pool.parallel_ranges(len(chunks), length * inner)
    for o in range(outer):
        x2, y2 = x3[o], y3[o]
        keep = None if mask3 is None else mask3[o]
        partial_max = [None] * len(ranges)
        partial_sum = [None] * len(ranges)

        def reduce_max(k, stop):
            lo, hi = ranges[k]
            m = np.full(inner, -np.inf, x2.dtype)
            for a, b in chunks[lo:hi]:
                pool.check_stop(stop)
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.maximum(m, np.max(block, axis=0), out=m)
            partial_max[k] = m

        def exp_and_sum(k, stop, m):
            lo, hi = ranges[k]
            s = np.zeros(inner, np.float64)
            for a, b in chunks[lo:hi]:
                pool.check_stop(stop)
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.subtract(block, m, out=y2[a:b])
                e = np.exp(y2[a:b]) if log else np.exp(y2[a:b], out=y2[a:b])
                np.add(s, np.sum(e, axis=0, dtype=np.float64), out=s)
            partial_sum[k] = s

        def scale(k, stop, s):
            lo, hi = ranges[k]
            for a, b in chunks[lo:hi]:
                pool.check_stop(stop)
                if log:
                    np.subtract(y2[a:b], s, out=y2[a:b])
                else:
                    np.multiply(y2[a:b], s, out=y2[a:b])
                if keep is not None:
                    np.copyto(y2[a:b], 0.0, where=~keep[a:b])

        pool.each_in_parallel(reduce_max, len(ranges))
        m = np.max(np.stack(partial_max), axis=0)
        pool.each_in_parallel(lambda k, stop: exp_and_sum(k, stop, m), len(ranges))
        s = np.sum(np.stack(partial_sum), axis=0)
        with np.errstate(all="ignore"):
            s = (np.log(s) if log else 1.0 / s).astype(x2.dtype)
        pool.each_in_parallel(lambda k, stop: scale(k, stop, s), len(ranges))


# Columns a work unit of the compiled column softmax takes (the kernel's maximum). Narrower units
# meant to keep a unit's rows in cache measured slower (2**22 float32, axis 0, 2-core EPYC: 16
# columns 4.1-5.5 ms, 64 columns 2.2-3.3 ms, 256 columns 1.7-3.5 ms): a row segment that short,
# at a stride of a whole row, uses its cache lines poorly and maps many rows to the same sets.
_COLUMN_WIDTH = 256


def _native_softmax_rows(kernel, x2, y2, log):
    """Softmax along the last axis of contiguous 2-D arrays: one fused compiled pass a row, the
    rows shared among the module's threads."""
    rows, length = x2.shape
    pool.run_split(
        rows,
        lambda r0, r1, threads: kernel(x2, y2, r0, r1, length, int(log), threads),
        pool.COMPILED_SOFTMAX_PARALLEL_MIN,
        item=length,
        share=rows > 1,
    )


def _native_softmax_columns(kernel, x3, y3, log):
    outer, length, inner = x3.shape
    width = min(_COLUMN_WIDTH, inner)
    units = outer * -(-inner // width)
    step = max(1, pool.PIECE // (length * width))

    def run(lo, hi, stop):
        for start, end in pool.pieces(lo, hi, stop, step):
            kernel(x3, y3, length, inner, width, start, end, int(log))

    pool.run_parallel(run, pool.parallel_ranges(units, x3.size, pool.POOLED_SOFTMAX_PARALLEL_MIN))


# From this many columns (a row of 1 KiB of float32) and this many rows along the axis, the softmax
# along a middle axis shares the rows among the compiled module's threads, each pass streaming
# through whole rows (_native.softmax_columns_split). A unit of 256 columns of the column kernel
# reads and writes row segments a whole row apart, and from 2048 rows (a unit of 2 MiB) it no longer
# stays in the core's L2 between its passes. Measured, float32 (1, L, N) along L, 2-core EPYC, the
# column kernel against the split one: L = 1024, N = 4096: 2.9 against 3.6 ms; L = 2048, N = 2048:
# 4.8 against 3.0 ms; L = 4096, N = 1024: 5.2 against 2.7 ms; L = 32, N = 131072: 2.8 against 4.8 ms.
_SPLIT_MIN_INNER = 256
_SPLIT_MIN_LENGTH = 2048
# ...and shares them from this many values a slab (one outer index), below which a slab is too
# little work to hand out twice (the statistics, then the writes).
_SPLIT_MIN_SLAB = 1 << 16


def _native_softmax_split(kernel, x3, y3, log):
    outer, length, inner = x3.shape
    slab = length * inner
    pool.run_split(
        outer,
        lambda o0, o1, threads: kernel(x3[o0:o1], y3[o0:o1], length, inner, int(log), threads),
        pool.COMPILED_SOFTMAX_PARALLEL_MIN,
        item=slab,
        share=slab >= _SPLIT_MIN_SLAB,
    )


def softmax(x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """Softmax along ``axes``. Three routes, by what the arrays allow:

    * contiguous float32 without a mask, written into a separate contiguous result: the compiled
      row kernel (last axes) or column kernel (any other adjacent axes), in place on the arrays;
      along other axes also into ``out=x`` itself (the long-row split, and the column kernel for
      softmax), so that in place gives the plain call's bits;
      contiguous bfloat16 along the last axes: the compiled row kernel on its bits, each row
      widened in cache and rounded once;
    * contiguous float64 (or no compiled module) with long inner rows: ``_softmax_slabs``;
    * anything else (float16 and integer inputs, views, non-adjacent axes, masks, in place): slices
      gathered a chunk at a time into contiguous scratch rows of the compute dtype, computed there,
      and written back, so memory beyond the result stays at a few chunks (at least one slice).
    """
    n = x.size
    if bias is not None:
        y = np.empty(x.shape, dtype) if out is None else out
        if n:
            _softmax_gathered(x, axes, y, compute_dtype(dtype), log, mask, bias)
        return y
    if (
        out is None
        and mask is None
        and n <= pool.SPLIT_PIECE
        and axes[0] == x.ndim - 1
        and x.dtype is dtype
        and x.flags.c_contiguous
    ):
        # the common call: one compiled pass over the rows, shared among the module's threads
        # from the threshold (as _native_softmax_rows does it, in one piece), nothing else
        entry = _native.fast_softmax_rows(dtype)
        if entry and n:
            y = np.empty_like(x)
            length = x.shape[-1]
            rows = n // length
            threads = pool.split_threads(n, pool.COMPILED_SOFTMAX_PARALLEL_MIN, share=rows > 1)
            entry(x, y, 0, rows, length, int(log), threads)
            return y
    compute = compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if n == 0:
        return y
    merged = _merged_axis(x.shape, axes)
    dense = (
        merged is not None
        and x.dtype == compute
        and y.dtype == compute
        and x.flags.c_contiguous
        and y.flags.c_contiguous
    )
    contiguous = dense and not np.may_share_memory(x, y)
    if (
        merged is not None
        and merged[2] == 1
        and mask is None
        and is_bfloat16(dtype)
        and x.dtype == dtype
        and y.dtype == dtype
        and x.flags.c_contiguous
        and y.flags.c_contiguous
        and not np.may_share_memory(x, y)
        and (kernel := _native.bfloat16_softmax_rows_kernel()) is not None
    ):
        # bfloat16 rows: the compiled kernel widens each row in cache and rounds the result once
        rows2 = (merged[0], merged[1])
        _native_softmax_rows(kernel, x.reshape(rows2).view(np.uint16), y.reshape(rows2).view(np.uint16), log)
        return y
    # out=x exactly: the long-row split reads every value before it writes it, and so does the
    # column kernel for softmax (log_softmax reads x again after writing exp), so those run in place
    # and give the plain call's bits, where the gathered rows would sum in another order
    in_place = (
        dense
        and not contiguous
        and mask is None
        and x.__array_interface__["data"][0] == y.__array_interface__["data"][0]
    )
    if contiguous or in_place:
        outer, length, inner = merged
        x3, y3 = x.reshape(merged), y.reshape(merged)
        if contiguous and mask is None and inner == 1 and (kernel := _native.softmax_rows_kernel(compute)) is not None:
            _native_softmax_rows(kernel, x3[:, :, 0], y3[:, :, 0], log)
            return y
        if (
            mask is None
            and inner >= _SPLIT_MIN_INNER
            and length >= _SPLIT_MIN_LENGTH
            and (kernel := _native.softmax_columns_split_kernel(compute)) is not None
        ):
            _native_softmax_split(kernel, x3, y3, log)
            return y
        if (
            mask is None
            and inner > 1
            and (contiguous or not log)
            and (kernel := _native.softmax_columns_kernel(compute)) is not None
        ):
            _native_softmax_columns(kernel, x3, y3, log)
            return y
        if contiguous and inner > 1 and length * inner > pool.BLOCK:
            mask3 = None if mask is None else np.ascontiguousarray(mask).reshape(merged)
            _softmax_slabs(x3, y3, log, mask3)
            return y
    _softmax_gathered(x, axes, y, compute, log, mask)
    return y


def _softmax_gathered(x, axes, y, compute, log, mask, bias=None):
    """Softmax of the slices along ``axes`` (of ``x + bias``) through ``gathered_rows``: the
    compiled row kernel (float32, no mask) or ``_softmax_block``."""
    rows_kernel = _native.softmax_rows_kernel(compute) if mask is None else None

    def rows_fn(src, res, keep):
        if rows_kernel is not None:
            rows_kernel(src, res, 0, src.shape[0], src.shape[1], int(log))
        else:
            _softmax_block(src, res, log, keep)

    gathered_rows(x, axes, y, compute, rows_fn, mask, add=bias)


def _softmax_grad_block(dy, x, dx, log, keep):
    """The softmax / log_softmax backward along axis 1 of (rows, length) blocks, the forward
    recomputed by ``_softmax_block`` (into dx first)."""
    _softmax_block(x, dx, False, keep)  # y = softmax(x), 0 where masked
    if keep is not None:
        dy = np.where(keep, dy, 0.0)
    if log:
        total = np.add.reduce(dy, axis=1, keepdims=True, dtype=np.float64).astype(dx.dtype)
        np.multiply(dx, total, out=dx)
        np.subtract(dy, dx, out=dx)
    else:
        dot = np.add.reduce(dy * dx, axis=1, keepdims=True, dtype=np.float64).astype(dx.dtype)
        np.multiply(dx, np.subtract(dy, dot), out=dx)
    if keep is not None:
        # a masked position gets no gradient, also in a slice whose dot is NaN (0 * NaN)
        np.copyto(dx, 0.0, where=~keep)


def _contiguous_rows_grad(dy, x, dx, merged, compute, kernel, plain):
    """``(the compiled rows backward, its (dy, x, dx) as (rows, length) arrays)`` when the softmax
    axes are the last ones of C-contiguous dy, x and dx in the compute dtype (or all bfloat16, as
    their bits), with neither mask nor bias (``plain``) and dx sharing memory with neither input;
    else ``(None, None)`` (the gathering path)."""
    if merged is None or merged[2] != 1 or not plain or any(np.may_share_memory(a, dx) for a in (dy, x)):
        return None, None
    length = merged[1]
    if all(is_bfloat16(a.dtype) and a.flags.c_contiguous for a in (dy, x, dx)):
        rows = _native.bfloat16_softmax_grad_rows_kernel()
        return rows, [a.reshape(-1, length).view(np.uint16) for a in (dy, x, dx)]
    if kernel is not None and all(contiguous_in(a, compute) for a in (dy, x, dx)):
        return kernel, [a.reshape(-1, length) for a in (dy, x, dx)]
    return None, None


def softmax_grad(dy, x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """The softmax / log_softmax backward along ``axes``: slices of x (plus the bias) and dy
    gathered in chunks, the forward recomputed per slice, one compiled pass (float32 and float64,
    no mask) or the ufunc block."""
    compute = compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    merged = _merged_axis(x.shape, axes)
    if (
        merged is not None
        and merged[2] > 1
        and mask is None
        and bias is None
        and all(contiguous_in(a, compute) for a in (dy, x, dx))
        and (columns := _native.columns_grad_kernel(compute)) is not None
    ):
        # along a middle axis of contiguous arrays: the column kernel, no transposing gather
        outer, length, inner = merged
        width = min(_COLUMN_WIDTH, inner)
        units = outer * -(-inner // width)
        step = max(1, pool.PIECE // (length * width))

        def run(lo, hi, stop):
            for start, end in pool.pieces(lo, hi, stop, step):
                columns(dy, x, dx, length, inner, width, start, end, int(log))

        pool.run_parallel(run, pool.parallel_ranges(units, x.size))
        return dx
    kernel = _native.rows_grad_kernel("softmax", compute) if mask is None else None
    rows, operands = _contiguous_rows_grad(dy, x, dx, merged, compute, kernel, mask is None and bias is None)
    if rows is not None:
        # rows along the last axes, read and written in place (bfloat16 widened a row at a time in cache)
        length = merged[1]
        pool.run_split(
            merged[0],
            lambda r0, r1, threads: rows(*operands, r0, r1, length, int(log), threads),
            pool.PARALLEL_MIN,
            item=length,
            share=merged[0] > 1,
        )
        return dx

    def rows_fn(src, res, keep, dyc):
        if kernel is not None:
            kernel(dyc, src, res, 0, src.shape[0], src.shape[1], int(log))
        else:
            _softmax_grad_block(dyc, src, res, log, keep)

    gathered_rows(x, axes, dx, compute, rows_fn, mask, extra=(dy,), add=bias)
    return dx
