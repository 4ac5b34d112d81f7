"""Keras's activation functions, one small public function each.

Every function is ``f(x, <keyword parameters>, *, out=None, backend=None, stream=None)`` and
returns an array of the same kind as ``x`` (see ``gpuact._dispatch``). ``stream`` is the launch
stream of the GPU backends; the NumPy backend ignores it. The elementwise functions, softmax and
log_softmax also take ``bias=``: the result is then ``f(x + bias)``, with ``bias`` (an array of
``x``'s kind) broadcast against ``x`` and added inside the kernel, never as a temporary
``x + bias`` (a Dense layer's bias along the last axis, an attention mask for softmax).

Non-finite inputs: NaN gives NaN everywhere, and ±inf gives the mathematical limit, also where
Keras produces ``inf * 0 = NaN`` (``silu``, ``gelu``, ``mish``, ``hard_silu`` at ``-inf``,
``softsign`` at ``±inf``, ``relu`` with a threshold at ``-inf``).
"""

from __future__ import annotations

import math

import numpy as _np
from numpy import maximum as _maximum
from numpy import ndarray as _ndarray

from gpuact import _dispatch


class _UnsetFloat(float):
    """A default that compares like its value but tells "not given" from "given"."""

    def __repr__(self):
        return float.__repr__(self)


_ALPHA_UNSET = _UnsetFloat(0.0)
# relu's small-call path (see relu): the dtypes where np.maximum(x, 0.0) maps -0.0 to +0.0 as the
# kernels do (float16's loop keeps -0.0), and the size below which it beats the threaded kernels
_MAXIMUM_KEEPS_RELU = (_np.dtype(_np.float32), _np.dtype(_np.float64))
_SMALL = 1 << 16


# ---- parameters, shared with gpuact.backward --------------------------------------------------


def relu_params(alpha, max_value, threshold, negative_slope) -> tuple:
    """relu's canonical parameters ``(alpha, threshold, lo, hi)`` (see gpuact._ops)."""
    if negative_slope is not None:
        if alpha is not _ALPHA_UNSET:
            raise TypeError("relu() got both alpha and negative_slope; they name the same parameter")
        alpha = negative_slope
    alpha = 0.0 if alpha is _ALPHA_UNSET else _dispatch.as_param("alpha", alpha)
    threshold = _dispatch.as_param("threshold", threshold)
    if max_value is None:
        return alpha, threshold, -math.inf, math.inf
    return alpha, threshold, 0.0, _dispatch.as_param("max_value", max_value)


def celu_params(alpha) -> tuple:
    alpha = _dispatch.as_param("alpha", alpha)
    if alpha == 0.0:
        raise ValueError("celu needs alpha != 0: alpha * expm1(x / alpha) is undefined at alpha = 0")
    return (alpha,)


def squareplus_params(b) -> tuple:
    b = _dispatch.as_param("b", b)
    if b < 0:
        raise ValueError(f"squareplus needs b >= 0; got {b}")
    # the kernels take sqrt(b), taken here in double precision (b may be beyond float32's range)
    return (math.sqrt(b),)


def gelu_op(approximate) -> str:
    if not isinstance(approximate, bool):
        raise TypeError(f"approximate must be a bool; got {approximate!r}")
    return "gelu_tanh" if approximate else "gelu"


def _elementwise(op, x, params, out, backend, stream, bias=None):
    if out is None and backend is None and bias is None and type(x) is _ndarray:
        return _dispatch.numpy_elementwise(op, x, params)
    return _dispatch.elementwise(op, x, params, bias=bias, out=out, backend=backend, stream=stream)


