"""The CuPy launch contract, on the CuPy stand-in (tests/cupy_standin): tests of the harness's own
checks (each must be able to fail), then of gpuact's contract with CuPy:

* an input on device 1 while device 0 is current: every launch and every array gpuact allocates
  is on device 1 (host masks and alphas included); an ``out`` on another device is refused with
  ``ValueError`` before any work;
* ``stream=s``: every launch and allocation of the call is on ``s``, also for an object that only
  has ``__cuda_stream__`` and for a NumPy input forced onto the CuPy backend;
* an ``out`` that partly overlaps the input gives the values of the NumPy path on a copy.

Runs only inside the stand-in run (``GPUACT_CUPY_STANDIN=1``; tests/test_cupy_standin.py starts it).
"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

import gpuact
from gpuact.layers import PReLU, Softmax
from tests import cupy_standin, reference
from tests.reference import assert_close
from tests.test_activations import CASES as ELEMENTWISE_CASES

STANDIN = os.environ.get("GPUACT_CUPY_STANDIN") == "1" and cupy_standin.installed()
pytestmark = [
    pytest.mark.cpu_proxy,
    pytest.mark.skipif(not STANDIN, reason="runs inside the CuPy stand-in run (tests/test_cupy_standin.py)"),
]

if STANDIN:
    import cupy as cp

    from tests.cupy_standin import LaunchContractError, recording


def _probe(source: str) -> types.ModuleType:
    """Code whose frames count as gpuact's (its module is named gpuact.*), for the harness's own tests."""
    mod = types.ModuleType("gpuact._standin_probe")
    exec(compile(source, "<gpuact._standin_probe>", "exec"), mod.__dict__)
    return mod


# ---------------------------------------------------------------------------------------------
# The harness


KERNELS = r"""
// a kernel made by a macro with ## pasting, like the softmax kernels: parsed after the preprocessor
#define GA_SCALE(DT, T)                                                                  \
    extern "C" __global__ void scale_##DT(const T* x, T* y, int n, T a) {                \
        int i = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;        \
        if (i < n) y[i] = a * x[i];                                                      \
    }
