"""Dask arrays: every public function returns a lazy ``dask.array.Array``, each chunk computed by
gpuact's own backend for that chunk (the NumPy path, or CuPy for CuPy chunks). No scheduler of
gpuact's own: the graph runs on whatever runs Dask (threads, dask.distributed, dask-cuda's
``LocalCUDACluster`` with CuPy chunks).

* Elementwise ops (and their gradients, PReLU) add one blockwise layer. A bias, mask or alpha is
  checked against x's shape when the call is made and aligned to x's chunks, and so is a
  gradient's ``dy``, whatever their own chunks.
* softmax and log_softmax along axes that each lie within one chunk are one blockwise call of the
  fused kernel. Along a chunked axis they never rechunk it: each chunk reduces to partial results
  ``(max, sum of exp(x - max))``, which a tree reduction combines by the online-softmax rule
  (``s = s1 e**(m1 - m) + s2 e**(m2 - m)``), and one blockwise pass writes the result: ``x`` read
  twice, the result written once, a graph linear in the number of chunks. (The partial pairs travel
  packed as complex128, max in the real part and the sum in the imaginary part, so that they are
  one array to Dask.) log_softmax subtracts the max and log(sum) one after the other, as the NumPy
  path does: their sum, rounded first, would lose the result's low bits (or all of it, at 1e30).
* Chunks that are ``numpy.ma.MaskedArray`` (``da.from_array`` of one, ``da.ma.masked_array``) get
  what the NumPy path gives the masked array: masked entries are left out of every softmax slice,
  also along a chunked axis, and the results are masked likewise (see ``gpuact._wrappers.masked``).
* sparsemax along a chunked axis rechunks that axis into one chunk (its threshold needs the whole
  slice); glu aligns the two halves' chunks, and its gradient is computed in the result dtype
  (float16 in float32), as the kernels do. Where that needs the length of an axis Dask does not know
  (after boolean indexing), ``ValueError`` says to call ``compute_chunk_sizes()`` first.
* The gated units' two-tensor form (``swiglu(a, b)``) is one blockwise layer over ``a`` and ``b``
  aligned to ``a``'s chunks; its backward is one blockwise layer whose chunks hold ``da`` and
  ``db`` stacked along a new leading axis (each written in place by the kernel), returned as the
  two lazy slices ``(da, db)``.
* ``out=`` is refused (Dask arrays are immutable: use ``dask.array.store`` to write into an
  existing array), and so is ``stream=``; a bias, mask or alpha must be a Dask array or an array of
  the chunks' kind (a NumPy array or a list for NumPy chunks), else ``TypeError``; ``dy`` must be a
  Dask array.

Each chunk goes down the rest of the call chain (``inner``: the masked and foreign wrappers, then
the core call) as a request of its own. Dask is looked up in ``sys.modules``: a Dask array cannot
exist unless dask.array was imported.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np

from gpuact._contract import calls, checks, ops
from gpuact._contract.calls import Request


def is_dask(a) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(a, da.Array)


def wrap(inner):
    """The call ``inner`` made lazy over Dask arrays: a request with any Dask operand becomes a
    graph whose chunks each go to ``inner``; any other request goes to ``inner`` as it is."""

    def call(request: Request):
        da = sys.modules.get("dask.array")  # a Dask array cannot exist before dask.array is imported
        if da is None or not any(isinstance(a, da.Array) for a in request.operands().values()):
            return inner(request)
        return _FAMILIES[request.family.name](inner, request)

    return call


# ---- one chunk's call down the chain ---------------------------------------------------------------


def _elementwise(inner, op, xb, params=(), *, bias=None, backend=None):
    return inner(Request(calls.ELEMENTWISE, xb, op=op, params=params, bias=bias, backend=backend))


def _elementwise_grad(inner, op, dyb, xb, params=(), *, bias=None, backend=None):
    return inner(Request(calls.ELEMENTWISE_GRAD, xb, dy=dyb, op=op, params=params, bias=bias, backend=backend))


def _prelu(inner, xb, ab, *, backend):
    return inner(Request(calls.PRELU, xb, alpha=ab, backend=backend))


def _prelu_grad(inner, dyb, xb, ab, *, backend):
    return inner(Request(calls.PRELU_GRAD, xb, dy=dyb, alpha=ab, backend=backend))


def _softmax(inner, xb, axes, *, log, mask, bias, backend):
    return inner(Request(calls.SOFTMAX, xb, axis=axes, log=log, mask=mask, bias=bias, backend=backend))


def _softmax_grad(inner, dyb, xb, axes, *, log, mask, bias, backend):
    return inner(Request(calls.SOFTMAX_GRAD, xb, dy=dyb, axis=axes, log=log, mask=mask, bias=bias, backend=backend))


def _glu(inner, xb, ax, *, gate, backend):
    return inner(Request(calls.GLU, xb, op=gate, axis=ax, backend=backend))


def _gated(inner, ab, bb, *, gate, backend):
    return inner(Request(calls.GATED, ab, b=bb, op=gate, backend=backend))


def _sparsemax(inner, xb, ax, *, backend):
    return inner(Request(calls.SPARSEMAX, xb, axis=ax, backend=backend))


def _sparsemax_grad(inner, dyb, xb, ax, *, backend):
    return inner(Request(calls.SPARSEMAX_GRAD, xb, dy=dyb, axis=ax, backend=backend))


def _da():
    import dask.array

    return dask.array


def _chunk_module(x):
    """numpy or cupy: the module of x's chunks (its meta)."""
    meta = getattr(x, "_meta", None)
    if meta is not None and type(meta).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return np


