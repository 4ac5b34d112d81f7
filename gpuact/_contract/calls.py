"""The twelve call families and the request that travels down the layers.

Every public function is one of twelve families: six forwards (``elementwise``, ``softmax``,
``glu``, ``gated``, ``sparsemax``, ``prelu``) and their backwards. ``gated`` is the two-tensor form
of the gated units (``swiglu(a, b)``): ``x`` is the gate's input ``a`` and ``b`` the other
operand, of ``a``'s shape and dtype; its backward returns the pair ``(da, db)``. A ``Family`` row says what a call of it
takes and returns: which operands, how its axis is read, the result's shape, and whether ``out``
may be ``x`` itself. ``gpuact._core`` runs any family from its row, and each wrapper of
``gpuact._wrappers`` unwraps any family from it, so that no layer repeats a sequence per family.

A ``Request`` is one call's arguments as the entry point got them; a wrapper hands the layer
below a request with some arguments replaced (a chunk for a Dask array, the data for a masked one,
a NumPy view for a PyTorch tensor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpuact._contract import checks


@dataclass(frozen=True)
class Family:
    """One call family: what its calls take and return."""

    name: str  # also the backend function that computes it
    grad: bool  # a backward: takes ``dy`` first
    op: bool  # takes an elementwise op's name and parameters
    axis: Callable[[Any, int], Any] | None  # reads ``axis=`` for an array of this many dimensions
    axis_keyword: str | None  # what the backend function calls the axis or axes it is given
    halves: bool  # glu: the forward's result (and so the backward's dy) is half of x along the axis
    out_may_be_x: bool  # ``out`` may be ``x`` itself (and ``dy``): the kernels read each element first
    bias: bool  # takes ``bias=``
    mask: bool  # takes the Softmax layer's ``mask=``
    alpha: bool  # takes PReLU's ``alpha``
    pair: bool  # a gated unit's two-tensor form: takes ``b``; its backward returns ``(da, db)``

    def forward_shape(self, shape, axis, gate: str | None = None) -> tuple:
        """The forward's result shape for an ``x`` of ``shape`` (``axis`` as given; ``gate``, a
        gated unit's name, for the message when its axis cannot be split)."""
        if self.halves:
            return checks.glu_halves(axis, shape, gate)[1]
        return tuple(shape)

    def result_shape(self, shape, axis, gate: str | None = None) -> tuple:
        """The shape of this family's result: a backward's ``dx`` has x's shape (the two-tensor
        form's backward: each of ``da`` and ``db``)."""
        return tuple(shape) if self.grad else self.forward_shape(shape, axis, gate)


def _family(
    name,
    *,
    grad=False,
    op=False,
    axis=None,
    halves=False,
    out_may_be_x=True,
    bias=False,
    mask=False,
    alpha=False,
    pair=False,
):
    keyword = None if axis is None else ("axes" if axis is checks.softmax_axes else "axis")
    return Family(name, grad, op, axis, keyword, halves, out_may_be_x, bias, mask, alpha, pair)


ELEMENTWISE = _family("elementwise", op=True, bias=True)
ELEMENTWISE_GRAD = _family("elementwise_grad", grad=True, op=True, bias=True)
SOFTMAX = _family("softmax", axis=checks.softmax_axes, bias=True, mask=True)
SOFTMAX_GRAD = _family("softmax_grad", grad=True, axis=checks.softmax_axes, bias=True, mask=True)
# glu writes half of x's length: an out overlapping x would be written before all of x is read
GLU = _family("glu", axis=checks.single_axis, halves=True, out_may_be_x=False)
GLU_GRAD = _family("glu_grad", grad=True, axis=checks.single_axis, halves=True, out_may_be_x=False)
# the two-tensor form reads a[i] and b[i] before it writes index i: out may be a or b itself; the
# backward writes two results, and one of them may be read after the other is written
GATED = _family("gated", pair=True)
GATED_GRAD = _family("gated_grad", grad=True, pair=True, out_may_be_x=False)
SPARSEMAX = _family("sparsemax", axis=checks.single_axis)
SPARSEMAX_GRAD = _family("sparsemax_grad", grad=True, axis=checks.single_axis)
PRELU = _family("prelu", alpha=True)
PRELU_GRAD = _family("prelu_grad", grad=True, alpha=True)

FAMILIES = (
    ELEMENTWISE,
    ELEMENTWISE_GRAD,
    SOFTMAX,
    SOFTMAX_GRAD,
    GLU,
    GLU_GRAD,
    GATED,
    GATED_GRAD,
    SPARSEMAX,
    SPARSEMAX_GRAD,
    PRELU,
    PRELU_GRAD,
)


class Request:
    """One call's arguments, as the public function got them (``axis`` not yet normalised)."""

    __slots__ = (
        "family",
        "x",
        "dy",
        "b",
        "op",
        "params",
        "axis",
        "log",
        "bias",
        "mask",
        "alpha",
        "out",
        "backend",
        "stream",
    )

    def __init__(
        self,
        family: Family,
        x,
        *,
        dy=None,
        b=None,
        op: str | None = None,
        params: tuple = (),
        axis=None,
        log: bool = False,
        bias=None,
        mask=None,
        alpha=None,
        out=None,
        backend: str | None = None,
        stream=None,
    ):
        self.family = family
        self.x = x
        self.dy = dy
        self.b = b
        self.op = op
        self.params = params
        self.axis = axis
        self.log = log
        self.bias = bias
        self.mask = mask
        self.alpha = alpha
        self.out = out
        self.backend = backend
        self.stream = stream

    def replace(self, **changes) -> Request:
        """A copy with ``changes`` applied."""
        new = Request.__new__(Request)
        for name in Request.__slots__:
            setattr(new, name, changes[name] if name in changes else getattr(self, name))
        return new

    def operands(self) -> dict[str, Any]:
        """The array arguments that are given, by name (``x`` first)."""
        named = {"x": self.x, "dy": self.dy, "b": self.b, "bias": self.bias, "mask": self.mask, "alpha": self.alpha}
        return {name: a for name, a in named.items() if a is not None}