def relu(x, alpha=_ALPHA_UNSET, max_value=None, threshold=0.0, *, negative_slope=None, bias=None, out=None,
         backend=None, stream=None):
    """Rectified linear unit, with tf.keras's ``alpha``, ``max_value`` and ``threshold``.

    ``f(x) = clip(x if x > threshold else 0, 0, max_value) - alpha * max(threshold - x, 0)``;
    with ``max_value=None`` nothing is clipped (tf.keras: for a negative threshold, inputs in
    ``(threshold, 0]`` pass through). ``x == threshold`` gives 0. ``negative_slope`` is Keras 3's
    name for ``alpha``; giving both raises ``TypeError``.

    >>> import numpy as np, gpuact
    >>> foo = np.array([-10, -5, 0.0, 5, 10], dtype=np.float32)
    >>> gpuact.relu(foo)
    array([ 0.,  0.,  0.,  5., 10.], dtype=float32)
    >>> gpuact.relu(foo, alpha=0.5)
    array([-5. , -2.5,  0. ,  5. , 10. ], dtype=float32)
    >>> gpuact.relu(foo, max_value=5.)
    array([0., 0., 0., 5., 5.], dtype=float32)
    >>> gpuact.relu(foo, threshold=5.)
    array([ 0.,  0.,  0.,  0., 10.], dtype=float32)
    """
    if (alpha is _ALPHA_UNSET and max_value is None and negative_slope is None and out is None and backend is None
            and bias is None and type(x) is _ndarray and type(threshold) is float and threshold == 0.0 and x.dtype in _MAXIMUM_KEEPS_RELU
            and x.ndim and x.size < _SMALL):
        # The plain call on a small float32/float64 array: np.maximum(x, 0.0) is this very function
        # there (NaN kept, -0.0 gives +0.0), and nothing else costs less per call.
        return _maximum(x, 0.0)
    return _elementwise("relu", x, relu_params(alpha, max_value, threshold, negative_slope), out, backend, stream, bias)


def sigmoid(x, *, bias=None, out=None, backend=None, stream=None):
    """Logistic sigmoid, ``1 / (1 + exp(-x))``, without overflow for either sign.

    >>> import numpy as np, gpuact
    >>> a = np.array([-20, -1.0, 0.0, 1.0, 20], dtype=np.float32)
    >>> gpuact.sigmoid(a)
    array([2.06115e-09, 2.68941e-01, 5.00000e-01, 7.31059e-01, 1.00000e+00],
          dtype=float32)
    """
    return _elementwise("sigmoid", x, (), out, backend, stream, bias)


def softmax(x, axis=-1, *, bias=None, out=None, backend=None, stream=None):
    """Softmax along ``axis`` (an int or a tuple of ints): ``exp(x - max) / sum(exp(x - max))``.

    A slice of all ``-inf`` gives NaN (as TF, PyTorch and JAX); ``-inf`` among finite values gives
    exactly 0. 1-D input is allowed.

    >>> import numpy as np, gpuact
    >>> gpuact.softmax(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    array([[0.09003, 0.24473, 0.66524],
           [0.33333, 0.33333, 0.33333]], dtype=float32)
    """
    return _dispatch.softmax(x, axis, log=False, bias=bias, out=out, backend=backend, stream=stream)


def softplus(x, *, bias=None, out=None, backend=None, stream=None):
    """``log(exp(x) + 1)``, computed as ``max(x, 0) + log1p(exp(-|x|))`` so it never overflows.

    >>> import numpy as np, gpuact
    >>> a = np.array([-20, -1.0, 0.0, 1.0, 20], dtype=np.float32)
    >>> gpuact.softplus(a)
    array([2.06115e-09, 3.13262e-01, 6.93147e-01, 1.31326e+00, 2.00000e+01],
          dtype=float32)
    """
    return _elementwise("softplus", x, (), out, backend, stream, bias)


def softsign(x, *, bias=None, out=None, backend=None, stream=None):
    """``x / (|x| + 1)``; ``softsign(±inf) = ±1``.

    >>> import numpy as np, gpuact
    >>> gpuact.softsign(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.5,  0. ,  0.5], dtype=float32)
    """
    return _elementwise("softsign", x, (), out, backend, stream, bias)


def tanh(x, *, bias=None, out=None, backend=None, stream=None):
    """Hyperbolic tangent, ``(exp(x) - exp(-x)) / (exp(x) + exp(-x))``.

    >>> import numpy as np, gpuact
    >>> a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    >>> gpuact.tanh(a)
    array([-0.99505, -0.76159,  0.     ,  0.76159,  0.99505], dtype=float32)
    """
    return _elementwise("tanh", x, (), out, backend, stream, bias)


