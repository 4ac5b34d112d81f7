"""The scalar math of every elementwise activation, written once, as CUDA device functions.

``device_functions(ft)`` returns ``{op: f}`` where ``f(x, p0, p1, p2, p3)`` is a
``@cuda.jit(device=True)`` function computing the activation of ``x`` in the compute type ``ft``
(``numpy.float32`` for float16/float32 data, ``numpy.float64`` for float64): its constants are
``ft`` values, so a float32 kernel never widens to float64. ``p0..p3`` are the op's canonical
parameters (``gpuact._ops.ELEMENTWISE_PARAMS``, after ``host_params``), already of type ``ft``;
unused ones are ignored. The semantics are those of ``gpuact.backends.numpy_backend``, NaN
propagation and the limits at ±inf included: ``fmax``/``fmin`` below propagate NaN like
``numpy.maximum``/``numpy.minimum``, and silu/gelu/mish clamp at ``NEGATIVE_SATURATION`` first.

Under Numba's CUDA simulator the device functions run as Python on NumPy scalars; Python's
``math`` raises on overflow and domain errors where CUDA returns inf/NaN, so there the math
comes from ``_SimMath`` (NumPy ufuncs with warnings off) instead of ``math``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuact._ops import NEGATIVE_SATURATION, SELU_ALPHA, SELU_SCALE

def _simulator_active() -> bool:
    try:
        from numba.cuda.core import config
    except ImportError:  # pragma: no cover - older numba-cuda
        from numba import config
    return bool(config.ENABLE_CUDASIM)


SIMULATOR = _simulator_active()


class _SimMath:
    """``math`` for the simulator: IEEE results (inf, NaN) instead of Python exceptions."""

    @staticmethod
    def _call(fn, *args):
        with np.errstate(all="ignore"):
            return fn(*args)

    def exp(self, x):
        return self._call(np.exp, x)

    def expm1(self, x):
        return self._call(np.expm1, x)

    def log(self, x):
        return self._call(np.log, x)

    def log1p(self, x):
        return self._call(np.log1p, x)

    def tanh(self, x):
        return self._call(np.tanh, x)

    def sqrt(self, x):
        return self._call(np.sqrt, x)

    def hypot(self, x, y):
        return self._call(np.hypot, x, y)

    def erfc(self, x):
        return type(x)(math.erfc(x))

    def isnan(self, x):
        return bool(np.isnan(x))

    def isinf(self, x):
        return bool(np.isinf(x))

    inf = math.inf
    pi = math.pi


M = _SimMath() if SIMULATOR else math

_cache: dict = {}


def device_functions(ft) -> dict:
    """``{op: device function}`` for the compute type ``ft`` (``np.float32`` or ``np.float64``)."""
    ft = np.dtype(ft).type
    fns = _cache.get(ft)
    if fns is None:
        fns = _cache[ft] = _build(ft)
    return fns


def _build(ft):  # noqa: C901 - one small function per op, on purpose
    zero, one, half, two, three, six = ft(0), ft(1), ft(0.5), ft(2), ft(3), ft(6)
    big = ft(np.finfo(ft).max)
    neg_sat = ft(NEGATIVE_SATURATION)
    selu_alpha, selu_scale = ft(SELU_ALPHA), ft(SELU_SCALE)
    gelu_c1 = ft(0.044715)
    gelu_c2 = ft(2.0 * math.sqrt(2.0 / math.pi))
    neg_sqrt_half = ft(-math.sqrt(0.5))
    quarter = ft(0.25)
    dev = cuda.jit(device=True)

    @dev
    def fmax(a, b):
        # numpy.maximum: NaN in either argument gives NaN
        return a if (a > b or a != a) else b

    @dev
    def fmin(a, b):
        return a if (a < b or a != a) else b

    @dev
    def clip(x, lo, hi):
        return fmin(fmax(x, lo), hi)

    @dev
    def log1p_exp_neg_abs(x):
        return M.log1p(M.exp(-abs(x)))

    @dev
    def sigmoid_of(t):
        # one exp of -|t| (never overflows); below 0 e / (1 + e), which keeps subnormal results
        e = M.exp(-abs(t))
        r = one / (one + e)
        return r if t >= zero else e * r

    @dev
    def relu(x, alpha, threshold, lo, hi):
        y = zero if x <= threshold else x  # NaN <= t is False: NaN stays
        y = fmin(fmax(y, lo), hi)  # lo = -inf / hi = inf leave y (and NaN) alone
        if alpha != zero:
            y = y - alpha * fmax(threshold - x, zero)
        return y

    @dev
    def sigmoid(x, p0, p1, p2, p3):
        return sigmoid_of(x)

    @dev
    def softplus(x, p0, p1, p2, p3):
        return fmax(x, zero) + log1p_exp_neg_abs(x)

    @dev
    def log_sigmoid(x, p0, p1, p2, p3):
        return fmin(x, zero) - log1p_exp_neg_abs(x)

    @dev
    def softsign(x, p0, p1, p2, p3):
        t = clip(x, -big, big)  # ±inf → ±max, so the result is ±1, not inf/inf
        return t / (abs(t) + one)

    @dev
    def tanh(x, p0, p1, p2, p3):
        return M.tanh(x)

    @dev
    def elu_of(x, alpha, divisor):
        # divided, not multiplied by 1 / divisor: a tiny celu alpha must not make 0 * inf
        return fmax(x, zero) + alpha * M.expm1(fmin(x, zero) / divisor)

    @dev
    def elu(x, alpha, p1, p2, p3):
        return elu_of(x, alpha, one)

    @dev
    def selu(x, p0, p1, p2, p3):
        return elu_of(x, selu_alpha, one) * selu_scale

    @dev
    def celu(x, alpha, p1, p2, p3):
        return elu_of(x, alpha, alpha)

    @dev
    def exponential(x, p0, p1, p2, p3):
        return M.exp(x)

    @dev
    def linear(x, p0, p1, p2, p3):
        return x

    @dev
    def relu6(x, p0, p1, p2, p3):
        return clip(x, zero, six)

    @dev
    def leaky_relu(x, slope, p1, p2, p3):
        neg = slope * fmin(x, zero) if slope != zero else zero
        return fmax(x, zero) + neg

    @dev
    def silu(x, p0, p1, p2, p3):
        u = fmax(x, neg_sat)  # -inf → -1e4: the result is the limit 0, not -inf * 0
        return u * sigmoid_of(u)

    @dev
    def gelu_tanh(x, p0, p1, p2, p3):
        # 0.5 x (1 + tanh(z)) == x sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3)
        u = fmax(x, neg_sat)
        t = (u * u * gelu_c1 + one) * u * gelu_c2
        return u * sigmoid_of(t)

    @dev
    def gelu(x, p0, p1, p2, p3):
        u = fmax(x, neg_sat)
        return M.erfc(u * neg_sqrt_half) * half * u

    @dev
    def hard_sigmoid_of(x):
        return clip(x + three, zero, six) / six

    @dev
    def hard_sigmoid(x, p0, p1, p2, p3):
        return hard_sigmoid_of(x)

    @dev
    def hard_silu(x, p0, p1, p2, p3):
        return hard_sigmoid_of(x) * fmax(x, -three)

    @dev
    def mish(x, p0, p1, p2, p3):
        u = fmax(x, neg_sat)
        return M.tanh(fmax(u, zero) + log1p_exp_neg_abs(u)) * u

    @dev
    def hard_tanh(x, p0, p1, p2, p3):
        return clip(x, -one, one)

    @dev
    def hard_shrink(x, threshold, p1, p2, p3):
        return zero if abs(x) <= threshold else x

    @dev
    def soft_shrink(x, threshold, p1, p2, p3):
        return x - clip(x, -threshold, threshold)

    @dev
    def tanh_shrink(x, p0, p1, p2, p3):
        return x - M.tanh(x)

    @dev
    def threshold(x, threshold, default_value, p2, p3):
        return default_value if x <= threshold else x

    @dev
    def squareplus(x, sqrt_b, p1, p2, p3):
        # as kernels/gpuact_math.cuh: b is never formed, x / 2 + s / 2 does not overflow
        s = M.hypot(x, sqrt_b)
        if x < zero:
            return sqrt_b * (sqrt_b / ((s - x) * two))
        return x * half + s * half

    @dev
    def sparse_plus(x, p0, p1, p2, p3):
        if x >= one:
            return x
        c = clip(x, -one, one) + one
        return c * c * quarter

    @dev
    def sparse_sigmoid(x, p0, p1, p2, p3):
        return clip((x + one) * half, zero, one)

    ninf = ft(-math.inf)

    @dev
    def neumaier(s, c, v):
        """(s + v, c + the rounding error of that sum): ``s + c`` is the compensated sum (Neumaier's
        variant of Kahan's, exact error terms whichever of s and v is larger). Without it a float32
        running sum stops growing once the terms fall below half an ulp of it."""
        t = s + v
        if abs(s) >= abs(v):
            c += (s - t) + v
        else:
            c += (v - t) + s
        return t, c

    @dev
    def online_add(m, s, c, mi, si):
        """Adds ``si * exp(mi - m)`` to the running softmax state: ``m`` the running max, ``s + c``
        the compensated sum of exp(v - m). A new max rescales the sum (and its compensation), so
        one exp per element; an element is (v, 1), a partial (its max, its sum). -inf adds
        nothing; NaN sticks in ``m``. Whenever the final ``m`` is not finite (NaN, +inf, or all
        -inf) the caller writes NaN, so the sum need not be right in those cases."""
        if mi > m:
            f = M.exp(m - mi)  # m = -inf (nothing yet): 0
            s, c = neumaier(s * f, c * f, si)
            m = mi
        elif mi == mi:
            if mi != ninf:
                s, c = neumaier(s, c, si * M.exp(mi - m))
        else:
            m = mi
        return m, s, c

    @dev
    def online_merge(m1, s1, m2, s2):
        """Two softmax partials (max, sum of exp(v - max)) as one: the pairwise step of a tree."""
        m, s, c = online_add(m1, s1, zero, m2, s2)
        return m, s + c

    fns = {
        "relu": relu, "sigmoid": sigmoid, "softplus": softplus, "softsign": softsign, "tanh": tanh,
        "selu": selu, "elu": elu, "exponential": exponential, "linear": linear, "relu6": relu6,
        "leaky_relu": leaky_relu, "silu": silu, "gelu": gelu, "gelu_tanh": gelu_tanh,
        "hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu, "mish": mish, "log_sigmoid": log_sigmoid,
        "celu": celu, "hard_tanh": hard_tanh, "hard_shrink": hard_shrink, "soft_shrink": soft_shrink,
        "tanh_shrink": tanh_shrink, "threshold": threshold, "squareplus": squareplus,
        "sparse_plus": sparse_plus, "sparse_sigmoid": sparse_sigmoid,
        # helpers the fused kernels use
        "_fmax": fmax, "_fmin": fmin, "_sigmoid_of": sigmoid_of,
        "_neumaier": neumaier, "_online_add": online_add, "_online_merge": online_merge,
    }
    return fns


def host_params(op: str, params: tuple) -> tuple:
    """The op's canonical parameters → the four kernel parameters."""
    return tuple(params) + (0.0,) * (4 - len(params))