GA_SCALE(f32, float)
GA_SCALE(f64, double)
extern "C" __global__ void masked_fill(const unsigned char* mask, float* y, long long n) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = (mask && !mask[i]) ? 0.0f : 1.0f;
}
extern "C" __global__ void __launch_bounds__(128) bounded(float* y) { y[threadIdx.x] = 1.0f; }
extern "C" __global__ void heavy(const float* x, float* y) {
    float v[80];
#pragma unroll
    for (int k = 0; k < 80; ++k) v[k] = x[threadIdx.x + k * 1024];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 80; ++k) s += v[k] * v[79 - k] + v[(k * 7) % 80] * s;
    y[threadIdx.x] = s;
}
"""

BLOCK_SUM = r"""
extern "C" __global__ void block_sum(const float* x, float* y, int n) {
    extern __shared__ float buf[];
    int t = threadIdx.x;
    float s = 0.0f;
    for (int i = t; i < n; i += blockDim.x) s += x[i];
    buf[t] = s;
    __syncthreads();
    for (int d = blockDim.x / 2; d > 0; d /= 2) {
        if (t < d) buf[t] += buf[t + d];
        __syncthreads();
    }
    if (t == 0) y[blockIdx.x] = buf[0];
}
"""


@pytest.fixture
def scale():
    return cp.RawKernel(KERNELS, "scale_f32")


def _x(n=1000, dtype=np.float32):
    return cp.asarray(np.linspace(-3, 3, n, dtype=dtype))


def _ones_to_seven(n):
    return cp.asarray((np.arange(n) % 7 + 1).astype(np.float32))


def test_a_correct_launch_runs_and_is_recorded(scale):
    x, y = _x(), cp.empty(1000, np.float32)
    with recording() as rec:
        scale((4, 2), (128,), (x, y, np.int32(1000), np.float32(2.0)))
    np.testing.assert_array_equal(y.get(), 2 * x.get())
    (launch,) = rec.launches
    assert (launch.kind, launch.name, launch.device, launch.grid, launch.block) == (
        "raw",
        "scale_f32",
        0,
        (4, 2, 1),
        (128, 1, 1),
    )


def test_barriers_and_dynamic_shared_memory_run_on_fibers():
    kernel = cp.RawKernel(BLOCK_SUM, "block_sum")
    x, y = _ones_to_seven(5000), cp.empty(3, np.float32)
    kernel((3,), (256,), (x, y, np.int32(5000)), shared_mem=256 * 4)
    np.testing.assert_allclose(y.get(), x.get().sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda x, y: (x, y, 1000, np.float32(2.0)), "Python int as int64"),
        (lambda x, y: (x, y, np.int32(1000), 2.0), "Python float as float64"),
        (lambda x, y: (x, y, np.int64(1000), np.float32(2.0)), "int64 scalar"),
        (lambda x, y: (x, y, np.int32(1000)), "3 arguments for 4 parameters"),
        (lambda x, y: (x.astype(np.float64), y, np.int32(1000), np.float32(2.0)), "array of float64"),
        (lambda x, y: (x, cp.empty(4001, np.uint8)[1:], np.int32(1000), np.float32(2.0)), "not 4-byte aligned"),
        (lambda x, y: (x.get(), y, np.int32(1000), np.float32(2.0)), "host numpy.ndarray"),
        (lambda x, y: (x, y, x, np.float32(2.0)), "is a scalar"),
        (lambda x, y: (np.uint64(12345), y, np.int32(1000), np.float32(2.0)), "8-byte 0"),
    ],
    ids=[
        "python-int-for-int",
        "python-float-for-float",
        "int64-for-int",
        "count",
        "pointee-dtype",
        "misaligned-raw-bytes",
        "host-array",
        "array-for-scalar",
        "raw-address",
    ],
)
def test_argument_checks(scale, args, match):
    x, y = _x(), cp.empty(1000, np.float32)
    with pytest.raises(LaunchContractError, match=match):
        scale((8,), (128,), args(x, y))


def test_raw_bytes_hold_any_type_aligned_for_it(scale):
    x, ws = _x(), cp.empty(4000, np.uint8)  # a workspace of bytes, 256-byte aligned as CuPy's pool
    scale((8,), (128,), (x, ws, np.int32(1000), np.float32(2.0)))
    np.testing.assert_array_equal(ws.get().view(np.float32), 2 * x.get())


def test_null_pointers_are_none_or_an_8_byte_zero():
    kernel = cp.RawKernel(KERNELS, "masked_fill")
    y = cp.empty(10, np.float32)
    for null in (None, np.uint64(0), np.int64(0), 0):
        kernel((1,), (32,), (null, y, np.int64(10)))
        assert (y.get() == 1).all()
    kernel((1,), (32,), (None, y, 10))  # a Python int is an int64 in CuPy: right for `long long`
    with pytest.raises(LaunchContractError, match="8-byte 0"):
        kernel((1,), (32,), (np.uint32(0), y, np.int64(10)))


@pytest.mark.parametrize(
    "grid, block, match",
    [
        ((1, 70000), (128,), "dimension y = 70000 exceeds 65535"),
        ((2**31,), (128,), "dimension x"),
        ((0,), (128,), ">= 1"),
        ((1,), (1025,), "dimension x = 1025"),
        ((1,), (16, 16, 65), "dimension z = 65"),
        ((1,), (64, 32), "2048 threads"),
    ],
    ids=["grid-y", "grid-x", "grid-0", "block-x", "block-z", "threads"],
)
def test_launch_configuration_limits(scale, grid, block, match):
    x, y = _x(), cp.empty(1000, np.float32)
    with pytest.raises(LaunchContractError, match=match):
        scale(grid, block, (x, y, np.int32(1000), np.float32(2.0)))


def test_grid_and_block_must_be_tuples(scale):
    x, y = _x(), cp.empty(1000, np.float32)
    with pytest.raises(TypeError):
        scale([8], (128,), (x, y, np.int32(1000), np.float32(2.0)))


def test_launch_bounds_and_registers():
    y = cp.empty(1024, np.float32)
    cp.RawKernel(KERNELS, "bounded")((1,), (128,), (y,))
    with pytest.raises(LaunchContractError, match="__launch_bounds__"):
        cp.RawKernel(KERNELS, "bounded")((1,), (256,), (y,))
    heavy = cp.RawKernel(KERNELS, "heavy")
    assert heavy.num_regs * 1024 > 65536, heavy.num_regs  # ptxas's count for sm_90
    x = cp.asarray(np.ones(80 * 1024, np.float32))
    heavy((1,), (256,), (x, y))
    with pytest.raises(LaunchContractError, match="registers"):
        heavy((1,), (1024,), (x, y))


def test_dynamic_shared_memory_above_48k_needs_the_opt_in_on_each_device():
    x, y = _ones_to_seven(5000), cp.empty(1, np.float32)
    kernel = cp.RawModule(code=BLOCK_SUM).get_function("block_sum")
    assert kernel.max_dynamic_shared_size_bytes == 48 * 1024 - kernel.shared_size_bytes
    with pytest.raises(LaunchContractError, match="opt-in"):
        kernel((1,), (256,), (x, y, np.int32(5000)), shared_mem=60 * 1024)
    kernel.max_dynamic_shared_size_bytes = 60 * 1024
    kernel((1,), (256,), (x, y, np.int32(5000)), shared_mem=60 * 1024)
    np.testing.assert_allclose(y.get(), x.get().sum(), rtol=1e-5, atol=1e-4)
    with cp.cuda.Device(1):  # a function attribute is per device
        x1, y1 = _ones_to_seven(5000), cp.empty(1, np.float32)
        with pytest.raises(LaunchContractError, match="opt-in"):
            kernel((1,), (256,), (x1, y1, np.int32(5000)), shared_mem=60 * 1024)
    with pytest.raises(LaunchContractError, match="232448"):
        kernel.max_dynamic_shared_size_bytes = 232448 + 1 - kernel.shared_size_bytes
    kernel.max_dynamic_shared_size_bytes = 232448 - kernel.shared_size_bytes  # all an H200 block may have
    kernel((1,), (256,), (x, y, np.int32(5000)), shared_mem=232448 - kernel.shared_size_bytes)


def test_an_array_of_another_device(scale):
    with cp.cuda.Device(1):
        x1 = _x()
    y = cp.empty(1000, np.float32)
    with pytest.raises(LaunchContractError, match="lives on device 1, but the launch runs on device 0"):
        scale((8,), (128,), (x1, y, np.int32(1000), np.float32(2.0)))
    with pytest.raises(LaunchContractError, match="lives on device 1"):
        cp.multiply(x1, 2.0, out=y)
    with cp.cuda.Device(1):
        y1 = cp.empty(1000, np.float32)
        scale((8,), (128,), (x1, y1, np.int32(1000), np.float32(2.0)))


PROBE = """
import numpy as np
import cupy

