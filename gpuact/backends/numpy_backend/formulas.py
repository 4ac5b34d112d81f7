"""The ufunc formulas of every elementwise op, each beside its derivative, and their tables
``KERNELS`` (forward) and ``GRADS`` (derivative), keyed by the op names of ``gpuact._contract.ops``.

A forward formula is ``f(x, y, t, u, *params)`` on 1-D contiguous blocks of the compute dtype:
``x`` is read only and never aliases ``y``; ``t``, ``u`` are scratch buffers of the same size.

A derivative is ``g(x, g, t, u, *params)``, ``g = f'(x)`` on the same blocks, the ufunc twin of
kernels/gpuact_grad.cuh (its rules: the left derivative at a kink, the limit at +-inf, NaN kept,
stable forms). ``x`` is read only; ``g``, ``t``, ``u`` are scratch of the same size; the driver
then writes dx = dy * g.

These are the NumPy path's math wherever no compiled kernel is used, and the reference the
compiled CPU kernels are tested against.
"""

from __future__ import annotations

import math

import numpy as np

from gpuact._contract.ops import NEGATIVE_SATURATION, OPS, SECOND_DERIVATIVE_OPS, SELU_ALPHA, SELU_SCALE

# np.clip(x, lo, inf) rather than np.maximum(x, lo): with a scalar bound NumPy 2's maximum and
# minimum take a slow loop (2-4x the time of clip, which has its own SIMD loop), and
# np.divide(1.0, y) rather than np.reciprocal(y), for the same reason. Both keep NaN.
_INF = math.inf


# ---------------------------------------------------------------------------------------------
# Pieces several formulas share.


def _times_sigmoid(v, y, t, negative):
    """y = v * sigmoid(t), with ``t`` holding the sigmoid's argument (overwritten) and
    ``negative`` where it is below 0: kernels/gpuact_math.cuh's sigmoid_core, one exp of -|t|
    (no overflow), and e / (1 + e) below 0, so subnormal results stay subnormal."""
    np.abs(t, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)  # e = exp(-|t|)
    np.add(t, 1.0, out=y)
    np.divide(v, y, out=y)  # v / (1 + e)
    np.multiply(y, t, out=t)
    np.copyto(y, t, where=negative)


def _log1p_exp_neg_abs(x, t):
    """t = log1p(exp(-|x|)), the smooth part of softplus."""
    np.abs(x, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)


def _elu_into(x, y, t, alpha, divisor=1.0):
    """y = max(x, 0) + alpha * expm1(min(x, 0) / divisor): no mask, NaN propagates; divided, as
    the kernels do (a tiny celu alpha must not make 0 * inf)."""
    np.clip(x, -_INF, 0.0, out=t)
    if divisor != 1.0:
        np.divide(t, divisor, out=t)
    np.expm1(t, out=t)
    np.multiply(t, alpha, out=t)
    np.clip(x, 0.0, _INF, out=y)
    np.add(y, t, out=y)


def _elu_grad_into(x, g, t, alpha, divisor):
    np.clip(x, -_INF, 0.0, out=t)
    if divisor != 1.0:
        np.divide(t, divisor, out=t)
    np.exp(t, out=g)
    np.multiply(g, alpha / divisor, out=g)
    np.copyto(g, 1.0, where=np.greater(x, 0.0))
    keep_nan(x, g)


def _hard_sigmoid_into(x, y):
    np.add(x, 3.0, out=y)
    np.clip(y, 0.0, 6.0, out=y)
    np.divide(y, 6.0, out=y)


def keep_nan(x, g):
    np.copyto(g, x, where=np.isnan(x))


def _indicator(g, condition, value=1.0):
    """g = value where condition, else 0."""
    np.multiply(condition, value, out=g, casting="unsafe")


def _clamp_grad(x, lo, hi):
    """The left derivative of clamp(x, lo, hi): lo < x <= hi."""
    return np.greater(x, lo) & np.less_equal(x, hi)


def sigmoid_grad_into(v, g, t):
    """g = sigmoid'(v) = e / (1 + e)**2, e = exp(-|v|)."""
    np.abs(v, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=g)
    np.divide(1.0, g, out=g)
    np.multiply(g, g, out=g)
    np.multiply(g, t, out=g)


def sigmoid_into(v, g, t):
    """g = sigmoid(v) (v may be g)."""
    negative = np.less(v, 0.0)
    np.copyto(t, v)
    _times_sigmoid(1.0, g, t, negative)


