"""Inputs the one call path must treat alike on every route (issue 19's input-kind cases).

* A backward given a ``dy`` that is not an array gets ``TypeError`` (it used to reach the
  backend as None and fail there with ``AttributeError``).
* A writeable ``out`` with a zero stride (``np.broadcast_to`` made writeable, ``as_strided``) is
  accepted by every forward and backward, on the compiled and the ufunc path alike, small and
  blocked: each location of it holds one of the values written there (the last writer wins, as in
  a NumPy ufunc). The compiled kernels refused it on the blocked path ("ndarray is not
  C-contiguous") while the ufunc path took it.
* Masked arrays refuse ``stream=`` (their docstring promised it; the stream was ignored).
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import gpuact
from gpuact.layers import PReLU

X = np.linspace(-3.0, 3.0, 8, dtype=np.float32)

BACKWARDS = {
    "gelu": lambda dy, x: gpuact.backward.gelu(dy, x),
    "relu with bias": lambda dy, x: gpuact.backward.relu(dy, x, bias=np.float32(0.5)),
    "softmax": lambda dy, x: gpuact.backward.softmax(dy, x),
    "log_softmax": lambda dy, x: gpuact.backward.log_softmax(dy, x),
    "sparsemax": lambda dy, x: gpuact.backward.sparsemax(dy, x),
    "glu": lambda dy, x: gpuact.backward.glu(dy, x),
    "prelu": lambda dy, x: PReLU(0.25).backward(dy, x),
}


@pytest.mark.parametrize("name", sorted(BACKWARDS))
@pytest.mark.parametrize("dy", [None, object(), "not an array"], ids=["None", "object", "str"])
def test_a_dy_that_is_not_an_array_is_a_type_error(name, dy):
    with pytest.raises(TypeError, match="dy|real numbers"):
        BACKWARDS[name](dy, X)


def _zero_stride(n, dtype=np.float32):
    return as_strided(np.zeros(1, dtype), (n,), (0,))


def _cases(n):
    x = np.linspace(-3.0, 3.0, n, dtype=np.float32)
    dy = np.linspace(0.5, 1.5, n, dtype=np.float32)
    half_dy = dy[: n // 2]
    return {
        "gelu": (lambda out: gpuact.gelu(x, out=out), lambda: gpuact.gelu(x)),
        "gelu bias": (lambda out: gpuact.gelu(x, bias=1.0, out=out), lambda: gpuact.gelu(x, bias=1.0)),
        "softmax": (lambda out: gpuact.softmax(x, out=out), lambda: gpuact.softmax(x)),
        "sparsemax": (lambda out: gpuact.sparsemax(x, out=out), lambda: gpuact.sparsemax(x)),
        "prelu": (lambda out: PReLU(0.25)(x, out=out), lambda: PReLU(0.25)(x)),
        "backward.gelu": (lambda out: gpuact.backward.gelu(dy, x, out=out), lambda: gpuact.backward.gelu(dy, x)),
        "backward.gelu bias": (
            lambda out: gpuact.backward.gelu(dy, x, bias=1.0, out=out),
            lambda: gpuact.backward.gelu(dy, x, bias=1.0),
        ),
        "backward.softmax": (
            lambda out: gpuact.backward.softmax(dy, x, out=out),
            lambda: gpuact.backward.softmax(dy, x),
        ),
        "backward.glu": (lambda out: gpuact.backward.glu(half_dy, x, out=out), lambda: gpuact.backward.glu(half_dy, x)),
        "backward.prelu": (
            lambda out: PReLU(0.25).backward(dy, x, out=out),
            lambda: PReLU(0.25).backward(dy, x),
        ),
    }


@pytest.mark.parametrize("n", [8, 300_000], ids=["small", "blocked"])
@pytest.mark.parametrize("native", ["compiled", "ufunc"])
def test_a_zero_stride_out_is_accepted_by_every_function(n, native, monkeypatch):
    if native == "ufunc":
        from gpuact.backends import _native

        monkeypatch.setattr(_native, "_state", {"lib": None, "reason": "turned off by the test"})
    for name, (into, fresh) in _cases(n).items():
        want = fresh()
        out = _zero_stride(want.size)
        returned = into(out)
        assert returned is out, name
        assert np.isin(out[0], want), f"{name}: {out[0]} is none of the values written"


def test_masked_arrays_refuse_a_stream():
    x = np.ma.masked_array(X, mask=X < 0)
    with pytest.raises(TypeError, match="stream"):
        gpuact.relu(x, stream=object())
    with pytest.raises(TypeError, match="stream"):
        gpuact.softmax(x, stream=object())
