"""Backend selection and argument validation, done once before any backend runs.

Backends (``gpuact.backends.<name>_backend``) receive clean arguments:

* ``x`` is an array of the backend's own kind (any strides, 0-d and empty included), of the
  input dtype, which may be integer or bool; ``dtype`` is the result dtype (float16/32/64).
* ``out`` is ``None`` or an array of the backend's kind with the result shape and ``dtype``;
  it may be ``x`` itself.
* ``params`` are Python floats in the order the op table (``gpuact._ops``) gives.
* ``axes`` is a non-empty tuple of distinct, non-negative, sorted ints.

Detection looks in ``sys.modules`` and never imports cupy or numba to check a type, so code that
only ever passes NumPy arrays never loads either (the pattern of einops and array-api-compat).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import numpy as np

try:  # numpy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.numeric import normalize_axis_tuple

BACKENDS = ("numpy", "cupy", "numba")

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


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
    if hasattr(x, "__cuda_array_interface__"):
        # A foreign CUDA array (PyTorch, JAX, ...): CuPy wraps it zero-copy when installed,
        # else Numba does.
        return "cupy" if importlib.util.find_spec("cupy") is not None else "numba"
    return "numpy"


_loaded: dict[str, ModuleType] = {}


def load_backend(name: str) -> ModuleType:
    """Import a backend module and check that it can run here; ``RuntimeError`` if not."""
    module = _loaded.get(name)
    if module is not None:
        return module
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    try:
        module = importlib.import_module(f"gpuact.backends.{name}_backend")
    except Exception as exc:  # ImportError, or a CUDA library the loader cannot find
        raise RuntimeError(
            f"gpuact backend {name!r} is not usable: {exc}. "
            "Install the GPU extras with `pip install gpuact[cuda12]`."
        ) from exc
    try:
        reason = module.unavailable_reason()
    except Exception as exc:  # a driver that fails its own probe
        reason = f"{type(exc).__name__}: {exc}"
    if reason:
        raise RuntimeError(f"gpuact backend {name!r} is not usable here: {reason}")
    _loaded[name] = module
    return module


def result_dtype(dtype) -> np.dtype:
    """float16/32/64 keep their dtype; integers and bool compute in float32; the rest is refused."""
    if dtype in _FLOAT_DTYPES:
        return dtype
    dtype = np.dtype(dtype)
    if dtype in _FLOAT_DTYPES:
        return dtype
    if dtype.kind in "biu":
        return np.dtype(np.float32)
    raise TypeError(f"gpuact activations take real numbers; got an array of dtype {dtype}")


class Call:
    """One validated call: the backend module, its input array and how to hand the result back."""

    __slots__ = ("backend", "x", "dtype", "options", "_foreign")

    def __init__(self, x, backend: str | None, stream):
        name = backend if backend is not None else detect_backend(x)
        if name == "numpy" and backend is None and not isinstance(x, np.ndarray):
            x = np.asarray(x)  # object, string and complex arrays are refused by result_dtype below
        self.backend = load_backend(name)
        self._foreign = x if not self.backend.owns(x) else None
        self.x = self.backend.asarray(x) if self._foreign is not None else x
        self.dtype = result_dtype(self.x.dtype)
        self.options = {} if stream is None else {"stream": stream}

    def check_out(self, out, shape):
        """Validate ``out`` against the result's kind, shape and dtype, before any work."""
        if out is None:
            return None
        if self._foreign is not None and not self.backend.owns(out):
            if not hasattr(out, "__cuda_array_interface__"):
                raise TypeError(f"out must be a CUDA array like the input; got {type(out).__name__}")
            out = self.backend.asarray(out)
        elif not self.backend.owns(out):
            raise TypeError(
                f"out must be an array of the same kind as the input "
                f"({type(self.x).__module__}.{type(self.x).__name__}); got {type(out).__name__}"
            )
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"out has shape {tuple(out.shape)}; the result has shape {tuple(shape)}")
        if np.dtype(out.dtype) != self.dtype:
            raise TypeError(f"out has dtype {np.dtype(out.dtype)}; the result has dtype {self.dtype}")
        return out

    def finish(self, result, original_out):
        # A foreign input gets its own kind back: the caller's ``out`` when given, else the
        # result wrapped zero-copy (``torch.as_tensor`` reads ``__cuda_array_interface__``).
        if self._foreign is None:
            return result
        if original_out is not None:
            return original_out
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(self._foreign, torch.Tensor):
            return torch.as_tensor(result, device=self._foreign.device)
        return result


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """An int or a tuple of ints → sorted, distinct, non-negative axes (``AxisError``/``ValueError``)."""
    if isinstance(axis, (list, tuple)):
        if len(axis) == 0:
            raise ValueError("axis must name at least one axis")
        for a in axis:
            _check_int_axis(a)
    else:
        _check_int_axis(axis)
    return tuple(sorted(normalize_axis_tuple(axis, ndim, "axis")))


