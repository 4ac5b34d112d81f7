"""Dask arrays: every public function returns a lazy ``dask.array.Array``, each chunk computed by
gpuact's own backend for that chunk (the NumPy path, or CuPy for CuPy chunks). No scheduler of
gpuact's own: the graph runs on whatever runs Dask (threads, dask.distributed, dask-cuda's
``LocalCUDACluster`` with CuPy chunks).

* Elementwise ops (and their gradients, PReLU) add one blockwise layer; a bias is aligned to x's
  chunks by Dask.
* softmax and log_softmax along axes that each lie within one chunk are one blockwise call of the
  fused kernel. Along a chunked axis they never rechunk it: each chunk reduces to partial results
  ``(max, sum of exp(x - max))``, which a tree reduction combines by the online-softmax rule
  (``s = s1 e**(m1 - m) + s2 e**(m2 - m)``), and one blockwise pass writes the result: ``x`` read
  twice, the result written once, a graph linear in the number of chunks. (The partial pairs travel
  packed as complex128, max in the real part and the sum in the imaginary part, so that they are
  one array to Dask.)
* sparsemax along a chunked axis rechunks that axis into one chunk (its threshold needs the whole
  slice); glu aligns the two halves' chunks.
* ``out=`` is refused (Dask arrays are immutable: use ``dask.array.store`` to write into an
  existing array), and so is ``stream=``; a bias, mask or alpha must be a Dask array or an array of
  the chunks' kind (a NumPy array for NumPy chunks), else ``TypeError``.

Dask is looked up in ``sys.modules``: a Dask array cannot exist unless dask.array was imported.
"""

from __future__ import annotations

import sys

import numpy as np


def is_dask(a) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(a, da.Array)


def any_dask(*arrays) -> bool:
    return any(is_dask(a) for a in arrays if a is not None)


def _da():
    import dask.array

    return dask.array


def _chunk_module(x):
    """numpy or cupy: the module of x's chunks (its meta)."""
    meta = getattr(x, "_meta", None)
    if meta is not None and type(meta).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return np


def _meta(x, dtype, ndim=None):
    xp = _chunk_module(x)
    return xp.empty((0,) * (x.ndim if ndim is None else ndim), dtype=dtype)


def _check_call(x, out, stream, **operands):
    if not is_dask(x):
        names = [name for name, a in operands.items() if is_dask(a)]
        raise TypeError(
            f"{', '.join(names)} is a Dask array but x is not: make x a Dask array too "
            "(dask.array.from_array), or compute the others"
        )
    if out is not None:
        raise TypeError(
            "out= takes no Dask array: Dask arrays are immutable. Use the returned lazy array, "
            "and dask.array.store(result, target) to write it into an existing array"
        )
    if stream is not None:
        raise TypeError(
            "stream= does not apply to Dask arrays: each chunk runs on its worker's device and "
            "CuPy's current stream there"
        )
    chunks_kind = _chunk_module(x).__name__
    for name, a in operands.items():
        if a is None or is_dask(a) or np.ndim(a) == 0:
            continue
        kind = type(a).__module__.split(".")[0]
        if kind != chunks_kind and not (chunks_kind == "numpy" and isinstance(a, (list, tuple))):
            raise TypeError(
                f"{name} is a {type(a).__module__}.{type(a).__name__} and x's chunks are "
                f"{chunks_kind} arrays: pass {name} as a Dask array, or as an array of the chunks' kind"
            )


def _operand(a, x):
    """A bias/mask/alpha as a Dask array whose chunks line up with x's along every axis it
    broadcasts over (a plain array of the chunks' kind becomes one); scalars stay scalars."""
    if a is None or np.ndim(a) == 0:
        return a
    if not is_dask(a):
        a = _da().from_array(a, chunks=a.shape, asarray=False)
    if a.ndim > x.ndim:
        raise ValueError(f"an operand of shape {a.shape} does not broadcast to x's shape {x.shape}")
    lead = x.ndim - a.ndim
    chunks = tuple(x.chunks[lead + k] if a.shape[k] == x.shape[lead + k] else (a.shape[k],) for k in range(a.ndim))
    return a if a.chunks == chunks else a.rechunk(chunks)