def allocate_then_launch(kernel, x, alloc_stream, launch_stream):
    with alloc_stream:
        tmp = cupy.empty(x.shape, np.float32)
    with launch_stream:
        kernel((8,), (128,), (x, tmp, np.int32(x.size), np.float32(2.0)))
    return tmp

def sync(x):
    return x.get()
"""


def test_an_array_this_gpuact_call_allocated_on_another_stream(scale):
    probe = _probe(PROBE)
    x = _x()
    s1, s2 = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with pytest.raises(LaunchContractError, match="allocated by this gpuact call"):
        probe.allocate_then_launch(scale, x, s1, s2)
    y = probe.allocate_then_launch(scale, x, s1, s1)
    # a result of an earlier call belongs to the caller: any stream may use it later
    with s2:
        scale((8,), (128,), (y, cp.empty(1000, np.float32), np.int32(1000), np.float32(2.0)))


def test_no_host_synchronisation_inside_gpuact():
    with pytest.raises(LaunchContractError, match="synchronises"):
        _probe(PROBE).sync(_x())
    _x().get()  # outside gpuact, fine


def test_partly_overlapping_output(scale):
    x = _x()
    with pytest.raises(LaunchContractError, match="partly overlaps"):
        scale((8,), (128,), (x[4:], x[:-4], np.int32(996), np.float32(2.0)))
    before = x.get()
    scale((8,), (128,), (x, x, np.int32(1000), np.float32(2.0)))  # in place: the identical view
    np.testing.assert_array_equal(x.get(), 2 * before)


def test_elementwise_kernel_runs_typed_as_cupy_types_it():
    kernel = cp.ElementwiseKernel("X x, float32 a, Y b", "Z z", "z = (Z)(x * a + b + i)", "axpb")
    x = cp.asarray(np.arange(12, dtype=np.float16).reshape(3, 4))
    b = cp.asarray(np.arange(4, dtype=np.float64))
    z = cp.empty((3, 4), np.float32)
    kernel(x, 0.5, b, z)  # a Python float is cast to the declared float32, as CuPy does
    want = (x.get().astype(np.float32) * np.float32(0.5) + b.get()) + np.arange(12).reshape(3, 4)
    np.testing.assert_allclose(z.get(), want.astype(np.float32), rtol=1e-6)
    with pytest.raises(LaunchContractError, match="float64 scalar"):
        kernel(x, np.float64(0.5), b, z)
    with pytest.raises(TypeError, match="Unsupported type"):
        kernel(x, np.float32(0.5), b.get(), z)
    with pytest.raises(ValueError, match="Out shape"):
        kernel(x, np.float32(0.5), b, cp.empty((4,), np.float32))


def test_elementwise_kernel_overlap_and_devices():
    kernel = cp.ElementwiseKernel("T x", "T y", "y = x + 1", "inc")
    x = _x(100)
    with pytest.raises(LaunchContractError, match="partly overlaps"):
        kernel(x[1:], x[:-1])
    kernel(x, x)  # in place
    with cp.cuda.Device(1):
        y1 = cp.empty(100, np.float32)
    with pytest.raises(LaunchContractError, match="device 1"):
        kernel(x, y1)


def test_cuda_array_interface_round_trip_and_stream_sync():
    x = _x(10)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        desc = x.__cuda_array_interface__
    assert desc["version"] == 3 and desc["stream"] == s.ptr and desc["data"][0] == x.data.ptr
    assert cp.cuda.Stream.null.ptr == 0 and x.__cuda_array_interface__["stream"] == 1  # legacy default

    class Foreign:
        def __init__(self, d):
            self.__cuda_array_interface__ = d

    with recording() as rec:
        y = cp.asarray(Foreign(desc))
    assert y.data.ptr == x.data.ptr and y._alloc is x._alloc  # zero-copy, the same allocation
    assert [e.info["stream"] for e in rec.events if e.kind == "stream_synchronize"] == [s.ptr]


def test_streams_are_per_device():
    s0 = cp.cuda.Stream(non_blocking=True)
    with s0:
        assert cp.cuda.get_current_stream() == s0
        with cp.cuda.Device(1):
            assert cp.cuda.get_current_stream() == cp.cuda.Stream.null
            with pytest.raises(RuntimeError, match="does not match"):
                with s0:
                    pass
        assert cp.cuda.get_current_stream(1) == cp.cuda.Stream.null
    assert cp.cuda.get_current_stream() == cp.cuda.Stream.null


# ---------------------------------------------------------------------------------------------
# gpuact's contract: devices


HOST = np.random.default_rng(0).normal(0, 3, (6, 40)).astype(np.float32)
MASK = np.random.default_rng(1).random((6, 40)) > 0.3
ALPHA = np.linspace(0, 1, 40, dtype=np.float32)


def _on(device, host):
    with cp.cuda.Device(device):
        return cp.asarray(host)


def _check_all_on(rec, device, stream=None):
    """Every launch, and every array gpuact allocated, on ``device`` (and ``stream``)."""
    assert rec.launches, "nothing was launched"
    key = None if stream is None else stream.ptr
    wrong = [launch for launch in rec.launches if launch.device != device or (key and launch.stream != key)]
    assert not wrong, f"launches not on device {device} / stream {key}: {wrong}"
    wrong = [a for a in rec.allocations if a.in_gpuact and (a.device != device or (key and a.stream != key))]
    assert not wrong, f"gpuact allocated arrays elsewhere than device {device} / stream {key}: {wrong}"


def _elementwise_ids():
    return [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw, _, _ in ELEMENTWISE_CASES]


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name, kwargs, ref_name, ref_kwargs", ELEMENTWISE_CASES, ids=_elementwise_ids())
def test_elementwise_on_device_1(name, kwargs, ref_name, ref_kwargs, layout):
    view = (lambda a: a) if layout == "contiguous" else (lambda a: a[:, ::3])
    x = view(_on(1, HOST))
    with recording() as rec:
        y = getattr(gpuact, name)(x, **kwargs)
    assert y.device.id == 1
    _check_all_on(rec, 1)
    assert_close(y.get(), reference.elementwise(ref_name, view(HOST), **ref_kwargs), np.float32)


CALLS = {
    "softmax": (lambda x: gpuact.softmax(x), lambda h: reference.softmax(h, -1)),
    "softmax-axis0": (lambda x: gpuact.softmax(x, axis=0), lambda h: reference.softmax(h, 0)),
    "log_softmax-2axes": (lambda x: gpuact.log_softmax(x, axis=(0, 1)), lambda h: reference.softmax(h, (0, 1), True)),
    "glu": (lambda x: gpuact.glu(x), lambda h: reference.glu(h, -1)),
    "sparsemax": (lambda x: gpuact.sparsemax(x), lambda h: reference.sparsemax(h.astype(np.float64), -1)),
}


def _masked_softmax(h, mask):
    return np.nan_to_num(reference.softmax(np.where(mask, h.astype(np.float64), -np.inf), -1)) * mask


@pytest.mark.parametrize("call", CALLS)
def test_softmax_glu_sparsemax_on_device_1(call):
    fn, ref = CALLS[call]
    x = _on(1, HOST)
    with recording() as rec:
        y = fn(x)
    assert y.device.id == 1
    _check_all_on(rec, 1)
    assert_close(y.get(), ref(HOST), np.float32)


MASKS = {  # the mask as given, and what it means on the host
    "numpy-bool": (lambda: MASK, MASK),
    "list": (lambda: MASK.tolist(), MASK),
    "numpy-float": (lambda: MASK.astype(np.float32), MASK),
    "device-bool": (lambda: _on(1, MASK), MASK),
    "device-float": (lambda: _on(1, MASK.astype(np.float32)), MASK),
    "device-broadcast-row": (lambda: _on(1, MASK[:1]), np.broadcast_to(MASK[:1], MASK.shape)),
}


@pytest.mark.parametrize("mask", MASKS)
def test_masked_softmax_on_device_1(mask):
    make, meaning = MASKS[mask]
    m = make()
    x = _on(1, HOST)
    with recording() as rec:
        y = Softmax()(x, mask=m)
    assert y.device.id == 1
    _check_all_on(rec, 1)
    assert_close(y.get(), _masked_softmax(HOST, meaning), np.float32)


@pytest.mark.parametrize("device", [0, 1])
@pytest.mark.parametrize("dtype, length", [(np.float32, 500), (np.float64, 300)])
def test_softmax_above_48k_of_shared_memory_opts_in_on_each_device(device, dtype, length):
    # a column tile of 32 x length values cached in dynamic shared memory: 64000 / 76800 bytes
    host = np.random.default_rng(2).normal(0, 3, (2, length, 64)).astype(dtype)
    x = _on(device, host)
    with recording() as rec:
        y = gpuact.softmax(x, axis=1)
    assert max(launch.shared_mem for launch in rec.launches) > 48 * 1024
    _check_all_on(rec, device)
    assert_close(y.get(), reference.softmax(host, 1), dtype)


@pytest.mark.parametrize("alpha", ["numpy", "device"])
def test_prelu_on_device_1(alpha):
    a = ALPHA if alpha == "numpy" else _on(1, ALPHA)
    x = _on(1, HOST)
    with recording() as rec:
        y = PReLU(a)(x)
    assert y.device.id == 1
    _check_all_on(rec, 1)
    assert_close(y.get(), np.maximum(HOST, 0) - ALPHA * np.maximum(-HOST, 0), np.float32)


OUT_CALLS = {  # (call with x, out and the PReLU alpha on x's device, out's shape)
    "relu": (lambda x, out, a: gpuact.relu(x, out=out), HOST.shape),
    "relu-strided-out": (lambda x, out, a: gpuact.relu(x, out=out[:, ::2]), (6, 80)),
    "softmax": (lambda x, out, a: gpuact.softmax(x, axis=0, out=out), HOST.shape),
    "glu": (lambda x, out, a: gpuact.glu(x, out=out), (6, 20)),
    "sparsemax": (lambda x, out, a: gpuact.sparsemax(x, out=out), HOST.shape),
    "prelu": (lambda x, out, a: PReLU(a)(x, out=out), HOST.shape),
}


@pytest.mark.parametrize("call", OUT_CALLS)
def test_out_on_device_1(call):
    fn, shape = OUT_CALLS[call]
    x, alpha = _on(1, HOST), _on(1, ALPHA)
    with cp.cuda.Device(1):
        out = cp.zeros(shape, np.float32)
    with recording() as rec:
        fn(x, out, alpha)
    _check_all_on(rec, 1)
    assert out.device.id == 1


@pytest.mark.parametrize("call", OUT_CALLS)
def test_out_on_another_device_is_refused_before_any_work(call):
    fn, shape = OUT_CALLS[call]
    x, alpha = _on(1, HOST), _on(1, ALPHA)
    out = cp.zeros(shape, np.float32)  # device 0
    with recording() as rec:
        with pytest.raises(ValueError, match="device"):
            fn(x, out, alpha)
    assert not rec.launches, f"work was done before the error: {rec.launches}"
    assert (out.get() == 0).all()


# ---------------------------------------------------------------------------------------------
# gpuact's contract: streams


class CudaStreamProtocol:
    """A stream object that is not CuPy's: it only has ``__cuda_stream__`` (PyTorch, cuda.core...)."""

    def __init__(self, stream):
        self._ptr = stream.ptr

    def __cuda_stream__(self):
        return (0, self._ptr)


