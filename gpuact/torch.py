"""gpuact for PyTorch training: differentiable functions and a layer.

``gpuact.torch.<name>(x, <the activation's parameters>, bias=None)`` is ``gpuact.<name>`` as a
``torch.autograd.Function``: the forward runs gpuact's kernels on the tensor (CPU tensors on the
NumPy path, CUDA tensors on the CuPy path, zero-copy both ways, on PyTorch's current stream), the
backward runs ``gpuact.backward.<name>`` (one fused pass). ``bias`` (a tensor broadcast against
``x``, added inside the kernel) gets its gradient too: ``dx`` summed over the axes it was
broadcast along. softmax, log_softmax, sparsemax and glu take ``axis``. Every activation of
``gpuact`` is here under its name, aliases included.

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

import inspect

import torch
from torch.autograd.function import once_differentiable

import gpuact
from gpuact import activations

_NOT_FORWARDED = ("out", "backend", "stream")


class _ActivationFunction(torch.autograd.Function):
    """One gpuact activation: forward by gpuact's kernel, backward by gpuact.backward's."""

    @staticmethod
    def forward(ctx, name, kwargs, x, bias):
        ctx.name, ctx.kwargs = name, kwargs
        ctx.save_for_backward(x, bias)
        # inside forward autograd is off, but the tensors keep requires_grad: hand gpuact plain views
        options = {} if bias is None else {"bias": bias.detach()}
        return getattr(gpuact, name)(x.detach(), **kwargs, **options)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        options = {} if bias is None else {"bias": bias.detach()}
        dx = getattr(gpuact.backward, ctx.name)(dy, x.detach(), **ctx.kwargs, **options)
        dbias = None
        if bias is not None and ctx.needs_input_grad[3]:
            dbias = dx.sum_to_size(bias.shape) if bias.dim() else dx.sum()
        return None, None, dx if ctx.needs_input_grad[2] else None, dbias


def _differentiable(name: str):
    """``gpuact.torch.<name>``: the forward's signature without ``out``, ``backend``, ``stream``."""
    forward = getattr(activations, name)
    signature = inspect.signature(forward)
    parameters = [p for p in signature.parameters.values() if p.name not in _NOT_FORWARDED]
    signature = signature.replace(parameters=parameters)

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        x = arguments.pop("x")
        bias = arguments.pop("bias", None)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"gpuact.torch.{name} takes a torch.Tensor; got {type(x).__name__} (use gpuact.{name})")
        return _ActivationFunction.apply(name, arguments, x, bias)

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
