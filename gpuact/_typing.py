"""The types of gpuact's public signatures, for type checkers and for the API reference.

* ``Array``: what every function takes as ``x`` (and ``dy``, ``bias``, ``out``): anything NumPy
  can turn into an array (``numpy.typing.ArrayLike``: ndarrays, masked arrays, scalars, nested
  sequences, Dask arrays, CPU tensors) or an array in CUDA device memory (``CudaArray``: CuPy
  arrays, Numba device arrays, PyTorch CUDA tensors, any object with ``__cuda_array_interface__``).
* ``Result``: what they return, an array of ``x``'s own kind (see ``docs/contract.rst``, "Array
  kinds and dispatch"). Its type depends on a library the type checker may not have, so it is
  ``Any``.
* ``Backend``, ``Axis``, ``Stream``: the ``backend=``, ``axis=`` and ``stream=`` arguments;
  ``ActivationFn`` and ``Identifier``: the registry's; ``Layer``: what ``gpuact.layers`` builds.

Nothing here imports a GPU library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from numpy.typing import ArrayLike

__all__ = [
    "ActivationFn",
    "Array",
    "ArrayLike",
    "Axis",
    "Backend",
    "CudaArray",
    "Identifier",
    "Layer",
    "Result",
    "Stream",
]


@runtime_checkable
class CudaArray(Protocol):
    """An array in CUDA device memory: any object that exports ``__cuda_array_interface__``
    (CuPy arrays, Numba device arrays, PyTorch CUDA tensors, ...)."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]: ...


Array: TypeAlias = ArrayLike | CudaArray
"""An input array: array-like host data or a CUDA device array."""

Result: TypeAlias = Any
"""An array of the input's kind: ``numpy.ndarray``, ``cupy.ndarray``, a Numba device array, a
``torch.Tensor`` or a ``dask.array.Array`` (a ``numpy.ma.MaskedArray`` for a masked input)."""

Backend: TypeAlias = Literal["numpy", "cupy", "numba"]
"""A backend name for ``backend=``."""

Axis: TypeAlias = int | tuple[int, ...]
"""One axis, or several (softmax and log_softmax)."""

Stream: TypeAlias = Any
"""A CUDA stream for ``stream=``: a CuPy, Numba or PyTorch stream, or any object with
``__cuda_stream__``."""

ActivationFn: TypeAlias = Callable[..., Any]
"""An activation function: one of gpuact's, or any callable."""

Identifier: TypeAlias = str | dict[str, Any] | Callable[..., Any] | None
"""What ``gpuact.get`` takes: a name or alias, a Keras config dict, a callable, or ``None``."""


class Layer(Protocol):
    """What every layer of ``gpuact.layers`` is: a callable with a gradient and a Keras config."""

    def __call__(self, x: Array, **kwargs: Any) -> Result: ...

    def backward(self, dy: Array, x: Array, **kwargs: Any) -> Result: ...

    def get_config(self) -> dict[str, Any]: ...