STREAM_CALLS = {  # (call on x with the device mask m, the NumPy reference)
    "relu": (lambda x, m, **kw: gpuact.relu(x, **kw), lambda h: reference.elementwise("relu", h)),
    "gelu-strided": (
        lambda x, m, **kw: gpuact.gelu(x[:, ::2], **kw),
        lambda h: reference.elementwise("gelu", h[:, ::2]),
    ),
    "softmax": (lambda x, m, **kw: gpuact.softmax(x, **kw), lambda h: reference.softmax(h, -1)),
    "log_softmax-axis0": (
        lambda x, m, **kw: gpuact.log_softmax(x, axis=0, **kw),
        lambda h: reference.softmax(h, 0, True),
    ),
    "softmax-numpy-mask": (lambda x, m, **kw: Softmax()(x, mask=MASK, **kw), lambda h: _masked_softmax(h, MASK)),
    "softmax-device-mask": (lambda x, m, **kw: Softmax()(x, mask=m, **kw), lambda h: _masked_softmax(h, MASK)),
    "glu": (lambda x, m, **kw: gpuact.glu(x, **kw), lambda h: reference.glu(h, -1)),
    "sparsemax": (
        lambda x, m, **kw: gpuact.sparsemax(x, **kw),
        lambda h: reference.sparsemax(h.astype(np.float64), -1),
    ),
    "prelu-numpy-alpha": (
        lambda x, m, **kw: PReLU(ALPHA)(x, **kw),
        lambda h: np.maximum(h, 0) - ALPHA * np.maximum(-h, 0),
    ),
}


