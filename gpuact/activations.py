"""Keras's activation functions, one small public function each.

Every function is ``f(x, <keyword parameters>, *, out=None, backend=None, stream=None)`` and
returns an array of the same kind as ``x`` (see ``docs/contract.rst``). ``stream`` is the launch
stream of the GPU backends; the NumPy backend ignores it. The elementwise functions, softmax and
log_softmax also take ``bias=``: the result is then ``f(x + bias)``, with ``bias`` (an array of
``x``'s kind) broadcast against ``x`` and added inside the kernel, never as a temporary
``x + bias`` (a Dense layer's bias along the last axis, an attention mask for softmax).

Non-finite inputs: NaN gives NaN everywhere, and ±inf gives the mathematical limit, also where
Keras produces ``inf * 0 = NaN`` (``silu``, ``gelu``, ``mish``, ``hard_silu`` at ``-inf``,
``softsign`` at ``±inf``, ``relu`` with a threshold at ``-inf``).

The contract these functions keep is ``docs/contract.rst``; the arguments they share (``bias``,
``out``, ``backend``, ``stream``) are described there once, under "Arguments every function
shares".
"""

from __future__ import annotations

import math

import numpy as _np
from numpy import maximum as _maximum
from numpy import ndarray as _ndarray

from gpuact import _entry
from gpuact._contract import checks
from gpuact._typing import Array, Axis, Backend, Result, Stream


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
    """relu's canonical parameters ``(alpha, threshold, lo, hi)`` (see gpuact._contract.ops)."""
    if negative_slope is not None:
        if alpha is not _ALPHA_UNSET:
            raise TypeError("relu() got both alpha and negative_slope; they name the same parameter")
        alpha = negative_slope
    alpha = 0.0 if alpha is _ALPHA_UNSET else checks.as_param("alpha", alpha)
    threshold = checks.as_param("threshold", threshold)
    if max_value is None:
        return alpha, threshold, -math.inf, math.inf
    return alpha, threshold, 0.0, checks.as_param("max_value", max_value)


def celu_params(alpha) -> tuple:
    alpha = checks.as_param("alpha", alpha)
    if alpha == 0.0:
        raise ValueError("celu needs alpha != 0: alpha * expm1(x / alpha) is undefined at alpha = 0")
    return (alpha,)


def squareplus_params(b) -> tuple:
    b = checks.as_param("b", b)
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
        return _entry.numpy_elementwise(op, x, params)
    return _entry.elementwise(op, x, params, bias=bias, out=out, backend=backend, stream=stream)


