"""What every backend module implements: one signature per call family, and the hooks that take
a call's arrays in. ``gpuact._core`` calls these, with validated arguments, by keyword:

* ``x`` (and ``dy``) is an array of the backend's own kind (any strides, 0-d and empty included),
  of the input dtype, which may be integer or bool; ``dtype`` is the result dtype
  (float16/32/64).
* ``out`` is ``None`` or an array of the backend's kind with the result shape and ``dtype``; it
  may be ``x`` itself where the family allows (``gpuact._contract.calls``).
* ``params`` are Python floats in the order the op table (``gpuact._contract.ops``) gives.
* ``b`` (the gated units' two-tensor form) has ``x``'s kind, device, shape and dtype; ``out`` of
  its backward is ``None`` or a pair ``(da, db)`` sharing no memory, and the result is that pair.
* ``axes`` is a non-empty tuple of distinct, non-negative, sorted ints; ``axis`` one such int.
* ``stream`` is the launch stream ``accept`` resolved (the NumPy backend has none).

mypy checks each backend module against ``Backend`` (see the end of each module).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class Backend(Protocol):
    # ---- taking a call's arrays in
    def unavailable_reason(self) -> str | None: ...

    def owns(self, x: Any) -> bool: ...

    def accept(self, x: Any, stream: Any) -> tuple[Any, Any, Any]:
        """``(x as the backend's array, the launch stream, the foreign original or None)``."""
        ...

    def scope(self, x: Any, stream: Any) -> AbstractContextManager[Any]:
        """The device holding ``x`` and the launch stream made current for the rest of the call."""
        ...

    def accept_out(self, out: Any, x: Any, foreign: bool) -> Any: ...

    def accept_operand(self, a: Any, x: Any, foreign: bool, name: str) -> Any: ...

    def overlap(self, a: Any, b: Any) -> int:
        """``gpuact._contract.checks.OVERLAP_NONE``, ``OVERLAP_SAME`` or ``OVERLAP_PARTIAL``."""
        ...

    def copy(self, a: Any, stream: Any) -> Any: ...

    def as_mask(self, mask: Any, shape: Any, stream: Any) -> Any: ...

    def as_param_array(self, alpha: Any, shape: Any, dtype: Any, stream: Any) -> Any: ...

    # ---- the families, forward and backward: keyword signatures, as gpuact._core calls them
    def elementwise(
        self, *, op: str, x: Any, params: Any, out: Any, dtype: Any, stream: Any = ..., bias: Any = ...
    ) -> Any: ...

    def elementwise_grad(
        self, *, op: str, dy: Any, x: Any, params: Any, out: Any, dtype: Any, stream: Any = ..., bias: Any = ...
    ) -> Any: ...

    def softmax(
        self, *, x: Any, axes: Any, out: Any, dtype: Any, log: bool, mask: Any = ..., bias: Any = ..., stream: Any = ...
    ) -> Any: ...

    def softmax_grad(
        self,
        *,
        dy: Any,
        x: Any,
        axes: Any,
        out: Any,
        dtype: Any,
        log: bool,
        mask: Any = ...,
        bias: Any = ...,
        stream: Any = ...,
    ) -> Any: ...

    def glu(self, *, x: Any, axis: int, out: Any, dtype: Any, stream: Any = ..., gate: str = ...) -> Any: ...

    def glu_grad(
        self, *, dy: Any, x: Any, axis: int, out: Any, dtype: Any, stream: Any = ..., gate: str = ...
    ) -> Any: ...

    def gated(self, *, x: Any, b: Any, out: Any, dtype: Any, stream: Any = ..., gate: str = ...) -> Any: ...

    def gated_grad(
        self, *, dy: Any, x: Any, b: Any, out: Any, dtype: Any, stream: Any = ..., gate: str = ...
    ) -> tuple[Any, Any]: ...

    def sparsemax(self, *, x: Any, axis: int, out: Any, dtype: Any, stream: Any = ...) -> Any: ...

    def sparsemax_grad(self, *, dy: Any, x: Any, axis: int, out: Any, dtype: Any, stream: Any = ...) -> Any: ...

    def prelu(self, *, x: Any, alpha: Any, out: Any, dtype: Any, stream: Any = ...) -> Any: ...

    def prelu_grad(self, *, dy: Any, x: Any, alpha: Any, out: Any, dtype: Any, stream: Any = ...) -> Any: ...
