"""gpuact for PyTorch training: operators registered with ``torch.library``, functions and a layer.

``gpuact.torch.<name>(x, <the activation's parameters>, bias=None)`` is ``gpuact.<name>`` as a
differentiable PyTorch operator: the forward runs gpuact's kernel on the tensor (CPU tensors on the
NumPy path, CUDA tensors on the CuPy path, on PyTorch's current stream), the backward runs
``gpuact.backward.<name>`` (one fused pass). ``bias`` (a tensor broadcast against ``x``, a Python
number or an array, added inside the kernel) gets its gradient too: ``dx`` summed over the axes
it was broadcast along. softmax, log_softmax, sparsemax and glu take ``axis``. Every activation
of ``gpuact`` is here under its name, aliases included.

The operators are ten ``torch.library.custom_op`` in the ``gpuact`` namespace, one forward and
one backward per family, each taking the op's canonical parameters (``torch.ops.gpuact.
elementwise(x, bias, "gelu_tanh", [])``): ``elementwise``, ``softmax``, ``glu``, ``gated`` (the
two-tensor form ``swiglu(a, b)``, whose backward returns ``(da, db)``), ``sparsemax`` and their
``*_backward``. Each has a fake (meta) kernel and an autograd formula, so
``torch.compile(fullgraph=True)`` traces them with no graph break; each result is allocated by
PyTorch (``torch.empty``) and written by gpuact through ``out=``, so no buffer outlives PyTorch's
allocator (what CUDA-graph capture needs).

Second derivatives (``create_graph=True``, then a backward through the gradient) are exact for
relu, relu6, leaky_relu, sigmoid, tanh, gelu (both forms), silu/swish, softplus, elu, selu,
softmax and log_softmax; any other op raises ``NotImplementedError`` naming it.

``gpuact.torch.Activation("gelu", approximate=True)`` is the same as a ``torch.nn.Module``, for
``torch.nn.Sequential``.

>>> import torch, gpuact.torch
>>> x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
>>> y = gpuact.torch.gelu(x)
>>> y.sum().backward()
>>> [round(v, 4) for v in x.grad.tolist()]
[-0.0833, 0.8675, 1.0852]

Where PyTorch's own functions differ from Keras's, gpuact follows Keras: ``leaky_relu``'s default
slope is 0.2 (PyTorch: 0.01); ``softplus`` is exact everywhere (PyTorch's switches to ``x`` above
``threshold=20``); ``relu`` takes tf.keras's ``alpha``/``max_value``/``threshold``; ``gelu``'s
default is the exact (erf) form, as in PyTorch; hard_sigmoid is Keras 3's ``relu6(x + 3) / 6``,
which is PyTorch's ``hardsigmoid``. Gradients follow ``gpuact.backward``'s rules: at a kink the
derivative from the left (``relu'(0) = 0`` and ``leaky_relu'(0) = slope``, as in PyTorch; where
PyTorch's hardtanh, relu6 and hardsigmoid give 0 at their upper kink, gpuact gives the left
derivative, 1 or 1/6), and at +-inf the limit.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch

import gpuact
from gpuact import _entry, activations
from gpuact._contract import calls, checks, ops
from gpuact._contract.ops import ELEMENTWISE_PARAMS

_NOT_FORWARDED = ("out", "backend", "stream")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)


# ---- dtypes and operands ------------------------------------------------------------------------


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    """The forward's result dtype, by plain gpuact's rule (bfloat16 kept, like float16)."""
    if dtype in _FLOATS:
        return dtype
    if not dtype.is_floating_point and not dtype.is_complex:
        return torch.float32  # integers and bool compute in float32
    raise TypeError(f"gpuact activations take real numbers; got a tensor of dtype {dtype}")


def _grad_dtype(dy: torch.dtype, x: torch.dtype) -> torch.dtype:
    """A backward's result dtype: each side by the forward's rule, then the wider."""
    return torch.promote_types(_result_dtype(dy), _result_dtype(x))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # the torch parts of the second derivatives (ggx * dy, softmax's sums) compute half precision in
    # float32, as gpuact's kernels do
    return torch.float32 if dtype in _HALF else dtype


def _plain(t: torch.Tensor | None) -> torch.Tensor | None:
    # inside an op autograd is below us, but the tensors keep requires_grad, which plain gpuact refuses
    return None if t is None else t.detach()


def _bias_tensor(bias, x: torch.Tensor) -> torch.Tensor | None:
    """``bias`` as the operators take it: a tensor as it is; a Python or NumPy number as a 0-d
    tensor in the call's compute dtype (as plain gpuact makes it); an array on ``x``'s device."""
    if bias is None or isinstance(bias, torch.Tensor):
        return bias
    if isinstance(bias, (int, float, np.integer, np.floating)):
        value = checks.as_param("bias", bias)
        # torch.full, not torch.tensor: a fill kernel, where a CUDA graph capture refuses the copy from the host
        return torch.full((), value, dtype=_compute_dtype(_result_dtype(x.dtype)), device=x.device)
    return torch.as_tensor(bias, device=x.device)


def _check_bias(bias: torch.Tensor | None, x: torch.Tensor) -> None:
    if bias is None:
        return
    try:
        shape = tuple(torch.broadcast_shapes(bias.shape, x.shape))
    except RuntimeError:
        shape = None
    if shape != tuple(x.shape):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not broadcast to x's shape {tuple(x.shape)}")
    if bias.dtype.is_complex:
        raise TypeError(f"bias must be real numbers; got dtype {bias.dtype}")


def _check_dy(dy: torch.Tensor, want: Sequence[int], x: torch.Tensor) -> None:
    if tuple(dy.shape) != tuple(want):
        raise ValueError(f"dy has shape {tuple(dy.shape)}; x has shape {tuple(x.shape)}")


def _sum_to(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The gradient of a broadcast operand: ``grad`` summed over the axes it was broadcast along."""
    summed = grad.sum_to_size(like.shape) if like.dim() else grad.sum()
    return summed.to(like.dtype)


