"""gpuact for JAX: functions that work under ``jax.jit`` and ``jax.grad``.

``gpuact.jax.<name>(x, <the activation's parameters>, bias=None)`` is a ``jax.custom_vjp``
function: its forward calls ``gpuact.<name>`` and its backward ``gpuact.backward.<name>``, both
through ``jax.pure_callback`` with the result's shape and dtype declared, so they trace, jit and
differentiate like any JAX function (and ``bias``, broadcast against ``x``, gets its gradient
too). softmax, log_softmax, sparsemax and glu take ``axis``.

On the CPU the callback hands gpuact the array's host buffer (the NumPy path's compiled kernels
run on it). On a GPU, ``pure_callback`` copies the operands to the host and the result back for
every call: that is PCIe traffic and a device synchronization per call, so it is for Keras's exact
semantics inside a jitted JAX program, not for speed. Eager GPU arrays outside ``jit`` are better
given to ``gpuact.<name>`` directly: they go to the CuPy kernels zero-copy and come back as JAX
arrays.

>>> import jax, jax.numpy as jnp, gpuact.jax
>>> [round(v, 4) for v in jax.grad(lambda x: gpuact.jax.gelu(x).sum())(jnp.array([-1.0, 0.5, 2.0])).tolist()]
[-0.0833, 0.8675, 1.0852]

bfloat16 arrays raise ``TypeError`` (compute in float32 and cast around the call).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

import gpuact
from gpuact import activations
from gpuact._contract import checks

_NOT_FORWARDED = ("out", "backend", "stream")
_AXIS_OPS = ("softmax", "log_softmax", "sparsemax", "glu")


def _result_dtype(*dtypes):
    out = None
    for dtype in dtypes:
        if dtype is None:
            continue
        if dtype == jnp.bfloat16:
            raise TypeError("gpuact.jax does not take bfloat16: cast to float32 around the call")
        dtype = checks.result_dtype(np.dtype(dtype))
        out = dtype if out is None else np.promote_types(out, dtype)
    return np.dtype(out)


def _output_shape(name, shape, kwargs):
    if name != "glu":
        return tuple(shape)
    axis = checks.single_axis(kwargs.get("axis", -1), len(shape))
    return tuple(shape[:axis]) + (shape[axis] // 2,) + tuple(shape[axis + 1 :])


def _host(a):
    return None if a is None else np.asarray(a)


@functools.cache
def _function(name: str, frozen: tuple, with_bias: bool):
    """The custom_vjp function of one activation with these (hashable) parameters."""
    kwargs = dict(frozen)
    vmap_method = "sequential" if name in _AXIS_OPS else "broadcast_all"

    def forward_host(x, bias=None):
        options = {} if bias is None else {"bias": bias}
        return np.asarray(getattr(gpuact, name)(x, **kwargs, **options))

    def grad_host(dy, x, bias=None):
        options = {} if bias is None else {"bias": bias}
        return np.asarray(getattr(gpuact.backward, name)(dy, x, **kwargs, **options))

    def call_forward(x, bias):
        spec = jax.ShapeDtypeStruct(_output_shape(name, x.shape, kwargs), _result_dtype(x.dtype))
        args = (x,) if bias is None else (x, bias)
        return jax.pure_callback(lambda *a: forward_host(*map(_host, a)), spec, *args, vmap_method=vmap_method)

    def call_grad(dy, x, bias):
        spec = jax.ShapeDtypeStruct(x.shape, _result_dtype(dy.dtype, x.dtype))
        args = (dy, x) if bias is None else (dy, x, bias)
        return jax.pure_callback(lambda *a: grad_host(*map(_host, a)), spec, *args, vmap_method=vmap_method)

    if with_bias:

        @jax.custom_vjp
        def f(x, bias):
            return call_forward(x, bias)

        def fwd(x, bias):
            return f(x, bias), (x, bias)

        def bwd(saved, dy):
            x, bias = saved
            dx = call_grad(dy, x, bias)
            # the bias's gradient: dx summed over the axes it was broadcast along
            lead = dx.ndim - bias.ndim
            axes = tuple(range(lead)) + tuple(
                lead + i for i, s in enumerate(bias.shape) if s == 1 and dx.shape[lead + i] != 1
            )
            dbias = jnp.sum(dx, axis=axes, keepdims=False).reshape(bias.shape).astype(bias.dtype)
            return dx.astype(x.dtype), dbias

        f.defvjp(fwd, bwd)
        return f

    @jax.custom_vjp
    def g(x):
        return call_forward(x, None)

    def gfwd(x):
        return g(x), x

    def gbwd(x, dy):
        return (call_grad(dy, x, None).astype(x.dtype),)

    g.defvjp(gfwd, gbwd)
    return g


def _freeze(arguments: dict) -> tuple:
    def frozen(v):
        return tuple(v) if isinstance(v, list) else v

    return tuple(sorted((k, frozen(v)) for k, v in arguments.items()))


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
        bias = arguments.pop("bias", None)
        if bias is None:
            return _function(name, _freeze(arguments), False)(x)
        return _function(name, _freeze(arguments), True)(x, jnp.asarray(bias))

    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__doc__ = (
        f":func:`gpuact.{name}` as a ``jax.custom_vjp`` function (jit, grad, vmap), its gradient "
        f":func:`gpuact.backward.{name}`, both through ``jax.pure_callback``. Parameters as "
        f"``gpuact.{name}``, without ``out``, ``backend`` and ``stream``."
    )
    return function


for _name in activations.__all__:
    globals()[_name] = _differentiable(_name)

__all__ = list(activations.__all__)