def _is_masked(a) -> bool:
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(a, ma.MaskedArray)


def _masked_chunks(x) -> bool:
    """x's chunks are masked arrays, as far as its meta tells (from_array and da.ma keep it)."""
    return _is_masked(getattr(x, "_meta", None))


def _meta(x, dtype, ndim=None, *, masked=False):
    xp = _chunk_module(x)
    meta = xp.empty((0,) * (x.ndim if ndim is None else ndim), dtype=dtype)
    return np.ma.masked_array(meta) if masked else meta


def _unknown_length(ax, why):
    return ValueError(
        f"{why}, and the length of axis {ax} is unknown (a Dask array with unknown chunk sizes, as boolean "
        "indexing makes): call x.compute_chunk_sizes() first"
    )


def _rechunked(a, chunks, name):
    """a with the given chunks; where either side's chunk sizes along an axis are unknown they must
    be the same already (Dask cannot rechunk across unknown sizes)."""
    if a.chunks == chunks:
        return a
    for k, (have, want) in enumerate(zip(a.chunks, chunks)):
        if have != want and (math.isnan(sum(have)) or math.isnan(sum(want))):
            raise _unknown_length(k, f"{name} is chunked unlike x along axis {k}")
    return a.rechunk(chunks)


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


def _operand(a, x, name):
    """A bias/mask/alpha as a Dask array whose chunks line up with x's along every axis it
    broadcasts over (a plain array of the chunks' kind, or a list, becomes one); scalars stay
    scalars. Its shape is checked here, when the call is made, not in a chunk at compute time."""
    if a is None or np.ndim(a) == 0:
        return a
    if not is_dask(a):
        a = np.asarray(a) if isinstance(a, (list, tuple)) else a
        a = _da().from_array(a, chunks=a.shape, asarray=False)
    lead = x.ndim - a.ndim
    mismatch = ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to x's shape {tuple(x.shape)}")
    if lead < 0:
        raise mismatch
    chunks = []
    for k, n in enumerate(a.shape):
        along = x.chunks[lead + k]
        if a.chunks[k] == along:  # also where both lengths are unknown, from the same indexing
            chunks.append(along)
        elif n == 1:
            chunks.append((1,))
        elif n == x.shape[lead + k]:
            chunks.append(along)
        elif math.isnan(n) or math.isnan(x.shape[lead + k]):
            raise _unknown_length(lead + k, f"{name} of shape {tuple(a.shape)} must match x's shape")
        else:
            raise mismatch
    return _rechunked(a, tuple(chunks), name)


