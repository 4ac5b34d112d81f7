"""One module per execution path: ``numpy_backend``, ``cupy_backend``, ``numba_backend``.

Each exposes the same functions, called by ``gpuact._dispatch`` with validated arguments:

* ``unavailable_reason() -> str | None`` and ``owns(x) -> bool``;
* ``accept(x, stream) -> (array, launch_stream, foreign)``: ``x`` as the backend's array
  (zero-copy for CUDA arrays; host data copied to the device on the launch stream), the stream
  the call launches on (resolved from ``stream=``, else ``x``'s library's convention), and the
  original object when it is of a foreign kind (so the result goes back as that kind);
* ``scope(array, stream)``: a context manager making the array's device and the launch stream
  current, inside which every auxiliary array of the call is made;
* ``accept_out(out, x, foreign)``, ``overlap(a, b) -> 0 | 1 | 2`` (none, the same view, partly
  shared), ``copy(a, stream)``, ``as_mask(mask, shape, stream)``,
  ``as_param_array(alpha, shape, dtype, stream)``;
* the ops ``elementwise(op, x, params, out, dtype)``, ``softmax(x, axes, out, dtype, *, log,
  mask)``, ``glu(x, axis, out, dtype)``, ``sparsemax(x, axis, out, dtype)``,
  ``prelu(x, alpha, out, dtype)``, each with a ``stream=`` keyword (the launch stream; the NumPy
  backend ignores it).
"""
