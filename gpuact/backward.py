"""The gradients of Keras's activations: one function per activation, each a fused kernel.

``gpuact.backward.<name>(dy, x, <the forward's parameters>, *, bias=None, out=None, backend=None,
stream=None)`` returns ``dx``, the gradient of a loss with respect to ``x`` given its gradient
``dy`` with respect to the activation's output. An elementwise one is ``dx = dy * f'(x)``, read
from ``dy`` and ``x`` and written to ``dx`` in one pass; softmax, log_softmax, sparsemax and glu
recompute their forward inside the kernel.

* ``dy`` and ``x`` are arrays of the same kind and shape (glu: ``dy`` has the output's shape;
  the gated units' two-tensor form ``swiglu(dy, a, b)`` returns the pair ``(da, db)``);
  a mismatch raises ``TypeError`` (kind) or ``ValueError`` (shape) before any work. ``dx`` has
  ``x``'s shape and the dtype the forward rules give for ``dy`` and ``x`` together; ``out=``,
  ``backend=`` and ``stream=`` work as in the forward functions.
* With ``bias=`` the forward was ``f(x + bias)``: ``dx`` is its gradient with respect to ``x``
  (and to ``x + bias``). The bias's gradient is ``dx`` summed over the axes along which ``bias``
  was broadcast (for a ``(units,)`` bias: ``dx.sum(axis=tuple(range(dx.ndim - 1)))``).
* At a kink (a point where the derivative jumps: relu at its threshold and at ``max_value``,
  relu6, hard_sigmoid, hard_silu, hard_tanh, the shrinks, sparse_sigmoid, threshold, leaky_relu
  at 0) the derivative is the one from the left, ``f'(k-)``: ``relu'(0) = 0``,
  ``leaky_relu'(0) = negative_slope``, ``relu6'(6) = 1``, ``hard_tanh'(-1) = 0``.
* NaN in ``x`` or ``dy`` gives NaN. At ``x = +-inf`` the derivative is its mathematical limit
  (``sigmoid'(+-inf) = 0``, ``softplus'(inf) = 1``, ``silu'(inf) = 1``, ``gelu'(-inf) = 0``,
  ``mish'(inf) = 1``, ``elu'(-inf) = 0``, ``softsign'(+-inf) = 0``, ``tanh'(+-inf) = 0``,
  ``exponential'(-inf) = 0``), where autodiff of the forward formula often gives NaN. A softmax
  slice of all ``-inf`` gives NaN, as the forward does.

These rules are part of gpuact's contract (``docs/contract.rst``, "Gradients");
``tests/test_backward.py`` checks them.

>>> import numpy as np, gpuact
>>> x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32)
>>> gpuact.backward.relu(np.ones_like(x), x)
array([0., 0., 0., 1., 1.], dtype=float32)
"""

from __future__ import annotations

from gpuact import _entry, activations
from gpuact._contract import checks
from gpuact._typing import Array, Axis, Backend, Result, Stream
from gpuact.activations import _ALPHA_UNSET


def _grad(op, dy, x, params, bias, out, backend, stream):
    return _entry.elementwise_grad(op, dy, x, params, bias=bias, out=out, backend=backend, stream=stream)


