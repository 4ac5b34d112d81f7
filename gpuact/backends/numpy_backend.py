"""The CPU path: compiled fused kernels where they were built, else NumPy ufuncs block by block.

float32 arrays (and float64 ones for the ops in ``_native.FLOAT64_OPS``) go to
``kernels/gpuact_cpu.cc`` (see ``_native.py``) when the package was installed with a C++
compiler: one vectorized pass per op, softmax along any axis, on every core. What follows is the
path for everything else (float16 and integer inputs, masked softmax, float64 exp/log/tanh ops and
softmax, installs without the compiled library), and the formulas those kernels are tested against.

Multi-step formulas (``sigmoid`` is four ufunc passes) would each stream the whole array through
memory if applied to it at once. Instead the array is cut into blocks small enough that a block,
its scratch buffers and its output stay in the core's cache; each step runs in place on the block;
and the blocks are shared out among threads, since ufuncs release the GIL. Every step writes into
``out`` or a scratch buffer, in the compute dtype: float32 stays float32, and float16 and integers
are computed in float32.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpuact._ops import NEGATIVE_SATURATION, SELU_ALPHA, SELU_SCALE
from gpuact.backends import _composite, _interop, _native

# 131072 elements: 512 KiB per float32 buffer, so a thread's input, output and two scratch
# blocks (2 MiB) stay in the shared L3 while every ufunc call has enough work that its Python
# overhead, and the GIL it holds meanwhile, stay small next to the loop that runs without the GIL.
# Measured on the 2-core EPYC (float32, 2**22, two threads): 32K-element blocks left the second
# thread idle (softsign 4.1 ms, elu 6.1 ms), 128K ones halved that (2.5 ms, 3.4 ms), 512K gained
# little more.
BLOCK = 131072
# Below this many elements a second thread costs more (start-up, cache traffic) than it saves: the
# ufunc formulas' passes. The compiled kernels do far more per element and microsecond, so handing
# half of a pass to the pool (a few tens of microseconds on this 2-core VM, under load) pays off only
# on longer arrays, the later the cheaper the op. Measured (float32, one thread against two): relu
# 55 us against 101 us at 2**19, 282 against 260 at 2**21; sigmoid 225 against 227 at 2**19; gelu
# 292 against 220 at 2**18; softmax rows of 1024 131 against 145 at 2**18, 269 against 210 at 2**19.
PARALLEL_MIN = 1 << 16
_CHEAP_OPS = frozenset(
    {
        "relu",
        "relu6",
        "leaky_relu",
        "linear",
        "hard_sigmoid",
        "hard_silu",
        "hard_tanh",
        "hard_shrink",
        "soft_shrink",
        "threshold",
        "sparse_plus",
        "sparse_sigmoid",
        "softsign",
        "squareplus",
    }
)
_HEAVY_OPS = frozenset({"gelu", "gelu_tanh", "mish", "softplus", "log_sigmoid"})
COMPILED_SOFTMAX_PARALLEL_MIN = 1 << 19


def compiled_parallel_min(op: str) -> int:
    """Elements from which a compiled elementwise pass of ``op`` (forward, bias or backward) is
    shared among the threads."""
    if op in _CHEAP_OPS:
        return 1 << 21
    return 1 << 18 if op in _HEAVY_OPS else 1 << 19


THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="gpuact")
    return _pool


def _forget_pool_after_fork():
    # A forked child inherits the pool object but not its threads: work submitted to it would
    # wait forever (multiprocessing with fork, DataLoader workers). The child starts a new pool.
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def unavailable_reason():
    return None


def owns(x) -> bool:
    return isinstance(x, np.ndarray)


def accept(x, stream):
    """``(x, None, None)``: the CPU has no streams (``stream`` is ignored) and no foreign kinds."""
    return np.asarray(x), None, None


def scope(x, stream):
    return contextlib.nullcontext()


def accept_out(out, x, foreign: bool):
    from gpuact import _foreign

    return _foreign.host_out(out)


def accept_operand(a, x, foreign: bool, name: str):
    """An array argument beside x (dy, bias): host data like x (a device array is refused)."""
    from gpuact import _foreign

    if _interop.is_cuda_array(a) or type(a).__module__.split(".")[0] in ("cupy", "numba"):
        raise TypeError(f"{name} must be a host array like x; got {type(a).__module__}.{type(a).__name__}")
    a, _ = _foreign.host_array(a)
    result_dtype_of(a.dtype)
    return a


def overlap(a, b) -> int:
    """0: no shared memory, 1: the same view, 2: partly shared (see ``gpuact._dispatch``)."""
    if not np.may_share_memory(a, b):
        return 0
    same = (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )
    return 1 if same else 2


def copy(a, stream=None):
    return np.array(a, copy=True)


def as_mask(mask, shape, stream=None):
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        mask = mask > 0.5
    return np.broadcast_to(mask, shape)


def as_param_array(alpha, shape, dtype, stream=None):
    return np.broadcast_to(np.asarray(alpha, dtype=_compute_dtype(dtype)), shape)


# np.clip(x, lo, inf) rather than np.maximum(x, lo): with a scalar bound NumPy 2's maximum and
# minimum take a slow loop (2-4x the time of clip, which has its own SIMD loop), and
# np.divide(1.0, y) rather than np.reciprocal(y), for the same reason. Both keep NaN.
_INF = math.inf

# ---------------------------------------------------------------------------------------------
# Elementwise math: f(x, y, t, u, *params) on 1-D contiguous blocks of the compute dtype.
# ``x`` is read only and never aliases ``y``; ``t``, ``u`` are scratch buffers of the same size.


def _is_plain_relu(alpha, threshold, lo, hi):
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


def _sigmoid(x, y, t, u):
    np.copyto(t, x)
    _times_sigmoid(1.0, y, t, np.less(x, 0.0, out=u.view(np.bool_)[: x.size]))


def _log1p_exp_neg_abs(x, t):
    """t = log1p(exp(-|x|)), the smooth part of softplus."""
    np.abs(x, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)


def _softplus(x, y, t, u):
    _log1p_exp_neg_abs(x, t)
    np.clip(x, 0.0, _INF, out=y)
    np.add(y, t, out=y)


def _log_sigmoid(x, y, t, u):
    _log1p_exp_neg_abs(x, t)
    np.clip(x, -_INF, 0.0, out=y)
    np.subtract(y, t, out=y)


def _softsign(x, y, t, u):
    # Clamping to the largest finite value makes ±inf give ±max / (max + 1) = ±1, not inf / inf.
    big = np.finfo(x.dtype).max
    np.clip(x, -big, big, out=t)
    np.abs(t, out=y)
    np.add(y, 1.0, out=y)
    np.divide(t, y, out=y)


def _tanh(x, y, t, u):
    np.tanh(x, out=y)


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


def _elu(x, y, t, u, alpha):
    _elu_into(x, y, t, alpha)


def _selu(x, y, t, u):
    _elu_into(x, y, t, SELU_ALPHA)
    np.multiply(y, SELU_SCALE, out=y)


def _celu(x, y, t, u, alpha):
    _elu_into(x, y, t, alpha, alpha)


def _exponential(x, y, t, u):
    np.exp(x, out=y)


def _linear(x, y, t, u):
    np.copyto(y, x)


def _relu6(x, y, t, u):
    np.clip(x, 0.0, 6.0, out=y)


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


def _silu(x, y, t, u):
    # u * sigmoid(u) with u = max(x, -1e4): -inf gives the limit 0, not -inf * 0
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    np.copyto(t, u)
    _times_sigmoid(u, y, t, np.less(x, 0.0))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


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


# erfc(a) for a >= 0 as t * exp(-a^2 + g(2t - 1)), t = 1 / (1 + a/2): g is smooth on [-1, 1] and
# these polynomials (highest power first) are least-squares fits of it at 4000 Chebyshev nodes
# against scipy.special.erfcx, made for gpuact; tests/test_numpy_erfc.py re-derives them and checks
# the error: below 1e-7 relative with degree 10 (float32) and 1e-14 with degree 22 (float64).
_ERFC_G32 = (
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
_ERFC_G64 = (
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
    coefficients = _ERFC_G64 if x.dtype == np.float64 else _ERFC_G32
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


def _gelu(x, y, t, u):
    # gelu = x Phi(x) = max(x, 0) - |x| h with h = erfc(|x| / sqrt 2) / 2: for x <= 0 that is x h,
    # for x > 0 x (1 - h); no cancellation, and the clip keeps inf * 0 out of both ends.
    _half_erfc_abs(x, u, y, t)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.abs(t, out=t)
    np.multiply(t, u, out=t)
    np.clip(x, 0.0, _INF, out=y)
    np.subtract(y, t, out=y)


def _hard_sigmoid_into(x, y):
    np.add(x, 3.0, out=y)
    np.clip(y, 0.0, 6.0, out=y)
    np.divide(y, 6.0, out=y)


def _hard_sigmoid(x, y, t, u):
    _hard_sigmoid_into(x, y)


def _hard_silu(x, y, t, u):
    _hard_sigmoid_into(x, y)
    # below -3 the sigmoid part is 0; max(x, -3) keeps -inf * 0 from making NaN
    np.clip(x, -3.0, _INF, out=t)
    np.multiply(y, t, out=y)


def _mish(x, y, t, u):
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    _log1p_exp_neg_abs(u, t)
    np.clip(u, 0.0, _INF, out=y)
    np.add(y, t, out=y)
    np.tanh(y, out=y)
    np.multiply(y, u, out=y)


def _hard_tanh(x, y, t, u):
    np.clip(x, -1.0, 1.0, out=y)


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


def _tanh_shrink(x, y, t, u):
    np.tanh(x, out=t)
    np.subtract(x, t, out=y)


def _threshold(x, y, t, u, threshold, default_value):
    np.copyto(y, x)
    mask = u.view(np.bool_)[: x.size]
    np.less_equal(x, threshold, out=mask)
    np.copyto(y, default_value, where=mask)


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


def _sparse_plus(x, y, t, u):
    np.clip(x, -1.0, 1.0, out=y)
    np.add(y, 1.0, out=y)
    np.multiply(y, y, out=y)
    np.multiply(y, 0.25, out=y)
    mask = u.view(np.bool_)[: x.size]
    np.greater_equal(x, 1.0, out=mask)
    np.copyto(y, x, where=mask)


def _sparse_sigmoid(x, y, t, u):
    np.add(x, 1.0, out=y)
    np.multiply(y, 0.5, out=y)
    np.clip(y, 0.0, 1.0, out=y)


_KERNELS = {
    "relu": _relu,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "softsign": _softsign,
    "tanh": _tanh,
    "selu": _selu,
    "elu": _elu,
    "exponential": _exponential,
    "linear": _linear,
    "relu6": _relu6,
    "leaky_relu": _leaky_relu,
    "silu": _silu,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _hard_silu,
    "mish": _mish,
    "log_sigmoid": _log_sigmoid,
    "celu": _celu,
    "hard_tanh": _hard_tanh,
    "hard_shrink": _hard_shrink,
    "soft_shrink": _soft_shrink,
    "tanh_shrink": _tanh_shrink,
    "threshold": _threshold,
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
    "sparse_sigmoid": _sparse_sigmoid,
}


# ---------------------------------------------------------------------------------------------
# Derivatives: g = f'(x) on 1-D contiguous blocks of the compute dtype, the ufunc twins of
# kernels/gpuact_grad.cuh (its rules: the left derivative at a kink, the limit at +-inf, NaN kept,
# stable forms). ``x`` is read only; ``g``, ``t``, ``u`` are scratch of the same size; the driver
# then writes dx = dy * g.


def _keep_nan(x, g):
    np.copyto(g, x, where=np.isnan(x))


def _indicator(g, condition, value=1.0):
    """g = value where condition, else 0."""
    np.multiply(condition, value, out=g, casting="unsafe")


def _clamp_grad(x, lo, hi):
    """The left derivative of clamp(x, lo, hi): lo < x <= hi."""
    return np.greater(x, lo) & np.less_equal(x, hi)


def _sigmoid_grad_into(v, g, t):
    """g = sigmoid'(v) = e / (1 + e)**2, e = exp(-|v|)."""
    np.abs(v, out=t)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=g)
    np.divide(1.0, g, out=g)
    np.multiply(g, g, out=g)
    np.multiply(g, t, out=g)