def selu(x, *, bias=None, out=None, backend=None, stream=None):
    """Scaled exponential linear unit: ``scale * elu(x, alpha)`` with Keras's constants
    ``alpha = 1.67326324...`` and ``scale = 1.05070098...``.

    >>> import numpy as np, gpuact
    >>> gpuact.selu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-1.11133,  0.     ,  1.0507 ], dtype=float32)
    """
    return _elementwise("selu", x, (), out, backend, stream, bias)


def elu(x, alpha=1.0, *, bias=None, out=None, backend=None, stream=None):
    """Exponential linear unit: ``x`` if ``x > 0`` else ``alpha * expm1(x)``.

    >>> import numpy as np, gpuact
    >>> gpuact.elu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.63212,  0.     ,  1.     ], dtype=float32)
    """
    return _elementwise("elu", x, (_dispatch.as_param("alpha", alpha),), out, backend, stream, bias)


def exponential(x, *, bias=None, out=None, backend=None, stream=None):
    """``exp(x)``; overflows to ``inf`` like ``exp``.

    >>> import numpy as np, gpuact
    >>> gpuact.exponential(np.array([0.0, 1.0], dtype=np.float32))
    array([1.     , 2.71828], dtype=float32)
    """
    return _elementwise("exponential", x, (), out, backend, stream, bias)


def linear(x, *, bias=None, out=None, backend=None, stream=None):
    """The identity, ``f(x) = x``, returned as a new array (or written to ``out``).

    >>> import numpy as np, gpuact
    >>> gpuact.linear(np.array([-1.0, 2.0], dtype=np.float32))
    array([-1.,  2.], dtype=float32)
    """
    return _elementwise("linear", x, (), out, backend, stream, bias)


def relu6(x, *, bias=None, out=None, backend=None, stream=None):
    """``min(max(x, 0), 6)``.

    >>> import numpy as np, gpuact
    >>> gpuact.relu6(np.array([-1.0, 3.0, 7.0], dtype=np.float32))
    array([0., 3., 6.], dtype=float32)
    """
    return _elementwise("relu6", x, (), out, backend, stream, bias)


def leaky_relu(x, negative_slope=0.2, *, bias=None, out=None, backend=None, stream=None):
    """``x`` if ``x >= 0`` else ``negative_slope * x``.

    >>> import numpy as np, gpuact
    >>> gpuact.leaky_relu(np.array([-10.0, 5.0], dtype=np.float32))
    array([-2.,  5.], dtype=float32)
    """
    params = (_dispatch.as_param("negative_slope", negative_slope),)
    return _elementwise("leaky_relu", x, params, out, backend, stream, bias)


def silu(x, *, bias=None, out=None, backend=None, stream=None):
    """Sigmoid linear unit (swish): ``x * sigmoid(x)``; ``silu(-inf) = 0``.

    >>> import numpy as np, gpuact
    >>> gpuact.silu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.26894,  0.     ,  0.73106], dtype=float32)
    """
    return _elementwise("silu", x, (), out, backend, stream, bias)


def gelu(x, approximate=False, *, bias=None, out=None, backend=None, stream=None):
    """Gaussian error linear unit: ``x * Phi(x) = 0.5 * x * erfc(-x / sqrt(2))``, or with
    ``approximate=True``: ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))``, evaluated
    as ``x * sigmoid(2 * sqrt(2/pi) * (x + 0.044715 * x**3))``, the same function without the
    cancellation of ``1 + tanh`` for negative ``x``. ``gelu(-inf) = 0``.

    >>> import numpy as np, gpuact
    >>> a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    >>> gpuact.gelu(a)
    array([-0.00405, -0.15866,  0.     ,  0.84134,  2.99595], dtype=float32)
    >>> gpuact.gelu(a, approximate=True)
    array([-0.00364, -0.15881,  0.     ,  0.84119,  2.99636], dtype=float32)
    """
    return _elementwise(gelu_op(approximate), x, (), out, backend, stream, bias)


