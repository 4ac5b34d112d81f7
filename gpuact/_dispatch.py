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
import importlib.util
import sys
from types import ModuleType

import numpy as np

from gpuact import _dask, _foreign, _masked
from gpuact.backends import _interop

_AxisError = getattr(np, "exceptions", np).AxisError  # numpy.exceptions from 1.25

try:  # numpy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.numeric import normalize_axis_tuple  # type: ignore[no-redef]

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
            f"gpuact backend {name!r} is not usable: {exc}. Install the GPU extras with `pip install gpuact[cuda12]`."
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
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return dtype.newbyteorder("=")  # another byte order: computed like NumPy, into native order
    raise TypeError(f"gpuact activations take real numbers; got an array of dtype {dtype}")


class Call:
    """One validated call: the backend, its input array, the launch stream, and how to hand the
    result back.

    ``backend.accept`` resolves where the work runs: the device that holds ``x`` and the stream
    (``stream=`` when given, else the convention of ``x``'s library), and orders the launch after
    the stream that produced a foreign ``x``. ``with call.scope():`` then makes that device and
    stream current, so every array the call allocates (auxiliary arrays, copies, the result) is
    made there.
    """

    __slots__ = ("backend", "x", "dy", "dtype", "stream", "_foreign", "_out_copy")

    def __init__(self, x, backend: str | None, stream, *, grad_of=None, grad_shape=True):
        """``grad_of``: a backward call's ``dy``, which must be an array of ``x``'s kind (and, unless
        ``grad_shape`` is None, of its shape); the result dtype then follows both."""
        if _masked.is_masked(x) or _masked.is_masked(grad_of):
            raise TypeError("gpuact.backward takes plain arrays: pass the masked arrays' data (and mask dy)")
        name = backend if backend is not None else detect_backend(x)
        x, foreign = _foreign.for_compute(x)  # a bfloat16 tensor is computed in float32
        if name == "numpy" and type(x) is not np.ndarray:
            # Sequences, scalars and ndarray subclasses (np.matrix, np.memmap, ...) are computed as
            # the plain ndarray they hold, and the result is a plain ndarray (masked arrays are
            # handled before this, in gpuact._masked); other libraries' host arrays (PyTorch, JAX,
            # DLPack) zero-copy, and the result goes back as their kind. Object, string and
            # complex arrays are refused by result_dtype below.
            x, host_foreign = _foreign.host_array(x)
            foreign = foreign if foreign is not None else host_foreign
        self.backend = load_backend(name)
        self.x, self.stream, backend_foreign = self.backend.accept(x, stream)
        self._foreign = foreign if foreign is not None else backend_foreign
        self._out_copy = None
        self.dtype = result_dtype(self.x.dtype)
        self.dy = None
        if grad_of is not None:
            grad_of, _ = _foreign.for_compute(grad_of)
            self.dy = self.backend.accept_operand(grad_of, self.x, self._foreign is not None, "dy")
            if grad_shape is not None and tuple(self.dy.shape) != tuple(self.x.shape):
                raise ValueError(f"dy has shape {tuple(self.dy.shape)}; x has shape {tuple(self.x.shape)}")
            # each side by the forward's rule (integers as float32), then the wider of the two
            self.dtype = np.promote_types(result_dtype(self.dy.dtype), self.dtype)

    def bias(self, bias, out):
        """``bias`` as an array of the call's kind, on its device, broadcastable to ``x`` (a scalar
        too); copied first if ``out`` shares memory with it."""
        if bias is None:
            return None
        if np.ndim(bias) == 0 and isinstance(bias, (int, float, np.integer, np.floating)):
            value = as_param("bias", bias)
            bias = self.backend.as_param_array(value, (), self.dtype, self.stream)
        else:
            bias, _ = _foreign.for_compute(bias)
            bias = self.backend.accept_operand(bias, self.x, self._foreign is not None, "bias")
        try:
            shape = np.broadcast_shapes(tuple(bias.shape), tuple(self.x.shape))
        except ValueError:
            shape = None
        if shape != tuple(self.x.shape):
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to x's shape {tuple(self.x.shape)}")
        if np.dtype(bias.dtype).kind not in "biuf":
            raise TypeError(f"bias must be real numbers; got dtype {np.dtype(bias.dtype)}")
        return self.unalias(bias, out, same_ok=False)

    def mask(self, mask, out):
        if mask is None:
            return None
        mask = self.backend.as_mask(mask, self.x.shape, self.stream)
        return self.unalias(mask, out, same_ok=False)

    def scope(self):
        return self.backend.scope(self.x, self.stream)

    def check_out(self, out, shape):
        """Validate ``out`` against the result's kind, device, shape, dtype and writeability, before
        any work; an ``out`` sharing memory with ``x`` must be ``x`` itself or ``x`` is copied.
        Without ``out``, a foreign host input whose library needs an aligned buffer to take the
        result back zero-copy (JAX) gets one here."""
        if out is None:
            if self._foreign is not None and self.backend is _loaded.get("numpy"):
                return _foreign.host_result_buffer(self._foreign, shape, self.dtype)
            return None
        if _foreign.is_bfloat16(out):
            # computed in float32, then copied into out (see finish)
            if tuple(out.shape) != tuple(shape):
                raise ValueError(f"out has shape {tuple(out.shape)}; the result has shape {tuple(shape)}")
            if not _foreign.is_bfloat16(self._foreign):
                raise TypeError(f"out is bfloat16; the result has dtype {self.dtype}")
            self._out_copy = out
            return None
        out = self.backend.accept_out(out, self.x, self._foreign is not None)
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"out has shape {tuple(out.shape)}; the result has shape {tuple(shape)}")
        if np.dtype(out.dtype) != self.dtype:
            raise TypeError(f"out has dtype {np.dtype(out.dtype)}; the result has dtype {self.dtype}")
        flags = getattr(out, "flags", None)
        if flags is not None and getattr(flags, "writeable", True) is False:
            raise ValueError("out is read-only; gpuact writes its result into out")
        return out

    def unalias(self, a, out, *, same_ok: bool):
        """``a``, or a copy of it when writing ``out`` could change it while it is read: ``out``
        shares memory with ``a`` and is not (``same_ok``) the very same view."""
        if out is None or a is None:
            return a
        overlap = self.backend.overlap(a, out)
        if overlap == OVERLAP_NONE or (overlap == OVERLAP_SAME and same_ok):
            return a
        return self.backend.copy(a, self.stream)

    def finish(self, result, original_out):
        # The caller's ``out`` itself when given (also an ndarray subclass or a foreign array
        # that was written through a view); else a foreign input gets its own kind back, the
        # result wrapped zero-copy (``torch.as_tensor`` reads ``__cuda_array_interface__``).
        if self._out_copy is not None:
            return _foreign.copy_into(self._out_copy, result)
        if original_out is not None:
            return original_out
        if self._foreign is None:
            return result
        return _foreign.back(self._foreign, result)