def relu(
    x: Array,
    alpha: float = _ALPHA_UNSET,
    max_value: float | None = None,
    threshold: float = 0.0,
    *,
    negative_slope: float | None = None,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Rectified linear unit, with tf.keras's ``alpha``, ``max_value`` and ``threshold``.

    .. math::

        f(x) = c(x \cdot [x > t]) - \alpha \max(t - x, 0)

    where :math:`t` is ``threshold``, :math:`[x > t]` is 1 where :math:`x > t` and 0 elsewhere,
    and :math:`c(v) = \min(\max(v, 0), m)` clips to ``max_value`` :math:`m`. With
    ``max_value=None`` nothing is clipped, :math:`c(v) = v` (as tf.keras: for a negative
    threshold, inputs in :math:`(t, 0]` pass through). ``x == threshold`` gives 0.

    Parameters
    ----------
    x : array_like or CUDA array
        The input (see :ref:`contract-kinds` and :ref:`contract-dtypes`).
    alpha : float, default 0.0
        Slope below the threshold.
    max_value : float, optional
        Largest output; ``None`` (the default) clips nothing.
    threshold : float, default 0.0
        Inputs at or below it give 0 (or :math:`\alpha (x - t)`).
    negative_slope : float, optional
        Keras 3's name for ``alpha``; giving both raises ``TypeError``.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind, shape and dtype (``out`` when given).

    See Also
    --------
    gpuact.backward.relu : its gradient.
    gpuact.layers.ReLU : the layer.

    Examples
    --------
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
    if (
        alpha is _ALPHA_UNSET
        and max_value is None
        and negative_slope is None
        and out is None
        and backend is None
        and bias is None
        and type(x) is _ndarray
        and type(threshold) is float
        and threshold == 0.0
        and x.dtype in _MAXIMUM_KEEPS_RELU
        and x.ndim
        and x.size < _SMALL
    ):
        # The plain call on a small float32/float64 array: np.maximum(x, 0.0) is this very function
        # there (NaN kept, -0.0 gives +0.0), and nothing else costs less per call.
        return _maximum(x, 0.0)
    return _elementwise("relu", x, relu_params(alpha, max_value, threshold, negative_slope), out, backend, stream, bias)


def sigmoid(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Logistic sigmoid, without overflow for either sign.

    .. math::

        \sigma(x) = \frac{1}{1 + e^{-x}}

    Evaluated as :math:`e / (1 + e)` with :math:`e = e^{-|x|}` for :math:`x < 0`, so results
    down to the subnormal range are kept (``sigmoid(-100)`` in float32 is ``3.8e-44``).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`\sigma(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> a = np.array([-20, -1.0, 0.0, 1.0, 20], dtype=np.float32)
    >>> gpuact.sigmoid(a)
    array([2.06115e-09, 2.68941e-01, 5.00000e-01, 7.31059e-01, 1.00000e+00],
          dtype=float32)
    """
    return _elementwise("sigmoid", x, (), out, backend, stream, bias)


def softmax(
    x: Array,
    axis: Axis = -1,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Softmax along ``axis`` (an int or a tuple of ints).

    .. math::

        y_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j

    over each slice along ``axis``. A slice of all ``-inf`` gives NaN (as TF, PyTorch and JAX);
    ``-inf`` among finite values gives exactly 0. 1-D input is allowed; a 0-d array has no axis
    and raises ``AxisError``. The sum is taken in float64 on the CPU and compensated on the GPU.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D.
    axis : int or tuple of ints, default -1
        The axis (or axes, together) to normalize over.
    bias, out, backend, stream
        See :ref:`shared-arguments`. ``bias`` is added before the softmax (an attention mask of
        ``-inf`` and 0, for example).

    Returns
    -------
    array
        Non-negative values that sum to 1 along ``axis``, an array of ``x``'s kind.

    See Also
    --------
    log_softmax, sparsemax, gpuact.layers.Softmax

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.softmax(np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    array([[0.09003, 0.24473, 0.66524],
           [0.33333, 0.33333, 0.33333]], dtype=float32)
    >>> gpuact.softmax(np.array([0.0, -np.inf], dtype=np.float32))
    array([1., 0.], dtype=float32)
    """
    return _entry.softmax(x, axis, log=False, bias=bias, out=out, backend=backend, stream=stream)


def softplus(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Softplus, a smooth ``relu``, computed so that it never overflows.

    .. math::

        f(x) = \log(1 + e^{x}) = \max(x, 0) + \log(1 + e^{-|x|})

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> a = np.array([-20, -1.0, 0.0, 1.0, 20], dtype=np.float32)
    >>> gpuact.softplus(a)
    array([2.06115e-09, 3.13262e-01, 6.93147e-01, 1.31326e+00, 2.00000e+01],
          dtype=float32)
    """
    return _elementwise("softplus", x, (), out, backend, stream, bias)


def softsign(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Softsign.

    .. math::

        f(x) = \frac{x}{|x| + 1}

    ``softsign(±inf) = ±1`` (the limit; the formula alone gives NaN there).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, in :math:`(-1, 1)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.softsign(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.5,  0. ,  0.5], dtype=float32)
    """
    return _elementwise("softsign", x, (), out, backend, stream, bias)


def tanh(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Hyperbolic tangent.

    .. math::

        \tanh x = \frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`\tanh x`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    >>> gpuact.tanh(a)
    array([-0.99505, -0.76159,  0.     ,  0.76159,  0.99505], dtype=float32)
    """
    return _elementwise("tanh", x, (), out, backend, stream, bias)


def selu(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Scaled exponential linear unit, ``scale * elu(x, alpha)`` with Keras's constants.

    .. math::

        f(x) = \lambda \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}

    with :math:`\alpha = 1.6732632423543772848170429916717` and
    :math:`\lambda = 1.0507009873554804934193349852946`.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.selu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-1.11133,  0.     ,  1.0507 ], dtype=float32)
    """
    return _elementwise("selu", x, (), out, backend, stream, bias)


def elu(
    x: Array,
    alpha: float = 1.0,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Exponential linear unit.

    .. math::

        f(x) = \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}

    computed with ``expm1`` (no cancellation near 0).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    alpha : float, default 1.0
        The negative saturation value is :math:`-\alpha`.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    See Also
    --------
    gpuact.layers.ELU : the layer.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.elu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.63212,  0.     ,  1.     ], dtype=float32)
    """
    return _elementwise("elu", x, (checks.as_param("alpha", alpha),), out, backend, stream, bias)


