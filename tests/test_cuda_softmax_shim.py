"""The fused softmax kernels (kernels/gpuact_softmax.cu) run on the CPU under the threads shim
(tests/cuda_shim/cuda_shim.h), launched with the plans the CuPy backend makes (kernels, grids,
blocks, shared memory, arguments, workspace), and compared with the NumPy backend: row lengths
around the warp and block sizes, last and non-last axes as (outer, L, inner), masks, -inf, +inf
and NaN rows, log_softmax, in place, float16/32/64.

The plans are made for a tiny GPU (SHIM_PLAN: 1 SM, at most 3 blocks, rows split from 256
elements a segment): the grid-stride loops run, and single rows are split over blocks. Other
tests split long rows into dozens of segments.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuact import _kernel_sources as ks  # noqa: E402
from gpuact.backends import numpy_backend  # noqa: E402
from tests.cuda_shim import fused_shim
from tests.cuda_shim import gpuact_cuda_build as build

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

TOL = {np.float16: (2e-3, 1e-3), np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}
SHIM_PLAN = {"sm_count": 1, "max_blocks": 3, "min_segment": 256, "min_split": 0}
# a GPU of 2 SMs: 16 blocks fill it, rows split in segments of >= 1024 elements
MANY_SEGMENTS = {"sm_count": 2, "max_blocks": 16, "min_split": 0}


@pytest.fixture(scope="session")
def shim_lib(tmp_path_factory):
    return fused_shim.library(tmp_path_factory.getbasetemp(), "softmax")


def shim_softmax(lib, x, axes, log, mask=None, in_place=False, **plan_options):
    """The backend's in-place (outer, L, inner) path, with the kernels on the CPU."""
    x = np.ascontiguousarray(x)
    tag = ks.DTYPE_TAG[x.dtype]
    oli = ks.outer_axis_inner(x.shape, axes)
    assert oli is not None
    plan = ks.softmax_plan(*oli, tag, log=log, **(plan_options or SHIM_PLAN))
    x_in = x.copy() if in_place else x
    y = x_in if in_place else np.full_like(x, 7.0)  # anything not written stays 7 and fails
    m = None if mask is None else np.ascontiguousarray(np.broadcast_to(mask, x.shape)).view(np.uint8)
    fused_shim.run_plan(lib, plan, {"x": x_in, "y": y, "mask": m})
    return y, plan


def _check(got, x, axes, log, mask, dtype):
    # The NumPy path in float64, rounded to the dtype: its float32 sums can be further off than
    # rtol 1e-5 on long columns (3e-5 on (2**15, 2) along axis 0), the kernels' are not.
    want = numpy_backend.softmax(
        x.astype(np.float64),
        axes,
        None,
        np.dtype(np.float64),
        log=log,
        mask=None if mask is None else numpy_backend.as_mask(mask, x.shape),
    ).astype(dtype)
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    assert (np.isnan(got) == np.isnan(want)).all()


def _families(plan):
    return [launch.name.split("_")[2] for launch in plan.launches]


