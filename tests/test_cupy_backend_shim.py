"""``gpuact.backends.cupy_backend.softmax`` / ``sparsemax`` end to end without a GPU (see
tests/cuda_shim/backend_shim.py): CuPy's array functions are stood in for by NumPy's and each
compiled kernel by the same kernel on the CPU threads shim, so what runs is the backend's own code
(layout handling, plans, workspace, argument lists: every integer a NumPy scalar of its C
parameter's width) launching the kernels. The training paths are in test_cupy_backward_shim.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuact.backends import numpy_backend  # noqa: E402
from tests.cuda_shim import backend_shim
from tests.cuda_shim import gpuact_cuda_build as build

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]


@pytest.fixture
def backend(monkeypatch, tmp_path_factory):
    pytest.importorskip("cupy")
    return backend_shim.patch(monkeypatch, tmp_path_factory.getbasetemp())


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((4, 33), (1,)),
        ((2, 1500), (1,)),
        ((1, 70000), (1,)),
        ((3, 40, 5), (1,)),
        ((2**15, 2), (0,)),
        ((3, 4, 5), (0, 2)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_softmax(backend, shape, axes, dtype):
    x = np.random.default_rng(0).normal(0, 3, shape).astype(dtype)
    mask = np.random.default_rng(1).random(shape) > 0.3
    for log in (False, True):
        for m in (None, mask):
            got = backend.softmax(x, axes, None, np.dtype(dtype), log=log, mask=m)
            want = numpy_backend.softmax(x.astype(np.float64), axes, None, np.dtype(np.float64), log=log, mask=m)
            rtol, atol = (2e-3, 1e-3) if dtype == np.float16 else (1e-5, 1e-6)
            np.testing.assert_allclose(
                got.astype(np.float64), want.astype(dtype).astype(np.float64), rtol=rtol, atol=atol
            )
    names = {launch.name.split("_")[2] for launch in backend_shim.ShimKernel.launches}
    if shape in ((1, 70000), (2**15, 2)):
        assert names == {"split"}  # two launches and a workspace


def test_softmax_in_place_and_strided_out(backend):
    x = np.random.default_rng(2).normal(0, 3, (3, 70000)).astype(np.float32)
    want = numpy_backend.softmax(x.astype(np.float64), (1,), None, np.dtype(np.float64), log=False)
    y = x.copy()
    assert backend.softmax(y, (1,), y, np.dtype(np.float32), log=False) is y
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    out = np.zeros((3, 140000), np.float32)[:, ::2]
    backend.softmax(x, (1,), out, np.dtype(np.float32), log=False)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape, axis", [((5, 40), 1), ((2, 3000), 1), ((30, 4), 0), ((3, 50, 6), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
def test_sparsemax(backend, shape, axis, dtype):
    x = (np.random.default_rng(3).normal(0, 2, shape) * (4 if dtype == np.int32 else 1)).astype(dtype)
    result = np.dtype(np.float32) if dtype == np.int32 else np.dtype(dtype)
    got = backend.sparsemax(x, axis, None, result)
    want = numpy_backend.sparsemax(x, axis, None, result)
    rtol, atol = {np.float16: (2e-3, 1e-3), np.float64: (1e-12, 1e-14)}.get(result.type, (1e-5, 1e-6))
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
    if dtype != np.int32:
        y = x.copy()
        backend.sparsemax(y, axis, y, result)  # in place
        np.testing.assert_allclose(y.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
        out = np.zeros(shape[:-1] + (2 * shape[-1],), result)[..., ::2]
        backend.sparsemax(x, axis, out, result)  # a strided out
        np.testing.assert_allclose(out.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
