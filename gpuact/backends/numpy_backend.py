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

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpuact._ops import NEGATIVE_SATURATION, SELU_ALPHA, SELU_SCALE
from gpuact.backends import _composite, _native

# 131072 elements: 512 KiB per float32 buffer, so a thread's input, output and two scratch
# blocks (2 MiB) stay in the shared L3 while every ufunc call has enough work that its Python
# overhead, and the GIL it holds meanwhile, stay small next to the loop that runs without the GIL.
# Measured on the 2-core EPYC (float32, 2**22, two threads): 32K-element blocks left the second
# thread idle (softsign 4.1 ms, elu 6.1 ms), 128K ones halved that (2.5 ms, 3.4 ms), 512K gained
# little more.
BLOCK = 131072
# Below this many elements a second thread costs more (start-up, cache traffic) than it saves.
PARALLEL_MIN = 1 << 16
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


def asarray(x):
    return np.asarray(x)


def as_mask(mask, shape):
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        mask = mask > 0.5
    return np.broadcast_to(mask, shape)


def as_param_array(alpha, shape, dtype):
    return np.broadcast_to(np.asarray(alpha, dtype=_compute_dtype(dtype)), shape)


def _compute_dtype(dtype) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


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


def _sigmoid(x, y, t, u):
    # 1 / (1 + exp(-x)): exp overflows to inf for x < -88 and 1 / inf = 0, which is the right
    # answer, and the relative error stays that of exp for both signs.
    np.negative(x, out=y)
    np.exp(y, out=y)
    np.add(y, 1.0, out=y)
    np.divide(1.0, y, out=y)


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


def _elu_into(x, y, t, alpha, inner_scale=1.0):
    """y = max(x, 0) + alpha * expm1(min(x, 0) * inner_scale): no mask, NaN propagates."""
    np.clip(x, -_INF, 0.0, out=t)
    if inner_scale != 1.0:
        np.multiply(t, inner_scale, out=t)
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
    _elu_into(x, y, t, alpha, 1.0 / alpha)


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


def _x_times_sigmoid_of(x, y, t):
    """y = x / (1 + exp(-t)) with t already holding the sigmoid's argument."""
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.add(t, 1.0, out=t)
    np.divide(x, t, out=y)


def _silu(x, y, t, u):
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    np.copyto(t, u)
    _x_times_sigmoid_of(u, y, t)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x, y, t, u):
    # 0.5 * x * (1 + tanh(z)) == x * sigmoid(2 z), z = sqrt(2/pi) * (x + 0.044715 x^3)
    np.clip(x, NEGATIVE_SATURATION, _INF, out=u)
    np.multiply(u, u, out=t)
    np.multiply(t, 0.044715, out=t)
    np.add(t, 1.0, out=t)
    np.multiply(t, u, out=t)
    np.multiply(t, 2.0 * _SQRT_2_OVER_PI, out=t)
    _x_times_sigmoid_of(u, y, t)


# erfc(a) for a >= 0 as t * exp(-a^2 + g(2t - 1)), t = 1 / (1 + a/2): g is smooth on [-1, 1] and
# these polynomials (highest power first) are least-squares fits of it at 4000 Chebyshev nodes
# against scipy.special.erfcx, made for gpuact; tests/test_numpy_erfc.py re-derives them and checks
# the error: below 1e-7 relative with degree 10 (float32) and 1e-14 with degree 22 (float64).
_ERFC_G32 = (7.86440864730578e-06, 0.0003338040634112046, -0.00022760422912714836, -0.002048871097483392,
             0.0017938276801523656, 0.008703901505034192, -0.009879944772132698, -0.046874909480877386,
             0.047343879625403464, 0.6726422184868442, -0.6717940915476512)
_ERFC_G64 = (9.45898465584964e-10, -1.1804295622892343e-07, 1.5900650470828688e-07, 8.54231051707791e-07,
             -1.7112471291795858e-06, -2.351391751108054e-06, 8.950713514248325e-06, -4.0825254918557433e-07,
             -3.041963971827113e-05, 3.2066971730840454e-05, 7.149464437653694e-05, -0.00017442660782769542,
             -9.376017500740573e-05, 0.0006737092385109215, -0.00014624255068628275, -0.0023458170749729454,
             0.0017589331181841268, 0.00882493893922414, -0.00987268934296121, -0.04689561024597444,
             0.047343306841393366, 0.6726432239778304, -0.6717940840566896)