def _dtype(x, dy=None):
    from gpuact import _dispatch

    dtype = _dispatch.result_dtype(x.dtype)
    if dy is not None:
        dtype = np.promote_types(_dispatch.result_dtype(dy.dtype), dtype)
    return np.dtype(dtype)


# ---- elementwise -------------------------------------------------------------------------------


def _elementwise_chunk(xb, *rest, op, params, has_bias, backend):
    from gpuact import _dispatch

    bias = rest[0] if has_bias else None
    return _dispatch.elementwise(op, xb, params, bias=bias, backend=backend)


def elementwise(op, x, params, *, bias, out, backend, stream):
    _check_call(x, out, stream, bias=bias)
    dtype = _dtype(x)
    args = [x] + ([_operand(bias, x)] if bias is not None else [])
    return _da().map_blocks(
        _elementwise_chunk,
        *args,
        op=op,
        params=params,
        has_bias=bias is not None,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype),
    )


def _grad_chunk(dyb, xb, *rest, op, params, has_bias, backend):
    from gpuact import _dispatch

    bias = rest[0] if has_bias else None
    return _dispatch.elementwise_grad(op, dyb, xb, params, bias=bias, backend=backend)


def elementwise_grad(op, dy, x, params, *, bias, out, backend, stream):
    _check_call(x, out, stream, dy=dy, bias=bias)
    if not is_dask(dy):
        raise TypeError("dy must be a Dask array like x")
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"dy has shape {tuple(dy.shape)}; x has shape {tuple(x.shape)}")
    dtype = _dtype(x, dy)
    args = [dy, x] + ([_operand(bias, x)] if bias is not None else [])
    return _da().map_blocks(
        _grad_chunk,
        *args,
        op=op,
        params=params,
        has_bias=bias is not None,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype),
    )


def _prelu_chunk(xb, ab, *, backend):
    from gpuact import _dispatch

    return _dispatch.prelu(xb, ab, backend=backend)


def prelu(x, alpha, *, out, backend, stream):
    _check_call(x, out, stream, alpha=alpha)
    dtype = _dtype(x)
    return _da().map_blocks(_prelu_chunk, x, _operand(alpha, x), backend=backend, dtype=dtype, meta=_meta(x, dtype))


def _prelu_grad_chunk(dyb, xb, ab, *, backend):
    from gpuact import _dispatch

    return _dispatch.prelu_grad(dyb, xb, ab, backend=backend)


def prelu_grad(dy, x, alpha, *, out, backend, stream):
    _check_call(x, out, stream, dy=dy, alpha=alpha)
    dtype = _dtype(x, dy)
    return _da().map_blocks(
        _prelu_grad_chunk, dy, x, _operand(alpha, x), backend=backend, dtype=dtype, meta=_meta(x, dtype)
    )


# ---- softmax ------------------------------------------------------------------------------------


def _within_chunks(x, axes) -> bool:
    return all(x.numblocks[a] == 1 for a in axes)


def _softmax_chunk(xb, *rest, axes, log, has_mask, has_bias, backend):
    from gpuact import _dispatch

    rest = list(rest)
    mask = rest.pop(0) if has_mask else None
    bias = rest.pop(0) if has_bias else None
    return _dispatch.softmax(xb, axes, log=log, mask=mask, bias=bias, backend=backend)


def _shifted(x, mask, bias, dtype):
    """x + bias with masked positions at -inf, lazily (one blockwise layer), in the result dtype."""
    da = _da()

    def shift(xb, *rest, has_mask, has_bias):
        xp = sys.modules["cupy"] if type(xb).__module__.split(".")[0] == "cupy" else np
        rest = list(rest)
        keep = rest.pop(0) if has_mask else None
        z = xb.astype(dtype, copy=True)
        if has_bias:
            z += rest.pop(0)
        if keep is not None:
            keep = keep if keep.dtype == np.bool_ else keep > 0.5
            z = xp.where(keep, z, xp.asarray(-np.inf, dtype=dtype))
        return z

    args = [x] + ([mask] if mask is not None else []) + ([bias] if bias is not None else [])
    return da.map_blocks(
        shift, *args, has_mask=mask is not None, has_bias=bias is not None, dtype=dtype, meta=_meta(x, dtype)
    )


