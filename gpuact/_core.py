"""The one core call: a request of any family, on arrays a backend owns, validated once and run.

``run`` does, for every family alike, from its ``Family`` row (``gpuact._contract.calls``):

1. picks the backend (``backend=``, else the one that owns ``x``) and loads it;
2. ``backend.accept`` takes ``x`` in: the device that holds it, the launch stream (``stream=``,
   else the convention of ``x``'s library), ordered after the stream that produced a foreign ``x``;
3. checks ``dy`` (a backward), ``b`` (a gated unit's two-tensor form), the axis, the result dtype
   and shape;
4. inside ``backend.scope`` (that device and stream current, so every array the call makes is
   made there): checks ``out`` (kind, device, shape, dtype, writeable; the two-tensor form's
   backward takes a pair ``(da, db)`` that must not share memory), takes the bias, mask and
   alpha in, copies any input that ``out`` would overwrite while it is still read;
5. calls the family's backend function by keyword.

It returns the backend's array (the pair ``(da, db)`` for the two-tensor form's backward), or
``out`` as it was handed in. Arrays of other kinds (Dask,
masked, PyTorch or JAX) have been unwrapped by ``gpuact._wrappers`` before they get here.
"""

from __future__ import annotations

import numpy as np

from gpuact._contract import checks
from gpuact._contract.calls import Request
from gpuact.backends import detect_backend, load_backend


def run(request: Request):
    family = request.family
    name = request.backend if request.backend is not None else detect_backend(request.x)
    backend = load_backend(name)
    x, stream, foreign = backend.accept(request.x, request.stream)
    foreign = foreign is not None
    dtype = checks.result_dtype(x.dtype)
    dy = None
    b = None
    if family.pair:
        b = _second_operand(backend, request.b, x, foreign)
    if family.grad:
        dy = request.dy
        if dy is None:
            raise TypeError(f"dy must be an array (the gradient of the forward's result); got {dy!r}")
        dy = backend.accept_operand(dy, x, foreign, "dy")
        dtype = checks.grad_dtype(dy.dtype, x.dtype)
    axis = None if family.axis is None else family.axis(request.axis, x.ndim)
    shape = family.result_shape(x.shape, request.axis, request.op)
    if dy is not None:
        want = family.forward_shape(x.shape, request.axis, request.op)
        if tuple(dy.shape) != want:
            if family.halves:
                raise checks.gated_dy_shape_error(dy.shape, want, request.op)
            raise ValueError(f"dy has shape {tuple(dy.shape)}; x has shape {tuple(x.shape)}")
    with backend.scope(x, stream):
        out = request.out
        if out is not None:
            checked = _checked_outs if family.pair and family.grad else _checked_out
            out = checked(backend, out, x, foreign, shape, dtype)
        same_ok = family.out_may_be_x
        arguments = {"x": _unaliased(backend, x, out, stream, same_ok), "out": out, "dtype": dtype, "stream": stream}
        if dy is not None:
            arguments["dy"] = _unaliased(backend, dy, out, stream, same_ok)
        if b is not None:
            arguments["b"] = _unaliased(backend, b, out, stream, same_ok)
            arguments["gate"] = request.op
        if family.op:
            arguments["op"], arguments["params"] = request.op, request.params
        elif family.axis_keyword is not None:
            arguments[family.axis_keyword] = axis
            if family.halves:  # the gated units: which one (gpuact._contract.ops.GATES)
                arguments["gate"] = request.op or "glu"
            if family.mask:  # softmax and log_softmax
                arguments["log"] = request.log
        if family.bias:
            arguments["bias"] = _bias(backend, request.bias, x, foreign, dtype, out, stream)
        if family.mask:
            mask = None if request.mask is None else backend.as_mask(request.mask, x.shape, stream)
            arguments["mask"] = _unaliased(backend, mask, out, stream, False)
        if family.alpha:
            alpha = backend.as_param_array(request.alpha, x.shape, dtype, stream)
            arguments["alpha"] = _unaliased(backend, alpha, out, stream, False)
        result = getattr(backend, family.name)(**arguments)
    return result if request.out is None else request.out


def _checked_out(backend, out, x, foreign: bool, shape, dtype):
    """``out`` validated against the result's kind, device, shape, dtype and writeability, before
    any work."""
    out = backend.accept_out(out, x, foreign)
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}; the result has shape {tuple(shape)}")
    if np.dtype(out.dtype) != dtype:
        raise TypeError(f"out has dtype {np.dtype(out.dtype)}; the result has dtype {dtype}")
    flags = getattr(out, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) is False:
        raise ValueError("out is read-only; gpuact writes its result into out")
    return out


def _checked_outs(backend, outs, x, foreign: bool, shape, dtype):
    """The two-tensor form's backward ``out``: a pair ``(da, db)``, each checked as ``out`` is,
    sharing no memory with each other."""
    if not isinstance(outs, (tuple, list)) or len(outs) != 2:
        raise TypeError(f"out must be a pair (da, db) for the two-tensor form's backward; got {type(outs).__name__}")
    pair = tuple(_checked_out(backend, out, x, foreign, shape, dtype) for out in outs)
    if backend.overlap(*pair) != checks.OVERLAP_NONE:
        raise ValueError("out's two arrays (da, db) share memory; each must have its own")
    return pair


def _second_operand(backend, b, x, foreign: bool):
    """A gated unit's ``b`` (two-tensor form) on x's device and of x's kind, shape and dtype."""
    if b is None:
        raise TypeError(f"b must be an array (the gated unit's second operand); got {b!r}")
    b = backend.accept_operand(b, x, foreign, "b")
    checks.check_pair(x.shape, np.dtype(x.dtype), b.shape, np.dtype(b.dtype))
    return b


def _unaliased(backend, a, out, stream, same_ok: bool):
    """``a``, or a copy of it when writing ``out`` (or either of a pair of outs) could change it
    while it is read: ``out`` shares memory with ``a`` and is not (``same_ok``) the very same
    view."""
    if out is None or a is None:
        return a
    for each in out if isinstance(out, tuple) else (out,):
        overlap = backend.overlap(a, each)
        if not (overlap == checks.OVERLAP_NONE or (overlap == checks.OVERLAP_SAME and same_ok)):
            return backend.copy(a, stream)
    return a


def _bias(backend, bias, x, foreign: bool, dtype, out, stream):
    """``bias`` as an array of the call's kind, on its device, broadcastable to ``x`` (a scalar
    too); copied first if ``out`` shares memory with it."""
    if bias is None:
        return None
    if np.ndim(bias) == 0 and isinstance(bias, (int, float, np.integer, np.floating)):
        value = checks.as_param("bias", bias)
        bias = backend.as_param_array(value, (), dtype, stream)
    else:
        bias = backend.accept_operand(bias, x, foreign, "bias")
    try:
        shape = np.broadcast_shapes(tuple(bias.shape), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to x's shape {tuple(x.shape)}")
    if not checks.is_real(bias.dtype):
        raise TypeError(f"bias must be real numbers; got dtype {np.dtype(bias.dtype)}")
    return _unaliased(backend, bias, out, stream, False)