@pytest.mark.parametrize("how", ["stream=s", "stream=__cuda_stream__", "with s"])
@pytest.mark.parametrize("call", STREAM_CALLS)
def test_every_launch_and_allocation_on_the_stream(call, how):
    fn, ref = STREAM_CALLS[call]
    s = cp.cuda.Stream(non_blocking=True)
    x, m = cp.asarray(HOST), cp.asarray(MASK)
    with recording() as rec:
        if how == "with s":
            with s:
                y = fn(x, m)
        else:
            y = fn(x, m, stream=s if how == "stream=s" else CudaStreamProtocol(s))
    _check_all_on(rec, 0, s)
    s.synchronize()
    assert_close(y.get(), ref(HOST), np.float32)


def test_a_numpy_input_forced_onto_cupy_is_copied_on_the_stream():
    s = cp.cuda.Stream(non_blocking=True)
    with recording() as rec:
        y = gpuact.relu(HOST, backend="cupy", stream=s)
    assert isinstance(y, cp.ndarray)
    _check_all_on(rec, 0, s)
    copies = [launch for launch in rec.launches if launch.name == "host_to_device"]
    assert copies and all(c.stream == s.ptr for c in copies)
    assert_close(y.get(), reference.elementwise("relu", HOST), np.float32)


# ---------------------------------------------------------------------------------------------
# gpuact's contract: an out that partly overlaps the input