def exponential(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""The exponential function; overflows to ``inf`` like ``exp``.

    .. math::

        f(x) = e^{x}

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`e^x`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.exponential(np.array([0.0, 1.0], dtype=np.float32))
    array([1.     , 2.71828], dtype=float32)
    """
    return _elementwise("exponential", x, (), out, backend, stream, bias)


def linear(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""The identity, returned as a new array (or written to ``out``).

    .. math::

        f(x) = x

    ``gpuact.get(None)`` is this function. With ``bias=`` it is the fused ``x + bias``.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        A copy of ``x`` in the result dtype, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.linear(np.array([-1.0, 2.0], dtype=np.float32))
    array([-1.,  2.], dtype=float32)
    """
    return _elementwise("linear", x, (), out, backend, stream, bias)


def relu6(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""ReLU capped at 6.

    .. math::

        f(x) = \min(\max(x, 0), 6)

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, in :math:`[0, 6]`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.relu6(np.array([-1.0, 3.0, 7.0], dtype=np.float32))
    array([0., 3., 6.], dtype=float32)
    """
    return _elementwise("relu6", x, (), out, backend, stream, bias)


def leaky_relu(
    x: Array,
    negative_slope: float = 0.2,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Leaky ReLU.

    .. math::

        f(x) = \begin{cases} x & x \ge 0 \\ s\,x & x < 0 \end{cases}

    with :math:`s` = ``negative_slope``.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    negative_slope : float, default 0.2
        The slope :math:`s` below 0.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    See Also
    --------
    gpuact.layers.LeakyReLU : the layer (default slope 0.3, as in Keras).

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.leaky_relu(np.array([-10.0, 5.0], dtype=np.float32))
    array([-2.,  5.], dtype=float32)
    """
    params = (checks.as_param("negative_slope", negative_slope),)
    return _elementwise("leaky_relu", x, params, out, backend, stream, bias)


def silu(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Sigmoid linear unit (swish); ``gpuact.swish`` is the same function.

    .. math::

        f(x) = x\,\sigma(x) = \frac{x}{1 + e^{-x}}

    ``silu(-inf) = 0`` (the limit; Keras computes :math:`-\infty \cdot 0` = NaN).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.silu(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.26894,  0.     ,  0.73106], dtype=float32)
    """
    return _elementwise("silu", x, (), out, backend, stream, bias)


def gelu(
    x: Array,
    approximate: bool = False,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gaussian error linear unit, exact or in its tanh approximation.

    .. math::

        f(x) = x\,\Phi(x) = \frac{x}{2} \operatorname{erfc}\left(-\frac{x}{\sqrt{2}}\right)

    and with ``approximate=True``

    .. math::

        f(x) = \frac{x}{2} \left(1 + \tanh(z(x))\right) = x\,\sigma(2 z(x)),
        \qquad z(x) = \sqrt{2 / \pi}\,(x + 0.044715\,x^{3})

    evaluated in the second form, the same function without the cancellation of
    :math:`1 + \tanh` for negative :math:`x`. ``gelu(-inf) = 0``. On the NumPy path ``erfc`` is
    gpuact's own (NumPy has none): see :ref:`contract-keras-differences`.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    approximate : bool, default False
        Use the tanh approximation. Anything but a bool raises ``TypeError``.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> a = np.array([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    >>> gpuact.gelu(a)
    array([-0.00405, -0.15866,  0.     ,  0.84134,  2.99595], dtype=float32)
    >>> gpuact.gelu(a, approximate=True)
    array([-0.00364, -0.15881,  0.     ,  0.84119,  2.99636], dtype=float32)
    """
    return _elementwise(gelu_op(approximate), x, (), out, backend, stream, bias)


def hard_sigmoid(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Keras 3's hard sigmoid, a piecewise-linear sigmoid.

    .. math::

        f(x) = \frac{\mathrm{relu6}(x + 3)}{6} = \min\left(\max\left(\frac{x + 3}{6}, 0\right), 1\right)

    (tf.keras 2 used :math:`0.2 x + 0.5`; gpuact follows Keras 3.)

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, in :math:`[0, 1]`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.hard_sigmoid(np.array([-4.0, 0.0, 1.5, 4.0], dtype=np.float32))
    array([0.  , 0.5 , 0.75, 1.  ], dtype=float32)
    """
    return _elementwise("hard_sigmoid", x, (), out, backend, stream, bias)


def hard_silu(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Hard SiLU (hard swish); ``gpuact.hard_swish`` is the same function.

    .. math::

        f(x) = x\,\frac{\mathrm{relu6}(x + 3)}{6}

    ``hard_silu(-inf) = 0`` (the limit; Keras computes :math:`-\infty \cdot 0` = NaN).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.hard_silu(np.array([-4.0, 0.0, 1.5, 4.0], dtype=np.float32))
    array([-0.   ,  0.   ,  1.125,  4.   ], dtype=float32)
    """
    return _elementwise("hard_silu", x, (), out, backend, stream, bias)


def mish(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Mish.

    .. math::

        f(x) = x \tanh(\operatorname{softplus}(x)) = x \tanh(\log(1 + e^{x}))

    ``mish(-inf) = 0`` (the limit; Keras computes :math:`-\infty \cdot 0` = NaN).

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.mish(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.3034,  0.    ,  0.8651], dtype=float32)
    """
    return _elementwise("mish", x, (), out, backend, stream, bias)


def log_sigmoid(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""The logarithm of the sigmoid, computed without overflow or cancellation.

    .. math::

        f(x) = \log \sigma(x) = -\operatorname{softplus}(-x) = \min(x, 0) - \log(1 + e^{-|x|})

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, at most 0, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.log_sigmoid(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-1.31326, -0.69315, -0.31326], dtype=float32)
    """
    return _elementwise("log_sigmoid", x, (), out, backend, stream, bias)


def celu(
    x: Array,
    alpha: float = 1.0,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Continuously differentiable exponential linear unit.

    .. math::

        f(x) = \begin{cases} x & x \ge 0 \\ \alpha (e^{x / \alpha} - 1) & x < 0 \end{cases}

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    alpha : float, default 1.0
        Must not be 0 (``ValueError``: the function is undefined there). A tiny ``alpha`` is
        exact: :math:`x \ge 0` still gives :math:`x`.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.celu(np.array([-1.0, 0.0, 1.0], dtype=np.float32), alpha=2.0)
    array([-0.78694,  0.     ,  1.     ], dtype=float32)
    """
    return _elementwise("celu", x, celu_params(alpha), out, backend, stream, bias)


def hard_tanh(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Hard tanh, a clip to :math:`[-1, 1]`.

    .. math::

        f(x) = \min(\max(x, -1), 1)

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.hard_tanh(np.array([-2.0, 0.5, 2.0], dtype=np.float32))
    array([-1. ,  0.5,  1. ], dtype=float32)
    """
    return _elementwise("hard_tanh", x, (), out, backend, stream, bias)


def hard_shrink(
    x: Array,
    threshold: float = 0.5,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Hard shrinkage.

    .. math::

        f(x) = \begin{cases} x & |x| > \lambda \\ 0 & |x| \le \lambda \end{cases}

    with :math:`\lambda` = ``threshold``. NaN gives NaN.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    threshold : float, default 0.5
        :math:`\lambda`.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.hard_shrink(np.array([-1.0, 0.25, 1.0], dtype=np.float32))
    array([-1.,  0.,  1.], dtype=float32)
    """
    params = (checks.as_param("threshold", threshold),)
    return _elementwise("hard_shrink", x, params, out, backend, stream, bias)


def soft_shrink(
    x: Array,
    threshold: float = 0.5,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Soft shrinkage.

    .. math::

        f(x) = x - \min(\max(x, -\lambda), \lambda)
             = \begin{cases} x - \lambda & x > \lambda \\ x + \lambda & x < -\lambda \\ 0 & \text{otherwise} \end{cases}

    with :math:`\lambda` = ``threshold``. NaN gives NaN.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    threshold : float, default 0.5
        :math:`\lambda`.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.soft_shrink(np.array([-1.0, 0.25, 1.0], dtype=np.float32))
    array([-0.5,  0. ,  0.5], dtype=float32)
    """
    params = (checks.as_param("threshold", threshold),)
    return _elementwise("soft_shrink", x, params, out, backend, stream, bias)


def tanh_shrink(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Tanh shrinkage.

    .. math::

        f(x) = x - \tanh x

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.tanh_shrink(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([-0.23841,  0.     ,  0.23841], dtype=float32)
    """
    return _elementwise("tanh_shrink", x, (), out, backend, stream, bias)


def threshold(
    x: Array,
    threshold: float,
    default_value: float,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Threshold: keep values above ``threshold``, replace the rest.

    .. math::

        f(x) = \begin{cases} x & x > \theta \\ v & x \le \theta \end{cases}

    with :math:`\theta` = ``threshold`` and :math:`v` = ``default_value``. NaN in ``x`` gives NaN.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    threshold : float
        :math:`\theta`; NaN raises ``ValueError``.
    default_value : float
        :math:`v`, written where :math:`x \le \theta`; the one parameter that may be NaN (it is
        only copied out).
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    See Also
    --------
    gpuact.layers.ThresholdedReLU : the layer (``default_value`` 0).

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.threshold(np.array([-1.0, 0.5, 2.0], dtype=np.float32), 1.0, -5.0)
    array([-5., -5.,  2.], dtype=float32)
    """
    params = (
        checks.as_param("threshold", threshold),
        checks.as_param("default_value", default_value, allow_nan=True),
    )
    return _elementwise("threshold", x, params, out, backend, stream, bias)


def squareplus(
    x: Array,
    b: float = 4,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Squareplus, a smooth ``relu`` made of a square root.

    .. math::

        f(x) = \frac{x + \sqrt{x^{2} + b}}{2}

    Evaluated without overflow or cancellation: :math:`x/2 + s/2` with :math:`s = \sqrt{x^2 + b}`
    for :math:`x \ge 0`, and :math:`b / (2 (s - x))` for :math:`x < 0` (``-1e4`` gives
    ``1e-4``, where Keras cancels to 0). The kernels take :math:`\sqrt{b}`, computed in double
    precision, so a ``b`` beyond float32's range still works.

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    b : float, default 4
        The smoothing, :math:`b \ge 0` (``ValueError`` otherwise); ``b = 0`` is ``relu``.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.squareplus(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    array([0.61803, 1.     , 1.61803], dtype=float32)
    """
    return _elementwise("squareplus", x, squareplus_params(b), out, backend, stream, bias)


def sparse_plus(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Sparse plus, a piecewise-quadratic softplus.

    .. math::

        f(x) = \begin{cases} 0 & x \le -1 \\ \frac{1}{4} (x + 1)^{2} & -1 < x < 1 \\ x & x \ge 1 \end{cases}

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.sparse_plus(np.array([-2.0, 0.0, 2.0], dtype=np.float32))
    array([0.  , 0.25, 2.  ], dtype=float32)
    """
    return _elementwise("sparse_plus", x, (), out, backend, stream, bias)


def sparse_sigmoid(
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Sparse sigmoid, a piecewise-linear sigmoid.

    .. math::

        f(x) = \begin{cases} 0 & x \le -1 \\ \frac{1}{2} (x + 1) & -1 < x < 1 \\ 1 & x \ge 1 \end{cases}

    Parameters
    ----------
    x : array_like or CUDA array
        The input.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`f(x)`, in :math:`[0, 1]`, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.sparse_sigmoid(np.array([-2.0, 0.0, 0.5, 2.0], dtype=np.float32))
    array([0.  , 0.5 , 0.75, 1.  ], dtype=float32)
    """
    return _elementwise("sparse_sigmoid", x, (), out, backend, stream, bias)


def log_softmax(
    x: Array,
    axis: Axis = -1,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""The logarithm of the softmax along ``axis`` (an int or a tuple of ints).

    .. math::

        y_i = x_i - m - \log \sum_j e^{x_j - m}, \qquad m = \max_j x_j

    over each slice along ``axis``. ``-inf`` among finite values gives ``-inf``; a slice of all
    ``-inf`` gives NaN, as softmax does.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D.
    axis : int or tuple of ints, default -1
        The axis (or axes, together) to normalize over.
    bias, out, backend, stream
        See :ref:`shared-arguments`.

    Returns
    -------
    array
        :math:`y`, an array of ``x``'s kind.

    See Also
    --------
    softmax

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.log_softmax(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    array([-2.40761, -1.40761, -0.40761], dtype=float32)
    """
    return _entry.softmax(x, axis, log=True, bias=bias, out=out, backend=backend, stream=stream)


def glu(
    x: Array, axis: int = -1, *, out: Array | None = None, backend: Backend | None = None, stream: Stream = None
) -> Result:
    r"""Gated linear unit: ``x`` split in halves along ``axis``, the first gated by the second.

    .. math::

        f(x) = a \odot \sigma(b), \qquad x = [a, b] \text{ along axis}

    The axis length must be even (``ValueError`` otherwise); the result has half of it.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D.
    axis : int, default -1
        The axis to split.
    out, backend, stream
        See :ref:`shared-arguments` (glu takes no ``bias``).

    Returns
    -------
    array
        :math:`a \odot \sigma(b)`, ``x``'s shape with ``axis`` halved, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.glu(np.array([1.0, 2.0, 0.0, 1.0], dtype=np.float32))
    array([0.5    , 1.46212], dtype=float32)
    """
    return _entry.glu(x, axis, out=out, backend=backend, stream=stream)


def _gated(gate, x, axis_or_b, out, backend, stream):
    """The gated unit ``gate`` of ``x``'s halves along an axis, or of two tensors ``(a, b)`` when the
    second argument is an array rather than an axis."""
    if _is_axis(axis_or_b):
        return _entry.glu(x, axis_or_b, gate=gate, out=out, backend=backend, stream=stream)
    return _entry.gated(x, axis_or_b, gate=gate, out=out, backend=backend, stream=stream)


def _is_axis(a) -> bool:
    """An int, or a tuple of them, is an axis; anything else in its place is the operand ``b``."""
    if isinstance(a, tuple):
        return all(_is_axis(each) for each in a)
    return isinstance(a, (int, _np.integer)) and not isinstance(a, bool)


def swiglu(
    x: Array, axis: int = -1, *, out: Array | None = None, backend: Backend | None = None, stream: Stream = None
) -> Result:
    r"""SwiGLU: ``x`` split in halves along ``axis``, SiLU of the first times the second.

    .. math::

        f(x) = \operatorname{silu}(a) \odot b = a \, \sigma(a) \odot b, \qquad x = [a, b] \text{ along axis}

    The gated linear unit with a Swish gate of Shazeer, *GLU Variants Improve Transformer* (2020),
    as LLaMA-style MLPs compute it from their up-projection: the *first* half is the gate (Keras's
    :func:`glu` gates the first half by the second). The axis length must be even (``ValueError``
    otherwise); the result has half of it. NaN in either half gives NaN; ``±inf`` follows the
    product: ``silu(+inf) * b = inf * b``, ``silu(-inf) = 0`` times a finite ``b`` is 0, and
    ``0 * inf`` is NaN, as IEEE arithmetic gives it.

    **The two-tensor form** ``swiglu(a, b)``, as PyTorch MLPs produce ``a`` and ``b`` from two
    projections: ``silu(a) * b``, elementwise, fused in one pass. ``b`` is an array of ``a``'s kind,
    device, shape and dtype (no broadcasting: ``ValueError`` or ``TypeError`` otherwise), and the
    result has their shape.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D (``a``, in the two-tensor form).
    axis : int, default -1
        The axis to split; or, in its place, ``b`` of the two-tensor form.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``x``'s shape with ``axis`` halved (the two-tensor form: ``a``'s shape), an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.swiglu(np.array([1.0, 2.0, 3.0, 0.5], dtype=np.float32))
    array([2.19318, 0.8808 ], dtype=float32)
    >>> gpuact.swiglu(np.array([1.0, 2.0], np.float32), np.array([3.0, 0.5], np.float32))
    array([2.19318, 0.8808 ], dtype=float32)
    """
    return _gated("swiglu", x, axis, out, backend, stream)


def geglu(
    x: Array,
    axis: int = -1,
    approximate: bool = False,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""GeGLU: ``x`` split in halves along ``axis``, GELU of the first times the second.

    .. math::

        f(x) = \operatorname{gelu}(a) \odot b, \qquad x = [a, b] \text{ along axis}

    with :func:`gelu`'s exact (erf) form, or its tanh approximation with ``approximate=True``
    (Shazeer, *GLU Variants Improve Transformer*, 2020). The first half is the gate, as in
    :func:`swiglu`; the axis length must be even. The limits follow the product, as in :func:`swiglu`.
    It takes the two-tensor form ``geglu(a, b, approximate=False)`` as :func:`swiglu` does.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D (``a``, in the two-tensor form).
    axis : int, default -1
        The axis to split; or, in its place, ``b`` of the two-tensor form.
    approximate : bool, default False
        The tanh approximation of GELU.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``x``'s shape with ``axis`` halved (the two-tensor form: ``a``'s shape), an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.geglu(np.array([1.0, 2.0, 3.0, 0.5], dtype=np.float32))
    array([2.52403, 0.97725], dtype=float32)
    """
    return _gated("geglu_tanh" if approximate else "geglu", x, axis, out, backend, stream)


def reglu(
    x: Array, axis: int = -1, *, out: Array | None = None, backend: Backend | None = None, stream: Stream = None
) -> Result:
    r"""ReGLU: ``x`` split in halves along ``axis``, ReLU of the first times the second.

    .. math::

        f(x) = \max(a, 0) \odot b, \qquad x = [a, b] \text{ along axis}

    (Shazeer, *GLU Variants Improve Transformer*, 2020). The first half is the gate, as in
    :func:`swiglu`; the axis length must be even. ``relu(a) = 0`` times an infinite ``b`` is NaN.
    It takes the two-tensor form ``reglu(a, b)`` as :func:`swiglu` does.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D (``a``, in the two-tensor form).
    axis : int, default -1
        The axis to split; or, in its place, ``b`` of the two-tensor form.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``x``'s shape with ``axis`` halved (the two-tensor form: ``a``'s shape), an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.reglu(np.array([-1.0, 2.0, 3.0, 0.5], dtype=np.float32))
    array([0., 1.], dtype=float32)
    """
    return _gated("reglu", x, axis, out, backend, stream)


def sparsemax(
    x: Array, axis: int = -1, *, out: Array | None = None, backend: Backend | None = None, stream: Stream = None
) -> Result:
    r"""Sparsemax: the Euclidean projection of each slice along ``axis`` onto the probability simplex.

    .. math::

        y = \operatorname{argmin}_{p \in \Delta} \lVert p - x \rVert^{2}, \qquad
        y_i = \max(x_i - \tau, 0)

    where :math:`\Delta` is the probability simplex (:math:`p_i \ge 0`, :math:`\sum_i p_i = 1`)
    and :math:`\tau` the one value for which :math:`\sum_i \max(x_i - \tau, 0) = 1`. The
    projection is shift-invariant and computed after subtracting the slice's maximum, so
    ``[1e8, 0]`` gives ``[1, 0]``. A slice with NaN, a ``+inf``, or all ``-inf`` gives NaN;
    ``-inf`` among finite values gives 0. Keras 3 computes a different :math:`\tau`: see
    :ref:`contract-keras-differences`.

    Parameters
    ----------
    x : array_like or CUDA array
        The input, at least 1-D.
    axis : int, default -1
        The axis to project along.
    out, backend, stream
        See :ref:`shared-arguments` (sparsemax takes no ``bias``).

    Returns
    -------
    array
        :math:`y`, non-negative and summing to 1 along ``axis``, an array of ``x``'s kind.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.sparsemax(np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], dtype=np.float32))
    array([[0.     , 0.     , 1.     ],
           [0.33333, 0.33333, 0.33333]], dtype=float32)
    """
    return _entry.sparsemax(x, axis, out=out, backend=backend, stream=stream)


swish = silu
hard_swish = hard_silu

__all__ = [
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
    "selu",
    "elu",
    "exponential",
    "linear",
    "relu6",
    "leaky_relu",
    "silu",
    "swish",
    "gelu",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "mish",
    "log_softmax",
    "log_sigmoid",
    "celu",
    "glu",
    "swiglu",
    "geglu",
    "reglu",
    "hard_tanh",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
    "threshold",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
    "sparsemax",
]
