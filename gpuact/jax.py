"""gpuact for JAX: functions that work under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

``gpuact.jax.<name>(x, <the activation's parameters>, bias=None)`` is a ``jax.custom_vjp``
function: its forward calls ``gpuact.<name>`` and its backward ``gpuact.backward.<name>``, each
as an XLA custom call with the result's shape and dtype declared, so they trace, jit and
differentiate like any JAX function (and ``bias``, broadcast against ``x``, gets its gradient
too). softmax, log_softmax, sparsemax and the gated units (glu, swiglu, geglu, reglu) take ``axis``.

* **Buffers.** The call is ``jax.experimental.buffer_callback``: gpuact reads XLA's operand
  buffers and writes its result straight into XLA's output buffer (``out=``), on the CPU as NumPy
  views, on a GPU as CuPy (else Numba) arrays on the stream XLA hands the callback, with no copy
  through the host. Where JAX has no ``buffer_callback`` (or the default backend is neither CPU
  nor GPU) it falls back to ``jax.pure_callback``, which hands the callback host copies and copies
  the result back: correct, and on a GPU two transfers and a synchronization per call.
* **vmap.** A batching rule, not broadcasting: the batch axis becomes one more leading axis of
  ``x`` (and of ``dy``); a bias that is not batched stays on the trailing axes it was given for,
  and a batched one is reshaped to line up with ``x``'s batched shape; softmax, log_softmax,
  sparsemax and glu move their axis by one. Nested ``vmap`` applies the rule once per level.
* **Errors at trace time.** Parameters, the axis, glu's halves, the bias's shape and the dtypes
  are checked when the function is traced, with the message plain gpuact gives. Parameters are
  static: Python numbers, NumPy scalars and 0-d arrays (like plain gpuact), or concrete JAX
  scalars; a traced parameter raises ``TypeError``.
* **The gated units' two-tensor form** (``gpuact.jax.swiglu(a, b)``, geglu, reglu) stacks ``a``
  and ``b`` along a new leading axis (one copy, made by XLA) and runs the halves form along it: the
  callbacks take one operand, and the stack's gradient (two slices) is JAX's own.
* **bfloat16** goes to gpuact as it is, computed in float32 and rounded once to nearest even by
  gpuact's kernels (the compiled CPU module, CuPy's or Numba's), with no float32 copy: XLA's
  bfloat16 buffers cannot be read through DLPack, so each bfloat16 operand and result crosses the
  custom call as its ``uint16`` bits (``lax.bitcast_convert_type``, no conversion), which the
  callback views as ``ml_dtypes.bfloat16``. A backward's result dtype ranks bfloat16 as float16
  (the wider of ``dy`` and ``x`` wins).

>>> import jax, jax.numpy as jnp, gpuact.jax
>>> [round(v, 4) for v in jax.grad(lambda x: gpuact.jax.gelu(x).sum())(jnp.array([-1.0, 0.5, 2.0])).tolist()]
[-0.0833, 0.8675, 1.0852]
"""

from __future__ import annotations

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np

import gpuact
from gpuact import activations
from gpuact._contract import checks

try:
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # JAX releases before buffer_callback: the pure_callback path
    _buffer_callback = None

_NOT_FORWARDED = ("out", "backend", "stream")
_SOFTMAX_OPS = ("softmax", "log_softmax")
_GATED = ("glu", "swiglu", "geglu", "reglu")  # x split in halves along the axis
_AXIS_OPS = (*_SOFTMAX_OPS, "sparsemax", *_GATED)
# default backends whose custom calls buffer_callback lowers (it refuses any other platform)
_BUFFER_PLATFORMS = ("cpu", "gpu", "cuda", "rocm")
_KDL_CPU = 1
# the 1-element input plain gpuact validates an elementwise op's parameters on
_PROBE = np.zeros(1, np.float32)


# ---- dtypes ------------------------------------------------------------------------------------


def _is_bfloat16(dtype) -> bool:
    return checks.is_bfloat16(np.dtype(dtype))


