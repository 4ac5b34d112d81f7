"""Look up activations by name, as ``keras.activations.get`` / ``serialize`` / ``deserialize`` do.

The names are those of ``gpuact.activations.__all__``; ``swish`` and ``hard_swish`` are aliases of
``silu`` and ``hard_silu`` (they serialize to those names).
"""

from __future__ import annotations

from typing import Any

from gpuact import activations
from gpuact._typing import ActivationFn, Identifier

ALL_OBJECTS = {name: getattr(activations, name) for name in activations.__all__ if name not in ("swish", "hard_swish")}
ALIASES = {"swish": activations.silu, "hard_swish": activations.hard_silu}
_BY_NAME = {**ALL_OBJECTS, **ALIASES}
_NAME_OF = {fn: name for name, fn in ALL_OBJECTS.items()}


def serialize(activation: ActivationFn) -> str:
    """The registered name of a gpuact activation, as ``keras.activations.serialize``.

    Parameters
    ----------
    activation : callable
        One of gpuact's activation functions (an alias serializes to its function's name);
        anything else raises ``ValueError``.

    Returns
    -------
    str
        The name that :func:`deserialize` and :func:`get` take back.

    Examples
    --------
    >>> import gpuact
    >>> gpuact.serialize(gpuact.swish)
    'silu'
    """
    try:
        return _NAME_OF[activation]
    except (KeyError, TypeError):
        raise ValueError(f"{activation!r} is not a gpuact activation and cannot be serialized") from None


def deserialize(config: str | dict[str, Any]) -> ActivationFn:
    """The activation named by ``config``, as ``keras.activations.deserialize``.

    Parameters
    ----------
    config : str or dict
        A name or alias; a Keras-style ``{"class_name": name}`` dict; or what Keras 3 writes for
        a function, ``keras.saving.serialize_keras_object(fn)``:
        ``{"module": "builtins", "class_name": "function", "config": name, ...}``. An unknown
        name raises ``ValueError``.

    Returns
    -------
    callable
        The gpuact function (``gpuact.relu``, ...).

    Examples
    --------
    >>> import gpuact
    >>> gpuact.deserialize("hard_swish") is gpuact.hard_silu
    True
    >>> gpuact.deserialize({"module": "builtins", "class_name": "function", "config": "gelu",
    ...                     "registered_name": "function"}) is gpuact.gelu
    True
    """
    name: Any = config
    if isinstance(config, dict):
        name = config.get("class_name", config.get("config"))
        if name == "function":  # Keras 3: the function's name is the config
            name = config.get("config")
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]
    raise ValueError(f"Unknown activation function: {config!r}")


def get(identifier: Identifier) -> ActivationFn:
    """An activation function from an identifier, as ``keras.activations.get``.

    Parameters
    ----------
    identifier : str, dict, callable or None
        ``None`` gives :func:`gpuact.linear`; a name, alias or config dict the function
        (:func:`deserialize`); a callable itself. Anything else raises ``ValueError`` naming the
        identifier.

    Returns
    -------
    callable
        The activation function.

    Examples
    --------
    >>> import gpuact
    >>> gpuact.get("relu") is gpuact.relu, gpuact.get(None) is gpuact.linear
    (True, True)
    """
    if identifier is None:
        return activations.linear
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret activation function identifier: {identifier!r}")
