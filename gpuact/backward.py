"""The gradients of Keras's activations: one function per activation, each a fused kernel.

``gpuact.backward.<name>(dy, x, <the forward's parameters>, *, bias=None, out=None, backend=None,
stream=None)`` returns ``dx``, the gradient of a loss with respect to ``x`` given its gradient
``dy`` with respect to the activation's output. An elementwise one is ``dx = dy * f'(x)``, read
from ``dy`` and ``x`` and written to ``dx`` in one pass; softmax, log_softmax, sparsemax and glu
recompute their forward inside the kernel.

* ``dy`` and ``x`` are arrays of the same kind and shape (glu: ``dy`` has the output's shape);
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

>>> import numpy as np, gpuact
>>> x = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=np.float32)
>>> gpuact.backward.relu(np.ones_like(x), x)
array([0., 0., 0., 1., 1.], dtype=float32)
"""

from __future__ import annotations

from gpuact import _dispatch, activations
from gpuact.activations import _ALPHA_UNSET


def _grad(op, dy, x, params, bias, out, backend, stream):
    return _dispatch.elementwise_grad(op, dy, x, params, bias=bias, out=out, backend=backend, stream=stream)


def relu(dy, x, alpha=_ALPHA_UNSET, max_value=None, threshold=0.0, *, negative_slope=None, bias=None, out=None,
         backend=None, stream=None):
    """Gradient of ``relu``: ``dx = dy`` where ``threshold < x`` (and ``x <= max_value``),
    ``dy * alpha`` where ``x <= threshold``, else 0 (the left derivative at both kinks).

    >>> import numpy as np, gpuact
    >>> x = np.array([-1.0, 0.0, 3.0, 7.0], dtype=np.float32)
    >>> gpuact.backward.relu(np.ones_like(x), x, alpha=0.1, max_value=6.0)
    array([0.1, 0.1, 1. , 0. ], dtype=float32)
    """
    params = activations.relu_params(alpha, max_value, threshold, negative_slope)
    return _grad("relu", dy, x, params, bias, out, backend, stream)


