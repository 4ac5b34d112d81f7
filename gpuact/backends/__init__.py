"""The backends, and which one runs a call: one module per execution path (``numpy_backend``,
``cupy_backend``, ``numba_backend``), each implementing ``gpuact.backends.protocol.Backend``.

``detect_backend`` names the backend that owns an array from its type alone, and
``load_backend`` imports a backend and checks that it can run here. Detection looks in
``sys.modules`` and never imports cupy or numba to check a type, so code that only ever passes
NumPy arrays never loads either (the pattern of einops and array-api-compat).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from gpuact.backends import _interop

BACKENDS = ("numpy", "cupy", "numba")


def _is_numba_device_array(x) -> bool:
    if "numba" not in sys.modules and "numba_cuda" not in sys.modules:
        return False
    module = type(x).__module__ or ""
    if not module.startswith(("numba.cuda", "numba_cuda")):
        return False
    # The CUDA simulator's FakeCUDAArray exports no __cuda_array_interface__ but, like the real
    # DeviceNDArray, sets __cuda_ndarray__.
    return hasattr(x, "__cuda_array_interface__") or bool(getattr(type(x), "__cuda_ndarray__", False))


def detect_backend(x) -> str:
    """Name of the backend that owns ``x``, judged from its type alone."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return "cupy"
    if _is_numba_device_array(x):
        return "numba"
    if _interop.is_cuda_array(x):
        # A foreign CUDA array (PyTorch, JAX, ...): CuPy wraps it zero-copy when installed, else Numba.
        for name, module in (("cupy", "cupy"), ("numba", "numba.cuda")):
            if name in sys.modules or _installed(module):
                return name
        raise RuntimeError(
            f"{type(x).__module__}.{type(x).__name__} is a CUDA array, and neither CuPy nor Numba is "
            "installed to run gpuact's kernels on it: pip install gpuact[cuda12]"
        )
    return "numpy"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken module
        return False


loaded: dict[str, ModuleType] = {}


def load_backend(name: str) -> ModuleType:
    """Import a backend module and check that it can run here; ``RuntimeError`` if not."""
    module = loaded.get(name)
    if module is not None:
        return module
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    try:
        module = importlib.import_module(f"gpuact.backends.{name}_backend")
    except Exception as exc:  # ImportError, or a CUDA library the loader cannot find
        raise RuntimeError(
            f"gpuact backend {name!r} is not usable: {exc}. Install the GPU extras with `pip install gpuact[cuda12]`."
        ) from exc
    try:
        reason = module.unavailable_reason()
    except Exception as exc:  # a driver that fails its own probe
        reason = f"{type(exc).__name__}: {exc}"
    if reason:
        raise RuntimeError(f"gpuact backend {name!r} is not usable here: {reason}")
    loaded[name] = module
    return module