def _check_int_axis(a):
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
        raise TypeError(f"axis must be an int or a tuple of ints; got {a!r}")


def as_param(name: str, value) -> float:
    """A scalar parameter as a Python float; arrays and strings are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
            raise TypeError(f"{name} must be a real number; got {value!r}")
    return float(value)


def elementwise(op: str, x, params: tuple = (), *, out=None, backend=None, stream=None):
    if out is None and backend is None and type(x) is np.ndarray:
        # The common CPU call, a plain ndarray and nothing else to check: skip detection.
        return load_backend("numpy").elementwise(op, x, params, None, result_dtype(x.dtype))
    call = Call(x, backend, stream)
    checked_out = call.check_out(out, call.x.shape)
    result = call.backend.elementwise(op, call.x, params, checked_out, call.dtype, **call.options)
    return call.finish(result, out)


def softmax(x, axis, *, log: bool, mask=None, out=None, backend=None, stream=None):
    call = Call(x, backend, stream)
    axes = normalize_axes(axis, call.x.ndim)
    checked_out = call.check_out(out, call.x.shape)
    if mask is not None:
        mask = call.backend.as_mask(mask, call.x.shape)
    result = call.backend.softmax(call.x, axes, checked_out, call.dtype, log=log, mask=mask, **call.options)
    return call.finish(result, out)


def glu(x, axis, *, out=None, backend=None, stream=None):
    call = Call(x, backend, stream)
    ax = single_axis(axis, call.x.ndim)
    length = call.x.shape[ax]
    if length % 2:
        raise ValueError(f"glu splits axis {axis} in two halves; its length {length} is odd")
    shape = tuple(call.x.shape[:ax]) + (length // 2,) + tuple(call.x.shape[ax + 1 :])
    checked_out = call.check_out(out, shape)
    result = call.backend.glu(call.x, ax, checked_out, call.dtype, **call.options)
    return call.finish(result, out)


def sparsemax(x, axis, *, out=None, backend=None, stream=None):
    call = Call(x, backend, stream)
    ax = single_axis(axis, call.x.ndim)
    checked_out = call.check_out(out, call.x.shape)
    result = call.backend.sparsemax(call.x, ax, checked_out, call.dtype, **call.options)
    return call.finish(result, out)


def prelu(x, alpha, *, out=None, backend=None, stream=None):
    call = Call(x, backend, stream)
    checked_out = call.check_out(out, call.x.shape)
    alpha = call.backend.as_param_array(alpha, call.x.shape, call.dtype)
    result = call.backend.prelu(call.x, alpha, checked_out, call.dtype, **call.options)
    return call.finish(result, out)


def single_axis(axis, ndim: int) -> int:
    """One axis, given as an int or a 1-tuple, normalised like ``normalize_axes``."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(f"this function takes a single axis; got {axis!r}")
        axis = axis[0]
    return normalize_axes(axis, ndim)[0]
