"""Argument validation shared by every layer: dtypes, axes and scalar parameters.

Each function raises the error a user sees (``TypeError`` for a wrong kind, ``ValueError`` for a
wrong value, NumPy's ``AxisError`` for an axis out of range), with the same message whatever path
the call takes (NumPy, CuPy, Numba, Dask, masked, PyTorch or JAX).
"""

from __future__ import annotations

import numpy as np

AxisError = getattr(np, "exceptions", np).AxisError  # numpy.exceptions from 1.25

try:  # numpy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.numeric import normalize_axis_tuple  # type: ignore[no-redef]

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

# What ``backend.overlap(a, b)`` answers: no shared memory, the very same view, partly shared.
OVERLAP_NONE, OVERLAP_SAME, OVERLAP_PARTIAL = 0, 1, 2


def result_dtype(dtype) -> np.dtype:
    """float16/32/64 keep their dtype; integers and bool compute in float32; the rest is refused."""
    if dtype in FLOAT_DTYPES:
        return dtype
    dtype = np.dtype(dtype)
    if dtype in FLOAT_DTYPES:
        return dtype
    if dtype.kind in "biu":
        return np.dtype(np.float32)
    if dtype.kind == "f" and dtype.itemsize in (2, 4, 8):
        return dtype.newbyteorder("=")  # another byte order: computed like NumPy, into native order
    if is_bfloat16(dtype):
        return dtype
    raise TypeError(f"gpuact activations take real numbers; got an array of dtype {dtype}")


def is_real(dtype) -> bool:
    """Whether an operand of ``dtype`` (a bias, say) holds real numbers: bool, integers, floats and
    bfloat16."""
    dtype = np.dtype(dtype)
    return dtype.kind in "biuf" or is_bfloat16(dtype)


def is_bfloat16(dtype) -> bool:
    """``ml_dtypes.bfloat16`` (NumPy's dtype of JAX's and PyTorch's bfloat16): kept like float16,
    computed in float32."""
    return getattr(dtype, "name", None) == "bfloat16" and type(dtype).__module__.startswith("ml_dtypes")


def dtype_kind(a) -> str:
    """NumPy's kind letter (``"f"``, ``"i"``, ``"c"``...) of an array's or a scalar's dtype, for an
    array of any library: NumPy's and CuPy's dtypes are NumPy's, PyTorch's print as
    ``torch.float32`` (its bfloat16 is ``"f"`` without ml_dtypes loaded); a dtype none of these
    name raises ``TypeError`` saying what it is."""
    dtype = getattr(a, "dtype", None)
    if dtype is None:
        return np.asarray(a).dtype.kind
    try:
        return np.dtype(dtype).kind
    except TypeError:
        name = str(dtype).rsplit(".", 1)[-1]
        if name == "bfloat16":
            return "f"
        try:
            return np.dtype(name).kind
        except TypeError:
            raise TypeError(f"the dtype {dtype} is not one NumPy knows") from None


def check_pair(a_shape, a_dtype, b_shape, b_dtype) -> None:
    """The gated units' two-tensor form: ``b`` of ``a``'s shape (no broadcasting; an unknown
    length, NaN, matches another unknown one) and dtype, else ``ValueError`` or ``TypeError``."""
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    if len(a_shape) != len(b_shape) or any(n != m and not (n != n and m != m) for n, m in zip(a_shape, b_shape)):
        raise ValueError(f"b has shape {b_shape}; a has shape {a_shape} (no broadcasting)")
    if b_dtype != a_dtype:
        raise TypeError(f"a and b must have one dtype; got {a_dtype} and {b_dtype}: cast one")


def grad_dtype(dy_dtype, x_dtype) -> np.dtype:
    """A backward's result dtype: each side by the forward's rule, then the wider of the two."""
    return np.dtype(np.promote_types(result_dtype(dy_dtype), result_dtype(x_dtype)))


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


def softmax_axes(axis, ndim: int) -> tuple[int, ...]:
    """softmax's axes: one or several, and never of a 0-d array (it has no axis to normalize along)."""
    if ndim == 0:
        raise AxisError(
            f"softmax normalizes along an axis, and a 0-d array has none (axis={axis!r}); reshape it to 1-d"
        )
    return normalize_axes(axis, ndim)


def single_axis(axis, ndim: int) -> int:
    """One axis, given as an int or a 1-tuple, normalised like ``normalize_axes``."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise ValueError(f"this function takes a single axis; got {axis!r}")
        axis = axis[0]
    return normalize_axes(axis, ndim)[0]


def gated_name(gate: str | None) -> str:
    """The public function a gated unit's kernel name belongs to, for messages: ``geglu_tanh`` is
    ``geglu(approximate=True)``; no name is ``glu``."""
    return (gate or "glu").removesuffix("_tanh")


def gated_dy_shape_error(dy_shape, want, gate: str | None) -> ValueError:
    """The error for a gated unit's backward given a ``dy`` not of its forward's (half) shape."""
    return ValueError(f"dy has shape {tuple(dy_shape)}; {gated_name(gate)}'s output, and so dy, has shape {want}")


def glu_halves(axis, shape, gate: str | None = None) -> tuple[int, tuple[int, ...]]:
    """``(the normalised axis, the shape of one half)`` for a gated unit's split of ``shape`` along
    ``axis`` (``gate``: its name in ``ops.GATES``, which the messages give)."""
    name = gated_name(gate)
    ax = single_axis(axis, len(shape))
    length = shape[ax]
    if length != length or length is None:  # Dask's unknown chunk sizes (NaN)
        raise ValueError(
            f"{name} splits axis {axis} in two halves, and its length is unknown; call x.compute_chunk_sizes() first"
        )
    if length % 2:
        raise ValueError(f"{name} splits axis {axis} in two halves; its length {length} is odd")
    return ax, tuple(shape[:ax]) + (length // 2,) + tuple(shape[ax + 1 :])


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