def _sigmoid_into(v, g, t):
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


def _g_relu(x, g, t, u, alpha, threshold, lo, hi):
    _indicator(g, np.greater(x, threshold) & _clamp_grad(x, lo, hi))
    if alpha != 0:
        np.add(g, np.less_equal(x, threshold) * alpha, out=g, casting="unsafe")
    _keep_nan(x, g)


def _g_sigmoid(x, g, t, u):
    _sigmoid_grad_into(x, g, t)


def _g_softplus(x, g, t, u):
    _sigmoid_into(x, g, t)


def _g_log_sigmoid(x, g, t, u):
    np.negative(x, out=u)
    _sigmoid_into(u, g, t)


def _g_softsign(x, g, t, u):
    np.abs(x, out=g)
    np.add(g, 1.0, out=g)
    np.divide(1.0, g, out=g)
    np.multiply(g, g, out=g)


def _g_tanh(x, g, t, u):
    _sech2_into(x, g, t)


def _elu_grad_into(x, g, t, alpha, divisor):
    np.clip(x, -_INF, 0.0, out=t)
    if divisor != 1.0:
        np.divide(t, divisor, out=t)
    np.exp(t, out=g)
    np.multiply(g, alpha / divisor, out=g)
    np.copyto(g, 1.0, where=np.greater(x, 0.0))
    _keep_nan(x, g)