def hard_sigmoid(x, *, bias=None, out=None, backend=None, stream=None):
    """Keras 3's hard sigmoid, ``relu6(x + 3) / 6``.

    >>> import numpy as np, gpuact
    >>> gpuact.hard_sigmoid(np.array([-4.0, 0.0, 1.5, 4.0], dtype=np.float32))
    array([0.  , 0.5 , 0.75, 1.  ], dtype=float32)
    """
    return _elementwise("hard_sigmoid", x, (), out, backend, stream, bias)


def hard_silu(x, *, bias=None, out=None, backend=None, stream=None):
    """Hard SiLU (hard swish): ``x * relu6(x + 3) / 6``; ``hard_silu(-inf) = 0``.

    >>> import numpy as np, gpuact
    >>> gpuact.hard_silu(np.array([-4.0, 0.0, 1.5, 4.0], dtype=np.float32))
    array([-0.   ,  0.   ,  1.125,  4.   ], dtype=float32)
    """
    return _elementwise("hard_silu", x, (), out, backend, stream, bias)


def mish(x, *, bias=None, out=None, backend=None, stream=None):
    """``x * tanh(softplus(x))``; ``mish(-inf) = 0``.

    >>> import numpy as np, gpuact
    >>> gpuact.mish(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.3034,  0.    ,  0.8651], dtype=float32)
    """
    return _elementwise("mish", x, (), out, backend, stream, bias)


def log_sigmoid(x, *, bias=None, out=None, backend=None, stream=None):
    """``log(sigmoid(x)) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|))``.

    >>> import numpy as np, gpuact
    >>> gpuact.log_sigmoid(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-1.31326, -0.69315, -0.31326], dtype=float32)
    """
    return _elementwise("log_sigmoid", x, (), out, backend, stream, bias)


def celu(x, alpha=1.0, *, bias=None, out=None, backend=None, stream=None):
    """Continuously differentiable ELU: ``x`` if ``x >= 0`` else ``alpha * expm1(x / alpha)``.

    ``alpha`` must not be 0 (``ValueError``: the function is undefined there).

    >>> import numpy as np, gpuact
    >>> gpuact.celu(np.array([-1.0, 0.0, 1.0], dtype=np.float32), alpha=2.0)
    array([-0.78694,  0.     ,  1.     ], dtype=float32)
    """
    return _elementwise("celu", x, celu_params(alpha), out, backend, stream, bias)


def hard_tanh(x, *, bias=None, out=None, backend=None, stream=None):
    """``clip(x, -1, 1)``.

    >>> import numpy as np, gpuact
    >>> gpuact.hard_tanh(np.array([-2.0, 0.5, 2.0], dtype=np.float32))
    array([-1. ,  0.5,  1. ], dtype=float32)
    """
    return _elementwise("hard_tanh", x, (), out, backend, stream, bias)


def hard_shrink(x, threshold=0.5, *, bias=None, out=None, backend=None, stream=None):
    """``x`` if ``|x| > threshold`` else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.hard_shrink(np.array([-1.0, 0.25, 1.0], dtype=np.float32))
    array([-1.,  0.,  1.], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),)
    return _elementwise("hard_shrink", x, params, out, backend, stream, bias)


def soft_shrink(x, threshold=0.5, *, bias=None, out=None, backend=None, stream=None):
    """``x - threshold`` if ``x > threshold``, ``x + threshold`` if ``x < -threshold``, else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.soft_shrink(np.array([-1.0, 0.25, 1.0], dtype=np.float32))
    array([-0.5,  0. ,  0.5], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),)
    return _elementwise("soft_shrink", x, params, out, backend, stream, bias)


def tanh_shrink(x, *, bias=None, out=None, backend=None, stream=None):
    """``x - tanh(x)``.

    >>> import numpy as np, gpuact
    >>> gpuact.tanh_shrink(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.23841,  0.     ,  0.23841], dtype=float32)
    """
    return _elementwise("tanh_shrink", x, (), out, backend, stream, bias)