def _as_bits(a):
    """An operand as it crosses the custom call: bfloat16 as its uint16 bits (XLA's bfloat16
    buffers do not reach NumPy, CuPy or Numba through DLPack or the CUDA array interface)."""
    return jax.lax.bitcast_convert_type(a, jnp.uint16) if _is_bfloat16(a.dtype) else a


def _from_bits(arrays, bits: tuple):
    """The callback's arrays, those flagged in ``bits`` viewed as bfloat16 (zero-copy)."""
    if not any(bits):
        return arrays
    import ml_dtypes  # JAX depends on it

    return tuple(a.view(ml_dtypes.bfloat16) if flag else a for a, flag in zip(arrays, bits))


# ---- static parameters, checked at trace time --------------------------------------------------


def _static(name: str, parameter: str, value):
    """A parameter as a value fixed at trace time: traced values refused, concrete JAX arrays as
    the NumPy arrays they hold, 0-d NumPy numbers as Python numbers (plain gpuact takes both)."""
    if isinstance(value, jax.core.Tracer):
        kind = "a Python int or a tuple of ints" if parameter == "axis" else "a Python number"
        raise TypeError(
            f"gpuact.jax.{name}: {parameter} must be {kind}, fixed when the function is traced; got a traced "
            f"JAX value. Close over a Python number, or mark it static (jax.jit(..., static_argnames=...))"
        )
    if isinstance(value, jax.Array):
        value = np.asarray(value)
    if parameter != "axis" and isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, (float, np.floating)) and value != value:
        value = math.nan  # one NaN object, so equal parameter sets share one cached function
    return tuple(value) if isinstance(value, list) else value


def _checked(name: str, arguments: dict, x) -> tuple:
    """The parameters, validated as plain gpuact validates them and in its order (parameters,
    x's dtype, the axis, glu's halves), as the hashable key of the functions built for them; the
    axis normalised to non-negative, which the batching rule shifts."""
    values = {k: _static(name, k, v) for k, v in arguments.items()}
    if values and name not in _AXIS_OPS:
        getattr(activations, name)(_PROBE, **values)
    checks.result_dtype(x.dtype)
    if name in _SOFTMAX_OPS:
        values["axis"] = checks.softmax_axes(values["axis"], x.ndim)
    elif name in _GATED:
        values["axis"] = checks.glu_halves(values["axis"], tuple(x.shape), name)[0]
    elif name == "sparsemax":
        values["axis"] = checks.single_axis(values["axis"], x.ndim)
    try:
        # the type too: relu's unset alpha equals 0.0 but must not share a function with it
        key = tuple(sorted((k, type(v), v) for k, v in values.items()))
        hash(key)
    except TypeError:
        raise TypeError(f"gpuact.jax.{name}: parameters must be numbers; got {values!r}") from None
    return key


def _checked_bias(bias, x):
    """``bias`` as a JAX array that broadcasts to ``x``, or the error plain gpuact raises."""
    if np.ndim(bias) == 0 and isinstance(bias, (int, float, np.integer, np.floating)):
        dtype = checks.result_dtype(x.dtype)
        bias = jnp.asarray(checks.as_param("bias", bias), np.float32 if _is_bfloat16(dtype) else dtype)
    else:
        bias = jnp.asarray(bias)
        checks.result_dtype(bias.dtype)  # as plain gpuact takes an array operand: real numbers only
    try:
        shape = np.broadcast_shapes(tuple(bias.shape), tuple(x.shape))
    except ValueError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to x's shape {tuple(x.shape)}")
    return bias


def _shifted(key: tuple) -> tuple:
    """The key with its (non-negative) axis, if it has one, one further: the batch axis is in front."""
    return tuple(
        (k, t, (tuple(a + 1 for a in v) if isinstance(v, tuple) else v + 1) if k == "axis" else v) for k, t, v in key
    )


