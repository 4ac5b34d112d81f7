"""Array-shaped functions written once for any NumPy-like module ``xp`` (NumPy, CuPy).

They are compositions of the module's own operations, so they stay on the array's device; the
caller supplies the output (``y``) and runs them inside its device and stream context.
"""

from __future__ import annotations


def sparsemax_into(xp, x, axis, y, compute):
    """``y = max(x - tau, 0)`` along ``axis``, ``tau`` such that each slice sums to 1.

    The projection is shift-invariant, so the slice's maximum is subtracted first (``z <= 0``,
    with one 0): without that, ``[1e8, 0]`` in float32 gave ``[0, 0]``. The support is
    ``{z_(k) : 1 + k z_(k) > sum_{j<=k} z_(j)}`` of the values sorted in decreasing order, and
    ``tau = (sum over the support - 1) / |support|``. A slice holding NaN, or whose maximum is
    not finite (a ``+inf``, or all ``-inf``), has no projection and becomes NaN throughout, as
    softmax does (a ``where``, so a GPU module needs no host sync); ``-inf`` among finite values
    gives 0.
    """
    z = xp.moveaxis(x, axis, -1).astype(compute)
    # max - max is NaN for an infinite max: such slices then take the NaN branch below
    z = z - xp.max(z, axis=-1, keepdims=True)
    n = z.shape[-1]
    z_sorted = -xp.sort(-z, axis=-1)
    cumsum = xp.cumsum(z_sorted, axis=-1)
    k = xp.arange(1, n + 1, dtype=compute)
    support_size = xp.sum(1 + k * z_sorted > cumsum, axis=-1, keepdims=True)
    tau_index = xp.maximum(support_size - 1, 0)
    tau = (xp.take_along_axis(cumsum, tau_index, axis=-1) - 1) / xp.maximum(support_size, 1).astype(compute)
    result = xp.maximum(z - tau, 0)
    has_nan = xp.isnan(z).any(axis=-1, keepdims=True)
    result = xp.where(has_nan, xp.asarray(float("nan"), dtype=compute), result)
    xp.moveaxis(y, axis, -1)[...] = result
    return y


def prelu_into(xp, x, alpha, y, compute):
    """``y = max(x, 0) + alpha * min(x, 0)``, which is ``relu(x) - alpha * relu(-x)``; where
    ``alpha`` is 0 the second term is 0, also at ``x = -inf`` (not 0 * -inf = NaN)."""
    xc = x.astype(compute, copy=False)
    pos = xp.maximum(xc, 0)
    neg = xp.minimum(xc, 0)
    xp.multiply(neg, alpha, out=neg)
    neg = xp.where(alpha == 0, xp.zeros((), compute), neg)
    xp.add(pos, neg, out=pos)
    y[...] = pos
    return y
