"""The Numba backend against the NumPy backend, on Numba device arrays.

Runs where Numba can run kernels: a GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
started by ``tests/test_numba_simulator.py``); skipped elsewhere. Inputs are small, the simulator
runs every GPU thread as Python. Calls pass ``backend="numba"`` except in the tests of detection.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from gpuact._ops import ELEMENTWISE_PARAMS
from gpuact.backends import numpy_backend as ref_backend

from .conftest import backend_unusable

pytestmark = pytest.mark.skipif(backend_unusable("numba") is not None, reason=str(backend_unusable("numba")))

FLOATS = (np.float16, np.float32, np.float64)
TOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
PARAMS = {
    "relu": [(0.0, 0.0, 0.0, math.inf), (0.3, 0.5, 0.0, 4.0), (0.1, -1.0, -math.inf, math.inf)],
    "elu": [(0.7,)], "leaky_relu": [(0.2,), (0.0,)], "celu": [(2.0,)], "hard_shrink": [(0.5,)],
    "soft_shrink": [(1.5,)], "threshold": [(0.3, -2.0)], "squareplus": [(4.0,), (0.0,)],
}
EDGES = [0.0, -0.0, 1e-7, -1e-7, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 6.0, 20.0, -20.0, 88.0, -88.0,
         1e4, -1e4, -1e5, math.inf, -math.inf, math.nan]


def dev(host):
    from numba import cuda

    return cuda.to_device(np.array(host, order="C", copy=True))


def host(a):
    return a.copy_to_host()


def assert_close(got, expected, dtype):
    tol = TOL[np.dtype(dtype)]
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol * 0.1,
                               equal_nan=True)


def device_array_type():
    from gpuact.backends import numba_backend

    return numba_backend._DeviceArray


def inputs(dtype, n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.array(EDGES), rng.normal(0, 4, n // 2), rng.uniform(-30, 30, n - n // 2)])
    with np.errstate(over="ignore"):
        return x.astype(dtype)


CASES = [(op, p) for op in ELEMENTWISE_PARAMS for p in PARAMS.get(op, [()])]


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op,params", CASES, ids=[f"{op}{p}" for op, p in CASES])
def test_elementwise_matches_numpy(op, params, dtype):
    x = inputs(dtype)
    expected = ref_backend.elementwise(op, x, params, None, np.dtype(dtype))
    got = gpuact._dispatch.elementwise(op, dev(x), params, backend="numba")
    assert isinstance(got, device_array_type())
    assert_close(host(got), expected, dtype)


def test_detected_without_backend_keyword():
    # Needs gpuact._dispatch to recognise the simulator's FakeCUDAArray too (no __cuda_array_interface__).
    y = gpuact.relu(dev(np.array([-1.0, 2.0], np.float32)))
    assert isinstance(y, device_array_type())
    np.testing.assert_array_equal(host(y), [0.0, 2.0])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_])
def test_integer_and_bool_inputs(dtype):
    x = np.array([0, 1, 2, 3, 100]).astype(dtype)
    y = gpuact.sigmoid(dev(x), backend="numba")
    assert y.dtype == np.float32
    assert_close(host(y), ref_backend.elementwise("sigmoid", x, (), None, np.dtype(np.float32)), np.float32)
    s = gpuact.softmax(dev(x.reshape(1, 5)), backend="numba")
    assert s.dtype == np.float32
    assert_close(host(s), ref_backend.softmax(x.reshape(1, 5), (1,), None, np.float32, log=False), np.float32)


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 2), (0, 3)])
def test_shapes(shape):
    x = np.random.default_rng(1).normal(0, 3, shape).astype(np.float32)
    y = gpuact.gelu(dev(x), backend="numba")
    assert tuple(y.shape) == shape
    assert_close(host(y), ref_backend.elementwise("gelu", x, (), None, np.dtype(np.float32)), np.float32)


def test_strided_views_in_and_out():
    base_host = np.random.default_rng(2).normal(0, 3, (12, 18)).astype(np.float32)
    base = dev(base_host)
    for select in (lambda a: a[::2, 1::3], lambda a: a[3:9, :], lambda a: a.T, lambda a: a[:, 5]):
        y = gpuact.mish(select(base), backend="numba")
        expected = ref_backend.elementwise("mish", np.ascontiguousarray(select(base_host)), (), None,
                                           np.dtype(np.float32))
        assert_close(host(y), expected, np.float32)
    # a non-contiguous out: every other column of a bigger array, the rest untouched
    x_host = base_host[:, :9].copy()
    big = dev(np.zeros((12, 18), np.float32))
    gpuact.softplus(dev(x_host), out=big[:, ::2], backend="numba")
    got = host(big)
    assert_close(got[:, ::2], ref_backend.elementwise("softplus", x_host, (), None, np.dtype(np.float32)),
                 np.float32)
    assert (got[:, 1::2] == 0).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_out_and_in_place(dtype):
    from numba import cuda

    x_host = inputs(dtype, 100, seed=3)
    expected = ref_backend.elementwise("elu", x_host, (0.7,), None, np.dtype(dtype))
    out = cuda.device_array(x_host.shape, dtype)
    y = gpuact.elu(dev(x_host), 0.7, out=out, backend="numba")
    assert y is out
    assert_close(host(out), expected, dtype)
    x = dev(x_host)
    assert gpuact.elu(x, 0.7, out=x, backend="numba") is x
    assert_close(host(x), expected, dtype)
    # in place along a strided view
    m = dev(x_host[:100].reshape(10, 10))
    v = m[:, ::3]
    gpuact.elu(v, 0.7, out=v, backend="numba")
    exp2 = x_host[:100].reshape(10, 10).copy()
    exp2[:, ::3] = ref_backend.elementwise("elu", np.ascontiguousarray(exp2[:, ::3]), (0.7,), None, np.dtype(dtype))
    assert_close(host(m), exp2, dtype)


def test_stream_keyword():
    from numba import cuda

    stream = cuda.stream()
    x_host = inputs(np.float32, 100)
    y = gpuact.sigmoid(dev(x_host), stream=stream, backend="numba")
    s = gpuact.softmax(dev(x_host.reshape(-1, 1)[:120].reshape(10, 12)), axis=0, stream=stream, backend="numba")
    stream.synchronize()
    assert_close(host(y), ref_backend.elementwise("sigmoid", x_host, (), None, np.dtype(np.float32)), np.float32)
    assert_close(host(s), ref_backend.softmax(x_host[:120].reshape(10, 12), (0,), None, np.float32, log=False),
                 np.float32)


class CudaArrayLike:
    """A stranger exposing only ``__cuda_array_interface__`` (as a PyTorch tensor would)."""

    def __init__(self, device_array):
        self._a = device_array

    @property
    def __cuda_array_interface__(self):
        from gpuact.backends import numba_backend

        if numba_backend.SIMULATOR:  # the simulator's arrays live in host memory and export none
            ai = self._a._ary.__array_interface__
            return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"],
                    "strides": ai["strides"], "version": 3, "stream": None}
        return self._a.__cuda_array_interface__


def test_cuda_array_interface_objects_zero_copy():
    x_host = inputs(np.float32, 50)
    d = dev(x_host)
    y = gpuact.tanh(CudaArrayLike(d), backend="numba")
    assert_close(host(y), ref_backend.elementwise("tanh", x_host, (), None, np.dtype(np.float32)), np.float32)
    # zero-copy: writing in place through the stranger changes the original device array
    gpuact.relu(CudaArrayLike(d), out=CudaArrayLike(d), backend="numba")
    assert_close(host(d), np.maximum(x_host, 0), np.float32)


def test_host_arrays_with_backend_numba_go_to_the_device():
    y = gpuact.relu(np.array([-1.0, 2.0], np.float32), backend="numba")
    assert isinstance(y, device_array_type())
    np.testing.assert_array_equal(host(y), [0.0, 2.0])


SOFTMAX_SHAPES = [(7,), (3, 70), (4, 5), (2, 3, 4), (2, 3, 2, 5), (1, 130, 2)]


def _axes_for(ndim):
    axes = [(a,) for a in range(ndim)]
    if ndim >= 2:
        axes += [(0, ndim - 1), tuple(range(ndim))]
    if ndim >= 3:
        axes += [(1, 2), (0, 2)]
    return axes


SOFTMAX_CASES = [(s, ax) for s in SOFTMAX_SHAPES for ax in _axes_for(len(s))]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axes", SOFTMAX_CASES, ids=[f"{s}-{a}" for s, a in SOFTMAX_CASES])
def test_softmax_axes(shape, axes, log):
    x = np.random.default_rng(5).normal(0, 3, shape).astype(np.float32)
    fn = gpuact.log_softmax if log else gpuact.softmax
    y = fn(dev(x), axis=axes if len(axes) > 1 else axes[0], backend="numba")
    assert_close(host(y), ref_backend.softmax(x, axes, None, np.float32, log=log), np.float32)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_softmax_dtypes_non_finite_and_long_rows(dtype):
    x = np.random.default_rng(6).normal(0, 3, (5, 100)).astype(dtype)
    x[1, :] = -np.inf  # all -inf: NaN
    x[2, ::3] = -np.inf  # -inf among finite: exactly 0
    x[3, 7] = np.nan
    x[4, 9] = np.inf
    for log in (False, True):
        for axis in (1, 0):
            y = gpuact._dispatch.softmax(dev(x), axis, log=log, backend="numba")
            assert_close(host(y), ref_backend.softmax(x, (axis,), None, np.dtype(dtype), log=log), dtype)
    y = host(gpuact.softmax(dev(x), backend="numba"))
    assert (y[2, ::3] == 0).all()


def test_softmax_masks():
    from gpuact.layers import Softmax

    x = np.random.default_rng(7).normal(0, 3, (4, 80)).astype(np.float32)
    x[3] = -np.inf
    mask = np.random.default_rng(8).random((4, 80)) > 0.3
    mask[1] = False  # fully masked row: all 0
    mask[3] = True  # unmasked all -inf row: NaN
    expected = ref_backend.softmax(x, (1,), None, np.float32, log=False, mask=mask)
    for m in (mask, dev(mask), dev(mask.astype(np.float32)), mask.tolist()):
        y = Softmax(axis=-1)(dev(x), mask=m, backend="numba")
        assert_close(host(y), expected, np.float32)
    # along axis 0, and a mask broadcast from one row (host and device)
    row = mask[0:1]
    exp0 = ref_backend.softmax(x, (0,), None, np.float32, log=False, mask=np.broadcast_to(row, x.shape))
    for m in (row, dev(row), dev(row[0])):
        assert_close(host(Softmax(axis=0)(dev(x), mask=m, backend="numba")), exp0, np.float32)


def test_softmax_out_and_in_place():
    from numba import cuda

    x = np.random.default_rng(9).normal(0, 3, (6, 5, 4)).astype(np.float32)
    for axis in (-1, 1, (0, 2)):
        axes = tuple(sorted(a % 3 for a in (axis if isinstance(axis, tuple) else (axis,))))
        expected = ref_backend.softmax(x, axes, None, np.float32, log=False)
        out = cuda.device_array(x.shape, np.float32)
        assert gpuact.softmax(dev(x), axis=axis, out=out, backend="numba") is out
        assert_close(host(out), expected, np.float32)
        d = dev(x)
        gpuact.softmax(d, axis=axis, out=d, backend="numba")
        assert_close(host(d), expected, np.float32)
        big = dev(np.zeros((6, 5, 8), np.float32))
        gpuact.softmax(dev(x), axis=axis, out=big[:, :, ::2], backend="numba")
        assert_close(host(big)[:, :, ::2], expected, np.float32)
    # a strided input
    d = dev(np.random.default_rng(10).normal(0, 3, (8, 10)).astype(np.float32))
    for axis in (0, 1):
        assert_close(host(gpuact.log_softmax(d[::2, 1:], axis=axis, backend="numba")),
                     ref_backend.softmax(np.ascontiguousarray(host(d)[::2, 1:]), (axis,), None, np.float32, log=True),
                     np.float32)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_glu(dtype):
    x = np.random.default_rng(11).normal(0, 3, (4, 6, 2)).astype(dtype)
    for axis in (0, 1, 2, -1):
        got = host(gpuact.glu(dev(x), axis=axis, backend="numba"))
        assert_close(got, ref_backend.glu(x, axis % 3, None, np.dtype(dtype)), dtype)
    d = dev(x)
    assert_close(host(gpuact.glu(d[:, ::2], axis=0, backend="numba")),
                 ref_backend.glu(np.ascontiguousarray(x[:, ::2]), 0, None, np.dtype(dtype)), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_sparsemax(dtype):
    x = np.random.default_rng(12).normal(0, 1, (5, 7, 3)).astype(dtype)
    x[0, 0, :] = 0.5  # ties
    x[1, :, 0] = np.nan
    x[2, 2, 1] = -np.inf
    for axis in (0, 1, 2):
        got = host(gpuact.sparsemax(dev(x), axis=axis, backend="numba"))
        assert_close(got, ref_backend.sparsemax(x, axis, None, np.dtype(dtype)), dtype)
    d = dev(x)
    assert_close(host(gpuact.sparsemax(d, axis=1, out=d, backend="numba")),
                 ref_backend.sparsemax(x, 1, None, np.dtype(dtype)), dtype)
    assert_close(host(gpuact.sparsemax(dev(x)[:, ::2], axis=1, backend="numba")),
                 ref_backend.sparsemax(np.ascontiguousarray(x[:, ::2]), 1, None, np.dtype(dtype)), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_prelu(dtype):
    from gpuact.layers import PReLU

    x = np.random.default_rng(13).normal(0, 3, (3, 4, 5)).astype(dtype)
    for alpha in (0.25, np.linspace(0.1, 0.5, 5), np.full((4, 1), 0.3), np.linspace(0, 1, 60).reshape(3, 4, 5)):
        expected = ref_backend.prelu(x, ref_backend.as_param_array(alpha, x.shape, np.dtype(dtype)), None,
                                     np.dtype(dtype))
        assert_close(host(PReLU(alpha)(dev(x), backend="numba")), expected, dtype)
        compute = np.float64 if dtype is np.float64 else np.float32
        assert_close(host(PReLU(dev(np.asarray(alpha, compute)))(dev(x), backend="numba")), expected, dtype)


def test_empty_inputs_for_the_fused_ops():
    x = np.zeros((0, 4), np.float32)
    assert host(gpuact.softmax(dev(x), backend="numba")).shape == (0, 4)
    assert host(gpuact.glu(dev(x), backend="numba")).shape == (0, 2)
    assert host(gpuact.sparsemax(dev(x), backend="numba")).shape == (0, 4)


def test_bad_out_is_refused_before_work():
    from numba import cuda

    x = dev(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError):
        gpuact.relu(x, out=cuda.device_array((4, 3), np.float32), backend="numba")
    with pytest.raises(TypeError):
        gpuact.relu(x, out=cuda.device_array((3, 4), np.float64), backend="numba")
    with pytest.raises(TypeError):
        gpuact.relu(x, out=np.empty((3, 4), np.float32), backend="numba")


# --- the launch contract (tests/numba_launch_checks.py checks every launch's types) ------------


def _stream_calls(x, mask):
    """One call of every public function, each taking ``stream=``."""
    from gpuact.layers import PReLU, Softmax

    return {
        "relu": lambda s: gpuact.relu(x, stream=s),
        "gelu_strided": lambda s: gpuact.gelu(x[:, ::2], stream=s),
        "softmax": lambda s: gpuact.softmax(x, axis=0, stream=s),
        "log_softmax": lambda s: gpuact.log_softmax(x, axis=(0, 1), stream=s),
        "masked_softmax": lambda s: Softmax(axis=-1)(x, mask=mask, stream=s),
        "host_mask_softmax": lambda s: Softmax(axis=-1)(x, mask=host(mask), stream=s),
        "glu": lambda s: gpuact.glu(x, axis=1, stream=s),
        "sparsemax": lambda s: gpuact.sparsemax(x, axis=1, stream=s),
        "prelu": lambda s: PReLU(np.linspace(0, 1, x.shape[1]))(x, stream=s),
        "host_input": lambda s: gpuact.sigmoid(host(x), backend="numba", stream=s),
    }


@pytest.mark.parametrize("name", list(_stream_calls(None, None)))
def test_every_launch_of_a_call_runs_on_its_stream(name):
    from numba import cuda

    from tests import numba_launch_checks as checks

    if not __import__("gpuact.backends.numba_backend", fromlist=["x"]).SIMULATOR:
        pytest.skip("the launch recorder runs under the CUDA simulator")
    x = dev(np.random.default_rng(0).normal(0, 2, (6, 8)).astype(np.float32))
    mask = dev(np.random.default_rng(1).random((6, 8)) > 0.3)
    stream = cuda.stream()
    mark = len(checks.LAUNCHES)
    y = _stream_calls(x, mask)[name](stream)
    launched = checks.LAUNCHES[mark:]
    assert launched, "no kernel launched"
    assert all(launch.stream is stream for launch in launched), [(launch.kernel, launch.stream) for launch in launched]
    assert y.stream is stream  # the result was allocated on the call's stream


class _ProtocolStream:
    """A stream of another library: only the CUDA stream protocol."""

    def __init__(self, handle):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


def test_a_foreign_stream_object_is_taken_by_its_handle():
    from tests import numba_launch_checks as checks

    x = dev(np.linspace(-3, 3, 12, dtype=np.float32))
    mark = len(checks.LAUNCHES)
    gpuact.relu(x, stream=_ProtocolStream(1234))
    gpuact.softmax(x, stream=_ProtocolStream(1234))
    streams = {id(launch.stream) for launch in checks.LAUNCHES[mark:]}
    assert len(streams) == 1 and 0 not in streams  # one wrapper per handle, not the default stream
    with pytest.raises(TypeError, match="stream"):
        gpuact.relu(x, stream="not a stream")


def test_the_launch_checker_catches_a_mistyped_launch():
    from tests import numba_launch_checks as checks

    from gpuact.backends import numba_backend
    from gpuact.backends._numba import kernels as K

    kern = numba_backend._kernel(("relu", np.dtype(np.float32), np.dtype(np.float32), 0),
                                 lambda: K.elementwise_contig("relu", np.float32),
                                 lambda: K.elementwise_contig_signature(np.float32, np.float32))
    x = dev(np.ones((4, 4), np.float32))
    y = dev(np.ones(16, np.float32))
    p = [np.float32(0)] * 4
    with pytest.raises(checks.LaunchSignatureError, match="argument 0"):
        kern[1, 32, 0](x[:, ::2], y, np.int64(8), *p)  # strided where the signature says C
    with pytest.raises(checks.LaunchSignatureError, match="argument 3"):
        kern[1, 32, 0](y, y, np.int64(16), np.float64(0), *p[1:])  # float64 for a float32 parameter


def test_no_performance_warning_for_small_launches():
    import warnings

    x = dev(np.linspace(-3, 3, 64, dtype=np.float32).reshape(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpuact.relu(x, backend="numba")
        gpuact.softmax(x, axis=0, backend="numba")
        gpuact.softmax(x, backend="numba")