def _bias(bias, x):
    """The bias as the NumPy path takes it: a real scalar (checked by as_param), or an array that
    broadcasts to x's shape, refused when the call is made where the NumPy path refuses it."""
    if bias is None:
        return None
    if np.ndim(bias) == 0 and isinstance(bias, (int, float, np.integer, np.floating)):
        return checks.as_param("bias", bias)
    bias = _operand(bias, x, "bias")
    if not checks.is_real(bias.dtype):
        raise TypeError(f"bias must be real numbers; got dtype {np.dtype(bias.dtype)}")
    return bias


def _dy(dy, x, chunks=None, shape=None, of="x"):
    """A gradient's dy: a Dask array of plain chunks and of ``shape`` (x's), rechunked to ``chunks``
    (x's) so that the blockwise calls meet chunk for chunk. Where both shapes have an unknown
    length, the chunks (compared in _rechunked) decide."""
    if not is_dask(dy):
        raise TypeError("dy must be a Dask array like x")
    if _masked_chunks(x) or _masked_chunks(dy):
        raise TypeError("gpuact.backward takes plain arrays: pass the masked arrays' data (and mask dy)")
    shape = tuple(x.shape) if shape is None else tuple(shape)
    if len(dy.shape) != len(shape) or any(
        n != m and not (math.isnan(n) and math.isnan(m)) for n, m in zip(dy.shape, shape)
    ):
        raise ValueError(f"dy has shape {tuple(dy.shape)}; {of} has shape {shape}")
    return _rechunked(dy, x.chunks if chunks is None else chunks, "dy")


def _dtype(x, dy=None):
    return checks.result_dtype(x.dtype) if dy is None else checks.grad_dtype(dy.dtype, x.dtype)


# ---- elementwise -------------------------------------------------------------------------------


def _elementwise_chunk(xb, *rest, inner, op, params, has_bias, backend):
    bias = rest[0] if has_bias else None
    return _elementwise(inner, op, xb, params, bias=bias, backend=backend)


def elementwise(inner, r: Request):
    op, x, params, bias, out, backend, stream = r.op, r.x, r.params, r.bias, r.out, r.backend, r.stream
    _check_call(x, out, stream, bias=bias)
    dtype = _dtype(x)
    if bias is not None and _masked_chunks(x):
        raise TypeError("bias= does not take masked arrays; add the bias to x first")
    bias = _bias(bias, x)
    args = [x] + ([bias] if bias is not None else [])
    return _da().map_blocks(
        _elementwise_chunk,
        *args,
        inner=inner,
        op=op,
        params=params,
        has_bias=bias is not None,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype, masked=_masked_chunks(x)),
    )


def _grad_chunk(dyb, xb, *rest, inner, op, params, has_bias, backend):
    bias = rest[0] if has_bias else None
    return _elementwise_grad(inner, op, dyb, xb, params, bias=bias, backend=backend)


def elementwise_grad(inner, r: Request):
    op, dy, x, params, bias, out, backend, stream = r.op, r.dy, r.x, r.params, r.bias, r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=dy, bias=bias)
    dy = _dy(dy, x)
    dtype = _dtype(x, dy)
    bias = _bias(bias, x)
    args = [dy, x] + ([bias] if bias is not None else [])
    return _da().map_blocks(
        _grad_chunk,
        *args,
        inner=inner,
        op=op,
        params=params,
        has_bias=bias is not None,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype),
    )


def _prelu_chunk(xb, ab, *, inner, backend):
    return _prelu(inner, xb, ab, backend=backend)


def prelu(inner, r: Request):
    x, alpha, out, backend, stream = r.x, r.alpha, r.out, r.backend, r.stream
    _check_call(x, out, stream, alpha=alpha)
    dtype = _dtype(x)
    return _da().map_blocks(
        _prelu_chunk,
        x,
        _operand(alpha, x, "alpha"),
        inner=inner,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype, masked=_masked_chunks(x)),
    )