# What ``backend.overlap(a, b)`` answers.
OVERLAP_NONE, OVERLAP_SAME, OVERLAP_PARTIAL = 0, 1, 2


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


def as_param(name: str, value, *, allow_nan: bool = False) -> float:
    """A scalar parameter as a Python float; arrays, strings and complex numbers are refused
    (``TypeError``), and so is NaN (``ValueError``: no parameter of an activation means anything
    at NaN, and the paths would disagree on it) unless ``allow_nan`` (``threshold``'s
    ``default_value``, which is only ever copied out)."""
    if type(value) is float and value == value:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
            raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if value != value and not allow_nan:
        raise ValueError(f"{name} must not be NaN")
    return value


_numpy_backend: ModuleType | None = None


def _numpy() -> ModuleType:
    """The NumPy backend module, for the fast paths (loaded once)."""
    global _numpy_backend
    if _numpy_backend is None:
        _numpy_backend = load_backend("numpy")
    return _numpy_backend


def numpy_elementwise(op: str, x: np.ndarray, params: tuple = ()):
    """The common CPU call, a plain ndarray with no ``out``, ``backend`` or ``stream``: nothing to
    detect or check but the dtype (the public functions call this directly)."""
    dtype = x.dtype
    if dtype not in _FLOAT_DTYPES:
        dtype = result_dtype(dtype)
    return _numpy().elementwise(op, x, params, None, dtype)


def _plain_out(out, dtype, shape, *reads) -> bool:
    """``out`` is a writeable plain ndarray of the result's dtype and shape that each array in
    ``reads`` either is or does not touch: the fast paths take it as it is (anything else goes
    through ``Call.check_out``, which says what is wrong or copies what overlaps)."""
    if type(out) is not np.ndarray or out.dtype is not dtype or out.shape != shape or not out.flags.writeable:
        return False
    for a in reads:
        if a is not out and np.may_share_memory(a, out):
            return False
    return True