_GELU_CLIP = 1.0e4  # |x| beyond this: Phi(x) is exactly 0 or 1 in every format


def _gelu(x, y, t, u):
    # gelu = x Phi(x) = max(x, 0) - |x| h with h = erfc(|x| / sqrt 2) / 2: for x <= 0 that is x h,
    # for x > 0 x (1 - h); no cancellation, and the clip keeps inf * 0 out of both ends.
    coefficients = _ERFC_G64 if x.dtype == np.float64 else _ERFC_G32
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.abs(t, out=t)
    np.multiply(t, math.sqrt(0.5), out=t)          # a = |x| / sqrt 2
    np.multiply(t, 0.5, out=y)
    np.add(y, 1.0, out=y)
    np.divide(1.0, y, out=y)                        # y = 1 / (1 + a/2)
    np.multiply(y, 2.0, out=t)
    np.subtract(t, 1.0, out=t)                     # t = 2y - 1
    u.fill(coefficients[0])
    for c in coefficients[1:]:
        np.multiply(u, t, out=u)
        np.add(u, c, out=u)                        # u = g(2y - 1)
    np.clip(x, -_GELU_CLIP, _GELU_CLIP, out=t)
    np.multiply(t, t, out=t)
    np.multiply(t, 0.5, out=t)                     # t = a^2
    np.subtract(u, t, out=u)
    np.exp(u, out=u)
    np.multiply(u, y, out=u)
    np.multiply(u, 0.5, out=u)                     # u = h = erfc(a) / 2
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


def _squareplus(x, y, t, u, b):
    # s = hypot(x, sqrt(b)) never overflows; for x < 0, (x + s) / 2 = b / (2 (s - x)) avoids the
    # cancellation of x + s.
    np.hypot(x, math.sqrt(b), out=t)
    np.add(x, t, out=y)
    np.multiply(y, 0.5, out=y)
    np.subtract(t, x, out=t)
    np.multiply(t, 2.0, out=t)
    np.divide(b, t, out=t)
    mask = u.view(np.bool_)[: x.size]
    np.less(x, 0.0, out=mask)
    np.copyto(y, t, where=mask)


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
    "relu": _relu, "sigmoid": _sigmoid, "softplus": _softplus, "softsign": _softsign, "tanh": _tanh,
    "selu": _selu, "elu": _elu, "exponential": _exponential, "linear": _linear, "relu6": _relu6,
    "leaky_relu": _leaky_relu, "silu": _silu, "gelu": _gelu, "gelu_tanh": _gelu_tanh,
    "hard_sigmoid": _hard_sigmoid, "hard_silu": _hard_silu, "mish": _mish, "log_sigmoid": _log_sigmoid,
    "celu": _celu, "hard_tanh": _hard_tanh, "hard_shrink": _hard_shrink, "soft_shrink": _soft_shrink,
    "tanh_shrink": _tanh_shrink, "threshold": _threshold, "squareplus": _squareplus,
    "sparse_plus": _sparse_plus, "sparse_sigmoid": _sparse_sigmoid,
}




# ---------------------------------------------------------------------------------------------
# The block driver.