def _prelu_grad_chunk(dyb, xb, ab, *, inner, backend):
    return _prelu_grad(inner, dyb, xb, ab, backend=backend)


def prelu_grad(inner, r: Request):
    dy, x, alpha, out, backend, stream = r.dy, r.x, r.alpha, r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=dy, alpha=alpha)
    dy = _dy(dy, x)
    dtype = _dtype(x, dy)
    return _da().map_blocks(
        _prelu_grad_chunk,
        dy,
        x,
        _operand(alpha, x, "alpha"),
        inner=inner,
        backend=backend,
        dtype=dtype,
        meta=_meta(x, dtype),
    )


# ---- softmax ------------------------------------------------------------------------------------


def _within_chunks(x, axes) -> bool:
    return all(x.numblocks[a] == 1 for a in axes)


def _softmax_chunk(xb, *rest, inner, axes, log, has_mask, has_bias, backend):
    rest = list(rest)
    mask = rest.pop(0) if has_mask else None
    bias = rest.pop(0) if has_bias else None
    return _softmax(inner, xb, axes, log=log, mask=mask, bias=bias, backend=backend)


def _shifted(x, mask, bias, dtype):
    """x + bias with masked positions at -inf, lazily (one blockwise layer), in the result dtype."""
    da = _da()

    def shift(xb, *rest, has_mask, has_bias):
        xp = sys.modules["cupy"] if type(xb).__module__.split(".")[0] == "cupy" else np
        rest = list(rest)
        keep = rest.pop(0) if has_mask else None
        if _is_masked(xb):  # its mask is in keep
            xb = xb.data
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


def _keep_chunk(xb, *rest):
    """Where a masked chunk's entries count: not masked, and kept by the given mask if any."""
    keep = ~np.ma.getmaskarray(xb)
    if rest:
        given = rest[0]
        keep &= given if given.dtype == np.bool_ else given > 0.5
    return keep


