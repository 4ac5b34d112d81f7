"""Float64 references, written independently of every backend: one scalar function per op, on
Python's ``math``, with the limits of docs/contract.rst ("NaN and ±inf") spelled out case by case."""

from __future__ import annotations

import math

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
INF = math.inf


def _exp(v):
    try:
        return math.exp(v)
    except OverflowError:
        return INF


def sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + _exp(-x))
    e = _exp(x)
    return e / (1.0 + e)


def softplus(x):
    return max(x, 0.0) + math.log1p(_exp(-abs(x)))


def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    pos = x if x > threshold else 0.0
    if max_value is not None:
        pos = min(max(pos, 0.0), max_value)
    neg = max(threshold - x, 0.0)
    return pos - alpha * neg if alpha else pos


def elu(x, alpha=1.0):
    return x if x > 0 else alpha * math.expm1(x)


def gelu(x, approximate=False):
    if x == -INF:
        return 0.0
    if approximate:
        z = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return x * sigmoid(2 * z)  # == 0.5 x (1 + tanh z), without cancellation
    return 0.5 * x * math.erfc(-x / math.sqrt(2))


def hard_sigmoid(x):
    return min(max(x + 3.0, 0.0), 6.0) / 6.0


def squareplus(x, b=4.0):
    s = math.hypot(x, math.sqrt(b))
    return (x + s) / 2 if x >= 0 else b / (2 * (s - x))


SCALAR = {
    "relu": relu,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "softsign": lambda x: math.copysign(1.0, x) if math.isinf(x) else x / (abs(x) + 1.0),
    "tanh": math.tanh,
    "selu": lambda x: SELU_SCALE * elu(x, SELU_ALPHA),
    "elu": elu,
    "exponential": _exp,
    "linear": lambda x: x,
    "relu6": lambda x: min(max(x, 0.0), 6.0),
    "leaky_relu": lambda x, negative_slope=0.2: x if x >= 0 else (negative_slope * x if negative_slope else 0.0),
    "silu": lambda x: 0.0 if x == -INF else x * sigmoid(x),
    "gelu": gelu,
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": lambda x: 0.0 if x <= -3 else x * hard_sigmoid(x),
    "mish": lambda x: 0.0 if x == -INF else x * math.tanh(softplus(x)),
    "log_sigmoid": lambda x: -softplus(-x),
    "celu": lambda x, alpha=1.0: x if x >= 0 else alpha * math.expm1(x / alpha),
    "hard_tanh": lambda x: min(max(x, -1.0), 1.0),
    "hard_shrink": lambda x, threshold=0.5: x if abs(x) > threshold else 0.0,
    "soft_shrink": lambda x, threshold=0.5: (
        x - threshold if x > threshold else (x + threshold if x < -threshold else 0.0)
    ),
    "tanh_shrink": lambda x: x - math.tanh(x),
    "threshold": lambda x, threshold, default_value: x if x > threshold else default_value,
    "squareplus": squareplus,
    "sparse_plus": lambda x: 0.0 if x <= -1 else (x if x >= 1 else (x + 1) ** 2 / 4),
    "sparse_sigmoid": lambda x: 0.0 if x <= -1 else (1.0 if x >= 1 else (x + 1) / 2),
}


# ---- derivatives (gpuact.backward): f'(x), the left derivative at a kink, the limit at +-inf ---------


def _sigmoid_grad(x):
    e = _exp(-abs(x))
    return e / (1.0 + e) ** 2


def _sech2(x):
    e2 = _exp(-2.0 * abs(x))
    return 4.0 * e2 / (1.0 + e2) ** 2


def relu_grad(x, alpha=0.0, max_value=None, threshold=0.0):
    if x <= threshold:
        return alpha
    if max_value is None:
        return 1.0
    return 1.0 if 0.0 < x <= max_value else 0.0


def gelu_grad(x, approximate=False):
    if math.isinf(x):
        return 0.0 if x < 0 else 1.0
    if approximate:
        c = math.sqrt(2 / math.pi)
        t = 2 * c * (x + 0.044715 * x**3)
        dt = 2 * c * (1 + 3 * 0.044715 * x**2)
        return sigmoid(t) + x * _sigmoid_grad(t) * dt
    return 0.5 * math.erfc(-x / math.sqrt(2)) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _silu_grad(x):
    if math.isinf(x):
        return 0.0 if x < 0 else 1.0
    return sigmoid(x) * (1.0 + x * sigmoid(-x))