def _parallel_ranges(count: int, work: int) -> list[tuple[int, int]]:
    """``count`` items (blocks, rows, ...) cut into one contiguous range per thread, or a single
    range when the ``work`` (elements) is too small for a second thread to pay off."""
    if work < PARALLEL_MIN or count < 2 or THREADS == 1:
        return [(0, count)]
    per = -(-count // THREADS)
    return [(i * per, min(count, (i + 1) * per)) for i in range(THREADS) if i * per < count]


def _split(n: int) -> list[tuple[int, int]]:
    """Element ranges, one per thread, each a whole number of blocks (but the last)."""
    return [(lo * BLOCK, min(n, hi * BLOCK)) for lo, hi in _parallel_ranges(-(-n // BLOCK), n)]


def _run_parallel(fn, ranges):
    if len(ranges) == 1:
        fn(*ranges[0])
        return
    futures = [_executor().submit(fn, lo, hi) for lo, hi in ranges[1:]]
    fn(*ranges[0])
    for f in futures:
        f.result()


def _as_flat_input(x):
    return x.reshape(-1) if x.flags.c_contiguous else np.ascontiguousarray(x).reshape(-1)


def _output(x_shape, out, dtype):
    """The caller's ``out`` or a new array, plus a contiguous flat view to write blocks into."""
    y = np.empty(x_shape, dtype) if out is None else out
    flat = y.reshape(-1) if y.flags.c_contiguous else np.empty(y.size, dtype)
    return y, flat


def _finish(y, flat):
    if not y.flags.c_contiguous:
        np.copyto(y, flat.reshape(y.shape))
    return y


# One ufunc pass each: cutting them into blocks only adds call overhead.
_SINGLE_PASS = {"tanh", "exponential", "linear", "hard_tanh"}
# The compiled kernels run in chunks of whole cache lines, one contiguous range a thread.
_NATIVE_CHUNK = 1024


def _native_elementwise(kernel, xf, yf, params):
    """``yf = op(xf)`` by a compiled kernel, on every core for large arrays; ``xf`` is ``yf`` or
    does not overlap it."""
    n = xf.size
    if n == 0:
        return
    p = tuple(params) + (0.0,) * (4 - len(params))
    xp, yp, item = _native.address(xf), _native.address(yf), xf.itemsize
    if n < PARALLEL_MIN:
        kernel(xp, yp, n, *p)
        return
    chunks = -(-n // _NATIVE_CHUNK)

    def run(lo, hi):
        lo, hi = lo * _NATIVE_CHUNK, min(n, hi * _NATIVE_CHUNK)
        kernel(xp + lo * item, yp + lo * item, hi - lo, *p)

    _run_parallel(run, _parallel_ranges(chunks, n))


def elementwise(op, x, params, out, dtype, stream=None):
    kernel = _KERNELS[op]
    block = BLOCK
    single_pass = op in _SINGLE_PASS or (op == "relu" and _is_plain_relu(*params))
    if single_pass:
        block = max(x.size, 1)
    compute = _compute_dtype(dtype)
    xf = _as_flat_input(x)
    y, yf = _output(x.shape, out, dtype)
    n = xf.size
    # The compiled kernel when there is one: one pass for every op, on every core. Single-pass ops
    # gain too (exponential, 2**22 float32 on the 2-core EPYC: 1.2 ms against 2.6 ms for np.exp).
    native = _native.elementwise_kernel(op, compute)
    if native is not None and xf.dtype == compute and yf.dtype == compute:
        if out is not None and np.may_share_memory(xf, yf) and xf.ctypes.data != yf.ctypes.data:
            xf = xf.copy()  # partly overlapping: the kernel would read what it already wrote
        _native_elementwise(native, xf, yf, params)
        return _finish(y, yf)
    # x aliasing the output would let a kernel read what it already overwrote: go through a buffer.
    stage_in = xf.dtype != compute or (out is not None and np.may_share_memory(xf, yf))
    stage_out = yf.dtype != compute
    if n <= BLOCK and not (stage_in or stage_out):
        # Small and clean (the common inference call): one block, no closures, no threads.
        with np.errstate(all="ignore"):
            kernel(xf, yf, np.empty(n, compute), np.empty(n, compute), *params)
        return _finish(y, yf)

    def run(lo, hi):
        size = min(block, hi - lo)
        t, u = np.empty(size, compute), np.empty(size, compute)
        xin = np.empty(size, compute) if stage_in else None
        yout = np.empty(size, compute) if stage_out else None
        with np.errstate(all="ignore"):  # inf and NaN results are intended, never warned about
            for start in range(lo, hi, block):
                stop = min(start + block, hi)
                m = stop - start
                xb = xf[start:stop]
                if stage_in:
                    np.copyto(xin[:m], xb, casting="unsafe")
                    xb = xin[:m]
                yb = yout[:m] if stage_out else yf[start:stop]
                kernel(xb, yb, t[:m], u[:m], *params)
                if stage_out:
                    np.copyto(yf[start:stop], yb, casting="unsafe")

    if n:
        # A single memory-bound pass into a new array gains nothing from a second thread: the
        # two threads' first touches of the fresh pages contend (measured 1.5-2x slower).
        _run_parallel(run, [(0, n)] if single_pass and out is None else _split(n))
    return _finish(y, yf)


# ---------------------------------------------------------------------------------------------
# Softmax family: rows of the (reduced) axes, several rows per block.


# Softmax blocks may be larger than elementwise ones (two reductions a block); at BLOCK = 128K
# elements a factor above 1 measured within noise.
_SOFTMAX_BLOCK_FACTOR = 1


def _merged_axis(shape, axes):
    """``(outer, length, inner)`` when ``axes`` are adjacent, so that a C-contiguous array reshapes
    to 3-D for free and is reduced along its middle axis; ``None`` when they are not."""
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return None
    return (math.prod(shape[: axes[0]]), math.prod(shape[axes[0]: axes[-1] + 1]), math.prod(shape[axes[-1] + 1:]))


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
    """Slices along the softmax axis whose (inner) rows are long: every block is a run of whole
    rows, contiguous in memory. Three passes: the max, then exp(x - max) and its sum, then the
    scaling; each pass is cut into blocks of rows shared among the threads."""
    outer, length, inner = x3.shape
    rows_per_block = max(1, _SOFTMAX_BLOCK_FACTOR * BLOCK // inner)
    chunks = [(r, min(r + rows_per_block, length)) for r in range(0, length, rows_per_block)]
    ranges = _parallel_ranges(len(chunks), length * inner)
    for o in range(outer):
        x2, y2 = x3[o], y3[o]
        keep = None if mask3 is None else mask3[o]
        partial_max = [None] * len(ranges)
        partial_sum = [None] * len(ranges)

        def reduce_max(k):
            lo, hi = ranges[k]
            m = np.full(inner, -np.inf, x2.dtype)
            for a, b in chunks[lo:hi]:
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.maximum(m, np.max(block, axis=0), out=m)
            partial_max[k] = m

        def exp_and_sum(k, m):
            lo, hi = ranges[k]
            s = np.zeros(inner, x2.dtype)
            for a, b in chunks[lo:hi]:
                block = x2[a:b] if keep is None else np.where(keep[a:b], x2[a:b], -np.inf)
                np.subtract(block, m, out=y2[a:b])
                e = np.exp(y2[a:b]) if log else np.exp(y2[a:b], out=y2[a:b])
                np.add(s, np.sum(e, axis=0), out=s)
            partial_sum[k] = s

        def scale(k, s):
            lo, hi = ranges[k]
            for a, b in chunks[lo:hi]:
                if log:
                    np.subtract(y2[a:b], s, out=y2[a:b])
                else:
                    np.multiply(y2[a:b], s, out=y2[a:b])
                if keep is not None:
                    np.copyto(y2[a:b], 0.0, where=~keep[a:b])

        _each_in_parallel(reduce_max, len(ranges))
        m = np.max(np.stack(partial_max), axis=0)
        _each_in_parallel(lambda k: exp_and_sum(k, m), len(ranges))
        s = np.sum(np.stack(partial_sum), axis=0)
        with np.errstate(all="ignore"):
            np.log(s, out=s) if log else np.divide(1.0, s, out=s)
        _each_in_parallel(lambda k: scale(k, s), len(ranges))


# Columns a work unit of the compiled column softmax takes (the kernel's maximum). Narrower units
# meant to keep a unit's rows in cache measured slower (2**22 float32, axis 0, 2-core EPYC: 16
# columns 4.1-5.5 ms, 64 columns 2.2-3.3 ms, 256 columns 1.7-3.5 ms): a row segment that short,
# at a stride of a whole row, uses its cache lines poorly and maps many rows to the same sets.
_COLUMN_WIDTH = 256


def _native_softmax_rows(kernel, x2, y2, log):
    """Softmax along the last axis of contiguous 2-D arrays: one fused compiled pass a row, the
    rows shared among the threads."""
    rows, length = x2.shape
    xp, yp, row_bytes = _native.address(x2), _native.address(y2), length * x2.itemsize

    def run(lo, hi):
        kernel(xp + lo * row_bytes, yp + lo * row_bytes, hi - lo, length, int(log))

    _run_parallel(run, _parallel_ranges(rows, x2.size))


def _native_softmax_columns(kernel, x3, y3, log):
    outer, length, inner = x3.shape
    width = min(_COLUMN_WIDTH, inner)
    units = outer * -(-inner // width)
    xp, yp = _native.address(x3), _native.address(y3)

    def run(lo, hi):
        kernel(xp, yp, length, inner, width, lo, hi, int(log))

    _run_parallel(run, _parallel_ranges(units, x3.size))


def _each_in_parallel(fn, count):
    """fn(0) ... fn(count - 1), one per thread; warnings are off in each (errstate is per thread)."""
    def body(lo, hi):
        with np.errstate(all="ignore"):
            for k in range(lo, hi):
                fn(k)

    _run_parallel(body, [(k, k + 1) for k in range(count)])


def softmax(x, axes, out, dtype, *, log, mask=None, stream=None):
    compute = _compute_dtype(dtype)
    y = np.empty(x.shape, dtype) if out is None else out
    if x.size == 0:
        return y
    src, dst = x, y
    merged = _merged_axis(x.shape, axes)
    if merged is None:
        # Axes that are not adjacent: move them to the end (a transposing copy), then one axis.
        rest = [a for a in range(x.ndim) if a not in axes]
        perm = rest + list(axes)
        src, dst = x.transpose(perm), y.transpose(perm)
        if mask is not None:
            mask = mask.transpose(perm)
        merged = _merged_axis(src.shape, tuple(range(len(rest), x.ndim)))
    src = np.ascontiguousarray(src, dtype=compute)
    if np.may_share_memory(src, dst):
        src = src.copy()
    direct = dst.flags.c_contiguous and dst.dtype == compute
    result = dst if direct else np.empty(src.shape, compute)
    outer, length, inner = merged
    x3, y3 = src.reshape(merged), result.reshape(merged)
    mask3 = None if mask is None else np.ascontiguousarray(mask).reshape(merged)
    rows_kernel = _native.softmax_rows_kernel(compute) if inner == 1 and mask3 is None else None
    columns_kernel = _native.softmax_columns_kernel(compute) if inner > 1 and mask3 is None else None
    if columns_kernel is not None:
        _native_softmax_columns(columns_kernel, x3, y3, log)
    elif rows_kernel is not None:
        _native_softmax_rows(rows_kernel, x3[:, :, 0], y3[:, :, 0], log)
    elif inner > 1 and length * inner > BLOCK:
        _softmax_slabs(x3, y3, log, mask3)
    else:
        # Whole (length, inner) slices, several per block: each block is contiguous. With
        # inner == 1 they are plain rows, reduced along the last axis.
        if inner == 1:
            x3, y3 = x3[:, :, 0], y3[:, :, 0]
            mask3 = None if mask3 is None else mask3[:, :, 0]
        per_block = max(1, _SOFTMAX_BLOCK_FACTOR * BLOCK // (length * inner))
        starts = list(range(0, outer, per_block))

        def run(lo, hi):
            with np.errstate(all="ignore"):
                for start in starts[lo:hi]:
                    sl = slice(start, start + per_block)
                    _softmax_block(x3[sl], y3[sl], log, None if mask3 is None else mask3[sl])

        _run_parallel(run, _parallel_ranges(len(starts), x.size))
    if not direct:
        np.copyto(dst, result, casting="unsafe")
    return y


def glu(x, axis, out, dtype, stream=None):
    compute = _compute_dtype(dtype)
    half = x.shape[axis] // 2
    a = np.take(x, np.arange(half), axis=axis).astype(compute, copy=False)
    b = np.take(x, np.arange(half, 2 * half), axis=axis)
    sig = elementwise("sigmoid", b, (), None, compute)
    y = np.empty(a.shape, dtype) if out is None else out
    np.multiply(a, sig, out=sig)
    np.copyto(y, sig, casting="unsafe")
    return y


def sparsemax(x, axis, out, dtype, stream=None):
    y = np.empty(x.shape, dtype) if out is None else out
    if x.size:
        with np.errstate(invalid="ignore"):
            _composite.sparsemax_into(np, x, axis, y, _compute_dtype(dtype))
    return y


def prelu(x, alpha, out, dtype, stream=None):
    y = np.empty(x.shape, dtype) if out is None else out
    with np.errstate(all="ignore"):
        return _composite.prelu_into(np, x, alpha, y, _compute_dtype(dtype))
