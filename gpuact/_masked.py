"""NumPy masked arrays: the mask is honoured, never dropped.

* Elementwise ops (and PReLU) compute on the data and return a ``numpy.ma.MaskedArray`` with the
  input's mask.
* softmax and log_softmax leave masked entries out of every slice (as the Softmax layer's
  ``mask``, which they are combined with): masked entries get 0 and stay masked.
* sparsemax leaves them out likewise (they count as ``-inf``: 0 in the result, and masked).
* glu's result is masked where either half is.

``out=`` must then be a ``MaskedArray`` too (its data is written and its mask set). Masked arrays
run on the NumPy path only: forcing a GPU backend, or passing ``stream=``, raises ``TypeError``.
"""

from __future__ import annotations

import sys

import numpy as np


def is_masked(x) -> bool:
    ma = sys.modules.get("numpy.ma")  # a masked array cannot exist before numpy.ma is imported
    return ma is not None and isinstance(x, ma.MaskedArray)


def _check(backend, out):
    if backend not in (None, "numpy"):
        raise TypeError(
            f"masked arrays run on the NumPy path only; got backend={backend!r}. "
            "Pass x.filled(value) or the data and mask separately to use a GPU backend."
        )
    if out is not None and not is_masked(out):
        raise TypeError(
            f"the result of a masked input is a numpy.ma.MaskedArray: out must be one too (got {type(out).__name__})"
        )


def _parts(x):
    return np.ma.getdata(x), np.ma.getmaskarray(x)


def _finish(data, mask, out):
    if out is not None:
        out.mask = mask
        return out
    return np.ma.MaskedArray(data, mask=mask.copy())


def _out_data(out):
    return None if out is None else np.ma.getdata(out)


def elementwise(dispatch, op, x, params, *, out, backend):
    _check(backend, out)
    data, mask = _parts(x)
    y = dispatch.elementwise(op, data, params, out=_out_data(out))
    return _finish(y, mask, out)


def prelu(dispatch, x, alpha, *, out, backend):
    _check(backend, out)
    if is_masked(alpha):
        raise TypeError("PReLU's alpha cannot be a masked array: pass alpha.filled(value)")
    data, mask = _parts(x)
    y = dispatch.prelu(data, alpha, out=_out_data(out))
    return _finish(y, mask, out)


def softmax(dispatch, x, axis, *, log, mask, out, backend):
    _check(backend, out)
    data, masked = _parts(x)
    keep = ~masked
    if mask is not None:
        if is_masked(mask):
            raise TypeError("the Softmax layer's mask cannot itself be a masked array")
        given = np.asarray(mask)
        keep = keep & (given if given.dtype == np.bool_ else given > 0.5)
    y = dispatch.softmax(data, axis, log=log, mask=keep, out=_out_data(out))
    return _finish(y, ~keep, out)


def sparsemax(dispatch, x, axis, *, out, backend):
    _check(backend, out)
    data, masked = _parts(x)
    # masked entries count as -inf: they get 0 and the rest is the projection of what is left
    dtype = dispatch.result_dtype(data.dtype)
    filled = np.where(masked, dtype.type(-np.inf), data.astype(dtype, copy=False))
    y = dispatch.sparsemax(filled, axis, out=_out_data(out))
    return _finish(y, masked, out)


def glu(dispatch, x, axis, *, out, backend):
    _check(backend, out)
    data, masked = _parts(x)
    y = dispatch.glu(data, axis, out=_out_data(out))
    ax = dispatch.single_axis(axis, data.ndim)
    half = data.shape[ax] // 2
    first = masked[(slice(None),) * ax + (slice(0, half),)]
    second = masked[(slice(None),) * ax + (slice(half, 2 * half),)]
    return _finish(y, first | second, out)
