"""The CuPy backend on a real GPU (skipped with the reason where none is usable)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact._contract.ops import ELEMENTWISE_OPS
from gpuact.backends import numpy_backend
from tests import reference
from tests.conftest import skip_unless_usable

pytestmark = pytest.mark.gpu

TOL = {np.float16: (1e-3, 1e-3), np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}
PARAMS = reference.with_derivative_ops(
    {
        "relu": (0.1, 0.5, 0.0, 6.0),
        "elu": (0.7,),
        "celu": (2.0,),
        "leaky_relu": (0.2,),
        "hard_shrink": (0.5,),
        "soft_shrink": (0.5,),
        "threshold": (1.0, -5.0),
        "squareplus": (4.0,),
    }
)
EDGE = [
    0.0,
    1e-7,
    -1e-7,
    20.0,
    -20.0,
    88.0,
    -88.0,
    1e4,
    -1e4,
    math.inf,
    -math.inf,
    math.nan,
    0.5,
    -0.5,
    1.0,
    -1.0,
    3.0,
    -3.0,
]


@pytest.fixture(autouse=True)
def _gpu():
    skip_unless_usable("cupy")


def _cp():
    import cupy

    return cupy


def _x(dtype, shape=(37, 129)):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 5, shape)
    x.flat[: len(EDGE)] = EDGE
    return x.astype(dtype)


def _close(got, want, dtype):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_op_and_dtype(op, dtype):
    cp = _cp()
    from gpuact.backends import cupy_backend

    x = _x(dtype)
    params = PARAMS.get(op, ())
    want = numpy_backend.elementwise(op, x, params, None, np.dtype(dtype))
    for view in (
        lambda a: a,
        lambda a: a[:, ::-2],
        lambda a: a.T,
        lambda a: a[1:, 3:],
    ):  # contiguous, strided, F, misaligned
        xd = view(cp.asarray(x))
        got = cupy_backend.elementwise(op, xd, params, None, np.dtype(dtype))
        assert isinstance(got, cp.ndarray)
        _close(got.get(), view(want), dtype)


def test_out_in_place_0d_empty_and_ints():
    cp = _cp()
    x = cp.asarray(_x(np.float32))
    ref = gpuact.sigmoid(x.get())
    out = cp.empty_like(x)
    assert gpuact.sigmoid(x, out=out) is out
    _close(out.get(), ref, np.float32)
    y = x.copy()
    gpuact.sigmoid(y, out=y)
    _close(y.get(), ref, np.float32)
    z = x.copy()
    gpuact.sigmoid(z[:, ::2], out=z[:, ::2])  # in place, non-contiguous
    _close(z.get()[:, ::2], ref[:, ::2], np.float32)
    assert gpuact.relu(cp.asarray(np.float32(-2.0))).shape == ()
    assert gpuact.relu(cp.zeros((0, 3), np.float32)).shape == (0, 3)
    r = gpuact.relu(cp.arange(-3, 3))
    assert r.dtype == np.float32
    _close(r.get(), np.maximum(np.arange(-3, 3), 0).astype(np.float32), np.float32)


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_softmax_every_axis(ndim, dtype):
    cp = _cp()
    shape = (5, 33, 7, 1030)[-ndim:] if ndim < 4 else (3, 5, 4, 33)
    x = _x(dtype, shape)
    xd = cp.asarray(x)
    axes = list(range(ndim)) + [tuple(range(ndim))] + ([(0, ndim - 1)] if ndim > 2 else [])
    for axis in axes:
        for log in (False, True):
            fn = gpuact.log_softmax if log else gpuact.softmax
            _close(fn(xd, axis=axis).get(), fn(x, axis=axis), dtype)
    _close(gpuact.softmax(xd[..., ::-1], axis=-1).get(), gpuact.softmax(x[..., ::-1], axis=-1), dtype)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 1000, 1024, 1025, 5000, 70000])
def test_softmax_lengths_and_mask(length):
    cp = _cp()
    x = _x(np.float32, (3, length))
    x[1] = -np.inf
    mask = np.random.default_rng(1).random(x.shape) > 0.3
    mask[2] = False
    layer = gpuact.layers.Softmax()
    _close(layer(cp.asarray(x), mask=cp.asarray(mask)).get(), layer(x, mask=mask), np.float32)
    _close(gpuact.softmax(cp.asarray(x)).get(), gpuact.softmax(x), np.float32)


def test_glu_sparsemax_prelu():
    cp = _cp()
    x = _x(np.float32, (6, 10))
    _close(gpuact.glu(cp.asarray(x), axis=0).get(), gpuact.glu(x, axis=0), np.float32)
    _close(gpuact.sparsemax(cp.asarray(x)).get(), gpuact.sparsemax(x), np.float32)
    alpha = np.linspace(0, 1, 10, dtype=np.float32)
    layer = gpuact.layers.PReLU(alpha)
    _close(layer(cp.asarray(x)).get(), layer(x), np.float32)


def test_non_default_stream():
    cp = _cp()
    x = cp.asarray(_x(np.float32, (64, 1000)))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = gpuact.silu(x)
        s = gpuact.softmax(x, axis=0)
    z = gpuact.gelu(x, stream=stream)
    stream.synchronize()
    _close(y.get(), gpuact.silu(x.get()), np.float32)
    _close(s.get(), gpuact.softmax(x.get(), axis=0), np.float32)
    _close(z.get(), gpuact.gelu(x.get()), np.float32)


def test_multi_device():
    cp = _cp()
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("one GPU only")
    with cp.cuda.Device(1):
        x = cp.asarray(_x(np.float32))
    y = gpuact.tanh(x)
    s = gpuact.softmax(x)
    assert y.device.id == 1 and s.device.id == 1
    _close(y.get(), gpuact.tanh(x.get()), np.float32)


@pytest.mark.slow
def test_more_than_2_31_elements():
    cp = _cp()
    n = 2**31 + 1000
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 3 * n * 2 + (1 << 30):
        pytest.skip("not enough GPU memory for 2**31 float16 elements")
    x = cp.full(n, -1.0, dtype=cp.float16)
    x[-5:] = 2.0
    y = gpuact.relu(x)
    assert float(y[-1]) == 2.0 and float(y[-6]) == 0.0
    del y
    s = gpuact.softmax(x[: 2**31].reshape(2**21, 1024))
    assert abs(float(s[0].sum()) - 1.0) < 1e-2