def sigmoid(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``sigmoid``: ``dx = dy * s (1 - s)``, computed as ``e / (1 + e)**2`` with
    ``e = exp(-|x|)`` (no cancellation; 0 at +-inf).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.sigmoid(np.ones(2, np.float32), np.array([0.0, 2.0], np.float32))
    array([0.25   , 0.10499], dtype=float32)
    """
    return _grad("sigmoid", dy, x, (), bias, out, backend, stream)


def softmax(dy, x, axis=-1, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``softmax`` along ``axis``: ``dx = y * (dy - sum(dy * y))``, ``y = softmax(x)``
    recomputed in the kernel.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.softmax(np.array([1.0, 0.0], np.float32), np.zeros(2, np.float32))
    array([ 0.25, -0.25], dtype=float32)
    """
    return _dispatch.softmax_grad(dy, x, axis, log=False, bias=bias, out=out, backend=backend, stream=stream)


def softplus(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``softplus``: ``dx = dy * sigmoid(x)``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.softplus(np.ones(2, np.float32), np.array([0.0, np.inf], np.float32))
    array([0.5, 1. ], dtype=float32)
    """
    return _grad("softplus", dy, x, (), bias, out, backend, stream)


def softsign(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``softsign``: ``dx = dy / (1 + |x|)**2``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.softsign(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.  , 0.25], dtype=float32)
    """
    return _grad("softsign", dy, x, (), bias, out, backend, stream)


def tanh(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``tanh``: ``dx = dy * (1 - tanh(x)**2)``, computed as ``4 e / (1 + e)**2`` with
    ``e = exp(-2|x|)``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.tanh(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.     , 0.41997], dtype=float32)
    """
    return _grad("tanh", dy, x, (), bias, out, backend, stream)


def selu(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``selu``: ``dx = dy * scale`` for ``x > 0``, ``dy * scale * alpha * exp(x)``
    up to 0 (Keras's constants).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.selu(np.ones(2, np.float32), np.array([-1.0, 1.0], np.float32))
    array([0.64677, 1.0507 ], dtype=float32)
    """
    return _grad("selu", dy, x, (), bias, out, backend, stream)


def elu(dy, x, alpha=1.0, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``elu``: ``dx = dy`` for ``x > 0``, ``dy * alpha * exp(x)`` up to 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.elu(np.ones(2, np.float32), np.array([-1.0, 1.0], np.float32))
    array([0.36788, 1.     ], dtype=float32)
    """
    return _grad("elu", dy, x, (_dispatch.as_param("alpha", alpha),), bias, out, backend, stream)


def exponential(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``exponential``: ``dx = dy * exp(x)``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.exponential(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([1.     , 2.71828], dtype=float32)
    """
    return _grad("exponential", dy, x, (), bias, out, backend, stream)


def linear(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``linear``: a copy of ``dy`` (NaN where ``x`` is NaN).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.linear(np.array([2.0, 3.0], np.float32), np.zeros(2, np.float32))
    array([2., 3.], dtype=float32)
    """
    return _grad("linear", dy, x, (), bias, out, backend, stream)


def relu6(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``relu6``: ``dx = dy`` on ``(0, 6]``, else 0 (the left derivative at the kinks).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.relu6(np.ones(4, np.float32), np.array([0.0, 3.0, 6.0, 7.0], np.float32))
    array([0., 1., 1., 0.], dtype=float32)
    """
    return _grad("relu6", dy, x, (), bias, out, backend, stream)


def leaky_relu(dy, x, negative_slope=0.2, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``leaky_relu``: ``dx = dy`` for ``x > 0``, ``dy * negative_slope`` for
    ``x <= 0`` (the left derivative at 0).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.leaky_relu(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0.2, 0.2, 1. ], dtype=float32)
    """
    params = (_dispatch.as_param("negative_slope", negative_slope),)
    return _grad("leaky_relu", dy, x, params, bias, out, backend, stream)


def silu(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``silu`` (swish): ``dx = dy * s(x) (1 + x (1 - s(x)))``, ``s = sigmoid``;
    0 at ``-inf``, 1 at ``+inf``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.silu(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.5    , 0.92767], dtype=float32)
    """
    return _grad("silu", dy, x, (), bias, out, backend, stream)


def gelu(dy, x, approximate=False, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``gelu``: ``dx = dy * (Phi(x) + x phi(x))`` (the normal cdf and pdf); with
    ``approximate=True`` the derivative of the tanh form, ``s(2z) + x s'(2z) 2z'`` with
    ``z = sqrt(2/pi) (x + 0.044715 x**3)``. 0 at ``-inf``, 1 at ``+inf``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.gelu(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.5    , 1.08332], dtype=float32)
    """
    return _grad(activations.gelu_op(approximate), dy, x, (), bias, out, backend, stream)


def hard_sigmoid(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``hard_sigmoid``: ``dx = dy / 6`` on ``(-3, 3]``, else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_sigmoid(np.ones(3, np.float32), np.array([-3.0, 0.0, 3.5], np.float32))
    array([0.     , 0.16667, 0.     ], dtype=float32)
    """
    return _grad("hard_sigmoid", dy, x, (), bias, out, backend, stream)


def hard_silu(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``hard_silu`` (hard swish): ``dx = dy * (hard_sigmoid(x) + x / 6)`` on
    ``(-3, 3]``, ``dy * hard_sigmoid(x)`` elsewhere (0 below, 1 above).

    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_silu(np.ones(3, np.float32), np.array([-3.0, 0.0, 3.0], np.float32))
    array([0. , 0.5, 1.5], dtype=float32)
    """
    return _grad("hard_silu", dy, x, (), bias, out, backend, stream)


def mish(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``mish``: ``dx = dy * (tanh(sp) + x (1 - tanh(sp)**2) sigmoid(x))`` with
    ``sp = softplus(x)``; 0 at ``-inf``, 1 at ``+inf``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.mish(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.6    , 1.04904], dtype=float32)
    """
    return _grad("mish", dy, x, (), bias, out, backend, stream)


def log_softmax(dy, x, axis=-1, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``log_softmax`` along ``axis``: ``dx = dy - softmax(x) * sum(dy)``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.log_softmax(np.array([1.0, 0.0], np.float32), np.zeros(2, np.float32))
    array([ 0.5, -0.5], dtype=float32)
    """
    return _dispatch.softmax_grad(dy, x, axis, log=True, bias=bias, out=out, backend=backend, stream=stream)


def log_sigmoid(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``log_sigmoid``: ``dx = dy * sigmoid(-x)``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.log_sigmoid(np.ones(2, np.float32), np.array([0.0, -np.inf], np.float32))
    array([0.5, 1. ], dtype=float32)
    """
    return _grad("log_sigmoid", dy, x, (), bias, out, backend, stream)


def celu(dy, x, alpha=1.0, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``celu``: ``dx = dy`` for ``x >= 0``, ``dy * exp(x / alpha)`` below.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.celu(np.ones(2, np.float32), np.array([-2.0, 1.0], np.float32), alpha=2.0)
    array([0.36788, 1.     ], dtype=float32)
    """
    return _grad("celu", dy, x, activations.celu_params(alpha), bias, out, backend, stream)


def glu(dy, x, axis=-1, *, out=None, backend=None, stream=None):
    """Gradient of ``glu`` along ``axis``: ``dy`` has the output's shape (half of ``x`` along
    ``axis``) and ``dx`` has ``x``'s: ``da = dy * sigmoid(b)``, ``db = dy * a * sigmoid'(b)`` for
    the halves ``a, b`` of ``x``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.glu(np.ones(1, np.float32), np.array([2.0, 0.0], np.float32))
    array([0.5, 0.5], dtype=float32)
    """
    return _dispatch.glu_grad(dy, x, axis, out=out, backend=backend, stream=stream)


def hard_tanh(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``hard_tanh``: ``dx = dy`` on ``(-1, 1]``, else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_tanh(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0., 1., 1.], dtype=float32)
    """
    return _grad("hard_tanh", dy, x, (), bias, out, backend, stream)


def hard_shrink(dy, x, threshold=0.5, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``hard_shrink``: ``dx = dy`` where ``x > threshold`` or ``x <= -threshold``
    (from the left at both kinks), else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.hard_shrink(np.ones(3, np.float32), np.array([-0.5, 0.0, 0.5], np.float32))
    array([1., 0., 0.], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),)
    return _grad("hard_shrink", dy, x, params, bias, out, backend, stream)


def soft_shrink(dy, x, threshold=0.5, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``soft_shrink``: ``dx = dy`` where ``x > threshold`` or ``x <= -threshold``
    (from the left at both kinks), else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.soft_shrink(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([1., 0., 1.], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),)
    return _grad("soft_shrink", dy, x, params, bias, out, backend, stream)


def tanh_shrink(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``tanh_shrink``: ``dx = dy * tanh(x)**2``.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.tanh_shrink(np.ones(2, np.float32), np.array([0.0, 1.0], np.float32))
    array([0.     , 0.58003], dtype=float32)
    """
    return _grad("tanh_shrink", dy, x, (), bias, out, backend, stream)


def threshold(dy, x, threshold, default_value, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``threshold``: ``dx = dy`` where ``x > threshold``, else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.threshold(np.ones(3, np.float32), np.array([0.0, 1.0, 2.0], np.float32), 1.0, -5.0)
    array([0., 0., 1.], dtype=float32)
    """
    params = (_dispatch.as_param("threshold", threshold),
              _dispatch.as_param("default_value", default_value, allow_nan=True))
    return _grad("threshold", dy, x, params, bias, out, backend, stream)


def squareplus(dy, x, b=4, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``squareplus``: ``dx = dy * (1 + x / sqrt(x**2 + b)) / 2``, evaluated as
    ``b / (2 s (s - x))`` for negative ``x`` (``s = sqrt(x**2 + b)``), without cancellation.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.squareplus(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0.27639, 0.5    , 0.72361], dtype=float32)
    """
    return _grad("squareplus", dy, x, activations.squareplus_params(b), bias, out, backend, stream)


def sparse_plus(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``sparse_plus``: 0 up to -1, ``dy * (x + 1) / 2`` between, ``dy`` from 1.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparse_plus(np.ones(3, np.float32), np.array([-2.0, 0.0, 2.0], np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    """
    return _grad("sparse_plus", dy, x, (), bias, out, backend, stream)


def sparse_sigmoid(dy, x, *, bias=None, out=None, backend=None, stream=None):
    """Gradient of ``sparse_sigmoid``: ``dx = dy / 2`` on ``(-1, 1]``, else 0.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparse_sigmoid(np.ones(3, np.float32), np.array([-1.0, 0.0, 1.0], np.float32))
    array([0. , 0.5, 0.5], dtype=float32)
    """
    return _grad("sparse_sigmoid", dy, x, (), bias, out, backend, stream)


def sparsemax(dy, x, axis=-1, *, out=None, backend=None, stream=None):
    """Gradient of ``sparsemax`` along ``axis``: ``dx = s * (dy - mean of dy over the support)``,
    ``s`` the support indicator (``sparsemax(x) > 0``), recomputed in the kernel.

    >>> import numpy as np, gpuact
    >>> gpuact.backward.sparsemax(np.array([1.0, 0.0, 5.0], np.float32), np.array([1.0, 1.0, -5.0], np.float32))
    array([ 0.5, -0.5,  0. ], dtype=float32)
    """
    return _dispatch.sparsemax_grad(dy, x, axis, out=out, backend=backend, stream=stream)


swish = silu
hard_swish = hard_silu

__all__ = list(activations.__all__)