def threshold(x, threshold, default_value, *, bias=None, out=None, backend=None, stream=None):
    """``x`` if ``x > threshold`` else ``default_value``.

    >>> import numpy as np, gpuact
    >>> gpuact.threshold(np.array([-1.0, 0.5, 2.0], dtype=np.float32), 1.0, -5.0)
    array([-5., -5.,  2.], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),
              _dispatch.as_param("default_value", default_value, allow_nan=True))
    return _elementwise("threshold", x, params, out, backend, stream, bias)


def squareplus(x, b=4, *, bias=None, out=None, backend=None, stream=None):
    """``(x + sqrt(x**2 + b)) / 2``, evaluated without overflow (``b / (2 (sqrt(x**2 + b) - x))``
    for negative ``x``).

    >>> import numpy as np, gpuact
    >>> gpuact.squareplus(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([0.61803, 1.     , 1.61803], dtype=float32)
    """
    return _elementwise("squareplus", x, squareplus_params(b), out, backend, stream, bias)


def sparse_plus(x, *, bias=None, out=None, backend=None, stream=None):
    """0 for ``x <= -1``, ``(x + 1)**2 / 4`` for ``-1 < x < 1``, ``x`` for ``x >= 1``.

    >>> import numpy as np, gpuact
    >>> gpuact.sparse_plus(np.array([-2.0, 0.0, 2.0], dtype=np.float32))
    array([0.  , 0.25, 2.  ], dtype=float32)
    """
    return _elementwise("sparse_plus", x, (), out, backend, stream, bias)


def sparse_sigmoid(x, *, bias=None, out=None, backend=None, stream=None):
    """0 for ``x <= -1``, ``(x + 1) / 2`` for ``-1 < x < 1``, 1 for ``x >= 1``.

    >>> import numpy as np, gpuact
    >>> gpuact.sparse_sigmoid(np.array([-2.0, 0.0, 0.5, 2.0], dtype=np.float32))
    array([0.  , 0.5 , 0.75, 1.  ], dtype=float32)
    """
    return _elementwise("sparse_sigmoid", x, (), out, backend, stream, bias)


def log_softmax(x, axis=-1, *, bias=None, out=None, backend=None, stream=None):
    """``x - max - log(sum(exp(x - max)))`` along ``axis`` (an int or a tuple of ints).

    >>> import numpy as np, gpuact
    >>> gpuact.log_softmax(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    array([-2.40761, -1.40761, -0.40761], dtype=float32)
    """
    return _dispatch.softmax(x, axis, log=True, bias=bias, out=out, backend=backend, stream=stream)


def glu(x, axis=-1, *, out=None, backend=None, stream=None):
    """Gated linear unit: split ``x`` in halves ``a, b`` along ``axis``; ``a * sigmoid(b)``.
    The axis length must be even (``ValueError`` otherwise).

    >>> import numpy as np, gpuact
    >>> gpuact.glu(np.array([1.0, 2.0, 0.0, 1.0], dtype=np.float32))
    array([0.5    , 1.46212], dtype=float32)
    """
    return _dispatch.glu(x, axis, out=out, backend=backend, stream=stream)


def sparsemax(x, axis=-1, *, out=None, backend=None, stream=None):
    """Sparsemax: the Euclidean projection of ``x`` onto the probability simplex along ``axis``,
    ``max(x - tau, 0)`` with ``tau`` chosen so that the slice sums to 1.

    >>> import numpy as np, gpuact
    >>> gpuact.sparsemax(np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], dtype=np.float32))
    array([[0.     , 0.     , 1.     ],
           [0.33333, 0.33333, 0.33333]], dtype=float32)
    """
    return _dispatch.sparsemax(x, axis, out=out, backend=backend, stream=stream)


swish = silu
hard_swish = hard_silu

__all__ = [
    "relu", "sigmoid", "softmax", "softplus", "softsign", "tanh", "selu", "elu", "exponential",
    "linear", "relu6", "leaky_relu", "silu", "swish", "gelu", "hard_sigmoid", "hard_silu",
    "hard_swish", "mish", "log_softmax", "log_sigmoid", "celu", "glu", "hard_tanh", "hard_shrink",
    "soft_shrink", "tanh_shrink", "threshold", "squareplus", "sparse_plus", "sparse_sigmoid",
    "sparsemax",
]