def _sech2_into(v, g, t):
    """g = sech(v)**2 = 4 e2 / (1 + e2)**2, e2 = exp(-2|v|)."""
    np.abs(v, out=t)
    np.multiply(t, -2.0, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=g)
    np.divide(1.0, g, out=g)
    np.multiply(g, g, out=g)
    np.multiply(g, t, out=g)
    np.multiply(g, 4.0, out=g)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# erfc(a) for a >= 0 as t * exp(-a^2 + g(2t - 1)), t = 1 / (1 + a/2): g is smooth on [-1, 1] and
# these polynomials (highest power first) are least-squares fits of it at 4000 Chebyshev nodes
# against scipy.special.erfcx, made for gpuact; tests/test_numpy_erfc.py re-derives them and checks
# the error: below 1e-7 relative with degree 10 (float32) and 1e-14 with degree 22 (float64).
ERFC_G32 = (
    7.86440864730578e-06,
    0.0003338040634112046,
    -0.00022760422912714836,
    -0.002048871097483392,
    0.0017938276801523656,
    0.008703901505034192,
    -0.009879944772132698,
    -0.046874909480877386,
    0.047343879625403464,
    0.6726422184868442,
    -0.6717940915476512,
)


ERFC_G64 = (
    9.45898465584964e-10,
    -1.1804295622892343e-07,
    1.5900650470828688e-07,
    8.54231051707791e-07,
    -1.7112471291795858e-06,
    -2.351391751108054e-06,
    8.950713514248325e-06,
    -4.0825254918557433e-07,
    -3.041963971827113e-05,
    3.2066971730840454e-05,
    7.149464437653694e-05,
    -0.00017442660782769542,
    -9.376017500740573e-05,
    0.0006737092385109215,
    -0.00014624255068628275,
    -0.0023458170749729454,
    0.0017589331181841268,
    0.00882493893922414,
    -0.00987268934296121,
    -0.04689561024597444,
    0.047343306841393366,
    0.6726432239778304,
    -0.6717940840566896,
)


_GELU_CLIP = 1.0e4  # |x| beyond this: Phi(x) is exactly 0 or 1 in every format


def _half_erfc_abs(x, h, y, t):
    """h = erfc(|x| / sqrt 2) / 2 = Phi(-|x|) (y, t scratch), x clipped to +-1e4 first."""
    coefficients = ERFC_G64 if x.dtype == np.float64 else ERFC_G32
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.abs(t, out=t)
    np.multiply(t, math.sqrt(0.5), out=t)  # a = |x| / sqrt 2
    np.multiply(t, 0.5, out=y)
    np.add(y, 1.0, out=y)
    np.divide(1.0, y, out=y)  # y = 1 / (1 + a/2)
    np.multiply(y, 2.0, out=t)
    np.subtract(t, 1.0, out=t)  # t = 2y - 1
    h.fill(coefficients[0])
    for c in coefficients[1:]:
        np.multiply(h, t, out=h)
        np.add(h, c, out=h)  # h = g(2y - 1)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.multiply(t, t, out=t)
    np.multiply(t, 0.5, out=t)  # t = a^2
    np.subtract(h, t, out=h)
    np.exp(h, out=h)
    np.multiply(h, y, out=h)
    np.multiply(h, 0.5, out=h)  # h = erfc(a) / 2


# ---------------------------------------------------------------------------------------------
# The ops, in the order of the op table, each formula followed by its derivative.


def is_plain_relu(alpha, threshold, lo, hi):
    # with threshold 0 the positive part is never negative, so the lower clip (lo) changes nothing
    return threshold == 0.0 and alpha == 0.0 and hi == math.inf


def _relu(x, y, t, u, alpha, threshold, lo, hi):
    if threshold == 0.0 and alpha == 0.0:
        np.clip(x, 0.0, _INF, out=y)  # the common case: one pass, NaN propagates
    else:
        np.copyto(y, x)
        # x <= t is False for NaN, so NaN stays NaN; a select, not x * (x > t), so -inf gives 0
        mask = u.view(np.bool_)[: x.size]
        np.less_equal(x, threshold, out=mask)
        np.copyto(y, 0.0, where=mask)
        if lo > -math.inf:
            np.clip(y, lo, _INF, out=y)
    if hi < math.inf:
        np.clip(y, -_INF, hi, out=y)
    if alpha != 0.0:
        np.subtract(threshold, x, out=t)
        np.clip(t, 0.0, _INF, out=t)
        np.multiply(t, alpha, out=t)
        np.subtract(y, t, out=y)


