"""Keras's activation layers as plain callable objects with ``get_config()`` / ``from_config()``,
and ``backward(dy, x)`` for training (``gpuact.backward``).

Constructor arguments are checked at construction: ``None`` or a negative value where Keras
forbids one raises ``ValueError`` there, not at the first call.

``from_config`` also takes what the matching Keras 3 layer's ``get_config()`` returns: its
``name``, ``trainable`` and ``dtype`` entries (a Keras layer's bookkeeping, meaningless here) are
ignored, and PReLU reads a constant ``alpha_initializer`` (Keras initializes alpha to zeros).
``deserialize`` takes a whole ``keras.saving.serialize_keras_object(layer)`` dict.

Calling a layer takes the keyword arguments of the function it applies (``out=``, ``backend=``,
``stream=``; ``bias=`` where that function has it): see ``docs/contract.rst``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from gpuact import _entry, activations
from gpuact._contract import checks
from gpuact._typing import ActivationFn, Array, Axis, Layer, Result
from gpuact.registry import get, serialize

# entries of a Keras 3 layer config that describe the Keras layer object, not the activation
_KERAS_BOOKKEEPING = ("name", "trainable", "dtype")

_L = TypeVar("_L", bound="_Layer")


def _non_negative(layer: str, name: str, value) -> float:
    if value is None:
        raise ValueError(f"{name} of a {layer} layer cannot be None")
    value = checks.as_param(name, value)
    if value < 0:
        raise ValueError(f"{name} of a {layer} layer cannot be negative; got {name}={value}")
    return value


class _Layer:
    _config_keys: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        """The layer's constructor arguments as a dict, as Keras's ``get_config()``.

        Returns
        -------
        dict
            ``from_config`` of it builds the same layer.
        """
        return {key: getattr(self, key) for key in self._config_keys}

    @classmethod
    def from_config(cls: type[_L], config: dict[str, Any]) -> _L:
        """The layer that ``config`` describes: this class's ``get_config()``, or the matching
        Keras 3 layer's (its ``name``, ``trainable`` and ``dtype`` entries are ignored).

        Parameters
        ----------
        config : dict
            The constructor arguments by name.

        Returns
        -------
        layer
            A new layer of this class.
        """
        return cls(**{k: v for k, v in config.items() if k not in _KERAS_BOOKKEEPING})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Activation(_Layer):
    """Applies an activation given by name, alias or callable.

    Calling the layer is calling the function: ``Activation("gelu")(x, approximate=True)`` is
    ``gpuact.gelu(x, approximate=True)``, so its formula is the function's.

    Parameters
    ----------
    activation : str, dict or callable
        Anything :func:`gpuact.get` takes but ``None`` (``ValueError``).

    See Also
    --------
    gpuact.get

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import Activation
    >>> Activation("relu")(np.array([-1.0, 2.0], dtype=np.float32))
    array([0., 2.], dtype=float32)
    >>> Activation("swish").get_config()
    {'activation': 'silu'}
    """

    def __init__(self, activation: str | dict[str, Any] | ActivationFn) -> None:
        if activation is None:
            raise ValueError("Activation layer needs an activation; got None")
        self.activation = get(activation)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The activation of ``x``; ``kwargs`` go to the function."""
        return self.activation(x, **kwargs)

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx`` for ``dy``, the gradient at this layer's output (``gpuact.backward.<name>``).

        A callable that is not one of gpuact's activations has no gradient here (``ValueError``).
        """
        return _backward_of(self.activation)(dy, x, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """``{"activation": name}``, the function's registered name (``ValueError`` for a callable
        gpuact does not know)."""
        return {"activation": serialize(self.activation)}


class ReLU(_Layer):
    r"""Rectified linear unit: :func:`gpuact.relu` with Keras's layer arguments, all non-negative.

    .. math::

        f(x) = c(x \cdot [x > t]) - s \max(t - x, 0),
        \qquad c(v) = \min(\max(v, 0), m)

    with :math:`s` = ``negative_slope``, :math:`t` = ``threshold`` and :math:`m` = ``max_value``
    (no clip when it is ``None``).

    Parameters
    ----------
    max_value : float, optional
        Largest output; ``None`` clips nothing.
    negative_slope : float, default 0.0
        Slope below the threshold.
    threshold : float, default 0.0
        Inputs at or below it give 0 (or :math:`s (x - t)`).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import ReLU
    >>> ReLU(max_value=1.0)(np.array([-3.0, 0.5, 2.0], dtype=np.float32))
    array([0. , 0.5, 1. ], dtype=float32)
    >>> ReLU(max_value=1.0).backward(np.ones(3, np.float32), np.array([-3.0, 0.5, 2.0], np.float32))
    array([0., 1., 0.], dtype=float32)
    """

    _config_keys = ("max_value", "negative_slope", "threshold")

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0) -> None:
        self.max_value = None if max_value is None else _non_negative("ReLU", "max_value", max_value)
        self.negative_slope = _non_negative("ReLU", "negative_slope", negative_slope)
        self.threshold = _non_negative("ReLU", "threshold", threshold)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The layer's :math:`f(x)`; ``kwargs`` go to :func:`gpuact.relu`."""
        return activations.relu(
            x, negative_slope=self.negative_slope, max_value=self.max_value, threshold=self.threshold, **kwargs
        )

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx`` for ``dy``, the gradient at this layer's output (:func:`gpuact.backward.relu`)."""
        return _backward().relu(
            dy, x, negative_slope=self.negative_slope, max_value=self.max_value, threshold=self.threshold, **kwargs
        )