def _mish_grad(x):
    if math.isinf(x):
        return 0.0 if x < 0 else 1.0
    sp = softplus(x)
    return math.tanh(sp) + x * _sech2(sp) * sigmoid(x)


def _squareplus_grad(x, b=4.0):
    if b == 0:
        return 1.0 if x > 0 else 0.0
    if x == INF:
        return 1.0
    s = math.hypot(x, math.sqrt(b))
    return b / (2 * s * (s - x)) if x < 0 else 0.5 + 0.5 * x / s


GRAD = {
    "relu": relu_grad,
    "sigmoid": _sigmoid_grad,
    "softplus": sigmoid,
    "softsign": lambda x: 0.0 if math.isinf(x) else 1.0 / (1.0 + abs(x)) ** 2,
    "tanh": _sech2,
    "selu": lambda x: SELU_SCALE * (1.0 if x > 0 else SELU_ALPHA * _exp(x)),
    "elu": lambda x, alpha=1.0: 1.0 if x > 0 else alpha * _exp(x),
    "exponential": _exp,
    "linear": lambda x: 1.0,
    "relu6": lambda x: 1.0 if 0.0 < x <= 6.0 else 0.0,
    "leaky_relu": lambda x, negative_slope=0.2: 1.0 if x > 0 else negative_slope,
    "silu": _silu_grad,
    "gelu": gelu_grad,
    "hard_sigmoid": lambda x: 1.0 / 6.0 if -3.0 < x <= 3.0 else 0.0,
    "hard_silu": lambda x: hard_sigmoid(x) + (x / 6.0 if -3.0 < x <= 3.0 else 0.0),
    "mish": _mish_grad,
    "log_sigmoid": lambda x: sigmoid(-x),
    "celu": lambda x, alpha=1.0: 1.0 if x >= 0 else _exp(x / alpha),
    "hard_tanh": lambda x: 1.0 if -1.0 < x <= 1.0 else 0.0,
    "hard_shrink": lambda x, threshold=0.5: 1.0 if (x > threshold or x <= -threshold) else 0.0,
    "soft_shrink": lambda x, threshold=0.5: 1.0 if (x > threshold or x <= -threshold) else 0.0,
    "tanh_shrink": lambda x: math.tanh(x) ** 2,
    "threshold": lambda x, threshold, default_value: 1.0 if x > threshold else 0.0,
    "squareplus": _squareplus_grad,
    "sparse_plus": lambda x: 0.0 if x <= -1 else (1.0 if x >= 1 else (x + 1) / 2),
    "sparse_sigmoid": lambda x: 0.5 if -1.0 < x <= 1.0 else 0.0,
}


def grad(name: str, x: np.ndarray, **params) -> np.ndarray:
    """The reference derivative f'(x) of one elementwise op on float64 values; NaN gives NaN."""
    fn = GRAD[name]
    flat = [math.nan if math.isnan(v) else fn(v, **params) for v in np.asarray(x, np.float64).ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(x))


# ---- second derivatives (the derivative ops d_<op>): f''(x), 0 at +-inf, from the left at 0 -------


def _gelu_second(x, approximate=False):
    if math.isinf(x):
        return 0.0
    if approximate:
        # d/dx of gelu_grad's tanh form, written out: with u = c (x + k x**3),
        # f = x (1 + tanh u) / 2, f'' = sech(u)**2 (u' + x (u'' - 2 tanh(u) u'**2) / 2)
        c, k = math.sqrt(2 / math.pi), 0.044715
        u = c * (x + k * x**3)
        du, ddu = c * (1 + 3 * k * x * x), 6 * c * k * x
        return _sech2(u) * (du + x * (ddu - 2 * math.tanh(u) * du * du) / 2)
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi) * (2 - x * x)


def _silu_second(x):
    if math.isinf(x):
        return 0.0
    s = sigmoid(x)
    return s * (1 - s) * (2 + x * (1 - 2 * s))


SECOND = {
    "relu": lambda x, **params: 0.0,
    "relu6": lambda x: 0.0,
    "leaky_relu": lambda x, negative_slope=0.2: 0.0,
    "sigmoid": lambda x: -math.tanh(x / 2) * _sigmoid_grad(x),
    "tanh": lambda x: -2.0 * math.tanh(x) * _sech2(x),
    "silu": _silu_second,
    "gelu": _gelu_second,
    "softplus": _sigmoid_grad,
    "elu": lambda x, alpha=1.0: 0.0 if x > 0 else alpha * _exp(x),
    "selu": lambda x: 0.0 if x > 0 else SELU_SCALE * SELU_ALPHA * _exp(x),
}


