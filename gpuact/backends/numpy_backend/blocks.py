"""Cache-sized blocks for any layout and dtype: NumPy's buffered iterator over elementwise
operands (``buffered_map``), slices along reduced axes gathered into contiguous rows
(``gathered_rows``), and the per-thread scratch buffers both hand out, a block each, so that no
temporary ever has the size of the input."""

from __future__ import annotations

import math

import numpy as np

from gpuact._contract import checks
from gpuact.backends import _native
from gpuact.backends.numpy_backend import pool


def buffered_map(fn, inputs, y, compute):
    """``fn(*input_blocks, *output_blocks, scratch)`` on contiguous blocks of the compute dtype of
    the inputs (broadcast against the outputs) and of ``y`` (an array, or a list of arrays of one
    shape), which NumPy's buffered iterator gathers, casts and writes back, a range of blocks per
    thread. ``scratch`` is a per-thread dict. An input block may be an output's block itself (an
    unbuffered in-place operand): ``fn`` must allow it."""
    outputs = list(y) if isinstance(y, (list, tuple)) else [y]
    if any(_overlaps_itself(a) for a in outputs):
        # An output with a zero stride (np.broadcast_to made writeable, as_strided) is handed to fn
        # as a strided block, which the compiled kernels refuse: compute into a fresh array and let
        # NumPy write it out, where the last element written to each location wins, as in a ufunc.
        fresh = [np.empty(a.shape, a.dtype) for a in outputs]
        buffered_map(fn, inputs, fresh, compute)
        for a, b in zip(outputs, fresh):
            np.copyto(a, b)
        return
    if _bfloat16_blocks(fn, inputs, outputs, compute):
        return
    operands = [*inputs, *outputs]
    op_flags = [["readonly", "contig", "aligned"]] * len(inputs) + [["writeonly", "contig", "aligned"]] * len(outputs)
    it = np.nditer(
        operands,
        flags=["external_loop", "buffered", "zerosize_ok", "ranged", "delay_bufalloc"],
        op_flags=op_flags,
        op_dtypes=[compute] * len(operands),
        casting="unsafe",
        buffersize=pool.BLOCK,
        order="C",
    )

    def run(lo, hi, stop):
        sub = it.copy()
        sub.iterrange = (lo, hi)
        sub.reset()
        scratch: dict = {}
        # errstate outermost: the iterator's last write-back (a float16 cast) happens as it closes
        with np.errstate(all="ignore"), sub:
            for blocks in sub:
                pool.check_stop(stop)
                fn(*blocks, scratch)

    pool.run_parallel(run, pool.block_ranges(it.itersize))


def _bfloat16_blocks(fn, inputs, outputs, compute) -> bool:
    """``buffered_map`` for contiguous operands of one shape, some bfloat16 and the rest float32:
    each bfloat16 block widened into a float32 scratch block and each result narrowed back (to
    nearest even) by the compiled conversions, several times faster than the ml_dtypes casts the
    iterator would call. False (nothing done) where it does not apply."""
    operands = [*inputs, *outputs]
    if compute != np.float32 or not all(isinstance(a, np.ndarray) for a in operands):
        return False
    half = [checks.is_bfloat16(a.dtype) for a in operands]
    shape = outputs[0].shape
    if not any(half) or not all(
        a.shape == shape and a.flags.c_contiguous and (h or a.dtype == compute) for a, h in zip(operands, half)
    ):
        return False
    conversions = _native.bfloat16_conversions()
    if conversions is None:
        return False
    widen, narrow = conversions
    flat = [a.reshape(-1) for a in operands]
    bits = [f.view(np.uint16) if h else None for f, h in zip(flat, half)]
    count = len(inputs)

    def run(lo, hi, stop):
        scratch: dict = {}
        with np.errstate(all="ignore"):
            for start, end in pool.pieces(lo, hi, stop, pool.BLOCK):
                m = end - start
                blocks = []
                for k, f in enumerate(flat):
                    if bits[k] is None:
                        blocks.append(f[start:end])
                        continue
                    block = scratch_buffer(scratch, f"bfloat16 {k}", m, compute)
                    if k < count:
                        widen(bits[k][start:end], block, 0, m)
                    blocks.append(block)
                fn(*blocks, scratch)
                for k in range(count, len(flat)):
                    if bits[k] is not None:
                        narrow(blocks[k], bits[k][start:end], 0, m)

    pool.run_parallel(run, pool.block_ranges(flat[0].size))
    return True