def _g_relu(x, g, t, u, alpha, threshold, lo, hi):
    _indicator(g, np.greater(x, threshold) & _clamp_grad(x, lo, hi))
    if alpha != 0:
        np.add(g, np.less_equal(x, threshold) * alpha, out=g, casting="unsafe")
    keep_nan(x, g)


def _sigmoid(x, y, t, u):
    np.copyto(t, x)
    _times_sigmoid(1.0, y, t, np.less(x, 0.0, out=u.view(np.bool_)[: x.size]))


def _g_sigmoid(x, g, t, u):
    sigmoid_grad_into(x, g, t)


def _softplus(x, y, t, u):
    _log1p_exp_neg_abs(x, t)
    np.clip(x, 0.0, _INF, out=y)
    np.add(y, t, out=y)


def _g_softplus(x, g, t, u):
    sigmoid_into(x, g, t)


def _softsign(x, y, t, u):
    # Clamping to the largest finite value makes ±inf give ±max / (max + 1) = ±1, not inf / inf.
    big = np.finfo(x.dtype).max
    np.clip(x, -big, big, out=t)
    np.abs(t, out=y)
    np.add(y, 1.0, out=y)
    np.divide(t, y, out=y)


def _g_softsign(x, g, t, u):
    np.abs(x, out=g)
    np.add(g, 1.0, out=g)
    np.divide(1.0, g, out=g)
    np.multiply(g, g, out=g)


def _tanh(x, y, t, u):
    np.tanh(x, out=y)


def _g_tanh(x, g, t, u):
    _sech2_into(x, g, t)


def _selu(x, y, t, u):
    _elu_into(x, y, t, SELU_ALPHA)
    np.multiply(y, SELU_SCALE, out=y)


def _g_selu(x, g, t, u):
    _elu_grad_into(x, g, t, SELU_ALPHA, 1.0)
    np.multiply(g, SELU_SCALE, out=g)


def _elu(x, y, t, u, alpha):
    _elu_into(x, y, t, alpha)


def _g_elu(x, g, t, u, alpha):
    _elu_grad_into(x, g, t, alpha, 1.0)


def _exponential(x, y, t, u):
    np.exp(x, out=y)


def _g_exponential(x, g, t, u):
    np.exp(x, out=g)


def _linear(x, y, t, u):
    np.copyto(y, x)


def _g_linear(x, g, t, u):
    g.fill(1.0)
    keep_nan(x, g)


def _relu6(x, y, t, u):
    np.clip(x, 0.0, 6.0, out=y)


def _g_relu6(x, g, t, u):
    _indicator(g, _clamp_grad(x, 0.0, 6.0))
    keep_nan(x, g)


def _leaky_relu(x, y, t, u, negative_slope):
    # max(x, 0) + slope * min(x, 0): -inf gives slope * -inf, not the -inf + inf of x + (slope-1)*min(x,0)
    np.clip(x, -_INF, 0.0, out=t)
    if negative_slope == 0.0:
        t.fill(0.0)
        np.copyto(t, x, where=np.isnan(x))
    else:
        np.multiply(t, negative_slope, out=t)
    np.clip(x, 0.0, _INF, out=y)
    np.add(y, t, out=y)


def _g_leaky_relu(x, g, t, u, negative_slope):
    g.fill(negative_slope)
    np.copyto(g, 1.0, where=np.greater(x, 0.0))
    keep_nan(x, g)


def _silu(x, y, t, u):
    # u * sigmoid(u) with u = max(x, -1e4): -inf gives the limit 0, not -inf * 0
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    np.copyto(t, u)
    _times_sigmoid(u, y, t, np.less(x, 0.0))


def _g_silu(x, g, t, u):
    # s(u) (1 + u s(-u)), u = clip(x, -1e4, 1e4)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    np.negative(u, out=g)
    sigmoid_into(g, g, t)
    np.multiply(g, u, out=g)
    np.add(g, 1.0, out=g)
    v = np.empty_like(u)
    sigmoid_into(u, v, t)
    np.multiply(g, v, out=g)