def elementwise(op: str, x, params: tuple = (), *, bias=None, out=None, backend=None, stream=None):
    if backend is None and bias is None:
        kind = type(x)
        if kind is np.ndarray:
            if out is None:
                return numpy_elementwise(op, x, params)
            if x.dtype in _FLOAT_DTYPES and _plain_out(out, x.dtype, x.shape, x):
                return _numpy().elementwise(op, x, params, out, x.dtype)
        elif out is None and stream is None and "cupy" in _loaded:
            cupy = sys.modules.get("cupy")
            if cupy is not None and kind is cupy.ndarray:
                # the common GPU call: straight to the vector kernel when x allows (see elementwise_fast)
                y = _loaded["cupy"].elementwise_fast(op, x, params)
                if y is not None:
                    return y
    if _dask.any_dask(x, bias):
        return _dask.elementwise(op, x, params, bias=bias, out=out, backend=backend, stream=stream)
    if _masked.is_masked(x):
        if bias is not None:
            raise TypeError("bias= does not take masked arrays; add the bias to x first")
        return _masked.elementwise(_this, op, x, params, out=out, backend=backend)
    call = Call(x, backend, stream)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        b = call.bias(bias, checked_out)
        options = {} if b is None else {"bias": b}
        result = call.backend.elementwise(op, xa, params, checked_out, call.dtype, stream=call.stream, **options)
    return call.finish(result, out)


def elementwise_grad(op: str, dy, x, params: tuple = (), *, bias=None, out=None, backend=None, stream=None):
    """``dx = dy * op'(x + bias)`` (see ``gpuact.backward``)."""
    if (
        backend is None
        and bias is None
        and type(x) is np.ndarray
        and type(dy) is np.ndarray
        and x.dtype is dy.dtype
        and x.dtype in _FLOAT_DTYPES
        and dy.shape == x.shape
        and (out is None or _plain_out(out, x.dtype, x.shape, x, dy))
    ):
        # the common CPU call: plain ndarrays of one float dtype and shape, nothing to convert
        return _numpy().elementwise_grad(op, dy, x, params, out, x.dtype)
    if _dask.any_dask(x, dy, bias):
        return _dask.elementwise_grad(op, dy, x, params, bias=bias, out=out, backend=backend, stream=stream)
    call = Call(x, backend, stream, grad_of=dy)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        dya = call.unalias(call.dy, checked_out, same_ok=True)
        b = call.bias(bias, checked_out)
        result = call.backend.elementwise_grad(op, dya, xa, params, checked_out, call.dtype, stream=call.stream, bias=b)
    return call.finish(result, out)


def softmax(x, axis, *, log: bool, mask=None, bias=None, out=None, backend=None, stream=None):
    if (
        out is None
        and backend is None
        and mask is None
        and bias is None
        and type(x) is np.ndarray
        and type(axis) is int
        and axis == -1
        and x.ndim
    ):
        # the common CPU call (a plain ndarray, the last axis): nothing to detect or convert
        return _numpy().softmax(x, (x.ndim - 1,), None, result_dtype(x.dtype), log=log)
    if _dask.any_dask(x, mask, bias):
        return _dask.softmax(x, axis, log=log, mask=mask, bias=bias, out=out, backend=backend, stream=stream)
    if _masked.is_masked(x):
        if bias is not None:
            raise TypeError("bias= does not take masked arrays; add the bias to x first")
        return _masked.softmax(_this, x, axis, log=log, mask=mask, out=out, backend=backend)
    call = Call(x, backend, stream)
    axes = _softmax_axes(axis, call.x.ndim)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        mask = call.mask(mask, checked_out)
        b = call.bias(bias, checked_out)
        options = {} if b is None else {"bias": b}
        result = call.backend.softmax(
            xa, axes, checked_out, call.dtype, log=log, mask=mask, stream=call.stream, **options
        )
    return call.finish(result, out)


def _softmax_axes(axis, ndim):
    if ndim == 0:
        raise _AxisError(
            f"softmax normalizes along an axis, and a 0-d array has none (axis={axis!r}); reshape it to 1-d"
        )
    return normalize_axes(axis, ndim)


def softmax_grad(dy, x, axis, *, log: bool, mask=None, bias=None, out=None, backend=None, stream=None):
    """softmax: ``dx = y (dy - sum(dy y))``; log_softmax: ``dx = dy - softmax(x) sum(dy)``."""
    if _dask.any_dask(x, dy, mask, bias):
        return _dask.softmax_grad(dy, x, axis, log=log, mask=mask, bias=bias, out=out, backend=backend, stream=stream)
    call = Call(x, backend, stream, grad_of=dy)
    axes = _softmax_axes(axis, call.x.ndim)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        dya = call.unalias(call.dy, checked_out, same_ok=True)
        mask = call.mask(mask, checked_out)
        b = call.bias(bias, checked_out)
        result = call.backend.softmax_grad(
            dya, xa, axes, checked_out, call.dtype, log=log, mask=mask, bias=b, stream=call.stream
        )
    return call.finish(result, out)