def _output_shape(name: str, shape, kwargs: dict) -> tuple:
    if name not in _GATED:
        return tuple(shape)
    axis = kwargs["axis"]
    return tuple(shape[:axis]) + (shape[axis] // 2,) + tuple(shape[axis + 1 :])


# ---- the callback ------------------------------------------------------------------------------


def _via() -> str:
    if _buffer_callback is not None and jax.default_backend() in _BUFFER_PLATFORMS:
        return "buffer"
    return "pure"


class _XlaStream:
    """XLA's stream for this call, as the CUDA stream protocol gpuact's ``stream=`` reads."""

    __slots__ = ("handle",)

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


def _device_array():
    """How a GPU buffer becomes an array gpuact's GPU backends own, zero-copy through its
    ``__cuda_array_interface__`` (which names no stream: nothing synchronizes)."""
    try:
        import cupy
    except ImportError:
        try:
            from numba import cuda
        except ImportError:
            raise RuntimeError("gpuact.jax on a GPU needs CuPy or Numba's CUDA support installed") from None
        return cuda.as_cuda_array
    return cupy.asarray


def _function_of(name: str, grad: bool):
    # looked up at each call, not bound once, so the call goes wherever gpuact.<name> does
    return getattr(gpuact.backward if grad else gpuact, name)


def _write(name: str, kwargs: dict, grad: bool, arrays: int, bits: tuple, ctx, out, *operands) -> None:
    """buffer_callback's callback: gpuact reads XLA's operand buffers and writes into ``out``
    (``bits``: which of the operands and, last, the result are bfloat16 as uint16 bits)."""
    options = {}
    if out.__dlpack_device__()[0] == _KDL_CPU:
        operands = tuple(np.asarray(b) for b in operands)
        target = np.asarray(out)
    else:
        wrap = _device_array()
        operands = tuple(wrap(b) for b in operands)
        target = wrap(out)
        stream = ctx.stream
        options["stream"] = _XlaStream(int(stream() if callable(stream) else stream))
    *operands, target = _from_bits((*operands, target), bits)
    if len(operands) > arrays:
        options["bias"] = operands[arrays]
    _function_of(name, grad)(*operands[:arrays], **kwargs, **options, out=target)


def _host(name: str, kwargs: dict, grad: bool, arrays: int, bits: tuple, *operands):
    """pure_callback's callback: host arrays in, a host array out (copied into XLA's buffer by JAX);
    ``bits`` as for ``_write``."""
    operands = _from_bits(tuple(np.asarray(a) for a in operands), bits)
    options = {"bias": operands[arrays]} if len(operands) > arrays else {}
    result = np.asarray(_function_of(name, grad)(*operands[:arrays], **kwargs, **options))
    return result.view(np.uint16) if bits[-1] else result


def _call(name: str, kwargs: dict, grad: bool, via: str, operands: tuple):
    """One forward (``x[, bias]``) or backward (``dy, x[, bias]``) call of gpuact on these
    operands, as a custom call whose result shape and dtype are read from them."""
    arrays = 2 if grad else 1
    x = operands[arrays - 1]
    if grad:
        shape, dtype = x.shape, checks.grad_dtype(operands[0].dtype, x.dtype)
    else:
        shape, dtype = _output_shape(name, x.shape, kwargs), checks.result_dtype(x.dtype)
    bits = tuple(_is_bfloat16(a.dtype) for a in operands) + (_is_bfloat16(dtype),)
    spec = jax.ShapeDtypeStruct(shape, np.uint16 if bits[-1] else dtype)
    crossing = tuple(_as_bits(a) for a in operands)
    if via == "buffer":
        callback = functools.partial(_write, name, kwargs, grad, arrays, bits)
        result = _buffer_callback(callback, spec)(*crossing)
    else:
        # no vmap_method (older JAX releases take none): the custom_vmap rule around this call batches it
        callback = functools.partial(_host, name, kwargs, grad, arrays, bits)
        result = jax.pure_callback(callback, spec, *crossing)
    return jax.lax.bitcast_convert_type(result, jnp.bfloat16) if bits[-1] else result


@functools.cache
def _kernel(name: str, key: tuple, grad: bool, with_bias: bool, via: str):
    """The gpuact call for these parameters, with its batching rule: any batch axis becomes one
    more leading axis of ``x`` (and ``dy``), the bias is lined up with it, the axis moves by one."""
    kwargs = {k: v for k, _, v in key}
    arrays = 2 if grad else 1

    @jax.custom_batching.custom_vmap
    def kernel(*operands):
        return _call(name, kwargs, grad, via, operands)

    @kernel.def_vmap
    def rule(axis_size, in_batched, *operands):
        batched = [
            a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in zip(operands[:arrays], in_batched)
        ]
        if with_bias:
            bias = operands[arrays]
            if in_batched[arrays]:
                # (batch, *bias's shape) against (batch, *x's shape): ones between, so the bias keeps
                # its trailing axes instead of lining its batch axis up with one of x's
                lead = (batched[-1].ndim - 1) - (bias.ndim - 1)
                bias = bias.reshape((axis_size,) + (1,) * lead + tuple(bias.shape[1:]))
            batched.append(bias)
        inner = _kernel(name, _shifted(key), grad, with_bias, via)
        return inner(*batched), True

    return kernel


def _bias_gradient(dx, bias):
    """dx summed over the axes ``bias`` was broadcast along, accumulated in at least float32."""
    lead = dx.ndim - bias.ndim
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(bias.shape) if s == 1 and dx.shape[lead + i] != 1)
    wide = jnp.float32 if np.dtype(dx.dtype).itemsize < 4 else None
    return jnp.sum(dx, axis=axes, dtype=wide).reshape(bias.shape).astype(bias.dtype)