def _gelu(x, y, t, u):
    # gelu = x Phi(x) = max(x, 0) - |x| h with h = erfc(|x| / sqrt 2) / 2: for x <= 0 that is x h,
    # for x > 0 x (1 - h); no cancellation, and the clip keeps inf * 0 out of both ends.
    _half_erfc_abs(x, u, y, t)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.abs(t, out=t)
    np.multiply(t, u, out=t)
    np.clip(x, 0.0, _INF, out=y)
    np.subtract(y, t, out=y)


def _g_gelu(x, g, t, u):
    # Phi(u) + u phi(u): Phi(u) = h below 0, 1 - h above, h = erfc(|u| / sqrt 2) / 2
    h = np.empty_like(g)
    _half_erfc_abs(x, h, t, u)
    np.subtract(1.0, h, out=g)
    np.copyto(g, h, where=np.less(x, 0.0))
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    np.multiply(u, u, out=t)
    np.multiply(t, -0.5, out=t)
    np.exp(t, out=t)
    np.multiply(t, _INV_SQRT_2PI, out=t)
    np.multiply(t, u, out=t)
    np.add(g, t, out=g)
    keep_nan(x, g)


def _gelu_tanh(x, y, t, u):
    # 0.5 * x * (1 + tanh(z)) == x * sigmoid(2 z), z = sqrt(2/pi) * (x + 0.044715 x^3), which has
    # the sign of x
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    np.multiply(u, u, out=t)
    np.multiply(t, 0.044715, out=t)
    np.add(t, 1.0, out=t)
    np.multiply(t, u, out=t)
    np.multiply(t, 2.0 * _SQRT_2_OVER_PI, out=t)
    _times_sigmoid(u, y, t, np.less(x, 0.0))


def _g_gelu_tanh(x, g, t, u):
    # s(2z) + u s'(2z) (2z)', 2z = 2 sqrt(2/pi) (u + 0.044715 u**3)
    c = 2.0 * _SQRT_2_OVER_PI
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    z2 = np.multiply(u, u)
    np.multiply(z2, 0.044715, out=z2)
    np.add(z2, 1.0, out=z2)
    np.multiply(z2, u, out=z2)
    np.multiply(z2, c, out=z2)  # 2z
    sigmoid_grad_into(z2, g, t)
    np.multiply(u, u, out=t)
    np.multiply(t, 3 * 0.044715, out=t)
    np.add(t, 1.0, out=t)
    np.multiply(t, c, out=t)  # (2z)'
    np.multiply(g, t, out=g)
    np.multiply(g, u, out=g)
    sigmoid_into(z2, z2, t)
    np.add(g, z2, out=g)


def _hard_sigmoid(x, y, t, u):
    _hard_sigmoid_into(x, y)


def _g_hard_sigmoid(x, g, t, u):
    _indicator(g, _clamp_grad(x, -3.0, 3.0), 1.0 / 6.0)
    keep_nan(x, g)


def _hard_silu(x, y, t, u):
    _hard_sigmoid_into(x, y)
    # below -3 the sigmoid part is 0; max(x, -3) keeps -inf * 0 from making NaN
    np.clip(x, -3.0, _INF, out=t)
    np.multiply(y, t, out=y)


def _g_hard_silu(x, g, t, u):
    _hard_sigmoid_into(x, g)
    np.divide(x, 6.0, out=t)
    np.copyto(t, 0.0, where=~_clamp_grad(x, -3.0, 3.0))
    np.add(g, t, out=g)


def _mish(x, y, t, u):
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    _log1p_exp_neg_abs(u, t)
    np.clip(u, 0.0, _INF, out=y)
    np.add(y, t, out=y)
    np.tanh(y, out=y)
    np.multiply(y, u, out=y)


def _g_mish(x, g, t, u):
    # tanh(sp) + u sech(sp)**2 s(u), sp = softplus(u), u = clip(x, -1e4, 1e4)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    sp = np.empty_like(u)
    _log1p_exp_neg_abs(u, sp)
    np.add(sp, np.maximum(u, 0.0), out=sp)
    _sech2_into(sp, g, t)
    np.multiply(g, u, out=g)
    sigmoid_into(u, t, np.empty_like(u))
    np.multiply(g, t, out=g)
    np.tanh(sp, out=sp)
    np.add(g, sp, out=g)


def _log_sigmoid(x, y, t, u):
    _log1p_exp_neg_abs(x, t)
    np.clip(x, -_INF, 0.0, out=y)
    np.subtract(y, t, out=y)