def _partials(zb, axis=None, keepdims=True, computing_meta=False, *, inner, **kwargs):
    """A chunk's (max, sum of exp(z - max)) along the reduced axes: exp(z - max) by gpuact's
    fused-bias kernel on the chunk (one pass, no temporary z - max), summed in float64."""
    if computing_meta:
        return zb
    xp = sys.modules["cupy"] if type(zb).__module__.split(".")[0] == "cupy" else np
    m = zb.max(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        finite_m = xp.where(xp.isfinite(m), m, xp.zeros((), m.dtype))
        e = _elementwise(inner, "exponential", zb, (), bias=-finite_m)
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


def _normalize(zb, pb, *rest, inner, log, has_mask, masked, out_dtype):
    """The result from a chunk of z = x + bias (-inf where masked) and its slices' packed (max, sum);
    ``masked``: a masked array, masked where the mask (then required) is False."""
    m, s = pb.real, pb.imag
    # not finite max (all -inf, +inf, NaN): NaN throughout, as the fused kernels
    finite = (m > -np.inf) & (m < np.inf)
    xp = sys.modules["cupy"] if type(zb).__module__.split(".")[0] == "cupy" else np
    compute = np.float64 if out_dtype == np.float64 else np.float32  # float16 is computed in float32
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = xp.where(finite, -m, np.nan).astype(compute)  # exact: m is one of z's values
        if log:
            # (z - m) - log(s), each step rounded in the compute dtype as the NumPy path does
            y = _elementwise(inner, "linear", zb, (), bias=shift)
            y -= xp.log(s).astype(compute)
            y = y.astype(out_dtype, copy=False)
        else:
            e = _elementwise(inner, "exponential", zb.astype(compute, copy=False), (), bias=shift)
            e *= xp.where(finite, 1.0 / s, np.nan).astype(compute)
            y = e.astype(out_dtype, copy=False)
    if has_mask:
        keep = rest[0]
        keep = keep if keep.dtype == np.bool_ else keep > 0.5
        y = xp.where(keep, y, xp.zeros((), out_dtype))
        if masked:
            y = np.ma.MaskedArray(y, mask=~keep)
    return y


def softmax(inner, r: Request):
    x, axis, log, mask, bias, out, backend, stream = r.x, r.axis, r.log, r.mask, r.bias, r.out, r.backend, r.stream
    _check_call(x, out, stream, mask=mask, bias=bias)
    axes = checks.softmax_axes(axis, x.ndim)
    dtype = _dtype(x)
    masked = _masked_chunks(x)
    if bias is not None and masked:
        raise TypeError("bias= does not take masked arrays; add the bias to x first")
    mask, bias = _operand(mask, x, "mask"), _bias(bias, x)
    if _within_chunks(x, axes):
        args = [x] + ([mask] if mask is not None else []) + ([bias] if bias is not None else [])
        return _da().map_blocks(
            _softmax_chunk,
            *args,
            inner=inner,
            axes=axes,
            log=log,
            has_mask=mask is not None,
            has_bias=bias is not None,
            backend=backend,
            dtype=dtype,
            meta=_meta(x, dtype, masked=masked),
        )
    return _softmax_tree(inner, x, axes, log, mask, bias, dtype, masked)


def _softmax_tree(inner, x, axes, log, mask, bias, dtype, masked=False):
    da = _da()
    compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    if masked:
        # the chunks' masks join the given mask: masked entries are left out of the slices and
        # masked in the result, as the NumPy path does with a masked array
        args = [x] + ([mask] if mask is not None else [])
        mask = da.map_blocks(_keep_chunk, *args, dtype=np.bool_, meta=_meta(x, np.bool_))
    z = _shifted(x, mask, bias, compute) if (mask is not None or bias is not None or x.dtype != compute) else x
    packed = da.reduction(
        z,
        functools.partial(_partials, inner=inner),
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
        _normalize,
        *args,
        inner=inner,
        log=log,
        has_mask=mask is not None,
        masked=masked,
        out_dtype=dtype,
        dtype=dtype,
        meta=_meta(x, dtype, masked=masked),
    )


def softmax_grad(inner, r: Request):
    """softmax: y (dy - sum(dy y)); log_softmax: dy - softmax(x) sum(dy); chunk-local axes take the
    fused kernel, chunked axes a lazy composition of tree reductions."""
    dy, x, axis, log, mask, bias = r.dy, r.x, r.axis, r.log, r.mask, r.bias
    out, backend, stream = r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=dy, mask=mask, bias=bias)
    dy = _dy(dy, x)
    axes = checks.softmax_axes(axis, x.ndim)
    dtype = _dtype(x, dy)
    mask, bias = _operand(mask, x, "mask"), _bias(bias, x)
    da = _da()
    if _within_chunks(x, axes):

        def chunk(dyb, xb, *rest, has_mask, has_bias):
            rest = list(rest)
            m = rest.pop(0) if has_mask else None
            b = rest.pop(0) if has_bias else None
            return _softmax_grad(inner, dyb, xb, axes, log=log, mask=m, bias=b, backend=backend)

        args = [dy, x] + ([mask] if mask is not None else []) + ([bias] if bias is not None else [])
        return da.map_blocks(
            chunk, *args, has_mask=mask is not None, has_bias=bias is not None, dtype=dtype, meta=_meta(x, dtype)
        )
    # computed in the compute dtype (float16 in float32, as the kernels do), the sums in float64
    compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    y = softmax(inner, Request(calls.SOFTMAX, x.astype(compute), axis=axis, mask=mask, bias=bias, backend=backend))
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


def _glu_axis(x, axis, gate):
    ax = checks.single_axis(axis, x.ndim)
    name = checks.gated_name(gate)
    if math.isnan(x.shape[ax]):
        raise _unknown_length(ax, f"{name} splits axis {ax} in two halves")
    if x.shape[ax] % 2:
        raise ValueError(f"{name} splits axis {axis} in two halves; its length {x.shape[ax]} is odd")
    return ax