@functools.cache
def _function(name: str, key: tuple, with_bias: bool, via: str):
    """The custom_vjp function of one activation with these (hashable, validated) parameters."""
    forward = _kernel(name, key, False, with_bias, via)
    backward = _kernel(name, key, True, with_bias, via)

    if with_bias:

        @jax.custom_vjp
        def f(x, bias):
            return forward(x, bias)

        def fwd(x, bias):
            return forward(x, bias), (x, bias)

        def bwd(saved, dy):
            x, bias = saved
            dx = backward(dy, x, bias)
            return dx.astype(x.dtype), _bias_gradient(dx, bias)

        f.defvjp(fwd, bwd)
        return f

    @jax.custom_vjp
    def g(x):
        return forward(x)

    def gfwd(x):
        return forward(x), x

    def gbwd(x, dy):
        return (backward(dy, x).astype(x.dtype),)

    g.defvjp(gfwd, gbwd)
    return g


def _differentiable(name: str):
    forward = getattr(activations, name)
    signature = inspect.signature(forward)
    parameters = [p for p in signature.parameters.values() if p.name not in _NOT_FORWARDED]
    signature = signature.replace(parameters=parameters)

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        x = jnp.asarray(arguments.pop("x"))
        if name in _GATED and name != "glu" and not activations._is_axis(arguments["axis"]):
            return _two_tensor(function, x, jnp.asarray(arguments.pop("axis")), arguments)
        bias = arguments.pop("bias", None)
        key = _checked(name, arguments, x)
        if bias is None:
            return _function(name, key, False, _via())(x)
        return _function(name, key, True, _via())(x, _checked_bias(bias, x))

    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__doc__ = (
        f":func:`gpuact.{name}` as a ``jax.custom_vjp`` function (jit, grad, vmap), its gradient "
        f":func:`gpuact.backward.{name}`, both writing into XLA's buffers through "
        f"``jax.experimental.buffer_callback`` (``jax.pure_callback`` where JAX lacks it). Parameters "
        f"as ``gpuact.{name}``, without ``out``, ``backend`` and ``stream``; they are static (Python "
        f"or NumPy numbers) and checked when the function is traced."
    )
    return function


def _two_tensor(halves_form, a, b, arguments: dict):
    """``gate(a) * b`` as the halves form along a new leading axis of ``stack([a, b])``."""
    checks.check_pair(a.shape, a.dtype, b.shape, b.dtype)
    y = halves_form(jnp.stack([a, b]), 0, **{k: v for k, v in arguments.items() if k != "axis"})
    return y.reshape(a.shape)


for _name in activations.__all__:
    globals()[_name] = _differentiable(_name)

__all__ = list(activations.__all__)