def _g_log_sigmoid(x, g, t, u):
    np.negative(x, out=u)
    sigmoid_into(u, g, t)


def _celu(x, y, t, u, alpha):
    _elu_into(x, y, t, alpha, alpha)


def _g_celu(x, g, t, u, alpha):
    _elu_grad_into(x, g, t, alpha, alpha)


def _hard_tanh(x, y, t, u):
    np.clip(x, -1.0, 1.0, out=y)


def _g_hard_tanh(x, g, t, u):
    _indicator(g, _clamp_grad(x, -1.0, 1.0))
    keep_nan(x, g)


def _hard_shrink(x, y, t, u, threshold):
    np.copyto(y, x)
    mask = u.view(np.bool_)[: x.size]
    np.abs(x, out=t)
    np.less_equal(t, threshold, out=mask)
    np.copyto(y, 0.0, where=mask)


def _soft_shrink(x, y, t, u, threshold):
    # x - clip(x, -t, t) is x - t above t, x + t below -t and 0 between, with NaN kept.
    np.clip(x, -threshold, threshold, out=t)
    np.subtract(x, t, out=y)


def _g_shrink(x, g, t, u, threshold):
    _indicator(g, np.greater(x, threshold) | np.less_equal(x, -threshold))
    keep_nan(x, g)


def _tanh_shrink(x, y, t, u):
    np.tanh(x, out=t)
    np.subtract(x, t, out=y)


def _g_tanh_shrink(x, g, t, u):
    np.tanh(x, out=g)
    np.multiply(g, g, out=g)


def _threshold(x, y, t, u, threshold, default_value):
    np.copyto(y, x)
    mask = u.view(np.bool_)[: x.size]
    np.less_equal(x, threshold, out=mask)
    np.copyto(y, default_value, where=mask)


def _g_threshold(x, g, t, u, threshold, default_value):
    _indicator(g, np.greater(x, threshold))
    keep_nan(x, g)


def _squareplus(x, y, t, u, sqrt_b):
    # as kernels/gpuact_math.cuh: s = hypot(x, sqrt b) never overflows; x / 2 + s / 2 for x >= 0,
    # sqrt b * (sqrt b / (2 (s - x))) for x < 0 (no cancellation, and b is never formed)
    np.hypot(x, sqrt_b, out=t)
    np.multiply(x, 0.5, out=y)
    np.multiply(t, 0.5, out=u)
    np.add(y, u, out=y)
    np.subtract(t, x, out=t)
    np.multiply(t, 2.0, out=t)
    np.divide(sqrt_b, t, out=t)
    np.multiply(t, sqrt_b, out=t)
    np.copyto(y, t, where=np.less(x, 0.0))


def _g_squareplus(x, g, t, u, sqrt_b):
    if sqrt_b == 0:
        _indicator(g, np.greater(x, 0.0))
        keep_nan(x, g)
        return
    np.hypot(x, sqrt_b, out=t)  # s
    np.divide(x, t, out=g)
    np.multiply(g, 0.5, out=g)
    np.add(g, 0.5, out=g)
    np.copyto(g, 1.0, where=np.equal(x, t))  # +inf, or s rounded to x
    np.subtract(t, x, out=u)
    np.multiply(u, t, out=u)  # s (s - x)
    np.divide(sqrt_b, u, out=u)
    np.multiply(u, sqrt_b * 0.5, out=u)
    np.copyto(g, u, where=np.less(x, 0.0))


def _sparse_plus(x, y, t, u):
    np.clip(x, -1.0, 1.0, out=y)
    np.add(y, 1.0, out=y)
    np.multiply(y, y, out=y)
    np.multiply(y, 0.25, out=y)
    mask = u.view(np.bool_)[: x.size]
    np.greater_equal(x, 1.0, out=mask)
    np.copyto(y, x, where=mask)


def _g_sparse_plus(x, g, t, u):
    np.clip(x, -1.0, 1.0, out=g)
    np.add(g, 1.0, out=g)
    np.multiply(g, 0.5, out=g)


def _sparse_sigmoid(x, y, t, u):
    np.add(x, 1.0, out=y)
    np.multiply(y, 0.5, out=y)
    np.clip(y, 0.0, 1.0, out=y)


def _g_sparse_sigmoid(x, g, t, u):
    _indicator(g, _clamp_grad(x, -1.0, 1.0), 0.5)
    keep_nan(x, g)


