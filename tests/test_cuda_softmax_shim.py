"""The fused softmax kernels (kernels/gpuact_softmax.cu) run on the CPU under the threads shim
(tests/cuda_shim/cuda_shim.h), launched with the same plan (kernel, block, shared memory,
arguments) as the CuPy backend, and compared with the NumPy backend: row lengths around the warp
and block sizes, last and non-last axes as (outer, L, inner), masks, all--inf rows, log_softmax,
float16/32/64. Grids are capped small: the kernels' grid-stride loops cover the rest, so that
path is exercised too.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from tests.cuda_shim import gpuact_cuda_build as build

from gpuact import _kernel_sources as ks  # noqa: E402
from gpuact.backends import numpy_backend  # noqa: E402

pytestmark = [pytest.mark.cpu_proxy, pytest.mark.skipif(build.gxx() is None, reason="no host C++ compiler (g++)")]

TOL = {np.float16: (2e-3, 1e-3), np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}


def _shim_source() -> str:
    lines = ['#include "cuda_shim.h"', '#include "gpuact_softmax.cu"', "#include <cstring>",
             'extern "C" int shim_softmax(const char* name, const void* x, void* y, const unsigned char* mask,',
             "    unsigned gx, unsigned gy, unsigned block, unsigned long smem, long long a0, long long a1,",
             "    long long a2, long long a3, long long a4, long long a5) {"]
    for tag in ("f16", "f32", "f64"):
        s = ks.STORAGE_CTYPE[tag]
        for name in ks.softmax_kernel_names(tag):
            if "_warp_" in name:
                call = f"{name}((const {s}*)x, ({s}*)y, mask, a0, (int)a1, (int)a2)"
            else:
                call = f"{name}((const {s}*)x, ({s}*)y, mask, a0, a1, a2, (int)a3, (int)a4, (int)a5)"
            lines.append(f'  if (!std::strcmp(name, "{name}")) {{ ga_shim::launch(gx, gy, block, smem, [&] {{ {call}; }}); return 0; }}')
    lines += ["  return 1;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def shim_lib(tmp_path_factory):
    so = build.build_shared(_shim_source(), tmp_path_factory.mktemp("gpuact_shim"), std="c++20")
    lib = ctypes.CDLL(str(so))
    lib.shim_softmax.restype = ctypes.c_int
    lib.shim_softmax.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong] + [ctypes.c_longlong] * 6
    return lib


def shim_softmax(lib, x, axes, log, mask=None, max_blocks=3):
    """The backend's in-place (outer, L, inner) path, with the kernels on the CPU."""
    x = np.ascontiguousarray(x)
    tag = ks.DTYPE_TAG[x.dtype]
    oli = ks.outer_axis_inner(x.shape, axes)
    assert oli is not None
    plan = ks.softmax_plan(*oli, tag, log=log, max_blocks=max_blocks)
    y = np.full_like(x, 7.0)  # anything not written stays 7 and fails the comparison
    m = None if mask is None else np.ascontiguousarray(np.broadcast_to(mask, x.shape)).view(np.uint8)
    grid = tuple(plan["grid"]) + (1,)
    args = tuple(int(a) for a in plan["args"]) + (0,) * (6 - len(plan["args"]))
    rc = lib.shim_softmax(plan["name"].encode(), x.ctypes.data, y.ctypes.data, None if m is None else m.ctypes.data,
                          grid[0], grid[1], plan["block"], plan["smem"], *args)
    assert rc == 0, f"no kernel {plan['name']}"
    return y, plan


def _check(got, x, axes, log, mask, dtype):
    want = numpy_backend.softmax(x, axes, None, np.dtype(dtype), log=log,
                                 mask=None if mask is None else numpy_backend.as_mask(mask, x.shape))
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    assert (np.isnan(got) == np.isnan(want)).all()


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
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (1,), log)
        _check(got, x, (1,), log, None, dtype)
        if length <= ks.WARP_MAX_ROW:
            assert "_warp_" in plan["name"]


@pytest.mark.parametrize("shape, axis", [((3, 7, 5), 1), ((2, 33, 4), 1), ((4, 3, 40), 1), ((1000, 3), 0),
                                         ((2, 1025, 3), 1), ((5, 2, 2, 3), 1), ((3, 4, 64), 0), ((6, 5000, 2), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_last_axis(shim_lib, shape, axis, dtype):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(0, 3, shape).astype(dtype)
    idx = [0] * len(shape)
    idx[axis] = slice(None)
    x[tuple(idx)] = -np.inf  # one all--inf slice
    for log in (False, True):
        got, plan = shim_softmax(shim_lib, x, (axis,), log)
        assert "_cols_" in plan["name"]
        _check(got, x, (axis,), log, None, dtype)


def test_uncached_long_columns(shim_lib):
    """Rows too long for the shared-memory cache re-read the input in the second pass."""
    x = np.random.default_rng(0).normal(0, 3, (2, 3000, 33)).astype(np.float32)
    tag = ks.DTYPE_TAG[x.dtype]
    assert ks.softmax_plan(2, 3000, 33, tag, log=False, max_blocks=3)["args"][-1] == 0
    got, _ = shim_softmax(shim_lib, x, (1,), False)
    _check(got, x, (1,), False, None, np.float32)


@pytest.mark.parametrize("shape, axes", [((4, 6, 5), (1, 2)), ((3, 4, 5), (0, 1)), ((2, 3, 4, 5), (1, 2)),
                                         ((2, 3, 1, 5), (1, 3))])
def test_adjacent_tuple_axes_merge(shim_lib, shape, axes):
    x = np.random.default_rng(1).normal(0, 2, shape).astype(np.float32)
    for log in (False, True):
        got, _ = shim_softmax(shim_lib, x, axes, log)
        _check(got, x, axes, log, None, np.float32)


@pytest.mark.parametrize("shape, axis", [((5, 33), 1), ((4, 7), 1), ((3, 1500), 1), ((3, 6, 4), 1), ((8, 2), 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mask(shim_lib, shape, axis, dtype):
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, shape).astype(dtype)
    mask = rng.random(shape) > 0.4
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


def test_in_place_semantics_hold_for_the_cached_and_uncached_paths(shim_lib):
    # every element is read before it is written by the same thread: x == y would be safe; here we
    # just check that plans never ask for more shared memory than the cache limit
    for outer, L, inner in ((1, 100000, 1), (2, 5000, 64), (3, 50, 7)):
        plan = ks.softmax_plan(outer, L, inner, "f32", log=False, max_blocks=100)
        assert plan["smem"] <= ks.SMEM_CACHE_LIMIT