def _partials(zb, axis=None, keepdims=True, computing_meta=False, **kwargs):
    """A chunk's (max, sum of exp(z - max)) along the reduced axes: exp(z - max) by gpuact's
    fused-bias kernel on the chunk (one pass, no temporary z - max), summed in float64."""
    from gpuact import _dispatch

    if computing_meta:
        return zb
    xp = sys.modules["cupy"] if type(zb).__module__.split(".")[0] == "cupy" else np
    m = zb.max(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        finite_m = xp.where(xp.isfinite(m), m, xp.zeros((), m.dtype))
        e = _dispatch.elementwise("exponential", zb, (), bias=-finite_m)
        s = e.sum(axis=axis, keepdims=True, dtype=np.float64)
    # a chunk whose slice is all -inf (masked, say) adds nothing: 0, not exp(-inf - -inf) = NaN;
    # a +inf or NaN max makes the sum NaN (the slice's result is NaN)
    s = xp.where(m == -np.inf, 0.0, xp.where(xp.isfinite(m), s, np.nan))
    return {"max": m.astype(np.float64), "sum": s}


def _combine_pairs(pairs, axis=None, keepdims=True, computing_meta=False, **kwargs):
    from dask.array.core import _concatenate2
    from dask.utils import deepmap

    if computing_meta:
        return pairs
    if not isinstance(pairs, list):
        pairs = [pairs]
    maxima = _concatenate2(deepmap(lambda p: p["max"], pairs), axes=axis)
    sums = _concatenate2(deepmap(lambda p: p["sum"], pairs), axes=axis)
    m = maxima.max(axis=axis, keepdims=True)
    xp = sys.modules["cupy"] if type(m).__module__.split(".")[0] == "cupy" else np
    with np.errstate(invalid="ignore"):
        # the online-softmax rule; an all -inf part weighs 0 (its sum is 0), NaN stays NaN
        weights = xp.where(maxima == -np.inf, 0.0, xp.exp(maxima - m))
        s = (sums * weights).sum(axis=axis, keepdims=True)
    return {"max": m, "sum": s}


def _aggregate_pairs(pairs, axis=None, keepdims=True, computing_meta=False, **kwargs):
    if computing_meta:
        return pairs
    combined = _combine_pairs(pairs, axis=axis, keepdims=True)
    return combined["max"] + 1j * combined["sum"]  # one array for Dask: max + i sum


def _normalize(zb, pb, *rest, log, has_mask, out_dtype):
    """The result from a chunk of z = x + bias (-inf where masked) and its slices' packed (max, sum)."""
    from gpuact import _dispatch

    m, s = pb.real, pb.imag
    # not finite max (all -inf, +inf, NaN): NaN throughout, as the fused kernels
    finite = (m > -np.inf) & (m < np.inf)
    xp = sys.modules["cupy"] if type(zb).__module__.split(".")[0] == "cupy" else np
    compute = np.float64 if out_dtype == np.float64 else np.float32  # float16 is computed in float32
    with np.errstate(invalid="ignore", divide="ignore"):
        if log:
            shift = -(m + xp.log(s))
        else:
            shift = -m
        shift = xp.where(finite, shift, np.nan).astype(compute)
        if log:
            y = _dispatch.elementwise("linear", zb, (), bias=shift).astype(out_dtype, copy=False)
        else:
            e = _dispatch.elementwise("exponential", zb.astype(compute, copy=False), (), bias=shift)
            e *= xp.where(finite, 1.0 / s, np.nan).astype(compute)
            y = e.astype(out_dtype, copy=False)
    if has_mask:
        keep = rest[0]
        keep = keep if keep.dtype == np.bool_ else keep > 0.5
        y = xp.where(keep, y, xp.zeros((), out_dtype))
    return y


def softmax(x, axis, *, log, mask, bias, out, backend, stream):
    from gpuact import _dispatch

    _check_call(x, out, stream, mask=mask, bias=bias)
    axes = _dispatch._softmax_axes(axis, x.ndim)
    dtype = _dtype(x)
    mask, bias = _operand(mask, x), _operand(bias, x)
    if _within_chunks(x, axes):
        args = [x] + ([mask] if mask is not None else []) + ([bias] if bias is not None else [])
        return _da().map_blocks(
            _softmax_chunk,
            *args,
            axes=axes,
            log=log,
            has_mask=mask is not None,
            has_bias=bias is not None,
            backend=backend,
            dtype=dtype,
            meta=_meta(x, dtype),
        )
    return _softmax_tree(x, axes, log, mask, bias, dtype)


def _softmax_tree(x, axes, log, mask, bias, dtype):
    da = _da()
    compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    z = _shifted(x, mask, bias, compute) if (mask is not None or bias is not None or x.dtype != compute) else x
    packed = da.reduction(
        z,
        _partials,
        _aggregate_pairs,
        combine=_combine_pairs,
        axis=axes,
        keepdims=True,
        dtype=np.complex128,
        concatenate=False,
        meta=_meta(x, np.complex128),
    )
    args = [z, packed] + ([mask] if mask is not None else [])
    return da.map_blocks(
        _normalize, *args, log=log, has_mask=mask is not None, out_dtype=dtype, dtype=dtype, meta=_meta(x, dtype)
    )


def softmax_grad(dy, x, axis, *, log, mask, bias, out, backend, stream):
    """softmax: y (dy - sum(dy y)); log_softmax: dy - softmax(x) sum(dy); chunk-local axes take the
    fused kernel, chunked axes a lazy composition of tree reductions."""
    from gpuact import _dispatch

    _check_call(x, out, stream, dy=dy, mask=mask, bias=bias)
    if not is_dask(dy) or tuple(dy.shape) != tuple(x.shape):
        raise (TypeError if not is_dask(dy) else ValueError)("dy must be a Dask array of x's shape")
    axes = _dispatch._softmax_axes(axis, x.ndim)
    dtype = _dtype(x, dy)
    mask, bias = _operand(mask, x), _operand(bias, x)
    da = _da()
    if _within_chunks(x, axes):

        def chunk(dyb, xb, *rest, has_mask, has_bias):
            rest = list(rest)
            m = rest.pop(0) if has_mask else None
            b = rest.pop(0) if has_bias else None
            return _dispatch.softmax_grad(dyb, xb, axes, log=log, mask=m, bias=b, backend=backend)

        args = [dy, x] + ([mask] if mask is not None else []) + ([bias] if bias is not None else [])
        return da.map_blocks(
            chunk, *args, has_mask=mask is not None, has_bias=bias is not None, dtype=dtype, meta=_meta(x, dtype)
        )
    # computed in the compute dtype (float16 in float32, as the kernels do), the sums in float64
    compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    y = softmax(x.astype(compute), axis, log=False, mask=mask, bias=bias, out=None, backend=backend, stream=None)
    dyc = dy.astype(compute)
    keep = None if mask is None else (mask > 0.5 if mask.dtype != np.bool_ else mask)
    if keep is not None:
        dyc = da.where(keep, dyc, 0)
    if log:
        dx = dyc - y * dyc.sum(axis=axes, keepdims=True, dtype=np.float64).astype(compute)
        dx = dx if keep is None else da.where(keep, dx, 0)
    else:
        dx = y * (dyc - (dyc * y).sum(axis=axes, keepdims=True, dtype=np.float64).astype(compute))
    return dx.astype(dtype)


# ---- glu, sparsemax ---------------------------------------------------------------------------------


def _halves(x, ax):
    half = x.shape[ax] // 2
    index_a = (slice(None),) * ax + (slice(0, half),)
    index_b = (slice(None),) * ax + (slice(half, 2 * half),)
    a, b = x[index_a], x[index_b]
    return a, b.rechunk(a.chunks)  # the two halves' chunks aligned


def glu(x, axis, *, out, backend, stream):
    from gpuact import _dispatch

    _check_call(x, out, stream)
    ax = _dispatch.single_axis(axis, x.ndim)
    if x.shape[ax] % 2:
        raise ValueError(f"glu splits axis {axis} in two halves; its length {x.shape[ax]} is odd")
    dtype = _dtype(x)
    if x.numblocks[ax] == 1:
        return _da().map_blocks(
            lambda xb: _dispatch.glu(xb, ax, backend=backend),
            x,
            dtype=dtype,
            chunks=tuple(c if i != ax else (c[0] // 2,) for i, c in enumerate(x.chunks)),
            meta=_meta(x, dtype),
        )
    a, b = _halves(x, ax)

    def gate(ab, bb):
        xp = sys.modules["cupy"] if type(ab).__module__.split(".")[0] == "cupy" else np
        return _dispatch.glu(xp.concatenate([ab, bb], axis=ax), ax, backend=backend)

    return _da().map_blocks(gate, a, b, dtype=dtype, meta=_meta(x, dtype))


def glu_grad(dy, x, axis, *, out, backend, stream):
    """da = dy sigmoid(b) and db = dy a sigmoid'(b) (gpuact's sigmoid and its gradient kernel on
    each chunk), the two halves concatenated back along ``axis``."""
    from gpuact import _dispatch

    _check_call(x, out, stream, dy=dy)
    ax = _dispatch.single_axis(axis, x.ndim)
    if x.shape[ax] % 2:
        raise ValueError(f"glu splits axis {axis} in two halves; its length {x.shape[ax]} is odd")
    half = tuple(x.shape[:ax]) + (x.shape[ax] // 2,) + tuple(x.shape[ax + 1 :])
    if not is_dask(dy) or tuple(dy.shape) != half:
        raise ValueError(f"dy must be a Dask array of glu's output shape {half}")
    dtype = _dtype(x, dy)
    a, b = _halves(x, ax)
    dy = dy.rechunk(a.chunks)
    da = _da()

    def grad_a(dyb, bb):
        return (dyb * _dispatch.elementwise("sigmoid", bb, backend=backend)).astype(dtype, copy=False)

    def grad_b(dyb, ab, bb):
        return _dispatch.elementwise_grad("sigmoid", (dyb * ab).astype(dtype, copy=False), bb, backend=backend)

    first = da.map_blocks(grad_a, dy, b, dtype=dtype, meta=_meta(x, dtype))
    second = da.map_blocks(grad_b, dy, a, b, dtype=dtype, meta=_meta(x, dtype))
    return da.concatenate([first, second], axis=ax)


def sparsemax(x, axis, *, out, backend, stream):
    """Along a chunked axis the axis is first rechunked into one chunk (the threshold needs the whole
    slice): memory per chunk grows by that factor."""
    from gpuact import _dispatch

    _check_call(x, out, stream)
    ax = _dispatch.single_axis(axis, x.ndim)
    dtype = _dtype(x)
    if x.numblocks[ax] > 1:
        x = x.rechunk({ax: -1})
    return _da().map_blocks(
        lambda xb: _dispatch.sparsemax(xb, ax, backend=backend), x, dtype=dtype, meta=_meta(x, dtype)
    )


def sparsemax_grad(dy, x, axis, *, out, backend, stream):
    from gpuact import _dispatch

    _check_call(x, out, stream, dy=dy)
    if not is_dask(dy) or tuple(dy.shape) != tuple(x.shape):
        raise ValueError("dy must be a Dask array of x's shape")
    ax = _dispatch.single_axis(axis, x.ndim)
    dtype = _dtype(x, dy)
    if x.numblocks[ax] > 1:
        x = x.rechunk({ax: -1})
    dy = dy.rechunk(x.chunks)
    return _da().map_blocks(
        lambda dyb, xb: _dispatch.sparsemax_grad(dyb, xb, ax, backend=backend), dy, x, dtype=dtype, meta=_meta(x, dtype)
    )