# ---------------------------------------------------------------------------------------------
# The derivative ops ``d_<op>`` (gpuact._contract.ops.SECOND_DERIVATIVE_OPS): the forward is op's
# derivative above, the derivative f'' the twin of kernels/gpuact_grad.cuh's ``grad_d_<op>``.


def _g_d_piecewise_linear(x, g, t, u, *params):
    g.fill(0.0)
    keep_nan(x, g)


_g_d_relu = _g_d_relu6 = _g_d_leaky_relu = _g_d_piecewise_linear


def _g_d_sigmoid(x, g, t, u):
    # s' (1 - 2 s) = -tanh(x / 2) s'
    sigmoid_grad_into(x, g, t)
    np.multiply(x, -0.5, out=t)
    np.tanh(t, out=t)
    np.multiply(g, t, out=g)


def _g_d_tanh(x, g, t, u):
    _sech2_into(x, g, t)
    np.tanh(x, out=t)
    np.multiply(t, -2.0, out=t)
    np.multiply(g, t, out=g)


def _g_d_silu(x, g, t, u):
    # s'(x) (2 - x tanh(x / 2)), x clamped where it is 0
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    sigmoid_grad_into(u, g, t)
    np.multiply(u, 0.5, out=t)
    np.tanh(t, out=t)
    np.multiply(t, u, out=t)
    np.subtract(2.0, t, out=t)
    np.multiply(g, t, out=g)


def _g_d_gelu(x, g, t, u):
    # phi(x) (2 - x**2)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    np.multiply(u, u, out=u)
    np.multiply(u, -0.5, out=t)
    np.exp(t, out=g)
    np.multiply(g, _INV_SQRT_2PI, out=g)
    np.subtract(2.0, u, out=t)
    np.multiply(g, t, out=g)


def _g_d_gelu_tanh(x, g, t, u):
    # sech(z)**2 (z' + x (z'' - 2 tanh(z) z'**2) / 2), z = c (x + k x**3)
    c = _SQRT_2_OVER_PI
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    u2 = np.multiply(u, u)
    z = np.multiply(u2, 0.044715)
    np.add(z, 1.0, out=z)
    np.multiply(z, u, out=z)
    np.multiply(z, c, out=z)
    dz = np.multiply(u2, 3 * 0.044715, out=u2)
    np.add(dz, 1.0, out=dz)
    np.multiply(dz, c, out=dz)
    _sech2_into(z, g, t)
    np.tanh(z, out=z)
    np.multiply(z, dz, out=z)
    np.multiply(z, dz, out=z)
    np.multiply(z, -2.0, out=z)
    np.multiply(u, 6 * 0.044715 * c, out=t)
    np.add(t, z, out=t)  # z'' - 2 tanh(z) z'**2
    np.multiply(t, u, out=t)
    np.multiply(t, 0.5, out=t)
    np.add(t, dz, out=t)
    np.multiply(g, t, out=g)


def _g_d_softplus(x, g, t, u):
    sigmoid_grad_into(x, g, t)


def _elu_second_into(x, g, t, scale):
    # scale e**x up to 0 (the left derivative at 0), 0 above
    np.clip(x, -_INF, 0.0, out=t)
    np.exp(t, out=g)
    np.multiply(g, scale, out=g)
    np.copyto(g, 0.0, where=np.greater(x, 0.0))
    keep_nan(x, g)


def _g_d_elu(x, g, t, u, alpha):
    _elu_second_into(x, g, t, alpha)


def _g_d_selu(x, g, t, u):
    _elu_second_into(x, g, t, SELU_SCALE * SELU_ALPHA)


for _op in SECOND_DERIVATIVE_OPS:
    globals()[f"_d_{_op}"] = globals()[f"_g_{_op}"]


# Each op's formula is ``_<op>`` and its derivative ``_g_<op>``: the tables are read from the op
# table's rows, so an op without a formula here fails at import (and tests/test_op_table.py says which).
KERNELS = {name: globals()[f"_{name}"] for name in OPS}


_g_hard_shrink = _g_soft_shrink = _g_shrink  # the same derivative: 1 outside the dead zone
GRADS = {name: globals()[f"_g_{name}"] for name in OPS}


# One ufunc pass each: cutting them into blocks only adds call overhead.
SINGLE_PASS = {"tanh", "exponential", "linear", "hard_tanh"}
