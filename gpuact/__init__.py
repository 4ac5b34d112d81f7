"""gpuact: Keras's activation functions as GPU kernels for CuPy and Numba arrays, NumPy on the CPU."""

from typing import Any

from gpuact.activations import *  # noqa: F403
from gpuact.activations import __all__ as _activation_names
from gpuact.registry import deserialize, get, serialize

__version__ = "0.1.0"

__all__ = [*_activation_names, "get", "serialize", "deserialize", "layers", "backward"]  # noqa: F405  (lazy, __getattr__)


def __getattr__(name: str) -> Any:
    # Layers and gradients load on first use, so `import gpuact` stays as small as the activations.
    if name in ("layers", "backward"):
        import importlib

        return importlib.import_module(f"gpuact.{name}")
    raise AttributeError(f"module 'gpuact' has no attribute {name!r}")