def _biased(x: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    z = x.to(dtype)
    return z if bias is None else z + bias.to(dtype)


_ALLOCATOR: list = []


def _gpuact_memory(x: torch.Tensor):
    """Around gpuact's call on a CUDA tensor: CuPy's own allocations (softmax workspaces, glu's
    and the layout copies' temporaries) taken from PyTorch's caching allocator on its current
    stream. A CUDA graph being captured then keeps them in its private pool; from CuPy's pool they
    would go back to CuPy after the capture while the graph still writes them at each replay."""
    if not x.is_cuda:
        return contextlib.nullcontext()
    try:
        import cupy
    except ImportError:  # gpuact's GPU backend is missing: its call says so
        return contextlib.nullcontext()
    if not _ALLOCATOR:

        def malloc(size: int, device: int) -> int:
            return torch.cuda.caching_allocator_alloc(size, device, torch.cuda.current_stream(device))

        def free(pointer: int, device: int) -> None:
            torch.cuda.caching_allocator_delete(pointer)

        _ALLOCATOR.append(cupy.cuda.memory.PythonFunctionAllocator(malloc, free).malloc)
    return cupy.cuda.using_allocator(_ALLOCATOR[0])


# ---- the operators ------------------------------------------------------------------------------
#
# One forward and one backward per family, taking the canonical parameters (gpuact._contract.ops), so that
# a new parameter value is a new constant of the graph, never a new operator.


@torch.library.custom_op(
    "gpuact::elementwise", mutates_args=(), schema="(Tensor x, Tensor? bias, str op, float[] params) -> Tensor"
)
def _elementwise(x, bias, op, params):
    y = torch.empty(x.shape, dtype=_result_dtype(x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.elementwise(op, x.detach(), tuple(params), bias=_plain(bias), out=y)
    return y


@_elementwise.register_fake
def _(x, bias, op, params):
    _check_op(op, params)
    _check_bias(bias, x)
    return x.new_empty(x.shape, dtype=_result_dtype(x.dtype))


@torch.library.custom_op(
    "gpuact::elementwise_backward",
    mutates_args=(),
    schema="(Tensor dy, Tensor x, Tensor? bias, str op, float[] params) -> Tensor",
)
def _elementwise_backward(dy, x, bias, op, params):
    dx = torch.empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.elementwise_grad(op, dy.detach(), x.detach(), tuple(params), bias=_plain(bias), out=dx)
    return dx


@_elementwise_backward.register_fake
def _(dy, x, bias, op, params):
    _check_op(op, params)
    _check_dy(dy, x.shape, x)
    _check_bias(bias, x)
    return x.new_empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype))


@torch.library.custom_op(
    "gpuact::softmax", mutates_args=(), schema="(Tensor x, Tensor? bias, int[] axis, bool log) -> Tensor"
)
def _softmax(x, bias, axis, log):
    y = torch.empty(x.shape, dtype=_result_dtype(x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.softmax(x.detach(), tuple(axis), log=log, bias=_plain(bias), out=y)
    return y


@_softmax.register_fake
def _(x, bias, axis, log):
    checks.softmax_axes(tuple(axis), x.dim())
    _check_bias(bias, x)
    return x.new_empty(x.shape, dtype=_result_dtype(x.dtype))


@torch.library.custom_op(
    "gpuact::softmax_backward",
    mutates_args=(),
    schema="(Tensor dy, Tensor x, Tensor? bias, int[] axis, bool log) -> Tensor",
)
def _softmax_backward(dy, x, bias, axis, log):
    dx = torch.empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.softmax_grad(dy.detach(), x.detach(), tuple(axis), log=log, bias=_plain(bias), out=dx)
    return dx


@_softmax_backward.register_fake
def _(dy, x, bias, axis, log):
    checks.softmax_axes(tuple(axis), x.dim())
    _check_dy(dy, x.shape, x)
    _check_bias(bias, x)
    return x.new_empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype))


@torch.library.custom_op("gpuact::glu", mutates_args=(), schema="(Tensor x, int axis, str gate) -> Tensor")
def _glu(x, axis, gate):
    y = torch.empty(calls.GLU.result_shape(tuple(x.shape), axis, gate), dtype=_result_dtype(x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.glu(x.detach(), axis, gate=gate, out=y)
    return y


def _check_gate(gate: str) -> None:
    if gate not in ops.GATES:
        raise ValueError(f"gpuact has no gated unit {gate!r}; it has {sorted(ops.GATES)}")


@_glu.register_fake
def _(x, axis, gate):
    _check_gate(gate)
    return x.new_empty(calls.GLU.result_shape(tuple(x.shape), axis, gate), dtype=_result_dtype(x.dtype))


@torch.library.custom_op(
    "gpuact::glu_backward", mutates_args=(), schema="(Tensor dy, Tensor x, int axis, str gate) -> Tensor"
)
def _glu_backward(dy, x, axis, gate):
    dx = torch.empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.glu_grad(dy.detach(), x.detach(), axis, gate=gate, out=dx)
    return dx


@_glu_backward.register_fake
def _(dy, x, axis, gate):
    _check_gate(gate)
    want = calls.GLU.forward_shape(tuple(x.shape), axis, gate)
    if tuple(dy.shape) != want:
        raise checks.gated_dy_shape_error(dy.shape, want, gate)
    return x.new_empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype))


@torch.library.custom_op("gpuact::gated", mutates_args=(), schema="(Tensor a, Tensor b, str gate) -> Tensor")
def _gated(a, b, gate):
    y = torch.empty(a.shape, dtype=_result_dtype(a.dtype), device=a.device)
    with _gpuact_memory(a):
        _entry.gated(a.detach(), b.detach(), gate=gate, out=y)
    return y


def _check_pair(a, b) -> None:
    checks.check_pair(a.shape, a.dtype, b.shape, b.dtype)


@_gated.register_fake
def _(a, b, gate):
    _check_gate(gate)
    _check_pair(a, b)
    return a.new_empty(a.shape, dtype=_result_dtype(a.dtype))


@torch.library.custom_op(
    "gpuact::gated_backward",
    mutates_args=(),
    schema="(Tensor dy, Tensor a, Tensor b, str gate) -> (Tensor, Tensor)",
)
def _gated_backward(dy, a, b, gate):
    dtype = _grad_dtype(dy.dtype, a.dtype)
    da, db = torch.empty(a.shape, dtype=dtype, device=a.device), torch.empty(a.shape, dtype=dtype, device=a.device)
    with _gpuact_memory(a):
        _entry.gated_grad(dy.detach(), a.detach(), b.detach(), gate=gate, out=(da, db))
    return da, db


@_gated_backward.register_fake
def _(dy, a, b, gate):
    _check_gate(gate)
    _check_pair(a, b)
    _check_dy(dy, a.shape, a)
    dtype = _grad_dtype(dy.dtype, a.dtype)
    return a.new_empty(a.shape, dtype=dtype), a.new_empty(a.shape, dtype=dtype)


@torch.library.custom_op("gpuact::sparsemax", mutates_args=(), schema="(Tensor x, int axis) -> Tensor")
def _sparsemax(x, axis):
    y = torch.empty(x.shape, dtype=_result_dtype(x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.sparsemax(x.detach(), axis, out=y)
    return y


@_sparsemax.register_fake
def _(x, axis):
    checks.single_axis(axis, x.dim())
    return x.new_empty(x.shape, dtype=_result_dtype(x.dtype))


@torch.library.custom_op(
    "gpuact::sparsemax_backward", mutates_args=(), schema="(Tensor dy, Tensor x, int axis) -> Tensor"
)
def _sparsemax_backward(dy, x, axis):
    dx = torch.empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype), device=x.device)
    with _gpuact_memory(x):
        _entry.sparsemax_grad(dy.detach(), x.detach(), axis, out=dx)
    return dx


@_sparsemax_backward.register_fake
def _(dy, x, axis):
    checks.single_axis(axis, x.dim())
    _check_dy(dy, x.shape, x)
    return x.new_empty(x.shape, dtype=_grad_dtype(dy.dtype, x.dtype))


def _check_op(op: str, params: Sequence[float]) -> None:
    names = ELEMENTWISE_PARAMS.get(op)
    if names is None:
        raise ValueError(f"gpuact has no elementwise op {op!r}")
    if len(params) != len(names):
        raise ValueError(f"gpuact's {op} takes {len(names)} parameters {names}; got {len(params)}")


OPS = (
    torch.ops.gpuact.elementwise,
    torch.ops.gpuact.elementwise_backward,
    torch.ops.gpuact.softmax,
    torch.ops.gpuact.softmax_backward,
    torch.ops.gpuact.glu,
    torch.ops.gpuact.glu_backward,
    torch.ops.gpuact.gated,
    torch.ops.gpuact.gated_backward,
    torch.ops.gpuact.sparsemax,
    torch.ops.gpuact.sparsemax_backward,
)


# ---- first derivatives: gpuact's backward kernels -------------------------------------------------


def _save_inputs(ctx, inputs, output):
    """Every tensor input saved, the rest kept as they are (``ctx.args``)."""
    ctx.save_for_backward(*(a if isinstance(a, torch.Tensor) or a is None else None for a in inputs))
    ctx.args = inputs


def _elementwise_grad(ctx, dy):
    x, bias, _, _ = ctx.saved_tensors
    op, params = ctx.args[2], ctx.args[3]
    dx = torch.ops.gpuact.elementwise_backward(dy, x, bias, op, params)
    return _x_and_bias(ctx, dx, bias, 0) + (None, None)


def _softmax_grad(ctx, dy):
    x, bias, _, _ = ctx.saved_tensors
    axis, log = ctx.args[2], ctx.args[3]
    dx = torch.ops.gpuact.softmax_backward(dy, x, bias, axis, log)
    return _x_and_bias(ctx, dx, bias, 0) + (None, None)


def _glu_grad(ctx, dy):
    x, _, _ = ctx.saved_tensors
    return torch.ops.gpuact.glu_backward(dy, x, ctx.args[1], ctx.args[2]), None, None


def _gated_grad(ctx, dy):
    a, b, _ = ctx.saved_tensors
    da, db = torch.ops.gpuact.gated_backward(dy, a, b, ctx.args[2])
    return da.to(a.dtype), db.to(b.dtype), None


def _sparsemax_grad(ctx, dy):
    x, _ = ctx.saved_tensors
    return torch.ops.gpuact.sparsemax_backward(dy, x, ctx.args[1]), None


def _x_and_bias(ctx, dz: torch.Tensor, bias: torch.Tensor | None, first: int) -> tuple:
    """The gradients of ``x`` and ``bias`` (inputs ``first`` and ``first + 1``) from the
    gradient ``dz`` of ``z = x + bias``, each where it is needed."""
    need_x, need_bias = ctx.needs_input_grad[first], ctx.needs_input_grad[first + 1]
    dx = dz.to(ctx.saved_tensors[first].dtype) if need_x else None
    dbias = _sum_to(dz, bias) if bias is not None and need_bias else None
    return dx, dbias


_elementwise.register_autograd(_elementwise_grad, setup_context=_save_inputs)
_softmax.register_autograd(_softmax_grad, setup_context=_save_inputs)
_glu.register_autograd(_glu_grad, setup_context=_save_inputs)
_gated.register_autograd(_gated_grad, setup_context=_save_inputs)
_sparsemax.register_autograd(_sparsemax_grad, setup_context=_save_inputs)


# ---- second derivatives ---------------------------------------------------------------------------
#
# The backward operators are differentiable too. An elementwise dx = dy f'(z) is linear in dy, with a
# diagonal Jacobian (its own backward gives ggx f'(z)), and its derivative in z is dy f''(z): the
# backward operator of the derivative op d_<op> (gpuact._contract.ops.derivative_op), whose
# f'' is written once in the shared CUDA/C++/Numba math beside f', run on ggx * dy. softmax and
# log_softmax's Hessian-vector products are their forward and first-derivative kernels composed
# with a few torch sums: they need no kernel of their own. An op without a second derivative, or
# a third derivative of any op, raises rather than treating its derivative as a constant.


def _display_name(op: str) -> str:
    return "gelu(approximate=True)" if op == "gelu_tanh" else op


def _no_second_derivative(op: str):
    supported = ", ".join(sorted({*map(_display_name, ops.SECOND_DERIVATIVE_OPS), "softmax", "log_softmax"}))
    if op.startswith(ops.DERIVATIVE_PREFIX) and op in ELEMENTWISE_PARAMS:
        base = _display_name(op[len(ops.DERIVATIVE_PREFIX) :])
        return NotImplementedError(
            f"gpuact.torch.{base}: the third derivative (a backward through a second derivative taken "
            f"with create_graph=True) is not implemented; gpuact's operators are differentiable twice"
        )
    return NotImplementedError(
        f"gpuact.torch.{_display_name(op)}: the second derivative (a backward through a gradient taken "
        f"with create_graph=True) is not implemented for {_display_name(op)}; it is for {supported}"
    )


def _elementwise_grad_grad(ctx, ggx):
    dy, x, bias, _, _ = ctx.saved_tensors
    op, params = ctx.args[3], ctx.args[4]
    need_dy = ctx.needs_input_grad[0]
    gdy = None
    if need_dy:
        # dx = dy f'(z) is linear in dy, with a diagonal Jacobian: its own backward
        gdy = torch.ops.gpuact.elementwise_backward(ggx, x, bias, op, params).to(dy.dtype)
    if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
        return gdy, None, None, None, None
    second = ops.derivative_op(op)
    if second is None:
        raise _no_second_derivative(op)
    dtype = _compute_dtype(_grad_dtype(dy.dtype, x.dtype))
    dz = torch.ops.gpuact.elementwise_backward(ggx.to(dtype) * dy.to(dtype), x, bias, second, params)
    return (gdy, *_x_and_bias(ctx, dz, bias, 1), None, None)


def _softmax_grad_grad(ctx, ggx):
    dy, x, bias, _, _ = ctx.saved_tensors
    axis, log = list(checks.softmax_axes(tuple(ctx.args[3]), x.dim())), ctx.args[4]
    dtype = _compute_dtype(_grad_dtype(dy.dtype, x.dtype))
    g, d = ggx.to(dtype), dy.to(dtype)
    gdy = None
    if log:
        # dx = dy - p sum(dy): d dx / d dy is 1 - p, whose transpose takes ggx to g - sum(g p);
        # d dx / dz is -sum(dy) J with J softmax's (symmetric) Jacobian
        p = torch.ops.gpuact.softmax(x, bias, axis, False).to(dtype)
        if ctx.needs_input_grad[0]:
            gdy = g - (g * p).sum(axis, keepdim=True)
        dz = -d.sum(axis, keepdim=True) * torch.ops.gpuact.softmax_backward(g, x, bias, axis, False)
    else:
        # dx = J dy with J = diag(p) - p p^T, symmetric: its own backward; d (J dy) / dz applied to
        # ggx is J (g (dy - sum(dy p)) - sum(g p) dy)
        if ctx.needs_input_grad[0]:
            gdy = torch.ops.gpuact.softmax_backward(ggx, x, bias, axis, False)
        p = torch.ops.gpuact.softmax(x, bias, axis, False).to(dtype)
        dp = g * (d - (d * p).sum(axis, keepdim=True)) - (g * p).sum(axis, keepdim=True) * d
        dz = torch.ops.gpuact.softmax_backward(dp, x, bias, axis, False)
    gdy = gdy.to(dy.dtype) if gdy is not None else None
    return (gdy, *_x_and_bias(ctx, dz, bias, 1), None, None)


def _sparsemax_grad_grad(ctx, ggx):
    dy, x, _ = ctx.saved_tensors
    if ctx.needs_input_grad[1]:
        raise _no_second_derivative("sparsemax")
    # dx = s (dy - mean of dy over the support) is linear in dy, with a symmetric Jacobian
    return torch.ops.gpuact.sparsemax_backward(ggx, x, ctx.args[2]).to(dy.dtype), None, None


def _glu_grad_grad(ctx, ggx):
    dy, x, _, _ = ctx.saved_tensors
    axis, gate = checks.single_axis(ctx.args[2], x.dim()), ctx.args[3]
    if ctx.needs_input_grad[1]:
        raise _no_second_derivative(gate)
    # for y = op(g) v: dx = (dy v op'(g), dy op(g)) in the halves' order, linear in dy; its
    # transpose applied to ggx = (gg, gv) is gg v op'(g) + gv op(g), from the op's kernels
    unit = ops.GATES[gate]
    params = list(unit.params)
    dtype = _compute_dtype(_grad_dtype(dy.dtype, x.dtype))
    halves, ghalves = x.chunk(2, axis), ggx.to(dtype).chunk(2, axis)
    g, v = halves[unit.gate_half], halves[1 - unit.gate_half].to(dtype)
    gg, gv = ghalves[unit.gate_half], ghalves[1 - unit.gate_half]
    activated = torch.ops.gpuact.elementwise(g, None, unit.op, params).to(dtype)
    gdy = torch.ops.gpuact.elementwise_backward(gg * v, g, None, unit.op, params).to(dtype) + gv * activated
    return gdy.to(dy.dtype), None, None, None


def _gated_grad_grad(ctx, gda, gdb):
    dy, a, b, _ = ctx.saved_tensors
    gate = ctx.args[3]
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise _no_second_derivative(gate)
    # (da, db) = (dy b op'(a), dy op(a)) is linear in dy; its transpose on (gda, gdb) is
    # gda b op'(a) + gdb op(a), from the op's kernels
    unit = ops.GATES[gate]
    params = list(unit.params)
    dtype = _compute_dtype(_grad_dtype(dy.dtype, a.dtype))
    gdy = torch.zeros((), dtype=dtype, device=a.device)
    if gda is not None:
        gda_b = gda.to(dtype) * b.to(dtype)
        gdy = gdy + torch.ops.gpuact.elementwise_backward(gda_b, a, None, unit.op, params).to(dtype)
    if gdb is not None:
        gdy = gdy + gdb.to(dtype) * torch.ops.gpuact.elementwise(a, None, unit.op, params).to(dtype)
    return gdy.expand(a.shape).to(dy.dtype), None, None, None


_elementwise_backward.register_autograd(_elementwise_grad_grad, setup_context=_save_inputs)
_softmax_backward.register_autograd(_softmax_grad_grad, setup_context=_save_inputs)
_sparsemax_backward.register_autograd(_sparsemax_grad_grad, setup_context=_save_inputs)
_glu_backward.register_autograd(_glu_grad_grad, setup_context=_save_inputs)
_gated_backward.register_autograd(_gated_grad_grad, setup_context=_save_inputs)


# ---- the public functions -------------------------------------------------------------------------


def _params_of(name: str) -> Callable[..., tuple[str, list[float]]]:
    """``(canonical op, its parameters)`` from the public function's keyword parameters, by the
    same helpers plain gpuact uses."""
    op = getattr(activations, name).__name__  # an alias is the function it names
    if op == "relu":
        return lambda alpha, max_value, threshold, negative_slope: (
            "relu",
            list(activations.relu_params(alpha, max_value, threshold, negative_slope)),
        )
    if op == "gelu":
        return lambda approximate: (activations.gelu_op(approximate), [])
    if op == "celu":
        return lambda alpha: ("celu", list(activations.celu_params(alpha)))
    if op == "squareplus":
        return lambda b: ("squareplus", list(activations.squareplus_params(b)))
    if op == "threshold":
        return lambda threshold, default_value: (
            "threshold",
            [checks.as_param("threshold", threshold), checks.as_param("default_value", default_value, allow_nan=True)],
        )
    names = ELEMENTWISE_PARAMS[op]
    forward = inspect.signature(getattr(activations, name)).parameters
    public = tuple(p for p in forward if p not in ("x", "bias", *_NOT_FORWARDED))
    if public != names:  # pragma: no cover - a new parameter needs its conversion above
        raise RuntimeError(f"gpuact.torch does not know how to pass {name}'s parameters {public}")
    return lambda **kwargs: (op, [checks.as_param(n, kwargs[n]) for n in names])


def _axes(axis) -> list[int]:
    """``axis`` as the operators take it (``int[]``), checked for its type only: the operators
    normalise it against ``x``'s dimensions, outside Dynamo's tracing (NumPy's helper is not
    traceable)."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"axis must be an int or a tuple of ints; got {a!r}")
    return [int(a) for a in axes]


def _single_axis(axis) -> int:
    axes = _axes(axis)
    if len(axes) != 1:
        raise ValueError(f"this function takes a single axis; got {axis!r}")
    return axes[0]


# the gated units' public functions (geglu's approximate=True is the gate "geglu_tanh")
GATED = ("glu", "swiglu", "geglu", "reglu")


def _prepare(name: str) -> Callable[..., Callable]:
    """``prepare(**parameters)``: the operator call behind ``gpuact.torch.<name>`` with these
    parameters in canonical form, ``run(x, bias)``."""
    ops = torch.ops.gpuact
    if name in ("softmax", "log_softmax"):
        log = name == "log_softmax"

        def softmax(axis):
            axes = _axes(axis)
            return lambda x, bias: ops.softmax(x, bias, axes, log)

        return softmax
    if name == "sparsemax":

        def shaped(axis):
            single = _single_axis(axis)
            return lambda x, bias: ops.sparsemax(x, single)

        return shaped
    if name in GATED:

        def gated(axis, approximate=False):
            gate = "geglu_tanh" if name == "geglu" and approximate else name
            if isinstance(axis, torch.Tensor) and name != "glu":  # the two-tensor form (a, b)
                return lambda a, bias: ops.gated(a, axis, gate)
            single = _single_axis(axis)
            return lambda x, bias: ops.glu(x, single, gate)

        return gated
    params_of = _params_of(name)

    def elementwise(**parameters):
        op, params = params_of(**parameters)
        return lambda x, bias: ops.elementwise(x, bias, op, params)

    return elementwise


def _differentiable(name: str):
    """``gpuact.torch.<name>``: the forward's signature without ``out``, ``backend``, ``stream``."""
    forward = getattr(activations, name)
    signature = inspect.signature(forward)
    parameters = [p for p in signature.parameters.values() if p.name not in _NOT_FORWARDED]
    signature = signature.replace(parameters=parameters)
    prepare = _prepare(name)
    takes_bias = "bias" in signature.parameters
    # the common call, x alone (and a bias): its parameters made canonical once, here, since
    # binding the signature costs more than the rest of the Python around the operator
    defaults = {p.name: p.default for p in parameters[1:] if p.name != "bias"}
    run_defaults = None
    if all(v is not inspect.Parameter.empty for v in defaults.values()):
        run_defaults = prepare(**defaults)

    def function(*args, **kwargs):
        if run_defaults is not None and len(args) == 1 and all(k == "bias" and takes_bias for k in kwargs):
            x, bias, run = args[0], kwargs.get("bias"), run_defaults
        else:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            x, bias = arguments.pop("x"), arguments.pop("bias", None)
            run = prepare(**arguments)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"gpuact.torch.{name} takes a torch.Tensor; got {type(x).__name__} (use gpuact.{name})")
        return run(x, _bias_tensor(bias, x))

    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__doc__ = (
        f"Differentiable :func:`gpuact.{name}` for torch tensors (CPU or CUDA); the backward "
        f"is :func:`gpuact.backward.{name}`. Parameters as ``gpuact.{name}``, without ``out``, "
        "``backend`` and ``stream`` (the tensor's device and PyTorch's current stream are used)."
    )
    return function


for _name in activations.__all__:
    globals()[_name] = _differentiable(_name)


class Activation(torch.nn.Module):
    """A gpuact activation as a ``torch.nn.Module``: ``Activation("gelu", approximate=True)``.

    ``activation`` is a name or alias (or a gpuact function); the keyword arguments are its
    parameters. ``forward(x, bias=None)``.

    >>> import torch, gpuact.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), gpuact.torch.Activation("relu", max_value=6.0))
    >>> model(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, activation, **kwargs):
        super().__init__()
        self.activation = gpuact.serialize(gpuact.get(activation))
        self.kwargs = kwargs
        self._function = globals()[self.activation]

    def forward(self, x, bias=None):
        if bias is None:
            return self._function(x, **self.kwargs)
        return self._function(x, bias=bias, **self.kwargs)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return repr(self.activation) + (", " + args if args else "")


__all__ = [*activations.__all__, "Activation"]