LINE = np.linspace(-3, 3, 64, dtype=np.float32)
OVERLAPS = {  # (host input, the call on its device copy x, where the output goes, the call on a host copy)
    "relu-aligned": (LINE, lambda x: gpuact.relu(x[4:], out=x[:-4]), np.s_[:-4], lambda h: gpuact.relu(h[4:])),
    "relu-misaligned": (LINE, lambda x: gpuact.relu(x[1:], out=x[:-1]), np.s_[:-1], lambda h: gpuact.relu(h[1:])),
    "softmax-rows": (HOST, lambda x: gpuact.softmax(x[1:], out=x[:-1]), np.s_[:-1], lambda h: gpuact.softmax(h[1:])),
    "softmax-axis0": (
        HOST,
        lambda x: gpuact.softmax(x[1:], axis=0, out=x[:-1]),
        np.s_[:-1],
        lambda h: gpuact.softmax(h[1:], axis=0),
    ),
    "log_softmax-columns": (
        HOST,
        lambda x: gpuact.log_softmax(x[:, 1:], out=x[:, :-1]),
        np.s_[:, :-1],
        lambda h: gpuact.log_softmax(h[:, 1:]),
    ),
    "glu": (HOST, lambda x: gpuact.glu(x[:, 4:12], out=x[:, 6:10]), np.s_[:, 6:10], lambda h: gpuact.glu(h[:, 4:12])),
    "sparsemax": (HOST, lambda x: gpuact.sparsemax(x[1:], out=x[:-1]), np.s_[:-1], lambda h: gpuact.sparsemax(h[1:])),
    "prelu": (HOST, lambda x: PReLU(ALPHA)(x[1:], out=x[:-1]), np.s_[:-1], lambda h: PReLU(ALPHA)(h[1:])),
}


@pytest.mark.parametrize("case", OVERLAPS)
def test_partly_overlapping_out_gives_the_values_of_a_copy(case):
    host, call, out_index, on_copy = OVERLAPS[case]
    x = cp.asarray(host)
    call(x)
    expected = host.copy()
    expected[out_index] = on_copy(host.copy())  # the NumPy path, every input read before any output
    assert_close(x.get(), expected, np.float32)


# ---------------------------------------------------------------------------------------------
# gpuact's contract: operands of other libraries, ordered after the streams that produced them


def test_an_event_is_recorded_only_on_a_stream_of_its_device():
    with cp.cuda.Device(1):
        s1 = cp.cuda.Stream(non_blocking=True)
    wrapped = cp.cuda.Stream.from_external(CudaStreamProtocol(s1))  # device_id -1, as in CuPy 14
    with pytest.raises(LaunchContractError, match="made on device 0 is recorded on stream .* of device 1"):
        cp.cuda.Event().record(wrapped)
    with cp.cuda.Device(1):
        event = cp.cuda.Event()
        event.record(wrapped)
    cp.cuda.get_current_stream().wait_event(event)  # a stream of any device may wait for it
    with pytest.raises(LaunchContractError, match="of device 1"):
        with wrapped:  # device 0 is current: a launch into a device-1 stream
            cp.multiply(_x(10), 2.0)


class _Produced:
    """An array of another library: only ``__cuda_array_interface__``, naming the stream that
    produced it (as a CuPy array exports it from inside ``with stream``)."""

    def __init__(self, a, stream):
        self.owner = a  # the memory lives as long as the interface does
        self.__cuda_array_interface__ = dict(a.__cuda_array_interface__, stream=stream.ptr)


