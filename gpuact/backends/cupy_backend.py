"""The CuPy path (issue 3): not written yet."""

import cupy  # noqa: F401  -- only imported once a CuPy array arrives or backend="cupy" is forced


def unavailable_reason():
    if not cupy.is_available():
        return "CuPy sees no usable CUDA device"
    return None


def owns(x):
    return isinstance(x, cupy.ndarray)


def asarray(x):
    return cupy.asarray(x)


def _not_yet(*args, **kwargs):
    raise NotImplementedError("the CuPy backend is not implemented yet")


elementwise = softmax = glu = sparsemax = prelu = as_mask = as_param_array = _not_yet