class LeakyReLU(_Layer):
    r"""Leaky ReLU: :func:`gpuact.leaky_relu` with Keras's layer default slope, 0.3.

    .. math::

        f(x) = \begin{cases} x & x \ge 0 \\ s\,x & x < 0 \end{cases}

    Parameters
    ----------
    negative_slope : float, default 0.3
        :math:`s`, non-negative.
    alpha : float, optional
        The Keras 2 name of ``negative_slope``; it wins when given.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import LeakyReLU
    >>> LeakyReLU()(np.array([-10.0, 5.0], dtype=np.float32))
    array([-3.,  5.], dtype=float32)
    """

    _config_keys = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.3, *, alpha: float | None = None) -> None:
        if alpha is not None:
            negative_slope = alpha
        self.negative_slope = _non_negative("LeakyReLU", "negative_slope", negative_slope)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The layer's :math:`f(x)`; ``kwargs`` go to :func:`gpuact.leaky_relu`."""
        return activations.leaky_relu(x, self.negative_slope, **kwargs)

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx`` for ``dy``, the gradient at this layer's output (:func:`gpuact.backward.leaky_relu`)."""
        return _backward().leaky_relu(dy, x, self.negative_slope, **kwargs)


class PReLU(_Layer):
    r"""Parametric ReLU with a given ``alpha`` array broadcast against ``x``.

    .. math::

        f(x) = \max(x, 0) + \alpha \min(x, 0) = \operatorname{relu}(x) - \alpha \operatorname{relu}(-x)

    Where ``alpha`` is 0 the result at ``-inf`` is 0 (the limit), not :math:`0 \cdot (-\infty)`.
    gpuact's PReLU does not train ``alpha``: it is given.

    Parameters
    ----------
    alpha : array_like, CUDA array or float
        The slopes, real numbers (``TypeError`` otherwise), broadcast against ``x``.
    shared_axes : int or sequence of ints, optional
        Axes of ``x`` (Keras numbering: axis 0 is the batch, so at least 1) along which ``alpha``
        is shared, i.e. where ``alpha`` must have length 1 once aligned with ``x``; checked at
        each call (``ValueError``).

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import PReLU
    >>> PReLU(np.array([0.1, 0.5], dtype=np.float32))(np.array([[-2.0, -2.0], [3.0, 3.0]], dtype=np.float32))
    array([[-0.2, -1. ],
           [ 3. ,  3. ]], dtype=float32)
    """

    _config_keys = ("alpha", "shared_axes")
    alpha: Any
    shared_axes: tuple[int, ...] | None

    def __init__(self, alpha: Array | float, shared_axes: int | Sequence[int] | None = None) -> None:
        if alpha is None:
            raise ValueError("alpha of a PReLU layer cannot be None")
        kind = checks.dtype_kind(alpha)
        if kind not in "biuf":
            raise TypeError(f"alpha of a PReLU layer must be real numbers; got dtype kind {kind!r}")
        if shared_axes is not None:
            shared_axes = (shared_axes,) if isinstance(shared_axes, (int, np.integer)) else tuple(shared_axes)
            if any(
                isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or a < 1 for a in shared_axes
            ):
                raise ValueError(f"shared_axes must be positive ints (axis 0 is the batch); got {shared_axes}")
            shared_axes = tuple(int(a) for a in shared_axes)
        self.alpha = alpha
        self.shared_axes = shared_axes

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PReLU:
        """A PReLU from its ``get_config()`` or from Keras 3's PReLU config.

        A Keras config carries no ``alpha``, only its ``alpha_initializer``: a constant one
        (``Zeros``, ``Ones``, ``Constant``) gives ``alpha``, any other raises ``ValueError`` (pass
        ``alpha=`` with the learned weights instead), and so does an ``alpha_regularizer`` or
        ``alpha_constraint`` (they act on training).

        Parameters
        ----------
        config : dict
            The constructor arguments by name.

        Returns
        -------
        PReLU
        """
        config = {k: v for k, v in config.items() if k not in _KERAS_BOOKKEEPING}
        if "alpha" not in config and "alpha_initializer" in config:
            config["alpha"] = _constant_initializer(config.pop("alpha_initializer"))
        for key in ("alpha_regularizer", "alpha_constraint"):
            if config.pop(key, None) is not None:
                raise ValueError(f"PReLU's {key} acts on training, which gpuact's PReLU does not do")
        return cls(**config)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The layer's :math:`f(x)`; ``kwargs`` are ``out``, ``backend`` and ``stream``."""
        if self.shared_axes is not None:
            shape = tuple(x.shape)  # type: ignore[union-attr]
            ndim, alpha_shape = len(shape), tuple(np.shape(self.alpha))
            aligned = (1,) * (ndim - len(alpha_shape)) + alpha_shape
            for axis in self.shared_axes:
                if axis >= ndim or aligned[axis] != 1:
                    raise ValueError(f"alpha of shape {alpha_shape} is not shared along axis {axis} of {shape}")
        return _entry.prelu(x, self.alpha, **kwargs)

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx = dy`` where ``x > 0``, ``dy * alpha`` elsewhere (the left derivative at 0). alpha's own
        gradient, ``dy * min(x, 0)`` summed over the axes it is broadcast along, is not computed."""
        return _entry.prelu_grad(dy, x, self.alpha, **kwargs)


def _backward():
    from gpuact import backward

    return backward


def _backward_of(fn):
    """The gradient function of a gpuact activation (a foreign callable has none)."""
    name = serialize(fn)  # ValueError for a function gpuact does not know
    return getattr(_backward(), name)


def _constant_initializer(initializer) -> float:
    """alpha from a Keras initializer config: Zeros, Ones or Constant (a PReLU built from a saved
    config starts from its initializer; learned weights come separately)."""
    if isinstance(initializer, str):
        initializer = {"class_name": initializer, "config": {}}
    name = initializer.get("class_name", "")
    if name in ("Zeros", "zeros"):
        return 0.0
    if name in ("Ones", "ones"):
        return 1.0
    if name in ("Constant", "constant"):
        return checks.as_param("alpha", initializer.get("config", {}).get("value", 0.0))
    raise ValueError(f"PReLU's alpha_initializer {name!r} is not a constant: pass alpha= explicitly")


class ELU(_Layer):
    r"""Exponential linear unit: :func:`gpuact.elu`.

    .. math::

        f(x) = \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases}

    Parameters
    ----------
    alpha : float, default 1.0
        :math:`\alpha`; ``None`` raises ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import ELU
    >>> ELU(alpha=2.0)(np.array([-1.0, 1.0], dtype=np.float32))
    array([-1.26424,  1.     ], dtype=float32)
    """

    _config_keys = ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        if alpha is None:
            raise ValueError("alpha of an ELU layer cannot be None")
        self.alpha = checks.as_param("alpha", alpha)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The layer's :math:`f(x)`; ``kwargs`` go to :func:`gpuact.elu`."""
        return activations.elu(x, self.alpha, **kwargs)

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx`` for ``dy``, the gradient at this layer's output (:func:`gpuact.backward.elu`)."""
        return _backward().elu(dy, x, self.alpha, **kwargs)