OPERAND_CALLS = {  # (call on x and the operands, the operands, the NumPy reference on host x)
    "relu_grad-dy": (
        lambda x, o, **kw: gpuact.backward.relu(o["dy"], x, **kw),
        ("dy",),
        lambda h, a: a["dy"] * (h > 0),
    ),
    "gelu-bias": (
        lambda x, o, **kw: gpuact.gelu(x, bias=o["bias"], **kw),
        ("bias",),
        lambda h, a: reference.elementwise("gelu", h + a["bias"]),
    ),
    "softmax_grad-dy-bias": (
        lambda x, o, **kw: gpuact.backward.softmax(o["dy"], x, bias=o["bias"], **kw),
        ("dy", "bias"),
        lambda h, a: gpuact.backward.softmax(a["dy"], h, bias=a["bias"]),
    ),
    "masked_softmax-mask": (
        lambda x, o, **kw: Softmax()(x, mask=o["mask"], **kw),
        ("mask",),
        lambda h, a: _masked_softmax(h, a["mask"]),
    ),
    "prelu-alpha": (
        lambda x, o, **kw: gpuact._entry.prelu(x, o["alpha"], **kw),
        ("alpha",),
        lambda h, a: np.maximum(h, 0) - a["alpha"] * np.maximum(-h, 0),
    ),
    "relu-out": (
        lambda x, o, **kw: gpuact.relu(x, out=o["out"], **kw),
        ("out",),
        lambda h, a: np.maximum(h, 0),
    ),
    "sparsemax_grad-dy-out": (
        lambda x, o, **kw: gpuact.backward.sparsemax(o["dy"], x, out=o["out"], **kw),
        ("dy", "out"),
        lambda h, a: gpuact.backward.sparsemax(a["dy"], h),
    ),
}
OPERANDS = {
    "dy": np.random.default_rng(3).normal(0, 1, (6, 40)).astype(np.float32),
    "bias": np.linspace(-1, 1, 40, dtype=np.float32),
    "mask": MASK,
    "alpha": ALPHA,
    "out": np.zeros((6, 40), np.float32),
}


def _waits(rec, producer, launch):
    """The seq of each wait of ``launch`` for an event recorded on ``producer`` right before."""
    events = rec.events
    return [
        b.seq
        for a, b in zip(events, events[1:])
        if a.kind == "event_record"
        and a.info["stream"] == producer.ptr
        and b.kind == "stream_wait_event"
        and b.info["event"] == a.info["event"]
        and b.info["stream"] == launch
    ]


@pytest.mark.parametrize("how", ["x's stream", "stream=__cuda_stream__"])
@pytest.mark.parametrize("device", [0, 1])
@pytest.mark.parametrize("call", OPERAND_CALLS)
def test_every_operand_is_ordered_after_its_producer_stream(call, device, how):
    """Issue 21: an operand of another library (dy, bias, mask, alpha, out: an object whose
    ``__cuda_array_interface__`` names the stream that produced it) is read after its producer's
    work: the launch stream waits for an event recorded on the producer stream, before any kernel
    of the call, and the host never synchronizes. On device 1 while device 0 is current, every
    stream and event belongs to device 1 (the stand-in fails an event recorded on another device's
    stream, and a launch into one). The stand-in runs launches in call order, so it cannot see
    the race itself: it checks that the waits are there."""
    fn, names, ref = OPERAND_CALLS[call]
    with cp.cuda.Device(device):
        streams = {name: cp.cuda.Stream(non_blocking=True) for name in ("x", "launch", *names)}
        x = _Produced(cp.asarray(HOST), streams["x"])
        arrays = {name: cp.asarray(OPERANDS[name]) for name in names}
        operands = {name: _Produced(arrays[name], streams[name]) for name in names}
    kwargs = {"stream": CudaStreamProtocol(streams["launch"])} if how != "x's stream" else {}
    launch = streams["launch" if kwargs else "x"].ptr
    with recording() as rec:
        y = fn(x, operands, **kwargs)
    _check_all_on(rec, device, types.SimpleNamespace(ptr=launch))
    first = min(launch_.seq for launch_ in rec.launches)
    for name in ("x", *names):
        if name == "x" and not kwargs:
            continue  # x's stream is the launch stream
        waits = _waits(rec, streams[name], launch)
        assert waits, f"{name}: no event recorded on its producer stream and waited for on the launch stream"
        assert min(waits) < first, f"{name}: the wait comes after a launch of the call"
    assert not [e for e in rec.events if e.kind.endswith("synchronize")], "the host synchronized"
    got = (arrays["out"] if "out" in names else y).get()
    assert_close(got, ref(HOST, OPERANDS), np.float32)


# ---------------------------------------------------------------------------------------------
# gpuact's contract: read-only loads only of data no thread writes