LENGTHS = [1, 2, 5, 31, 32, 33, 100, 1000, 1024, 1025, 5000]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_last_axis(shim_lib, length, dtype):
    rng = np.random.default_rng(length)
    rows = 6 if length < 2000 else 2
    x = (rng.normal(0, 4, (rows, length))).astype(dtype)
    x[1, : max(1, length // 3)] = -np.inf  # -inf among finite values: exactly 0
    if rows > 3:
        x[2, :] = -np.inf  # a row of all -inf: NaN
        x[3, length // 2] = np.nan  # NaN poisons its row
        x[4, length // 3] = np.inf  # so does +inf
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (1,), log)
        _check(got, x, (1,), log, None, dtype)
        if length <= ks.WARP_MAX_ROW:
            assert _families(plan) == ["warp"]


@pytest.mark.parametrize("length", [1025, 5000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_single_rows_split_over_blocks(shim_lib, length, dtype):
    x = np.random.default_rng(length).normal(0, 4, (1, length)).astype(dtype)
    x[0, :100] = -np.inf
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (1,), log)
        assert _families(plan) == ["split", "split"] and plan.launches[0].args()["segs"] >= 2
        _check(got, x, (1,), log, None, dtype)


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((3, 7, 5), 1),
        ((2, 33, 4), 1),
        ((4, 3, 40), 1),
        ((1000, 3), 0),
        ((2, 1025, 3), 1),
        ((5, 2, 2, 3), 1),
        ((3, 4, 64), 0),
        ((6, 5000, 2), 1),
        ((3, 700, 1), 1),
        ((2, 1500, 1), 1),
        ((700, 33), 0),
        ((1, 3000, 2), 1),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_last_axis(shim_lib, shape, axis, dtype):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 3, shape).astype(dtype)
    idx = [0] * len(shape)
    idx[axis] = slice(None)
    x[tuple(idx)] = -np.inf  # one all--inf slice
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (axis,), log)
        assert _families(plan) in (["cols"], ["split", "split"], ["warp"] if x.shape[-1] == 1 else None)
        _check(got, x, (axis,), log, None, dtype)


def test_uncached_long_columns(shim_lib):
    """Rows too long for the shared-memory cache re-read the input in the second pass."""
    x = np.random.default_rng(0).normal(0, 3, (2, 3000, 33)).astype(np.float32)
    got, plan = shim_softmax(shim_lib, x, (1,), False)
    assert plan.launches[0].args()["cache"] == 0
    _check(got, x, (1,), False, None, np.float32)


@pytest.mark.parametrize("shape, axis", [((1, 2**16), 1), ((2**13, 2), 0), ((3, 5000, 3), 1), ((1, 20000, 33), 1)])
def test_many_segments(shim_lib, shape, axis):
    """Long slices cut into many segments (two kernels and a workspace), with -inf, NaN and a mask."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, shape).astype(np.float32)
    mask = rng.random(shape) > 0.2
    x.reshape(-1)[7] = np.nan
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (axis,), log, **MANY_SEGMENTS)
        assert _families(plan) == ["split", "split"]
        assert plan.launches[0].args()["segs"] >= 4 and plan.workspace > 0
        _check(got, x, (axis,), log, None, np.float32)
    got, _ = shim_softmax(shim_lib, x, (axis,), False, mask=mask, **MANY_SEGMENTS)
    _check(got, x, (axis,), False, mask, np.float32)


@pytest.mark.parametrize("options", [MANY_SEGMENTS, {"sm_count": 1, "max_blocks": 1}], ids=["split", "one-block"])
def test_long_float32_rows_keep_float32_accuracy(shim_lib, options):
    """A long row of zeros gives 1/L to the ulp. An ascending row (a new max at almost every
    element of a thread) keeps its sum to float32 accuracy: the top elements, whose x - max is
    exact, are within a few ulps of float64 (rescaling the sum at every new max instead of
    past 1 above the old one drifts to 1.8e-6 here)."""
    length = 2**18
    zeros = np.zeros((1, length), np.float32)
    got, _ = shim_softmax(shim_lib, zeros, (1,), False, **options)
    np.testing.assert_allclose(got, 1.0 / length, rtol=1.2e-7, atol=0)
    ascending = (np.arange(length, dtype=np.float32) * np.float32(1e-5))[None]
    for log in (False, True):
        got, _ = shim_softmax(shim_lib, ascending, (1,), log, **options)
        want = numpy_backend.softmax(ascending.astype(np.float64), (1,), None, np.dtype(np.float64), log=log)
        np.testing.assert_allclose(got[:, length // 2 :], want[:, length // 2 :], rtol=5e-7, atol=0)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)


@pytest.mark.parametrize(
    "shape, axes", [((4, 6, 5), (1, 2)), ((3, 4, 5), (0, 1)), ((2, 3, 4, 5), (1, 2)), ((2, 3, 1, 5), (1, 3))]
)
def test_adjacent_tuple_axes_merge(shim_lib, shape, axes):
    x = np.random.default_rng(1).normal(0, 2, shape).astype(np.float32)
    for log in (False, True):
        got, _ = shim_softmax(shim_lib, x, axes, log)
        _check(got, x, axes, log, None, np.float32)


@pytest.mark.parametrize(
    "shape, axis", [((5, 33), 1), ((4, 7), 1), ((3, 1500), 1), ((3, 6, 4), 1), ((8, 2), 0), ((1, 3000), 1)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mask(shim_lib, shape, axis, dtype):
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, shape).astype(dtype)
    mask = rng.random(shape) > 0.4
    if shape[0] > 1:
        idx = [slice(None)] * len(shape)
        idx[1 - axis if len(shape) == 2 else 0] = 0
        mask[tuple(idx)] = False  # a fully masked row: all 0
    got, _ = shim_softmax(shim_lib, x, (axis,), False, mask=mask)
    _check(got, x, (axis,), False, mask, dtype)
    assert (got[~mask] == 0).all()
    # broadcast mask (as the Softmax layer gets it)
    bmask = mask[:1] if axis != 0 else mask[:, :1]
    got, _ = shim_softmax(shim_lib, x, (axis,), False, mask=bmask)
    _check(got, x, (axis,), False, np.broadcast_to(bmask, shape), dtype)


def test_fully_masked_split_row_is_zero(shim_lib):
    x = np.random.default_rng(2).normal(0, 3, (1, 4000)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (1,), log, mask=mask)
        assert _families(plan) == ["split", "split"]
        assert (got == 0).all()


@pytest.mark.parametrize(
    "shape, axis", [((6, 100), 1), ((3, 1500), 1), ((2, 3000, 33), 1), ((1, 5000), 1), ((1, 2**16), 1)]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_in_place(shim_lib, shape, axis, dtype):
    """x is y: the warp kernel, the column kernel (cached, uncached) and the split kernels."""
    x = np.random.default_rng(5).normal(0, 3, shape).astype(dtype)
    for log in (False, True):
        options = MANY_SEGMENTS if shape[-1] == 2**16 else SHIM_PLAN
        got, _ = shim_softmax(shim_lib, x, (axis,), log, in_place=True, **options)
        _check(got, x, (axis,), log, None, dtype)


def test_plans_stay_within_the_cache_limit():
    for outer, length, inner in ((1, 100000, 1), (2, 5000, 64), (3, 50, 7), (1000, 20000, 1)):
        plan = ks.softmax_plan(outer, length, inner, "f32", log=False, sm_count=132, max_blocks=100)
        assert all(launch.smem <= ks.SMEM_CACHE_LIMIT for launch in plan.launches)