def second(name: str, x: np.ndarray, **params) -> np.ndarray:
    """The reference second derivative f''(x) of one elementwise op on float64 values."""
    fn = SECOND[name]
    flat = [math.nan if math.isnan(v) else fn(v, **params) for v in np.asarray(x, np.float64).ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(x))


def with_derivative_ops(params: dict) -> dict:
    """A test's table of parameters per op, with the derivative ops d_<op> taking their op's."""
    return {**params, **{"d_" + op: value for op, value in params.items()}}


def elementwise(name: str, x: np.ndarray, **params) -> np.ndarray:
    """The reference of one elementwise op on float64 values; NaN in gives NaN out."""
    fn = SCALAR[name]
    flat = [math.nan if math.isnan(v) else fn(v, **params) for v in np.asarray(x, np.float64).ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(np.shape(x))


def softmax(x: np.ndarray, axis=-1, log: bool = False) -> np.ndarray:
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        shifted = x - m
        e = np.exp(shifted)
        s = np.sum(e, axis=axis, keepdims=True)
        return shifted - np.log(s) if log else e / s


def sparsemax(x: np.ndarray, axis=-1) -> np.ndarray:
    """Sparsemax by bisection on tau (independent of the backends' methods), on the row minus its
    max (the projection is shift-invariant); a row with NaN or a non-finite max is NaN."""
    z = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    out = np.empty_like(z)
    for idx in np.ndindex(z.shape[:-1]):
        row = z[idx]
        if np.isnan(row).any() or not np.isfinite(row.max()):
            out[idx] = np.nan
            continue
        row = row - row.max()
        lo, hi = -1.0, 0.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if np.maximum(row - mid, 0).sum() > 1:
                lo = mid
            else:
                hi = mid
        out[idx] = np.maximum(row - (lo + hi) / 2, 0)
    return np.moveaxis(out, -1, axis)


def glu(x: np.ndarray, axis=-1) -> np.ndarray:
    a, b = np.split(np.asarray(x, np.float64), 2, axis=axis)
    return a * elementwise("sigmoid", b)


# The gated units (gpuact.glu and the GLU variants): (the gate's op, its reference kwargs, which
# half is the gate), written from the definitions, independently of gpuact's table.
GATED = {
    "glu": ("sigmoid", {}, 1),
    "swiglu": ("silu", {}, 0),
    "geglu": ("gelu", {}, 0),
    "geglu_tanh": ("gelu", {"approximate": True}, 0),
    "reglu": ("relu", {}, 0),
}


def gated(name: str, x: np.ndarray, axis=-1) -> np.ndarray:
    """``op(g) * v`` for the gate half ``g`` of ``x`` and the other ``v``, in float64."""
    op, kwargs, first = GATED[name]
    halves = np.split(np.asarray(x, np.float64), 2, axis=axis)
    g, v = halves[first], halves[1 - first]
    with np.errstate(invalid="ignore", over="ignore"):
        return elementwise(op, g, **kwargs) * v


def gated_grad(name: str, dy: np.ndarray, x: np.ndarray, axis=-1) -> np.ndarray:
    """``dx`` of ``gated``: ``dg = dy v op'(g)``, ``dv = dy op(g)``, back in the halves' order."""
    op, kwargs, first = GATED[name]
    halves = np.split(np.asarray(x, np.float64), 2, axis=axis)
    g, v = halves[first], halves[1 - first]
    dy = np.asarray(dy, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        dg, dv = dy * v * grad(op, g, **kwargs), dy * elementwise(op, g, **kwargs)
    return np.concatenate([dg, dv] if first == 0 else [dv, dg], axis=axis)


# The accuracy of docs/contract.rst ("Accuracy") against the float64 reference. float16 results are rounded to 11 bits
# (half an ulp is 4.9e-4 relative), so 1e-3 allows that rounding plus the float32 compute.
TOLERANCE = {
    np.dtype(np.float16): dict(rtol=1e-3, atol=1e-3),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
}


def assert_close(actual, expected, dtype):
    """Compare with the contract's tolerance for ``dtype``; NaN must meet NaN, inf must meet the same inf."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, np.float64)
    with np.errstate(over="ignore"):
        rounded = expected.astype(dtype).astype(np.float64)  # overflow to inf happens as in the dtype
    np.testing.assert_allclose(np.asarray(actual, np.float64), rounded, equal_nan=True, **TOLERANCE[dtype])
