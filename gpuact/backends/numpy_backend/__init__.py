"""The CPU path: compiled fused kernels where they were built, else NumPy ufuncs block by block.

float32 arrays (and float64 ones for the ops in ``_native.FLOAT64_OPS``) go to
``kernels/gpuact_cpu.cc`` (see ``_native.py``) when the package was installed with a C++
compiler: one vectorized pass per op, softmax along any axis, on every core. What follows is the
path for everything else (float16 and integer inputs, masked softmax, float64 exp/log/tanh ops and
softmax, installs without the compiled library), and the formulas those kernels are tested against.

Multi-step formulas (``sigmoid`` is four ufunc passes) would each stream the whole array through
memory if applied to it at once. Instead the array is cut into blocks small enough that a block,
its scratch buffers and its output stay in the core's cache; each step runs in place on the block;
and the blocks are shared out among threads, since ufuncs release the GIL. Every step writes into
``out`` or a scratch buffer, in the compute dtype: float32 stays float32, and float16 and integers
are computed in float32.

This package is the backend module; its submodules, each importing only those listed before it:

* ``pool``: the thread pool, the block size and the thresholds from which work is shared out;
* ``dtypes``: the compute dtype, and what is refused;
* ``formulas``: the ufunc formula and derivative of every elementwise op (``KERNELS``, ``GRADS``);
* ``blocks``: cache-sized blocks of any layout (``buffered_map``, ``gathered_rows``);
* ``elementwise_ops``: ``elementwise`` (with its fused bias) and ``elementwise_grad``;
* ``softmax_ops``: softmax and log-softmax, forward and backward, along any axes;
* ``shaped_ops``: the gated units (glu's halves and the two-tensor form), sparsemax and prelu,
  forward and backward;
* ``hooks``: what the dispatcher asks of a backend besides the ops.
"""

from __future__ import annotations

from gpuact.backends.numpy_backend.dtypes import result_dtype_of
from gpuact.backends.numpy_backend.elementwise_ops import elementwise, elementwise_grad
from gpuact.backends.numpy_backend.hooks import (
    accept,
    accept_operand,
    accept_out,
    as_mask,
    as_param_array,
    copy,
    overlap,
    owns,
    scope,
    unavailable_reason,
)
from gpuact.backends.numpy_backend.pool import THREADS, compiled_parallel_min
from gpuact.backends.numpy_backend.shaped_ops import (
    gated,
    gated_grad,
    glu,
    glu_grad,
    prelu,
    prelu_grad,
    sparsemax,
    sparsemax_grad,
)
from gpuact.backends.numpy_backend.softmax_ops import softmax, softmax_grad

__all__ = [
    "THREADS",
    "accept",
    "accept_operand",
    "accept_out",
    "as_mask",
    "as_param_array",
    "compiled_parallel_min",
    "copy",
    "elementwise",
    "elementwise_grad",
    "gated",
    "gated_grad",
    "glu",
    "glu_grad",
    "overlap",
    "owns",
    "prelu",
    "prelu_grad",
    "result_dtype_of",
    "scope",
    "softmax",
    "softmax_grad",
    "sparsemax",
    "sparsemax_grad",
    "unavailable_reason",
]
