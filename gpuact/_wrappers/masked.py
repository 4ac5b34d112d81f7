"""NumPy masked arrays: the mask is honoured, never dropped.

* Elementwise ops (and PReLU) compute on the data and return a ``numpy.ma.MaskedArray`` with the
  input's mask.
* softmax and log_softmax leave masked entries out of every slice (as the Softmax layer's
  ``mask``, which they are combined with): masked entries get 0 and stay masked.
* sparsemax leaves them out likewise (they count as ``-inf``: 0 in the result, and masked).
* glu's result is masked where either half is; a gated unit's two-tensor form ``swiglu(a, b)``
  where ``a`` or ``b`` is.

``out=`` must then be a ``MaskedArray`` too (its data is written and its mask set). Masked arrays
run on the NumPy path only: forcing a GPU backend, or passing ``stream=``, raises ``TypeError``;
so does ``bias=`` (add it to x first), and so does a masked array given to a backward (pass the
data, and mask dy).
"""

from __future__ import annotations

import sys

import numpy as np

from gpuact._contract import checks
from gpuact._contract.calls import Request


def is_masked(x) -> bool:
    ma = sys.modules.get("numpy.ma")  # a masked array cannot exist before numpy.ma is imported
    return ma is not None and isinstance(x, ma.MaskedArray)


def wrap(inner):
    """The call ``inner`` with masked arrays unwrapped: ``inner`` gets their data (and, for the
    normalizing ops, their mask), and the result gets the mask back."""

    def call(request: Request):
        if not (is_masked(request.x) or is_masked(request.dy) or is_masked(request.b)):
            return inner(request)
        family = request.family
        if family.grad:
            raise TypeError("gpuact.backward takes plain arrays: pass the masked arrays' data (and mask dy)")
        _check(request)
        data, masked = np.ma.getdata(request.x), np.ma.getmaskarray(request.x)
        out = request.out
        plain = request.replace(x=data, out=None if out is None else np.ma.getdata(out))
        if family.mask:  # softmax, log_softmax: masked entries leave the slice
            keep = ~masked
            if request.mask is not None:
                if is_masked(request.mask):
                    raise TypeError("the Softmax layer's mask cannot itself be a masked array")
                given = np.asarray(request.mask)
                keep = keep & (given if given.dtype == np.bool_ else given > 0.5)
            return _finish(inner(plain.replace(mask=keep)), ~keep, out)
        if family.name == "sparsemax":
            # masked entries count as -inf: they get 0 and the rest is the projection of what is left
            dtype = checks.result_dtype(data.dtype)
            filled = np.where(masked, dtype.type(-np.inf), data.astype(dtype, copy=False))
            return _finish(inner(plain.replace(x=filled)), masked, out)
        if family.pair:  # the two-tensor form: masked where a or b is
            b = request.b
            y = inner(plain.replace(b=np.ma.getdata(b)))
            return _finish(y, masked | np.ma.getmaskarray(b), out)
        if family.halves:  # glu: masked where either half is
            y = inner(plain)
            ax, half = checks.glu_halves(request.axis, data.shape, request.op)
            first = masked[(slice(None),) * ax + (slice(0, half[ax]),)]
            second = masked[(slice(None),) * ax + (slice(half[ax], 2 * half[ax]),)]
            return _finish(y, first | second, out)
        if family.alpha and is_masked(request.alpha):
            raise TypeError("PReLU's alpha cannot be a masked array: pass alpha.filled(value)")
        return _finish(inner(plain), masked, out)

    return call


def _check(request: Request):
    if request.backend not in (None, "numpy"):
        raise TypeError(
            f"masked arrays run on the NumPy path only; got backend={request.backend!r}. "
            "Pass x.filled(value) or the data and mask separately to use a GPU backend."
        )
    if request.stream is not None:
        raise TypeError("masked arrays run on the NumPy path only, which takes no stream=")
    if request.bias is not None:
        raise TypeError("bias= does not take masked arrays; add the bias to x first")
    if request.out is not None and not is_masked(request.out):
        raise TypeError(
            "the result of a masked input is a numpy.ma.MaskedArray: out must be one too "
            f"(got {type(request.out).__name__})"
        )


def _finish(data, mask, out):
    if out is not None:
        out.mask = mask
        return out
    return np.ma.MaskedArray(data, mask=mask.copy())
