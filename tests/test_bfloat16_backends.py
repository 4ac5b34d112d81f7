"""bfloat16 on every backend of the ``be`` fixture: the NumPy path (compiled kernels and ufuncs),
CuPy, whose kernels load and store bfloat16 themselves (16-byte vectors of 8 where the array is
contiguous and aligned, CuPy's ``bfloat16`` type in the ElementwiseKernels of any strides, the
fused softmax and sparsemax kernels), run here on the CuPy stand-in, and Numba, whose kernels take
a bfloat16 array as its uint16 bits and widen and round them themselves (every kernel family),
run here under the CUDA simulator.

Tolerance: one rounding of a float32 result within the float32 contract to bfloat16's 8
significant bits, rtol 8e-3 against the float64 reference, atol 1e-6 (tests/test_bfloat16.py).
Where the float32 value is exact (a bias added to bfloat16 data), the result is that value rounded
to nearest even, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpuact
from tests import reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
RTOL, ATOL = 8e-3, 1e-6
ELEMENTWISE = ["relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "mish"]


def _x(shape=(24, 40), seed=0, scale=3.0):
    return np.random.default_rng(seed).normal(0, scale, shape).astype(BF16)


def _close(be, got, want):
    got = be.to_numpy(got)
    assert np.dtype(got.dtype) == BF16, got.dtype
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_forward_and_backward(be, name, layout):
    x = _x(seed=1)
    dy = _x(seed=2, scale=1.0)
    xb, dyb = be.asarray(x), be.asarray(dy)
    if layout == "strided":  # the ElementwiseKernel path on CuPy
        x, dy, xb, dyb = x[:, ::2], dy[:, ::2], xb[:, ::2], dyb[:, ::2]
    x64 = x.astype(np.float64)
    _close(be, getattr(gpuact, name)(xb), reference.elementwise(name, x64))
    _close(be, getattr(gpuact.backward, name)(dyb, xb), dy.astype(np.float64) * reference.grad(name, x64))


def _axis_op(name, x, axis):
    if name == "sparsemax":
        return reference.sparsemax(x, axis)
    return reference.softmax(x, axis, log=name == "log_softmax")


def _axis_op_grad(name, dy, x, axis):
    """The backward's float64 reference from the forward's: softmax ``y (dy - sum(dy y))``,
    log_softmax ``dy - softmax(x) sum(dy)``, sparsemax ``s (dy - mean of dy over the support)``."""
    if name == "softmax":
        y = reference.softmax(x, axis)
        return y * (dy - (dy * y).sum(axis, keepdims=True))
    if name == "log_softmax":
        return dy - reference.softmax(x, axis) * dy.sum(axis, keepdims=True)
    support = reference.sparsemax(x, axis) > 0
    mean = (dy * support).sum(axis, keepdims=True) / support.sum(axis, keepdims=True)
    return support * (dy - mean)


@pytest.mark.parametrize("name,axis", [("softmax", -1), ("softmax", 0), ("log_softmax", -1), ("sparsemax", 0)])
def test_along_an_axis(be, name, axis):
    x = _x(seed=3)
    x64 = x.astype(np.float64)
    # sparsemax's threshold solves a sum in float32: its float32 result is within 1e-5 absolute
    atol = 1e-5 if name == "sparsemax" else ATOL
    got = be.to_numpy(getattr(gpuact, name)(be.asarray(x), axis=axis))
    assert np.dtype(got.dtype) == BF16
    np.testing.assert_allclose(np.asarray(got, np.float64), _axis_op(name, x64, axis), rtol=RTOL, atol=atol)
    dy = _x(seed=4, scale=1.0)
    got = be.to_numpy(getattr(gpuact.backward, name)(be.asarray(dy), be.asarray(x), axis=axis))
    assert np.dtype(got.dtype) == BF16
    want = _axis_op_grad(name, dy.astype(np.float64), x64, axis)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=atol)


@pytest.mark.parametrize("gate", ["glu", "swiglu", "geglu", "reglu"])
def test_the_gated_units_both_forms(be, gate):
    x = _x(seed=5)
    _close(be, getattr(gpuact, gate)(be.asarray(x)), reference.gated(gate, x.astype(np.float64)))
    if gate == "glu":
        return
    a, b = x[:, :20], x[:, 20:]
    y = getattr(gpuact, gate)(be.asarray(np.ascontiguousarray(a)), be.asarray(np.ascontiguousarray(b)))
    _close(be, y, reference.gated(gate, x.astype(np.float64)))


def test_a_bias_rounds_once_to_nearest_even(be):
    # bfloat16 data plus a float32 bias, exact in float32, rounded once: the ties go to even, NaN
    # stays NaN, and the result is bfloat16 (x's dtype) on every path
    x = np.array([1.0, 1.0, 1.0, -2.0, 3.0, math.nan, math.inf, 0.0], BF16)
    bias = np.array([2.0**-8, 3 * 2.0**-8, 2.0**-9, -(2.0**-7), 2.0**-20, 1.0, 1.0, 2.0**-140], np.float32)
    got = be.to_numpy(gpuact.linear(be.asarray(x), bias=be.asarray(bias)))
    want = (x.astype(np.float32) + bias).astype(BF16)  # ml_dtypes rounds to nearest even
    assert np.dtype(got.dtype) == BF16
    np.testing.assert_array_equal(got.view(np.uint16)[:5], want.view(np.uint16)[:5])
    assert math.isnan(float(got[5])) and float(got[6]) == math.inf
    np.testing.assert_array_equal(got.view(np.uint16)[7:], want.view(np.uint16)[7:])  # a subnormal kept


def test_out_in_place_and_a_bfloat16_bias(be):
    x = _x(seed=6)
    bias = _x((40,), seed=7, scale=1.0)
    want = reference.elementwise("gelu", x.astype(np.float64) + bias.astype(np.float64))
    xb = be.asarray(x.copy())
    assert gpuact.gelu(xb, bias=be.asarray(bias), out=xb) is xb
    _close(be, xb, want)


def test_the_bits_view_of_a_pytorch_bfloat16_tensor():
    # what the CuPy backend wraps for a CUDA bfloat16 tensor (PyTorch's __cuda_array_interface__
    # refuses bfloat16): its bits as int16, zero-copy, read back as ml_dtypes' bfloat16
    torch = pytest.importorskip("torch")
    from gpuact.backends import _interop

    t = torch.tensor([1.0, -2.5, 3.0e38, float("nan")], dtype=torch.bfloat16)
    bits = _interop.bfloat16_bits(t)
    assert bits.dtype == torch.int16 and bits.data_ptr() == t.data_ptr()
    np.testing.assert_array_equal(bits.numpy().view(BF16), np.array([1.0, -2.5, 3.0e38, math.nan], BF16))
    assert _interop.bfloat16_bits(t.float()) is None and _interop.bfloat16_bits(np.zeros(2)) is None


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cupy", "numba"])
def test_cuda_bfloat16_tensors_are_computed_as_bfloat16(backend):
    # zero-copy in and out: the result is a bfloat16 tensor on the device, and out= is written
    # directly (no float32 copy of x is made: the kernels read its bits)
    torch = pytest.importorskip("torch")
    from tests.conftest import skip_unless_usable

    skip_unless_usable(backend)
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA (or sees no GPU)")
    x = torch.tensor(_x(seed=8).astype(np.float32), device="cuda").bfloat16()
    want = reference.elementwise("gelu", x.float().cpu().numpy().astype(np.float64))
    y = gpuact.gelu(x, backend=backend)
    assert y.dtype == torch.bfloat16 and y.is_cuda
    np.testing.assert_allclose(y.float().cpu().numpy(), want, rtol=RTOL, atol=ATOL)
    out = torch.empty_like(x)
    assert gpuact.gelu(x, out=out, backend=backend) is out
    torch.testing.assert_close(out, y, rtol=0, atol=0)
    da, db = gpuact.backward.swiglu(torch.ones_like(x), x, x, backend=backend)
    assert da.dtype == db.dtype == torch.bfloat16
    s = gpuact.softmax(x, axis=0, backend=backend)
    assert s.dtype == torch.bfloat16
    np.testing.assert_allclose(
        s.float().cpu().numpy(), reference.softmax(x.float().cpu().numpy().astype(np.float64), 0), rtol=RTOL, atol=ATOL
    )


@pytest.mark.gpu
def test_jax_gpu_bfloat16_arrays_come_back_as_bfloat16():
    # an eager JAX bfloat16 array on a GPU, through DLPack to the GPU backend and back as a JAX
    # array on the device (what JAX's own CUDA build hands gpuact)
    jax = pytest.importorskip("jax")
    from tests.conftest import skip_unless_usable

    skip_unless_usable("cupy")
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("this JAX build sees no GPU")
    x = jax.device_put(_x(seed=10), device)
    y = gpuact.gelu(x)
    assert y.dtype == BF16 and next(iter(y.devices())).platform == "gpu"
    got = np.asarray(jax.device_get(y), np.float64)
    want = reference.elementwise("gelu", np.asarray(jax.device_get(x), np.float64))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_the_numba_kernels_round_bfloat16_as_ml_dtypes():
    # the integer rounding every Numba kernel stores bfloat16 with (a CUDA device function; the
    # simulator runs it as Python), compiled here by Numba's CPU target, whose integer typing the
    # CUDA target shares, over every float32 top half with the bottom halves at and around the tie
    numba = pytest.importorskip("numba")
    from gpuact.backends._numba.storage import rounded_bits

    top = np.arange(1 << 16, dtype=np.uint32) << 16
    bottom = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000], np.uint32)
    u = (top[:, None] | bottom[None, :]).ravel()
    f = u.view(np.float32)
    rounded = numba.njit(rounded_bits)

    @numba.njit
    def each(bits):
        out = np.empty(bits.size, np.uint16)
        for k in range(bits.size):
            out[k] = np.uint16(rounded(bits[k]))
        return out

    got = each(u)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns on NaN, which it keeps NaN
        want = f.astype(BF16).view(np.uint16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    widened = (got.astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(widened[nan]).all() and (np.signbit(widened[nan]) == np.signbit(f[nan])).all()
    sample = np.random.default_rng(0).choice(u[~nan], 4000)  # the Python (simulator) reading too
    np.testing.assert_array_equal(
        [rounded_bits(int(b)) for b in sample], sample.view(np.float32).astype(BF16).view(np.uint16)
    )
