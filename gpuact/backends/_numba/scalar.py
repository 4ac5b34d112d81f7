"""The scalar math of every elementwise activation and of its derivative, written once, as CUDA
device functions.

``device_functions(ft)`` returns ``{op: f}`` where ``f(x, p0, p1, p2, p3)`` is a
``@cuda.jit(device=True)`` function computing the activation of ``x`` in the compute type ``ft``
(``numpy.float32`` for float16/float32 data, ``numpy.float64`` for float64): its constants are
``ft`` values, so a float32 kernel never widens to float64. ``p0..p3`` are the op's canonical
parameters (``gpuact._contract.ops.ELEMENTWISE_PARAMS``, after ``host_params``), already of type ``ft``;
unused ones are ignored. The semantics are those of ``gpuact.backends.numpy_backend``, NaN
propagation and the limits at ±inf included: ``fmax``/``fmin`` below propagate NaN like
``numpy.maximum``/``numpy.minimum``, and silu/gelu/mish clamp at ``NEGATIVE_SATURATION`` first.

``grad_functions(ft)`` returns ``{op: g}`` with ``g(x, p0, p1, p2, p3) = f'(x)``, the same
parameters and compute type: the derivatives of ``kernels/gpuact_grad.cuh``, for the backward
kernels (``dx = dy * g(x)``).

Under Numba's CUDA simulator the device functions run as Python on NumPy scalars; Python's
``math`` raises on overflow and domain errors where CUDA returns inf/NaN, so there the math
comes from ``_SimMath`` (NumPy ufuncs with warnings off) instead of ``math``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuact._contract.ops import DERIVATIVE_PREFIX, NEGATIVE_SATURATION, SECOND_DERIVATIVE_OPS, SELU_ALPHA, SELU_SCALE


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
    return _tables(ft)[0]


def grad_functions(ft) -> dict:
    """``{op: device function}`` of the derivatives: ``g(x, p0, p1, p2, p3) = op'(x)`` in the
    compute type ``ft``, the math of ``kernels/gpuact_grad.cuh`` (see there and
    ``gpuact.backward`` for the rules: the left derivative at kinks, the limits at ±inf, NaN in
    gives NaN, no cancellation)."""
    return _tables(ft)[1]


def _tables(ft):
    ft = np.dtype(ft).type
    tables = _cache.get(ft)
    if tables is None:
        fns = _build(ft)
        grads = _build_grads(ft, fns)
        # the derivative ops d_<op>: forward f', derivative f''
        fns.update({DERIVATIVE_PREFIX + op: grads[op] for op in SECOND_DERIVATIVE_OPS})
        grads.update(_build_second_derivatives(ft, fns, grads))
        tables = _cache[ft] = (fns, grads)
    return tables


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

    def online_add_grad_for(scaled):
        """``online_add`` carrying a second sum for the softmax backward: ``t + ct``, the
        compensated sum of ``w * exp(v - m)`` (``scaled``: softmax's dot of dy with exp) or of the
        plain weights ``w`` (log_softmax's sum of dy), rescaled with the sum of exp when the max
        changes. An element is (v, 1, dy), a partial (its max, its sums). At v = -inf the weight
        still counts, as ``dy * 0`` (a NaN or infinite dy makes the dot NaN, as NumPy's does)."""

        @dev
        def online_add_grad(m, s, c, t, ct, mi, si, ti):
            if mi > m:
                f = M.exp(m - mi)  # m = -inf (nothing yet): 0
                s, c = neumaier(s * f, c * f, si)
                if scaled:
                    t, ct = neumaier(t * f, ct * f, ti)
                else:
                    t, ct = neumaier(t, ct, ti)
                m = mi
            elif mi == mi:
                if mi != ninf:
                    g = M.exp(mi - m)
                    s, c = neumaier(s, c, si * g)
                    t, ct = neumaier(t, ct, ti * g if scaled else ti)
                else:
                    t, ct = neumaier(t, ct, ti * zero if scaled else ti)
            else:
                m = mi
            return m, s, c, t, ct

        @dev
        def online_merge_grad(m1, s1, t1, m2, s2, t2):
            """Two partials (max, sum of exp, the second sum) as one: a tree's pairwise step."""
            m, s, c, t, ct = online_add_grad(m1, s1, zero, t1, zero, m2, s2, t2)
            return m, s + c, t + ct

        return online_add_grad, online_merge_grad

    dot_add, dot_merge = online_add_grad_for(True)
    sum_add, sum_merge = online_add_grad_for(False)

    fns = {
        "relu": relu,
        "sigmoid": sigmoid,
        "softplus": softplus,
        "softsign": softsign,
        "tanh": tanh,
        "selu": selu,
        "elu": elu,
        "exponential": exponential,
        "linear": linear,
        "relu6": relu6,
        "leaky_relu": leaky_relu,
        "silu": silu,
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        "hard_sigmoid": hard_sigmoid,
        "hard_silu": hard_silu,
        "mish": mish,
        "log_sigmoid": log_sigmoid,
        "celu": celu,
        "hard_tanh": hard_tanh,
        "hard_shrink": hard_shrink,
        "soft_shrink": soft_shrink,
        "tanh_shrink": tanh_shrink,
        "threshold": threshold,
        "squareplus": squareplus,
        "sparse_plus": sparse_plus,
        "sparse_sigmoid": sparse_sigmoid,
        # helpers the fused kernels use
        "_fmax": fmax,
        "_fmin": fmin,
        "_clip": clip,
        "_sigmoid_of": sigmoid_of,
        "_log1p_exp_neg_abs": log1p_exp_neg_abs,
        "_hard_sigmoid_of": hard_sigmoid_of,
        "_neumaier": neumaier,
        "_online_add": online_add,
        "_online_merge": online_merge,
        # the softmax backward's state (max, sum of exp, second sum): softmax's "dot", log's "sum"
        "_online_add_dot": dot_add,
        "_online_merge_dot": dot_merge,
        "_online_add_sum": sum_add,
        "_online_merge_sum": sum_merge,
    }
    return fns


def _build_grads(ft, fns):  # noqa: C901 - one small function per op, as in _build
    """The derivatives, one per op, mirroring ``kernels/gpuact_grad.cuh`` line by line (the same
    stable forms, clamps and left derivatives), on the forward's helpers ``fns``."""
    zero, one, half, two, three, four, six = ft(0), ft(1), ft(0.5), ft(2), ft(3), ft(4), ft(6)
    sixth = one / six
    # |x| beyond this the derivatives of silu, gelu and mish are exact constants (0 or 1)
    sat = ft(1.0e4)
    selu_alpha, selu_scale = ft(SELU_ALPHA), ft(SELU_SCALE)
    neg_sqrt_half = ft(-math.sqrt(0.5))
    inv_sqrt_2pi = ft(1.0 / math.sqrt(2.0 * math.pi))
    gelu_c1, gelu_c3 = ft(0.044715), ft(3 * 0.044715)
    gelu_c2 = ft(2.0 * math.sqrt(2.0 / math.pi))
    fmax, fmin, clip, sigmoid_of = fns["_fmax"], fns["_fmin"], fns["_clip"], fns["_sigmoid_of"]
    log1p_exp_neg_abs, hard_sigmoid_of = fns["_log1p_exp_neg_abs"], fns["_hard_sigmoid_of"]
    dev = cuda.jit(device=True)

    @dev
    def nan_or(x, value):
        # the piecewise-constant derivatives: NaN in gives NaN
        return x if x != x else value

    @dev
    def sigmoid_grad_core(t):
        # sigmoid'(t) = e / (1 + e)**2, e = exp(-|t|): no 1 - sigmoid cancellation, 0 at ±inf
        e = M.exp(-abs(t))
        r = one / (one + e)
        return e * r * r

    @dev
    def sech2(x):
        # tanh'(x) = 4 e2 / (1 + e2)**2, e2 = exp(-2|x|): no 1 - tanh**2 cancellation
        e2 = M.exp(-two * abs(x))
        r = one / (one + e2)
        return four * e2 * r * r

    @dev
    def clamp_grad(x, lo, hi):
        # the left derivative of clip(x, lo, hi): 1 on (lo, hi]
        return one if (x > lo and x <= hi) else zero

    @dev
    def relu(x, alpha, threshold, lo, hi):
        d = clamp_grad(x, lo, hi) if x > threshold else zero
        if alpha != zero:
            d = d + (alpha if x <= threshold else zero)
        return nan_or(x, d)

    @dev
    def sigmoid(x, p0, p1, p2, p3):
        return sigmoid_grad_core(x)

    @dev
    def softplus(x, p0, p1, p2, p3):
        return sigmoid_of(x)

    @dev
    def log_sigmoid(x, p0, p1, p2, p3):
        return sigmoid_of(-x)

    @dev
    def softsign(x, p0, p1, p2, p3):
        r = one / (abs(x) + one)  # 0 at ±inf
        return r * r

    @dev
    def tanh(x, p0, p1, p2, p3):
        return sech2(x)

    @dev
    def elu_grad_core(x, alpha, divisor):
        # 1 above 0, (alpha / divisor) exp(x / divisor) up to 0
        below = (alpha / divisor) * M.exp(fmin(x, zero) / divisor)
        return nan_or(x, one if x > zero else below)

    @dev
    def elu(x, alpha, p1, p2, p3):
        return elu_grad_core(x, alpha, one)

    @dev
    def selu(x, p0, p1, p2, p3):
        return elu_grad_core(x, selu_alpha, one) * selu_scale

    @dev
    def celu(x, alpha, p1, p2, p3):
        # x for x >= 0: at 0 the left derivative exp(0) = 1 equals the right one
        return elu_grad_core(x, alpha, alpha)

    @dev
    def exponential(x, p0, p1, p2, p3):
        return M.exp(x)

    @dev
    def linear(x, p0, p1, p2, p3):
        return nan_or(x, one)

    @dev
    def relu6(x, p0, p1, p2, p3):
        return nan_or(x, clamp_grad(x, zero, six))

    @dev
    def leaky_relu(x, slope, p1, p2, p3):
        # the left derivative at 0 is the slope
        return nan_or(x, one if x > zero else slope)

    @dev
    def silu(x, p0, p1, p2, p3):
        # s(x) (1 + x s(-x)), x clamped where the derivative is exactly 0 or 1 (no inf * 0)
        u = clip(x, -sat, sat)
        return sigmoid_of(u) * (one + u * sigmoid_of(-u))

    @dev
    def gelu(x, p0, p1, p2, p3):
        # Phi(x) + x phi(x)
        u = clip(x, -sat, sat)
        cdf = M.erfc(u * neg_sqrt_half) * half
        pdf = M.exp(u * u * -half) * inv_sqrt_2pi
        return cdf + u * pdf

    @dev
    def gelu_tanh(x, p0, p1, p2, p3):
        # (x s(2z))' = s(2z) + x s'(2z) (2z)', z = sqrt(2/pi) (x + 0.044715 x**3)
        u = clip(x, -sat, sat)
        t = (u * u * gelu_c1 + one) * u * gelu_c2
        dt = (u * u * gelu_c3 + one) * gelu_c2
        return sigmoid_of(t) + u * sigmoid_grad_core(t) * dt

    @dev
    def hard_sigmoid(x, p0, p1, p2, p3):
        return nan_or(x, sixth if (x > -three and x <= three) else zero)

    @dev
    def hard_silu(x, p0, p1, p2, p3):
        inside = x / six if (x > -three and x <= three) else zero
        return nan_or(x, hard_sigmoid_of(x) + inside)

    @dev
    def mish(x, p0, p1, p2, p3):
        # tanh(sp) + x sech(sp)**2 s(x), sp = softplus(x)
        u = clip(x, -sat, sat)
        sp = fmax(u, zero) + log1p_exp_neg_abs(u)
        return M.tanh(sp) + u * sech2(sp) * sigmoid_of(u)

    @dev
    def hard_tanh(x, p0, p1, p2, p3):
        return nan_or(x, clamp_grad(x, -one, one))

    @dev
    def shrink(x, threshold, p1, p2, p3):
        # both shrinks are x outside [-t, t] (1 there, and from the left at -t), constant inside
        return nan_or(x, one if (x > threshold or x <= -threshold) else zero)

    @dev
    def tanh_shrink(x, p0, p1, p2, p3):
        t = M.tanh(x)
        return t * t

    @dev
    def threshold(x, threshold, p1, p2, p3):
        return nan_or(x, one if x > threshold else zero)

    @dev
    def squareplus(x, sqrt_b, p1, p2, p3):
        # (1 + x / s) / 2, s = hypot(x, sqrt b): below 0 as b / (2 s (s - x)) (no cancellation);
        # 1 where s rounds to x (+inf, or x huge); b = 0 is relu's derivative
        if sqrt_b == zero:
            return nan_or(x, one if x > zero else zero)
        s = M.hypot(x, sqrt_b)
        if x < zero:
            return sqrt_b * (sqrt_b / (s * (s - x))) * half
        return one if x == s else half + half * (x / s)

    @dev
    def sparse_plus(x, p0, p1, p2, p3):
        mid = (x + one) * half
        return nan_or(x, one if x >= one else (zero if x <= -one else mid))

    @dev
    def sparse_sigmoid(x, p0, p1, p2, p3):
        return nan_or(x, half if (x > -one and x <= one) else zero)

    return {
        "relu": relu,
        "sigmoid": sigmoid,
        "softplus": softplus,
        "softsign": softsign,
        "tanh": tanh,
        "selu": selu,
        "elu": elu,
        "exponential": exponential,
        "linear": linear,
        "relu6": relu6,
        "leaky_relu": leaky_relu,
        "silu": silu,
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        "hard_sigmoid": hard_sigmoid,
        "hard_silu": hard_silu,
        "mish": mish,
        "log_sigmoid": log_sigmoid,
        "celu": celu,
        "hard_tanh": hard_tanh,
        "hard_shrink": shrink,
        "soft_shrink": shrink,
        "tanh_shrink": tanh_shrink,
        "threshold": threshold,
        "squareplus": squareplus,
        "sparse_plus": sparse_plus,
        "sparse_sigmoid": sparse_sigmoid,
        # helpers the fused kernels use
        "_sigmoid_grad": sigmoid_grad_core,
    }


def _build_second_derivatives(ft, fns, grads) -> dict:
    """The derivatives of the derivative ops ``d_<op>``: ``f''(x)``, mirroring the second
    derivatives of ``kernels/gpuact_grad.cuh`` line by line."""
    zero, half, one, two = ft(0), ft(0.5), ft(1), ft(2)
    sat = ft(1.0e4)
    inv_sqrt_2pi = ft(1.0 / math.sqrt(2.0 * math.pi))
    gelu_k, gelu_3k = ft(0.044715), ft(3 * 0.044715)
    gelu_c, gelu_6kc = ft(math.sqrt(2.0 / math.pi)), ft(6 * 0.044715 * math.sqrt(2.0 / math.pi))
    selu_scale_alpha = ft(SELU_SCALE * SELU_ALPHA)
    clip, fmin, sigmoid_grad_core = fns["_clip"], fns["_fmin"], grads["_sigmoid_grad"]
    tanh_grad = grads["tanh"]  # sech(x)**2
    dev = cuda.jit(device=True)

    @dev
    def piecewise_linear(x, p0, p1, p2, p3):
        return x if x != x else zero

    @dev
    def sigmoid(x, p0, p1, p2, p3):
        # s' (1 - 2 s) = -tanh(x / 2) s'
        return -M.tanh(x * half) * sigmoid_grad_core(x)

    @dev
    def tanh(x, p0, p1, p2, p3):
        return -two * M.tanh(x) * tanh_grad(x, p0, p1, p2, p3)

    @dev
    def silu(x, p0, p1, p2, p3):
        # s'(x) (2 - x tanh(x / 2))
        u = clip(x, -sat, sat)
        return sigmoid_grad_core(u) * (two - u * M.tanh(u * half))

    @dev
    def gelu(x, p0, p1, p2, p3):
        # phi(x) (2 - x**2)
        u = clip(x, -sat, sat)
        u2 = u * u
        return M.exp(u2 * -half) * inv_sqrt_2pi * (two - u2)

    @dev
    def gelu_tanh(x, p0, p1, p2, p3):
        # sech(z)**2 (z' + x (z'' - 2 tanh(z) z'**2) / 2), z = c (x + k x**3)
        u = clip(x, -sat, sat)
        z = (u * u * gelu_k + one) * u * gelu_c
        dz = (u * u * gelu_3k + one) * gelu_c
        ddz = u * gelu_6kc
        return tanh_grad(z, p0, p1, p2, p3) * (dz + u * (ddz - two * M.tanh(z) * dz * dz) * half)

    @dev
    def softplus(x, p0, p1, p2, p3):
        return sigmoid_grad_core(x)

    @dev
    def elu(x, alpha, p1, p2, p3):
        # alpha e**x up to 0 (the left derivative at 0), 0 above
        if x != x:
            return x
        return zero if x > zero else alpha * M.exp(fmin(x, zero))

    @dev
    def selu(x, p0, p1, p2, p3):
        if x != x:
            return x
        return zero if x > zero else selu_scale_alpha * M.exp(fmin(x, zero))

    second = {
        "relu": piecewise_linear,
        "relu6": piecewise_linear,
        "leaky_relu": piecewise_linear,
        "sigmoid": sigmoid,
        "tanh": tanh,
        "silu": silu,
        "gelu": gelu,
        "gelu_tanh": gelu_tanh,
        "softplus": softplus,
        "elu": elu,
        "selu": selu,
    }
    return {DERIVATIVE_PREFIX + op: second[op] for op in SECOND_DERIVATIVE_OPS}


def host_params(op: str, params: tuple) -> tuple:
    """The op's canonical parameters → the four kernel parameters."""
    return tuple(params) + (0.0,) * (4 - len(params))
