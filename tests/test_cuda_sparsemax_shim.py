"""The fused sparsemax kernels (kernels/gpuact_sparsemax.cu) run on the CPU under the threads shim
(tests/cuda_shim/cuda_shim.h), launched with the plans the CuPy backend makes, and compared with
the NumPy backend (``_composite.sparsemax_into``: sort and cumulative sum): rows around the warp
and block sizes, non-last axes, ties, NaN, +-inf, shifted rows, in place, float16/32/64.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuact import _kernel_sources as ks  # noqa: E402
from gpuact.backends import numpy_backend  # noqa: E402
from tests import reference
from tests.cuda_shim import fused_shim
from tests.cuda_shim import gpuact_cuda_build as build

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

TOL = {np.float16: (2e-3, 1e-3), np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}
SHIM_PLAN = {"sm_count": 1, "max_blocks": 3}  # few blocks: the grid-stride loops run


@pytest.fixture(scope="session")
def shim_lib(tmp_path_factory):
    return fused_shim.library(tmp_path_factory.getbasetemp(), "sparsemax")


def shim_sparsemax(lib, x, axis, in_place=False, **plan_options):
    x = np.ascontiguousarray(x)
    oli = ks.outer_axis_inner(x.shape, (axis,))
    plan = ks.sparsemax_plan(*oli, ks.DTYPE_TAG[x.dtype], **(plan_options or SHIM_PLAN))
    x_in = x.copy() if in_place else x
    y = x_in if in_place else np.full_like(x, 7.0)  # anything not written stays 7 and fails
    fused_shim.run_plan(lib, plan, {"x": x_in, "y": y})
    return y, plan


def _check(got, x, axis, dtype):
    want = numpy_backend.sparsemax(x, axis, None, np.dtype(dtype))
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    assert (np.isnan(got) == np.isnan(want)).all()
    sums = np.nansum(got.astype(np.float64), axis=axis)
    finite = ~np.isnan(got).any(axis=axis)
    np.testing.assert_allclose(sums[finite], 1.0, rtol=0, atol=2e-3 if dtype == np.float16 else 1e-5)


LENGTHS = [1, 2, 3, 5, 31, 32, 33, 100, 1000, 1024, 1025, 3000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_last_axis(length, dtype, shim_lib):
    rng = np.random.default_rng(length)
    rows = 8 if length <= 1024 else 3
    x = rng.normal(0, 1, (rows, length)).astype(dtype)
    x[1] = np.round(x[1])  # ties
    x[2, : max(1, length // 3)] = -np.inf  # -inf among finite values: 0
    if rows > 3:
        x[3, length // 2] = np.nan  # NaN: the slice is NaN
        x[4, length // 3] = np.inf  # +inf: NaN
        x[5] = -np.inf  # all -inf: NaN
        x[6] = (1e3 if dtype == np.float16 else 1e6) + rng.random(length)  # far from 0: still sums to 1
        x[7] = 0  # all tied
    got, plan = shim_sparsemax(shim_lib, x, 1)
    assert ("_warp_" in plan.launches[0].name) == (length <= ks.WARP_MAX_ROW)
    _check(got, x, 1, dtype)


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((3, 7, 5), 1),
        ((2, 33, 2), 1),
        ((4, 3, 40), 1),
        ((300, 3), 0),
        ((2, 1025, 3), 1),
        ((5, 2, 2, 3), 1),
        ((3, 50, 33), 1),
        ((2, 100, 1), 1),
        ((2, 3000, 2), 1),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_non_last_axis(shape, axis, dtype, shim_lib):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 2, shape).astype(dtype)
    idx = [0] * len(shape)
    idx[axis] = slice(None)
    x[tuple(idx)] = -np.inf  # one all--inf slice
    got, _ = shim_sparsemax(shim_lib, x, axis)
    _check(got, x, axis, dtype)


def test_uncached_slices_are_read_again(shim_lib):
    """Slices too long for shared memory are re-read from the input on every pass."""
    x = np.random.default_rng(4).normal(0, 1, (2, 1000, 33)).astype(np.float32)
    x[0, :, 3] = 0.5  # a column of ties
    got, plan = shim_sparsemax(shim_lib, x, 1, sm_count=1, max_blocks=3, smem_optin=8 * 1024)
    assert plan.launches[0].args()["cache"] == 0
    _check(got, x, 1, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_structured_rows_match_bisection(dtype, shim_lib):
    """Geometric gaps, values piled up within 1e-7 of tau, two nearly tied maxima: the same as
    200 steps of plain bisection in float64 (tests/reference.py)."""
    n = 600
    geometric = -(1.0 - 0.5 ** np.arange(n) * 0.999)
    near = np.concatenate([[0.0], np.full(n - 1, -1.0 / (n - 1)) + np.linspace(-1e-7, 1e-7, n - 1)])
    twins = np.concatenate([[0.0, -1e-7], np.full(n - 2, -3.0)])
    x = np.stack([geometric, near, twins]).astype(dtype)
    for slices in (x, np.ascontiguousarray(x[:, :200])):  # the cols kernel, and the warp kernel
        got, _ = shim_sparsemax(shim_lib, slices, 1)
        _check(got, slices, 1, dtype)
        np.testing.assert_allclose(
            got, reference.sparsemax(slices.astype(np.float64)), rtol=0, atol=1e-6 if dtype == np.float32 else 1e-12
        )


@pytest.mark.parametrize("shape, axis", [((6, 100), 1), ((3, 2000), 1), ((2, 300, 3), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_in_place(shape, axis, dtype, shim_lib):
    x = np.random.default_rng(9).normal(0, 1, shape).astype(dtype)
    got, _ = shim_sparsemax(shim_lib, x, axis, in_place=True)
    _check(got, x, axis, dtype)


# ---------------------------------------------------------------------------------------------
# The split over blocks: long rows and small-inner axes (issue 21)

# A "GPU" of 2 SMs (16 blocks fill it), segments of at least 64 elements, any input size: rows of a
# few thousand split into up to 16 segments, so that every kernel of the split runs on the shim.
SPLIT_PLAN = {"sm_count": 2, "max_blocks": 16, "min_segment": 64, "min_split": 0}
SPLIT_SHAPES = [((1, 3000), 1), ((2, 2500), 1), ((1, 2000, 3), 1), ((3000, 2), 0), ((1, 1500, 40), 1)]


def _split_input(shape, axis, dtype, seed):
    """Normal values, with the special slices of the other tests where there are slices enough:
    all -inf, NaN in the last segment, +inf in the first, shifted far from 0, ties."""
    rng = np.random.default_rng(seed)
    x = np.moveaxis(rng.normal(0, 1.5, shape), axis, -1)
    slices = x.reshape(-1, x.shape[-1])
    n = slices.shape[1]
    special = [
        lambda s: s.fill(-np.inf),
        lambda s: s.__setitem__(n - 3, np.nan),
        lambda s: s.__setitem__(2, np.inf),
        lambda s: s.__iadd__(1e3 if dtype == np.float16 else 1e6),
        lambda s: s.__setitem__(slice(None), np.round(s * 2) / 2),
    ]
    for row, make in zip(range(1, slices.shape[0]), special):
        make(slices[row])
    return np.ascontiguousarray(np.moveaxis(slices.reshape(x.shape), -1, axis)).astype(dtype)


@pytest.mark.parametrize("passes", [1, 3, 8])
@pytest.mark.parametrize("shape, axis", SPLIT_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_split_over_blocks(shape, axis, dtype, passes, shim_lib):
    """The max kernel, ``passes`` search passes, the resolve (which goes on alone where the passes
    did not end the search: passes=1 makes it do most of the work) and the finish, against the
    NumPy path, also in place; the workspace starts as NaN bytes, so a read before a write shows."""
    x = _split_input(shape, axis, dtype, seed=sum(shape) + passes)
    got, plan = shim_sparsemax(shim_lib, x, axis, passes=passes, **SPLIT_PLAN)
    names = [launch.name.rsplit("_", 1)[0] for launch in plan.launches]
    split = "gpuact_sparsemax_split_"
    assert names == [split + "max"] + [split + "pass"] * passes + [split + "resolve", split + "finish"], names
    assert plan.launches[0].args()["segs"] > 1
    _check(got, x, axis, dtype)
    got, _ = shim_sparsemax(shim_lib, x, axis, in_place=True, passes=passes, **SPLIT_PLAN)
    _check(got, x, axis, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_structured_rows_match_bisection(dtype, shim_lib):
    """The adversarial rows of test_structured_rows_match_bisection, split over blocks."""
    n = 1200
    geometric = -(1.0 - 0.5 ** np.arange(n) * 0.999)
    near = np.concatenate([[0.0], np.full(n - 1, -1.0 / (n - 1)) + np.linspace(-1e-7, 1e-7, n - 1)])
    twins = np.concatenate([[0.0, -1e-7], np.full(n - 2, -3.0)])
    uniform = np.random.default_rng(5).random(n)
    x = np.stack([geometric, near, twins, uniform]).astype(dtype)
    for passes in (2, 8):
        got, plan = shim_sparsemax(shim_lib, x, 1, passes=passes, **SPLIT_PLAN)
        assert "_split_" in plan.launches[0].name
        _check(got, x, 1, dtype)
        np.testing.assert_allclose(
            got, reference.sparsemax(x.astype(np.float64)), rtol=0, atol=1e-6 if dtype == np.float32 else 1e-12
        )


@pytest.fixture(scope="session")
def shim_grad_lib(tmp_path_factory):
    return fused_shim.library(tmp_path_factory.getbasetemp(), "sparsemax_grad")


@pytest.mark.parametrize("passes", [1, 8])
@pytest.mark.parametrize("shape, axis", SPLIT_SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_split_backward(shape, axis, dtype, passes, shim_grad_lib):
    """The backward where the forward splits: the forward's search (max, passes, resolve), the
    support's sums of dy per segment and the write, against the NumPy path; dx into dy and into
    x too (each element read by the thread that writes it)."""
    x = _split_input(shape, axis, dtype, seed=sum(shape) + 7 * passes)
    dy = np.random.default_rng(passes).normal(0, 1, shape).astype(dtype)
    oli = ks.outer_axis_inner(x.shape, (axis,))
    plan = ks.sparsemax_grad_plan(*oli, ks.DTYPE_TAG[x.dtype], passes=passes, **SPLIT_PLAN)
    names = [launch.name.rsplit("_", 1)[0] for launch in plan.launches]
    split = "gpuact_sparsemax_grad_split_"
    assert names == [split + "max"] + [split + "pass"] * passes + [split + s for s in ("resolve", "sums", "finish")]
    want = numpy_backend.sparsemax_grad(dy, x, axis, None, np.dtype(dtype))
    rtol, atol = TOL[dtype]
    for into in ("new", "dy", "x"):
        xi, dyi = x.copy(), dy.copy()
        dx = {"new": np.full_like(x, 7.0), "dy": dyi, "x": xi}[into]
        fused_shim.run_plan(shim_grad_lib, plan, {"dy": dyi, "x": xi, "dx": dx})
        np.testing.assert_allclose(dx.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        assert (np.isnan(dx) == np.isnan(want)).all(), into
