"""The op table shared by every backend: one row (``Op``) per elementwise op in ``OPS``, in the
canonical order, with its parameters and what the paths decide by op; ``ELEMENTWISE_PARAMS`` and
``ELEMENTWISE_OPS`` are read from it.

A public function turns its keyword arguments into these canonical float parameters, so that
a kernel takes them as arguments and a new value never recompiles anything.

``relu`` takes ``(alpha, threshold, lo, hi)``: ``y = clamp(x if x > threshold else 0, lo, hi)
- alpha * max(threshold - x, 0)``, where ``lo, hi = 0, max_value`` when ``max_value`` is given and
``-inf, inf`` (no clip at all) when it is not, as tf.keras does.
``gelu`` is the erf form and ``gelu_tanh`` the tanh approximation. ``squareplus`` takes ``sqrt(b)``,
computed in double precision by the public function, so that no kernel forms ``b`` (which may lie
beyond the float32 range while its square root does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Cost = Literal["cheap", "exp", "heavy"]


@dataclass(frozen=True)
class Op:
    """One elementwise op: what every path (NumPy formulas, compiled CPU kernels, CUDA sources,
    Numba device functions; tests/test_op_table.py checks each defines it) needs to know of it.

    * ``params``: the canonical parameter names, in the order the kernels take them (p0..p3);
    * ``cost``: how much a compiled CPU pass does per element, which sets from how many elements
      the NumPy backend shares it among threads (``numpy_backend.pool.compiled_parallel_min``):
      ``"cheap"`` (compares, clamps, a division or a square root: memory-bound), ``"exp"`` (one exp, log or tanh),
      ``"heavy"`` (erfc, or several transcendental functions);
    * ``compiled_float64``: float64 arrays take the compiled CPU kernel, not the ufunc formula.
    """

    params: tuple[str, ...]
    cost: Cost
    compiled_float64: bool = False


# cost: a second thread on a compiled pass costs a few tens of microseconds (2-core VM, under load),
# so it pays off only on longer arrays, the later the cheaper the op. Measured (float32, one thread
# against two): relu 7 us against 39 at 2**16, 55 against 101 at 2**19, 282 against 260 at 2**21;
# sigmoid 225 against 227 at 2**19; gelu 292 against 220 at 2**18.
#
# compiled_float64: float64 math comes from the C library one element at a time (gpuact_host_simd.h
# is float32 only), slower than NumPy's SIMD float64 loops: measured at 2**21 float64 on the 2-core
# EPYC, compiled / ufunc time was tanh 4.5x, softplus 5x, mish 8x, exponential 2.3x, softmax 1.7x.
# float64 therefore takes the compiled kernels only for the ops that need no such function
# (softsign 2.4x faster, relu 1.2x) and gelu (glibc's erfc beats the 23-term ufunc fit, 1.2x).
OPS: dict[str, Op] = {
    "relu": Op(("alpha", "threshold", "lo", "hi"), "cheap", compiled_float64=True),
    "sigmoid": Op((), "exp"),
    "softplus": Op((), "heavy"),
    "softsign": Op((), "cheap", compiled_float64=True),
    "tanh": Op((), "exp"),
    "selu": Op((), "exp"),
    "elu": Op(("alpha",), "exp"),
    "exponential": Op((), "exp"),
    "linear": Op((), "cheap", compiled_float64=True),
    "relu6": Op((), "cheap", compiled_float64=True),
    "leaky_relu": Op(("negative_slope",), "cheap", compiled_float64=True),
    "silu": Op((), "exp"),
    "gelu": Op((), "heavy", compiled_float64=True),
    "gelu_tanh": Op((), "heavy"),
    "hard_sigmoid": Op((), "cheap", compiled_float64=True),
    "hard_silu": Op((), "cheap", compiled_float64=True),
    "mish": Op((), "heavy"),
    "log_sigmoid": Op((), "heavy"),
    "celu": Op(("alpha",), "exp"),
    "hard_tanh": Op((), "cheap", compiled_float64=True),
    "hard_shrink": Op(("threshold",), "cheap", compiled_float64=True),
    "soft_shrink": Op(("threshold",), "cheap", compiled_float64=True),
    "tanh_shrink": Op((), "exp"),
    "threshold": Op(("threshold", "default_value"), "cheap", compiled_float64=True),
    "squareplus": Op(("sqrt_b",), "cheap"),
    "sparse_plus": Op((), "cheap", compiled_float64=True),
    "sparse_sigmoid": Op((), "cheap", compiled_float64=True),
}

# The second derivatives, as derivative ops. ``d_<op>`` is the elementwise op ``x -> f'(x)`` with
# ``<op>``'s parameters: its forward is the first derivative every path already has, and its
# derivative (``grad_d_<op>`` in kernels/gpuact_grad.cuh, with its ufunc and Numba twins) is
# ``f''(x)``. So ``dy * f''(x)``, what a backward through a gradient needs, is the backward family's
# ordinary call with the op ``d_<op>``: every path computes it with the kernels and plumbing it has
# for the first derivative. The ops here are the most used ones (gpuact.torch's second
# derivatives); the others have no ``d_`` row, and asking for their second derivative raises.
SECOND_DERIVATIVE_OPS = (
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "gelu_tanh",
    "softplus",
    "elu",
    "selu",
)
DERIVATIVE_PREFIX = "d_"


def derivative_op(op: str) -> str | None:
    """The derivative op of ``op`` (whose backward gives ``dy * f''(x)``), or None where gpuact has
    no second derivative of ``op``."""
    return DERIVATIVE_PREFIX + op if op in SECOND_DERIVATIVE_OPS else None


DERIVATIVE_OPS = tuple(DERIVATIVE_PREFIX + op for op in SECOND_DERIVATIVE_OPS)
OPS.update({DERIVATIVE_PREFIX + op: OPS[op] for op in SECOND_DERIVATIVE_OPS})

# The gated linear units: x split in two halves along an axis, one half (the gate) through an
# elementwise op of the table, times the other. Keras's glu gates its first half by the second,
# a * sigmoid(b); the GLU variants of Shazeer, "GLU Variants Improve Transformer" (2020), as the
# LLaMA-style MLPs compute them, put the gate first: op(a) * b. Every path computes them from the
# op table's forward and first derivative, so a gate is one row here.


@dataclass(frozen=True)
class Gate:
    """One gated unit: ``op`` (with its canonical ``params``) applied to the half ``gate_half``
    (0: the first), times the other half."""

    op: str
    params: tuple[float, ...]
    gate_half: int


GATES: dict[str, Gate] = {
    "glu": Gate("sigmoid", (), 1),
    "swiglu": Gate("silu", (), 0),
    "geglu": Gate("gelu", (), 0),
    "geglu_tanh": Gate("gelu_tanh", (), 0),
    "reglu": Gate("relu", (0.0, 0.0, -float("inf"), float("inf")), 0),
}

ELEMENTWISE_PARAMS: dict[str, tuple[str, ...]] = {name: op.params for name, op in OPS.items()}
ELEMENTWISE_OPS = tuple(OPS)

# selu's constants, exactly as Keras writes them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Below this, x * sigmoid(x), x * Phi(x), x * tanh(softplus(x)) are 0 in every float format,
# so inputs are clamped here first: -inf then gives 0 (the limit) rather than -inf * 0 = NaN.
NEGATIVE_SATURATION = -1.0e4