def glu(x, axis, *, out=None, backend=None, stream=None):
    if _dask.is_dask(x):
        return _dask.glu(x, axis, out=out, backend=backend, stream=stream)
    if _masked.is_masked(x):
        return _masked.glu(_this, x, axis, out=out, backend=backend)
    call = Call(x, backend, stream)
    ax = single_axis(axis, call.x.ndim)
    length = call.x.shape[ax]
    if length % 2:
        raise ValueError(f"glu splits axis {axis} in two halves; its length {length} is odd")
    shape = tuple(call.x.shape[:ax]) + (length // 2,) + tuple(call.x.shape[ax + 1 :])
    with call.scope():
        checked_out = call.check_out(out, shape)
        xa = call.unalias(call.x, checked_out, same_ok=False)
        result = call.backend.glu(xa, ax, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def glu_grad(dy, x, axis, *, out=None, backend=None, stream=None):
    """``dx`` (x's shape) from ``dy`` (the output's shape): da = dy sigmoid(b), db = dy a sigmoid'(b)."""
    if _dask.any_dask(x, dy):
        return _dask.glu_grad(dy, x, axis, out=out, backend=backend, stream=stream)
    call = Call(x, backend, stream, grad_of=dy, grad_shape=None)
    ax = single_axis(axis, call.x.ndim)
    length = call.x.shape[ax]
    if length % 2:
        raise ValueError(f"glu splits axis {axis} in two halves; its length {length} is odd")
    half = tuple(call.x.shape[:ax]) + (length // 2,) + tuple(call.x.shape[ax + 1 :])
    if tuple(call.dy.shape) != half:
        raise ValueError(f"dy has shape {tuple(call.dy.shape)}; glu's output, and so dy, has shape {half}")
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=False)
        dya = call.unalias(call.dy, checked_out, same_ok=False)
        result = call.backend.glu_grad(dya, xa, ax, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def sparsemax_grad(dy, x, axis, *, out=None, backend=None, stream=None):
    """``dx = s (dy - mean of dy over the support)``, ``s`` the support indicator."""
    if _dask.any_dask(x, dy):
        return _dask.sparsemax_grad(dy, x, axis, out=out, backend=backend, stream=stream)
    call = Call(x, backend, stream, grad_of=dy)
    ax = single_axis(axis, call.x.ndim)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        dya = call.unalias(call.dy, checked_out, same_ok=True)
        result = call.backend.sparsemax_grad(dya, xa, ax, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def prelu_grad(dy, x, alpha, *, out=None, backend=None, stream=None):
    if _dask.any_dask(x, dy, alpha):
        return _dask.prelu_grad(dy, x, alpha, out=out, backend=backend, stream=stream)
    call = Call(x, backend, stream, grad_of=dy)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        dya = call.unalias(call.dy, checked_out, same_ok=True)
        alpha = call.backend.as_param_array(alpha, call.x.shape, call.dtype, call.stream)
        alpha = call.unalias(alpha, checked_out, same_ok=False)
        result = call.backend.prelu_grad(dya, xa, alpha, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def sparsemax(x, axis, *, out=None, backend=None, stream=None):
    if _dask.is_dask(x):
        return _dask.sparsemax(x, axis, out=out, backend=backend, stream=stream)
    if _masked.is_masked(x):
        return _masked.sparsemax(_this, x, axis, out=out, backend=backend)
    call = Call(x, backend, stream)
    ax = single_axis(axis, call.x.ndim)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        result = call.backend.sparsemax(xa, ax, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def prelu(x, alpha, *, out=None, backend=None, stream=None):
    if _dask.any_dask(x, alpha):
        return _dask.prelu(x, alpha, out=out, backend=backend, stream=stream)
    if _masked.is_masked(x):
        return _masked.prelu(_this, x, alpha, out=out, backend=backend)
    call = Call(x, backend, stream)
    with call.scope():
        checked_out = call.check_out(out, call.x.shape)
        xa = call.unalias(call.x, checked_out, same_ok=True)
        alpha = call.backend.as_param_array(alpha, call.x.shape, call.dtype, call.stream)
        alpha = call.unalias(alpha, checked_out, same_ok=False)
        result = call.backend.prelu(xa, alpha, checked_out, call.dtype, stream=call.stream)
    return call.finish(result, out)


def single_axis(axis, ndim: int) -> int:
    """One axis, given as an int or a 1-tuple, normalised like ``normalize_axes``."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(f"this function takes a single axis; got {axis!r}")
        axis = axis[0]
    return normalize_axes(axis, ndim)[0]


_this = sys.modules[__name__]  # what gpuact._masked calls back into