INPLACE_CALLS = {  # (call on x, dy and a bias, the input that is out, the kernel that must run)
    "relu-out=x": (lambda x, dy, b: gpuact.relu(x, out=x), "x", "gpuact_vec_relu_f32_inplace"),
    "relu": (lambda x, dy, b: gpuact.relu(x), None, "gpuact_vec_relu_f32"),
    "gelu-bias-out=x": (lambda x, dy, b: gpuact.gelu(x, bias=b, out=x), "x", "gpuact_vec_bias_gelu_f32_bf32_inplace"),
    "silu_grad-out=dy": (
        lambda x, dy, b: gpuact.backward.silu(dy, x, out=dy),
        "dy",
        "gpuact_vec_grad_silu_f32_inplace",
    ),
    "silu_grad-out=x": (lambda x, dy, b: gpuact.backward.silu(dy, x, out=x), "x", "gpuact_vec_grad_silu_f32_inplace"),
    "silu_grad": (lambda x, dy, b: gpuact.backward.silu(dy, x), None, "gpuact_vec_grad_silu_f32"),
    "gelu_grad-bias-out=dy": (
        lambda x, dy, b: gpuact.backward.gelu(dy, x, bias=b, out=dy),
        "dy",
        "gpuact_vec_grad_bias_gelu_f32_bf32_inplace",
    ),
}


@pytest.mark.parametrize("call", INPLACE_CALLS)
def test_an_output_that_is_an_input_gets_plain_loads(call):
    """Issue 21: the vector kernels load x and dy through the read-only path (``__ldg``,
    ``ld.global.nc``), which PTX allows only for data no thread writes while the kernel runs; an
    ``out`` that is x or dy takes the ``_inplace`` variant, with plain loads
    (tests/test_cuda_compile.py checks both variants' PTX). The stand-in runs the kernels on host
    memory, where both loads read the same: it checks which kernel ran, and the values."""
    fn, aliased, kernel = INPLACE_CALLS[call]
    dy_host, bias_host = OPERANDS["dy"], OPERANDS["bias"]
    x, dy, b = cp.asarray(HOST), cp.asarray(dy_host), cp.asarray(bias_host)
    with recording() as rec:
        y = fn(x, dy, b)
    names = [launch.name for launch in rec.launches if launch.kind == "raw"]
    assert names == [kernel], names
    if aliased is not None:
        assert y is {"x": x, "dy": dy}[aliased]
    expected = fn(HOST.copy(), dy_host.copy(), bias_host)  # the NumPy path
    assert_close(y.get(), expected, np.float32)


# ---------------------------------------------------------------------------------------------
# sparsemax over blocks: long rows and small inner sizes


@pytest.mark.parametrize("device", [0, 1])
@pytest.mark.parametrize("shape, axis", [((1, 70000), -1), ((2, 40000, 2), 1)], ids=["long-row", "inner-2"])
def test_sparsemax_splits_a_long_slice_over_blocks(shape, axis, device):
    """Issue 21: a long row, or a long axis over a small inner size, too few slices to fill the
    GPU, runs the split (segment maxima, search passes, resolve, write) on a grid of (slice, tile,
    segment) blocks instead of one block a slice, its workspace allocated on the call's device and
    stream (the stand-in checks), in place too; and so does the backward."""
    host = np.random.default_rng(8).normal(0, 2, shape).astype(np.float32)
    expected = gpuact.sparsemax(host, axis=axis)  # the NumPy path
    s = None
    with cp.cuda.Device(device):
        x = cp.asarray(host)
        s = cp.cuda.Stream(non_blocking=True)
    with recording() as rec:
        y = gpuact.sparsemax(x, axis=axis, stream=s)
    _check_all_on(rec, device, s)
    raw = [launch for launch in rec.launches if launch.kind == "raw"]
    names = [launch.name.removesuffix("_f32") for launch in raw]
    split = "gpuact_sparsemax_split_"
    passes = len(names) - 3
    assert names == [split + "max"] + [split + "pass"] * passes + [split + "resolve", split + "finish"], names
    assert raw[0].grid[0] > 1 and raw[-1].grid == raw[0].grid
    assert_close(y.get(), expected, np.float32)
    with cp.cuda.Device(device):
        gpuact.sparsemax(x, axis=axis, out=x)
    assert_close(x.get(), expected, np.float32)
    # the backward: the forward's split search, the support's dy sums, the write into dy
    dy_host = np.random.default_rng(9).normal(0, 1, shape).astype(np.float32)
    expected = gpuact.backward.sparsemax(dy_host, host, axis=axis)
    with cp.cuda.Device(device):
        x, dy = cp.asarray(host), cp.asarray(dy_host)
    with recording() as rec:
        gpuact.backward.sparsemax(dy, x, axis=axis, out=dy, stream=s)
    _check_all_on(rec, device, s)
    names = [launch.name.removesuffix("_f32") for launch in rec.launches if launch.kind == "raw"]
    assert names[-3:] == ["gpuact_sparsemax_grad_split_" + n for n in ("resolve", "sums", "finish")], names
    assert_close(dy.get(), expected, np.float32)