class Softmax(_Layer):
    r"""Softmax along ``axis``, with Keras's ``mask``.

    .. math::

        y_i = \frac{k_i\, e^{x_i - m}}{\sum_j k_j\, e^{x_j - m}}, \qquad m = \max_{j : k_j} x_j

    with :math:`k_i` = 1 where the mask keeps position :math:`i` (``True``, or a number above 0.5)
    and 0 elsewhere: masked positions get 0, and a fully masked slice is all 0. Without a mask it is
    :func:`gpuact.softmax`.

    Parameters
    ----------
    axis : int or sequence of ints, default -1
        The axis (or axes, together) to normalize over; ``None`` raises ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import Softmax
    >>> Softmax()(np.array([1.0, 1.0, 5.0], dtype=np.float32), mask=np.array([True, True, False]))
    array([0.5, 0.5, 0. ], dtype=float32)
    """

    _config_keys = ("axis",)
    axis: Axis

    def __init__(self, axis: int | Sequence[int] = -1) -> None:
        if axis is None:
            raise ValueError("axis of a Softmax layer cannot be None")
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis  # type: ignore[assignment]

    def __call__(self, x: Array, mask: Array | None = None, **kwargs: Any) -> Result:
        """The masked softmax :math:`y` of ``x``; ``mask`` (bool, or numbers where > 0.5 keeps)
        broadcasts against ``x``; ``kwargs`` are ``bias``, ``out``, ``backend`` and ``stream``."""
        return _entry.softmax(x, self.axis, log=False, mask=mask, **kwargs)

    def backward(self, dy: Array, x: Array, mask: Array | None = None, **kwargs: Any) -> Result:
        """``dx = y (dy - sum(dy y))`` with the forward's mask (masked positions get 0)."""
        return _entry.softmax_grad(dy, x, self.axis, log=False, mask=mask, **kwargs)