def relu(
    dy: Array,
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
    r"""Gradient of :func:`gpuact.relu`.

    .. math::

        dx = dy \cdot \left([x > t]\,[\ell < x \le m] + \alpha\,[x \le t]\right)

    with :math:`t` = ``threshold``, :math:`\alpha` = ``alpha``, :math:`\ell = 0` and :math:`m` =
    ``max_value``; with ``max_value=None``, :math:`\ell = -\infty` and :math:`m = \infty`. At the
    kinks (``threshold``, 0 and ``max_value``) it is the derivative from the left.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at relu's output, ``x``'s kind and shape.
    x : array_like or CUDA array
        relu's input.
    alpha, max_value, threshold, negative_slope : float, optional
        The forward's parameters (see :func:`gpuact.relu`).
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> x = np.array([-1.0, 0.0, 3.0, 7.0], dtype=np.float32)
    >>> gpuact.backward.relu(np.ones_like(x), x, alpha=0.1, max_value=6.0)
    array([0.1, 0.1, 1. , 0. ], dtype=float32)
    """
    params = activations.relu_params(alpha, max_value, threshold, negative_slope)
    return _grad("relu", dy, x, params, bias, out, backend, stream)


def sigmoid(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.sigmoid`.

    .. math::

        dx = dy \cdot \sigma(x) (1 - \sigma(x)) = dy \cdot \frac{e}{(1 + e)^{2}},
        \qquad e = e^{-|x|}

    computed in the second form (no cancellation; 0 at :math:`\pm\infty`).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.sigmoid(np.ones(2, np.float32), np.array([0.0, 2.0], np.float32))
    array([0.25   , 0.10499], dtype=float32)
    """
    return _grad("sigmoid", dy, x, (), bias, out, backend, stream)


def softmax(
    dy: Array,
    x: Array,
    axis: Axis = -1,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.softmax` along ``axis``.

    .. math::

        dx = y \odot \left(dy - \sum_j dy_j\, y_j\right), \qquad y = \operatorname{softmax}(x)

    over each slice along ``axis``; :math:`y` is recomputed inside the kernel, not read. A slice
    of all ``-inf`` gives NaN, as the forward does.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    axis : int or tuple of ints, default -1
        The forward's axis.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape; each slice sums to 0.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.softmax(np.array([1.0, 0.0], np.float32), np.zeros(2, np.float32))
    array([ 0.25, -0.25], dtype=float32)
    """
    return _entry.softmax_grad(dy, x, axis, log=False, bias=bias, out=out, backend=backend, stream=stream)


def softplus(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.softplus`.

    .. math::

        dx = dy \cdot \sigma(x)

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.softplus(np.ones(2, np.float32), np.array([0.0, np.inf], np.float32))
    array([0.5, 1. ], dtype=float32)
    """
    return _grad("softplus", dy, x, (), bias, out, backend, stream)


def softsign(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.softsign`.

    .. math::

        dx = \frac{dy}{(1 + |x|)^{2}}

    0 at :math:`\pm\infty`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.softsign(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.  , 0.25], dtype=float32)
    """
    return _grad("softsign", dy, x, (), bias, out, backend, stream)


def tanh(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.tanh`.

    .. math::

        dx = dy \cdot (1 - \tanh^{2} x) = dy \cdot \frac{4 e}{(1 + e)^{2}}, \qquad e = e^{-2|x|}

    computed in the second form (no cancellation; 0 at :math:`\pm\infty`).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.tanh(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.     , 0.41997], dtype=float32)
    """
    return _grad("tanh", dy, x, (), bias, out, backend, stream)


def selu(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.selu`.

    .. math::

        dx = dy \cdot \lambda \begin{cases} 1 & x > 0 \\ \alpha e^{x} & x \le 0 \end{cases}

    with Keras's constants :math:`\alpha` and :math:`\lambda` (see :func:`gpuact.selu`); the
    left derivative at 0.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.selu(np.ones(2, np.float32), np.array([-1.0, 1.0], np.float32))
    array([0.64677, 1.0507 ], dtype=float32)
    """
    return _grad("selu", dy, x, (), bias, out, backend, stream)


def elu(
    dy: Array,
    x: Array,
    alpha: float = 1.0,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.elu`.

    .. math::

        dx = dy \cdot \begin{cases} 1 & x > 0 \\ \alpha e^{x} & x \le 0 \end{cases}

    The left derivative at 0; 0 at :math:`-\infty`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    alpha : float, default 1.0
        The forward's ``alpha``.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.elu(np.ones(2, np.float32), np.array([-1.0, 1.0], np.float32))
    array([0.36788, 1.     ], dtype=float32)
    """
    return _grad("elu", dy, x, (checks.as_param("alpha", alpha),), bias, out, backend, stream)


def exponential(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.exponential`.

    .. math::

        dx = dy \cdot e^{x}

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.exponential(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.     , 2.71828], dtype=float32)
    """
    return _grad("exponential", dy, x, (), bias, out, backend, stream)


def linear(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.linear`: a copy of ``dy``.

    .. math::

        dx = dy

    NaN where ``x`` is NaN.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.linear(np.array([2.0, 3.0], np.float32), np.zeros(2, np.float32))
    array([2., 3.], dtype=float32)
    """
    return _grad("linear", dy, x, (), bias, out, backend, stream)


def relu6(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.relu6`.

    .. math::

        dx = dy \cdot [0 < x \le 6]

    The left derivative at the kinks 0 and 6.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.relu6(np.ones(4, np.float32), np.array([0.0, 3.0, 6.0, 7.0], np.float32))
    array([0., 1., 1., 0.], dtype=float32)
    """
    return _grad("relu6", dy, x, (), bias, out, backend, stream)


def leaky_relu(
    dy: Array,
    x: Array,
    negative_slope: float = 0.2,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.leaky_relu`.

    .. math::

        dx = dy \cdot \begin{cases} 1 & x > 0 \\ s & x \le 0 \end{cases}

    with :math:`s` = ``negative_slope`` (the left derivative at 0).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    negative_slope : float, default 0.2
        The forward's slope.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.leaky_relu(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0.2, 0.2, 1. ], dtype=float32)
    """
    params = (checks.as_param("negative_slope", negative_slope),)
    return _grad("leaky_relu", dy, x, params, bias, out, backend, stream)


def silu(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.silu` (swish); ``gpuact.backward.swish`` is the same function.

    .. math::

        dx = dy \cdot \sigma(x) (1 + x (1 - \sigma(x)))

    0 at :math:`-\infty`, 1 at :math:`+\infty`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.silu(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.5    , 0.92767], dtype=float32)
    """
    return _grad("silu", dy, x, (), bias, out, backend, stream)


def gelu(
    dy: Array,
    x: Array,
    approximate: bool = False,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.gelu`.

    .. math::

        dx = dy \cdot (\Phi(x) + x\,\varphi(x)), \qquad
        \varphi(x) = \frac{e^{-x^{2}/2}}{\sqrt{2\pi}}

    (:math:`\Phi` and :math:`\varphi` the normal cdf and pdf), and with ``approximate=True`` the
    derivative of the tanh form :math:`x\,\sigma(2z)`:

    .. math::

        dx = dy \cdot \left(\sigma(2z) + 2x\,z'\,\sigma'(2z)\right), \qquad
        z = \sqrt{2/\pi}\,(x + 0.044715\,x^{3})

    0 at :math:`-\infty`, 1 at :math:`+\infty`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    approximate : bool, default False
        The forward's ``approximate``.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.gelu(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.5    , 1.08332], dtype=float32)
    """
    return _grad(activations.gelu_op(approximate), dy, x, (), bias, out, backend, stream)


def hard_sigmoid(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.hard_sigmoid`.

    .. math::

        dx = \frac{dy}{6} \cdot [-3 < x \le 3]

    The left derivative at the kinks :math:`\pm 3`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_sigmoid(np.ones(3, np.float32), np.array([-3.0, 0.0, 3.5], np.float32))
    array([0.     , 0.16667, 0.     ], dtype=float32)
    """
    return _grad("hard_sigmoid", dy, x, (), bias, out, backend, stream)


def hard_silu(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.hard_silu` (hard swish); ``gpuact.backward.hard_swish`` is the
    same function.

    .. math::

        dx = dy \cdot \begin{cases} 0 & x \le -3 \\ \frac{2x + 3}{6} & -3 < x \le 3 \\ 1 & x > 3 \end{cases}

    that is ``hard_sigmoid(x) + x / 6`` inside :math:`(-3, 3]` (the left derivative at the
    kinks).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_silu(np.ones(3, np.float32), np.array([-3.0, 0.0, 3.0], np.float32))
    array([0. , 0.5, 1.5], dtype=float32)
    """
    return _grad("hard_silu", dy, x, (), bias, out, backend, stream)


def mish(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.mish`.

    .. math::

        dx = dy \cdot \left(\tanh(s) + x (1 - \tanh^{2}(s))\,\sigma(x)\right), \qquad
        s = \operatorname{softplus}(x)

    0 at :math:`-\infty`, 1 at :math:`+\infty`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.mish(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.6    , 1.04904], dtype=float32)
    """
    return _grad("mish", dy, x, (), bias, out, backend, stream)


def log_softmax(
    dy: Array,
    x: Array,
    axis: Axis = -1,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.log_softmax` along ``axis``.

    .. math::

        dx = dy - \operatorname{softmax}(x) \sum_j dy_j

    over each slice along ``axis``; the softmax is recomputed inside the kernel.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    axis : int or tuple of ints, default -1
        The forward's axis.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.log_softmax(np.array([1.0, 0.0], np.float32), np.zeros(2, np.float32))
    array([ 0.5, -0.5], dtype=float32)
    """
    return _entry.softmax_grad(dy, x, axis, log=True, bias=bias, out=out, backend=backend, stream=stream)


def log_sigmoid(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.log_sigmoid`.

    .. math::

        dx = dy \cdot \sigma(-x)

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.log_sigmoid(np.ones(2, np.float32), np.array([0.0, -np.inf], np.float32))
    array([0.5, 1. ], dtype=float32)
    """
    return _grad("log_sigmoid", dy, x, (), bias, out, backend, stream)


def celu(
    dy: Array,
    x: Array,
    alpha: float = 1.0,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.celu`.

    .. math::

        dx = dy \cdot \begin{cases} 1 & x \ge 0 \\ e^{x / \alpha} & x < 0 \end{cases}

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    alpha : float, default 1.0
        The forward's ``alpha`` (not 0).
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.celu(np.ones(2, np.float32), np.array([-2.0, 1.0], np.float32), alpha=2.0)
    array([0.36788, 1.     ], dtype=float32)
    """
    return _grad("celu", dy, x, activations.celu_params(alpha), bias, out, backend, stream)


def glu(
    dy: Array,
    x: Array,
    axis: int = -1,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.glu` along ``axis``.

    .. math::

        da = dy \odot \sigma(b), \qquad db = dy \odot a \odot \sigma(b) (1 - \sigma(b)),
        \qquad dx = [da, db]

    for the halves :math:`a, b` of ``x`` along ``axis``. ``dy`` has the output's shape (half of
    ``x`` along ``axis``) and ``dx`` has ``x``'s.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at glu's output, ``x``'s kind.
    x : array_like or CUDA array
        The forward's input.
    axis : int, default -1
        The forward's axis.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.glu(np.ones(1, np.float32), np.array([2.0, 0.0], np.float32))
    array([0.5, 0.5], dtype=float32)
    """
    return _entry.glu_grad(dy, x, axis, out=out, backend=backend, stream=stream)


def _gated_grad(gate, dy, x, axis_or_b, out, backend, stream):
    if activations._is_axis(axis_or_b):
        return _entry.glu_grad(dy, x, axis_or_b, gate=gate, out=out, backend=backend, stream=stream)
    return _entry.gated_grad(dy, x, axis_or_b, gate=gate, out=out, backend=backend, stream=stream)


def swiglu(
    dy: Array,
    x: Array,
    axis: int = -1,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.swiglu` along ``axis``, one fused pass that recomputes the gate.

    .. math::

        da = dy \odot b \odot \operatorname{silu}'(a), \qquad db = dy \odot \operatorname{silu}(a),
        \qquad dx = [da, db]

    for the halves :math:`a, b` of ``x`` along ``axis``: ``silu(a)`` is recomputed from ``a``, so
    the forward needs to keep nothing but ``x``. ``dy`` has the output's shape; ``dx`` has ``x``'s.
    At ``a = ±inf`` the derivative is its limit (``silu'(+inf) = 1``, ``silu'(-inf) = 0``), as in
    :func:`silu`'s backward.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at swiglu's output, ``x``'s kind.
    x : array_like or CUDA array
        The forward's input.
    axis : int, default -1
        The forward's axis; or, in its place, ``b`` of the two-tensor form ``swiglu(dy, a, b)``,
        which returns the pair ``(da, db)`` (``out=`` a pair too), ``da = dy * b * silu'(a)``
        and ``db = dy * silu(a)``, ``dy`` of ``a``'s shape.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape; the two-tensor form: ``(da, db)``.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.swiglu(np.ones(1, np.float32), np.array([0.0, 2.0], np.float32))
    array([1., 0.], dtype=float32)
    """
    return _gated_grad("swiglu", dy, x, axis, out, backend, stream)


def geglu(
    dy: Array,
    x: Array,
    axis: int = -1,
    approximate: bool = False,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.geglu` along ``axis``, one fused pass that recomputes the gate.

    .. math::

        da = dy \odot b \odot \operatorname{gelu}'(a), \qquad db = dy \odot \operatorname{gelu}(a),
        \qquad dx = [da, db]

    with the forward's form of GELU (``approximate``). ``dy`` has the output's shape; ``dx`` has ``x``'s.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at geglu's output, ``x``'s kind.
    x : array_like or CUDA array
        The forward's input.
    axis : int, default -1
        The forward's axis; or, in its place, ``b`` of the two-tensor form ``geglu(dy, a, b)``,
        which returns the pair ``(da, db)`` (``out=`` a pair too), ``da = dy * b * gelu'(a)``
        and ``db = dy * gelu(a)``, ``dy`` of ``a``'s shape.
    approximate : bool, default False
        The forward's tanh approximation.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape; the two-tensor form: ``(da, db)``.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.geglu(np.ones(1, np.float32), np.array([0.0, 2.0], np.float32))
    array([1., 0.], dtype=float32)
    """
    return _gated_grad("geglu_tanh" if approximate else "geglu", dy, x, axis, out, backend, stream)


def reglu(
    dy: Array,
    x: Array,
    axis: int = -1,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.reglu` along ``axis``, one fused pass.

    .. math::

        da = dy \odot b \odot [a > 0], \qquad db = dy \odot \max(a, 0), \qquad dx = [da, db]

    (``relu'(0) = 0``, the derivative from the left, as :func:`gpuact.backward.relu`).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at reglu's output, ``x``'s kind.
    x : array_like or CUDA array
        The forward's input.
    axis : int, default -1
        The forward's axis; or, in its place, ``b`` of the two-tensor form ``reglu(dy, a, b)``,
        which returns the pair ``(da, db)`` (``out=`` a pair too), ``da = dy * b * relu'(a)``
        and ``db = dy * relu(a)``, ``dy`` of ``a``'s shape.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape; the two-tensor form: ``(da, db)``.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.reglu(np.ones(1, np.float32), np.array([1.0, 2.0], np.float32))
    array([2., 1.], dtype=float32)
    """
    return _gated_grad("reglu", dy, x, axis, out, backend, stream)


def hard_tanh(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.hard_tanh`.

    .. math::

        dx = dy \cdot [-1 < x \le 1]

    The left derivative at the kinks :math:`\pm 1`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_tanh(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0., 1., 1.], dtype=float32)
    """
    return _grad("hard_tanh", dy, x, (), bias, out, backend, stream)


def hard_shrink(
    dy: Array,
    x: Array,
    threshold: float = 0.5,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.hard_shrink`.

    .. math::

        dx = dy \cdot [x > \lambda \ \text{or}\ x \le -\lambda]

    with :math:`\lambda` = ``threshold`` (the left derivative at both kinks).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    threshold : float, default 0.5
        The forward's ``threshold``.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_shrink(np.ones(3, np.float32), np.array([-0.5, 0.0, 0.5], np.float32))
    array([1., 0., 0.], dtype=float32)
    """
    params = (checks.as_param("threshold", threshold),)
    return _grad("hard_shrink", dy, x, params, bias, out, backend, stream)


def soft_shrink(
    dy: Array,
    x: Array,
    threshold: float = 0.5,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.soft_shrink`.

    .. math::

        dx = dy \cdot [x > \lambda \ \text{or}\ x \le -\lambda]

    with :math:`\lambda` = ``threshold`` (the left derivative at both kinks).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    threshold : float, default 0.5
        The forward's ``threshold``.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.soft_shrink(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([1., 0., 1.], dtype=float32)
    """
    params = (checks.as_param("threshold", threshold),)
    return _grad("soft_shrink", dy, x, params, bias, out, backend, stream)


def tanh_shrink(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.tanh_shrink`.

    .. math::

        dx = dy \cdot \tanh^{2} x

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.tanh_shrink(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.     , 0.58003], dtype=float32)
    """
    return _grad("tanh_shrink", dy, x, (), bias, out, backend, stream)


def threshold(
    dy: Array,
    x: Array,
    threshold: float,
    default_value: float,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.threshold`.

    .. math::

        dx = dy \cdot [x > \theta]

    with :math:`\theta` = ``threshold`` (the left derivative at the jump).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    threshold, default_value : float
        The forward's parameters (``default_value`` does not change the gradient).
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.threshold(np.ones(3, np.float32), np.array([0.0, 1.0, 2.0], np.float32), 1.0, -5.0)
    array([0., 0., 1.], dtype=float32)
    """
    params = (
        checks.as_param("threshold", threshold),
        checks.as_param("default_value", default_value, allow_nan=True),
    )
    return _grad("threshold", dy, x, params, bias, out, backend, stream)


def squareplus(
    dy: Array,
    x: Array,
    b: float = 4,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.squareplus`.

    .. math::

        dx = dy \cdot \frac{1}{2} \left(1 + \frac{x}{s}\right), \qquad s = \sqrt{x^{2} + b}

    evaluated as :math:`b / (2 s (s - x))` for negative :math:`x`, without
    cancellation; 1 at :math:`+\infty`. With ``b = 0`` it is relu's (0 from the left at 0).

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    b : float, default 4
        The forward's ``b``.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.squareplus(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0.27639, 0.5    , 0.72361], dtype=float32)
    """
    return _grad("squareplus", dy, x, activations.squareplus_params(b), bias, out, backend, stream)


def sparse_plus(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.sparse_plus`.

    .. math::

        dx = dy \cdot \begin{cases} 0 & x \le -1 \\ \frac{1}{2} (x + 1) & -1 < x < 1 \\ 1 & x \ge 1 \end{cases}

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparse_plus(np.ones(3, np.float32), np.array([-2.0, 0.0, 2.0], np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    return _grad("sparse_plus", dy, x, (), bias, out, backend, stream)


def sparse_sigmoid(
    dy: Array,
    x: Array,
    *,
    bias: Array | None = None,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.sparse_sigmoid`.

    .. math::

        dx = \frac{dy}{2} \cdot [-1 < x \le 1]

    The left derivative at the kinks :math:`\pm 1`.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    bias, out, backend, stream
        See :ref:`shared-arguments` and :ref:`contract-gradients`.

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparse_sigmoid(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0. , 0.5, 0.5], dtype=float32)
    """
    return _grad("sparse_sigmoid", dy, x, (), bias, out, backend, stream)


def sparsemax(
    dy: Array,
    x: Array,
    axis: int = -1,
    *,
    out: Array | None = None,
    backend: Backend | None = None,
    stream: Stream = None,
) -> Result:
    r"""Gradient of :func:`gpuact.sparsemax` along ``axis``.

    .. math::

        dx = s \odot \left(dy - \frac{\sum_j s_j\, dy_j}{\sum_j s_j}\right), \qquad
        s = [\operatorname{sparsemax}(x) > 0]

    over each slice along ``axis``: ``dy`` minus its mean over the support, on the support, and 0
    elsewhere. The support is recomputed inside the kernel.

    Parameters
    ----------
    dy : array_like or CUDA array
        The gradient at the output, ``x``'s kind and shape.
    x : array_like or CUDA array
        The forward's input.
    axis : int, default -1
        The forward's axis.
    out, backend, stream
        See :ref:`shared-arguments` (no ``bias``).

    Returns
    -------
    array
        ``dx``, an array of ``x``'s kind and shape.

    Examples
    --------
    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparsemax(np.array([1.0, 0.0, 5.0], np.float32), np.array([1.0, 1.0, -5.0], np.float32))
    array([ 0.5, -0.5,  0. ], dtype=float32)
    """
    return _entry.sparsemax_grad(dy, x, axis, out=out, backend=backend, stream=stream)


swish = silu
hard_swish = hard_silu

__all__ = list(activations.__all__)
