"""The Numba backend against the NumPy backend, on Numba device arrays.

Runs where Numba can run kernels: a GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
started by ``tests/test_numba_simulator.py``); skipped elsewhere. Inputs are small, the simulator
runs every GPU thread as Python. Calls pass ``backend="numba"`` except in the tests of detection.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import gpuact
from gpuact._contract.ops import ELEMENTWISE_PARAMS
from gpuact.backends import numpy_backend as ref_backend
from tests import reference

from .conftest import CUDASIM, backend_unusable

pytestmark = pytest.mark.skipif(backend_unusable("numba") is not None, reason=str(backend_unusable("numba")))

FLOATS = (np.float16, np.float32, np.float64)
TOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
PARAMS = reference.with_derivative_ops(
    {
        "relu": [(0.0, 0.0, 0.0, math.inf), (0.3, 0.5, 0.0, 4.0), (0.1, -1.0, -math.inf, math.inf)],
        "elu": [(0.7,)],
        "leaky_relu": [(0.2,), (0.0,)],
        "celu": [(2.0,)],
        "hard_shrink": [(0.5,)],
        "soft_shrink": [(1.5,)],
        "threshold": [(0.3, -2.0)],
        "squareplus": [(4.0,), (0.0,)],
    }
)
EDGES = [
    0.0,
    -0.0,
    1e-7,
    -1e-7,
    0.5,
    -0.5,
    1.0,
    -1.0,
    2.0,
    -2.0,
    3.0,
    -3.0,
    6.0,
    20.0,
    -20.0,
    88.0,
    -88.0,
    1e4,
    -1e4,
    -1e5,
    math.inf,
    -math.inf,
    math.nan,
]


def dev(host):
    from numba import cuda

    return cuda.to_device(np.array(host, order="C", copy=True))


def host(a):
    return a.copy_to_host()


def assert_close(got, expected, dtype):
    tol = TOL[np.dtype(dtype)]
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_allclose(
        got.astype(np.float64), expected.astype(np.float64), rtol=tol, atol=tol * 0.1, equal_nan=True
    )


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
    got = gpuact._entry.elementwise(op, dev(x), params, backend="numba")
    assert isinstance(got, device_array_type())
    assert_close(host(got), expected, dtype)


def test_detected_without_backend_keyword():
    # Needs gpuact.backends.detect_backend to recognise the simulator's FakeCUDAArray too (no __cuda_array_interface__).
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
        expected = ref_backend.elementwise(
            "mish", np.ascontiguousarray(select(base_host)), (), None, np.dtype(np.float32)
        )
        assert_close(host(y), expected, np.float32)
    # a non-contiguous out: every other column of a bigger array, the rest untouched
    x_host = base_host[:, :9].copy()
    big = dev(np.zeros((12, 18), np.float32))
    gpuact.softplus(dev(x_host), out=big[:, ::2], backend="numba")
    got = host(big)
    assert_close(got[:, ::2], ref_backend.elementwise("softplus", x_host, (), None, np.dtype(np.float32)), np.float32)
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
    assert_close(
        host(s), ref_backend.softmax(x_host[:120].reshape(10, 12), (0,), None, np.float32, log=False), np.float32
    )


class CudaArrayLike:
    """A stranger exposing only ``__cuda_array_interface__`` (as a PyTorch tensor would)."""

    def __init__(self, device_array):
        self._a = device_array

    @property
    def __cuda_array_interface__(self):
        from gpuact.backends import numba_backend

        if numba_backend.SIMULATOR:  # the simulator's arrays live in host memory and export none
            ai = self._a._ary.__array_interface__
            return {
                "shape": ai["shape"],
                "typestr": ai["typestr"],
                "data": ai["data"],
                "strides": ai["strides"],
                "version": 3,
                "stream": None,
            }
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
            y = gpuact._entry.softmax(dev(x), axis, log=log, backend="numba")
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
        assert_close(
            host(gpuact.log_softmax(d[::2, 1:], axis=axis, backend="numba")),
            ref_backend.softmax(np.ascontiguousarray(host(d)[::2, 1:]), (axis,), None, np.float32, log=True),
            np.float32,
        )


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_glu(dtype):
    x = np.random.default_rng(11).normal(0, 3, (4, 6, 2)).astype(dtype)
    for axis in (0, 1, 2, -1):
        got = host(gpuact.glu(dev(x), axis=axis, backend="numba"))
        assert_close(got, ref_backend.glu(x, axis % 3, None, np.dtype(dtype)), dtype)
    d = dev(x)
    assert_close(
        host(gpuact.glu(d[:, ::2], axis=0, backend="numba")),
        ref_backend.glu(np.ascontiguousarray(x[:, ::2]), 0, None, np.dtype(dtype)),
        dtype,
    )


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
    assert_close(
        host(gpuact.sparsemax(d, axis=1, out=d, backend="numba")),
        ref_backend.sparsemax(x, 1, None, np.dtype(dtype)),
        dtype,
    )
    assert_close(
        host(gpuact.sparsemax(dev(x)[:, ::2], axis=1, backend="numba")),
        ref_backend.sparsemax(np.ascontiguousarray(x[:, ::2]), 1, None, np.dtype(dtype)),
        dtype,
    )


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_prelu(dtype):
    from gpuact.layers import PReLU

    x = np.random.default_rng(13).normal(0, 3, (3, 4, 5)).astype(dtype)
    for alpha in (0.25, np.linspace(0.1, 0.5, 5), np.full((4, 1), 0.3), np.linspace(0, 1, 60).reshape(3, 4, 5)):
        expected = ref_backend.prelu(
            x, ref_backend.as_param_array(alpha, x.shape, np.dtype(dtype)), None, np.dtype(dtype)
        )
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
        # the fused bias and the backward (tests/test_numba_backward.py checks their values)
        "gelu_bias": lambda s: gpuact.gelu(x, bias=x[0], stream=s),
        "gelu_bias_strided": lambda s: gpuact.gelu(x[:, ::2], bias=x[:, :1], stream=s),
        "softmax_bias": lambda s: gpuact.softmax(x, axis=0, bias=x[:, :1], stream=s),  # a strided bias: copied
        "relu_grad": lambda s: gpuact.backward.relu(x, x, stream=s),
        "gelu_grad_bias": lambda s: gpuact.backward.gelu(x, x, bias=x[0], stream=s),
        "gelu_grad_strided": lambda s: gpuact.backward.gelu(x[:, ::2], x[:, 1::2], bias=x[1, ::2], stream=s),
        "softmax_grad": lambda s: gpuact.backward.softmax(x, x, axis=(0, 1), bias=x[0], stream=s),
        "masked_softmax_grad": lambda s: Softmax(axis=0).backward(x, x, mask=mask, stream=s),
        "log_softmax_grad": lambda s: gpuact.backward.log_softmax(x[:, ::2], x[:, ::2], stream=s),
        "sparsemax_grad": lambda s: gpuact.backward.sparsemax(x, x, axis=0, stream=s),
        "glu_grad": lambda s: gpuact.backward.glu(x[:, :4], x, axis=1, stream=s),
        "prelu_grad": lambda s: PReLU(np.linspace(0, 1, x.shape[1])).backward(x, x, stream=s),
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
    from gpuact.backends import numba_backend
    from gpuact.backends._numba import kernels as K
    from tests import numba_launch_checks as checks

    kern = numba_backend._kernel(
        ("relu", np.dtype(np.float32), np.dtype(np.float32), 0),
        lambda: K.elementwise_contig("relu", np.float32),
        lambda: K.elementwise_contig_signature(np.float32, np.float32),
    )
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


# --- operands of other libraries: ordered after the streams that produced them -----------------


class _Produced(CudaArrayLike):
    """A foreign array whose ``__cuda_array_interface__`` names the stream that produced it."""

    def __init__(self, device_array, handle):
        super().__init__(device_array)
        self.handle = handle

    @property
    def __cuda_array_interface__(self):
        desc = dict(CudaArrayLike.__cuda_array_interface__.fget(self))  # type: ignore[attr-defined]
        desc["stream"] = self.handle
        return desc


_KEEP_STREAMS: list = []
_FAKE_HANDLES = itertools.count(0x5000)


def _producer_handle():
    """A stream handle for an interface: a real stream's on a GPU, a number under the simulator
    (which has no handles: the backend stands a stream object in for each)."""
    from numba import cuda

    if _backend().SIMULATOR:
        return next(_FAKE_HANDLES)
    stream = cuda.stream()
    _KEEP_STREAMS.append(stream)
    return int(stream.handle.value)


class _EventLog:
    """Stands in for ``numba_backend._event``: each record and wait, with the number of kernel
    launches before it (``tests/numba_launch_checks.py``), passed on to a real event."""

    def __init__(self):
        self.entries: list = []

    def __call__(self):
        from numba import cuda

        from tests import numba_launch_checks as checks

        real, log = cuda.event() if _backend().SIMULATOR else cuda.event(timing=False), self.entries

        class Logged:
            def record(self, stream=0):
                log.append(("record", stream, len(checks.LAUNCHES)))
                real.record(stream)

            def wait(self, stream=0):
                log.append(("wait", stream, len(checks.LAUNCHES)))
                real.wait(stream)

        return Logged()


def _operand_calls():
    """(call on x and the operands, the operands' names) of every family that takes an operand."""
    from gpuact.layers import Softmax

    nb = {"backend": "numba"}  # an object with only an interface goes to CuPy by default
    return {
        "relu_grad-dy": (lambda x, o: gpuact.backward.relu(o["dy"], x, **nb), ("dy",)),
        "gelu-bias": (lambda x, o: gpuact.gelu(x, bias=o["bias"], **nb), ("bias",)),
        "softmax_grad-dy-bias": (
            lambda x, o: gpuact.backward.softmax(o["dy"], x, axis=0, bias=o["bias"], **nb),
            ("dy", "bias"),
        ),
        "masked_softmax-mask": (lambda x, o: Softmax(axis=-1)(x, mask=o["mask"], **nb), ("mask",)),
        "prelu-alpha": (lambda x, o: gpuact._entry.prelu(x, o["alpha"], **nb), ("alpha",)),
        "relu-out": (lambda x, o: gpuact.relu(x, out=o["out"], **nb), ("out",)),
        "sparsemax_grad-dy-out": (
            lambda x, o: gpuact.backward.sparsemax(o["dy"], x, out=o["out"], **nb),
            ("dy", "out"),
        ),
    }


@pytest.mark.parametrize("call", list(_operand_calls()))
def test_every_operand_is_ordered_after_its_producer_stream(call, monkeypatch):
    """Issue 21: an operand from another library (dy, bias, mask, alpha, out: an object with a
    ``__cuda_array_interface__`` naming a stream) is read after its producer's work: the launch
    stream (x's producer here) waits for an event recorded on that stream, before any kernel of
    the call is launched, and the host is never synchronized. The simulator runs every launch in
    order, so it cannot see a missing wait itself: the test checks the waits."""
    from tests import numba_launch_checks as checks

    nb = _backend()
    log = _EventLog()
    monkeypatch.setattr(nb, "_event", log, raising=False)
    fn, names = _operand_calls()[call]
    rng = np.random.default_rng(30)
    x_host = rng.normal(0, 2, (6, 8)).astype(np.float32)
    arrays = {
        "dy": rng.normal(0, 1, (6, 8)).astype(np.float32),
        "bias": rng.normal(0, 1, (8,)).astype(np.float32),
        "mask": rng.random((6, 8)) > 0.3,
        "alpha": np.linspace(0, 1, 8).astype(np.float32),
        "out": np.zeros((6, 8), np.float32),
    }
    hx = _producer_handle()
    handles = {name: _producer_handle() for name in names}
    operands = {name: _Produced(dev(arrays[name]), handles[name]) for name in names}
    mark = len(checks.LAUNCHES)
    fn(_Produced(dev(x_host), hx), operands)
    assert len(checks.LAUNCHES) > mark, "nothing was launched"
    launch = nb._external_streams[hx]
    assert all(entry.stream is launch for entry in checks.LAUNCHES[mark:])
    for name in names:
        producer = nb._external_streams.get(handles[name])
        pairs = [
            (a, b)
            for a, b in zip(log.entries, log.entries[1:])
            if a[:2] == ("record", producer) and b[:2] == ("wait", launch)
        ]
        assert pairs, f"{name}: no event recorded on its producer stream and waited for on the launch: {log.entries}"
        assert pairs[0][1][2] == mark, f"{name}: the wait came after a launch of the call"


# ---------------------------------------------------------------------------------------------
# Memory: the per-stream pool (gpuact/backends/_numba/pool.py)


def _pool_calls(x, xs, mask, dy):
    """Every family, with a result to drop: softmax split over blocks (``split_small``), layout
    copies (strided inputs, non-adjacent axes), masks from the host and the device, a host alpha."""
    from gpuact.layers import PReLU, Softmax

    return [
        lambda: gpuact.relu(x),
        lambda: gpuact.gelu(xs),
        lambda: gpuact.gelu(x, bias=x[0]),
        lambda: gpuact.softmax(x, axis=1),
        lambda: gpuact.log_softmax(xs, axis=0),
        lambda: Softmax(axis=-1)(x, mask=mask),
        lambda: Softmax(axis=-1)(x, mask=host(mask)),
        lambda: gpuact.softmax(x, axis=0, bias=x[:, :1]),
        lambda: gpuact.glu(x, axis=1),
        lambda: gpuact.sparsemax(x, axis=1),
        lambda: PReLU(np.linspace(0, 1, x.shape[1]))(x),
        lambda: gpuact.backward.gelu(dy, x, bias=x[0]),
        lambda: gpuact.backward.softmax(dy, x, axis=(0, 1)),
        lambda: gpuact.backward.sparsemax(dy, x, axis=0),
        lambda: gpuact.backward.glu(dy[:, :20], x, axis=1),
        lambda: gpuact.relu(x, out=dev(np.zeros(x.shape, np.float32))),  # the out made before counting
    ]


def test_repeated_calls_allocate_no_device_memory(split_small, monkeypatch):
    """Issue 21: once a stream's pool holds the blocks a workload needs, calls allocate nothing
    (``cuda.device_array`` and ``cuda.to_device`` are never called), so nothing of gpuact's goes to
    Numba's deallocation queue, whose flush frees with ``cuMemFree`` and so synchronizes the
    device. Results, workspaces of the split softmax, layout copies and masks all come from the
    pool and go back to it when dropped."""
    from numba import cuda

    nb = _backend()
    rng = np.random.default_rng(31)
    x = dev(rng.normal(0, 2, (4, 40)).astype(np.float32))
    xs = dev(rng.normal(0, 2, (4, 80)).astype(np.float32))[:, ::2]
    mask = dev(rng.random((4, 40)) > 0.3)
    dy = dev(rng.normal(0, 1, (4, 40)).astype(np.float32))
    assert _softmax_plan((4, 40), 1).split  # the workspace path runs
    outs = [dev(np.zeros((4, 40), np.float32)) for _ in range(4)]
    calls = _pool_calls(x, xs, mask, dy)
    calls[-1] = lambda: gpuact.relu(x, out=outs.pop())
    for call in calls[:-1]:  # warm the pool
        call()
    allocations = []

    def counted(name, allocate):
        def allocation(*args, **kwargs):
            allocations.append((name, args[:1]))
            return allocate(*args, **kwargs)

        return allocation

    monkeypatch.setattr(cuda, "device_array", counted("device_array", cuda.device_array))
    monkeypatch.setattr(cuda, "to_device", counted("to_device", cuda.to_device))
    pool = getattr(nb, "_pool", None)
    before = pool and pool.POOL.allocations
    for _ in range(3):
        for call in calls:
            call()  # the result dropped at once
    assert not allocations, f"{len(allocations)} allocations, the first: {allocations[:3]}"
    assert (pool and pool.POOL.allocations) == before


def test_the_pool_reuses_a_block_only_on_its_stream_and_once_free():
    from numba import cuda

    nb = _backend()
    pool = nb._pool.Pool()
    s1, s2 = cuda.stream(), cuda.stream()
    a = pool.empty((100,), np.float32, s1)
    view = a[10:20]
    del a
    b = pool.empty((100,), np.float32, s1)  # a's block still has a live view
    assert pool.allocations == 2
    del b
    c = pool.empty((90,), np.float32, s2)  # another stream: never b's block
    assert pool.allocations == 3
    d = pool.empty((90,), np.float32, s1)  # b's block (same size class), ordered after b's work
    assert pool.allocations == 3
    assert d.stream is s1 and c.stream is s2 and tuple(d.shape) == (90,)
    del view, c, d
    e = pool.empty((0, 3), np.float64, s1)
    assert e.size == 0 and pool.allocations == 3
    assert pool.empty((), np.float16, 0).shape == ()
    streams = len(pool._streams)
    del s2
    import gc

    gc.collect()
    assert len(pool._streams) < streams  # the stream gone, its free blocks go too


# ---------------------------------------------------------------------------------------------
# N-D kernels: merged axes and the odometer walk (every rank, strides of every sign)


def _backend():
    from gpuact.backends import numba_backend

    return numba_backend


@pytest.fixture(params=[1, 3], ids=["grid1", "grid3"])
def sim_grid(request, monkeypatch):
    """Under the simulator, grids of 1 and 3 blocks: grid strides of 32 and 96 threads, so the
    odometer's digits carry in different patterns. On a GPU the grid is the device's."""
    nb = _backend()
    if nb.SIMULATOR:
        monkeypatch.setattr(nb, "_SIM_MAX_BLOCKS", request.param)
    return request.param


ND_VIEWS = {
    "transposed3": lambda a: a.transpose(2, 0, 1),
    "sliced3": lambda a: a[1:, ::2, 1::3],
    "rank4": lambda a: a.reshape(2, 3, 4, 10)[:, ::2, 1:, ::3],
    "rank5": lambda a: a.reshape(2, 3, 2, 2, 10).transpose(4, 0, 2, 1, 3),
    "column": lambda a: a[:, 3, :],
}


def _device_view(base_dev, base_host, select):
    """The device view of ``base_dev`` that ``select`` makes of ``base_host`` (NumPy slicing,
    transposes and reshapes of any rank, which Numba device arrays lack), and that host view."""
    nb = _backend()
    view = select(base_host)
    offset = view.__array_interface__["data"][0] - base_host.__array_interface__["data"][0]
    start = nb._flat(base_dev)[offset // base_host.itemsize :]
    return nb._view(start, view.shape, view.strides), view


@pytest.mark.parametrize("view", ND_VIEWS, ids=list(ND_VIEWS))
def test_elementwise_and_copies_over_strided_views(view, sim_grid):
    nb = _backend()
    base_host = np.random.default_rng(20).normal(0, 3, (6, 4, 10)).astype(np.float32)
    base = dev(base_host)
    src, src_host = _device_view(base, base_host, ND_VIEWS[view])
    expected = ref_backend.elementwise("softsign", np.ascontiguousarray(src_host), (), None, np.dtype(np.float32))
    assert_close(host(gpuact.softsign(src, backend="numba")), expected, np.float32)
    # strided in and strided out of another dtype (the copy kernel with a conversion)
    want = np.zeros((6, 4, 10), np.float16)
    out_base = dev(want)
    out, out_host = _device_view(out_base, want, ND_VIEWS[view])
    nb._copy(src, out, 0)
    out_host[...] = src_host
    np.testing.assert_array_equal(host(out_base), want)
    # softsign into the strided out, the rest untouched
    gpuact.softsign(src, out=_device_view(base, base_host, ND_VIEWS[view])[0], backend="numba")
    after = base_host.copy()
    ND_VIEWS[view](after)[...] = expected
    assert_close(host(base), after, np.float32)


class _HostStrided:
    """A CUDA-array-interface stand-in for a NumPy view of any strides (negative ones included),
    for the simulator, whose device memory is host memory."""

    def __init__(self, a):
        self._a = a
        ai = a.__array_interface__
        self.__cuda_array_interface__ = {
            "shape": ai["shape"],
            "typestr": ai["typestr"],
            "data": ai["data"],
            "strides": a.strides,
            "version": 3,
            "stream": None,
        }


def test_negative_strides_under_the_simulator(sim_grid):
    if not _backend().SIMULATOR:
        pytest.skip("Numba device arrays take no negative-step slices; a GPU run gets them from CuPy")
    rng = np.random.default_rng(21)
    base = rng.normal(0, 3, (5, 6, 7)).astype(np.float32)
    for select in (lambda a: a[::-1], lambda a: a[:, ::-2, ::3], lambda a: a[::-1].transpose(2, 1, 0)):
        view = select(base)
        y = gpuact.elu(_HostStrided(view), 0.5, backend="numba")
        assert_close(
            host(y),
            ref_backend.elementwise("elu", np.ascontiguousarray(view), (0.5,), None, np.dtype(np.float32)),
            np.float32,
        )
        # in place through a negative-stride out
        target = base.copy()
        gpuact.relu(_HostStrided(select(target)), out=_HostStrided(select(target)), backend="numba")
        expected = base.copy()
        select(expected)[...] = np.maximum(select(base), 0)
        np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize(
    "shape,axis", [((4, 6, 5), 1), ((1, 12, 7), 1), ((6, 9, 4), 0), ((3, 4, 10), 2), ((3, 4, 10), -1), ((50,), 0)]
)
def test_glu_layouts(shape, axis, sim_grid):
    x = np.random.default_rng(22).normal(0, 3, shape).astype(np.float32)
    assert_close(
        host(gpuact.glu(dev(x), axis=axis, backend="numba")),
        ref_backend.glu(x, axis % len(shape), None, np.dtype(np.float32)),
        np.float32,
    )


def test_prelu_broadcasts(sim_grid):
    x = np.random.default_rng(23).normal(0, 3, (3, 4, 5, 6)).astype(np.float32)
    xd = dev(x)
    xs, xs_host = _device_view(xd, x, lambda a: a[:, ::2].transpose(2, 0, 3, 1))  # a strided x
    for alpha in (0.2, np.linspace(0, 1, 6), np.linspace(0, 1, 4).reshape(4, 1, 1), np.ones((3, 1, 5, 1)) * 0.3):
        full = ref_backend.as_param_array(alpha, x.shape, np.dtype(np.float32))  # zero strides where it repeats
        expected = ref_backend.prelu(x, full, None, np.dtype(np.float32))
        assert_close(host(gpuact._entry.prelu(xd, alpha, backend="numba")), expected, np.float32)
        alpha_s = full[:, ::2].transpose(2, 0, 3, 1)  # zero strides, permuted like xs
        expected_s = ref_backend.prelu(np.ascontiguousarray(xs_host), alpha_s, None, np.dtype(np.float32))
        assert_close(
            host(gpuact._entry.prelu(xs, np.ascontiguousarray(alpha_s), backend="numba")), expected_s, np.float32
        )


# ---------------------------------------------------------------------------------------------
# softmax: the split across blocks, accuracy


def _softmax_plan(shape, axis):
    nb = _backend()
    from gpuact.backends._numba import plan as P

    outer, length, inner = nb._rows_layout(shape, (axis,))
    return P.softmax_plan(
        outer, length, inner, nb._sms(), block=nb._reduction_block(), max_grid=nb._reduction_max_grid()
    )


@pytest.fixture
def split_small(monkeypatch):
    """Makes small softmax inputs split across blocks (blocks of 16 threads, segments of a
    thread's worth, any tile count too few), so that the two-kernel path runs at simulator sizes,
    and on a GPU too (the tests assert the split). The simulator's time goes by blocks and
    barriers, hence few and small blocks."""
    from gpuact.backends._numba import plan as P

    monkeypatch.setattr(P, "MIN_SEGMENT_PER_THREAD", 1)
    monkeypatch.setattr(P, "MIN_BLOCKS_PER_SM", 64)
    monkeypatch.setattr(_backend(), "_reduction_block", lambda: 16)


SPLIT_CASES = [
    ((2, 40), 1, FLOATS),
    ((40, 2), 0, FLOATS),
    ((2, 12, 3), 1, (np.float32,)),
    ((1, 64), -1, (np.float32,)),
    ((24, 5), 0, (np.float32,)),
]
SPLIT_CASES = [(s, a, d) for s, a, dtypes in SPLIT_CASES for d in dtypes]


@pytest.mark.parametrize(
    "shape,axis,dtype", SPLIT_CASES, ids=[f"{s}-{a}-{np.dtype(d).name}" for s, a, d in SPLIT_CASES]
)
def test_softmax_split_across_blocks(shape, axis, dtype, split_small):
    axis %= len(shape)
    plan = _softmax_plan(shape, axis)
    assert plan.split, plan
    rng = np.random.default_rng(24)
    length = shape[axis]
    slices = rng.normal(0, 3, (math.prod(shape) // length, length))  # one row per slice
    slices[0, :] = -np.inf  # all -inf: NaN
    if slices.shape[0] > 1:
        slices[1, ::3] = -np.inf  # -inf among finite values: 0 (log: -inf)
    if slices.shape[0] > 3:
        slices[2, -5] = np.nan  # NaN in the last segment
        slices[3, 1] = np.inf  # +inf in the first: NaN throughout
    rest = tuple(d for i, d in enumerate(shape) if i != axis)
    x = np.ascontiguousarray(np.moveaxis(slices.reshape(rest + (length,)), -1, axis)).astype(dtype)
    for log in (False, True):
        got = host(gpuact._entry.softmax(dev(x), axis, log=log, backend="numba"))
        assert_close(got, ref_backend.softmax(x, (axis,), None, np.dtype(dtype), log=log), dtype)
    d = dev(x)  # in place
    gpuact._entry.softmax(d, axis, out=d, log=False, backend="numba")
    assert_close(host(d), ref_backend.softmax(x, (axis,), None, np.dtype(dtype), log=False), dtype)


def test_softmax_split_with_masks(split_small):
    from gpuact.layers import Softmax

    rng = np.random.default_rng(25)
    x = rng.normal(0, 3, (4, 40)).astype(np.float32)  # split along either axis (asserted below)
    x[3] = -np.inf
    mask = rng.random((4, 40)) > 0.3
    mask[1] = False  # fully masked: all 0
    mask[2, :30] = False  # the first segment fully masked, the last not
    mask[3] = True  # all -inf, unmasked: NaN
    assert _softmax_plan(x.shape, 1).split and _softmax_plan((40, 4), 0).split
    for axis, xx, mm in ((1, x, mask), (0, x.T.copy(), mask.T.copy())):
        expected = ref_backend.softmax(xx, (axis,), None, np.float32, log=False, mask=mm)
        assert_close(host(Softmax(axis=axis)(dev(xx), mask=mm, backend="numba")), expected, np.float32)


SPARSEMAX_SPLIT_CASES = [((2, 40), 1), ((40, 2), 0), ((2, 30, 3), 1), ((1, 64), -1)]


@pytest.mark.parametrize("passes", [1, 8])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", SPARSEMAX_SPLIT_CASES, ids=[f"{s}-{a}" for s, a in SPARSEMAX_SPLIT_CASES])
def test_sparsemax_split_across_blocks(shape, axis, dtype, passes, split_small, monkeypatch):
    """Issue 21: a long slice (here: any, with ``split_small``) is split over blocks as softmax's:
    the segments' maxima, ``passes`` search steps a launch each, the rest of the search a block
    per tile (passes=1 leaves it most of it), the segments written; special slices and in place."""
    from gpuact.backends._numba import plan as P

    monkeypatch.setattr(P, "SPARSEMAX_SPLIT_PASSES", passes)
    nb = _backend()
    axis %= len(shape)
    outer, length, inner = nb._rows_layout(shape, (axis,))
    plan, _ = P.sparsemax_plan(
        outer, length, inner, nb._sms(), 4, block=nb._reduction_block(), max_grid=nb._reduction_max_grid(), split=True
    )
    assert plan.split, plan
    rng = np.random.default_rng(26)
    slices = rng.normal(0, 2, (math.prod(shape) // length, length))
    slices[0, :] = -np.inf  # all -inf: NaN
    if slices.shape[0] > 1:
        slices[1, ::3] = -np.inf  # -inf among finite values: 0
    if slices.shape[0] > 3:
        slices[2, -5] = np.nan  # NaN in the last segment
        slices[3] = np.round(slices[3])  # ties
    rest = tuple(d for i, d in enumerate(shape) if i != axis)
    x = np.ascontiguousarray(np.moveaxis(slices.reshape(rest + (length,)), -1, axis)).astype(dtype)
    expected = ref_backend.sparsemax(x, axis, None, np.dtype(dtype))
    assert_close(host(gpuact._entry.sparsemax(dev(x), axis, backend="numba")), expected, dtype)
    d = dev(x)  # in place
    gpuact._entry.sparsemax(d, axis, out=d, backend="numba")
    assert_close(host(d), expected, dtype)


@pytest.mark.parametrize("passes", [1, 8])
@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", SPARSEMAX_SPLIT_CASES, ids=[f"{s}-{a}" for s, a in SPARSEMAX_SPLIT_CASES])
def test_sparsemax_backward_split_across_blocks(shape, axis, dtype, passes, split_small, monkeypatch):
    """The backward where the forward splits: the forward's split search, the support's sums of dy
    per segment, then dx; into dy and into x too."""
    from gpuact.backends._numba import plan as P

    monkeypatch.setattr(P, "SPARSEMAX_SPLIT_PASSES", passes)
    axis %= len(shape)
    rng = np.random.default_rng(27)
    x = rng.normal(0, 2, shape)
    x[(0,) * (len(shape) - 1)] = -np.inf  # a slice (or part of one) of -inf
    x = x.astype(dtype)
    dy = rng.normal(0, 1, shape).astype(dtype)
    expected = ref_backend.sparsemax_grad(dy, x, axis, None, np.dtype(dtype))
    got = gpuact._entry.sparsemax_grad(dev(dy), dev(x), axis, backend="numba")
    assert_close(host(got), expected, dtype)
    for into in ("dy", "x"):
        d_dy, d_x = dev(dy), dev(x)
        out = d_dy if into == "dy" else d_x
        gpuact._entry.sparsemax_grad(d_dy, d_x, axis, out=out, backend="numba")
        assert_close(host(out), expected, dtype)


def test_softmax_sums_are_compensated(monkeypatch):
    """One row, one block (no split): the max's thread sums 2**-24 terms onto its 1 (512 of them
    under the simulator, 64 on a GPU), where an uncompensated float32 sum rounds every addition
    away (1 + 2**-24 == 1): a relative error of 3e-5 (4e-6) that rtol=1e-6 sees."""
    from gpuact.backends._numba import plan as P

    monkeypatch.setattr(P, "MIN_BLOCKS_PER_SM", 0)  # never split
    length = 16384
    x = np.full((1, length), np.log(2.0**-24), np.float32)
    x[0, 0] = 0.0
    assert not _softmax_plan(x.shape, 1).split
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max())
    for log in (False, True):
        expected = (x64 - np.log(e.sum())) if log else e / e.sum()
        got = host(gpuact._entry.softmax(dev(x), 1, log=log, backend="numba")).astype(np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0 if not log else 1e-6)


def test_online_sum_device_function_is_compensated():
    nb = _backend()
    if not nb.SIMULATOR:
        pytest.skip("device functions are called from the host only under the simulator")
    from gpuact.backends._numba.scalar import device_functions

    online_add = device_functions(np.float32)["_online_add"]
    f32 = np.float32
    m, s, c = online_add(f32(-np.inf), f32(0), f32(0), f32(0), f32(1))
    with np.errstate(all="ignore"):
        for _ in range(4096):
            m, s, c = online_add(m, s, c, f32(0), f32(2.0**-24))
    assert s == 1  # the plain sum has stalled ...
    assert s + c == f32(1 + 4096 * 2.0**-24)  # ... the compensated one is exact


@pytest.mark.skipif(CUDASIM, reason="2**26 elements: a GPU's size, not the simulator's")
def test_long_softmax_columns_on_a_gpu():
    """The failure class seen on the CPU: softmax of zeros of shape (2**25, 2) along axis 0 gave
    twice the right value. Every column sums 2**25 ones."""
    from numba import cuda

    zeros = cuda.to_device(np.zeros((2**25, 2), np.float32))
    y = host(gpuact.softmax(zeros, axis=0, backend="numba"))
    np.testing.assert_allclose(y, 2.0**-25, rtol=1e-6)
    y = host(gpuact.log_softmax(cuda.to_device(np.zeros(2**25 + 3, np.float32)), backend="numba"))
    np.testing.assert_allclose(y, -np.log(2.0**25 + 3), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# sparsemax: the tau search


def _sparsemax_with(x, axis, **factory):
    """Runs ``sparsemax_tile`` built with ``factory`` options (e.g. bisection from the first step)
    on a contiguous x, as the backend launches it."""
    nb = _backend()
    from gpuact.backends._numba import kernels as K
    from gpuact.backends._numba import plan as P

    dtype = np.dtype(x.dtype)
    ft = K.compute_type(dtype)
    outer, length, inner = nb._rows_layout(x.shape, (axis,))
    plan, cached = P.sparsemax_plan(
        outer,
        length,
        inner,
        nb._sms(),
        np.dtype(ft).itemsize,
        block=nb._reduction_block(),
        max_grid=nb._reduction_max_grid(),
    )
    key = ("sparsemax-test", dtype, cached, tuple(sorted(factory.items())))
    kern = nb._kernel(
        key, lambda: K.sparsemax_tile(ft, cached, **factory), lambda: K.sparsemax_tile_signature(dtype, dtype)
    )
    xd = dev(x)
    y = nb._empty(x.shape, dtype, 0)
    nb._launch(kern, 0, 0, threads=plan.block, blocks=plan.grid)(
        nb._flat(xd), nb._flat(y), np.int64(outer * inner), np.int64(length), np.int64(inner)
    )
    return host(y)


def _sparsemax_inputs(dtype):
    rng = np.random.default_rng(26)
    n = 120
    rows = [
        rng.normal(0, 1, n),
        rng.normal(0, 0.01, n),
        rng.random(n),
        rng.standard_t(2, n) * 5,
        -np.arange(n) * 1e-3,
        -(2.0 ** -np.arange(n)),
        np.r_[np.zeros(5), -1e-6 * rng.random(n - 5)],
        np.r_[1e8, np.zeros(n - 1)],
        np.full(n, 0.5),
        np.r_[np.inf, np.zeros(n - 1)],
        np.full(n, -np.inf),
        np.r_[np.nan, np.zeros(n - 1)],
        np.r_[3.0, -np.inf, np.full(n - 2, 2.9999)],
    ]
    with np.errstate(over="ignore"):
        return np.array(rows).astype(dtype)


SEARCHES = [("default", d) for d in FLOATS] + [("bisection_first", np.float32), ("uncached", np.float32)]


@pytest.mark.parametrize("search,dtype", SEARCHES, ids=[f"{s}-{np.dtype(d).name}" for s, d in SEARCHES])
def test_sparsemax_tau_search(search, dtype, monkeypatch):
    x = _sparsemax_inputs(dtype)
    expected = ref_backend.sparsemax(x, 1, None, np.dtype(dtype))
    if search == "bisection_first":
        got = _sparsemax_with(x, 1, michelot_steps=0)
    else:
        if search == "uncached":
            from gpuact.backends._numba import plan as P

            monkeypatch.setattr(P, "SPARSEMAX_CACHE_BYTES", 0)
        got = host(gpuact.sparsemax(dev(x), axis=1, backend="numba"))
    assert_close(got, expected, dtype)
    finite = np.isfinite(got).all(axis=1)
    np.testing.assert_allclose(got[finite].astype(np.float64).sum(axis=1), 1, rtol=TOL[np.dtype(dtype)] * 10)
    # along axis 0: a tile of columns per block
    got0 = host(gpuact.sparsemax(dev(np.ascontiguousarray(x.T)), axis=0, backend="numba"))
    assert_close(got0, expected.T, dtype)


def test_sparsemax_long_slices():
    x = np.random.default_rng(27).normal(0, 2, (2, 3000)).astype(np.float32)
    assert_close(
        host(gpuact.sparsemax(dev(x), backend="numba")), ref_backend.sparsemax(x, 1, None, np.float32), np.float32
    )


# ---------------------------------------------------------------------------------------------
# warnings


def test_no_performance_warnings_from_small_grids(split_small):
    import warnings

    from gpuact.layers import Softmax

    x = dev(np.random.default_rng(28).normal(0, 3, (4, 10)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpuact.relu(x, backend="numba")
        gpuact.gelu(x[:, ::3], backend="numba")
        gpuact.softmax(x, backend="numba")
        gpuact.log_softmax(x, axis=0, backend="numba")
        Softmax(axis=-1)(x, mask=np.ones((4, 10), bool), backend="numba")
        gpuact.softmax(dev(np.zeros((1, 40), np.float32)), backend="numba")  # the split
        gpuact.glu(x, backend="numba")
        gpuact.sparsemax(x, backend="numba")
        gpuact._entry.prelu(x, 0.2, backend="numba")