class ThresholdedReLU(_Layer):
    r"""Thresholded ReLU (tf.keras 2): :func:`gpuact.threshold` with a ``default_value`` of 0.

    .. math::

        f(x) = \begin{cases} x & x > \theta \\ 0 & x \le \theta \end{cases}

    Parameters
    ----------
    theta : float, default 1.0
        :math:`\theta`, non-negative.

    Examples
    --------
    >>> import numpy as np
    >>> from gpuact.layers import ThresholdedReLU
    >>> ThresholdedReLU()(np.array([0.5, 1.0, 2.0], dtype=np.float32))
    array([0., 0., 2.], dtype=float32)
    """

    _config_keys = ("theta",)

    def __init__(self, theta: float = 1.0) -> None:
        self.theta = _non_negative("ThresholdedReLU", "theta", theta)

    def __call__(self, x: Array, **kwargs: Any) -> Result:
        """The layer's :math:`f(x)`; ``kwargs`` go to :func:`gpuact.threshold`."""
        return activations.threshold(x, self.theta, 0.0, **kwargs)

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result:
        """``dx`` for ``dy``, the gradient at this layer's output (:func:`gpuact.backward.threshold`)."""
        return _backward().threshold(dy, x, self.theta, 0.0, **kwargs)


LAYERS: dict[str, Any] = {
    cls.__name__: cls for cls in (Activation, ReLU, LeakyReLU, PReLU, ELU, Softmax, ThresholdedReLU)
}


def deserialize(config: dict[str, Any]) -> Layer:
    """A layer from ``{"class_name": name, "config": {...}}``, which is what
    ``keras.saving.serialize_keras_object(layer)`` writes for the matching Keras 3 layer.

    Parameters
    ----------
    config : dict
        ``class_name`` one of ``Activation``, ``ReLU``, ``LeakyReLU``, ``PReLU``, ``ELU``,
        ``Softmax``, ``ThresholdedReLU`` (else ``ValueError``), and ``config`` the layer's
        arguments (see each layer's ``from_config``).

    Returns
    -------
    layer
        The layer.

    Examples
    --------
    >>> from gpuact.layers import deserialize
    >>> deserialize({"module": "keras.layers", "class_name": "ReLU",
    ...              "config": {"name": "re_lu", "trainable": True, "max_value": 6.0}})
    ReLU(max_value=6.0, negative_slope=0.0, threshold=0.0)
    """
    name = config.get("class_name") if isinstance(config, dict) else None
    if name not in LAYERS:
        raise ValueError(f"Unknown layer: {config!r}")
    return LAYERS[name].from_config(config.get("config", {}))


__all__ = ["Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU", "deserialize"]