def _g_elu(x, g, t, u, alpha):
    _elu_grad_into(x, g, t, alpha, 1.0)


def _g_selu(x, g, t, u):
    _elu_grad_into(x, g, t, SELU_ALPHA, 1.0)
    np.multiply(g, SELU_SCALE, out=g)


def _g_celu(x, g, t, u, alpha):
    _elu_grad_into(x, g, t, alpha, alpha)


def _g_exponential(x, g, t, u):
    np.exp(x, out=g)


def _g_linear(x, g, t, u):
    g.fill(1.0)
    _keep_nan(x, g)


def _g_relu6(x, g, t, u):
    _indicator(g, _clamp_grad(x, 0.0, 6.0))
    _keep_nan(x, g)


def _g_leaky_relu(x, g, t, u, negative_slope):
    g.fill(negative_slope)
    np.copyto(g, 1.0, where=np.greater(x, 0.0))
    _keep_nan(x, g)


def _g_silu(x, g, t, u):
    # s(u) (1 + u s(-u)), u = clip(x, -1e4, 1e4)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    np.negative(u, out=g)
    _sigmoid_into(g, g, t)
    np.multiply(g, u, out=g)
    np.add(g, 1.0, out=g)
    v = np.empty_like(u)
    _sigmoid_into(u, v, t)
    np.multiply(g, v, out=g)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
    _keep_nan(x, g)


def _g_gelu_tanh(x, g, t, u):
    # s(2z) + u s'(2z) (2z)', 2z = 2 sqrt(2/pi) (u + 0.044715 u**3)
    c = 2.0 * _SQRT_2_OVER_PI
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    z2 = np.multiply(u, u)
    np.multiply(z2, 0.044715, out=z2)
    np.add(z2, 1.0, out=z2)
    np.multiply(z2, u, out=z2)
    np.multiply(z2, c, out=z2)  # 2z
    _sigmoid_grad_into(z2, g, t)
    np.multiply(u, u, out=t)
    np.multiply(t, 3 * 0.044715, out=t)
    np.add(t, 1.0, out=t)
    np.multiply(t, c, out=t)  # (2z)'
    np.multiply(g, t, out=g)
    np.multiply(g, u, out=g)
    _sigmoid_into(z2, z2, t)
    np.add(g, z2, out=g)


def _g_hard_sigmoid(x, g, t, u):
    _indicator(g, _clamp_grad(x, -3.0, 3.0), 1.0 / 6.0)
    _keep_nan(x, g)


def _g_hard_silu(x, g, t, u):
    _hard_sigmoid_into(x, g)
    np.divide(x, 6.0, out=t)
    np.copyto(t, 0.0, where=~_clamp_grad(x, -3.0, 3.0))
    np.add(g, t, out=g)


def _g_mish(x, g, t, u):
    # tanh(sp) + u sech(sp)**2 s(u), sp = softplus(u), u = clip(x, -1e4, 1e4)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=u)
    sp = np.empty_like(u)
    _log1p_exp_neg_abs(u, sp)
    np.add(sp, np.maximum(u, 0.0), out=sp)
    _sech2_into(sp, g, t)
    np.multiply(g, u, out=g)
    _sigmoid_into(u, t, np.empty_like(u))
    np.multiply(g, t, out=g)
    np.tanh(sp, out=sp)
    np.add(g, sp, out=g)


def _g_hard_tanh(x, g, t, u):
    _indicator(g, _clamp_grad(x, -1.0, 1.0))
    _keep_nan(x, g)


def _g_shrink(x, g, t, u, threshold):
    _indicator(g, np.greater(x, threshold) | np.less_equal(x, -threshold))
    _keep_nan(x, g)


def _g_tanh_shrink(x, g, t, u):
    np.tanh(x, out=g)
    np.multiply(g, g, out=g)


def _g_threshold(x, g, t, u, threshold, default_value):
    _indicator(g, np.greater(x, threshold))
    _keep_nan(x, g)


def _g_squareplus(x, g, t, u, sqrt_b):
    if sqrt_b == 0:
        _indicator(g, np.greater(x, 0.0))
        _keep_nan(x, g)
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


def _g_sparse_plus(x, g, t, u):
    np.clip(x, -1.0, 1.0, out=g)
    np.add(g, 1.0, out=g)
    np.multiply(g, 0.5, out=g)


def _g_sparse_sigmoid(x, g, t, u):
    _indicator(g, _clamp_grad(x, -1.0, 1.0), 0.5)
    _keep_nan(x, g)


_GRADS = {
    "relu": _g_relu,
    "sigmoid": _g_sigmoid,
    "softplus": _g_softplus,
    "softsign": _g_softsign,
    "tanh": _g_tanh,
    "selu": _g_selu,
    "elu": _g_elu,
    "exponential": _g_exponential,
    "linear": _g_linear,
    "relu6": _g_relu6,
    "leaky_relu": _g_leaky_relu,
    "silu": _g_silu,
    "gelu": _g_gelu,
    "gelu_tanh": _g_gelu_tanh,
    "hard_sigmoid": _g_hard_sigmoid,
    "hard_silu": _g_hard_silu,
    "mish": _g_mish,
    "log_sigmoid": _g_log_sigmoid,
    "celu": _g_celu,
    "hard_tanh": _g_hard_tanh,
    "hard_shrink": _g_shrink,
    "soft_shrink": _g_shrink,
    "tanh_shrink": _g_tanh_shrink,
    "threshold": _g_threshold,
    "squareplus": _g_squareplus,
    "sparse_plus": _g_sparse_plus,
    "sparse_sigmoid": _g_sparse_sigmoid,
}


# ---------------------------------------------------------------------------------------------
# The block driver.


