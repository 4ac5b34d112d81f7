"""One module per execution path: ``numpy_backend``, ``cupy_backend``, ``numba_backend``.

Each exposes the same functions, called by ``gpuact._dispatch`` with validated arguments:

``unavailable_reason() -> str | None``, ``owns(x) -> bool``, ``asarray(x)`` (zero-copy for CUDA
arrays), ``as_mask(mask, shape)``, ``as_param_array(alpha, shape, dtype)``, and the ops
``elementwise(op, x, params, out, dtype)``, ``softmax(x, axes, out, dtype, *, log, mask)``,
``glu(x, axis, out, dtype)``, ``sparsemax(x, axis, out, dtype)``, ``prelu(x, alpha, out, dtype)``.
The GPU backends also take a ``stream=`` keyword.
"""