def _halves(x, ax):
    half = x.shape[ax] // 2
    index_a = (slice(None),) * ax + (slice(0, half),)
    index_b = (slice(None),) * ax + (slice(half, 2 * half),)
    a, b = x[index_a], x[index_b]
    return a, b.rechunk(a.chunks)  # the two halves' chunks aligned


def glu(inner, r: Request):
    x, axis, out, backend, stream = r.x, r.axis, r.out, r.backend, r.stream
    _check_call(x, out, stream)
    ax = _glu_axis(x, axis, r.op)
    dtype = _dtype(x)
    masked = _masked_chunks(x)
    if x.numblocks[ax] == 1:
        return _da().map_blocks(
            lambda xb: _glu(inner, xb, ax, gate=r.op, backend=backend),
            x,
            dtype=dtype,
            chunks=tuple(c if i != ax else (c[0] // 2,) for i, c in enumerate(x.chunks)),
            meta=_meta(x, dtype, masked=masked),
        )
    a, b = _halves(x, ax)

    def gate(ab, bb):
        if _is_masked(ab) or _is_masked(bb):
            xp = np.ma  # np.concatenate would drop the masks
        else:
            xp = sys.modules["cupy"] if type(ab).__module__.split(".")[0] == "cupy" else np
        return _glu(inner, xp.concatenate([ab, bb], axis=ax), ax, gate=r.op, backend=backend)

    return _da().map_blocks(gate, a, b, dtype=dtype, meta=_meta(x, dtype, masked=masked))


def glu_grad(inner, r: Request):
    """For ``y = op(g) * v`` (g the gate half, v the other): ``dg = dy v op'(g)`` and
    ``dv = dy op(g)`` (gpuact's op and its gradient kernel on each chunk), the two halves
    concatenated back along ``axis``; computed in the result dtype's compute dtype (float16 in
    float32, as the kernels do: dy v overflows float16 long before the result does), each half
    rounded once at the end."""
    dy, x, axis, out, backend, stream = r.dy, r.x, r.axis, r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=dy)
    gate = ops.GATES[r.op or "glu"]
    ax = _glu_axis(x, axis, r.op)
    half = tuple(x.shape[:ax]) + (x.shape[ax] // 2,) + tuple(x.shape[ax + 1 :])
    halves = _halves(x, ax)
    g, v = halves[gate.gate_half], halves[1 - gate.gate_half]
    dy = _dy(dy, x, chunks=g.chunks, shape=half, of=f"{checks.gated_name(r.op)}'s output, and so dy,")
    dtype = _dtype(x, dy)
    compute = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
    da = _da()

    def grad_value(dyb, gb):
        s = _elementwise(inner, gate.op, gb.astype(compute, copy=False), gate.params, backend=backend)
        return (dyb.astype(compute, copy=False) * s).astype(dtype, copy=False)

    def grad_gate(dyb, vb, gb):
        dyv = dyb.astype(compute, copy=False) * vb.astype(compute, copy=False)
        dg = _elementwise_grad(inner, gate.op, dyv, gb.astype(compute, copy=False), gate.params, backend=backend)
        return dg.astype(dtype, copy=False)

    d_value = da.map_blocks(grad_value, dy, g, dtype=dtype, meta=_meta(x, dtype))
    d_gate = da.map_blocks(grad_gate, dy, v, g, dtype=dtype, meta=_meta(x, dtype))
    parts = [d_gate, d_value] if gate.gate_half == 0 else [d_value, d_gate]
    # the halves are blockwise over the same chunks: their unknown lengths, if any, are the same
    return da.concatenate(parts, axis=ax, allow_unknown_chunksizes=True)


def _second_operand(b, x):
    """The two-tensor form's ``b``: x's shape and dtype (no broadcasting), aligned to x's chunks."""
    if b is None:
        raise TypeError(f"b must be an array (the gated unit's second operand); got {b!r}")
    checks.check_pair(x.shape, np.dtype(x.dtype), np.shape(b), np.dtype(x.dtype))  # the shape, before aligning
    b = _operand(b, x, "b")
    checks.check_pair(x.shape, np.dtype(x.dtype), b.shape, np.dtype(b.dtype))
    return b


def gated(inner, r: Request):
    x, out, backend, stream = r.x, r.out, r.backend, r.stream
    _check_call(x, out, stream, b=r.b)
    b = _second_operand(r.b, x)
    dtype = _dtype(x)
    return _da().map_blocks(
        lambda ab, bb: _gated(inner, ab, bb, gate=r.op, backend=backend),
        x,
        b,
        dtype=dtype,
        meta=_meta(x, dtype, masked=_masked_chunks(x) or _masked_chunks(b)),
    )


def gated_grad(inner, r: Request):
    """``(da, db)``: one blockwise call per chunk writes both into one stacked chunk."""
    x, out, backend, stream = r.x, r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=r.dy, b=r.b)
    b = _second_operand(r.b, x)
    if _masked_chunks(b):
        raise TypeError("gpuact.backward takes plain arrays: pass the masked arrays' data (and mask dy)")
    dy = _dy(r.dy, x)
    dtype = _dtype(x, dy)

    def both(dyb, ab, bb):
        stacked = _chunk_module(x).empty((2,) + tuple(ab.shape), dtype)
        inner(Request(calls.GATED_GRAD, ab, dy=dyb, b=bb, op=r.op, out=(stacked[0], stacked[1]), backend=backend))
        return stacked

    stacked = _da().map_blocks(
        both, dy, x, b, new_axis=0, chunks=((2,), *x.chunks), dtype=dtype, meta=_meta(x, dtype, x.ndim + 1)
    )
    return stacked[0], stacked[1]


def _one_chunk_along(x, ax, name):
    if x.numblocks[ax] == 1:
        return x
    if math.isnan(x.shape[ax]):
        raise _unknown_length(ax, f"{name} along axis {ax} rechunks it into one chunk")
    return x.rechunk({ax: -1})


def sparsemax(inner, r: Request):
    """Along a chunked axis the axis is first rechunked into one chunk (the threshold needs the whole
    slice): memory per chunk grows by that factor."""
    x, axis, out, backend, stream = r.x, r.axis, r.out, r.backend, r.stream
    _check_call(x, out, stream)
    ax = checks.single_axis(axis, x.ndim)
    dtype = _dtype(x)
    x = _one_chunk_along(x, ax, "sparsemax")
    return _da().map_blocks(
        lambda xb: _sparsemax(inner, xb, ax, backend=backend),
        x,
        dtype=dtype,
        meta=_meta(x, dtype, masked=_masked_chunks(x)),
    )


def sparsemax_grad(inner, r: Request):
    dy, x, axis, out, backend, stream = r.dy, r.x, r.axis, r.out, r.backend, r.stream
    _check_call(x, out, stream, dy=dy)
    ax = checks.single_axis(axis, x.ndim)
    x = _one_chunk_along(x, ax, "sparsemax's gradient")
    dy = _dy(dy, x)
    dtype = _dtype(x, dy)
    return _da().map_blocks(
        lambda dyb, xb: _sparsemax_grad(inner, dyb, xb, ax, backend=backend), dy, x, dtype=dtype, meta=_meta(x, dtype)
    )


_FAMILIES = {
    "elementwise": elementwise,
    "elementwise_grad": elementwise_grad,
    "softmax": softmax,
    "softmax_grad": softmax_grad,
    "glu": glu,
    "glu_grad": glu_grad,
    "gated": gated,
    "gated_grad": gated_grad,
    "sparsemax": sparsemax,
    "sparsemax_grad": sparsemax_grad,
    "prelu": prelu,
    "prelu_grad": prelu_grad,
}