def scratch_buffer(scratch: dict, name: str, m: int, compute):
    """The first ``m`` elements of the thread's block-sized buffer ``name`` in ``scratch``, made on
    first use."""
    buf = scratch.get(name)
    if buf is None:
        buf = scratch[name] = np.empty(pool.BLOCK, compute)
    return buf[:m]


def gathered_rows(x, axes, y, compute, rows_fn, mask=None, extra=(), add=None):
    """``rows_fn(src, res, keep, *extra_rows)`` on the slices along ``axes`` (any of them, any
    layouts and dtypes), a chunk of slices at a time: gathered into a contiguous (rows, length)
    ``src`` of the compute dtype (``x + add`` when ``add``, an array broadcastable to x, is given:
    the fused bias), computed into ``res``, scattered into ``y``. ``keep`` is the mask's chunk (or
    None); ``extra`` are arrays of x's shape (dy) gathered alike. Chunks are independent, so ``y``
    may be ``x`` itself, and memory beyond the result is a few chunks a thread (at least one slice
    each)."""
    rest = [a for a in range(x.ndim) if a not in axes]
    perm = rest + list(axes)
    xt, yt = x.transpose(perm), y.transpose(perm)
    mt = None if mask is None else mask.transpose(perm)
    at = None if add is None else np.broadcast_to(add, x.shape).transpose(perm)
    et = [np.broadcast_to(e, x.shape).transpose(perm) for e in extra]
    rest_shape = xt.shape[: len(rest)]
    length = math.prod(xt.shape[len(rest) :])
    chunks = list(_row_chunks(rest_shape, max(1, pool.BLOCK // length)))

    def run(lo, hi, stop):
        scratch = None
        with np.errstate(all="ignore"):
            for index in chunks[lo:hi]:
                pool.check_stop(stop)
                xc, yc = xt[index], yt[index]
                rows = xc.size // length
                if scratch is None:
                    size = max(rows, max(1, pool.BLOCK // length)) * length
                    scratch = [np.empty(size, compute) for _ in range(2 + len(et))]
                src = scratch[0][: xc.size].reshape(xc.shape)
                if at is None:
                    _cast_into(src, xc)
                else:
                    np.add(xc, at[index], out=src, dtype=compute, casting="unsafe")  # float16 added in float32
                res = scratch[1][: xc.size]
                gathered = []
                for k, e in enumerate(et):
                    buf = scratch[2 + k][: xc.size].reshape(xc.shape)
                    _cast_into(buf, e[index])
                    gathered.append(buf.reshape(rows, length))
                keep = None if mt is None else np.reshape(mt[index], (rows, length))
                rows_fn(src.reshape(rows, length), res.reshape(rows, length), keep, *gathered)
                _cast_into(yc, res.reshape(xc.shape))

    pool.run_parallel(run, pool.parallel_ranges(len(chunks), x.size))


def _cast_into(dst, src):
    """``dst[...] = src`` (cast unsafely): between a C-contiguous bfloat16 array and a float32 one
    by the compiled conversions (bit for bit ml_dtypes' casts, several times faster), else NumPy's
    copy."""
    if src.flags.c_contiguous and dst.flags.c_contiguous and src.shape == dst.shape:
        widen = checks.is_bfloat16(src.dtype) and dst.dtype == np.float32
        narrow = checks.is_bfloat16(dst.dtype) and src.dtype == np.float32
        conversions = _native.bfloat16_conversions() if widen or narrow else None
        if conversions is not None:
            n = src.size
            if widen:
                conversions[0](src.reshape(-1).view(np.uint16), dst.reshape(-1), 0, n)
            else:
                conversions[1](src.reshape(-1), dst.reshape(-1).view(np.uint16), 0, n)
            return
    np.copyto(dst, src, casting="unsafe")


def _row_chunks(shape, max_rows: int):
    """Index tuples cutting the row-major index space of ``shape`` into boxes of at most
    ``max_rows`` entries (at least one each)."""
    if not shape:
        yield ()
        return
    below = math.prod(shape[1:])
    if below <= max_rows:
        step = max(1, max_rows // max(below, 1))
        for i in range(0, shape[0], step):
            yield (slice(i, min(i + step, shape[0])),)
        return
    for i in range(shape[0]):
        for index in _row_chunks(shape[1:], max_rows):
            yield (slice(i, i + 1), *index)


def _overlaps_itself(a) -> bool:
    return a.size > 1 and any(stride == 0 and size > 1 for size, stride in zip(a.shape, a.strides))
