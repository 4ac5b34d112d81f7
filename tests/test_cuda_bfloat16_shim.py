"""The CUDA kernels in bfloat16 (``ga::bf16`` storage, kernels/gpuact_half.cuh: widened exactly,
narrowed to nearest even) run on the CPU threads shim through the CuPy backend's own code
(tests/cuda_shim/backend_shim.py): the 16-byte vector elementwise kernels forward, backward and
with a bias, and the fused softmax and sparsemax kernels along the last axis and along axis 0.

These tests call the CuPy backend's functions directly (tests/test_bfloat16_backends.py runs the
public functions on the CuPy stand-in). Tolerance: one rounding of a float32
result to bfloat16's 8 significant bits, rtol 8e-3 against the float64 reference, atol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuact import _kernel_sources as ks
from tests import reference
from tests.cuda_shim import backend_shim, vec_shim
from tests.cuda_shim import gpuact_cuda_build as build

ml_dtypes = pytest.importorskip("ml_dtypes")
pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

BF16 = np.dtype(ml_dtypes.bfloat16)
RTOL, ATOL = 8e-3, 1e-6


@pytest.fixture
def backend(monkeypatch, tmp_path_factory):
    pytest.importorskip("cupy")
    return backend_shim.patch(monkeypatch, tmp_path_factory.getbasetemp())


def _aligned(a):
    raw = np.empty(a.nbytes + 16, np.uint8)
    start = -raw.ctypes.data % 16
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _x(shape, seed, scale=3.0):
    return _aligned(np.random.default_rng(seed).normal(0, scale, shape).astype(BF16))


def _close(got, want):
    assert np.dtype(got.dtype) == BF16
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=RTOL, atol=ATOL)


def test_the_tag():
    assert ks.DTYPE_TAG[BF16] == "bf16" and ks.COMPUTE_DTYPE["bf16"] == np.float32
    assert ks.bias_tags("bf16") == ("bf16", "f32")


@pytest.mark.parametrize("op", ["relu", "silu", "gelu", "tanh", "sigmoid"])
def test_vector_kernels(backend, op):
    x = _x((37, 24), seed=1)  # 888 elements: 111 vectors of 8, no scalar tail; and a tail below
    x64 = x.astype(np.float64)
    vec_shim.VecKernel.launches.clear()
    _close(
        backend.elementwise(op, x, (0.0, 0.0, -np.inf, np.inf) if op == "relu" else (), None, BF16),
        reference.elementwise(op, x64),
    )
    assert vec_shim.VecKernel.launches and vec_shim.VecKernel.launches[-1][0].endswith("_bf16")
    dy = _x((37, 24), seed=2, scale=1.0)
    params = (0.0, 0.0, -np.inf, np.inf) if op == "relu" else ()
    want = dy.astype(np.float64) * reference.grad(op, x64)
    _close(backend.elementwise_grad(op, dy, x, params, None, BF16), want)
    tail = _x((29,), seed=3)  # 3 vectors and 5 scalar elements
    _close(backend.elementwise(op, tail, params, None, BF16), reference.elementwise(op, tail.astype(np.float64)))


@pytest.mark.parametrize("bias_dtype", [BF16, np.dtype(np.float32)], ids=["bf16-bias", "f32-bias"])
def test_vector_kernels_with_a_bias(backend, bias_dtype):
    x, dy = _x((16, 40), seed=4), _x((16, 40), seed=5, scale=1.0)
    b = np.random.default_rng(6).normal(0, 0.5, 40).astype(bias_dtype)
    z = x.astype(np.float64) + b.astype(np.float64)
    vec_shim.VecKernel.launches.clear()
    _close(backend.elementwise("gelu", x, (), None, BF16, bias=b), reference.elementwise("gelu", z))
    _close(
        backend.elementwise_grad("gelu", dy, x, (), None, BF16, bias=b),
        dy.astype(np.float64) * reference.grad("gelu", z),
    )
    assert all(name.split("_")[-1].startswith("b") for name, _ in vec_shim.VecKernel.launches)


@pytest.mark.parametrize("shape,axis", [((6, 1000), -1), ((6, 33), -1), ((300, 5), 0), ((2, 5000), -1)])
def test_fused_softmax_and_sparsemax(backend, shape, axis):
    x = _x(shape, seed=7)
    x64 = x.astype(np.float64)
    ax = axis % len(shape)
    _close(backend.softmax(x, (ax,), None, BF16, log=False), reference.softmax(x64, axis))
    _close(backend.softmax(x, (ax,), None, BF16, log=True), reference.softmax(x64, axis, log=True))
    got = backend.sparsemax(x, ax, None, BF16)
    assert got.dtype == BF16
    np.testing.assert_allclose(np.asarray(got, np.float64), reference.sparsemax(x64, axis), rtol=RTOL, atol=1e-5)