def _parallel_ranges(count: int, work: int, minimum: int = PARALLEL_MIN) -> list[tuple[int, int]]:
    """``count`` items (blocks, rows, ...) cut into one contiguous range per thread, or a single
    range when the ``work`` (elements) is below ``minimum``, too little for a second thread to pay
    off."""
    if work < minimum or count < 2 or THREADS == 1:
        return [(0, count)]
    per = -(-count // THREADS)
    return [(i * per, min(count, (i + 1) * per)) for i in range(THREADS) if i * per < count]


def _split(n: int) -> list[tuple[int, int]]:
    """Element ranges, one per thread, each a whole number of blocks (but the last)."""
    return [(lo * BLOCK, min(n, hi * BLOCK)) for lo, hi in _parallel_ranges(-(-n // BLOCK), n)]


class _Stop(Exception):
    """Raised inside a pool task told to stop (its call was interrupted, or failed elsewhere)."""


def _run_parallel(fn, ranges):
    """``fn(lo, hi, stop)`` for each range: the first on this thread, the others on the pool.

    ``stop`` is a ``threading.Event`` (None for a lone range) that ``fn`` checks between pieces of
    its range (see ``_pieces``). When this thread is interrupted (Ctrl-C) or any range fails, the
    others are told to stop and are waited for before the exception propagates: no thread keeps
    writing into the caller's arrays after the call has returned.
    """
    if len(ranges) == 1:
        fn(*ranges[0], None)
        return
    stop = threading.Event()
    futures = [_executor().submit(fn, lo, hi, stop) for lo, hi in ranges[1:]]
    try:
        fn(*ranges[0], stop)
        for f in futures:
            f.result()
    except BaseException:
        stop.set()
        concurrent.futures.wait(futures)
        raise


# The largest piece of a range a thread works on between two checks for a stop: 4 MiB of float32,
# about a millisecond, so an interrupted call returns promptly and the checks cost nothing.
_PIECE = 1 << 20


def _pieces(lo: int, hi: int, stop, step: int = _PIECE):
    """``(start, end)`` pieces of ``[lo, hi)``; raises ``_Stop`` once ``stop`` is set."""
    for start in range(lo, hi, step):
        if stop is not None and stop.is_set():
            raise _Stop
        yield start, min(start + step, hi)


def _compute_dtype(dtype) -> np.dtype:
    return _F64 if dtype == _F64 else _F32


def result_dtype_of(dtype):
    """Refuses what is not real numbers (TypeError), as gpuact._dispatch.result_dtype does."""
    if np.dtype(dtype).kind not in "biuf":
        raise TypeError(f"gpuact activations take real numbers; got an array of dtype {np.dtype(dtype)}")


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_NO_PARAMS = ((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0), (0.0,), ())
# One ufunc pass each: cutting them into blocks only adds call overhead.
_SINGLE_PASS = {"tanh", "exponential", "linear", "hard_tanh"}
# The compiled kernels run in chunks of whole cache lines, one contiguous range a thread.
_NATIVE_CHUNK = 1024


def elementwise(op, x, params, out, dtype, stream=None, bias=None):
    """``out = op(x)`` (``op(x + bias)`` with a bias): the compiled kernel where there is one, else
    the ufunc formula.

    Contiguous arrays of the compute dtype run in place in one pass. Anything else (strides,
    broadcast zero strides, float16 and integer inputs, a float16 or non-contiguous ``out``) is
    read and written through ``numpy.nditer``'s buffers, in blocks: no copy of the whole input or
    output is ever made, so peak memory stays at the output plus a few blocks.
    """
    if bias is not None:
        return _elementwise_bias(op, x, params, out, dtype, bias)
    n = x.size
    if (
        n < compiled_parallel_min(op)
        and x.dtype is dtype
        and x.flags.c_contiguous
        and (out is None or (out.dtype is dtype and out.flags.c_contiguous))
    ):
        # The small common call, kept to a few hundred nanoseconds on top of the kernel itself.
        entry = _native.fast_unary(op, dtype)
        if entry:
            run, index, code = entry
            y = np.empty_like(x) if out is None else out
            run(index, code, x, y, 0, n, *params, *_NO_PARAMS[len(params)])
            return y
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if n == 0:
        return y
    native = _native.elementwise_kernel(op, compute)
    direct = y.dtype == compute and y.flags.c_contiguous
    if x.dtype == compute and x.flags.c_contiguous and direct:
        xf, yf = x.reshape(-1), y.reshape(-1)
    elif n <= BLOCK:
        # small: a private contiguous copy is cheaper than setting up the buffered iterator
        xf = np.array(x, dtype=compute, order="C").reshape(-1)
        yf = y.reshape(-1) if direct else np.empty(n, compute)
    else:
        _buffered_elementwise(op, native, x, y, params, compute)
        return y
    if native is not None:
        _native_elementwise(native, xf, yf, tuple(params) + _NO_PARAMS[len(params)], compiled_parallel_min(op))
    else:
        _ufunc_elementwise(op, xf, yf, params, compute)
    if yf.base is not y and yf is not y:
        with np.errstate(all="ignore"):  # float16 results beyond its range are inf, as intended
            np.copyto(y, yf.reshape(y.shape), casting="unsafe")
    return y


def _in_compute_dtype(params, compute):
    """The parameters rounded to the compute dtype, as the compiled kernels receive them: a slope
    of 1e-50 is 0 in float32 on both paths, and a float32 formula never sees a float64 scalar."""
    return tuple(compute.type(p) for p in params)


def _run_ranges(n: int, call, minimum: int):
    """``call(start, end)`` over [0, n) in whole cache lines, on every core from ``minimum``
    elements, in pieces between stop checks (see ``_run_parallel``)."""
    if n < minimum:
        call(0, n)
        return
    chunks = -(-n // _NATIVE_CHUNK)

    def run(lo, hi, stop):
        for start, end in _pieces(lo * _NATIVE_CHUNK, min(n, hi * _NATIVE_CHUNK), stop):
            call(start, end)

    _run_parallel(run, _parallel_ranges(chunks, n, minimum))


def _native_elementwise(kernel, xf, yf, params, minimum):
    """``yf = op(xf)`` by a compiled kernel (``params`` padded to 4), on every core from
    ``minimum`` elements; ``xf`` is ``yf`` or does not overlap it."""
    _run_ranges(xf.size, lambda start, end: kernel(xf, yf, start, end, *params), minimum)


def _ufunc_elementwise(op, xf, yf, params, compute):
    """``yf = op(xf)`` by the ufunc formula on flat contiguous arrays of the compute dtype, in
    blocks that stay in cache, on every core for large arrays."""
    kernel = _KERNELS[op]
    params = _in_compute_dtype(params, compute)
    n = xf.size
    single_pass = op in _SINGLE_PASS or (op == "relu" and _is_plain_relu(*params))
    # the formulas write y before they are done reading x: an in-place block is staged
    stage_in = np.may_share_memory(xf, yf)
    if n <= BLOCK and not stage_in:
        # small (the common inference call): one block, no closures, no threads
        with np.errstate(all="ignore"):
            kernel(xf, yf, np.empty(n, compute), np.empty(n, compute), *params)
        return
    block = n if single_pass and not stage_in else BLOCK

    def run(lo, hi, stop):
        size = min(block, hi - lo)
        t, u = np.empty(size, compute), np.empty(size, compute)
        xin = np.empty(size, compute) if stage_in else None
        with np.errstate(all="ignore"):  # inf and NaN results are intended, never warned about
            for start, end in _pieces(lo, hi, stop, block):
                m = end - start
                xb = xf[start:end]
                if stage_in:
                    np.copyto(xin[:m], xb)
                    xb = xin[:m]
                kernel(xb, yf[start:end], t[:m], u[:m], *params)

    # A single memory-bound pass gains nothing from a second thread: the two threads' first
    # touches of fresh pages contend (measured 1.5-2x slower).
    _run_parallel(run, [(0, n)] if single_pass else _split(n))


def _buffered_elementwise(op, native, x, y, params, compute):
    """``y = op(x)`` for any layouts and dtypes, through ``_buffered_map``'s contiguous blocks."""
    kernel = _KERNELS[op]
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    params = _in_compute_dtype(params, compute)

    def apply(xb, yb, scratch):
        m = xb.size
        if native is not None:
            native(xb, yb, 0, m, *p4)
            return
        if np.may_share_memory(xb, yb):  # the formulas write y before they are done reading x
            xin = _scratch(scratch, "x", m, compute)
            np.copyto(xin, xb)
            xb = xin
        kernel(xb, yb, _scratch(scratch, "t", m, compute), _scratch(scratch, "u", m, compute), *params)

    _buffered_map(apply, [x], y, compute)


# ---------------------------------------------------------------------------------------------
# Softmax family: rows of the (reduced) axes, several rows per block.


def _merged_axis(shape, axes):
    """``(outer, length, inner)`` when ``axes`` are adjacent, so that a C-contiguous array reshapes
    to 3-D for free and is reduced along its middle axis; ``None`` when they are not."""
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return None
    return (math.prod(shape[: axes[0]]), math.prod(shape[axes[0] : axes[-1] + 1]), math.prod(shape[axes[-1] + 1 :]))


def _softmax_block(x, y, log, mask):
    """Softmax along axis 1 of ``x`` into ``y`` (compute dtype; ``y`` never aliases ``x``)."""
    # ufunc.reduce, not np.max / np.sum: their Python wrappers hold the GIL for microseconds a call,
    # which is what kept a second thread from helping.
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.maximum.reduce(x, axis=1, keepdims=True)
    np.subtract(x, m, out=y)
    if log:
        e = np.exp(y)
        s = np.add.reduce(e, axis=1, keepdims=True)
        np.log(s, out=s)
        np.subtract(y, s, out=y)
    else:
        np.exp(y, out=y)
        s = np.add.reduce(y, axis=1, keepdims=True)
        np.divide(1.0, s, out=s)
        np.multiply(y, s, out=y)
    if mask is not None:
        # masked positions are 0, also in a fully masked slice, whose -inf - -inf made NaN
        np.copyto(y, 0.0, where=~mask)


def _softmax_slabs(x3, y3, log, mask3):
    """Softmax along the middle axis of contiguous (outer, length, inner) arrays whose (inner) rows
    are long: every block is a run of whole rows, contiguous in memory. Three passes: the max, then
    exp(x - max) and its sum (accumulated in float64: a float32 sum over 2**25 rows drifts by ~1e-4),
    then the scaling; each pass is cut into blocks of rows shared among the threads."""
    outer, length, inner = x3.shape
    rows_per_block = max(1, BLOCK // inner)
    chunks = [(r, min(r + rows_per_block, length)) for r in range(0, length, rows_per_block)]
    ranges = _parallel_ranges(len(chunks), length * inner)
    for o in range(outer):
        x2, y2 = x3[o], y3[o]
        keep = None if mask3 is None else mask3[o]
        partial_max = [None] * len(ranges)
        partial_sum = [None] * len(ranges)

        def reduce_max(k, stop):
            lo, hi = ranges[k]
            m = np.full(inner, -np.inf, x2.dtype)
            for a, b in chunks[lo:hi]:
                _check(stop)
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.maximum(m, np.max(block, axis=0), out=m)
            partial_max[k] = m

        def exp_and_sum(k, stop, m):
            lo, hi = ranges[k]
            s = np.zeros(inner, np.float64)
            for a, b in chunks[lo:hi]:
                _check(stop)
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.subtract(block, m, out=y2[a:b])
                e = np.exp(y2[a:b]) if log else np.exp(y2[a:b], out=y2[a:b])
                np.add(s, np.sum(e, axis=0, dtype=np.float64), out=s)
            partial_sum[k] = s

        def scale(k, stop, s):
            lo, hi = ranges[k]
            for a, b in chunks[lo:hi]:
                _check(stop)
                if log:
                    np.subtract(y2[a:b], s, out=y2[a:b])
                else:
                    np.multiply(y2[a:b], s, out=y2[a:b])
                if keep is not None:
                    np.copyto(y2[a:b], 0.0, where=~keep[a:b])

        _each_in_parallel(reduce_max, len(ranges))
        m = np.max(np.stack(partial_max), axis=0)
        _each_in_parallel(lambda k, stop: exp_and_sum(k, stop, m), len(ranges))
        s = np.sum(np.stack(partial_sum), axis=0)
        with np.errstate(all="ignore"):
            s = (np.log(s) if log else 1.0 / s).astype(x2.dtype)
        _each_in_parallel(lambda k, stop: scale(k, stop, s), len(ranges))


def _check(stop):
    if stop is not None and stop.is_set():
        raise _Stop


# Columns a work unit of the compiled column softmax takes (the kernel's maximum). Narrower units
# meant to keep a unit's rows in cache measured slower (2**22 float32, axis 0, 2-core EPYC: 16
# columns 4.1-5.5 ms, 64 columns 2.2-3.3 ms, 256 columns 1.7-3.5 ms): a row segment that short,
# at a stride of a whole row, uses its cache lines poorly and maps many rows to the same sets.
_COLUMN_WIDTH = 256


def _native_softmax_rows(kernel, x2, y2, log):
    """Softmax along the last axis of contiguous 2-D arrays: one fused compiled pass a row, the
    rows shared among the threads (in pieces of about ``_PIECE`` elements between stop checks)."""
    rows, length = x2.shape
    step = max(1, _PIECE // length)

    def run(lo, hi, stop):
        for start, end in _pieces(lo, hi, stop, step):
            kernel(x2, y2, start, end, length, int(log))

    _run_parallel(run, _parallel_ranges(rows, x2.size, COMPILED_SOFTMAX_PARALLEL_MIN))


def _native_softmax_columns(kernel, x3, y3, log):
    outer, length, inner = x3.shape
    width = min(_COLUMN_WIDTH, inner)
    units = outer * -(-inner // width)
    step = max(1, _PIECE // (length * width))

    def run(lo, hi, stop):
        for start, end in _pieces(lo, hi, stop, step):
            kernel(x3, y3, length, inner, width, start, end, int(log))

    _run_parallel(run, _parallel_ranges(units, x3.size, COMPILED_SOFTMAX_PARALLEL_MIN))


def _each_in_parallel(fn, count):
    """fn(0, stop) ... fn(count - 1, stop), one per thread; warnings are off in each (errstate is
    per thread)."""

    def body(lo, hi, stop):
        with np.errstate(all="ignore"):
            for k in range(lo, hi):
                fn(k, stop)

    _run_parallel(body, [(k, k + 1) for k in range(count)])


def softmax(x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """Softmax along ``axes``. Three routes, by what the arrays allow:

    * contiguous float32 without a mask, written into a separate contiguous result: the compiled
      row kernel (last axes) or column kernel (any other adjacent axes), in place on the arrays;
    * contiguous float64 (or no compiled module) with long inner rows: ``_softmax_slabs``;
    * anything else (float16 and integer inputs, views, non-adjacent axes, masks, in place): slices
      gathered a chunk at a time into contiguous scratch rows of the compute dtype, computed there,
      and written back, so memory beyond the result stays at a few chunks (at least one slice).
    """
    n = x.size
    if bias is not None:
        y = np.empty(x.shape, dtype) if out is None else out
        if n:
            _softmax_gathered(x, axes, y, _compute_dtype(dtype), log, mask, bias)
        return y
    if (
        out is None
        and mask is None
        and n < COMPILED_SOFTMAX_PARALLEL_MIN
        and axes[0] == x.ndim - 1
        and x.dtype is dtype
        and x.flags.c_contiguous
    ):
        # the small common call: one compiled pass over the rows, nothing else
        entry = _native.fast_softmax_rows(dtype)
        if entry and n:
            y = np.empty_like(x)
            length = x.shape[-1]
            entry(x, y, 0, n // length, length, int(log))
            return y
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if n == 0:
        return y
    merged = _merged_axis(x.shape, axes)
    contiguous = (
        merged is not None
        and x.dtype == compute
        and y.dtype == compute
        and x.flags.c_contiguous
        and y.flags.c_contiguous
        and not np.may_share_memory(x, y)
    )
    if contiguous:
        outer, length, inner = merged
        x3, y3 = x.reshape(merged), y.reshape(merged)
        if mask is None and inner == 1 and (kernel := _native.softmax_rows_kernel(compute)) is not None:
            _native_softmax_rows(kernel, x3[:, :, 0], y3[:, :, 0], log)
            return y
        if mask is None and inner > 1 and (kernel := _native.softmax_columns_kernel(compute)) is not None:
            _native_softmax_columns(kernel, x3, y3, log)
            return y
        if inner > 1 and length * inner > BLOCK:
            mask3 = None if mask is None else np.ascontiguousarray(mask).reshape(merged)
            _softmax_slabs(x3, y3, log, mask3)
            return y
    _softmax_gathered(x, axes, y, compute, log, mask)
    return y


def _softmax_gathered(x, axes, y, compute, log, mask, bias=None):
    """Softmax of the slices along ``axes`` (of ``x + bias``) through ``_gathered_rows``: the
    compiled row kernel (float32, no mask) or ``_softmax_block``."""
    rows_kernel = _native.softmax_rows_kernel(compute) if mask is None else None

    def rows_fn(src, res, keep):
        if rows_kernel is not None:
            rows_kernel(src, res, 0, src.shape[0], src.shape[1], int(log))
        else:
            _softmax_block(src, res, log, keep)

    _gathered_rows(x, axes, y, compute, rows_fn, mask, add=bias)


def _gathered_rows(x, axes, y, compute, rows_fn, mask=None, extra=(), add=None):
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
    chunks = list(_row_chunks(rest_shape, max(1, BLOCK // length)))

    def run(lo, hi, stop):
        scratch = None
        with np.errstate(all="ignore"):
            for index in chunks[lo:hi]:
                _check(stop)
                xc, yc = xt[index], yt[index]
                rows = xc.size // length
                if scratch is None:
                    size = max(rows, max(1, BLOCK // length)) * length
                    scratch = [np.empty(size, compute) for _ in range(2 + len(et))]
                src = scratch[0][: xc.size].reshape(xc.shape)
                if at is None:
                    np.copyto(src, xc, casting="unsafe")
                else:
                    np.add(xc, at[index], out=src, dtype=compute, casting="unsafe")  # float16 added in float32
                res = scratch[1][: xc.size]
                gathered = []
                for k, e in enumerate(et):
                    buf = scratch[2 + k][: xc.size].reshape(xc.shape)
                    np.copyto(buf, e[index], casting="unsafe")
                    gathered.append(buf.reshape(rows, length))
                keep = None if mt is None else np.reshape(mt[index], (rows, length))
                rows_fn(src.reshape(rows, length), res.reshape(rows, length), keep, *gathered)
                np.copyto(yc, res.reshape(xc.shape), casting="unsafe")

    _run_parallel(run, _parallel_ranges(len(chunks), x.size))


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


def _buffered_map(fn, inputs, y, compute):
    """``fn(*input_blocks, *output_blocks, scratch)`` on contiguous blocks of the compute dtype of
    the inputs (broadcast against the outputs) and of ``y`` (an array, or a list of arrays of one
    shape), which NumPy's buffered iterator gathers, casts and writes back, a range of blocks per
    thread. ``scratch`` is a per-thread dict. An input block may be an output's block itself (an
    unbuffered in-place operand): ``fn`` must allow it."""
    outputs = list(y) if isinstance(y, (list, tuple)) else [y]
    operands = [*inputs, *outputs]
    op_flags = [["readonly", "contig", "aligned"]] * len(inputs) + [["writeonly", "contig", "aligned"]] * len(outputs)
    it = np.nditer(
        operands,
        flags=["external_loop", "buffered", "zerosize_ok", "ranged", "delay_bufalloc"],
        op_flags=op_flags,
        op_dtypes=[compute] * len(operands),
        casting="unsafe",
        buffersize=BLOCK,
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
                _check(stop)
                fn(*blocks, scratch)

    _run_parallel(run, _split(it.itersize))


def _scratch(scratch: dict, name: str, m: int, compute):
    buf = scratch.get(name)
    if buf is None:
        buf = scratch[name] = np.empty(BLOCK, compute)
    return buf[:m]


def glu(x, axis, out, dtype, stream=None):
    """``a * sigmoid(b)`` for the halves ``a, b`` of ``x`` along ``axis``: views of ``x`` read
    block by block, no copy of either half."""
    compute = _compute_dtype(dtype)
    half = x.shape[axis] // 2
    a = x[(slice(None),) * axis + (slice(0, half),)]
    b = x[(slice(None),) * axis + (slice(half, 2 * half),)]
    y = np.empty(a.shape, dtype) if out is None else out
    if y.size == 0:
        return y
    sigmoid = _native.elementwise_kernel("sigmoid", compute)

    def gate(ab, bb, yb, scratch):
        m = yb.size
        s = _scratch(scratch, "s", m, compute)
        if sigmoid is not None:
            sigmoid(bb, s, 0, m)
        else:
            _sigmoid(bb, s, _scratch(scratch, "t", m, compute), _scratch(scratch, "u", m, compute))
        np.multiply(ab, s, out=yb)

    _buffered_map(gate, [a, b], y, compute)
    return y


def sparsemax(x, axis, out, dtype, stream=None):
    """Sparsemax along ``axis``, slices gathered in chunks (``_gathered_rows``): the compiled row
    kernel (bisection and Michelot steps on tau, O(length) a pass, float32 and float64) or, without
    it, the sort-based NumPy composition on each chunk."""
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if x.size == 0:
        return y
    kernel = _native.sparsemax_rows_kernel(compute)

    def rows_fn(src, res, keep):
        if kernel is not None:
            kernel(src, res, 0, src.shape[0], src.shape[1])
        else:
            _composite.sparsemax_into(np, src, 1, res, compute)

    _gathered_rows(x, (axis,), y, compute, rows_fn)
    return y


def prelu(x, alpha, out, dtype, stream=None):
    """``max(x, 0) + alpha * min(x, 0)``, block by block: ``alpha`` stays a broadcast view. Where
    ``alpha`` is 0 the second term is 0, also at ``x = -inf`` (the limit, as leaky_relu)."""
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if y.size == 0:
        return y

    def leaky(xb, ab, yb, scratch):
        neg = _scratch(scratch, "neg", yb.size, compute)
        np.minimum(xb, 0.0, out=neg)
        np.multiply(neg, ab, out=neg)
        np.copyto(neg, 0.0, where=ab == 0)  # alpha 0 (Keras's initial PReLU) at -inf: 0, not 0 * -inf
        np.maximum(xb, 0.0, out=yb)  # after xb's last read: yb may be xb (in place)
        np.add(yb, neg, out=yb)

    _buffered_map(leaky, [x, alpha], y, compute)
    return y


# ---------------------------------------------------------------------------------------------
# Training: the fused bias and the backward passes (gpuact.backward).


def _contiguous_in(a, compute) -> bool:
    return a.dtype == compute and a.flags.c_contiguous


def _trailing_bias(b, shape, compute):
    """``b`` flat, when it is a contiguous array of the compute dtype that broadcasts along the
    trailing axes of ``shape`` (the flat element i of x takes ``b.flat[i % b.size]``), else None."""
    if not _contiguous_in(b, compute) or b.size == 0:
        return None
    core = b.shape
    while core and core[0] == 1:
        core = core[1:]
    if len(core) > len(shape) or tuple(shape[len(shape) - len(core) :]) != tuple(core):
        return None
    return b.reshape(-1)


def _add_bias(xb, bb, scratch, compute):
    """The block x + bias, in scratch (a block, in cache: never a temporary of x's size)."""
    s = _scratch(scratch, "biased", xb.size, compute)
    np.add(xb, bb, out=s)
    return s


def _elementwise_bias(op, x, params, out, dtype, bias):
    """``op(x + bias)``: one compiled pass reading x and the bias along x's trailing axes when the
    arrays allow it, else block by block with the add in a cache-sized block."""
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if y.size == 0:
        return y
    native = _native.elementwise_kernel(op, compute)
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    flat_bias = _trailing_bias(bias, x.shape, compute)
    if native is not None and flat_bias is not None and _contiguous_in(x, compute) and _contiguous_in(y, compute):
        xf, yf = x.reshape(-1), y.reshape(-1)
        _run_ranges(
            xf.size, lambda start, end: native.bias(xf, flat_bias, yf, start, end, *p4), compiled_parallel_min(op)
        )
        return y
    kernel, cparams = _KERNELS[op], _in_compute_dtype(params, compute)

    def apply(xb, bb, yb, scratch):
        xs = _add_bias(xb, bb, scratch, compute)
        m = xs.size
        if native is not None:
            native(xs, yb, 0, m, *p4)
        else:
            kernel(xs, yb, _scratch(scratch, "t", m, compute), _scratch(scratch, "u", m, compute), *cparams)

    _buffered_map(apply, [x, bias], y, compute)
    return y


def elementwise_grad(op, dy, x, params, out, dtype, stream=None, bias=None):
    """``dx = dy * op'(x)`` (``op'(x + bias)`` with a bias) in one pass: the compiled kernel reads
    dy and x (and the bias) once and writes dx, for float32 and float64; float16, integer and
    strided operands go block by block; without the compiled module, the ufunc derivative."""
    n = x.size
    if (
        bias is None
        and n < compiled_parallel_min(op)
        and x.dtype is dtype
        and dy.dtype is dtype
        and x.flags.c_contiguous
        and dy.flags.c_contiguous
        and (out is None or (out.dtype is dtype and out.flags.c_contiguous))
    ):
        # the small common call: no views, no ranges, no wrapper
        entry = _native.fast_grad(op, dtype)
        if entry:
            run, index, code = entry
            dx = np.empty_like(x) if out is None else out
            run(index, code, dy, x, dx, 0, n, *params, *_NO_PARAMS[len(params)])
            return dx
    compute = _compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    kernel = _native.grad_kernel(op, compute)
    p4 = tuple(params) + _NO_PARAMS[len(params)]
    flat_bias = None if bias is None else _trailing_bias(bias, x.shape, compute)
    if (
        kernel is not None
        and _contiguous_in(dy, compute)
        and _contiguous_in(x, compute)
        and _contiguous_in(dx, compute)
        and (bias is None or flat_bias is not None)
    ):
        dyf, xf, dxf = dy.reshape(-1), x.reshape(-1), dx.reshape(-1)
        minimum = compiled_parallel_min(op)
        if bias is None:
            _run_ranges(xf.size, lambda start, end: kernel.grad(dyf, xf, dxf, start, end, *p4), minimum)
        else:
            _run_ranges(xf.size, lambda start, end: kernel.grad_bias(dyf, xf, flat_bias, dxf, start, end, *p4), minimum)
        return dx
    derivative, cparams = _GRADS[op], _in_compute_dtype(params, compute)

    def apply(*blocks):
        if bias is None:
            dyb, xb, dxb, scratch = blocks
        else:
            dyb, xb, bb, dxb, scratch = blocks
            xb = _add_bias(xb, bb, scratch, compute)
        m = xb.size
        if kernel is not None:
            kernel.grad(dyb, xb, dxb, 0, m, *p4)
            return
        g = _scratch(scratch, "g", m, compute)
        derivative(xb, g, _scratch(scratch, "t", m, compute), _scratch(scratch, "u", m, compute), *cparams)
        np.multiply(dyb, g, out=dxb)

    _buffered_map(apply, [dy, x] if bias is None else [dy, x, bias], dx, compute)
    return dx


def _softmax_grad_block(dy, x, dx, log, keep):
    """The softmax / log_softmax backward along axis 1 of (rows, length) blocks, the forward
    recomputed by ``_softmax_block`` (into dx first)."""
    _softmax_block(x, dx, False, keep)  # y = softmax(x), 0 where masked
    if keep is not None:
        dy = np.where(keep, dy, 0.0)
    if log:
        total = np.add.reduce(dy, axis=1, keepdims=True, dtype=np.float64).astype(dx.dtype)
        np.multiply(dx, total, out=dx)
        np.subtract(dy, dx, out=dx)
    else:
        dot = np.add.reduce(dy * dx, axis=1, keepdims=True, dtype=np.float64).astype(dx.dtype)
        np.multiply(dx, np.subtract(dy, dot), out=dx)
    if keep is not None:
        # a masked position gets no gradient, also in a slice whose dot is NaN (0 * NaN)
        np.copyto(dx, 0.0, where=~keep)


def softmax_grad(dy, x, axes, out, dtype, *, log, mask=None, bias=None, stream=None):
    """The softmax / log_softmax backward along ``axes``: slices of x (plus the bias) and dy
    gathered in chunks, the forward recomputed per slice, one compiled pass (float32 and float64,
    no mask) or the ufunc block."""
    compute = _compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    merged = _merged_axis(x.shape, axes)
    if (
        merged is not None
        and merged[2] > 1
        and mask is None
        and bias is None
        and all(_contiguous_in(a, compute) for a in (dy, x, dx))
        and (columns := _native.columns_grad_kernel(compute)) is not None
    ):
        # along a middle axis of contiguous arrays: the column kernel, no transposing gather
        outer, length, inner = merged
        width = min(_COLUMN_WIDTH, inner)
        units = outer * -(-inner // width)
        step = max(1, _PIECE // (length * width))

        def run(lo, hi, stop):
            for start, end in _pieces(lo, hi, stop, step):
                columns(dy, x, dx, length, inner, width, start, end, int(log))

        _run_parallel(run, _parallel_ranges(units, x.size))
        return dx
    kernel = _native.rows_grad_kernel("softmax", compute) if mask is None else None

    def rows_fn(src, res, keep, dyc):
        if kernel is not None:
            kernel(dyc, src, res, 0, src.shape[0], src.shape[1], int(log))
        else:
            _softmax_grad_block(dyc, src, res, log, keep)

    _gathered_rows(x, axes, dx, compute, rows_fn, mask, extra=(dy,), add=bias)
    return dx


def sparsemax_grad(dy, x, axis, out, dtype, stream=None):
    """The sparsemax backward along ``axis``: dx = s (dy - mean of dy over the support), the support
    s recomputed per slice (gathered in chunks)."""
    compute = _compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    kernel = _native.rows_grad_kernel("sparsemax", compute)

    def rows_fn(src, res, keep, dyc):
        if kernel is not None:
            kernel(dyc, src, res, 0, src.shape[0], src.shape[1])
            return
        _composite.sparsemax_into(np, src, 1, res, compute)
        support = res > 0
        count = np.maximum(support.sum(axis=1, keepdims=True), 1)
        mean = np.add.reduce(np.where(support, dyc, 0.0), axis=1, keepdims=True, dtype=np.float64) / count
        nan = np.isnan(res).any(axis=1, keepdims=True)
        np.subtract(dyc, mean.astype(compute), out=res, where=support)
        np.copyto(res, 0.0, where=~support)
        np.copyto(res, np.nan, where=nan)

    _gathered_rows(x, (axis,), dx, compute, rows_fn, extra=(dy,))
    return dx


def glu_grad(dy, x, axis, out, dtype, stream=None):
    """glu's backward, both halves in one pass: da = dy sigmoid(b), db = dy a sigmoid'(b)."""
    compute = _compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx
    half = x.shape[axis] // 2
    first, second = (slice(None),) * axis + (slice(0, half),), (slice(None),) * axis + (slice(half, 2 * half),)

    def gate_grad(ab, bb, dyb, dab, dbb, scratch):
        m = dyb.size
        s = _scratch(scratch, "s", m, compute)
        t = _scratch(scratch, "t", m, compute)
        ds = _scratch(scratch, "ds", m, compute)
        _sigmoid_into(bb, s, t)
        _sigmoid_grad_into(bb, ds, t)
        np.multiply(ds, ab, out=ds)
        np.multiply(ds, dyb, out=dbb)
        np.multiply(s, dyb, out=dab)

    _buffered_map(gate_grad, [x[first], x[second], dy], [dx[first], dx[second]], compute)
    return dx


def prelu_grad(dy, x, alpha, out, dtype, stream=None):
    """``dx = dy`` where x > 0, ``dy * alpha`` elsewhere (the left derivative at 0); NaN kept."""
    compute = _compute_dtype(dtype)
    dx = np.empty(x.shape, dtype) if out is None else out
    if dx.size == 0:
        return dx

    def leaky_grad(dyb, xb, ab, dxb, scratch):
        g = _scratch(scratch, "g", dxb.size, compute)
        np.copyto(g, ab)
        np.copyto(g, 1.0, where=np.greater(xb, 0.0))
        _keep_nan(xb, g)
        np.multiply(dyb, g, out=dxb)

    _buffered_map(leaky_grad, [dy, x, alpha], dx, compute)
    return dx
